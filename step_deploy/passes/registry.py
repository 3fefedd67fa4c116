"""Pass registry: passes are ``Graph -> Graph`` functions registered by name, each stating what it
requires and what it guarantees; pipelines are named lists of passes per target."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from step_deploy import ir


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[ir.Graph], ir.Graph]
    requires: str
    guarantees: str


PASSES: dict[str, Pass] = {}


def register_pass(name: str, requires: str, guarantees: str):
    def deco(fn):
        PASSES[name] = Pass(name, fn, requires, guarantees)
        return fn
    return deco


PIPELINES: dict[str, list[str]] = {
    "nir": ["fold-batchnorm"],
    "onnx": [],
    "loihi": ["fold-batchnorm"],
}


def run_pipeline(graph: ir.Graph, names) -> ir.Graph:
    """Apply passes (a pipeline name or a list of pass names) in order, verifying after each."""
    if isinstance(names, str):
        names = PIPELINES[names] if names in PIPELINES else [names]
    for name in names:
        if name not in PASSES:
            raise KeyError(f"unknown pass {name!r}; known: {sorted(PASSES)}")
        graph = PASSES[name].fn(graph)
        ir.check(graph)
    return graph
