"""Energy counters: the cost of counting a batch (forward hooks on the PyTorch model + every
counter of every layer) as a ratio to a plain PyTorch forward of the same batch, measured in the
same process, interleaved (issue 9's target: at most 1.5x). Timings are reported, never asserted.

    .venv/bin/python benchmarks/bench_energy.py [--archs A,B,..] [--batch 32,128] [--repeat 7]
                                                [--threads N] [--clock wall|cpu] [--full-size]
                                                [--json PATH]

Per architecture (random weights, BatchNorm statistics randomized with
``step_deploy.models.random_stats.randomize_batchnorm`` so the network spikes) and batch size:

* ``plain``: ``model(x)`` under ``torch.no_grad()`` (what inference costs anyway);
* ``counted``: ``count_graph(graph, hook_traces(model, x, graph), model.step)``, the whole path a
  user runs per batch (the graph is captured once per model, before timing, and shown apart).

Each is run once to warm up, then ``--repeat`` times, alternating which goes first; the table shows
the medians and their ratio. Inputs: the bundled digits test images (tiled up to the batch) for
the digits models, uniform random images for ``--full-size`` (``spikformer-4-384`` at CIFAR-10
size on ``--full-batch`` images).

On a machine shared with other jobs pass ``--threads 1`` (torch's threads competing for busy cores
make single timings swing by 2x) and ``--clock cpu`` (this process's CPU time, which other jobs
do not inflate); ratios are what to compare, not milliseconds."""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ARCHS = ("spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits")
FULL_SIZE_ARCH = "spikformer-4-384"
TARGET = 1.5
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


# ---------------------------------------------------------------------------------- helpers
def positive_ints(text: str) -> list[int]:
    """``"32,128"`` -> ``[32, 128]``; an argparse type (ValueError on anything else)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def ratio(value: float, peer: float) -> float:
    """``value / peer`` (``nan`` when the peer is 0 or not finite)."""
    return value / peer if peer > 0 and math.isfinite(peer) else float("nan")


def timed(fn, clock) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def interleaved_medians(plain, counted, repeat: int, warmup: int = 1, clock=time.perf_counter) -> tuple[float, float]:
    """Median seconds of ``plain()`` and ``counted()`` over ``repeat`` runs each after ``warmup``
    runs of both, alternating which of the two goes first (drift in the machine's load hits both)."""
    for _ in range(warmup):
        plain()
        counted()
    tp, tc = [], []
    for i in range(repeat):
        if i % 2:
            tc.append(timed(counted, clock))
            tp.append(timed(plain, clock))
        else:
            tp.append(timed(plain, clock))
            tc.append(timed(counted, clock))
    return statistics.median(tp), statistics.median(tc)


def build(arch: str, seed: int = 0):
    """(random-weight model in eval mode with randomized BatchNorm statistics, its captured graph,
    capture seconds)."""
    from step_deploy.frontend.capture import capture
    from step_deploy.models import build_model
    from step_deploy.models.random_stats import randomize_batchnorm

    torch.manual_seed(seed)
    model = randomize_batchnorm(build_model(arch).eval(), seed)
    t0 = time.perf_counter()
    graph = capture(model)
    return model, graph, time.perf_counter() - t0


def inputs(arch: str, model, batch: int, seed: int = 0) -> torch.Tensor:
    """``batch`` images: the digits test split (tiled) for a digits model, else uniform noise."""
    if arch.endswith("-digits"):
        from step_deploy.data.digits import digits_arrays

        images = torch.from_numpy(digits_arrays("test")[0])
        return images.repeat(math.ceil(batch / len(images)), 1, 1, 1)[:batch]
    c, s = int(model.config["in_channels"]), int(model.config["img_size"])
    return torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(seed))


def measure(arch: str, built, x: torch.Tensor, repeat: int, warmup: int, clock: str) -> dict:
    """One table row for ``built = build(arch)`` on batch ``x``: medians (ms) of the plain and the
    counted forward, their ratio, and the firing rate over all neuron layers (the network spikes)."""
    from step_deploy.energy.counters import count_graph
    from step_deploy.energy.torch_hooks import hook_traces

    model, graph, t_capture = built
    steps, batch = int(model.step), len(x)

    def plain():
        with torch.no_grad():
            model(x)

    last = []

    def counted():
        last[:] = [count_graph(graph, hook_traces(model, x, graph), steps)]

    t_plain, t_counted = interleaved_medians(plain, counted, repeat, warmup, CLOCKS[clock])
    counts = last[0]
    neurons = counts.of_kind("neuron")
    values = sum(r.size for r in neurons) * counts.samples * counts.steps
    rate = sum(r.total("spikes") for r in neurons) / values if values else 0.0
    r = ratio(t_counted, t_plain)
    return {"arch": arch, "batch": batch, "steps": steps, "plain_ms": 1e3 * t_plain, "counted_ms": 1e3 * t_counted,
            "ratio": r, "within_target": bool(r <= TARGET), "capture_ms": 1e3 * t_capture,
            "firing_rate": rate, "synops": counts.totals().get("synapse", {}).get("synops", 0)}


def table(rows: list[dict]) -> list[str]:
    lines = [f"{'arch':24s} {'batch':>5s} {'plain ms':>10s} {'counted ms':>11s} {'ratio':>7s} "
             f"{'<= ' + str(TARGET) + 'x':>8s} {'firing':>7s} {'capture ms (once)':>18s}"]
    for r in rows:
        lines.append(f"{r['arch']:24s} {r['batch']:5d} {r['plain_ms']:10.1f} {r['counted_ms']:11.1f} "
                     f"{r['ratio']:6.2f}x {'yes' if r['within_target'] else 'NO':>8s} {r['firing_rate']:7.3f} "
                     f"{r['capture_ms']:18.1f}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=names, default=list(ARCHS),
                    help=f"comma-separated configs (default {','.join(ARCHS)})")
    ap.add_argument("--batch", type=positive_ints, default=[32, 128], help="comma-separated batch sizes "
                                                                           "(default 32,128)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of each, median kept (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each first (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared machine)")
    ap.add_argument("--full-size", action="store_true",
                    help=f"also a random-weight {FULL_SIZE_ARCH} on CIFAR-size images (--full-batch)")
    ap.add_argument("--full-batch", type=positive_ints, default=[8], help="batch sizes of --full-size (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="weights, BatchNorm statistics and random images (default 0)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the table as JSON")
    a = ap.parse_args(argv)
    if a.repeat < 1 or a.warmup < 0 or (a.threads is not None and a.threads < 1):
        ap.error("--repeat and --threads must be at least 1, --warmup at least 0")
    from step_deploy.models import CONFIGS

    unknown = [n for n in a.archs if n not in CONFIGS]
    if unknown or not a.archs:
        ap.error(f"--archs: unknown config(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(CONFIGS)}")
    if a.json is not None and not a.json.parent.is_dir():
        ap.error(f"--json {a.json}: directory {a.json.parent} does not exist")
    if a.threads:
        torch.set_num_threads(a.threads)

    runs = [(arch, b) for arch in a.archs for b in a.batch]
    runs += [(FULL_SIZE_ARCH, b) for b in a.full_batch] if a.full_size else []
    rows = []
    print(f"# counting overhead: hooks + count_graph vs a plain forward, median of {a.repeat} "
          f"({a.clock} clock), torch {torch.__version__}, {torch.get_num_threads()} thread(s), target <= {TARGET}x",
          flush=True)
    built: dict = {}
    for arch, batch in runs:
        if arch not in built:
            built = {arch: build(arch, a.seed)}  # one model at a time in memory
        rows.append(measure(arch, built[arch], inputs(arch, built[arch][0], batch, a.seed), a.repeat, a.warmup,
                            a.clock))
        print(table(rows)[-1] if len(rows) > 1 else "\n".join(table(rows)), flush=True)
    worst = max(rows, key=lambda r: r["ratio"])
    print(f"worst ratio {worst['ratio']:.2f}x ({worst['arch']}, batch {worst['batch']}); "
          f"{sum(r['within_target'] for r in rows)} of {len(rows)} rows within {TARGET}x", flush=True)
    if a.json is not None:
        doc = {"target": TARGET, "clock": a.clock, "repeat": a.repeat, "warmup": a.warmup,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "seed": a.seed, "rows": rows}
        a.json.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
