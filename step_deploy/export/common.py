"""What every target shares: loading + capture (``prepare``), self-check data, spike parity,
summaries (JSON and Markdown) and the check for optional packages.

Every file a target writes is deterministic (no timestamps, sorted keys): the same checkpoint and
flags give byte-identical output."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from step_deploy import ir
from step_deploy.errors import StepDeployError
from step_deploy.frontend import capture, load_checkpoint, torch_traces, encoded_input


class MissingPackageError(StepDeployError):
    """An optional package a target needs is not installed."""


def require_package(module: str, purpose: str, pip_name: Optional[str] = None) -> None:
    """Raise :class:`MissingPackageError` naming the package and ``make setup`` when ``module``
    cannot be imported (checked before any work, so nothing fails half-way)."""
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(f"{purpose} needs the Python package '{pip_name or module}', which is not "
                                  f"installed: run `make setup` (installs every backend), or "
                                  f"`pip install {pip_name or module}`")


@dataclass(frozen=True)
class Prepared:
    """A loaded checkpoint and its captured (float, unfolded) IR graph."""

    model: torch.nn.Module
    info: object  # step_deploy.frontend.checkpoint.CheckpointInfo
    graph: ir.Graph


def prepare(ckpt, arch: Optional[str] = None) -> Prepared:
    model, info = load_checkpoint(ckpt, arch=arch)
    graph = capture(model)
    graph.metadata["checkpoint"] = {"format": info.format, "arch": info.arch,
                                    "dataset": (info.metadata or {}).get("dataset")}
    return Prepared(model, info, graph)


@dataclass(frozen=True)
class CheckData:
    """Inputs of a self-check: ``x`` raw model input, ``y`` labels or None, where they come from."""

    x: torch.Tensor
    y: Optional[torch.Tensor]
    source: str
    is_noise: bool


def self_check_data(prep: Prepared, n: int, data: Optional[str] = None, root: Optional[str] = None) -> CheckData:
    """``n`` self-check inputs: ``data`` (a bundled data set, an on-disk one with ``root``, a
    ``.npy``/``.pt`` tensor file, or ``noise``) or, by default, the checkpoint's own test split
    when it can be found, else clearly labelled noise (a float self-check compares the backend with
    PyTorch on the same input, so noise still tests parity; it says nothing about accuracy)."""
    from step_deploy.data.calibration import CalibrationError, resolve_calibration

    def resolve(which):
        return resolve_calibration(which, root=root, model=prep.model, info=prep.info, n_calib=n, n_eval=n)

    try:
        cd = resolve(data)
    except CalibrationError:
        if data is not None:
            raise
        cd = resolve("noise")
    y = cd.y_eval[:n] if cd.y_eval is not None else None
    return CheckData(cd.x_eval[:n], y, cd.source, bool(cd.is_noise))


def torch_reference(prep: Prepared, x: torch.Tensor):
    """PyTorch logits, spikes per neuron and the encoded input the IR runs on."""
    logits, traces = torch_traces(prep.model, x)
    return logits, traces, encoded_input(prep.model, x)


def _parameters(g: ir.Graph) -> int:
    return int(sum(a.size for n in g.nodes.values() for a in n.arrays().values()))


def ir_summary(g: ir.Graph) -> dict:
    return {"nodes": len(g), "op_counts": g.op_counts(), "parameters": _parameters(g),
            "neurons": int(sum(int(np.prod(s)) for n, s in g.infer_shapes().items() if isinstance(g[n], ir.Neuron)))}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_plain) + "\n")


def _plain(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def write_summary(out: Path, summary: dict, markdown: str) -> None:
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown)


def noise_banner(source: str, advice: str = "give real inputs with --calib") -> str:
    """First line of a report whose numbers come from noise inputs."""
    return f"**WARNING: these numbers come from NOISE inputs, not real data** ({source}); {advice}."


def qat_metadata(prep: Prepared) -> Optional[dict]:
    """The checkpoint's on-grid fine-tuning record (``step-train --qat-epochs``), if any."""
    qat = (getattr(prep.info, "metadata", None) or {}).get("qat")
    return qat if isinstance(qat, dict) else None


def qat_lines(qat: Optional[dict], acc: dict) -> list[str]:
    """The report lines of an on-grid fine-tuned checkpoint: what to expect and what was found."""
    if not qat:
        return []
    agree = float(acc.get("prediction_agreement", 0.0))
    before = qat.get("float_test_accuracy_before")
    return [f"- this checkpoint was fine-tuned {qat.get('epochs')} epoch(s) on the integer grid (step-train "
            f"--qat-epochs, docs/qat.md)" + (f"; the float-trained model before it: {before:.4f} test accuracy"
                                             if isinstance(before, float) else "")
            + ("; float PyTorch and golden integer agree on every prediction, as expected" if agree == 1.0 else
               f"; predictions agree on {100 * agree:.1f}% only: expected 100% with the calibration the "
               f"fine-tuning settled on (the default: 256 samples of the training split); another --calib can "
               f"choose other scales")]


def check_lines(check: dict) -> list[str]:
    """Markdown lines of a float self-check (parity with the PyTorch model, mismatches explained)."""
    from step_deploy.simulators.float_parity import markdown_lines

    return [f"- samples: {check['samples']}; how: {check.get('how', '-')}"] + markdown_lines(check)


def markdown_summary(title: str, summary: dict, check_md: list[str], extra: list[str]) -> str:
    s = summary["ir"]
    advice = ("spike parity with PyTorch is still tested on them, accuracy is not (the checkpoint names no "
              "bundled data set)")
    lines = [noise_banner(summary["data"], advice), ""] if summary.get("data_is_noise") else []
    lines += [f"# {title}", "", f"- checkpoint: `{summary['checkpoint']}` ({summary['arch']})",
              f"- pipeline: {', '.join(summary['pipeline']) or 'none (the captured IR as is)'}",
              f"- IR: {s['nodes']} nodes, {s['parameters']:,} parameters, {s['neurons']:,} neurons per step", "",
              "| op | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["op_counts"].items()]
    if summary.get("step_quirks"):
        lines += ["", "## How STEP's code builds this checkpoint (reproduced)", ""]
        lines += [f"- {q}" for q in summary["step_quirks"]]
    lines += ["", "## Self-check", ""] + check_md + [""]
    return "\n".join(lines + extra) + "\n"


def base_summary(target, prep: Prepared, graph: ir.Graph, data_source: str, is_noise: bool) -> dict:
    """The keys every target's ``summary.json`` has."""
    return {"target": target.name, "checkpoint": str(prep.info.path), "arch": prep.info.arch,
            "pipeline": list(target.pass_names()), "ir": ir_summary(graph), "data": data_source,
            "data_is_noise": is_noise, "step_quirks": list((prep.info.metadata or {}).get("step_quirks", []))}


def float_result(target: str, out, summary: dict):
    """Result of a float target (nir, onnx): exit 0 when the self-check is ok, else 1; one JSON line."""
    from .registry import TargetResult

    chk = summary["self_check"]
    line = json.dumps({"target": target, "output": str(out), "ok": chk["ok"], "verdict": chk["verdict"],
                       "spike_mismatches": chk["spike_mismatches"], "neurons_compared": chk["neurons_compared"],
                       "prediction_agreement": chk["prediction_agreement"],
                       "max_rel_logit_error": chk["max_rel_logit_error"]}, indent=1)
    return TargetResult(0 if chk["ok"] else 1, summary, (line,))
