"""Graph builder used by capture: adds nodes, keeps per-step shapes, makes unique names."""
from __future__ import annotations

from step_deploy.errors import StepDeployError

from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from step_deploy import ir


class CaptureError(StepDeployError, ValueError):
    """A module or function could not be lowered to the IR (names the module path and op)."""


class Builder:
    def __init__(self):
        self.graph = ir.Graph()
        self.shapes: dict[str, tuple[int, ...]] = {}

    def name(self, base: str) -> str:
        base = base or "node"
        if base not in self.graph:
            return base
        i = 1
        while f"{base}_{i}" in self.graph:
            i += 1
        return f"{base}_{i}"

    def add(self, cls: type, base: str, inputs: tuple[str, ...], **params) -> str:
        node = cls(name=self.name(base), inputs=tuple(inputs), **params)
        try:
            self.shapes[node.name] = node.infer_shape([self.shapes[i] for i in node.inputs])
        except ir.ShapeError as e:
            raise CaptureError(f"{base}: {e}") from None
        self.graph.add(node)
        return node.name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]


def array(t) -> np.ndarray | None:
    """A parameter or buffer as a float32 numpy array (None stays None)."""
    if t is None:
        return None
    return t.detach().cpu().to(torch.float32).numpy().copy()


Lowering = Callable[[Builder, nn.Module, str, str], str]
LOWERINGS: dict[type, Lowering] = {}


def lowers(*classes: type):
    """Register a lowering function for module classes (looked up along the MRO)."""
    def deco(fn):
        for c in classes:
            LOWERINGS[c] = fn
        return fn
    return deco


#: lowerings found by asking the module rather than by its class (e.g. neurons of other libraries,
#: recognised by their attributes): ``probe(module) -> lowering or None``, tried in order
PROBES: list[Callable[[nn.Module], Optional[Callable]]] = []


def lowers_by_probe(probe: Callable[[nn.Module], Optional[Callable]]):
    """Register ``probe`` (see :data:`PROBES`); returns it unchanged."""
    PROBES.append(probe)
    return probe


def find_lowering(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in LOWERINGS:
            return LOWERINGS[cls]
    for probe in PROBES:
        fn = probe(module)
        if fn is not None:
            return fn
    return None


def lower(b: Builder, module: nn.Module, path: str, x: str) -> str:
    """Lower ``module`` (at ``path``) applied to the tensor named ``x``; returns the output name."""
    fn = find_lowering(module)
    if fn is None:
        raise CaptureError(
            f"module {path or '<root>'!r} ({type(module).__module__}.{type(module).__name__}) is not supported by "
            f"capture; supported: torch Conv1d/Conv2d/Linear/BatchNorm/MaxPool2d/AvgPool2d/Flatten/Identity/"
            f"Dropout/Sequential, step-deploy, SpikingJelly-style and snnTorch neurons, and the model zoo's blocks. "
            f"Express the model with these, or register a lowering for this class with "
            f"step_deploy.frontend.builder.lowers")
    return fn(b, module, path, x)


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
