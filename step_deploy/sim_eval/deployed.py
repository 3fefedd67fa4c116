"""The simulated latency and energy ``step-export --target loihi|fpga`` reports for what it exported:
the cycle-level simulator run on the exported integer network for a few self-check samples, its
spikes compared with the golden model's element by element; written as ``sim.{json,md}`` with a
short section in ``report.md``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from step_deploy import ir

#: samples the export simulates (the simulator is exact per sample; a few give the spread)
EXPORT_SIM_SAMPLES = 8


def deployed_simulation(qgraph: ir.Graph, folded: ir.Graph, x_enc: torch.Tensor, *, arch: str,
                        chip: Optional[str] = None, part: Optional[str] = None, clock_mhz: float = 200.0,
                        parallelism=None, samples: int = EXPORT_SIM_SAMPLES):
    """``(SimResult, parity)`` of the exported network on the first ``samples`` encoded inputs.
    ``arch``: ``'fpga'`` (with ``part``, ``clock_mhz``, ``parallelism`` as exported) or a mesh
    (``chip``: the chip spec the export mapped to; its hardware description is the bundled one of
    the same name, ``loihi2`` with Loihi 1's per-event costs as a labelled assumption)."""
    from .command import DEFAULT_HARDWARE, SimOptions, simulate

    x = x_enc[:max(1, min(samples, len(x_enc)))]
    if arch == "fpga":
        o = SimOptions(arch="fpga", part=part or "zcu104", clock_mhz=clock_mhz, parallelism=parallelism,
                       batch_size=len(x), progress=False)
    else:
        mesh = chip if chip in DEFAULT_HARDWARE else "loihi2"
        o = SimOptions(arch=mesh, hardware=DEFAULT_HARDWARE[mesh], batch_size=len(x), progress=False)
    res, parity, _ = simulate(qgraph, folded, x, o)
    if arch != "fpga" and chip not in DEFAULT_HARDWARE:
        res.notes.insert(0, f"the chip spec {chip!r} has no bundled hardware description: simulated on "
                            f"{DEFAULT_HARDWARE['loihi2']}")
    return res, parity


def write_deployed_sim(res, parity: dict, out: Path, header: Optional[dict] = None) -> None:
    from step_deploy.simulators.cycle.report import markdown

    doc = {"header": header or {}, "parity": parity, **res.to_dict()}
    (out / "sim.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (out / "sim.md").write_text(markdown(res, header, parity))


def report_section(res, parity: dict) -> str:
    """A short Markdown section for the target's report.md."""
    from step_deploy.simulators.cycle.report import parity_ok, summary_line

    ok = parity_ok(parity)
    lines = ["", "## Simulated latency and energy (cycle-level simulator; details in sim.md)", "",
             f"{res.samples} sample(s) through the cycle-level simulator of {res.arch} ({res.schedule}).", "",
             f"- {summary_line(res, parity)}",
             "- spikes: " + ("equal to the golden model at every spiking node and step" if ok else
                             "DIFFER from the golden model (see sim.md): the latency and energy describe other spikes")]
    lines += [f"- note: {n}" for n in res.notes[:3]]
    return "\n".join(lines) + "\n"


__all__ = ["EXPORT_SIM_SAMPLES", "deployed_simulation", "report_section", "write_deployed_sim"]
