"""Pass registry: every pass is registered by name with the graph properties it **requires** and
**guarantees** (and those it **removes**); :func:`run_pipeline` checks them before each pass and
records them in ``graph.metadata['properties']`` after it, so a pipeline that runs a pass on a
graph without what it needs fails naming the pass and the missing property.

Properties (strings): ``'float'`` (float ops, the captured IR), ``'bn-folded'`` (no BatchNorm left
next to a Conv/Linear), ``'quantized:<format>'`` (integer graph of a fixed-point format),
``'mapped'`` (placed onto a target's cores), ``'delay-balanced'`` (Lava latency schedule computed).
A graph that records none is ``{'float'}``, or ``{'quantized:<format>'}`` when its metadata names a
fixed-point format.

Passes that need more than the graph (calibration data, a target spec, the number of time steps)
read them from a :class:`PassContext`, which also collects what analysis passes produce
(``ctx.results[pass_name]``: the quantization report, the core mapping, the delay schedule).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

from step_deploy import ir
from step_deploy.errors import StepDeployError

PROPERTIES_KEY = "properties"


class PassError(StepDeployError, ValueError):
    """A pipeline that cannot run: unknown pass, unmet requirement or a missing context input."""


@dataclass
class PassContext:
    """What passes need besides the graph, and what they produce.

    ``calibration``: calibration inputs (``(B, *shape)`` static or ``(T, B, *shape)``) for quantizing
    passes; ``steps``: time steps T; ``target``: a target spec or its name (``'loihi2'``);
    ``options``: ``{pass name: {keyword: value}}`` extra keywords per pass; ``results``: filled by
    passes (``{pass name: result}``)."""

    calibration: Any = None
    steps: Optional[int] = None
    target: Any = None
    options: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    def require(self, pass_name: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise PassError(f"pass {pass_name!r} needs {', '.join(missing)} in its PassContext "
                            f"(run_pipeline(graph, names, PassContext({missing[0]}=...)))")


@dataclass(frozen=True)
class Pass:
    """A registered pass: ``fn(graph)`` or ``fn(graph, ctx)`` returning the new graph."""

    name: str
    fn: Callable[..., ir.Graph]
    requires: frozenset[str]
    guarantees: frozenset[str]
    removes: frozenset[str] = frozenset()
    doc: str = ""

    @property
    def takes_context(self) -> bool:
        return len(inspect.signature(self.fn).parameters) >= 2

    def __call__(self, graph: ir.Graph, ctx: PassContext) -> ir.Graph:
        return self.fn(graph, ctx) if self.takes_context else self.fn(graph)


PASSES: dict[str, Pass] = {}


def _props(v: Union[str, Iterable[str]]) -> frozenset[str]:
    return frozenset([v] if isinstance(v, str) else v)


def register_pass(name: str, requires: Union[str, Iterable[str]] = (), guarantees: Union[str, Iterable[str]] = (),
                  removes: Union[str, Iterable[str]] = ()):
    """Decorator: register ``fn`` as pass ``name`` (the function is returned unchanged)."""
    def deco(fn):
        PASSES[name] = Pass(name, fn, _props(requires), _props(guarantees), _props(removes),
                            (inspect.getdoc(fn) or "").split("\n\n")[0])
        return fn
    return deco


def graph_properties(graph: ir.Graph) -> frozenset[str]:
    """The properties ``graph`` records (see the module doc for graphs that record none)."""
    recorded = graph.metadata.get(PROPERTIES_KEY)
    if recorded is not None:
        return frozenset(recorded)
    fmt = graph.metadata.get(ir.FORMAT_KEY)
    return frozenset([f"quantized:{fmt}"] if fmt else ["float"])


def with_properties(graph: ir.Graph, props: Iterable[str]) -> ir.Graph:
    """Record ``props`` in ``graph.metadata`` (in place) and return ``graph``."""
    graph.metadata[PROPERTIES_KEY] = sorted(props)
    return graph


#: named pipelines, one per export target (``step_deploy.export`` runs them by the target's name;
#: Loihi's stops after map-to-cores for the constraint check and goes on only when it passes)
PIPELINES: dict[str, list[str]] = {
    "nir": ["fold-batchnorm"],
    "onnx": [],
    "loihi": ["fold-batchnorm", "map-to-cores", "quantize-loihi", "delay-balance"],
    "fpga": ["fold-batchnorm", "quantize-fpga"],
}


def resolve(names: Union[str, Iterable[str]]) -> list[Pass]:
    """Pass objects for a pipeline name, a pass name or a list of pass names."""
    if isinstance(names, str):
        names = PIPELINES[names] if names in PIPELINES else [names]
    out = []
    for name in names:
        if name not in PASSES:
            raise PassError(f"unknown pass {name!r}; known passes: {sorted(PASSES)}, pipelines: {sorted(PIPELINES)}")
        out.append(PASSES[name])
    return out


def run_pipeline(graph: ir.Graph, names: Union[str, Iterable[str]], ctx: Optional[PassContext] = None) -> ir.Graph:
    """Apply passes (a pipeline name, a pass name or a list of pass names) in order: before each,
    check that the graph has the properties the pass requires; after each, verify the graph and
    record the pass's guarantees. The input graph is not modified."""
    ctx = ctx if ctx is not None else PassContext()
    props = set(graph_properties(graph))
    for p in resolve(names):
        missing = sorted(p.requires - props)
        if missing:
            raise PassError(f"pass {p.name!r} requires {missing} but the graph has {sorted(props)}: run the passes "
                            f"that guarantee them first "
                            f"({', '.join(q.name for q in PASSES.values() if q.guarantees & set(missing)) or 'none'})")
        out = p(graph, ctx)
        if out is graph:
            out = graph.copy()
        ir.check(out)
        props = (props - p.removes) | p.guarantees
        graph = with_properties(out, props)
    return graph


__all__ = ["Pass", "PassContext", "PassError", "PASSES", "PIPELINES", "PROPERTIES_KEY", "register_pass",
           "graph_properties", "resolve", "run_pipeline"]
