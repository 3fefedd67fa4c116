"""The seed attention designs on hardware, side by side: the README comparison table (issue 13).

For every design's digits config and the plain baselines, on ``digits`` (static images) and
``digits-events`` (saccade events), this trains the model (``step_deploy.training.train``, fixed
seed, cached as a checkpoint in ``<out>/checkpoints``) and measures it the way the CLIs do:

* accuracy: float (the PyTorch model, ``step-energy``'s counted run) and integer (the golden models
  of the Loihi fixed_pt and FPGA quantizations, ``quantize-loihi`` / ``quantize-fpga``), on the
  same ``--samples`` test samples;
* firing rate and energy per sample under the four models (``step-energy`` internals, as
  ``energy_eval.command.compute`` runs them: ``count_dataset`` on the PyTorch model, ``price_all``
  with the FPGA quantization's widths for the ``/int`` variants; the table shows the float32
  variants, as the README's neuron table);
* Loihi 2 neuro-cores (``targets.mapping.map_to_cores``, what ``step-export --target loihi
  --check-only`` prints);
* FPGA resources (``fpga.estimate`` on ``--part``: one lane per layer, P = 1, and ``--parallelism
  auto``, what ``step-export --target fpga`` builds) and simulated latency per sample on the Loihi 2
  mesh and on the FPGA dataflow at auto parallelism (``step-sim`` internals:
  ``sim_eval.command.simulate``, spikes checked against the golden model).

A stage that cannot run gives its reason in its cell (``n/a: <reason>``), never a blank. Prints a
Markdown table and writes ``<out>/seed_designs.{md,json}``.

    .venv/bin/python benchmarks/seed_designs.py [--designs A,B] [--data digits,digits-events]
        [--epochs 10] [--samples 360] [--calib-samples 64] [--sim-samples 2] [--part zcu104]
        [--threads N] [--retrain] [--random-weights] [-o runs/seed_designs]

The defaults are sized for the whole table (8 configs x 2 data sets) in about 15-20 minutes on 2
idle cores, an estimate from the README's training times (Spikformer-sized digits models about
3.5 s per epoch, QKFormer-3 about 7.5 s; measuring a trained row takes about 10 s): training is
nearly all of it, and cached checkpoints make a rerun take minutes. ``--epochs 15`` gives the
README's training budget; ``--random-weights`` checks every stage in about a minute."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_designs_plot import plot  # noqa: E402  (benchmarks/ is not a package)

#: (label, named config): the plain baselines first, then the seed designs (issue 13)
DESIGNS = (
    ("Spikformer (SSA)", "spikformer-2-64-digits"),
    ("SDT (SDSA)", "sdt-1-64-digits"),
    ("QKFormer", "qkformer-3-64-digits"),
    ("STAtten on Spikformer", "spikformer-statten-2-64-digits"),
    ("STAtten on SDT", "sdt-statten-1-64-digits"),
    ("A²OS²A", "spikformer-a2os2a-2-64-digits"),
    ("bipolar SA", "spikformer-bsa-2-64-digits"),
    ("Spikformer + SEMM", "spikformer_semm-2-64-digits"),
)
DATA = ("digits", "digits-events")
#: the energy variants in the Markdown table (all variants are in the JSON)
TABLE_ENERGY = ("paper", "step/float32", "horowitz/float32", "loihi")


class NA(str):
    """A cell whose stage could not run: ``n/a: <reason>`` (the whole reason; the Markdown table
    shortens it to :data:`CELL_CHARS`, the JSON keeps it)."""

    @classmethod
    def of(cls, reason: str) -> "NA":
        return cls("n/a: " + " ".join(str(reason).split()))


CELL_CHARS = 200


def reason(e: BaseException) -> str:
    """One line: the error's own first line (ours name the node, option or limit), with its type
    when it is not one of ours."""
    from step_deploy.errors import StepDeployError
    from step_deploy.ir import IRError
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith("error:")), lines[0] if lines else "")
    first = first.removeprefix("error:").strip()
    return first if isinstance(e, (StepDeployError, IRError)) else f"{type(e).__name__}: {first}"


def stage(fn: Callable, timings: dict, name: str):
    """``fn()`` or :class:`NA` with the reason it failed; its wall time in ``timings[name]``."""
    t = time.perf_counter()
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a benchmark table reports every failure in its cell
        return NA.of(reason(e))
    finally:
        timings[name] = round(time.perf_counter() - t, 2)


class Options(NamedTuple):
    """What the table is measured with (immutable; the JSON records it)."""

    epochs: int = 10
    seed: int = 0
    samples: int = 360
    calib_samples: int = 64
    sim_samples: int = 2
    part: str = "zcu104"
    clock_mhz: float = 200.0
    threads: Optional[int] = None
    retrain: bool = False
    random_weights: bool = False
    qat_epochs: int = 0  # > 0: fine-tune the float checkpoint on the integer grid (step-train --qat-epochs)
    chunk_size: Optional[int] = None  # STAtten configs: steps per attention block (None: the config's)


DEFAULTS = Options()


# ---------------------------------------------------------------------------------- training


def checkpoint(arch: str, data: str, o: Options, out: Path) -> tuple[Path, dict]:
    """The trained checkpoint of ``arch`` on ``data`` (reused from ``out/checkpoints`` when it was
    trained with the same arguments), and its training metrics."""
    from step_deploy.frontend.checkpoint import load_checkpoint, save_checkpoint
    from step_deploy.training import TrainArgs, is_step_deploy_checkpoint, model_overrides_for, train

    tag = "random" if o.random_weights else f"e{o.epochs}" + (f"-qat{o.qat_epochs}" if o.qat_epochs else "")
    tag += f"-chunk{o.chunk_size}" if o.chunk_size else ""
    path = out / "checkpoints" / f"{arch}--{data}--{tag}-seed{o.seed}.ckpt"
    args = TrainArgs(arch=arch, data=data, epochs=max(o.epochs, 1), seed=o.seed, threads=o.threads,
                     qat_epochs=0 if o.random_weights else o.qat_epochs, chunk_size=o.chunk_size)
    if o.random_weights:  # a smoke run of the pipeline: no training
        from step_deploy.models import build_model
        from step_deploy.models.random_stats import randomize_batchnorm
        torch.manual_seed(o.seed)
        model = randomize_batchnorm(build_model(arch, **model_overrides_for(data, None)).eval(), o.seed)
        metrics = {"dataset": data, "random_weights": True}
        save_checkpoint(model, path, metadata={**metrics, "arch_name": arch})
        return path, metrics
    if not o.retrain and is_step_deploy_checkpoint(path):
        _, info = load_checkpoint(path)
        if info.metadata.get("train_args") == asdict(args):
            return path, dict(info.metadata)
    if args.qat_epochs:  # the float checkpoint (cached like any other), then its on-grid fine-tuning
        from step_deploy.training import fine_tune
        float_path, _ = checkpoint(arch, data, o._replace(qat_epochs=0), out)
        model, metrics = fine_tune(load_checkpoint(float_path)[0], args, progress=False)
    else:
        model, metrics = train(args, progress=False)
    save_checkpoint(model, path, metadata={**metrics, "arch_name": arch})
    return path, metrics


# ---------------------------------------------------------------------------------- measuring


class Inputs(NamedTuple):
    model: torch.nn.Module
    T: int
    x: torch.Tensor
    y: torch.Tensor
    folded: object  # the BN-folded IR graph
    calib: torch.Tensor  # encoded calibration inputs
    x_enc: torch.Tensor


def _inputs(prep, o: Options) -> Inputs:
    """What every measurement of a checkpoint runs on: its data set's calibration and test samples."""
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.frontend.capture import encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    model = prep.model
    data = resolve_calibration(None, root=None, model=model, info=prep.info, n_calib=o.calib_samples,
                               n_eval=o.samples)
    x, y = data.x_eval[:o.samples], data.y_eval[:o.samples]
    return Inputs(model, int(model.step), x, y, fold_batchnorm(prep.graph), encoded_input(model, data.x_calib),
                  encoded_input(model, x))


def _golden_accuracy(q, d: Inputs) -> float:
    from step_deploy.simulators.golden import run_golden
    return float((run_golden(q, d.x_enc, steps=d.T, record=False).final().argmax(-1) == d.y).float().mean())


def measure(ckpt: Path, o: Options) -> dict:
    """Every column of one row (a value, or :class:`NA` with the reason)."""
    from step_deploy.energy.baseline import overall_firing_rate
    from step_deploy.energy.constants import load_constants
    from step_deploy.energy.counters import bit_widths
    from step_deploy.energy.models import MODELS
    from step_deploy.energy.report import price_all
    from step_deploy.energy_eval.run import count_dataset, quantized_graph
    from step_deploy.export.common import prepare

    t: dict = {}
    row: dict = {"seconds": t}
    prep = stage(lambda: prepare(ckpt), t, "capture")
    if isinstance(prep, NA):
        return {**row, **{k: prep for k in ("float_accuracy", "golden_loihi_accuracy", "golden_fpga_accuracy",
                                             "firing_rate", "energy_uj", "loihi_cores", "fpga", "latency_us")}}
    d = _inputs(prep, o)
    model, T, x, y, folded, calib, x_enc = d
    row["parameters"] = sum(p.numel() for p in model.parameters())
    q = {}
    for source, key in (("golden-loihi", "loihi"), ("golden-fpga", "fpga")):
        q[key] = stage(lambda: quantized_graph(source, folded, calib, T), t, f"quantize_{key}")
        row[f"golden_{key}_accuracy"] = q[key] if isinstance(q[key], NA) else \
            stage(lambda: _golden_accuracy(q[key], d), t, f"golden_{key}")

    def energy():
        """``step-energy``'s PyTorch run (``energy_eval.command.compute``, source torch): counted by
        hooks, priced by every model at float32 and at the FPGA quantization's widths (computed above)."""
        run = count_dataset(model, prep.graph, x, y, source="torch")
        widths = None if isinstance(q["fpga"], NA) else bit_widths(q["fpga"])
        return price_all(run.counts, run.graph, folded, list(MODELS), widths, load_constants(),
                         {"accuracy": run.accuracy}, union=run.union)
    res = stage(energy, t, "energy")
    if isinstance(res, NA):
        row.update(float_accuracy=res, firing_rate=res, energy_uj=res)
    else:
        row["float_accuracy"] = res.header["accuracy"]
        row["firing_rate"] = overall_firing_rate(res.counts)
        row["energy_uj"] = {v: r.per_sample_pj * 1e-6 for v, r in res.snn.items()}
        row["energy_notes"] = list(res.notes)

    def loihi_cores():
        from step_deploy.targets.mapping import map_to_cores
        from step_deploy.targets.spec import load_target
        m = map_to_cores(folded, load_target("loihi2"))
        return {"cores": m.total_cores, "chips": m.chips, "off_core_nodes": len(m.off_core)}
    row["loihi_cores"] = stage(loihi_cores, t, "loihi_mapping")

    def fpga_resources():
        from step_deploy.fpga.estimate import estimate, resolve_parallelism
        out = {"part": o.part}
        for spec in (1, "auto"):  # the smallest design (one lane per layer), and what step-export builds
            d = estimate(q["fpga"], o.part, o.clock_mhz, resolve_parallelism(spec, q["fpga"], o.part, o.clock_mhz))
            out[f"p_{spec}"] = {"lut": d.lut, "dsp": d.dsp, "bram36": d.bram36, "ff": d.ff, "uram": d.uram,
                                "latency_estimate_ms": d.latency_ms}
        return out
    row["fpga"] = q["fpga"] if isinstance(q["fpga"], NA) else stage(fpga_resources, t, "fpga_estimate")

    def simulated(arch: str):
        from step_deploy.sim_eval.command import SimOptions, simulate
        n = min(o.sim_samples, len(x_enc))
        key = "fpga" if arch == "fpga" else "loihi"
        res, parity, _ = simulate(q[key], folded, x_enc[:n], SimOptions(arch=arch, part=o.part, samples=n,
                                                                         clock_mhz=o.clock_mhz, progress=False))
        return {"latency_us": res.mean_latency_ns * 1e-3, "samples": n,
                "spike_mismatches_vs_golden": sum(v["mismatches"] for v in parity.values())}
    row["latency_us"] = {}
    for arch, key in (("loihi2", "loihi"), ("fpga", "fpga")):
        row["latency_us"][arch] = q[key] if isinstance(q[key], NA) else stage(lambda: simulated(arch), t,
                                                                              f"simulate_{arch}")
    return row


def accuracies(ckpt: Path, o: Options) -> dict:
    """Float (PyTorch) and golden Loihi / FPGA accuracy of one checkpoint, measured as in
    :func:`measure` (the float-trained model of an on-grid row: post-training quantization)."""
    from step_deploy.energy_eval.run import quantized_graph
    from step_deploy.export.common import prepare

    d = _inputs(prepare(ckpt), o)
    with torch.no_grad():
        out = {"float_accuracy": float((d.model.eval()(d.x).argmax(-1) == d.y).float().mean())}
    for source, key in (("golden-loihi", "loihi"), ("golden-fpga", "fpga")):
        out[f"golden_{key}_accuracy"] = _golden_accuracy(quantized_graph(source, d.folded, d.calib, d.T), d)
    return out


def run(designs, datas, o: Options, out: Path, log=print) -> list[dict]:
    """Every (design, data set) row, in the order given."""
    from step_deploy.models import CONFIGS

    threads = torch.get_num_threads()
    if o.threads:
        torch.set_num_threads(o.threads)
    try:
        return _rows(designs, datas, o, out, log, set(CONFIGS))
    finally:
        torch.set_num_threads(threads)


def _rows(designs, datas, o: Options, out: Path, log, configs: set) -> list[dict]:
    rows = []
    for label, arch in designs:
        for data in datas:
            row = {"design": label, "config": arch, "data": data}
            start = time.perf_counter()
            if arch not in configs:
                rows.append({**row, "error": NA.of(f"config {arch!r} is not defined (step_deploy.models.CONFIGS)")})
                continue
            t: dict = {}
            trained = stage(lambda: checkpoint(arch, data, o, out), t, "train")
            if isinstance(trained, NA):
                rows.append({**row, "error": trained, "seconds": t})
                continue
            ckpt, metrics = trained
            row["train"] = {k: metrics.get(k) for k in ("test_accuracy", "train_seconds", "epochs", "random_weights")
                            if k in metrics}
            row.update(measure(ckpt, o))
            if o.qat_epochs and not o.random_weights:
                float_ckpt = checkpoint(arch, data, o._replace(qat_epochs=0), out)[0]
                row["float_trained"] = stage(lambda: accuracies(float_ckpt, o), t, "float_trained")
            row["seconds"] = {**t, **row.get("seconds", {})}
            rows.append(row)
            log(f"{arch} on {data}: {time.perf_counter() - start:.0f} s")
    return rows


# ---------------------------------------------------------------------------------- the table


def _pct(v) -> str:
    return v if isinstance(v, NA) else f"{100 * v:.2f}%"


def _uj(v) -> str:
    return f"{v:.4g}"


def cells(row: dict) -> list[str]:
    """The Markdown cells of one row (every cell a value or ``n/a: <reason>``)."""
    head = [row["design"], f"`{row['config']}`", row["data"]]
    if "error" in row:
        return head + [row["error"]] * (13 + (3 if "float_trained" in row or row.get("qat") else 0))
    e = row["energy_uj"]
    energy = [e if isinstance(e, NA) else (_uj(e[v]) if v in e else NA.of(f"{v} not priced"))
              for v in TABLE_ENERGY]
    lc = row["loihi_cores"]
    fp = row["fpga"]
    fpga = [fp if isinstance(fp, NA) else "{lut:,} / {dsp:,} / {bram36:,}".format(**fp[k]) for k in ("p_1", "p_auto")]
    lat = [v if isinstance(v, NA) else f"{v['latency_us']:.4g}" +
           (f" ({v['spike_mismatches_vs_golden']} spike mismatches)" if v["spike_mismatches_vs_golden"] else "")
           for v in (row["latency_us"]["loihi2"], row["latency_us"]["fpga"])]
    ft = row.get("float_trained")
    ptq = [] if ft is None else [ft] * 3 if isinstance(ft, NA) else [
        _pct(ft[k]) for k in ("float_accuracy", "golden_loihi_accuracy", "golden_fpga_accuracy")]
    return head + ptq + [_pct(row["float_accuracy"]), _pct(row["golden_loihi_accuracy"]), _pct(row["golden_fpga_accuracy"]),
                   _pct(row["firing_rate"])] + energy + [lc if isinstance(lc, NA) else str(lc["cores"])] + fpga + lat


def _short(cell: str) -> str:
    """A cell for the table: a long reason cut at :data:`CELL_CHARS` (the JSON has it whole)."""
    cell = str(cell).replace("|", "\\|")
    return cell if len(cell) <= CELL_CHARS else cell[:CELL_CHARS - 1] + "…"


def markdown(rows: list[dict], o: Options) -> str:
    what = "random weights (smoke run: accuracies are chance)" if o.random_weights else \
        f"trained {o.epochs} epochs (seed {o.seed})"
    if o.qat_epochs and not o.random_weights:
        what += (f", then {o.qat_epochs} epochs on the integer grid (step-train --qat-epochs; the first three "
                 f"accuracies are the float-trained model's and its post-training quantizations, the rest is the "
                 f"fine-tuned model)")
    lines = [f"Models {what}; {o.samples} test samples per data set (float and golden accuracy, firing rate, "
             f"energy per sample from the PyTorch run's counts, float32 widths); Loihi 2 neuro-cores of the "
             f"core mapping; FPGA LUT / DSP / BRAM36 estimated on {o.part} ({o.clock_mhz:g} MHz) with one lane per "
             f"layer (P = 1) and at step-export's --parallelism auto (fills the part to minimise latency; the "
             f"simulated FPGA latency is of this design); "
             f"latency per sample simulated on {o.sim_samples} sample(s) (Loihi 2 mesh / FPGA dataflow).", "",
             "| design | config | data | " + ("float-trained acc | PTQ golden Loihi acc | PTQ golden FPGA acc | "
                                              "on-grid float acc | on-grid golden Loihi acc | on-grid golden FPGA acc"
                                              if o.qat_epochs and not o.random_weights else
                                              "float acc | golden Loihi acc | golden FPGA acc") + " | firing rate | "
             "paper µJ | step µJ | horowitz µJ | loihi µJ | Loihi 2 cores | FPGA LUT / DSP / BRAM36, P = 1 | "
             "FPGA LUT / DSP / BRAM36, auto | "
             "Loihi 2 latency µs | FPGA latency µs |",
             "|---|---|---|" + "---:|" * (16 if o.qat_epochs and not o.random_weights else 13)]
    lines += ["| " + " | ".join(_short(c) for c in cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v) if isinstance(v, NA) else v


def parse(argv=None) -> tuple[argparse.Namespace, Options]:
    ap = argparse.ArgumentParser(prog="seed_designs.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    configs = ", ".join(arch for _, arch in DESIGNS)
    ap.add_argument("--designs", help=f"comma list of configs (default all: {configs})")
    ap.add_argument("--data", default=",".join(DATA), help="comma list of data sets (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="training epochs (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=DEFAULTS.seed)
    ap.add_argument("--samples", type=int, default=DEFAULTS.samples,
                    help="test samples for accuracy, firing rate and energy (default: %(default)s)")
    ap.add_argument("--calib-samples", type=int, default=DEFAULTS.calib_samples,
                    help="calibration samples of the quantizations (default: %(default)s)")
    ap.add_argument("--sim-samples", type=int, default=DEFAULTS.sim_samples,
                    help="samples through the cycle simulators (default: %(default)s)")
    ap.add_argument("--qat-epochs", type=int, default=DEFAULTS.qat_epochs,
                    help="fine-tune each float checkpoint this many epochs on the integer grid (step-train "
                         "--qat-epochs) and measure that model, with the float-trained model's PTQ accuracies "
                         "beside it (default: %(default)s, off; give --calib-samples 256, the calibration the "
                         "fine-tuning settles on)")
    ap.add_argument("--part", default=DEFAULTS.part, help="FPGA part (default: %(default)s)")
    ap.add_argument("--threads", type=int, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--retrain", action="store_true", help="train again even where a cached checkpoint matches")
    ap.add_argument("--random-weights", action="store_true",
                    help="no training: random weights (BatchNorm statistics randomized), a smoke run of every stage")
    ap.add_argument("--train-only", action="store_true",
                    help="only train (or reuse) the checkpoints into <output>/checkpoints, then stop")
    ap.add_argument("--jobs", type=int, default=1,
                    help="with --train-only: train this many checkpoints at once, one process each (a many-core "
                         "machine; give --threads 1); the checkpoints equal those trained one by one")
    ap.add_argument("-o", "--output", default="runs/seed_designs", help="output folder (default: %(default)s)")
    a = ap.parse_args(argv)
    if a.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {a.jobs}")
    if a.qat_epochs < 0:
        ap.error(f"--qat-epochs must be >= 0, got {a.qat_epochs}")
    for flag in ("epochs", "samples", "calib_samples", "sim_samples"):
        if getattr(a, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(a, flag)}")
    known = dict((arch, label) for label, arch in DESIGNS)
    chosen = [s.strip() for s in a.designs.split(",") if s.strip()] if a.designs else list(known)
    a.design_list = [(known.get(arch, arch), arch) for arch in chosen]
    a.data_list = [s.strip() for s in a.data.split(",") if s.strip()]
    from step_deploy.data import DATASETS
    bad = [d for d in a.data_list if d not in DATASETS]
    if bad:
        ap.error(f"--data {bad[0]!r}: choose from {', '.join(DATASETS)}")
    return a, Options(epochs=a.epochs, seed=a.seed, samples=a.samples, calib_samples=a.calib_samples,
                      sim_samples=a.sim_samples, part=a.part, threads=a.threads, retrain=a.retrain,
                      random_weights=a.random_weights, qat_epochs=a.qat_epochs)


def _train_one(job) -> str:
    arch, data, o, out = job
    path, metrics = checkpoint(arch, data, o, out)
    return f"{arch} on {data}: test accuracy {metrics.get('test_accuracy')}, {path.name}"


def train_only(a, o: Options, out: Path) -> int:
    """Train (or reuse) every checkpoint of the table, ``a.jobs`` at a time in separate processes."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(arch, data, o, out) for _, arch in a.design_list for data in a.data_list]
    if a.jobs == 1:
        done = map(_train_one, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=a.jobs)
        done = pool.map(_train_one, jobs)
    for line in done:
        print(line, flush=True)
    return 0


def main(argv=None) -> int:
    a, o = parse(argv)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    if a.train_only:
        return train_only(a, o, out)
    start = time.perf_counter()
    rows = run(a.design_list, a.data_list, o, out, log=lambda s: print(s, file=sys.stderr))
    md = markdown(rows, o)
    (out / "seed_designs.md").write_text(md)
    doc = {"options": o._asdict(), "rows": _jsonable(rows), "seconds": round(time.perf_counter() - start, 1)}
    (out / "seed_designs.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    png = plot(rows, out / "seed_designs.png")
    print(md)
    print(f"wrote {out / 'seed_designs.md'}, {out / 'seed_designs.json'}" + (f" and {png}" if png else "")
          + f" in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
