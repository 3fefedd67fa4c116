"""``step-energy``: count a checkpoint on its test data, price the counts with every energy model,
compare with the quantized-ANN baseline, and write ``energy.json``, ``energy.md`` and PNG plots
(atomically; ``--sweep`` adds ``sweep.json``, ``sweep.md`` and ``sweep.png``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from step_deploy.errors import UsageError, require_checkpoint_file, require_counts

from step_deploy.energy.constants import load_constants
from step_deploy.energy.models import resolve_models

DEFAULT_SWEEP_WEIGHT_BITS = (2, 4, 8)


@dataclass
class EnergyOptions:
    samples: Optional[int] = None
    models: str = "all"
    source: str = "torch"
    data: Optional[str] = None
    root: Optional[str] = None
    weight_bits: int = 8
    constants: Optional[str] = None
    sweep: bool = False
    sweep_weight_bits: Optional[str] = None
    sweep_steps: Optional[str] = None
    sweep_samples: Optional[int] = None
    batch_size: int = 64
    calib_samples: Optional[int] = None  # default: step-export's (N_CALIB), so /int widths are the exported ones
    progress: bool = True


def _int_list(text: str, option: str, lo: int, hi: int) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} {text!r}: give integers separated by commas, e.g. 2,4,8") from None
    bad = [v for v in vals if not lo <= v <= hi]
    if not vals or bad:
        raise UsageError(f"{option} {text!r}: each value must be in {lo}..{hi}")
    return sorted(dict.fromkeys(vals))


def validate(o: EnergyOptions) -> None:
    """Everything checkable before loading anything (a mistake never costs a run)."""
    from .run import SOURCES
    require_counts(samples=o.samples, sweep_samples=o.sweep_samples, calib_samples=o.calib_samples,
                   batch_size=o.batch_size)
    if o.source not in SOURCES:
        raise UsageError(f"--source {o.source!r}: choose from {', '.join(SOURCES)}")
    if not 2 <= o.weight_bits <= 8:
        raise UsageError(f"--weight-bits {o.weight_bits}: the FPGA format takes 2..8")
    resolve_models(o.models)
    if o.sweep_weight_bits:
        _int_list(o.sweep_weight_bits, "--sweep-weight-bits", 2, 8)
    if o.sweep_steps:
        _int_list(o.sweep_steps, "--sweep-steps", 1, 64)
    if not o.sweep and (o.sweep_weight_bits or o.sweep_steps or o.sweep_samples):
        raise UsageError("--sweep-weight-bits/--sweep-steps/--sweep-samples need --sweep")


def _neurobench(counts, graph) -> dict:
    try:
        from step_deploy.energy.neurobench_names import neurobench_metrics
    except ImportError:
        return {}
    return neurobench_metrics(counts, graph)


def compute(ckpt, o: EnergyOptions, prep=None):
    """Load, count, price: ``(EnergyResult, sweep points or None, prepared checkpoint)``."""
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.export.common import prepare
    from step_deploy.export.shared_options import N_CALIB
    from step_deploy.frontend.capture import encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    from step_deploy.energy.counters import bit_widths
    from step_deploy.ir import IRError
    from step_deploy.energy.report import WIDTH_DEPENDENT, price_all
    from .run import count_dataset, quantized_graph

    constants = load_constants(o.constants)
    models = resolve_models(o.models)
    prep = prep or prepare(ckpt)
    model = prep.model
    data = resolve_calibration(o.data, root=o.root, model=model, info=prep.info, n_calib=o.calib_samples or N_CALIB,
                               n_eval=o.samples)
    x, y = data.x_eval, data.y_eval
    if o.samples is not None:
        x, y = x[:o.samples], (y[:o.samples] if y is not None else None)
    folded = fold_batchnorm(prep.graph)
    T = int(model.step)
    calib_enc = encoded_input(model, data.x_calib)
    # quantize only for what is used: a golden source's graph, or the deployed widths of a PyTorch run
    # (needed by the width-dependent models only)
    if o.source == "torch":
        qgraph = None
        need_widths = any(m in WIDTH_DEPENDENT for m in models)
        q_fpga, no_int = None, None
        if need_widths:
            try:
                q_fpga = quantized_graph("golden-fpga", folded, calib_enc, T, weight_bits=o.weight_bits)
            except IRError as e:  # a neuron with no integer form (KLIF, EIF, CLIF, GLIF, PSN): float32 prices only
                lines = [line.strip() for line in str(e).strip().splitlines()]
                no_int = next((line for line in lines if line.startswith("error:")), lines[0])
    else:
        qgraph = q_fpga = quantized_graph(o.source, folded, calib_enc, T, weight_bits=o.weight_bits)
    run = count_dataset(model, prep.graph, x, y, source=o.source, qgraph=qgraph,
                        batch_size=o.batch_size, progress=o.progress, desc="counting")
    notes = []
    if o.source == "torch" and no_int:
        notes.append(f"no /int prices: the network has no FPGA integer form ({no_int.removeprefix('error: ')})")
    if data.is_noise:
        notes.append("the inputs are NOISE (no real data found): the counts and energies describe noise, not the task")
    header = {"checkpoint": Path(str(ckpt)).name, "arch": getattr(prep.info, "arch", None), "data": data.source,
              "source": o.source, "samples": len(x), "steps": T, "accuracy": run.accuracy,
              "widths_int": {"from": f"quantize-fpga, {o.weight_bits}-bit weights, membranes calibrated on "
                                     f"{len(data.x_calib)} samples"}}
    # a golden run's counts already have the deployed widths (Loihi's or the FPGA's); the PyTorch run gets the FPGA's
    widths = (bit_widths(q_fpga) if q_fpga is not None else None) if o.source == "torch" else "as-counted"
    if o.source != "torch":
        header["widths_int"] = {"from": f"the {o.source} network's own widths"}
    res = price_all(run.counts, run.graph, folded, models, widths, constants, header, notes, union=run.union)
    res.neurobench = _neurobench(run.counts, run.graph)
    points = None
    if o.sweep:
        from .sweep import run_sweep
        wbs = _int_list(o.sweep_weight_bits, "--sweep-weight-bits", 2, 8) if o.sweep_weight_bits \
            else list(DEFAULT_SWEEP_WEIGHT_BITS)
        steps = _int_list(o.sweep_steps, "--sweep-steps", 1, 64) if o.sweep_steps \
            else sorted({1, max(1, T // 2), T})
        n = o.sweep_samples or len(x)
        points = run_sweep(model, folded, data.x_calib, x[:n], y[:n] if y is not None else None, wbs, steps,
                           constants, batch_size=o.batch_size, progress=o.progress)
    return res, points, prep


def write(res, points, out: Path) -> list[str]:
    """Write the report files into ``out`` (a temporary folder); returns the file names."""
    from step_deploy.energy.report import markdown, plot_firing, plot_layers, plot_qann
    from .sweep import plot_sweep, sweep_markdown

    (out / "energy.json").write_text(json.dumps(res.to_dict(), indent=1, sort_keys=True) + "\n")
    (out / "energy.md").write_text(markdown(res))
    plot_layers(res, out / "energy_per_layer.png")
    plot_firing(res, out / "firing_rate.png")
    if res.comparison:
        plot_qann(res, out / "snn_vs_qann.png")
    if points is not None:
        ref = "horowitz"
        (out / "sweep.json").write_text(json.dumps({"pareto_model": ref, "points": [p.to_dict() for p in points]},
                                                   indent=1, sort_keys=True) + "\n")
        (out / "sweep.md").write_text(sweep_markdown(points, ref))
        plot_sweep(points, ref, out / "sweep.png")
    return sorted(p.name for p in out.iterdir())


def run_command(ckpt, out, o: EnergyOptions, force: bool = False) -> list[str]:
    """The whole command: validate, check ``out`` up front, compute, write atomically; the lines to print."""
    from step_deploy.atomic import atomic_output_dir, check_output_dir

    from step_deploy.energy.report import summary_line

    validate(o)
    require_checkpoint_file(ckpt)
    check_output_dir(out, force, inputs=[ckpt])
    load_constants(o.constants)  # a bad constants file fails before any work
    res, points, _ = compute(ckpt, o)
    with atomic_output_dir(out, force, writer="step-energy", inputs=[ckpt]) as tmp:
        write(res, points, tmp)
    h = res.header
    lines = [f"counted {h['samples']} sample(s) through {h['source']}, T = {h['steps']} (data: {h['data']})"
             + (f", accuracy {h['accuracy']:.4f}" if h['accuracy'] is not None else ""),
             summary_line(res)]
    lines += [b.sentence() for b in list(res.comparison.values()) + list(res.comparison_skipping.values())]
    if points is not None:
        lines.append(f"sweep: {len(points)} points (weight bits x T), Pareto front in {Path(out) / 'sweep.md'}")
    lines.append(f"report: {Path(out) / 'energy.md'} (energy.json, energy_per_layer.png, firing_rate.png, "
                 f"snn_vs_qann.png)")
    return lines


__all__ = ["EnergyOptions", "compute", "run_command", "validate", "write"]
