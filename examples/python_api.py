"""The Python API end to end, on a tiny Spikformer for the bundled digits.

    .venv/bin/python examples/python_api.py [--epochs 3] [--out runs/example]

Trains briefly, captures the model into the IR, checks the reference interpreter against
PyTorch spike for spike, folds batch norm, and exports NIR and ONNX with their parity checks."""
import argparse
from pathlib import Path

import torch

from step_deploy.exporters.nir_export import write_nir
from step_deploy.exporters.nir_read import read_nir_as_ir
from step_deploy.exporters.onnx_export import export_onnx
from step_deploy.frontend import capture, encoded_input, torch_traces
from step_deploy.passes import fold_batchnorm
from step_deploy.exporters.onnx_runner import run_onnx
from step_deploy.simulators.reference import run
from step_deploy.training import TrainArgs, train


def mismatches(a: dict, b: dict) -> int:
    return sum(int((a[k] != b[k]).sum()) for k in a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="runs/example")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    model, metrics = train(TrainArgs(arch="spikformer-2-64-digits", epochs=a.epochs), progress=False)
    print(f"trained {a.epochs} epochs: test accuracy {metrics['test_accuracy']:.3f}")

    graph = fold_batchnorm(capture(model))
    print(graph)
    x = torch.rand(8, 1, 8, 8)
    logits, spikes = torch_traces(model, x)
    xe = encoded_input(model, x)

    ref = run(graph, xe, record=True)
    print(f"reference interpreter vs PyTorch: {mismatches(spikes, ref.traces)} spike mismatches "
          f"over {len(spikes)} neuron layers")

    write_nir(graph, out / "model.nir")
    nir_back = run(read_nir_as_ir(out / "model.nir"), xe, record=True)
    print(f"NIR file read back: {mismatches(spikes, nir_back.traces)} spike mismatches")

    onnx_model = export_onnx(graph, out / "model.onnx", expose_spikes=True)
    ort = run_onnx(onnx_model, xe, record=True)
    print(f"onnxruntime: {mismatches(spikes, ort.traces)} spike mismatches, "
          f"max |logit diff| {float((ort.final() - logits).abs().max()):.2e}")


if __name__ == "__main__":
    main()
