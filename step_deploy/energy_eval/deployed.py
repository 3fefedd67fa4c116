"""The energy summary ``step-export --target loihi|fpga`` puts in its report: the exported integer
network counted by its own golden model on the self-check samples, priced with the deployed
widths (``paper``, ``step/int``, ``horowitz/int``, ``loihi``), beside the QANN baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from step_deploy import ir

from step_deploy.energy.constants import load_constants
from step_deploy.energy.models import MODELS
from step_deploy.energy.report import EnergyResult, markdown, price_all

EXPORT_SAMPLES = 64


def deployed_energy(model, qgraph: ir.Graph, folded: ir.Graph, source: str, x: torch.Tensor,
                    y: Optional[torch.Tensor], data: str, checkpoint: str, arch: Optional[str],
                    samples: int = EXPORT_SAMPLES) -> EnergyResult:
    """Count ``qgraph`` with its golden model (``source``: golden-fpga or golden-loihi) on the first
    ``samples`` of ``x`` and price it with every model at the deployed widths."""
    from .run import count_dataset
    n = min(samples, len(x))
    run = count_dataset(model, folded, x[:n], y[:n] if y is not None else None, source=source, qgraph=qgraph)
    header = {"checkpoint": Path(str(checkpoint)).name, "arch": arch, "data": data, "source": source, "samples": n,
              "steps": int(model.step), "accuracy": run.accuracy,
              "widths_int": {"from": "the exported network's own widths (counted on its golden model)"}}
    return price_all(run.counts, run.graph, folded, list(MODELS), "as-counted", load_constants(), header,
                     widths=("int",), union=run.union)


def write_deployed(res: EnergyResult, out: Path) -> None:
    (out / "energy.json").write_text(json.dumps(res.to_dict(), indent=1, sort_keys=True) + "\n")
    (out / "energy.md").write_text(markdown(res))


def report_section(res: EnergyResult) -> str:
    """A short Markdown section for the target's report.md."""
    lines = ["", "## Energy (estimate; details in energy.md)", "",
             f"The exported integer network, counted by its golden model on {res.counts.samples} sample(s), "
             f"priced with the deployed widths; QANN = the same network with "
             f"{res.to_dict()['qann']['activation_bits']}-bit activations.", "",
             "| model | SNN µJ/sample | QANN dense | QANN zero-skipping | winner vs dense / zero-skipping |",
             "|---|---:|---:|---:|---|"]
    for v, r in res.snn.items():
        b, bs = res.comparison.get(v), res.comparison_skipping.get(v)
        lines.append(f"| {v} | {r.per_sample_pj * 1e-6:.4g} | " +
                     (f"{b.qann_pj * 1e-6:.4g} | {bs.qann_pj * 1e-6:.4g} | {b.winner} / {bs.winner} |" if b and bs
                      else "n/a | n/a | |"))
    return "\n".join(lines) + "\n"


__all__ = ["EXPORT_SAMPLES", "deployed_energy", "report_section", "write_deployed"]
