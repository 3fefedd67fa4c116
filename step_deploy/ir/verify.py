"""IR verifier. The rules are data: a name, what they check, and a function returning diagnostics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .diagnostics import Diagnostic, IRError, errors
from .graph import Graph
from .nodes import NODE_TYPES, BatchNorm, Neuron


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
            if n.kind != "IF" and not n.tau >= 1.0:
                out.append(Diagnostic("neuron-params", n.name, "tau must be >= 1 in discrete time", n.tau, 1.0))
            if not n.v_threshold > 0:
                out.append(Diagnostic("neuron-params", n.name, "threshold must be positive", n.v_threshold, 0))
        if isinstance(n, BatchNorm) and np.any(n.var < 0):
            out.append(Diagnostic("batchnorm-params", n.name, "negative running variance"))
    return out


RULES: list[Rule] = [
    Rule("known-op", "every node is a registered IR type", _known_ops),
    Rule("arity", "every node has the number of inputs its op takes", _arity),
    Rule("structure", "inputs exist, no cycles, has Input and Output, no dead nodes", _structure),
    Rule("shapes", "shape inference succeeds on every node", _shapes),
    Rule("finite-parameters", "no NaN or Inf in any weight", _finite),
    Rule("neuron-params", "neuron and batch-norm parameters are physical", _neuron_params),
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
