"""Export orchestration: checkpoint -> IR -> target artifacts + summary (JSON and Markdown).

Every export writes into a temporary directory that is renamed into place only when complete,
and every file is deterministic (no timestamps, sorted keys): the same checkpoint and flags give
byte-identical output."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from step_deploy import ir
from step_deploy.atomic import atomic_output_dir
from step_deploy.frontend import capture, encoded_input, load_checkpoint, torch_traces
from step_deploy.passes import run_pipeline

TARGETS = ("nir", "onnx", "loihi", "fpga")


@dataclass
class Prepared:
    model: torch.nn.Module
    info: object
    graph: ir.Graph  # captured, unfolded
    samples: torch.Tensor
    labels: Optional[torch.Tensor]


def self_check_samples(model, info, n: int, seed: int = 0):
    """A few samples to check parity on: the checkpoint's own test set if it is bundled, else noise."""
    from step_deploy.data import BUNDLED, load_dataset

    data = (getattr(info, "metadata", {}) or {}).get("dataset")
    if data in BUNDLED:
        ds = load_dataset(data, "test", T=model.step)
        xs, ys = zip(*(ds[i] for i in range(min(n, len(ds)))))
        return torch.stack(xs), torch.tensor(ys)
    g = torch.Generator().manual_seed(seed)
    c, s = model.config["in_channels"], model.config["img_size"]
    shape = (n, model.step, c, s, s) if model.config.get("encoding") == "events" else (n, c, s, s)
    return torch.rand(shape, generator=g), None


def prepare(ckpt, arch: Optional[str] = None, samples: int = 8) -> Prepared:
    model, info = load_checkpoint(ckpt, arch=arch)
    graph = capture(model)
    graph.metadata["checkpoint"] = {"format": info.format, "arch": info.arch,
                                    "dataset": (info.metadata or {}).get("dataset")}
    x, y = self_check_samples(model, info, samples)
    return Prepared(model, info, graph, x, y)


def spike_parity(reference: dict, other: dict) -> dict:
    """Compare two {neuron: spikes (T, B, ...)} dicts: per-neuron mismatch counts."""
    missing = sorted(set(reference) - set(other))
    per = {k: int((reference[k] != other[k]).sum()) for k in sorted(reference) if k in other}
    total = sum(int(reference[k].numel()) for k in per)
    return {"neurons_compared": len(per), "neurons_missing": missing, "spikes_compared": total,
            "spike_mismatches": sum(per.values()), "mismatching_neurons": {k: v for k, v in per.items() if v}}


def logit_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def _parameters(g: ir.Graph) -> int:
    return int(sum(a.size for n in g.nodes.values() for a in n.arrays().values()))


def ir_summary(g: ir.Graph) -> dict:
    return {"nodes": len(g), "op_counts": g.op_counts(), "parameters": _parameters(g),
            "neurons": int(sum(int(np.prod(s)) for n, s in g.infer_shapes().items() if isinstance(g[n], ir.Neuron)))}


def write_summary(out: Path, summary: dict, markdown: str) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    (out / "summary.md").write_text(markdown)


def _check_lines(check: dict) -> list[str]:
    return [f"- samples: {check['samples']}",
            f"- neurons compared: {check['neurons_compared']} ({check['spikes_compared']} spike values)",
            f"- spike mismatches vs PyTorch: **{check['spike_mismatches']}**",
            f"- max relative logit error: {check['max_rel_logit_error']:.2e}"]


def markdown_summary(title: str, summary: dict, extra: list[str]) -> str:
    s = summary["ir"]
    lines = [f"# {title}", "", f"- checkpoint: `{summary['checkpoint']}` ({summary['arch']})",
             f"- IR: {s['nodes']} nodes, {s['parameters']:,} parameters, {s['neurons']:,} neurons per step", "",
             "| op | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["op_counts"].items()]
    lines += ["", "## Self-check (parity with the PyTorch model)", ""] + _check_lines(summary["self_check"]) + [""]
    return "\n".join(lines + extra) + "\n"


def _self_check(p: Prepared, traces: dict, logits: torch.Tensor, result, how: str) -> dict:
    return {"samples": len(p.samples), **spike_parity(traces, result.traces),
            "max_rel_logit_error": logit_error(logits, result.final()), "how": how}


def _torch_reference(p: Prepared):
    logits, traces = torch_traces(p.model, p.samples)
    return logits, traces, encoded_input(p.model, p.samples)


def export_nir_target(p: Prepared, out) -> dict:
    from step_deploy.exporters.nir_export import coverage_markdown, read_nir_as_ir, write_nir
    from step_deploy.simulators.reference import run

    graph = run_pipeline(p.graph, "nir")
    logits, traces, x = _torch_reference(p)
    with atomic_output_dir(out) as tmp:
        coverage = write_nir(graph, tmp / "model.nir")
        coverage["path"] = "model.nir"  # relative: the temporary directory's name must not leak into files
        back = read_nir_as_ir(tmp / "model.nir")
        check = _self_check(p, traces, logits, run(back, x, record=True),
                            "model.nir read back into the IR and run by the reference interpreter")
        ir.save(graph, tmp / "ir")
        summary = {"target": "nir", "checkpoint": str(p.info.path), "arch": p.info.arch, "ir": ir_summary(graph),
                   "coverage": coverage, "self_check": check}
        write_summary(tmp, summary, markdown_summary("NIR export", summary, ["## Coverage", "",
                                                                           coverage_markdown(coverage)]))
    return summary


def export_onnx_target(p: Prepared, out) -> dict:
    from step_deploy.exporters.onnx_export import export_onnx
    from step_deploy.simulators.onnx_runner import run_onnx

    graph = run_pipeline(p.graph, "onnx")
    logits, traces, x = _torch_reference(p)
    with atomic_output_dir(out) as tmp:
        model = export_onnx(graph, tmp / "model.onnx", expose_spikes=True)
        check = _self_check(p, traces, logits, run_onnx(model, x, record=True),
                            "model.onnx run step by step with onnxruntime")
        ir.save(graph, tmp / "ir")
        summary = {"target": "onnx", "checkpoint": str(p.info.path), "arch": p.info.arch, "ir": ir_summary(graph),
                   "onnx": {"opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                            "inputs": [i.name for i in model.graph.input],
                            "outputs": [o.name for o in model.graph.output]},
                   "self_check": check}
        write_summary(tmp, summary, markdown_summary("ONNX export", summary, [
            "Per-time-step model: feed the input and the state tensors, get outputs and new states; "
            "run it T times (see `step_deploy.simulators.onnx_runner.run_onnx`)."]))
    return summary
