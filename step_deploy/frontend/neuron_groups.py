"""IR neurons that stand for several PyTorch neuron modules, or for a part of one (SEMM's stacked
experts and its split ``fc1``): capture records them in the graph's metadata ``neuron_groups``
(``{ir name: {modules, how, axis[, start, stop]}}``), and :func:`group_traces` turns PyTorch's
per-module traces into the IR neurons' traces, so every stage compares by IR node name."""
from __future__ import annotations

import torch

from step_deploy import ir

#: the graph metadata key (written by ``frontend/seed_lowering.py``)
NEURON_GROUPS_KEY = "neuron_groups"


def group_members(graph: ir.Graph) -> list[str]:
    """The PyTorch neuron modules that capture merged into (or split across) IR neurons."""
    groups = graph.metadata.get(NEURON_GROUPS_KEY) or {}
    return sorted({m for grp in groups.values() for m in grp.get("modules", ())})


def group_traces(graph: ir.Graph, traces: dict) -> dict:
    """PyTorch's per-module traces ``(T, B, ...)`` plus one trace per IR neuron of the graph's
    ``neuron_groups``: ``how='concat'`` along per-step ``axis``, ``'stack'`` on a new per-step ``axis``,
    or ``'slice'`` ``start:stop`` of one module's ``axis``. Groups whose modules were not all traced, or
    already present, are left as they are."""
    out = dict(traces)
    for name, grp in (graph.metadata.get(NEURON_GROUPS_KEY) or {}).items():
        mods = grp["modules"]
        if name in traces or not all(m in traces for m in mods):
            continue
        ax = grp["axis"] + 2 if grp["axis"] >= 0 else grp["axis"]  # per-step axis -> (T, B, ...) axis
        if grp["how"] == "concat":
            out[name] = torch.cat([traces[m] for m in mods], dim=ax)
        elif grp["how"] == "stack":
            out[name] = torch.stack([traces[m] for m in mods], dim=ax)
        elif grp["how"] == "slice":
            out[name] = traces[mods[0]].narrow(ax, int(grp["start"]), int(grp["stop"]) - int(grp["start"]))
        else:
            raise ValueError(f"graph metadata {NEURON_GROUPS_KEY}[{name!r}]: unknown how={grp['how']!r}; "
                             f"expected concat, stack or slice")
    return out


__all__ = ["NEURON_GROUPS_KEY", "group_members", "group_traces"]
