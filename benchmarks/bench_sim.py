"""Cycle-level simulator: its speed against a PyTorch float forward and the integer golden model of
the same network, measured in the same run, and its peak memory; then one full-size sample
(``spikformer-4-384``, CIFAR-10 size) on ``loihi2`` and on ``zcu102``, with the time it takes.
Timings are reported, never asserted (issue 10's target: the simulator costs at most 3x the
PyTorch forward).

    .venv/bin/python benchmarks/bench_sim.py [--arch A] [--samples N] [--repeat R] [--threads N]
                                             [--full-size] [--json PATH]

Per simulated architecture (``loihi2`` mesh, ``fpga`` on zcu104 with ``auto`` parallelism):

* ``pytorch``: the float model's forward on the batch (``torch.no_grad``);
* ``golden``: ``run_golden`` of the quantized network (Loihi fixed_pt or FPGA integer);
* ``simulator``: ``simulate_mesh`` / ``simulate_fpga`` on the same batch (spikes, time, energy).

The model is the digits demo architecture with random weights (BatchNorm statistics randomized so
the network spikes; see ``step_deploy.models.random_stats``), quantized on 64 bundled digits; the
inputs are bundled digits test images. Each is run once to warm up, then ``--repeat`` times,
interleaved; the table shows medians, samples/s and ratios. Peak memory is the peak resident set of
a child process that runs only that stage (``ru_maxrss``), so the stages do not share a peak."""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

DEMO_ARCH = "spikformer-2-64-digits"
FULL_SIZE_ARCH = "spikformer-4-384"
SIM_ARCHS = ("loihi2", "fpga")
TARGET = 3.0


def ratio(value: float, peer: float) -> float:
    return value / peer if peer > 0 and math.isfinite(peer) else float("nan")


def _model(arch: str, seed: int = 0):
    from step_deploy.models import build_model
    from step_deploy.models.random_stats import randomize_batchnorm
    torch.manual_seed(seed)
    return randomize_batchnorm(build_model(arch).eval(), seed)


def _digits(n: int, split: str = "test") -> torch.Tensor:
    from step_deploy.data import load_dataset
    x = load_dataset("digits", split).tensors[0]
    reps = math.ceil(n / len(x))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n]


def prepared(arch_name: str, sim_arch: str, x_raw: torch.Tensor, calib_raw: torch.Tensor):
    """``(model, folded graph, quantized graph, encoded inputs)`` for one simulated architecture."""
    from step_deploy.energy_eval.run import quantized_graph
    from step_deploy.frontend.capture import capture, encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    model = _model(arch_name)
    folded = fold_batchnorm(capture(model))
    source = "golden-fpga" if sim_arch == "fpga" else "golden-loihi"
    q = quantized_graph(source, folded, encoded_input(model, calib_raw), int(model.step))
    return model, folded, q, encoded_input(model, x_raw)


def stage_fns(model, folded, q, x_raw, x_enc, sim_arch: str, part: str = "zcu104") -> dict:
    from step_deploy.simulators.golden import run_golden

    def pytorch():
        with torch.no_grad():
            model(x_raw)

    def golden():
        run_golden(q, x_enc, record=False)

    if sim_arch == "fpga":
        from step_deploy.fpga.estimate import auto_parallelism
        from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga
        par = auto_parallelism(q, part)

        def simulator():
            return simulate_fpga(q, x_enc, part=part, parallelism=par, record=False)
    else:
        from step_deploy.simulators.cycle.mesh import simulate_mesh

        def simulator():
            return simulate_mesh(q, folded, x_enc, hardware="loihi2-assumed", target="loihi2", record=False)
    return {"pytorch": pytorch, "golden": golden, "simulator": simulator}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fns: dict, repeat: int) -> dict:
    for f in fns.values():  # warm-up
        f()
    times = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeat):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            times[k].append(timed(fns[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss_mb(stage: str, sim_arch: str, samples: int) -> float:
    """Peak resident memory (MB) of a child process running only ``stage`` once."""
    code = (f"import sys, resource; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"import bench_sim as b; b._child({stage!r}, {sim_arch!r}, {samples})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _child(stage: str, sim_arch: str, samples: int) -> None:
    import resource
    model, folded, q, x_enc = prepared(DEMO_ARCH, sim_arch, _digits(samples), _digits(64, "train"))
    fns = stage_fns(model, folded, q, _digits(samples), x_enc, sim_arch)
    fns[stage]()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def full_size(sim_arch: str) -> dict:
    """One CIFAR-10-size sample of spikformer-4-384 (random weights, 8 random calibration images)."""
    torch.manual_seed(0)
    shape = (1, 3, 32, 32)
    x = torch.rand(shape)
    calib = torch.rand((8,) + shape[1:])
    t0 = time.perf_counter()
    model, folded, q, x_enc = prepared(FULL_SIZE_ARCH, "fpga" if sim_arch != "loihi2" else "loihi2", x, calib)
    t_quant = time.perf_counter() - t0
    t0 = time.perf_counter()
    if sim_arch == "loihi2":
        from step_deploy.simulators.cycle.mesh import simulate_mesh
        res = simulate_mesh(q, folded, x_enc, hardware="loihi2-assumed", target="loihi2", record=True)
    else:
        from step_deploy.fpga.estimate import auto_parallelism
        from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga
        res = simulate_fpga(q, x_enc, part=sim_arch, parallelism=auto_parallelism(q, sim_arch), record=True)
    t_sim = time.perf_counter() - t0
    from step_deploy.simulators.cycle.report import parity_table
    from step_deploy.simulators.golden import run_golden
    parity = parity_table(res.spikes, run_golden(q, x_enc, record=sorted(res.spikes)).traces)
    return {"arch": sim_arch, "quantize_s": round(t_quant, 2), "simulate_s": round(t_sim, 2),
            "latency_ns": float(res.mean_latency_ns), "energy_uj": res.energy_per_sample_pj * 1e-6,
            "units": len(res.units), "spikes_compared": sum(v["elements"] for v in parity.values()),
            "mismatches": sum(v["mismatches"] for v in parity.values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=",".join(SIM_ARCHS), help="simulated architectures: loihi2,fpga")
    ap.add_argument("--samples", type=int, default=32, help="batch of digits test images (default 32)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (1 on a shared machine)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--full-size", action="store_true", help="also one spikformer-4-384 sample on loihi2 and zcu102")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    archs = [s.strip() for s in a.arch.split(",") if s.strip()]
    bad = [s for s in archs if s not in SIM_ARCHS]
    if bad or a.samples < 1 or a.repeat < 1:
        ap.error(f"--arch takes {', '.join(SIM_ARCHS)}; --samples and --repeat at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    x_raw, calib = _digits(a.samples), _digits(64, "train")
    rows = []
    print(f"{DEMO_ARCH} (random weights), {a.samples} digits per batch, median of {a.repeat}; target: simulator "
          f"<= {TARGET:g}x the PyTorch forward")
    print(f"{'arch':<8} {'stage':<10} {'s/batch':>9} {'samples/s':>10} {'x pytorch':>10} {'x golden':>9} {'peak MB':>8}")
    for sa in archs:
        model, folded, q, x_enc = prepared(DEMO_ARCH, sa, x_raw, calib)
        med = measure(stage_fns(model, folded, q, x_raw, x_enc, sa), a.repeat)
        for stage, s in med.items():
            mem = float("nan") if a.no_memory else peak_rss_mb(stage, sa, a.samples)
            row = {"arch": sa, "stage": stage, "seconds": s, "samples_per_s": a.samples / s,
                   "x_pytorch": ratio(s, med["pytorch"]), "x_golden": ratio(s, med["golden"]), "peak_mb": mem}
            rows.append(row)
            print(f"{sa:<8} {stage:<10} {s:>9.4f} {row['samples_per_s']:>10.1f} {row['x_pytorch']:>10.2f} "
                  f"{row['x_golden']:>9.2f} {mem:>8.0f}")
    full = []
    if a.full_size:
        print(f"\n{FULL_SIZE_ARCH}, one CIFAR-10-size sample (random weights)")
        print(f"{'arch':<8} {'quantize s':>10} {'simulate s':>10} {'latency':>12} {'energy uJ':>10} {'units':>6} "
              f"{'spikes compared':>16} {'mismatches':>10}")
        for sa in ("loihi2", "zcu102"):
            r = full_size(sa)
            full.append(r)
            print(f"{sa:<8} {r['quantize_s']:>10.1f} {r['simulate_s']:>10.1f} {r['latency_ns'] * 1e-3:>10.1f}us "
                  f"{r['energy_uj']:>10.2f} {r['units']:>6} {r['spikes_compared']:>16,} {r['mismatches']:>10}")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "full_size": full}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
