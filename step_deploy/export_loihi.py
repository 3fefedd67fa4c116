"""``step-export --target loihi``: map and check the network against a Loihi spec, quantize it to
Loihi fixed point, write the portable description and reports, and optionally run it in Lava.

The check uses the float IR (shapes and structure decide the mapping); the quantized IR adds
weight precision and the fixed-point neuron parameters."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from step_deploy import ir
from step_deploy.atomic import atomic_output_dir
from step_deploy.passes import run_pipeline
from step_deploy.passes.map_to_cores import map_to_cores
from step_deploy.targets import check_target, diagnostics_table, load_target, report_dict, report_markdown


def check(graph: ir.Graph, chip: str):
    spec = load_target(chip)
    mapping = map_to_cores(graph, spec)
    diags = check_target(graph, spec, mapping)
    return spec, mapping, diags


def _print_check(spec, mapping, diags) -> None:
    print(f"target {spec.name}: {mapping.total_cores} neuro-cores on {mapping.chips} chip(s), "
          f"{len(mapping.off_core)} nodes off the neuro-cores")
    print(diagnostics_table(diags))


def main(prep, out: Path, chip: str = "loihi2", check_only: bool = False, run_lava: int = 0) -> int:
    graph = run_pipeline(prep.graph, "loihi")
    spec, mapping, diags = check(graph, chip)
    _print_check(spec, mapping, diags)
    n_err = len(ir.errors(diags))
    if check_only:
        return 1 if n_err else 0
    from step_deploy.loihi_artifacts import export_quantized

    with atomic_output_dir(out) as tmp:
        (tmp / "constraints.json").write_text(json.dumps(report_dict(mapping, diags, spec), indent=1,
                                                         sort_keys=True, default=str) + "\n")
        (tmp / "constraints.md").write_text(report_markdown(mapping, diags, spec))
        result = export_quantized(prep, graph, spec, mapping, tmp, run_lava=run_lava)
    print(result["message"])
    if n_err:
        print(f"note: {n_err} constraint error(s) on {spec.name}: see {out / 'constraints.md'}", file=sys.stderr)
    return 0 if result["ok"] else 1
