"""The shape every float target shares (nir, onnx): lower the IR with the target's pipeline, write
one artifact, self-check it against PyTorch, save the IR and the summary. A new float target
implements :meth:`FloatTarget.write` and :meth:`FloatTarget.self_check` and registers itself."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from step_deploy import ir
from step_deploy.atomic import atomic_output_dir
from step_deploy.passes import run_pipeline

from .common import (CheckData, Prepared, base_summary, check_lines, float_result, markdown_summary, self_check_data,
                     torch_reference, write_summary)
from .registry import Target, TargetOption, TargetResult


@dataclass(frozen=True)
class Written:
    """What :meth:`FloatTarget.write` produced: the object the self-check runs (a path or a model)
    and the entries it adds to ``summary.json``."""

    artifact: Any
    summary: dict = field(default_factory=dict)


class FloatTarget(Target):
    title: ClassVar[str]  # heading of summary.md
    options = (
        TargetOption(("--data",), {"metavar": "DATA",
                                   "help": "self-check inputs: a bundled data set (digits, ...), an on-disk data set "
                                           "with --root, a .npy/.pt tensor file, or 'noise'; default: the "
                                           "checkpoint's data set, else noise (flagged in the summary)"}, None),
        TargetOption(("--root",), {"metavar": "DIR", "help": "folder of an on-disk data set (cifar10, cifar10-dvs)"},
                     None),
    )

    @abstractmethod
    def write(self, graph: ir.Graph, out: Path) -> Written:
        """Write the target's artifact for the lowered ``graph`` into the temporary directory ``out``."""

    #: how the self-check runs the artifact (one line for the summary)
    how: ClassVar[str]

    @abstractmethod
    def run_artifact(self, artifact, x):
        """Run ``artifact`` on the encoded input ``x`` (``(T, B, ...)``) recording every neuron's
        spikes: a ``simulators.reference.RunResult``."""

    def self_check(self, prep: Prepared, data: CheckData, graph: ir.Graph, artifact) -> dict:
        """Run ``artifact`` on ``data`` and compare it with PyTorch spike by spike; every mismatch is
        either explained as a threshold tie under float rounding (and its cascade) or fails the
        check (``simulators.float_parity``; integer targets stay bit-exact elsewhere)."""
        from step_deploy.simulators.float_parity import check_float_backend

        logits, traces, x = torch_reference(prep, data.x)
        result = self.run_artifact(artifact, x)
        check = check_float_backend(graph, x, logits, traces, result.final(), result.traces)
        return {"samples": len(data.x), "how": self.how, **check}

    def markdown_extra(self, summary: dict) -> list[str]:
        """Target-specific lines at the end of summary.md."""
        return []

    def run(self, prep: Prepared, out, options: dict, force: bool = False) -> TargetResult:
        graph = run_pipeline(prep.graph, self.pipeline)
        data = self_check_data(prep, options["samples"], options["data"], options["root"])
        with atomic_output_dir(out, force=force, writer=f"step-export --target {self.name}",
                               inputs=[prep.info.path]) as tmp:
            written = self.write(graph, tmp)
            check = self.self_check(prep, data, graph, written.artifact)
            ir.save(graph, tmp / "ir")
            summary = {**base_summary(self, prep, graph, data.source, data.is_noise), **written.summary,
                       "self_check": check}
            write_summary(tmp, summary, markdown_summary(self.title, summary, check_lines(check),
                                                         self.markdown_extra(summary)))
        return float_result(self.name, out, summary)
