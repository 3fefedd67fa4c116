"""Surrogate-gradient spike functions.

Forward pass: the Heaviside step of the (membrane - threshold) difference,
``x >= 0`` by default (STEP's ``Sigmoid_Grad``) or ``x > 0`` when ``strict``
(BrainCog's ``QGateGrad``/``AtanGrad``, Lava, snnTorch).  Backward pass: the
derivative of a smooth stand-in selected by name.

Each surrogate is an ``nn.Module`` holding ``alpha`` as a frozen
``nn.Parameter`` so that a neuron's ``state_dict`` contains
``<node>.act_fun.alpha`` exactly like STEP's neurons.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "Surrogate",
    "SigmoidSurrogate",
    "ATanSurrogate",
    "RectangleSurrogate",
    "SURROGATES",
    "make_surrogate",
    "heaviside",
]


def heaviside(x: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """``1.0`` where ``x >= 0`` (``x > 0`` if ``strict``), else ``0.0``; dtype of ``x``."""
    return (x > 0).to(x.dtype) if strict else (x >= 0).to(x.dtype)


class _SpikeFn(torch.autograd.Function):
    """Heaviside forward, ``grad_fn(x, alpha)`` backward."""

    @staticmethod
    def forward(ctx, x, alpha, strict, grad_fn):  # noqa: D401 - autograd API
        ctx.save_for_backward(x, alpha)
        ctx.grad_fn = grad_fn
        return heaviside(x, strict)

    @staticmethod
    def backward(ctx, grad_out):
        x, alpha = ctx.saved_tensors
        return grad_out * ctx.grad_fn(x, alpha.to(x.dtype)), None, None, None


def _sigmoid_grad(x: torch.Tensor, alpha) -> torch.Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1.0 - s)


def _atan_grad(x: torch.Tensor, alpha) -> torch.Tensor:
    # d/dx [ atan(pi/2 * alpha * x) / pi + 1/2 ]
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def _rectangle_grad(x: torch.Tensor, alpha) -> torch.Tensor:
    # box of width 1/alpha and height alpha (unit area) centred on the threshold
    return alpha * (x.abs() < 0.5 / alpha).to(x.dtype)


class Surrogate(nn.Module):
    """Base class: Heaviside forward with a named surrogate derivative.

    Args:
        alpha: sharpness of the surrogate derivative (stored as ``alpha``,
            a ``requires_grad=False`` parameter).
        strict: fire on ``x > 0`` instead of ``x >= 0``.
    """

    name = "base"

    def __init__(self, alpha: float = 4.0, strict: bool = False):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)), requires_grad=False)
        self.strict = bool(strict)

    @staticmethod
    def grad(x: torch.Tensor, alpha) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return heaviside(x, self.strict)
        return _SpikeFn.apply(x, self.alpha.detach(), self.strict, type(self).grad)

    def extra_repr(self) -> str:
        return f"alpha={float(self.alpha):g}, strict={self.strict}"


class SigmoidSurrogate(Surrogate):
    """``grad = alpha * sig(alpha x) * (1 - sig(alpha x))`` (STEP default, alpha=4)."""

    name = "sigmoid"
    grad = staticmethod(_sigmoid_grad)


class ATanSurrogate(Surrogate):
    """``grad = (alpha/2) / (1 + (pi/2 * alpha * x)^2)`` (SpikingJelly/BrainCog ATan)."""

    name = "atan"
    grad = staticmethod(_atan_grad)


class RectangleSurrogate(Surrogate):
    """``grad = alpha`` for ``|x| < 1/(2 alpha)``, else 0 (straight-through box)."""

    name = "rectangle"
    grad = staticmethod(_rectangle_grad)


SURROGATES = {
    "sigmoid": SigmoidSurrogate,
    "atan": ATanSurrogate,
    "rectangle": RectangleSurrogate,
}


def make_surrogate(name: str = "sigmoid", alpha: float = 4.0, strict: bool = False) -> Surrogate:
    """Build a surrogate by name (``sigmoid``, ``atan``, ``rectangle``)."""
    key = str(name).lower()
    if key not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; known: {sorted(SURROGATES)}")
    return SURROGATES[key](alpha=alpha, strict=strict)


# --------------------------------------------------------------------------- STEP's special spike functions
# (``cls/models/utils/surrogate.py``): plain functions, no ``alpha`` parameter in any state_dict.


class _RectangleSpike(torch.autograd.Function):
    """CLIF's ``rectangle``: forward ``x >= 0``; backward ``1/vth`` where ``|x| <= vth/2``, else 0."""

    @staticmethod
    def forward(ctx, x, vth):  # noqa: D401 - autograd API
        ctx.save_for_backward(x)
        ctx.vth = float(vth)
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        box = (x.abs() <= ctx.vth / 2).to(x.dtype) / ctx.vth
        return grad_out * box, None


class _SpikeActExtended(torch.autograd.Function):
    """GLIF's ``SpikeAct_extended``: forward ``x > 0`` (strict); backward 1 where ``|x| < 0.5``."""

    @staticmethod
    def forward(ctx, x):  # noqa: D401 - autograd API
        ctx.save_for_backward(x)
        return heaviside(x, strict=True)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * (x.abs() < 0.5).to(x.dtype)


class _HeavisideParametricSigmoid(torch.autograd.Function):
    """HDLIF's output spike: forward ``x >= v_th``; backward ``k·σ(k(x - v_th))·(1 - σ(k(x - v_th)))``."""

    @staticmethod
    def forward(ctx, x, k, v_th):  # noqa: D401 - autograd API
        ctx.save_for_backward(x)
        ctx.k, ctx.v_th = float(k), float(v_th)
        return (x >= v_th).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.k * (x - ctx.v_th))
        return grad_out * ctx.k * s * (1 - s), None, None


def rectangle_spike(x: torch.Tensor, vth: float = 1.0) -> torch.Tensor:
    """STEP ``Rectangle().spiking_function(x, alpha=vth)`` (CLIF): ``x >= 0`` with a box gradient."""
    return _RectangleSpike.apply(x, vth)


def spike_act_extended(x: torch.Tensor) -> torch.Tensor:
    """STEP ``SpikeAct_extended`` (GLIF): ``x > 0`` with gradient ``|x| < 0.5``."""
    return _SpikeActExtended.apply(x)


def heaviside_parametric_sigmoid(x: torch.Tensor, k: float, v_th: float) -> torch.Tensor:
    """STEP ``HeavisideParametricSigmoid`` (HDLIF output): ``x >= v_th`` with a sigmoid gradient of slope ``k``."""
    return _HeavisideParametricSigmoid.apply(x, k, v_th)


__all__ += ["rectangle_spike", "spike_act_extended", "heaviside_parametric_sigmoid"]
