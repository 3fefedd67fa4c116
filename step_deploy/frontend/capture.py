"""Capture: a PyTorch spiking model -> the per-time-step IR.

Capture walks the module tree with a registry of lowerings (``builder.LOWERINGS``): torch
layers, three neuron flavours and the zoo's blocks, each lowered by a function that mirrors its
``forward``. Anything without a lowering is an error naming the module path and type; nothing is
dropped silently. STEP's ``(T·B, ...)`` layout becomes one step of ``(...)`` tensors, and the mean
over T becomes an explicit ``TemporalMean`` node."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from step_deploy import ir

from . import neuron_lowering, seed_lowering, torch_lowering, zoo_lowering  # noqa: F401  (register lowerings)
from .builder import Builder, CaptureError, lower

_INPUT_KIND = {"direct": "analog", "rate": "spikes", "events": "counts", "sequence": "analog"}


def capture(model: nn.Module, input_shape: Optional[tuple[int, ...]] = None, input_kind: Optional[str] = None,
            verify: bool = True) -> ir.Graph:
    """Lower ``model`` to an IR graph.

    For zoo models the per-step input shape and kind come from ``model.config``; for other
    modules pass ``input_shape`` (one sample, one step, e.g. ``(1, 8, 8)``)."""
    cfg = getattr(model, "config", None) or {}
    if input_shape is None:
        if not cfg:
            raise CaptureError("capture needs input_shape=(C, H, W) (one sample, one step) for a plain module")
        input_shape = (int(cfg["in_channels"]), int(cfg["img_size"]), int(cfg["img_size"]))
    kind = input_kind or _INPUT_KIND.get(cfg.get("encoding", "direct"), "analog")
    b = Builder()
    x = b.add(ir.Input, "input", (), shape=tuple(int(s) for s in input_shape), kind=kind)
    was_training = model.training
    model.eval()
    try:
        y = lower(b, model, "", x)
    finally:
        model.train(was_training)
    b.add(ir.Output, "output", (y,))
    g = b.graph
    g.metadata.update({
        "source": type(model).__name__, "arch": getattr(model, "arch", type(model).__name__),
        "config": {k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "time_steps": int(cfg.get("step", 0)) or None, "layout": "per-step, no batch axis",
    })
    if verify:
        ir.check(g)
    return g


def encoded_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's encoded input as the IR sees it: ``(T, B, *per_step_shape)``."""
    with torch.no_grad():
        e = model.encoder(x)
    return e.reshape(model.step, e.shape[0] // model.step, *e.shape[1:])


def torch_traces(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run a zoo model on raw input ``x`` -> (logits, {neuron path: spikes (T, B, ...)})."""
    from step_deploy.models import iter_neurons

    traces, hooks = {}, []
    T = model.step

    def hook(name):
        def fn(mod, inp, out):
            traces[name] = out.detach().reshape(T, out.shape[0] // T, *out.shape[1:]).clone()
        return fn

    for name, mod in iter_neurons(model):
        hooks.append(mod.register_forward_hook(hook(name)))
    try:
        model.eval()
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, traces
