"""``--target onnx``: the float IR as a per-time-step ONNX model (state as explicit inputs and
outputs), run step by step with onnxruntime as the self-check."""
from __future__ import annotations

from pathlib import Path

from step_deploy import ir

from .common import require_package
from .float_target import FloatTarget, Written
from .registry import register_target


@register_target
class OnnxTarget(FloatTarget):
    name = "onnx"
    description = "per-time-step ONNX model (state as explicit I/O) + the IR + summary"
    pipeline = "onnx"
    title = "ONNX export"
    how = "model.onnx run step by step with onnxruntime"

    def validate(self, options: dict) -> None:
        require_package("onnx", "--target onnx")
        require_package("onnxruntime", "the --target onnx self-check")

    def write(self, graph: ir.Graph, out: Path) -> Written:
        from step_deploy.exporters.onnx_export import export_onnx

        from step_deploy.exporters.onnx_export import model_block

        model = export_onnx(graph, out / "model.onnx", expose_spikes=True)
        return Written(model, {"onnx": {
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "steps_per_call": model_block(graph),
            "inputs": [i.name for i in model.graph.input], "outputs": [o.name for o in model.graph.output]}})

    def run_artifact(self, artifact, x):
        from step_deploy.exporters.onnx_runner import run_onnx

        return run_onnx(artifact, x, record=True)

    def markdown_extra(self, summary: dict) -> list[str]:
        block = int(summary.get("onnx", {}).get("steps_per_call", 1))
        if block > 1:
            return [f"Block model, {block} time steps per call (the graph has a window op, STAtten's block sum, "
                    f"whose step t needs the later steps of its block): inputs and outputs of step t + j are named "
                    f"`<name>@j`, `t` is the call's first step; feed the state tensors back between calls and run it "
                    f"T / {block} times (see `step_deploy.exporters.onnx_runner.run_onnx`)."]
        return ["Per-time-step model: feed the input and the state tensors, get outputs and new states; run it "
                "T times (see `step_deploy.exporters.onnx_runner.run_onnx`)."]
