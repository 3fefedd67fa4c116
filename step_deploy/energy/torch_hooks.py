"""Traces for the counters taken from the PyTorch model itself (forward hooks), keyed by the IR
node names capture gives (a Conv/Linear/neuron node is named by its module path).

What is hooked: the input of every Conv/Linear module that is a synapse of the graph (of PSN's
``TemporalLinear``: the input of its neuron module) and the output of every neuron module, each
reshaped from STEP's ``(T·B, ...)`` to ``(T, B, ...)``; and the
input of the model's ``time_mean`` (the per-step values the head's counts are taken on, see
``counters`` *Readout*), by wrapping that method on the instance for the run. The attention
products are functions, not modules, so nothing can hook them: their operands are computed from
the hooked neuron spikes through the graph's layout nodes (reshape, transpose, flatten) and the
products themselves (``MatMul``, ``Mul``, ``Sum``, ``Mean``, ``Scale``; ``Add`` and ``MaxPool2d``
for the residual stream the token mean reads), vectorized over
``(T, B)``. The seed attention designs: a ``ReLU`` module (A²OS²A's ``k_relu``, after a BatchNorm)
is hooked on its output like a neuron; ``Shiftmax`` and ``TemporalBlockSum`` are derived from their
inputs by their definitions (the block sum over the ``T`` axis of the ``(T, B, ...)`` trace); IR
neurons that capture merged from several PyTorch neurons (SEMM's stacked experts, graph metadata
``neuron_groups``, written by ``frontend.seed_lowering``) get their traces from those modules'
outputs.
Nothing here runs the reference interpreter."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from step_deploy import ir
from step_deploy.frontend.neuron_groups import group_members, group_traces

from .counters import NEURON_OPS, SYNAPSE_OPS, CountError, graph_plan


def _time_major(t: torch.Tensor, steps: int, shape: tuple, what: str, clone: bool = False) -> torch.Tensor:
    """``(T·B, ...)`` -> ``(T, B, ...)``: a view of the model's own tensor, or a copy with ``clone``."""
    t = t.detach()
    if t.shape[0] % steps:
        raise CountError(f"{what}: leading axis {t.shape[0]} is not T·B for T={steps}")
    y = t.reshape(steps, t.shape[0] // steps, *t.shape[1:])
    y = y.clone() if clone else y
    if shape is not None and tuple(y.shape[2:]) != tuple(shape):
        raise CountError(f"{what}: per-step shape {tuple(y.shape[2:])} differs from the graph's {tuple(shape)}; "
                         f"was the graph captured from this model?")
    return y


def _derive(graph: ir.Graph, traces: dict, name: str) -> torch.Tensor:
    """``traces[name]`` computed from hooked traces through layout and product nodes."""
    if name in traces:
        return traces[name]
    n = graph[name]
    if not n.inputs:
        raise CountError(f"node {name!r} ({n.op}) has no hooked module; it cannot be traced from PyTorch")
    xs = [_derive(graph, traces, i) for i in n.inputs]
    x = xs[0]
    if n.op == "Reshape":
        y = x.reshape(x.shape[:2] + tuple(n.shape))
    elif n.op == "Transpose":
        y = x.permute(0, 1, *(p + 2 for p in n.perm))
    elif n.op == "Flatten":
        r = x.dim() - 2
        y = x.flatten(n.start_dim % r + 2, n.end_dim % r + 2)
    elif n.op == "MatMul":
        a, b = xs
        a = a.transpose(-1, -2) if n.transpose_a else a
        b = b.transpose(-1, -2) if n.transpose_b else b
        y = torch.matmul(a, b) * n.scale
    elif n.op == "Mul":
        ra, rb = xs[0].dim(), xs[1].dim()
        a = xs[0].reshape(xs[0].shape[:2] + (1,) * max(0, rb - ra) + xs[0].shape[2:])
        b = xs[1].reshape(xs[1].shape[:2] + (1,) * max(0, ra - rb) + xs[1].shape[2:])
        y = a * b
    elif n.op in ("Sum", "Mean"):
        ax = n.axis % (x.dim() - 2) + 2
        y = x.sum(ax, keepdim=n.keepdim) if n.op == "Sum" else x.mean(ax, keepdim=n.keepdim)
    elif n.op == "Scale":
        y = x * n.factor
    elif n.op == "ReLU":
        y = torch.clamp_min(x, 0)
    elif n.op == "Shiftmax":
        y = _shiftmax(n, x)
    elif n.op == "TemporalBlockSum":  # (T, B, ...): the sum of each block of steps, at every step of the block
        n.check_steps(x.shape[0])
        b = int(n.block)
        blocks = x.reshape((x.shape[0] // b, b) + tuple(x.shape[1:])).sum(1, keepdim=True)
        y = blocks.expand((x.shape[0] // b, b) + tuple(x.shape[1:])).reshape(x.shape)
    elif n.op == "Add":
        y = sum(xs[1:], xs[0])
    elif n.op == "MaxPool2d":
        flat = torch.nn.functional.max_pool2d(x.flatten(0, 1), tuple(n.kernel_size), tuple(n.stride),
                                              tuple(n.padding))
        y = flat.reshape(x.shape[:2] + flat.shape[1:])
    else:
        raise CountError(f"node {name!r} ({n.op}) is neither hooked (a module) nor a layout/product node; "
                         f"its values cannot be taken from the PyTorch model")
    traces[name] = y
    return y


def _shiftmax(n: ir.Node, x: torch.Tensor) -> torch.Tensor:
    """The IR's Shiftmax (its docstring's equation) on ``(T, B, *shape)`` values:
    ``num = 2^Δ`` where ``Δ = x - rowmax >= -frac_bits`` (else 0), ``Y = num / 2^ceil(log2 Σ num)``."""
    ax = n.axis % (x.dim() - 2) + 2
    delta = x - x.amax(dim=ax, keepdim=True)
    num = torch.where(delta >= -int(n.frac_bits), torch.exp2(delta), torch.zeros_like(delta))
    m, e = torch.frexp(num.sum(dim=ax, keepdim=True))  # sum = m·2^e, m in [1/2, 1): 2^ceil(log2 sum)
    return num / torch.ldexp(torch.ones_like(m), torch.where(m == 0.5, e - 1, e))


#: modules whose output is a graph node the counters read and that cannot be derived from hooked
#: values (A²OS²A's ``k_relu`` follows a BatchNorm): hooked on their output like neurons
OUTPUT_HOOKED_OPS = ("ReLU",)

#: synapses that are part of a neuron module (PSN's ``TemporalLinear`` is named ``<PSN module>.fc``):
#: their input is the input of that module
INNER_SYNAPSES = ("TemporalLinear",)


def _owner_module(n: ir.Node, modules: dict) -> Optional[str]:
    """The module whose input is synapse ``n``'s input: the module of its name, or for a synapse
    inside a neuron module (:data:`INNER_SYNAPSES`) that module; None when there is none."""
    if n.name in modules and n.op not in INNER_SYNAPSES:
        return n.name
    if n.op in INNER_SYNAPSES:
        owner = n.name.rsplit(".", 1)[0] if "." in n.name else ""
        return owner if owner in modules else None
    return None


def hook_traces(model: nn.Module, x: torch.Tensor, graph: ir.Graph, steps: Optional[int] = None) -> dict:
    """Run ``model`` on raw input ``x`` (what its ``forward`` takes) with hooks and return
    ``{IR node name: (T, B, ...) tensor}`` for every node :func:`counters.needed_traces` lists
    (``graph`` captured from ``model``; folding BatchNorm keeps the names). ``steps``: T, by
    default ``model.step``.

    The hooked tensors are kept as views, not copies (the counting overhead is a fraction of a
    forward pass). A model that modifies one of them in place later in its forward (its version
    counter moves) is run a second time with copies taken in the hooks, so the traces are always
    the values the hooked module saw; tensors made under ``torch.inference_mode`` (no version
    counter) are copied when hooked. The model runs in eval mode under ``torch.no_grad``; every
    module's ``training`` flag is as before afterwards."""
    T = int(steps or getattr(model, "step", 0) or 0)
    if T < 1:
        raise CountError("hook_traces needs the number of time steps: pass steps=T (the model has no .step)")
    plan = graph_plan(graph)
    traces = _forward_with_hooks(model, x, graph, plan, T, clone=False)
    if traces is None:  # something was changed in place after it was hooked: take copies
        traces = _forward_with_hooks(model, x, graph, plan, T, clone=True)
    if group_members(graph):  # IR neurons standing for several PyTorch neurons (SEMM's stacked experts)
        traces = group_traces(graph, traces)
    with torch.no_grad():
        for name in plan.needed:
            _derive(graph, traces, name)
    return traces


def _forward_with_hooks(model: nn.Module, x: torch.Tensor, graph: ir.Graph, plan, T: int, clone: bool):
    """The hooked traces of one forward pass; None when (without ``clone``) a hooked tensor was
    modified in place before the pass ended."""
    shapes = plan.shapes
    modules, training = {}, []  # one walk: the modules by path, and those to put in eval mode for the run
    for path, m in model.named_modules():
        modules[path] = m
        if m.training:
            training.append(m)
    traces: dict = {}
    seen: list = []  # (tensor, its version when hooked)
    hooks = []

    def take(key, t, shape, what):
        # an inference-mode tensor has no version counter to watch: copy it right away
        track = not clone and not t.is_inference()
        traces[key] = y = _time_major(t, T, shape, what, clone=not track)
        if track:
            seen.append((y, y._version))

    readout = []
    for n in plan.order:
        if n.op in SYNAPSE_OPS:
            src = graph[n.inputs[0]]
            if src.op == "TemporalMean":
                readout.append(src.inputs[0])
                continue
            owner = _owner_module(n, modules)
            if owner is None:
                continue  # a synapse capture made up (e.g. a padding conv): derived below if possible
            hooks.append(modules[owner].register_forward_pre_hook(
                lambda mod, inp, key=src.name, shape=shapes[src.name], what=n.name:
                    take(key, inp[0], shape, f"input of module {what!r}")))
        elif (n.op in NEURON_OPS or n.op in OUTPUT_HOOKED_OPS) and n.name in modules:
            hooks.append(modules[n.name].register_forward_hook(
                lambda mod, inp, out, key=n.name, shape=shapes[n.name]:
                    take(key, out, shape, f"output of module {key!r}")))
    for path in group_members(graph):
        if path in modules:
            hooks.append(modules[path].register_forward_hook(
                lambda mod, inp, out, key=path: take(key, out, None, f"output of module {key!r}")))
    wrapped = False
    if readout:
        if not callable(getattr(model, "time_mean", None)):
            raise CountError(f"the head reads a temporal mean but {type(model).__name__} has no time_mean method "
                             f"to take the per-step values from")
        original = model.time_mean

        def time_mean(t):
            for key in readout:
                take(key, t, shapes[key], "input of time_mean")
            return original(t)
        model.time_mean = time_mean
        wrapped = True
    try:
        for m in training:
            m.training = False
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        if wrapped:
            del model.time_mean
        for m in training:
            m.training = True
    if any(t._version != v for t, v in seen):
        return None
    return traces


__all__ = ["hook_traces"]
