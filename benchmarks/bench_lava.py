"""Integer golden model vs Lava (``Loihi2SimCfg(select_tag='fixed_pt')``) on the same quantized
network and the same samples, in one run (a table; parity is checked, speed is not asserted).

    .venv/bin/python benchmarks/bench_lava.py [--arch spikformer-2-64-digits] [--checkpoint PATH]
                                              [--samples 4] [--tie auto]

Rows: samples/s of the golden model (one batch of all samples, and one sample at a time) and of
Lava (one sample per run: build, compile + run, read back), the speedup of the golden model over Lava, the Lava
process count and steps, and the spike mismatches after alignment (expected: 0)."""
from __future__ import annotations

import argparse
import time

import torch

from step_deploy.simulators.golden import run_golden
from step_deploy.exporters.lava_runner import compare, run_lava
from step_deploy.data import load_dataset
from step_deploy.frontend import capture
from step_deploy.models import build_model
from step_deploy.passes import fold_batchnorm
from step_deploy.passes.quantize_loihi import quantize_loihi


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="spikformer-2-64-digits")
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: random weights)")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tie", default="auto", choices=["auto", "ge", "gap"])
    a = ap.parse_args()
    if a.checkpoint:
        from step_deploy import load_checkpoint

        model = load_checkpoint(a.checkpoint)[0].eval()
        a.arch = f"{model.arch} (depths {model.config.get('depths')}, dim {model.config.get('embed_dim')})"
    else:
        torch.manual_seed(0)
        model = build_model(a.arch).eval()
    T = int(model.step)
    train = load_dataset("digits", "train").tensors[0]
    x = load_dataset("digits", "test").tensors[0][: a.samples]
    t0 = time.perf_counter()
    q, rep = quantize_loihi(fold_batchnorm(capture(model)), train[:256], steps=T, tie=a.tie)
    t_quant = time.perf_counter() - t0

    t0 = time.perf_counter()
    gold = run_golden(q, x, steps=T)
    t_gold_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(len(x)):
        run_golden(q, x[i: i + 1], steps=T)
    t_gold_one = time.perf_counter() - t0

    mats, mism, timing = {}, 0, {"build": 0.0, "run": 0.0, "read": 0.0}
    t0 = time.perf_counter()
    for i in range(len(x)):
        lv = run_lava(q, x[i], steps=T, matrices=mats)
        mism += sum(compare(gold.traces, lv.traces, i).values())
        mism += sum(int((gold.outputs[k][:, i: i + 1] != v).sum()) for k, v in lv.outputs.items())
        for k in timing:
            timing[k] += lv.timing[k]
    t_lava = time.perf_counter() - t0

    n = len(x)
    print(f"# {a.arch} ({'checkpoint ' + a.checkpoint if a.checkpoint else 'random weights'}), T={T}, "
          f"{n} samples, tie {rep['tie']}, quantization {t_quant:.1f} s, torch threads {torch.get_num_threads()}")
    print(f"# Lava: {lv.num_steps} steps per sample ({T} + depth {lv.schedule['depth']}), "
          f"{sum(lv.counts.values())} processes {lv.counts}")
    print(f"{'executor':40s} {'samples/s':>10s} {'s/sample':>10s} {'speedup vs Lava':>16s}")
    for name, t in (("golden model, one batch", t_gold_batch), ("golden model, one sample at a time", t_gold_one),
                    ("Lava fixed_pt CPU, one sample per run", t_lava)):
        print(f"{name:40s} {n / t:10.2f} {t / n:10.3f} {t_lava / t:16.1f}")
    print(f"{'  Lava build / compile+run / read (s)':40s} {timing['build'] / n:10.2f} {timing['run'] / n:10.2f} "
          f"{timing['read'] / n:16.2f}")
    print(f"{'spike + readout mismatches after alignment':40s} {mism:10d}")


if __name__ == "__main__":
    main()
