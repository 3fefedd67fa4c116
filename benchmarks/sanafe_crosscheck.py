"""Cross-check the mesh simulator against SANA-FE (PyPI ``sanafe``, GPL-3, run as a separate
process only) on the neuro-core part of a small random Spikformer quantized for Loihi 1, and on a
hand-sized toy (spike input, Linear-LIF-Linear-LIF).

    .venv/bin/python benchmarks/sanafe_crosscheck.py [--embed-dim 32] [--depths 1] [--seed 0]
                                                     [--input-scale 3.0] [--hardware loihi1]
                                                     [--keep DIR] [-o runs/sanafe_crosscheck.json]

Prints per exported layer the spikes (golden / mesh / SANA-FE and mismatches), neuron updates,
synaptic operations and messages, then energy by component and latency side by side with the
relative difference, and writes everything as JSON. ``docs/sanafe_crosscheck.md`` explains every
difference over 10 %. ``--keep DIR`` keeps the SANA-FE files (arch.yaml, net.yaml, the runner)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from step_deploy import ir
from step_deploy.frontend.capture import capture, encoded_input
from step_deploy.models import build_model
from step_deploy.models.random_stats import randomize_batchnorm
from step_deploy.passes.fold_batchnorm import fold_batchnorm
from step_deploy.passes.quantize_loihi import quantize_loihi
from step_deploy.simulators.cycle.sanafe_compare import crosscheck, table
from step_deploy.simulators.cycle.sanafe_export import sanafe_available


def spikformer(embed_dim: int, depths: int, seed: int, input_scale: float, target: str):
    torch.manual_seed(seed)
    m = randomize_batchnorm(build_model("spikformer-2-64-digits", embed_dim=embed_dim, num_heads=2,
                                        depths=depths).eval(), seed)
    g = fold_batchnorm(capture(m))
    x = encoded_input(m, input_scale * torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(seed)))
    q, _ = quantize_loihi(g, x, steps=m.step, target=target)
    return q, g, x[:, :1], m.step


def toy(target: str):
    r = np.random.default_rng(2)
    g = ir.Graph([ir.Input("x", shape=(8,), kind="spikes"),
                  ir.Linear("fc1", ("x",), weight=(r.standard_normal((6, 8)) * 0.8).astype(np.float32), bias=None),
                  ir.Neuron("lif1", ("fc1",)),
                  ir.Linear("fc2", ("lif1",), weight=np.abs(r.standard_normal((4, 6))).astype(np.float32), bias=None),
                  ir.Neuron("lif2", ("fc2",)), ir.Output("y", ("lif2",))])
    x = (torch.rand(6, 16, 8, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    q, _ = quantize_loihi(g, x, steps=6, target=target)
    return q, g, x[:, :1], 6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embed-dim", type=int, default=32)
    ap.add_argument("--depths", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input-scale", type=float, default=3.0, help="multiplies the random input images (3: more layers spike)")
    ap.add_argument("--hardware", default="loihi1")
    ap.add_argument("--keep", default=None, help="keep the SANA-FE files of the model run in this directory")
    ap.add_argument("-o", "--out", default="runs/sanafe_crosscheck.json")
    args = ap.parse_args()
    ok, why = sanafe_available()
    if not ok:
        print(f"SANA-FE not available: {why}", file=sys.stderr)
        return 2
    print(f"sanafe {why} (separate process)")
    target = args.hardware.removesuffix("-assumed")
    report = {}
    for name, build in (("toy", lambda: toy(target)),
                        ("spikformer", lambda: spikformer(args.embed_dim, args.depths, args.seed, args.input_scale,
                                                          target))):
        t0 = time.perf_counter()
        q, g, x, steps = build()
        keep = Path(args.keep) / name if args.keep else None
        rep = crosscheck(q, g, x, steps, args.hardware, out_dir=keep)
        rep["wall_s"] = round(time.perf_counter() - t0, 2)
        report[name] = rep
        print(f"\n## {name} ({rep['wall_s']} s)\n")
        print(table(rep))
    report["config"] = vars(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
