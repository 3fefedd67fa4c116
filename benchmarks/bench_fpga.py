"""FPGA target: export time, g++ build time (cold and cached), C-simulation speed against the
integer golden model and PyTorch on the same samples, csim vs golden parity, and the
Spikformer-1-384 / XCZU7EV estimate beside the published design, in one run (tables; parity is
checked, speed is not asserted).

    .venv/bin/python benchmarks/bench_fpga.py [--ckpt runs/demo/model.ckpt] [--samples 64] [--threads N]
                                              [--full-size] [--no-demo] [--no-anchor]

On a machine shared with other jobs pass ``--threads 1``: with torch's default threads on 2 busy
cores, PyTorch and the golden model ran 7-40x slower than with one thread (measured), which
swamps every ratio; the C simulation is single-threaded either way.

Rows (demo model, or ``--ckpt``): ``step-export --target fpga`` wall time (a fresh process:
imports, quantization, float-vs-golden accuracy on the test split, writing the project), g++
build seconds with an empty cache (``STEP_DEPLOY_CACHE`` points at a fresh temporary directory)
and with the library cached, samples/s of the C simulation (no traces), the golden model (one
batch, no traces) and the float PyTorch model (one batch) on the same ``--samples`` test digits
with the ratio against PyTorch, and the parity line (every layer at every step, element-wise).

``--full-size``: a random-weight ``spikformer-4-384`` (BatchNorm statistics randomized so it
spikes), quantized with ``quantize_fpga`` on 2 random images, written with
``HlsProject(qgraph).files()`` into a temporary directory (``step-export`` refuses it: all its
weights do not fit on any part's chip, as expected) and compiled with g++: compile seconds, peak
memory of the compiler, the generated source size, seconds per sample and the mismatches against
the golden model on one sample (traces: every ``FpgaLIF`` and the output layer).
Nothing is written outside temporary directories, which are removed at the end."""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DEMO_CKPT = "runs/demo/model.ckpt"
FULL_SIZE_ARCH = "spikformer-4-384"


# ---------------------------------------------------------------------------------- small helpers
def fmt_rate(n: int, seconds: float) -> float:
    """Samples per second (``inf`` when no time was measured)."""
    return n / seconds if seconds > 0 else float("inf")


def ratio(value: float, peer: float) -> float:
    """``value / peer`` for throughputs (``nan`` when the peer is 0 or infinite)."""
    return value / peer if peer and np.isfinite(peer) else float("nan")


def traced_layers(proj, ops=("FpgaLIF",)) -> list[str]:
    """The layers of ``proj`` whose op is in ``ops``, plus the layer that drives the top's output."""
    names = [l.node.name for l in proj.layers if l.node.op in ops]
    if proj.output_node in proj.by_name and proj.output_node not in names:
        names.append(proj.output_node)
    return names


def children_peak_rss_mb() -> float:
    """Peak resident memory (MiB) of the largest waited-for descendant process so far (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def tree_bytes(root: Path, pattern: str = "*") -> tuple[int, int, str]:
    """(total bytes, largest file's bytes, largest file's relative path) of the files under ``root``."""
    files = [p for p in root.rglob(pattern) if p.is_file()]
    if not files:
        return 0, 0, ""
    big = max(files, key=lambda p: p.stat().st_size)
    return sum(p.stat().st_size for p in files), big.stat().st_size, str(big.relative_to(root))


def row(name: str, value, unit: str = "", vs: str = "-") -> str:
    v = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
    return f"{name:52s} {v:>14s} {unit:10s} {vs:>12s}"


def header(title: str) -> list[str]:
    return [f"# {title}", f"{'measurement':52s} {'value':>14s} {'unit':10s} {'vs PyTorch':>12s}"]


# ---------------------------------------------------------------------------------- demo model
def export_wall_time(ckpt: str, out: Path, env: dict) -> tuple[float, str]:
    """Run ``step-export ckpt --target fpga -o out`` in a fresh process; (seconds, its stdout)."""
    exe = Path(sys.executable).with_name("step-export")
    cmd = [str(exe), ckpt, "--target", "fpga", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step-export failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return seconds, proc.stdout


def project_like_export(ckpt: str):
    """The HlsProject ``step-export --target fpga`` writes for ``ckpt`` with default options (same
    calibration data, pipeline, part, clock and parallelism), the prepared checkpoint and
    ``{stage: seconds}`` (load + capture, quantize-fpga pipeline, estimate + project, the
    float-vs-golden accuracy the export computes on the test split) plus ``"files"``."""
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.export import prepare
    from step_deploy.export.fpga import N_CALIB, est_mod_parallelism
    from step_deploy.export.loihi_artifacts import float_vs_golden
    from step_deploy.fpga import estimate as est_mod
    from step_deploy.fpga.hls_writer import HlsProject
    from step_deploy.fpga.parts import load_part
    from step_deploy.frontend import encoded_input
    from step_deploy.passes import PIPELINES, PassContext, run_pipeline

    t0 = time.perf_counter()
    prep = prepare(ckpt)
    t1 = time.perf_counter()
    part, clock = load_part("zcu104"), 200.0
    calib = resolve_calibration(None, root=None, model=prep.model, info=prep.info, n_calib=N_CALIB, n_eval=None)
    T = int(prep.model.step)
    ctx = PassContext(steps=T, calibration=encoded_input(prep.model, calib.x_calib),
                      options={"quantize-fpga": {"weight_bits": 8, "per_channel": True}})
    qgraph = run_pipeline(prep.graph, PIPELINES["fpga"], ctx)
    t2 = time.perf_counter()
    est = est_mod.estimate(qgraph, part, clock, est_mod.auto_parallelism(qgraph, part, clock))
    proj = HlsProject(qgraph, parallelism=est_mod_parallelism(est), part=part.hls_part, clock_mhz=clock, steps=T)
    files = proj.files()
    t3 = time.perf_counter()
    float_vs_golden(prep, qgraph, calib.x_eval, calib.y_eval)
    t4 = time.perf_counter()
    return proj, prep, {"load + capture": t1 - t0, "calibration + quantize-fpga": t2 - t1,
                        "estimate + parallelism + files": t3 - t2,
                        f"float vs golden accuracy, {len(calib.x_eval)} samples": t4 - t3, "files": files}


def same_project_files(files: dict, directory: Path) -> bool:
    """Whether every generated file (``{relative path: bytes}``) is byte-identical in ``directory``."""
    return all((directory / rel).is_file() and (directory / rel).read_bytes() == data for rel, data in files.items())


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def demo_section(ckpt: str, n: int, repeat: int) -> list[str]:
    from step_deploy.data import load_dataset
    from step_deploy.fpga.csim import CSimModel
    from step_deploy.fpga.parity import csim_parity, golden_run, parity_markdown
    from step_deploy.frontend import encoded_input
    from step_deploy.simulators.golden import run_golden

    lines = []
    with tempfile.TemporaryDirectory(prefix="bench_fpga_") as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        env = {**os.environ, "STEP_DEPLOY_CACHE": str(cache)}
        t_export, _ = export_wall_time(ckpt, tmp / "export", env)

        old_cache = os.environ.get("STEP_DEPLOY_CACHE")
        os.environ["STEP_DEPLOY_CACHE"] = str(cache)  # an empty cache: the first compile is cold
        try:
            cold = CSimModel(tmp / "export")
            cold.compile()
            t_cold, was_cached = cold.build_seconds, cold.cached
            warm = CSimModel(tmp / "export")
            t0 = time.perf_counter()
            warm.compile()
            t_warm = time.perf_counter() - t0
        finally:
            if old_cache is None:
                os.environ.pop("STEP_DEPLOY_CACHE", None)
            else:
                os.environ["STEP_DEPLOY_CACHE"] = old_cache

        proj, prep, stages = project_like_export(ckpt)
        identical = same_project_files(stages.pop("files"), tmp / "export")
        model = prep.model.eval()
        test = load_dataset("digits", "test")
        x, y = test.tensors[0][:n], test.tensors[1][:n]
        n = len(x)
        xe = encoded_input(model, x)
        xin, _, _ = golden_run(proj, xe[:, :1])  # warm-up, and the top's integer inputs of one sample
        xin_all = golden_run(proj, xe)[0]

        with torch.no_grad():
            t_torch = best_of(lambda: model(x), repeat)
        t_gold = best_of(lambda: run_golden(proj.graph, xe, steps=proj.steps, record=False), repeat)
        t_csim = best_of(lambda: warm.predict(xin_all, trace=False), repeat)
        parity = csim_parity(proj, warm, xe, y)

    torch_rate = fmt_rate(n, t_torch)
    T = proj.steps
    arch = (prep.info.metadata or {}).get("arch_name") or prep.info.arch
    lines += header(f"FPGA target, {ckpt} ({arch}, T={T}, {len(proj.layers)} layers), {n} digits test "
                    f"samples, best of {repeat}, torch threads {torch.get_num_threads()}")
    lines.append(row("step-export --target fpga wall time (fresh process)", t_export, "s"))
    lines.append("export stages, re-run in this process:")
    for stage, t in stages.items():
        lines.append(row(f"  {stage}", t, "s"))
    lines.append(row("g++ build, empty cache (cold)", t_cold, "s") + ("" if not was_cached else "  (was cached!)"))
    lines.append(row("g++ build, library cached (warm: hash + load)", t_warm, "s"))
    for name, t in (("PyTorch float model, one batch", t_torch),
                    ("integer golden model, one batch, no traces", t_gold),
                    ("C simulation (g++ -O2, ap_int), no traces", t_csim)):
        rate = fmt_rate(n, t)
        lines.append(row(name, rate, "samples/s", f"{ratio(rate, torch_rate):.3f}x"))
    lines.append(row("this run's project files == step-export's", "yes" if identical else "NO"))
    lines.append("parity: " + parity_markdown(parity)[0].replace("**", ""))
    if parity["first"]:
        lines.append(parity_markdown(parity)[1])
    return lines


# ---------------------------------------------------------------------------------- anchor
def anchor_section() -> list[str]:
    from step_deploy.fpga.anchor import anchor_lines, spikformer_1_384_anchor

    a = spikformer_1_384_anchor()
    r = a["ratio_to_published"]
    return (["# Anchor: estimate vs published hand-written INT8 design"] + anchor_lines(a) +
            [f"  ratio ours / published latency: as generated {r['as_generated']:.2f}x, compute-bound "
             f"{r['compute_bound']:.2f}x (estimates; building + quantizing the random model took "
             f"{a['runtime_s']['build_and_quantize']} s, estimating {a['runtime_s']['estimate_and_auto']} s)"])


# ---------------------------------------------------------------------------------- full size
def full_size_graph(seed: int = 0, images: int = 2):
    """Random-weight ``spikformer-4-384`` with randomized BatchNorm, quantized on ``images`` random
    images; returns (qgraph, model, seconds)."""
    from step_deploy.models.random_stats import randomize_batchnorm
    from step_deploy.frontend import capture
    from step_deploy.models import build_model
    from step_deploy.passes import fold_batchnorm
    from step_deploy.passes.quantize_fpga import quantize_fpga

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = randomize_batchnorm(build_model(FULL_SIZE_ARCH).eval(), seed)
    c, s = model.config["in_channels"], model.config["img_size"]
    x = torch.rand(images, c, s, s, generator=torch.Generator().manual_seed(seed))
    qgraph, _ = quantize_fpga(fold_batchnorm(capture(model)), x, steps=int(model.step))
    return qgraph, model, time.perf_counter() - t0


def fit_on_parts(qgraph, parts=("zcu104", "vcu118"), clock_mhz: float = 200.0) -> dict:
    """``{part: "yes"}`` or ``{part: "no (resource need/have, ...)"}`` for parallelism 1 everywhere
    (the smallest design): why ``step-export`` refuses the full-size model."""
    from step_deploy.fpga.estimate import estimate

    out = {}
    for name in parts:
        over = estimate(qgraph, name, clock_mhz, 1).over_budget()
        out[name] = "yes" if not over else "no (" + ", ".join(f"{r} {need:,}/{have:,}" for _, r, need, have in over) + ")"
    return out


def full_size_section(seed: int = 0) -> list[str]:
    from step_deploy.fpga.csim import CSimModel
    from step_deploy.fpga.hls_writer import HlsProject
    from step_deploy.fpga.parity import compare, golden_run
    from step_deploy.frontend import encoded_input

    qgraph, model, t_quant = full_size_graph(seed)
    fit = fit_on_parts(qgraph)
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="bench_fpga_full_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        proj = HlsProject(qgraph)
        files = proj.files()
        for rel, data in files.items():
            (tmp / "prj" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "prj" / rel).write_bytes(data)
        t_write = time.perf_counter() - t0
        total, big, big_name = tree_bytes(tmp / "prj")
        wbytes = tree_bytes(tmp / "prj" / "firmware" / "weights")[0]

        old_cache = os.environ.get("STEP_DEPLOY_CACHE")
        os.environ["STEP_DEPLOY_CACHE"] = str(tmp / "cache")
        try:
            csim = CSimModel(tmp / "prj")
            print(f"[full size] compiling {total / 2 ** 20:.1f} MiB of generated C++ with g++ ...", file=sys.stderr,
                  flush=True)
            rss_before = children_peak_rss_mb()
            t0 = time.perf_counter()
            csim.compile()
            t_compile = time.perf_counter() - t0
            rss = children_peak_rss_mb()
        finally:
            if old_cache is None:
                os.environ.pop("STEP_DEPLOY_CACHE", None)
            else:
                os.environ["STEP_DEPLOY_CACHE"] = old_cache
        lib_mb = csim.lib_path.stat().st_size / 2 ** 20 if csim.lib_path else 0.0

        x = torch.rand(1, model.config["in_channels"], model.config["img_size"], model.config["img_size"],
                       generator=torch.Generator().manual_seed(seed + 1))
        t0 = time.perf_counter()
        xin, golden, gout = golden_run(proj, encoded_input(model, x))
        t_gold = time.perf_counter() - t0
        names = traced_layers(proj)
        res = csim.predict(xin, trace=names)
        cmp = compare(proj, res.traces, {k: golden[k] for k in names})
        out_equal = bool(np.array_equal(gout, res.outputs))
        spikes = sum(int(golden[k].sum()) for k in names if proj.by_name[k].node.op == "FpgaLIF")

    lines = [f"# Full size: {FULL_SIZE_ARCH}, random weights ({n_params:,} parameters), T={proj.steps}, "
             f"{len(proj.layers)} layers, parallelism 1, seed {seed}"]
    lines.append(row("build + capture + quantize_fpga on 2 random images", t_quant, "s"))
    lines.append(row("HlsProject(qgraph).files() + write", t_write, "s"))
    lines.append(row("generated sources (all files)", total / 2 ** 20, "MiB"))
    lines.append(row("  of which firmware/weights/*.h", wbytes / 2 ** 20, "MiB"))
    lines.append(row(f"  largest file: {big_name}", big / 2 ** 20, "MiB"))
    for part, text in fit.items():
        lines.append(f"fits {part} with parallelism 1 (estimate)? {text}")
    lines.append(row("g++ compile (empty cache), " + ("CACHED?" if csim.cached else "cold"), t_compile, "s"))
    lines.append(row("peak memory of the compiler (ru_maxrss, children)",
                     rss if rss > rss_before else float("nan"), "MiB"))
    lines.append(row("shared library size", lib_mb, "MiB"))
    lines.append(row("golden model, 1 sample (records every layer)", t_gold, "s/sample"))
    lines.append(row("C simulation, 1 sample (traces below)", res.seconds, "s/sample"))
    lines.append(row(f"traced layers: {len(names) - 1} FpgaLIF + output", len(names)))
    lines.append(row("spikes in the traced LIF layers (golden)", spikes))
    lines.append(f"parity on 1 sample: {cmp['mismatches']} mismatches in {cmp['values']:,} values over "
                 f"{len(cmp['layers'])} layers; final outputs {'equal' if out_equal else 'DIFFERENT'}")
    if cmp["first"]:
        lines.append(f"first mismatch: {cmp['first']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=DEMO_CKPT, help=f"trained checkpoint (default {DEMO_CKPT}; `make demo` "
                                                      "trains it)")
    ap.add_argument("--samples", type=int, default=64, help="digits test samples for speed and parity (default 64)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats, best kept (default 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads here and OMP_NUM_THREADS for step-export (default: torch's own)")
    ap.add_argument("--full-size", action="store_true", help=f"also compile and run a random-weight "
                                                             f"{FULL_SIZE_ARCH} (minutes)")
    ap.add_argument("--no-demo", action="store_true", help="skip the trained-checkpoint section")
    ap.add_argument("--no-anchor", action="store_true", help="skip the Spikformer-1-384 / XCZU7EV estimate")
    a = ap.parse_args(argv)
    if a.samples < 1 or a.repeat < 1 or (a.threads is not None and a.threads < 1):
        ap.error("--samples, --repeat and --threads must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the step-export subprocess inherits it
    if not a.no_demo and not Path(a.ckpt).is_file():
        ap.error(f"no checkpoint at {a.ckpt}: run `make demo` (or step-train ... -o {a.ckpt}) or pass --ckpt")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        ap.error("g++ not found: install g++ or set CXX")
    runs = ([lambda: demo_section(a.ckpt, a.samples, a.repeat)] if not a.no_demo else []) + \
           ([anchor_section] if not a.no_anchor else []) + ([full_size_section] if a.full_size else [])
    for section in runs:  # each table as soon as it is measured
        print("\n".join(section()) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
