"""The integer golden model: the reference interpreter's integer mode, for any registered
fixed-point format (``step_deploy.fixedpoint``).

It *defines* a quantized network; for Loihi ``fixed_pt`` (``passes.quantize_loihi``), Lava
(``exporters.lava_runner``), the cycle-level simulator and the HLS C simulation must reproduce its
spikes bit for bit. It is ``reference.run`` with the op table of the graph's format: the core IR
ops on integers (``integer_ops``) plus the format's own ops. All values are int64 tensors.
The built-in formats are registered by importing their op modules here (``golden_loihi``); a new
format registers itself with ``fixedpoint.register_format`` and needs no change in this module.

**Time alignment: the golden model is delay-free.** Step t of every node depends on step t of
its inputs, as in the float IR, so golden step t is float step t. Lava adds one step per
Dense/Sparse (and each custom process its own latency, see ``exporters.lava_processes``). The
Lava exporter computes every node's latency with ``passes.delay_balance`` (the number of
delaying stages on its paths), inserts ``Delay`` processes where branches of different latency
meet (residual adds, Q/K/V into MatMul/Mul), starts each bias when its data arrives, and the
Lava runner reads node n's step t at Lava step ``t + latency[n]``; it runs ``T + max latency``
steps for a T-step golden run.

**Events, no silent clipping.** ``run_golden(..., events=True)`` counts per node the events the
format declares (``format.events``; Loihi: ``golden_loihi.EVENTS``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

import numpy as np
import torch

from step_deploy import ir
from step_deploy.fixedpoint.format import EVENTS_STATE_KEY, FixedPointFormat, format_of

from . import golden_loihi  # noqa: F401  (built-in format: registers 'loihi-fixed_pt')
from . import golden_fpga  # noqa: F401  (built-in format: registers 'fpga-int')
from .integer_ops import CORE_INTEGER_OPS, GoldenError
from .reference import RunResult, run


def golden_backend(fmt: Optional[FixedPointFormat]) -> ir.Backend:
    """The golden model as a backend for ``fmt`` (its op set: core integer ops + the format's)."""
    name = f"golden-integer:{fmt.name}" if fmt is not None else "golden-integer"
    ops = dict(fmt.ops) if fmt is not None else {}
    where = ", ".join(["simulators/integer_ops.py"] + sorted({f.__module__.replace("step_deploy.", "").replace(".", "/")
                                                              + ".py" for f in ops.values()}))
    return ir.Backend(name, frozenset(CORE_INTEGER_OPS) | frozenset(ops), "integer", where,
                      "the golden model runs quantized graphs: quantize first (e.g. passes.quantize_loihi)")


def integer_ops(fmt: Optional[FixedPointFormat], events: Optional[dict] = None) -> dict:
    """The op table for ``fmt``: core integer ops plus the format's ops. With ``events`` (a
    dict), every op also counts its events into ``events[node]``."""
    table = dict(CORE_INTEGER_OPS)
    if fmt is not None:
        table.update(fmt.ops)
    if events is None:
        return table
    observe = fmt.observe if fmt is not None else None

    def counting(f):
        def op(n, xs, state, t):
            ev = state.setdefault(EVENTS_STATE_KEY, events.setdefault(n.name, {}))
            y = f(n, xs, state, t)
            if observe is not None:
                observe(n, xs, y, ev)
            return y
        return op

    return {k: counting(f) for k, f in table.items()}


@dataclass
class GoldenResult(RunResult):
    """``RunResult`` plus ``events[node][kind]`` counts (empty unless ``events=True``)."""

    events: dict = field(default_factory=dict)


def spiking_nodes(qgraph: ir.Graph) -> list[str]:
    """The nodes whose outputs are spikes in the graph's format (Loihi: every ``LoihiLIF``)."""
    fmt = format_of(qgraph)
    ops = set(fmt.spiking_ops) if fmt is not None else set()
    return [n.name for n in qgraph.topo_order() if n.op in ops]


def integer_inputs(qgraph: ir.Graph, inputs) -> dict:
    """Spike/count inputs given as floats (0.0/1.0, as the float interpreter wants them) become
    int64; analog inputs stay float for ``QuantizeInput``."""
    if not isinstance(inputs, dict):
        inputs = {qgraph.inputs[0].name: inputs}
    out = {}
    for n in qgraph.inputs:
        x = inputs[n.name]
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        if n.kind != "analog" and x.is_floating_point():
            if not torch.equal(x, torch.round(x)):
                raise GoldenError(f"input {n.name!r} is '{n.kind}' but holds non-integer values")
            x = x.to(torch.int64)
        out[n.name] = x
    return out


def run_golden(qgraph: ir.Graph, inputs: Union[dict, torch.Tensor, np.ndarray], steps: Optional[int] = None,
               record: Union[bool, Iterable[str]] = True, events: bool = False) -> GoldenResult:
    """Run the quantized graph. ``inputs`` as for ``reference.run`` (analog floats go through the
    graph's ``QuantizeInput``; spike/count inputs must be integers). The format comes from
    ``qgraph.metadata['fixed_point_format']`` (or, when absent, from the node types the graph uses).
    ``record=True`` records the spikes of the format's spiking nodes (Loihi: every ``LoihiLIF``);
    traces and outputs are int64 ``(T, B, ...)`` tensors."""
    fmt = format_of(qgraph)
    ir.require_ops(qgraph, golden_backend(fmt))
    names = spiking_nodes(qgraph) if record is True else list(record or ())
    gap = qgraph.metadata.get("gap_steps")
    if gap and steps and steps > gap:
        warnings.warn(f"tie 'gap' reproduces '>=' exactly for at most {gap} steps; this run has {steps} "
                      "(Lava and the golden model still agree)", RuntimeWarning)
    ev: dict = {}
    res = run(qgraph, integer_inputs(qgraph, inputs), steps=steps, record=names,
              ops=integer_ops(fmt, ev if events else None))
    return GoldenResult(res.outputs, res.traces, ev)


def merge_events(total: dict, part: dict) -> dict:
    """Accumulate ``part`` into ``total`` (counts add, ``max_abs`` takes the max)."""
    for node, ev in part.items():
        dst = total.setdefault(node, {})
        for k, v in ev.items():
            dst[k] = max(dst.get(k, 0), v) if k == "max_abs" else dst.get(k, 0) + v
    return total


__all__ = ["GoldenError", "GoldenResult", "golden_backend", "integer_ops", "run_golden", "spiking_nodes",
           "integer_inputs", "merge_events"]
