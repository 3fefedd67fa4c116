"""``--target nir``: the BN-folded float IR as a NIR graph (``model.nir``), read back and run by
the reference interpreter as the self-check."""
from __future__ import annotations

from pathlib import Path

from step_deploy import ir

from .common import require_package
from .float_target import FloatTarget, Written
from .registry import register_target


@register_target
class NirTarget(FloatTarget):
    name = "nir"
    description = "NIR graph (model.nir, standard nodes + documented extensions) + the IR + summary"
    pipeline = "nir"
    title = "NIR export"
    how = "model.nir read back into the IR and run by the reference interpreter"

    def validate(self, options: dict) -> None:
        require_package("nir", "--target nir")

    def write(self, graph: ir.Graph, out: Path) -> Written:
        from step_deploy.exporters.nir_export import write_nir

        coverage = write_nir(graph, out / "model.nir")
        coverage["path"] = "model.nir"  # relative: the temporary directory's name must not leak into files
        return Written(out / "model.nir", {"coverage": coverage})


    def run_artifact(self, artifact, x):
        from step_deploy.exporters.nir_read import read_nir_as_ir
        from step_deploy.simulators.reference import run

        return run(read_nir_as_ir(artifact), x, record=True)

    def markdown_extra(self, summary: dict) -> list[str]:
        from step_deploy.exporters.nir_export import coverage_markdown

        return ["## Coverage", "", coverage_markdown(summary["coverage"])]
