"""step-parity at scale: the golden stage over the whole digits test set (360 samples) in this
process, then on a fresh Dask LocalCluster of 1 and of 2 worker processes, all in one run;
samples/s and scaling efficiency. Timings are reported, never asserted.

    .venv/bin/python benchmarks/bench_parity.py [--checkpoint PATH] [--stages golden-loihi]
                                                [--samples all|N] [--shard-size 16] [--workers 1,2]
                                                [--calib-samples 256] [--no-machine-check] [--json PATH]

Each row is one complete ``step_deploy.parity.command.compute`` (checkpoint load, data, shards,
merge) of the same job into a fresh shard store (nothing is resumed):

* ``serial``: ``--workers 0``, the shards run one after another in this process (the peer);
* ``dask N``: a fresh LocalCluster exactly as step-parity starts its own (N non-daemonic worker
  processes, one thread each); ``start`` is the cluster's start-up, ``first`` the time from
  submitting the job to the first shard result on disk (it includes each worker importing
  step-deploy and building the network: checkpoint, calibration, quantization), ``run`` the job on
  the running cluster, ``total`` = start + run;
* ``warm``: the same job once more (into another fresh store) on the same workers, whose networks
  are built already: the throughput a long run (10,000 CIFAR-10 images) sees after its start-up.

``samples/s (total)`` is samples / total (end to end, what a user waits for), ``samples/s (warm)``
samples / warm; ``efficiency`` = (rate with N workers / rate with 1 worker) / N for both (1.0:
perfect scaling). Efficiency is bounded by what the machine gives at that moment (a shared
machine's other load takes cores): the benchmark ends by measuring how much faster N plain
processes do the same CPU-bound torch loop than one (``--no-machine-check`` skips it) and prints
that ceiling beside the table. The model is the digits demo architecture with random weights
(BatchNorm statistics randomized so that it spikes), or ``--checkpoint``. Every run's parity.json
must be identical (the benchmark checks it and says so): a speed-up that changed the result
would not count."""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEMO_ARCH = "spikformer-2-64-digits"


def random_checkpoint(path: Path) -> Path:
    """The digits demo architecture with random weights (seed 0), recorded as trained on ``digits``."""
    import torch

    from step_deploy.frontend.checkpoint import save_checkpoint
    from step_deploy.models import build_model
    from step_deploy.models.random_stats import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(DEMO_ARCH).eval(), 0)
    return save_checkpoint(model, path, metadata={"dataset": "digits"})


class FirstResult:
    """Watches a shard store for the first shard file (the time from ``start()`` to it)."""

    def __init__(self, root: Path):
        self.root, self.seconds, self._stop = root, None, threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.is_set():
            if any(self.root.glob("*/shard-*.json")):
                self.seconds = time.perf_counter() - self._t0
                return
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def timed_compute(ckpt: Path, stages: str, samples, shard_size: int, calib_samples: int, work: Path,
                  **where) -> dict:
    """One ``compute`` of the job; ``where``: ``workers=0`` or ``scheduler=ADDRESS``."""
    from step_deploy.parity.command import RunOptions, compute
    from step_deploy.parity.context import ParityOptions

    po = ParityOptions(calib_samples=calib_samples)
    ro = RunOptions(stages=stages, samples=samples, shard_size=shard_size, work=str(work), **where)
    watch = FirstResult(work)
    t0 = time.perf_counter()
    try:
        result, stats, _, _ = compute(ckpt, po, ro)
    finally:
        watch.stop()
    run = time.perf_counter() - t0
    bad = [s for s, e in result["stages"].items() if e["status"] != "ok"]
    if bad:
        raise SystemExit(f"bench_parity: stage(s) {', '.join(bad)} did not run: "
                         f"{result['stages'][bad[0]]['reason']}")
    return {"samples": result["samples"], "shards": stats.computed, "first_s": watch.seconds, "run_s": run,
            "result": json.dumps(result, indent=1)}


def run_on_fresh_cluster(workers: int, **job) -> dict:
    """``timed_compute`` on a LocalCluster started as step-parity starts its own, timed apart."""
    from step_deploy.parity.cluster import _connect

    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        client, _ = _connect(None, workers, stack)
        client.wait_for_workers(workers)
        start = time.perf_counter() - t0
        cold = timed_compute(scheduler=client.scheduler.address, **job)
        warm = timed_compute(scheduler=client.scheduler.address, **{**job, "work": Path(f"{job['work']}-warm")})
    results = [cold.pop("result"), warm["result"]]
    return {**cold, "start_s": start, "warm_s": warm["run_s"], "results": results}


def add_rates(rows: list[dict]) -> list[dict]:
    """samples/s (end to end and warm), x serial and the scaling efficiency of every row."""
    for r in rows:
        r["total_s"] = r["start_s"] + r["run_s"]
        r["rate_total"] = r["samples"] / r["total_s"]
        r["rate_warm"] = r["samples"] / r["warm_s"]
    serial = next((r for r in rows if r["workers"] == 0), None)
    one = next((r for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["x_serial"] = r["rate_total"] / serial["rate_total"] if serial else float("nan")
        if one and r["workers"] >= 1:
            r["efficiency_total"] = r["rate_total"] / one["rate_total"] / r["workers"]
            r["efficiency_warm"] = r["rate_warm"] / one["rate_warm"] / r["workers"]
        else:
            r["efficiency_total"] = r["efficiency_warm"] = float("nan")
    return rows


def table(rows: list[dict]) -> list[str]:
    """The Markdown table of ``add_rates`` rows."""
    def f(v, fmt):
        return "-" if v is None or v != v else format(v, fmt)

    out = ["| run | workers | start s | first result s | run s | total s | warm s | samples/s (total) "
           "| samples/s (warm) | x serial | efficiency (total) | efficiency (warm) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['name']} | {r['workers']} | {f(r['start_s'], '.2f')} | {f(r['first_s'], '.2f')} | "
                   f"{f(r['run_s'], '.2f')} | {f(r['total_s'], '.2f')} | {f(r['warm_s'], '.2f')} | "
                   f"{f(r['rate_total'], '.1f')} | {f(r['rate_warm'], '.1f')} | {f(r['x_serial'], '.2f')} | "
                   f"{f(r['efficiency_total'], '.2f')} | {f(r['efficiency_warm'], '.2f')} |")
    return out


#: a CPU-bound torch loop much like the golden model's integer element-wise work (one thread)
_SPIN = ("import sys, time, torch; torch.set_num_threads(1); x = torch.arange(1 << 16, dtype=torch.int64); "
         "start = float(sys.argv[1]); reps = int(sys.argv[2])\n"
         "while time.time() < start: time.sleep(0.001)\n"
         "t = time.perf_counter()\n"
         "for _ in range(reps): x = (x * 3 + 1) % 1000003\n"
         "print(time.perf_counter() - t)")


def machine_speedup(processes: int, reps: int = 3000) -> float:
    """How much faster ``processes`` plain processes get the same CPU work done than one (ideal:
    ``processes``): the ceiling for any worker count on this machine at this moment (other load
    included). Each process runs the same loop, all starting together."""
    def wall(n: int) -> float:
        start = time.time() + 3.0  # after every child has imported torch
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN, repr(start), str(reps)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(n)]
        return max(float(pr.communicate()[0].strip()) for pr in procs)

    return processes * wall(1) / wall(processes)


def _worker_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise ValueError(text)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint to run (default: the digits demo architecture with random "
                                         "weights, written to a temporary directory)")
    ap.add_argument("--stages", default="golden-loihi", help="stages (default golden-loihi; e.g. "
                                                             "golden-loihi,golden-fpga)")
    ap.add_argument("--samples", default="all", help="digits test samples: all (360, default) or N")
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="Dask worker counts, comma list (default 1,2)")
    ap.add_argument("--calib-samples", type=int, default=256, help="calibration samples (default 256, as "
                                                                    "step-parity)")
    ap.add_argument("--no-machine-check", action="store_true", help="skip measuring how well plain processes scale "
                                                                     "on this machine")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    try:
        counts = _worker_counts(a.workers)
    except ValueError:
        ap.error(f"--workers {a.workers!r}: give worker counts >= 1, e.g. 1,2")
    if a.shard_size < 1 or a.calib_samples < 1:
        ap.error("--shard-size and --calib-samples must be at least 1")
    if a.samples != "all" and not (a.samples.isdigit() and int(a.samples) > 0):
        ap.error(f"--samples {a.samples!r}: give all or a number >= 1")
    from step_deploy.parity.command import parse_stages
    from step_deploy.errors import UsageError
    try:
        parse_stages(a.stages)
    except UsageError as e:
        ap.error(str(e))
    samples = None if a.samples == "all" else int(a.samples)

    with tempfile.TemporaryDirectory(prefix="bench_parity_") as tmp:
        tmp = Path(tmp)
        ckpt = Path(a.checkpoint) if a.checkpoint else random_checkpoint(tmp / "model.ckpt")
        job = dict(ckpt=ckpt, stages=a.stages, samples=samples, shard_size=a.shard_size,
                   calib_samples=a.calib_samples)
        cold = timed_compute(work=tmp / "serial", workers=0, **job)
        warm = timed_compute(work=tmp / "serial-warm", workers=0, **job)  # the network is built already
        results = [cold.pop("result"), warm["result"]]
        rows = [{"name": "serial (this process)", "workers": 0, "start_s": 0.0, **cold, "warm_s": warm["run_s"],
                 "results": results}]
        for n in counts:
            rows.append({"name": "dask LocalCluster", "workers": n,
                         **run_on_fresh_cluster(n, work=tmp / f"dask{n}", **job)})
    identical = len({res for r in rows for res in r.pop("results")}) == 1
    add_rates(rows)
    ceiling = {n: machine_speedup(n) for n in counts if n > 1 and not a.no_machine_check}
    print(f"step-parity --stages {a.stages}: {rows[0]['samples']} digits in shards of {a.shard_size} "
          f"({'random-weight ' + DEMO_ARCH if not a.checkpoint else a.checkpoint}); one run, timings not asserted")
    for line in table(rows):
        print(line)
    for n, x in ceiling.items():
        print(f"this machine, now: {n} plain processes do the same CPU work {x:.2f}x as fast as one "
              f"(efficiency ceiling {x / n:.2f})")
    print("parity.json identical across all runs" if identical else
          "WARNING: parity.json differs between runs (a bug: the result must not depend on the workers)")
    if a.json:
        Path(a.json).write_text(json.dumps({"stages": a.stages, "shard_size": a.shard_size, "identical": identical,
                                            "rows": rows, "machine_speedup": ceiling}, indent=1) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
