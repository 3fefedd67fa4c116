"""Calibration and evaluation inputs for quantization: real data, or noise only when asked for.

:func:`resolve_calibration` turns the ``--calib`` / ``--root`` options into a
:class:`CalibrationData`. ``calib`` is one of

* ``None``: the checkpoint's own data set (``info.metadata['dataset']``, or for a STEP checkpoint
  its ``args.dataset``: ``torch/cifar10`` / ``cifar10`` -> ``cifar10``, ``dvsc10`` ->
  ``cifar10-dvs``), if it is bundled or ``root`` holds it on disk; otherwise
  :class:`CalibrationError` listing the ways to give real inputs;
* a bundled data set name (``digits``, ``digits-events``, ``digits-seq``);
* an on-disk data set name (``cifar10``, ``cifar10-dvs``) with ``root``; CIFAR-10 is normalised
  exactly as STEP does (``ToTensor`` then mean ``(0.4914, 0.4822, 0.4465)``, std ``(0.2470,
  0.2435, 0.2616)``, see :mod:`step_deploy.data.external`), so its pixels lie in about [-2.0, 2.1];
* a tensor file of inputs: ``.npy`` (one array), ``.pt`` (a tensor, a ``(x, y)`` pair or a dict
  with ``'x'`` and optional ``'y'``, read with ``torch.load(weights_only=True)``) or ``.npz``
  (arrays ``x`` and optional ``y``); shape ``(N, C, H, W)`` for direct-coded images or
  ``(N, T, C, H, W)`` for event frames, checked against ``model.config``;
* ``'noise'``: seeded random inputs (``is_noise=True``); reports must say so.

Calibration samples: the first ``n_calib`` of the training split (of the file), except for
``cifar10-dvs`` whose files are grouped by class: there every k-th sample, so all classes are in.
Evaluation: the data set's test split (the first ``n_eval`` when given); for a tensor file the
same file's samples, with labels only if the file has them (otherwise accuracy cannot be reported,
only agreement between the float and integer models).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from step_deploy.errors import StepDeployError

NOISE = "noise"
TENSOR_SUFFIXES = (".npy", ".pt", ".npz")
NOISE_SEED = 0
NOISE_EVAL_SAMPLES = 32

#: data set names found in checkpoints (ours, and STEP's ``args.dataset``) -> our loader names
DATASET_ALIASES = {
    "digits": "digits", "digits-events": "digits-events", "digits-seq": "digits-seq",
    "cifar10": "cifar10", "torch/cifar10": "cifar10",
    "cifar10-dvs": "cifar10-dvs", "cifar10dvs": "cifar10-dvs", "dvsc10": "cifar10-dvs",
}
# splits whose samples are grouped by class: calibrate on evenly spread samples
_CLASS_ORDERED = ("cifar10-dvs",)


class CalibrationError(StepDeployError, ValueError):
    """The calibration/evaluation inputs cannot be found or do not fit the model."""


@dataclass(frozen=True, eq=False)
class CalibrationData:
    """Inputs for quantization (``x_calib``) and for the float-vs-integer report (``x_eval``,
    ``y_eval`` or ``None`` when there are no labels). Raw model inputs (``(N, C, H, W)`` or
    ``(N, T, C, H, W)``, float32), before the model's encoder. ``source``: one plain sentence
    for reports. ``is_noise``: the inputs are random, not data. ``signed``: the calibration
    inputs hold negative values (the analog input quantizer must be signed)."""

    x_calib: torch.Tensor
    x_eval: torch.Tensor
    y_eval: Optional[torch.Tensor]
    source: str
    is_noise: bool
    signed: bool


# --------------------------------------------------------------------------- model facts


def model_input_shape(model) -> Optional[tuple[int, ...]]:
    """Per-sample raw input shape of a zoo model (``(C, H, W)``, ``(T, C, H, W)`` for
    ``encoding='events'``, ``(T, W)`` for ``encoding='sequence'``); ``None`` when the model has no
    such config."""
    cfg = getattr(model, "config", None) or {}
    if "in_channels" not in cfg or "img_size" not in cfg:
        return None
    c, s = int(cfg["in_channels"]), int(cfg["img_size"])
    if cfg.get("encoding") in ("events", "event", "dvs"):
        return (int(getattr(model, "step", cfg.get("step", 1))), c, s, s)
    if cfg.get("encoding") == "sequence":  # image rows, one per step: (T, width)
        return (int(getattr(model, "step", cfg.get("step", 1))), s)
    return (c, s, s)


def _model_words(model) -> str:
    cfg = getattr(model, "config", None) or {}
    keys = [f"{k}={cfg[k]!r}" for k in ("in_channels", "img_size", "encoding", "step") if k in cfg]
    return f"the model ({getattr(model, 'arch', type(model).__name__)}: {', '.join(keys)})"


def _is_events(model) -> bool:
    return (getattr(model, "config", None) or {}).get("encoding") in ("events", "event", "dvs")


def checkpoint_dataset(info) -> tuple[Optional[str], Optional[str]]:
    """``(name as the checkpoint states it, our loader name or None)``."""
    meta = getattr(info, "metadata", None) or {}
    raw = meta.get("dataset") or (meta.get("args") or {}).get("dataset")
    if raw is None:
        return None, None
    raw = str(raw)
    return raw, DATASET_ALIASES.get(raw.lower())


# --------------------------------------------------------------------------- errors


def _ways(model) -> str:
    from . import BUNDLED

    shape = model_input_shape(model)
    shape_txt = f"(N, {', '.join(map(str, shape))})" if shape else "(N, C, H, W) or (N, T, C, H, W)"
    return (f"(1) --calib <bundled data set> ({', '.join(BUNDLED)}); "
            f"(2) --calib <data set on disk> --root <folder> (cifar10: the folder holding "
            f"cifar-10-batches-py/; cifar10-dvs: root/<class>/<sample>.npz event files); "
            f"(3) --calib <file.npy|file.pt|file.npz> holding a tensor of real inputs of shape {shape_txt}, "
            f"preprocessed exactly as for training (e.g. CIFAR-10 mean/std-normalised). "
            f"Or --calib noise to calibrate on random noise anyway: the report then says so on its first "
            f"line, and its agreement numbers say nothing about real data")


def _no_data(model, info, why: str) -> CalibrationError:
    where = getattr(info, "path", None)
    who = f"checkpoint {where}" if where else "this checkpoint"
    return CalibrationError(f"quantization needs real input samples to choose its scales, and none are available "
                            f"for {who}: {why}. Give them in one of three ways: {_ways(model)}.")


# --------------------------------------------------------------------------- checks


def check_inputs(x, model, what: str) -> torch.Tensor:
    """Validate raw inputs ``x`` against ``model`` and return them as float32.

    Checks: a numeric (not complex/object) dtype, at least one sample, the per-sample shape
    :func:`model_input_shape` and finite values. ``what`` names the source in the messages.
    Event frames may be fractional (STEP resizes them bilinearly): ``quantize_loihi`` then
    quantizes them like an analog input."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise CalibrationError(f"{what}: dtype {x.dtype} is not numeric; expected float32 inputs "
                                   f"(or integer/bool event counts)")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x):
        raise CalibrationError(f"{what}: expected a tensor of inputs, got {type(x).__name__}")
    if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.bool, torch.uint8, torch.int8,
                                                                    torch.int16, torch.int32, torch.int64)):
        raise CalibrationError(f"{what}: dtype {x.dtype} is not supported; expected float32 inputs "
                               f"(or integer/bool event counts)")
    want = model_input_shape(model)
    if want is not None and tuple(x.shape[1:]) != want:
        layout = "(N, T, C, H, W) event frames" if len(want) == 4 else "(N, C, H, W) direct-coded images"
        raise CalibrationError(f"{what}: inputs have shape {tuple(x.shape)}, but {_model_words(model)} takes "
                               f"{layout} of shape (N, {', '.join(map(str, want))})")
    if x.dim() < 2 or x.shape[0] < 1:
        raise CalibrationError(f"{what}: needs at least one sample, got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise CalibrationError(f"{what}: {int(bad.sum())} non-finite values (NaN/inf), first at index {first} "
                               f"of sample {first[0]}: calibration needs finite inputs")
    return x


def _check_labels(y, n: int, what: str) -> Optional[torch.Tensor]:
    if y is None:
        return None
    y = torch.from_numpy(np.asarray(y)) if isinstance(y, np.ndarray) else y
    if not torch.is_tensor(y) or y.is_floating_point() or y.is_complex() or y.dim() != 1:
        raise CalibrationError(f"{what}: labels must be a 1-D integer tensor, got "
                               f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if len(y) != n:
        raise CalibrationError(f"{what}: {len(y)} labels for {n} samples")
    return y.to(torch.int64)


def _check_sizes(n_calib: int, n_eval: Optional[int]) -> None:
    if not isinstance(n_calib, int) or isinstance(n_calib, bool) or n_calib < 1:
        raise CalibrationError(f"n_calib must be a positive number of calibration samples, got {n_calib!r}")
    if n_eval is not None and (not isinstance(n_eval, int) or isinstance(n_eval, bool) or n_eval < 1):
        raise CalibrationError(f"n_eval must be a positive number of evaluation samples or None (all), "
                               f"got {n_eval!r}")


def _range(x: torch.Tensor) -> str:
    return f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"


# --------------------------------------------------------------------------- sources


def _noise(model, n_calib: int, n_eval: Optional[int]) -> CalibrationData:
    shape = model_input_shape(model)
    if shape is None:
        raise CalibrationError(f"--calib noise needs the model's input shape; {_model_words(model)} has no "
                               f"in_channels/img_size config. Pass a tensor file with --calib instead")
    n_ev = n_eval or NOISE_EVAL_SAMPLES
    g = torch.Generator().manual_seed(NOISE_SEED)
    if _is_events(model):
        x = torch.randint(0, 2, (n_calib + n_ev, *shape), generator=g).to(torch.float32)
        what = "random 0/1 event frames"
    else:
        x = torch.rand((n_calib + n_ev, *shape), generator=g)
        what = "uniform random values in [0, 1)"
    src = (f"calibration: NOISE, {n_calib} seeded {what} (seed {NOISE_SEED}), not real data; "
           f"evaluation: {n_ev} more noise samples without labels, so no accuracy is reported and "
           f"agreement on noise says nothing about real inputs")
    return CalibrationData(x[:n_calib], x[n_calib:], None, src, True, False)


def _tensor_file(path: Path, model, n_calib: int, n_eval: Optional[int]) -> CalibrationData:
    what = f"--calib file {path}"
    if not path.is_file():
        raise CalibrationError(f"{what} does not exist (or is not a file); give a .npy, .pt or .npz file of inputs")
    x, y = _read_tensor_file(path, what)
    x = check_inputs(x, model, what)
    y = _check_labels(y, len(x), what)
    n = len(x)
    k = min(n_calib, n)
    m = n if n_eval is None else min(n_eval, n)
    calib = f"the first {k}" if k < n else f"all {n}"
    ev = f"the first {m}" if m < n else f"all {n}"
    labels = ("with its labels" if y is not None else
              "without labels, so accuracy is not reported, only float-vs-integer agreement")
    src = (f"calibration: {calib} of the {n} samples in {path.name} ({_range(x)}); "
           f"evaluation: {ev} samples of that file, {labels}")
    return CalibrationData(x[:k].clone(), x[:m].clone(), None if y is None else y[:m].clone(), src, False,
                           bool(x[:k].min() < 0))


def _read_tensor_file(path: Path, what: str):
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise CalibrationError(f"{what}: an .npz needs an array named 'x' (inputs) and optionally 'y' "
                                           f"(labels); found {sorted(z.files)}")
                return z["x"], (z["y"] if "y" in z.files else None)
        if suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if torch.is_tensor(obj):
                return obj, None
            if isinstance(obj, dict) and "x" in obj:
                return obj["x"], obj.get("y")
            if isinstance(obj, (tuple, list)) and len(obj) == 2 and torch.is_tensor(obj[0]):
                return obj[0], obj[1]
            raise CalibrationError(f"{what}: a .pt file must hold a tensor of inputs, an (inputs, labels) pair or a "
                                   f"dict with 'x' (and optionally 'y'); found {type(obj).__name__}")
    except CalibrationError:
        raise
    except pickle.UnpicklingError:
        raise CalibrationError(f"{what}: holds Python objects other than tensors, refused (.pt inputs are read with "
                               f"torch.load(weights_only=True)); save plain tensors: torch.save(x, path) or "
                               f"torch.save({{'x': x, 'y': labels}}, path)") from None
    except Exception as e:  # unreadable / unsafe content: name the file and the reason, no deep traceback
        raise CalibrationError(f"{what}: cannot be read as {suffix} inputs ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
    raise CalibrationError(f"{what}: unsupported file type {suffix!r}; use one of {', '.join(TENSOR_SUFFIXES)}")


def _indices(total: int, n: int, spread: bool) -> list[int]:
    n = min(n, total)
    if not spread:
        return list(range(n))
    return [i * total // n for i in range(n)]


def _stack(ds, idx: list[int]):
    tensors = getattr(ds, "tensors", None)
    if tensors is not None:
        return tensors[0][idx], tensors[1][idx]
    xs, ys = zip(*(ds[i] for i in idx))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(np.asarray([int(v) for v in ys]))


def _load_split(name: str, split: str, model, root):
    from . import load_dataset

    cfg = getattr(model, "config", None) or {}
    T = int(getattr(model, "step", cfg.get("step", 4)))
    kw = {"event_size": int(cfg["img_size"])} if name == "cifar10-dvs" and "img_size" in cfg else {}
    try:
        return load_dataset(name, split, root=root, T=T, **kw)
    except FileNotFoundError as e:
        raise CalibrationError(f"--calib {name} --root {root}: {e}") from None
    except RuntimeError as e:  # torchvision rejected the files
        raise CalibrationError(f"--calib {name} --root {root}: {e}") from None


def _dataset(name: str, model, root, n_calib: int, n_eval: Optional[int]) -> CalibrationData:
    from . import BUNDLED

    bundled = name in BUNDLED
    if not bundled and root is None:
        raise CalibrationError(f"--calib {name}: {name} is not bundled with step-deploy; pass --root <folder> where "
                               f"it is on disk (step-deploy never downloads data). Other ways: {_ways(model)}")
    spread = name in _CLASS_ORDERED
    tr = _load_split(name, "train", model, root)
    xc, _ = _stack(tr, _indices(len(tr), n_calib, spread))
    xc = check_inputs(xc, model, f"data set {name} (train split)")
    te = _load_split(name, "test", model, root)
    spread_eval = spread and n_eval is not None
    xe, ye = _stack(te, _indices(len(te), len(te) if n_eval is None else n_eval, spread_eval))
    xe = check_inputs(xe, model, f"data set {name} (test split)")
    label = f"the bundled {name!r}" if bundled else f"the {name!r} data set under {root}"
    pick = "evenly spread samples" if spread else "samples"
    calib = (f"{len(xc)} {pick} of {label} train split" if len(xc) < len(tr) else
             f"all {len(tr)} samples of {label} train split")
    if len(xe) == len(te):
        ev = f"its {len(te)}-sample test split"
    else:
        ev = f"{'evenly spread' if spread_eval else 'the first'} {len(xe)} of its {len(te)} test samples"
    src = f"calibration: {calib} ({_range(xc)}); evaluation: {ev}"
    return CalibrationData(xc, xe, ye.to(torch.int64), src, False, bool(xc.min() < 0))


# --------------------------------------------------------------------------- entry point


def resolve_calibration(calib: str | None, *, root: str | None, model, info, n_calib: int = 256,
                        n_eval: int | None = None) -> CalibrationData:
    """Calibration and evaluation inputs for ``model`` (loaded with ``info``) from the ``--calib``
    option (see the module docstring). Raises :class:`CalibrationError` with what to do instead."""
    from . import DATASETS

    _check_sizes(n_calib, n_eval)
    if calib is None:
        raw, name = checkpoint_dataset(info)
        if name is None:
            why = ("the checkpoint names no data set" if raw is None else
                   f"its data set {raw!r} has no loader in step-deploy")
            raise _no_data(model, info, why)
        from . import BUNDLED

        if name not in BUNDLED and root is None:
            raise _no_data(model, info, f"its data set {raw!r} is not bundled with step-deploy and no --root was given "
                                        f"(--root <folder> reads it from disk as {name!r})")
        return _dataset(name, model, root, n_calib, n_eval)
    calib = str(calib)
    if calib == NOISE:
        return _noise(model, n_calib, n_eval)
    name = DATASET_ALIASES.get(calib.lower())
    if name is not None and not Path(calib).is_file():
        return _dataset(name, model, root, n_calib, n_eval)
    path = Path(calib).expanduser()
    if path.suffix.lower() in TENSOR_SUFFIXES or path.exists():
        return _tensor_file(path, model, n_calib, n_eval)
    raise CalibrationError(f"--calib {calib!r} is neither a data set ({', '.join(DATASETS)}), a tensor file "
                           f"({', '.join(TENSOR_SUFFIXES)}) nor 'noise'. Ways to give inputs: {_ways(model)}")


__all__ = ["CalibrationData", "CalibrationError", "resolve_calibration", "check_inputs", "model_input_shape",
           "checkpoint_dataset", "DATASET_ALIASES", "NOISE"]
