"""delay-balance: where the integer graph meets Lava's pipeline delays (analysis, no rewrite).

Registered pass: requires ``quantized:loihi-fixed_pt``, guarantees ``delay-balanced``; the
:class:`Schedule` goes to ``ctx.results['delay-balance']``.

The golden model (``simulators.golden``) is delay-free: step t of a node depends on step t of its
inputs. On Lava every ``Dense``/``Sparse`` synapse sends what it computed in the previous step,
so a value reaches its consumers one step later per synapse stage; Lava's ``LIF``, the custom
processes of ``exporters.lava_processes`` and the ``RingBuffer`` source/sink add nothing (their
latencies, measured there, are 0).

:func:`schedule` assigns every node its **latency** ``L[n]``: the Lava step at which the node's
golden step 0 appears at its output (sources: 0; a synapse: ``max`` over its inputs + 1; any other
node: ``max`` over its inputs). Where the inputs of a node have different latencies (residual
adds, Q/K/V paths into MatMul/Mul, a shortcut around a synapse) the shorter ones get a
``Delay`` of the difference, so no process ever mixes time steps. An IR ``Delay`` node is part of
the network's semantics (the golden model delays too) and maps to a Lava ``Delay`` of its own
``steps``; it adds nothing to ``L``. A T-step golden run needs ``T + max(L)`` Lava steps, and golden
step t of node n is Lava step ``t + L[n]``. Biases start at ``L[n]``, when the data arrives.

A **window op** (``ir.WINDOW_OPS``: STAtten's ``TemporalBlockSum``, non-causal inside a block of B
steps) adds its node's ``latency`` (``B - 1``): its Lava process (``lava_processes.BlockSum``) sums each
block and emits ``Y[t]`` at Lava step ``t + L[input] + B - 1``, after the block's last input arrived,
so the branches meeting it downstream get ``B - 1`` more steps of ``Delay``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from step_deploy import ir
from step_deploy.fixedpoint.loihi import FORMAT_NAME
from step_deploy.ir.attention_nodes import WINDOW_OPS

from .registry import PassContext, register_pass

#: alignment latency added by the Lava process each op becomes (synapses: Dense/Sparse = 1)
OP_LATENCY = {"FixedLinear": 1, "FixedConv2d": 1, "FixedConv1d": 1}
#: ops computed on the host before the chip sees the data (no Lava process, latency 0)
HOST_OPS = ("Input", "QuantizeInput")


@dataclass
class Schedule:
    """``latency[node]`` and ``delays[(consumer, input_index)]`` (extra steps on that edge)."""

    latency: dict[str, int] = field(default_factory=dict)
    delays: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """The largest latency: a T-step golden run takes ``T + depth`` Lava steps."""
        return max(self.latency.values(), default=0)

    def lava_steps(self, steps: int) -> int:
        return int(steps) + self.depth

    def as_dict(self) -> dict:
        return {"latency": dict(self.latency), "depth": self.depth,
                "delays": {f"{c}[{i}]": k for (c, i), k in self.delays.items()}}


def schedule(qgraph: ir.Graph, op_latency: dict | None = None) -> Schedule:
    """Latency of every node and the balancing delay of every edge (see the module doc)."""
    lat_of = dict(OP_LATENCY, **(op_latency or {}))
    out = Schedule()
    for n in qgraph.topo_order():
        if not n.inputs:
            out.latency[n.name] = 0
            continue
        arrive = max(out.latency[i] for i in n.inputs)
        for k, i in enumerate(n.inputs):
            if out.latency[i] < arrive:
                out.delays[(n.name, k)] = arrive - out.latency[i]
        own = lat_of[n.op] if n.op in lat_of else int(n.latency) if n.op in WINDOW_OPS else 0
        out.latency[n.name] = arrive + own
    return out


@register_pass("delay-balance", requires=f"quantized:{FORMAT_NAME}", guarantees="delay-balanced")
def delay_balance_pass(qgraph: ir.Graph, ctx: PassContext) -> ir.Graph:
    """Compute the Lava latency schedule of ``qgraph``; the :class:`Schedule` goes to ``ctx.results``."""
    ctx.results["delay-balance"] = schedule(qgraph, **ctx.options.get("delay-balance", {}))
    return qgraph


__all__ = ["Schedule", "schedule", "delay_balance_pass", "OP_LATENCY", "HOST_OPS"]
