"""IR verifier. The rules are data: a name, what they check, and a function returning diagnostics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .diagnostics import Diagnostic, IRError, errors
from .graph import Graph
from .neuron_nodes import CLIFNeuron, EIFNeuron, GLIFNeuron, Neuron, TemporalLinear
from .nodes import NODE_TYPES, BatchNorm


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[Graph], list[Diagnostic]]


def _known_ops(g: Graph):
    return [Diagnostic("known-op", n.name, f"unknown node type {n.op}") for n in g.nodes.values()
            if NODE_TYPES.get(n.op) is not type(n)]


def _arity(g: Graph):
    out = []
    for n in g.nodes.values():
        want = type(n).arity
        if (want is None and len(n.inputs) < 1) or (want is not None and len(n.inputs) != want):
            out.append(Diagnostic("arity", n.name, f"{n.op} takes {want if want is not None else '1 or more'} inputs, has {len(n.inputs)}"))
    return out


def _structure(g: Graph):
    try:
        g.topo_order()
    except IRError as e:
        return e.diagnostics
    out = []
    if not g.inputs:
        out.append(Diagnostic("has-input", None, "graph has no Input node"))
    if not g.outputs:
        out.append(Diagnostic("has-output", None, "graph has no Output node"))
    used = {i for n in g.nodes.values() for i in n.inputs}
    for n in g.nodes.values():
        if n.op != "Output" and n.name not in used:
            out.append(Diagnostic("no-dead-nodes", n.name, f"{n.op} output is never used", severity="warning",
                                  hint="remove it or connect it to an Output"))
    return out


def _shapes(g: Graph):
    try:
        g.infer_shapes()
        return []
    except IRError as e:
        return e.diagnostics


def _finite(g: Graph):
    out = []
    for n in g.nodes.values():
        for k, a in n.arrays().items():
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                out.append(Diagnostic("finite-parameters", n.name, f"{k} holds {int(np.sum(~np.isfinite(a)))} NaN/Inf values",
                                      hint="the model weights are corrupt; retrain or re-export the checkpoint"))
    return out


def _neuron_params(g: Graph):
    out = []
    for n in g.nodes.values():
        if isinstance(n, Neuron):
            if n.kind not in ("IF", "GLIF") and not n.tau >= 1.0:  # GLIF's per-step tau is a factor in params_t
                out.append(Diagnostic("neuron-params", n.name, "tau must be >= 1 in discrete time", n.tau, 1.0))
            if not n.v_threshold > 0:
                out.append(Diagnostic("neuron-params", n.name, "threshold must be positive", n.v_threshold, 0))
            if type(n) is Neuron and n.kind not in ("LIF", "IF", "PLIF"):  # the charge would silently be LIF's
                out.append(Diagnostic("neuron-params", n.name, f"kind={n.kind!r} has its own node type; a plain Neuron "
                                      f"computes only LIF/IF/PLIF", hint=f"use ir.{n.kind}Neuron"))
            if n.fire == "round" and n.max_level < 1:
                out.append(Diagnostic("neuron-params", n.name, "integer spikes need max_level >= 1", n.max_level, 1))
            if isinstance(n, CLIFNeuron) and (n.reset != "soft" or n.v_reset != 0.0):
                out.append(Diagnostic("neuron-params", n.name, "CLIF is defined with soft reset and v_reset=0 "
                                      f"(STEP's v_reset=None); this node has reset={n.reset!r}, v_reset={n.v_reset}",
                                      hint="capture CLIF with reset='soft', v_reset=0.0"))
            if isinstance(n, EIFNeuron) and not n.delta_t > 0:
                out.append(Diagnostic("neuron-params", n.name, "EIF needs delta_t > 0", n.delta_t, 0))
        if isinstance(n, BatchNorm) and np.any(n.var < 0):
            out.append(Diagnostic("batchnorm-params", n.name, "negative running variance"))
    return out


def _time_steps(g: Graph):
    """Nodes that hold one entry per time step (TemporalLinear's T×T weight, GLIF's per-step
    parameters) must agree on T with each other and with ``metadata['time_steps']``."""
    steps = {n.name: int(n.weight.shape[0]) for n in g.nodes.values()
             if isinstance(n, TemporalLinear) and n.weight is not None and n.weight.ndim == 2}
    steps.update({n.name: int(n.params_t.shape[0]) for n in g.nodes.values() if isinstance(n, GLIFNeuron)})
    want = g.metadata.get("time_steps") or (next(iter(steps.values())) if steps else None)
    return [Diagnostic("time-steps", name, f"holds parameters for T={t} steps, the graph runs T={want}", t, want,
                       hint="capture every per-step neuron with the model's step") for name, t in steps.items()
            if t != want]


RULES: list[Rule] = [
    Rule("known-op", "every node is a registered IR type", _known_ops),
    Rule("arity", "every node has the number of inputs its op takes", _arity),
    Rule("structure", "inputs exist, no cycles, has Input and Output, no dead nodes", _structure),
    Rule("shapes", "shape inference succeeds on every node", _shapes),
    Rule("finite-parameters", "no NaN or Inf in any weight", _finite),
    Rule("neuron-params", "neuron and batch-norm parameters are physical", _neuron_params),
    Rule("time-steps", "per-step parameters (TemporalLinear, GLIF) agree on T", _time_steps),
]


def verify(g: Graph, rules: list[Rule] = RULES) -> list[Diagnostic]:
    """Run every rule; return all diagnostics (errors and warnings)."""
    diags: list[Diagnostic] = []
    for rule in rules:
        diags.extend(rule.check(g))
    return diags


def check(g: Graph) -> Graph:
    """Raise IRError if the graph has errors; return it unchanged otherwise."""
    errs = errors(verify(g))
    if errs:
        raise IRError(errs)
    return g
