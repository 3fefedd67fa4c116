"""On-grid fine-tuning (``step-train --qat-epochs``; the user's guide is ``docs/qat.md``): train the
last epochs with every synapse's folded weights and bias on the grid both integer targets use, so
the trained PyTorch model computes what the hardware computes, spike for spike.

Why: post-training quantization of the tiny digits models flips 0.1-7 % of the spikes of each
layer (a membrane within one weight or bias step of its threshold), and on 360 test digits that
moves accuracy by −1.9 to +2.8 points. No rounding rule removes it; a model already on the grid has
nothing left to round.

**Which synapses.** The IR synapses of the captured model (:func:`grid_synapses`), each made of
module rows (:class:`GridPart`): one whole module usually; SEMM's stacked experts (four modules,
one IR synapse) and EMSP halves (one module, two IR synapses) come from the lowering's
``synapse_groups``. A part's BatchNorm is the one ``fold_batchnorm`` folds into it; the deployed
weights are ``W·g``, ``g = gamma / sqrt(var + eps)`` per output row.

**The grid.** Every tensor scale of both quantizers is a power of two, so an IR synapse's folded
weights land on a power-of-two grid in float units: Loihi one exponent per synapse with even
mantissas up to 254 (step ``2^ceil(log2(A / 127))``, ``A = max|W·g|``), the FPGA one shift per
channel (a finer or equal step). So ``Q = step · round_half_even(W·g / step)``, ``|Q / step| <= 126``
(not 127: a maximum of exactly ``127·step`` plus float rounding could tip the quantizer's ``ceil``)
is exact on both. Where Loihi's scale class makes the synapse's output unit ``s_in / s`` coarser
(a class joining synapses of different ranges, or lowered for the 24-bit state), the step is that
unit (:func:`target_units`, read from the Loihi quantizer on the calibration inputs before each
epoch); the folded bias takes ``max(step, 2^bias_exp / s)``.

**Training.** :class:`OnGrid` (weights) and :class:`BiasOnGrid` (the BatchNorm's ``beta``, or the
synapse's own bias without one) are parametrizations with straight-through gradients; the
BatchNorms are frozen so ``g`` stays what the fold will use. :func:`detach` bakes the result: each
BatchNorm is folded into its synapse in place and left as an exact ``x + beta`` (mean 0,
``var = 1 - eps`` in float32, gamma 1), so PyTorch's float32 run is exact arithmetic on the grid and
decides a membrane exactly on a threshold as the integer targets do. :func:`settle` then snaps what
the final quantizer units need; :func:`grid_report` measures the distance from the grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from step_deploy import ir
from step_deploy.frontend.capture import capture
from step_deploy.frontend.seed_lowering import SYNAPSE_GROUPS_KEY
from step_deploy.passes.fold_batchnorm import fold_batchnorm
from step_deploy.train_loop import one_epoch

GRID_LEVELS = 126  # largest |Q / step|: see the module docstring
WEIGHT_BITS = 8
SYNAPSE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class GridPart:
    """Output rows ``start:stop`` of the synapse module ``synapse`` and the BatchNorm folded into
    them (``None`` if none)."""

    synapse: str
    batchnorm: Optional[str]
    start: int
    stop: int


@dataclass(frozen=True)
class GridSynapse:
    """One IR synapse (the unit the quantizers give one grid) and the module rows it is made of:
    usually all rows of one module; SEMM's stacked experts are several modules, its EMSP halves a
    row range of one (``frontend.seed_lowering.SYNAPSE_GROUPS_KEY``)."""

    name: str
    parts: tuple[GridPart, ...]


def grid_synapses(model: nn.Module) -> list[GridSynapse]:
    """The IR synapses of ``model`` with their module rows and the BatchNorms ``fold_batchnorm``
    folds into them, read from the captured IR (node names are module paths, or listed in the
    graph's ``synapse_groups``). An IR synapse whose rows cannot be traced to modules is left out."""
    g = capture(model)
    modules = dict(model.named_modules())
    groups = g.metadata.get(SYNAPSE_GROUPS_KEY, {})
    shapes = g.infer_shapes()
    folded = {}
    for bn in [n for n in g.topo_order() if isinstance(n, ir.BatchNorm)]:
        prod = g[bn.inputs[0]]
        if not isinstance(prod, (ir.Conv2d, ir.Conv1d, ir.Linear)) or len(g.consumers(prod.name)) != 1:
            continue
        rank = len(shapes[bn.name])
        axis = rank - 1 if isinstance(prod, ir.Linear) else 0
        if bn.axis % rank == axis:
            folded[prod.name] = bn.name
    out = []
    for n in g.topo_order():
        if not isinstance(n, (ir.Conv2d, ir.Conv1d, ir.Linear)):
            continue
        if n.name in groups:
            parts = tuple(GridPart(p["synapse"], p["batchnorm"] if n.name in folded else None, p["start"], p["stop"])
                          for p in groups[n.name])
        elif isinstance(modules.get(n.name), SYNAPSE_MODULES):
            bn = folded.get(n.name)
            bn = bn if isinstance(modules.get(bn), nn.modules.batchnorm._BatchNorm) else None
            parts = (GridPart(n.name, bn, 0, int(modules[n.name].weight.shape[0])),)
        else:
            continue
        if all(isinstance(modules.get(p.synapse), SYNAPSE_MODULES) for p in parts):
            out.append(GridSynapse(n.name, parts))
    return out


def _gain(bn: Optional[nn.Module], channels: int) -> torch.Tensor:
    if bn is None:
        return torch.ones(channels, dtype=torch.float64)
    gamma = bn.weight.detach().double() if bn.affine else torch.ones(channels, dtype=torch.float64)
    return gamma / torch.sqrt(bn.running_var.detach().double() + bn.eps)


def grid_step(folded: torch.Tensor, unit: float = 0.0) -> float:
    """The grid step of a synapse's folded weights: ``2^ceil(log2(max|W·g| / 127))``, or the
    target's coarser ``unit`` (see :func:`target_units`)."""
    return _step(float(folded.abs().max()) if folded.numel() else 0.0, unit)


def _step(amax: float, unit: float) -> float:
    return max(2.0 ** math.ceil(math.log2(amax / 127)) if amax > 0 else 1.0, unit)


def _rows(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (ndim - 1))


def _raw_weight(m: nn.Module) -> torch.Tensor:
    """The module's own weight parameter (not the parametrized value)."""
    return m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight


class _Group:
    """One IR synapse at training time: its parts as (module, gain rows, start, stop) and the grid
    step of all of them together (read from the modules' own parameters)."""

    def __init__(self, syn: GridSynapse, modules: dict, unit: tuple = (0.0, 0.0)):
        self.name = syn.name
        self.unit = (float(unit[0]), float(unit[1]))
        self.parts = []
        for p in syn.parts:
            m = modules[p.synapse]
            bn = modules[p.batchnorm] if p.batchnorm else None
            self.parts.append((m, _gain(bn, m.weight.shape[0])[p.start:p.stop], p.start, p.stop))

    def step(self, current: Optional[tuple] = None) -> float:
        """The grid step; ``current = (module, weight)`` uses ``weight`` for that module."""
        amax = 0.0
        for m, gain, a, b in self.parts:
            w = current[1] if current is not None and current[0] is m else _raw_weight(m)
            w = w.detach()[a:b].double()
            if w.numel():
                amax = max(amax, float((w * _rows(gain, w.ndim)).abs().max()))
        return _step(amax, self.unit[0])


class OnGrid(nn.Module):
    """Parametrization ``W -> Q / g`` of one synapse module: its folded weights ``W·g`` rounded
    (half to even) to the grid of the IR synapse each row belongs to, straight-through gradient."""

    def __init__(self, module: nn.Module, gain: torch.Tensor, segments: list):
        super().__init__()
        self._module = (module,)  # a reference, not a submodule
        self._segments = segments  # [(group, start, stop)]
        self.register_buffer("gain", gain.float())

    def steps(self, w: torch.Tensor) -> torch.Tensor:
        out = torch.ones(w.shape[0], dtype=w.dtype)
        for group, a, b in self._segments:
            out[a:b] = group.step((self._module[0], w))
        return out

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        gain = _rows(self.gain.to(w.dtype), w.ndim)
        folded = w * gain
        step = _rows(self.steps(w), w.ndim)
        q = torch.clamp(torch.round(folded.detach() / step), -GRID_LEVELS, GRID_LEVELS) * step
        return (folded + (q - folded).detach()) / gain


class BiasOnGrid(nn.Module):
    """Parametrization of the bias that lands in the folded bias: ``offset + b`` rounded, per row,
    to the row's weight grid step or the target's bias unit if coarser; straight-through gradient.
    For a BatchNorm's ``beta``: ``offset = (b0 - mean)·g`` (the rest of the folded bias, constant
    while the BatchNorm is frozen); for a synapse's own bias without one: 0."""

    def __init__(self, weights: OnGrid, offset: torch.Tensor):
        super().__init__()
        self._weights = (weights,)
        self.register_buffer("offset", offset.float())

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        weights = self._weights[0]
        w = _raw_weight(weights._module[0])
        step = weights.steps(w).to(b.dtype)
        for group, a, c in weights._segments:
            step[a:c] = torch.clamp(step[a:c], min=group.unit[1])
        total = b + self.offset.to(b.dtype)
        snapped = torch.round(total.detach() / step) * step
        return total + (snapped - total).detach() - self.offset.to(b.dtype)


def target_units(model: nn.Module, calib_x: torch.Tensor) -> dict:
    """Per IR synapse ``(weight unit, bias unit)`` in float units that the Loihi quantizer gives it
    on ``calib_x``: ``s_in / s`` (its synapse output is an integer in the unit of its scale class,
    so ``(Σ mantissa·x) << weight_exp`` with a negative exponent drops what is finer) and
    ``2^bias_exp / s``. Usually finer than the weight grid; coarser where a class joins synapses of
    different weight ranges (SDT's membrane shortcuts) or calibration lowered the class's scale
    for the 24-bit state. Empty when the model has no Loihi integer form (e.g. KLIF neurons)."""
    from step_deploy.frontend.capture import encoded_input
    from step_deploy.ir.diagnostics import IRError
    from step_deploy.passes.quantize_loihi import quantize_loihi

    graph = fold_batchnorm(capture(model))
    try:
        _, rep = quantize_loihi(graph, encoded_input(model, calib_x), steps=int(model.step))
    except (IRError, ValueError):
        return {}
    out = {}
    for name, layer in rep["layers"].items():
        if "weight_exp" in layer and layer.get("scale"):
            s = float(layer["scale"])
            out[name] = (float(layer.get("input_scale", 1.0)) / s, 2.0 ** int(layer.get("bias_exp", 0)) / s)
    return out


def _by_module(synapses: list[GridSynapse]) -> dict:
    """``{synapse module: (batchnorm module or None, [(IR synapse, start, stop)])}``."""
    out: dict = {}
    for s in synapses:
        for p in s.parts:
            bn, segs = out.setdefault(p.synapse, (p.batchnorm, []))
            segs.append((s, p.start, p.stop))
    return out


def attach(model: nn.Module, synapses: list[GridSynapse], units: Optional[dict] = None) -> None:
    """Freeze the folded BatchNorms and put every synapse's weights and folded bias on the grid."""
    modules = dict(model.named_modules())
    units = units or {}
    groups = {s.name: _Group(s, modules, units.get(s.name, (0.0, 0.0))) for s in synapses}
    for name, (bn_name, segs) in _by_module(synapses).items():
        m = modules[name]
        bn = modules[bn_name] if bn_name else None
        gain = _gain(bn, m.weight.shape[0])
        if bn is not None:
            for p in bn.parameters():
                p.requires_grad_(False)
            if m.bias is not None:
                m.bias.requires_grad_(False)
        weights = OnGrid(m, gain, [(groups[s.name], a, b) for s, a, b in segs])
        parametrize.register_parametrization(m, "weight", weights)
        if bn is not None and bn.affine:
            b0 = m.bias.detach().double() if m.bias is not None else 0.0
            offset = (b0 - bn.running_mean.detach().double()) * gain
            parametrize.register_parametrization(bn, "bias", BiasOnGrid(weights, offset))
        elif bn is None and m.bias is not None:
            parametrize.register_parametrization(m, "bias", BiasOnGrid(weights, torch.zeros(m.weight.shape[0])))


def detach(model: nn.Module, synapses: list[GridSynapse]) -> None:
    """Bake the on-grid weights into plain parameters (same modules, same state_dict keys). A
    synapse with an affine BatchNorm gets the folded on-grid weights ``Q`` and the BatchNorm
    becomes an exact ``x + b`` (mean 0, ``var = 1 - eps`` in float32, gamma 1, beta the folded
    on-grid bias; its own bias, if any, 0): the same function, and PyTorch's float32 run of it is
    then exact arithmetic on the grid (no ``Q / g`` rounded to float32 and multiplied back), so it
    decides a membrane that lands exactly on the threshold as the integer targets do."""
    modules = dict(model.named_modules())
    by_module = _by_module(synapses)
    biases = [(modules[name], modules[bn] if bn else None) for name, (bn, _) in by_module.items()]
    # the biases first: their parametrization reads the weights' grid (still parametrized)
    for m, bn in biases:
        for owner in (m, bn):
            if owner is not None and parametrize.is_parametrized(owner, "bias"):
                parametrize.remove_parametrizations(owner, "bias", leave_parametrized=True)
    for m, _ in biases:
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    for m, bn in biases:
        for owner in (m, bn):
            if owner is not None:
                for p in owner.parameters():
                    p.requires_grad_(True)
    for name, (bn, segs) in by_module.items():
        if bn is not None and modules[bn].affine:
            _fold_in_place(modules[name], modules[bn], _row_steps(modules, name, segs))


def _row_steps(modules: dict, name: str, segs: list) -> torch.Tensor:
    """Per output row of module ``name``: the grid step of the IR synapse the row belongs to."""
    out = torch.ones(modules[name].weight.shape[0], dtype=torch.float64)
    for s, a, b in segs:
        out[a:b] = _Group(s, modules).step()
    return out


def _fold_in_place(m: nn.Module, bn: nn.Module, steps: torch.Tensor) -> None:
    gain = _gain(bn, m.weight.shape[0])
    folded = m.weight.detach().double() * _rows(gain, m.weight.ndim)
    b0 = m.bias.detach().double() if m.bias is not None else 0.0
    bias = (b0 - bn.running_mean.detach().double()) * gain + bn.bias.detach().double()
    with torch.no_grad():
        m.weight.copy_(torch.round(folded / _rows(steps, m.weight.ndim)) * _rows(steps, m.weight.ndim))
        if m.bias is not None:
            m.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(float(torch.tensor(1.0 - bn.eps, dtype=torch.float32)))
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.round(bias / steps) * steps)


def _freeze_batchnorms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def fine_tune_on_grid(model: nn.Module, loader, epochs: int, lr: float, weight_decay: float = 0.0,
                      label_smoothing: float = 0.0, progress=None, calib_x: Optional[torch.Tensor] = None) -> list[float]:
    """Fine-tune ``model`` for ``epochs`` with its synapse weights on the integer grid (module
    docstring); returns the mean training loss per epoch. Afterwards the weights are baked in.
    With ``calib_x`` the grid also respects the Loihi quantizer's units (:func:`target_units`),
    computed before each epoch."""
    synapses = grid_synapses(model)
    opt = sched = None
    history = []
    for _ in range(epochs):
        attach(model, synapses, target_units(model, calib_x) if calib_x is not None else None)
        if opt is None:
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
        try:
            model.train()
            _freeze_batchnorms(model)
            history.append(one_epoch(model, loader, opt, sched, label_smoothing))
        finally:
            detach(model, synapses)
        if progress is not None:
            progress(history[-1])
    model.eval()
    return history


def _folded_parts(model: nn.Module, p: GridPart):
    """(weight, bias) parameters holding a baked part's folded weights and bias: the synapse's
    weight and the BatchNorm's beta (the synapse's own bias is 0 after :func:`detach`), or the
    synapse's own weight and bias without a BatchNorm; ``None`` for a non-affine BatchNorm."""
    modules = dict(model.named_modules())
    m = modules[p.synapse]
    if p.batchnorm:
        bn = modules[p.batchnorm]
        return (m.weight, bn.bias) if bn.affine else None
    return m.weight, m.bias


def settle(model: nn.Module, calib_x: torch.Tensor, rounds: int = 3) -> dict:
    """After the fine-tuning: put each synapse's baked folded weights and bias on the units the
    Loihi quantizer gives them on ``calib_x`` (:func:`target_units`; the calibration inputs
    step-export uses by default: 256 samples of the training split), where those are coarser than
    what the last epoch used (the scales move a little as the weights do). Rounds half to even, so
    each value moves by at most half a unit; repeats until the quantizer's units stop moving
    (``rounds`` at most). Returns, per round, what moved."""
    synapses = grid_synapses(model)
    modules = dict(model.named_modules())
    history = []
    for _ in range(rounds):
        units = target_units(model, calib_x)
        moved = {}
        for s in synapses:
            if s.name not in units:
                continue
            w_unit, b_unit = units[s.name]
            step = _Group(s, modules, (w_unit, 0.0)).step()
            for p in s.parts:
                held = _folded_parts(model, p)
                if held is None:
                    continue
                for what, t, unit in (("weight", held[0], step), ("bias", held[1], max(step, b_unit))):
                    if t is None:
                        continue
                    v = t.detach()[p.start:p.stop].double()
                    snapped = torch.round(v / unit) * unit
                    if not torch.equal(snapped, v):
                        with torch.no_grad():
                            t[p.start:p.stop] = snapped.to(t.dtype)
                        moved[f"{s.name}.{what}"] = {"unit": unit, "max_move": float((snapped - v).abs().max())}
        history.append(moved)
        if not moved:
            break
    return {"rounds": history}


def grid_report(model: nn.Module) -> dict:
    """Per IR synapse: its grid step and the largest distance of its folded weights and folded
    bias from the grid, in steps (float64, as ``fold_batchnorm`` computes them)."""
    modules = dict(model.named_modules())
    out = {}
    for s in grid_synapses(model):
        ws, bs = [], []
        for p in s.parts:
            m = modules[p.synapse]
            bn = modules[p.batchnorm] if p.batchnorm else None
            gain = _gain(bn, m.weight.shape[0])[p.start:p.stop]
            w = m.weight.detach().double()[p.start:p.stop]
            ws.append((w * _rows(gain, w.ndim)).reshape(len(w), -1))
            bias = m.bias.detach().double()[p.start:p.stop] if m.bias is not None else torch.zeros(len(w), dtype=torch.float64)
            if bn is not None:
                beta = bn.bias.detach().double()[p.start:p.stop] if bn.affine else 0.0
                bias = (bias - bn.running_mean.detach().double()[p.start:p.stop]) * gain + beta
            bs.append(bias)
        folded, bias = torch.cat(ws), torch.cat(bs)
        step = grid_step(folded)
        r, rb = folded / step, bias / step
        out[s.name] = {"step": step, "parts": len(s.parts),
                       "max_off_grid": float((r - torch.round(r)).abs().max()),
                       "bias_max_off_grid": float((rb - torch.round(rb)).abs().max()),
                       "max_level": int(torch.round(r).abs().max())}
    return out


__all__ = ["GridPart", "GridSynapse", "OnGrid", "BiasOnGrid", "attach", "detach", "fine_tune_on_grid", "grid_report",
           "grid_step", "grid_synapses", "settle", "target_units", "GRID_LEVELS", "WEIGHT_BITS"]
