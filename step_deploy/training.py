"""Training of the reference models on bundled (or user-provided) data. Seeded and reproducible:
the same arguments on the same machine give the same weights and the same accuracy."""
from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from step_deploy.data import BUNDLED, DATASETS, dataset_info, load_dataset
from step_deploy.errors import DataError, UsageError
from step_deploy.models import CONFIGS, FAMILIES, STEP_ARCH_NAMES, build_model, list_configs
from step_deploy.train_loop import one_epoch


@dataclass(frozen=True)
class TrainArgs:
    arch: str
    data: str = "digits"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    seed: int = 0
    T: Optional[int] = None  # None: the arch's default number of time steps
    root: Optional[str] = None
    threads: Optional[int] = None
    node: Optional[str] = None  # None: the arch's neuron (LIF); a short name (ilif) or STEP's class name (ILIFNode)
    reset: Optional[str] = None  # None: the neuron's own reset; "soft" / "hard" for if, lif, plif
    qat_epochs: int = 0  # epochs after ``epochs`` with the weights on the integer targets' grid (step_deploy.qat)
    chunk_size: Optional[int] = None  # STAtten configs: steps per attention block (None: the config's, 2)


RESETS = ("hard", "soft")


def neuron_choice(args: "TrainArgs") -> dict:
    """The model overrides ``--node``/``--reset`` ask for: ``node`` as our short name (a STEP class
    name is translated: ``ILIFNode`` -> ``ilif``) and ``reset`` where given. Raises
    :class:`UsageError` naming the option when the neuron is unknown or does not take the reset
    (ILIF/NILIF reset softly by definition, EIF/KLIF hard; only if, lif and plif choose)."""
    from step_deploy.models.neurons import NEURONS, make_neuron, neuron_class

    over: dict = {}
    if args.node is not None:
        try:
            cls = neuron_class(args.node)
        except ValueError as e:
            raise UsageError(f"--node: {e}") from None
        over["node"] = next(short for short, c in NEURONS.items() if c is cls)
    if args.reset is not None:
        if args.reset not in RESETS:
            raise UsageError(f"--reset must be one of {', '.join(RESETS)}, got {args.reset!r}")
        node = over.get("node", "lif")
        try:
            make_neuron(node, reset=args.reset)
        except (ValueError, TypeError) as e:
            raise UsageError(f"--reset {args.reset} with --node {node}: {e}. Only if, lif and plif choose their "
                             f"reset; drop --reset") from None
        over["reset"] = args.reset
    return over


def _chunk(args: TrainArgs) -> dict:
    return {} if args.chunk_size is None else {"chunk_size": int(args.chunk_size)}


def validate_train_args(args: TrainArgs) -> None:
    """Refuse arguments that cannot work, before any data is loaded or any model is built.
    Raises :class:`UsageError` naming the option (as ``step-train`` spells it) and what it takes."""
    if args.arch not in CONFIGS and args.arch not in FAMILIES and args.arch not in STEP_ARCH_NAMES:
        raise UsageError(f"--arch: unknown arch {args.arch!r}; named configs: {', '.join(list_configs())} "
                         f"(or a family: {', '.join(sorted(FAMILIES))})")
    if args.data not in DATASETS:
        raise UsageError(f"--data: unknown data set {args.data!r}; known: {', '.join(DATASETS)}")
    info = dataset_info(args.data)
    if info["kind"] == "sequence" and args.T is not None and args.T != info["time_steps"]:
        raise UsageError(f"--T {args.T}: {args.data} is a sequence of {info['time_steps']} steps (one image row "
                         f"per step), so the model runs T = {info['time_steps']}: drop --T")
    if args.data in BUNDLED and args.root is not None:
        raise UsageError(f"--root applies only to data sets on disk (cifar10, cifar10-dvs); {args.data} is "
                         f"bundled: drop --root")
    if args.data not in BUNDLED and args.root is None:
        raise UsageError(f"--data {args.data} is read from disk: pass its folder with --root")
    _at_least("--epochs", args.epochs, 1)
    _at_least("--batch-size", args.batch_size, 1)
    _at_least("--qat-epochs", args.qat_epochs, 0)
    if args.chunk_size is not None:
        _at_least("--chunk-size", args.chunk_size, 1)
        if CONFIGS.get(args.arch, {}).get("attn_layer") != "statten":
            raise UsageError(f"--chunk-size applies to STAtten configs "
                             f"({', '.join(k for k, v in CONFIGS.items() if v.get('attn_layer') == 'statten')}); "
                             f"{args.arch} has per-step attention: drop --chunk-size")
        steps = args.T or dataset_info(args.data, T=args.T or 4).get("time_steps") or 4
        if int(steps) % int(args.chunk_size):
            raise UsageError(f"--chunk-size {args.chunk_size} must divide the number of time steps T = {steps} "
                             f"(STAtten sums over non-overlapping blocks of chunk_size steps)")
    if args.T is not None:
        _at_least("--T", args.T, 1)
    if args.threads is not None:
        _at_least("--threads", args.threads, 1)
    if not (isinstance(args.seed, int) and 0 <= args.seed < 2**32):
        raise UsageError(f"--seed must be an integer in [0, 2**32), got {args.seed!r}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive learning rate (e.g. 3e-3), got {args.lr!r}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UsageError(f"weight_decay must be >= 0, got {args.weight_decay!r}")
    if not (0 <= args.label_smoothing < 1):
        raise UsageError(f"label_smoothing must be in [0, 1), got {args.label_smoothing!r}")
    neuron_choice(args)


def _at_least(option: str, value, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UsageError(f"{option} must be an integer >= {low}, got {value!r}")


def is_step_deploy_checkpoint(path) -> bool:
    """True when ``path`` is a checkpoint step-deploy wrote (own format); loads it safely
    (``weights_only``, memory-mapped) and never raises."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):  # torch.save writes zip archives
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- any file torch cannot read safely is simply not ours
        return False
    from step_deploy.frontend.checkpoint import FORMAT_NAME

    return isinstance(obj, dict) and obj.get("format") == FORMAT_NAME


def _load_split(args: TrainArgs, split: str, T: Optional[int]):
    try:
        return load_dataset(args.data, split, root=args.root, T=T)
    except FileNotFoundError as e:
        raise DataError(f"--data {args.data} --root {args.root}: {e}") from None


@contextlib.contextmanager
def cpu_speedups():
    """Two CPU settings that make training 5-8x faster here, with no effect on the numbers that
    matter: surrogate gradients underflow into denormal floats (slow on x86; flushed to zero while
    training, restored after, since the setting is process-wide), and glibc returns every large
    activation buffer to the OS (page faults on each allocation)."""
    _malloc_keep_heap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy's finfo complains under flush-to-zero
        torch.set_flush_denormal(True)
        try:
            yield
        finally:
            torch.set_flush_denormal(False)


def _malloc_keep_heap() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: keep big buffers on the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not hand freed memory back at once
    except (OSError, AttributeError):
        pass


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also fills every new tensor with NaN, to expose reads of uninitialised memory; no op
    # here reads memory it did not write (the trained weights are bit-identical either way), and the filling
    # was a quarter of a digits model's training time
    torch.utils.deterministic.fill_uninitialized_memory = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def model_overrides_for(data: str, T: Optional[int]) -> dict:
    """Model settings implied by the data set (channels, image size, encoding)."""
    info = dataset_info(data, T=T or 4)
    shape = info["input_shape"]
    over = {"num_classes": info["num_classes"]}
    if info["kind"] == "events":
        over.update(encoding="events", in_channels=shape[1], img_size=shape[-1])
    elif info["kind"] == "static":
        over.update(in_channels=shape[0], img_size=shape[-1])
    else:  # a sequence of image rows: one row per step (models.encoders.SequenceEncoder)
        over.update(encoding="sequence", in_channels=1, img_size=shape[-1], step=info["time_steps"])
        return over
    if T is not None:
        over["step"] = T
    return over


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int = 128) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``dataset``."""
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def train(args: TrainArgs, progress: bool = True):
    """Train ``args.arch`` on ``args.data`` -> (model, metrics dict). Arguments are checked first
    (:func:`validate_train_args`); data that cannot be found raises :class:`DataError`."""
    validate_train_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = seed_everything(args.seed)
    T = args.T
    model = build_model(args.arch, **model_overrides_for(args.data, T), **neuron_choice(args), **_chunk(args))
    T = model.config.get("step", T)
    train_set = _load_split(args, "train", T)
    test_set = _load_split(args, "test", T)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=gen, drop_last=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                            weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(loader))
    with cpu_speedups():
        model, history, train_seconds = _fit(model, loader, opt, sched, args, progress)
        qat = _fine_tune_on_grid(model, train_set, test_set, args, progress) if args.qat_epochs else None
    acc = evaluate(model, test_set)
    metrics = {"test_accuracy": acc, "train_seconds": round(train_seconds + (qat or {}).get("seconds", 0.0), 1),
               "epochs": args.epochs, "final_train_loss": (qat or {}).get("losses", history)[-1],
               "train_samples": len(train_set), "test_samples": len(test_set),
               "dataset": args.data, "T": T, "node": model.config.get("node"), "train_args": asdict(args)}
    if qat is not None:
        metrics["qat"] = {k: v for k, v in qat.items() if k != "losses"}
    return model, metrics


def fine_tune(model, args: TrainArgs, progress: bool = True):
    """The on-grid phase of :func:`train` alone, on a model trained with ``args`` but
    ``qat_epochs=0`` (e.g. loaded from that checkpoint): the same result as training with
    ``args`` in one go. -> (model, metrics)."""
    validate_train_args(args)
    _at_least("--qat-epochs", args.qat_epochs, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    T = int(model.step)
    train_set, test_set = _load_split(args, "train", T), _load_split(args, "test", T)
    with cpu_speedups():
        qat = _fine_tune_on_grid(model, train_set, test_set, args, progress)
    return model, {"test_accuracy": evaluate(model, test_set), "train_samples": len(train_set),
                   "test_samples": len(test_set), "dataset": args.data, "T": T, "node": model.config.get("node"),
                   "train_args": asdict(args), "epochs": args.epochs, "final_train_loss": qat["losses"][-1],
                   "qat": {k: v for k, v in qat.items() if k != "losses"}}


def _fine_tune_on_grid(model, train_set, test_set, args: TrainArgs, progress: bool) -> dict:
    """The ``qat_epochs`` after the float training (``step_deploy.qat``): learning rate lr/10,
    cosine to 0, no weight decay (it would pull weights off the grid's levels between steps); its
    own shuffling generator (seed + 1), so it depends only on the float-trained model."""
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.qat import WEIGHT_BITS, fine_tune_on_grid, grid_report, settle

    before = evaluate(model, test_set)
    start = time.time()
    bar = tqdm(total=args.qat_epochs, desc=f"on-grid fine-tuning {args.arch}", disable=not progress, unit="epoch")

    def step(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    calib = resolve_calibration(args.data, root=args.root, model=model, info=None, n_calib=256, n_eval=1)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=seed_everything(args.seed + 1))
    losses = fine_tune_on_grid(model, loader, args.qat_epochs, lr=args.lr / 10,
                               label_smoothing=args.label_smoothing, progress=step, calib_x=calib.x_calib)
    bar.close()
    settled = settle(model, calib.x_calib)
    grid = grid_report(model)
    return {"epochs": args.qat_epochs, "float_test_accuracy_before": before, "seconds": round(time.time() - start, 1),
            "losses": losses, "weight_bits": WEIGHT_BITS, "synapses_on_grid": len(grid),
            "settled": sorted({k for r in settled["rounds"] for k in r}),
            "max_off_grid_steps": max([max(v["max_off_grid"], v["bias_max_off_grid"]) for v in grid.values()],
                                      default=0.0)}


def _fit(model, loader, opt, sched, args: TrainArgs, progress: bool):
    start = time.time()
    bar = tqdm(range(args.epochs), desc=f"train {args.arch}", disable=not progress, unit="epoch")
    history = []
    for epoch in bar:
        model.train()
        history.append(one_epoch(model, loader, opt, sched, args.label_smoothing))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    return model, history, time.time() - start
