"""Does attention across time steps (STAtten) beat per-step attention where time matters? (issue 13)

STAtten attends over the tokens of a block of ``chunk_size`` time steps (its digits configs: blocks of 2);
the per-step attention of Spikformer and SDT only sees the current step, and carries the past in its
membranes. On data whose classes are spread over time this is where the two should differ:

* ``digits-events``: the digits moved along a saccade, ON/OFF event frames, T = 4;
* ``digits-seq``: the digits read one row per step, T = 8 (``models.encoders.SequenceEncoder``: frame
  ``t`` holds only row ``t``, so no single step shows the digit);
* ``digits`` (static, the same image at every step) as the control where time carries nothing new.

For each pair (Spikformer vs STAtten on Spikformer, SDT vs STAtten on SDT), data set and seed, the two
models are trained with the same arguments (``step_deploy.training.train``, checkpoints cached in
``<out>/checkpoints``, shared with ``benchmarks/seed_designs.py``) and their test accuracy (360 digits,
the PyTorch model, the number ``step-train`` prints) compared seed by seed. One seed says little on 360
test digits (one digit is 0.28 points), hence several seeds, the mean, the spread and the paired
difference. Prints a Markdown table and writes ``<out>/statten_temporal.{md,json,png}``.

    .venv/bin/python benchmarks/statten_temporal.py [--data digits-events,digits-seq] [--seeds 0,1,2]
        [--epochs 20] [--threads 1] [--jobs 2] [-o runs/seed_designs]

Cost: an epoch of a Spikformer-sized digits model is about 3.5 s at T = 4 on one core, twice that at
T = 8 (digits-seq); the default run (2 pairs x 2 data sets x 3 seeds x 20 epochs) is about 40 CPU
minutes, ``--jobs`` trains that many models at once."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_designs import Options, checkpoint  # noqa: E402  (benchmarks/ is not a package)

#: (label, per-step attention config, STAtten config)
PAIRS = (
    ("Spikformer", "spikformer-2-64-digits", "spikformer-statten-2-64-digits"),
    ("SDT", "sdt-1-64-digits", "sdt-statten-1-64-digits"),
)
DATA = ("digits-events", "digits-seq")
DEFAULT_CHUNK = 2  # the STAtten digits configs' chunk_size


def _train(job) -> tuple[str, str, int, float, float, Optional[int]]:
    arch, data, seed, epochs, threads, out, chunk = job
    import torch

    if threads:
        torch.set_num_threads(threads)
    _, metrics = checkpoint(arch, data, Options(epochs=epochs, seed=seed, threads=threads, chunk_size=chunk), Path(out))
    return arch, data, seed, float(metrics["test_accuracy"]), float(metrics.get("train_seconds") or 0.0), chunk


def _chunk(chunk: int) -> Optional[int]:
    """The training option for a block of ``chunk`` steps (None: the configs' own 2, cached as before)."""
    return None if chunk == DEFAULT_CHUNK else chunk


def measure(pairs, datas, seeds, epochs: int, threads, jobs: int, out: Path, log=print,
            chunks=(DEFAULT_CHUNK,)) -> dict:
    """``{(arch, data, seed, chunk): test accuracy}`` for every model of every pair (trained or reused);
    per-step models have chunk ``None``."""
    todo = [(a, data, seed, epochs, threads, str(out), None) for _, a, _ in pairs for data in datas for seed in seeds]
    todo += [(b, data, seed, epochs, threads, str(out), _chunk(c)) for _, _, b in pairs for data in datas
             for c in chunks if _fits(data, c) for seed in seeds]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(max_workers=jobs)
        done = pool.map(_train, todo)
    else:
        done = map(_train, todo)
    acc = {}
    for arch, data, seed, a, secs, chunk in done:
        acc[(arch, data, seed, chunk)] = a
        log(f"{arch}{f' (blocks of {chunk})' if chunk else ''} on {data}, seed {seed}: {100 * a:.2f}% (trained in "
            f"{secs:.0f} s; a reused checkpoint says its own)")
    return acc


def _fits(data: str, chunk: int) -> bool:
    """Whether blocks of ``chunk`` steps tile the data set's T (4, or digits-seq's 8)."""
    from step_deploy.data import DATASETS, dataset_info
    if data not in DATASETS:  # a name the caller made up (tests of the accounting): no constraint
        return True
    return int(dataset_info(data, T=4).get("time_steps") or 4) % chunk == 0


def summarize(pairs, datas, seeds, acc: dict, chunks=(DEFAULT_CHUNK,)) -> list[dict]:
    rows = []
    for label, per_step, statten in pairs:
        for data in datas:
          for c in chunks:
            if not _fits(data, c):
                continue
            a = [acc[(per_step, data, s, None)] for s in seeds]
            b = [acc[(statten, data, s, _chunk(c))] for s in seeds]
            diff = [y - x for x, y in zip(a, b)]
            rows.append({
                "model": label, "data": data, "per_step": per_step, "statten": statten, "chunk_size": c,
                "seeds": list(seeds),
                "per_step_accuracy": a, "statten_accuracy": b, "difference": diff,
                "per_step_mean": statistics.fmean(a), "statten_mean": statistics.fmean(b),
                "difference_mean": statistics.fmean(diff),
                "difference_sd": statistics.stdev(diff) if len(diff) > 1 else None,
                "statten_wins": sum(d > 0 for d in diff), "ties": sum(d == 0 for d in diff),
            })
    return rows


def _pm(values) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" + (f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else "")


def verdict(r: dict) -> str:
    """Plain words: a difference smaller than the seed-to-seed spread of the difference is no evidence."""
    d, sd, n = r["difference_mean"], r["difference_sd"], len(r["seeds"])
    if sd is None:
        return "one seed: no conclusion"
    if abs(d) <= sd:
        return "no clear difference (the mean is within its spread over seeds)"
    ahead = r["statten_wins"] if d > 0 else n - r["statten_wins"] - r["ties"]
    return ("STAtten ahead" if d > 0 else "per-step attention ahead") + f" on {ahead} of {n} seeds"


def markdown(rows: list[dict], epochs: int) -> str:
    lines = [f"Test accuracy (%) on the 360 test digits, float PyTorch models trained {epochs} epochs; mean ± sd "
             f"over seeds; difference = STAtten − per-step, paired by seed.", "",
             "| model | data | per-step attention | STAtten | block (steps) | difference (points) | "
             "STAtten ahead on | per seed (per-step / STAtten) | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{100 * a:.1f} / {100 * b:.1f}" for a, b in zip(r["per_step_accuracy"],
                                                                              r["statten_accuracy"]))
        lines.append(f"| {r['model']} | {r['data']} | {_pm(r['per_step_accuracy'])} | {_pm(r['statten_accuracy'])} | "
                     f"{r.get('chunk_size', DEFAULT_CHUNK)} | {_pm(r['difference'])} | {r['statten_wins']} of {len(r['seeds'])} | {per_seed} | {verdict(r)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(rows), 4.2))
    for i, r in enumerate(rows):
        for j, (key, color) in enumerate((("per_step_accuracy", "tab:blue"), ("statten_accuracy", "tab:orange"))):
            vals = [100 * v for v in r[key]]
            x = i + (j - 0.5) * 0.3
            ax.bar([x], [statistics.fmean(vals)], width=0.28, color=color, alpha=0.45,
                   label=("per-step attention" if j == 0 else "STAtten") if i == 0 else None)
            ax.scatter([x] * len(vals), vals, color=color, s=14, zorder=3)
    ax.set_xticks(range(len(rows)), [f"{r['model']}\n{r['data']}\nblocks of {r.get('chunk_size', DEFAULT_CHUNK)}"
                                     for r in rows], fontsize=8)
    lo = min(100 * min(r["per_step_accuracy"] + r["statten_accuracy"]) for r in rows)
    ax.set_ylim(max(0.0, lo - 5), 100)
    ax.set_ylabel("test accuracy (%), dots = seeds")
    ax.set_title("STAtten vs per-step attention", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="statten_temporal.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=",".join(DATA), help="comma list of data sets (default: %(default)s)")
    ap.add_argument("--models", default=",".join(label for label, _, _ in PAIRS),
                    help="comma list of the pairs to compare (default: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of training seeds (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="models trained at once, one process each")
    ap.add_argument("--chunk-sizes", default=str(DEFAULT_CHUNK),
                    help="comma list of STAtten block sizes in steps, each compared with the per-step model (a size "
                         "that does not divide a data set's T is skipped there; default: %(default)s)")
    ap.add_argument("-o", "--output", default="runs/seed_designs", help="output folder (default: %(default)s)")
    a = ap.parse_args(argv)
    from step_deploy.data import DATASETS
    datas = [d.strip() for d in a.data.split(",") if d.strip()]
    bad = [d for d in datas if d not in DATASETS]
    if bad:
        ap.error(f"--data {bad[0]!r}: choose from {', '.join(DATASETS)}")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds takes integers, got {a.seeds!r}")
    if not seeds or a.epochs < 1 or a.jobs < 1 or a.threads < 1:
        ap.error("--seeds needs at least one seed; --epochs, --jobs and --threads must be >= 1")
    try:
        chunks = [int(c) for c in a.chunk_sizes.split(",") if c.strip()]
    except ValueError:
        ap.error(f"--chunk-sizes takes integers, got {a.chunk_sizes!r}")
    if not chunks or min(chunks) < 1:
        ap.error("--chunk-sizes needs block sizes >= 1")
    known = {label.lower(): (label, x, y) for label, x, y in PAIRS}
    wanted = [m.strip().lower() for m in a.models.split(",") if m.strip()]
    if not wanted or any(m not in known for m in wanted):
        ap.error(f"--models takes a comma list of {', '.join(label for label, _, _ in PAIRS)}, got {a.models!r}")
    pairs = [known[m] for m in wanted]
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    acc = measure(pairs, datas, seeds, a.epochs, a.threads, a.jobs, out, log=lambda s: print(s, file=sys.stderr),
                  chunks=chunks)
    rows = summarize(pairs, datas, seeds, acc, chunks)
    md = markdown(rows, a.epochs)
    (out / "statten_temporal.md").write_text(md)
    doc = {"epochs": a.epochs, "seeds": seeds, "rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    (out / "statten_temporal.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    png = plot(rows, out / "statten_temporal.png")
    print(md)
    print(f"wrote {out / 'statten_temporal.md'}, {out / 'statten_temporal.json'} and {png} in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
