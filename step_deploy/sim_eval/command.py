"""``step-sim``: quantize a checkpoint for its target, run the cycle-level simulator on test samples,
check its spikes against the integer golden model element by element, and write ``sim.json``,
``sim.md``, ``units.csv`` (per unit and hardware step), ``timeline.png`` and ``layers.png``
atomically (``--trace`` adds ``steps.csv`` and the simulated spikes in ``spikes.npz``;
``--explore`` adds ``explore.{json,md,png}`` for the FPGA)."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from step_deploy.errors import UsageError, require_checkpoint_file, require_counts

ARCHS = ("loihi1", "loihi2", "fpga")
#: the hardware description each mesh arch simulates by default (loihi2: Intel has published no
#: per-event costs; the bundled 'loihi2-assumed' applies Loihi 1's, labelled as an assumption)
DEFAULT_HARDWARE = {"loihi1": "loihi1", "loihi2": "loihi2-assumed"}
SCHEDULES = ("step", "batched")


@dataclass
class SimOptions:
    arch: str = "loihi2"
    hardware: Optional[str] = None
    part: str = "zcu104"
    clock_mhz: float = 200.0
    parallelism: Optional[str] = "auto"
    schedule: str = "step"
    weight_bits: int = 8
    samples: int = 16
    data: Optional[str] = None
    root: Optional[str] = None
    calib_samples: Optional[int] = None
    trace: bool = False
    explore: bool = False
    batch_size: int = 16
    progress: bool = True


def validate(o: SimOptions) -> None:
    """Everything checkable before loading anything."""
    if o.arch not in ARCHS:
        raise UsageError(f"--arch {o.arch!r}: choose from {', '.join(ARCHS)}")
    require_counts(samples=o.samples, batch_size=o.batch_size, calib_samples=o.calib_samples)
    if o.schedule not in SCHEDULES:
        raise UsageError(f"--schedule {o.schedule!r}: choose from {', '.join(SCHEDULES)}")
    if not 2 <= o.weight_bits <= 8:
        raise UsageError(f"--weight-bits {o.weight_bits}: the FPGA format takes 2..8")
    if o.clock_mhz <= 0:
        raise UsageError(f"--clock-mhz must be positive, got {o.clock_mhz}")
    if o.arch != "fpga":
        for flag, bad in (("--explore", o.explore), ("--schedule", o.schedule != "step"),
                          ("--weight-bits", o.weight_bits != 8)):
            if bad:
                raise UsageError(f"{flag} applies to --arch fpga only (the mesh runs the Loihi fixed_pt network)")
    elif o.hardware:
        raise UsageError("--hardware is a mesh description (loihi1/loihi2); for --arch fpga give --part")
    if o.arch != "fpga":
        from step_deploy.simulators.cycle.hardware import EVENTS, load_hardware
        hw = load_hardware(o.hardware or DEFAULT_HARDWARE[o.arch])  # a bad file fails before any work
        for kind in EVENTS:  # and so does a null the simulation needs (named by the hardware's error)
            hw.event(kind)
        hw.sync_latency_ns()
        hw.mesh_width, hw.mesh_height, hw.cores_per_tile, hw.cores_per_chip
    else:
        from step_deploy.fpga.parts import load_part
        load_part(o.part)
        if o.parallelism not in (None, "auto"):
            from step_deploy.fpga.parallelism import parse_parallelism
            parse_parallelism(o.parallelism)


def _batches(n: int, size: int):
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _cat_results(parts: list):
    """Several batch results of one simulation -> one (arrays summed or concatenated over samples)."""
    from step_deploy.simulators.cycle.result import SimResult
    if len(parts) == 1:
        return parts[0]
    import torch
    a = parts[0]
    layers: dict = {}
    for p in parts:
        _acc(layers, p.layers)
    return SimResult(
        arch=a.arch, kind=a.kind, schedule=a.schedule, steps=a.steps, samples=sum(p.samples for p in parts),
        hw_steps=a.hw_steps, units=a.units, busy_ns=sum(p.busy_ns for p in parts),
        stall_ns=sum(p.stall_ns for p in parts), step_ns=np.concatenate([p.step_ns for p in parts]),
        latency_ns=np.concatenate([p.latency_ns for p in parts]), throughput_sps=a.throughput_sps
        if all(p.throughput_sps == a.throughput_sps for p in parts) else
        float(sum(p.samples for p in parts) / max(1e-30, sum(float(p.latency_ns.sum()) for p in parts) * 1e-9)),
        events={k: sum(p.events[k] for p in parts) for k in a.events},
        layers=layers, energy_pj={k: sum(p.energy_pj.get(k, 0.0) for p in parts) for k in a.energy_pj},
        traffic_bits={k: sum(p.traffic_bits.get(k, 0) for p in parts) for k in a.traffic_bits},
        spikes={k: torch.cat([p.spikes[k] for p in parts], dim=1) for k in a.spikes},
        outputs={k: torch.cat([p.outputs[k] for p in parts], dim=1) for k in a.outputs},
        hardware=a.hardware, sources=a.sources, notes=a.notes)


def _acc(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict):
            _acc(dst.setdefault(k, {}), v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            dst[k] = dst.get(k, 0) + v
        else:
            dst.setdefault(k, v)


#: budgets ``--schedule batched --parallelism auto`` tries, largest first (see ``fpga_parallelism``)
BATCHED_AUTO_BUDGETS = (0.8, 0.5, 0.25, 0.125, 0.0625)


def fpga_parallelism(qgraph, o: SimOptions) -> tuple[dict, str]:
    """``({node: P}, how)``: ``--parallelism`` resolved once for the whole run. ``auto`` is the FPGA
    target's ``auto_parallelism`` (tuned for the generated step-by-step design, budget 0.8); under
    ``--schedule batched``, whose buffers hold T steps twice, it is that search at the largest budget of
    :data:`BATCHED_AUTO_BUDGETS` whose batched design fits the part with every weight on chip (else
    the largest that fits at all, else P = 1 everywhere)."""
    from step_deploy.fpga.parallelism import resolve_parallelism
    from step_deploy.simulators.cycle.fpga_schedule import plan_design

    if o.parallelism != "auto" or o.schedule == "step":
        par = resolve_parallelism(o.parallelism, qgraph, o.part, o.clock_mhz)
        return par, "--parallelism " + str(o.parallelism)
    fallback = None
    for b in BATCHED_AUTO_BUDGETS:
        par = resolve_parallelism("auto", qgraph, o.part, o.clock_mhz, budget=b)
        plan = plan_design(qgraph, o.part, clock_mhz=o.clock_mhz, parallelism=par, schedule="batched")
        if plan.fits() and not any(k.spilled for k in plan.kernels):
            return par, f"auto at budget {b} (the largest of {BATCHED_AUTO_BUDGETS} whose batched design fits on chip)"
        if plan.fits() and fallback is None:
            fallback = (par, f"auto at budget {b}: no budget of {BATCHED_AUTO_BUDGETS} keeps every weight on chip")
    return fallback or (resolve_parallelism(1, qgraph, o.part, o.clock_mhz),
                        "P = 1: no auto budget gives a batched design that fits")


def simulate(qgraph, folded, x_enc, o: SimOptions):
    """Run the chosen simulator over ``x_enc`` in batches, with the golden model beside it:
    ``(SimResult, parity, golden predictions)``."""
    import torch
    from step_deploy.simulators.cycle.report import parity_table
    from step_deploy.simulators.golden import run_golden

    parts, parity_parts, preds = [], [], []
    par, how = fpga_parallelism(qgraph, o) if o.arch == "fpga" else (None, "")
    spans = _batches(len(x_enc), o.batch_size)
    it = spans
    if o.progress:
        from tqdm import tqdm
        it = tqdm(spans, desc=f"simulating on {o.arch}", unit="batch", leave=False)
    for s, e in it:
        xb = x_enc[s:e]
        if o.arch == "fpga":
            from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga
            r = simulate_fpga(qgraph, xb, part=o.part, clock_mhz=o.clock_mhz, parallelism=par,
                              schedule=o.schedule, record=True)
            r.notes.insert(0, f"parallelism: {how}")
        else:
            from step_deploy.simulators.cycle.mesh import simulate_mesh
            r = simulate_mesh(qgraph, folded, xb, hardware=o.hardware or DEFAULT_HARDWARE[o.arch], target=o.arch,
                              record=True)
        g = run_golden(qgraph, xb, record=sorted(r.spikes))
        parity_parts.append(parity_table(r.spikes, g.traces))
        preds.append(g.final().argmax(-1))
        if not o.trace:
            r.spikes = {}
        parts.append(r)
    parity: dict = {}
    for p in parity_parts:
        for k, v in p.items():
            d = parity.setdefault(k, {"mismatches": 0, "elements": 0, "first_step": None})
            d["mismatches"] += v["mismatches"]
            d["elements"] += v["elements"]
            if d["first_step"] is None and v["first_step"] is not None:
                d["first_step"] = v["first_step"]
    return _cat_results(parts), parity, torch.cat(preds)


def compute(ckpt, o: SimOptions, prep=None):
    """Load, quantize for the target, simulate: ``(SimResult, parity, header, explore result or None)``."""
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.energy_eval.run import quantized_graph
    from step_deploy.export.common import prepare
    from step_deploy.export.shared_options import N_CALIB
    from step_deploy.frontend.capture import encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    prep = prep or prepare(ckpt)
    model = prep.model
    data = resolve_calibration(o.data, root=o.root, model=model, info=prep.info, n_calib=o.calib_samples or N_CALIB,
                               n_eval=o.samples)
    x, y = data.x_eval[:o.samples], (data.y_eval[:o.samples] if data.y_eval is not None else None)
    folded = fold_batchnorm(prep.graph)
    T = int(model.step)
    source = "golden-fpga" if o.arch == "fpga" else "golden-loihi"
    qgraph = quantized_graph(source, folded, encoded_input(model, data.x_calib), T, weight_bits=o.weight_bits)
    x_enc = encoded_input(model, x)
    res, parity, pred = simulate(qgraph, folded, x_enc, o)
    acc = float((pred == y[:len(pred)]).float().mean()) if y is not None else None
    header = {"checkpoint": Path(str(ckpt)).name, "arch": getattr(prep.info, "arch", None), "data": data.source,
              "samples": len(x), "steps": T, "accuracy": acc,
              "quantization": "Loihi fixed_pt (quantize-loihi)" if o.arch != "fpga" else
              f"FPGA integer (quantize-fpga, {o.weight_bits}-bit weights)"}
    if data.is_noise:
        res.notes.insert(0, "the inputs are NOISE (no real data found): latency and energy describe noise")
    explored = None
    if o.explore:
        from step_deploy.simulators.cycle.explore import explore
        explored = explore(qgraph, o.part, clock_mhz=o.clock_mhz, inputs=x_enc[:min(len(x_enc), 8)],
                           progress=o.progress)
    return res, parity, header, explored


def npz_bytes(tensors: dict) -> bytes:
    """``np.load``-able .npz of ``{name: tensor}`` with fixed zip timestamps (byte-identical reruns;
    ``np.savez`` stamps the current time)."""
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in sorted(tensors.items()):
            a = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
            a = a.astype(np.int8 if a.size == 0 or int(np.abs(a).max()) < 128 else np.int64)
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(k.replace("/", "__") + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, arr.getvalue())
    return buf.getvalue()


def write(res, parity, header, explored, out: Path, trace: bool = False) -> list[str]:
    from step_deploy.simulators.cycle.report import markdown, plot_layers, plot_timeline

    doc = {"header": header, "parity": parity, **res.to_dict()}
    (out / "sim.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (out / "sim.md").write_text(markdown(res, header, parity))
    (out / "units.csv").write_text(res.unit_step_csv())
    plot_timeline(res, out / "timeline.png")
    plot_layers(res, out / "layers.png")
    if trace:
        lines = ["sample,hw_step,step_ns"]
        for i, row in enumerate(res.step_ns):
            lines += [f"{i},{s},{float(v):.6g}" for s, v in enumerate(row)]
        (out / "steps.csv").write_text("\n".join(lines) + "\n")
        (out / "spikes.npz").write_bytes(npz_bytes(res.spikes))
    if explored is not None:
        (out / "explore.json").write_text(json.dumps(explored.to_dict(), indent=1, sort_keys=True) + "\n")
        (out / "explore.md").write_text(explored.markdown())
        explored.plot(out / "explore.png")
    return sorted(p.name for p in out.iterdir())


def explore_lines(explored, where) -> list[str]:
    """The Pareto front as printed lines (``--explore``)."""
    pts = explored.points
    lines = [f"explore: {len(pts)} designs on {explored.part} at {explored.clock_mhz:g} MHz "
             f"({sum(p.fits for p in pts)} fit); Pareto front (latency x largest utilisation x energy):"]
    for p in explored.front_points():
        lines.append(f"  {p.schedule:<8} {p.label:<10} latency {p.latency_ns * 1e-3:>10.4g} µs  "
                     f"{p.throughput_sps:>9.4g} samples/s  util {p.max_utilisation:>6.1%}  "
                     f"{p.energy_pj * 1e-6:>8.4g} µJ/sample")
    lines.append(f"  every design: {where} (explore.json, explore.png)")
    return lines


def run_command(ckpt, out, o: SimOptions, force: bool = False) -> tuple[list[str], int]:
    """The whole command: validate, check ``out``, simulate, write atomically; ``(lines, exit code)``
    (1 when the simulated spikes differ from the golden model's: the report is still written)."""
    from step_deploy.atomic import atomic_output_dir, check_output_dir
    from step_deploy.simulators.cycle.report import parity_ok, summary_line

    validate(o)
    require_checkpoint_file(ckpt)
    check_output_dir(out, force, inputs=[ckpt])
    res, parity, header, explored = compute(ckpt, o)
    with atomic_output_dir(out, force, writer="step-sim", inputs=[ckpt]) as tmp:
        write(res, parity, header, explored, tmp, o.trace)
    lines = [f"simulated {header['samples']} sample(s), T = {header['steps']} (data: {header['data']})"
             + (f", golden accuracy {header['accuracy']:.4f}" if header["accuracy"] is not None else ""),
             summary_line(res, parity)]
    if explored is not None:
        lines += explore_lines(explored, Path(out) / "explore.md")
    lines.append(f"report: {Path(out) / 'sim.md'} (sim.json, units.csv, timeline.png, layers.png)")
    return lines, 0 if parity_ok(parity) else 1


__all__ = ["ARCHS", "DEFAULT_HARDWARE", "SimOptions", "compute", "run_command", "simulate", "validate", "write"]
