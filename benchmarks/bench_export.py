"""Export time and executor throughput, measured in one run (a table; nothing asserted).

    .venv/bin/python benchmarks/bench_export.py [--arch spikformer-4-384] [--batch 8] [--repeat 3]

Rows: capture + NIR export time, capture + ONNX export time (targets: <= 30 s each for
spikformer-4-384); images/s of the PyTorch model, the reference interpreter and onnxruntime on
the same batch, with the ratio against PyTorch (target for the interpreter: >= 0.5)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from step_deploy.exporters.nir_export import write_nir
from step_deploy.exporters.onnx_export import export_onnx
from step_deploy.frontend import capture, encoded_input
from step_deploy.models import build_model
from step_deploy.passes import run_pipeline
from step_deploy.exporters.onnx_runner import OnnxSession, run_onnx
from step_deploy.simulators.reference import run


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="spikformer-4-384")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(a.arch).eval()
    c, s = model.config["in_channels"], model.config["img_size"]
    x = torch.rand(a.batch, c, s, s)
    tmp = Path(tempfile.mkdtemp())

    t0 = time.perf_counter()
    g = run_pipeline(capture(model), "nir")
    write_nir(g, tmp / "m.nir")
    t_nir = time.perf_counter() - t0
    t0 = time.perf_counter()
    og = capture(model)
    onnx_model = export_onnx(og, tmp / "m.onnx")
    t_onnx = time.perf_counter() - t0

    xe = encoded_input(model, x)
    with torch.no_grad():
        t_torch = best(lambda: model(x), a.repeat)
    t_ref = best(lambda: run(og, xe), a.repeat)
    sess = OnnxSession(onnx_model)
    t_ort = best(lambda: run_onnx(onnx_model, xe, session=sess), a.repeat)

    print(f"# {a.arch}, batch {a.batch}, T={model.step}, torch threads {torch.get_num_threads()}")
    print(f"{'measurement':42s} {'value':>12s} {'ratio vs PyTorch':>18s}")
    print(f"{'capture + NIR export (s)':42s} {t_nir:12.2f} {'-':>18s}")
    print(f"{'capture + ONNX export (s)':42s} {t_onnx:12.2f} {'-':>18s}")
    for name, t in (("PyTorch model (images/s)", t_torch), ("reference interpreter (images/s)", t_ref),
                    ("onnxruntime (images/s)", t_ort)):
        print(f"{name:42s} {a.batch / t:12.1f} {t_torch / t:18.2f}")


if __name__ == "__main__":
    main()
