"""The core IR ops on integers, shared by every fixed-point format the golden model runs.

One small function per op, ``(node, inputs, state, t) -> int64 tensor``, like
``reference_ops``. Layout and elementwise ops reuse the float definitions unchanged (they are
exact on integers); ``MatMul`` (``scale`` must be 1) and ``MaxPool2d`` are evaluated in float64,
exact below 2^53.

**Exact float32 fast path** (:func:`exact_product`): a synapse or ``MatMul`` runs in float32 only
when a bound computed from the actual operands proves every product and partial sum an integer of
magnitude below 2^24 (``max over outputs of Σ|w| × max|x|``; for ``MatMul`` ``K × max|a| × max|b|``),
where float32 represents every integer exactly, so any summation order gives the exact sum; and only
while float32 runs in IEEE single precision (:func:`float32_is_ieee`: no bf16/tf32 matmul modes,
oneDNN enabled so that no Winograd convolution is chosen). Otherwise float64, as before. A float
computation on integer-valued operands only ever produces integer-valued floats (an exact integer
below 2^53, or a rounded one at or above it, which is an integer too), so converting such a result
to int64 needs no ``round``. Float-only ops (convolutions with float weights, float neurons, means, scales)
are not here: a quantization pass replaces them with its format's node types, and the golden
model refuses a graph that still has them before it runs (``ir.require_ops``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from step_deploy import ir
from step_deploy.errors import StepDeployError

from .reference_ops import FLOAT_OPS


class GoldenError(StepDeployError, ValueError):
    """A node the integer model cannot run (a float op left in a quantized graph)."""


def f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def i64(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).to(torch.int64)


#: float32 represents every integer of magnitude below this exactly
F32_EXACT = 1 << 24


def float32_is_ieee() -> bool:
    """Whether float32 matmuls and convolutions run in IEEE single precision here: the matmul
    precision is ``'highest'``, no oneDNN reduced-precision mode is set, and oneDNN is on (without
    it, a batched 3x3 float32 convolution may go to NNPACK, whose Winograd transform is not exact)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mk = torch.backends.mkldnn
    if not (mk.is_available() and mk.enabled):
        return False
    for obj in (torch.backends, mk, getattr(mk, "matmul", None), getattr(mk, "conv", None)):
        if str(getattr(obj, "fp32_precision", "none")) not in ("none", "ieee"):
            return False
    return True


@dataclass(frozen=True)
class IntWeight:
    """An integer weight array prepared once per run: float64, float32 (None unless every weight is
    an integer below 2^24 and, when prepared, :func:`float32_is_ieee`) and the bound factor ``max over
    outputs of Σ|w|`` (axis 0 = outputs)."""

    f64: torch.Tensor
    f32: Optional[torch.Tensor]
    integral: bool
    row_abs_sum: int

    @classmethod
    def of(cls, array) -> "IntWeight":
        w = np.asarray(array, np.float64)
        integral = bool(np.all(np.isfinite(w)) and np.all(w == np.round(w)))
        rows = np.abs(w).reshape(w.shape[0], -1).sum(axis=1) if w.size else np.zeros(1)
        row_abs_sum = int(rows.max()) if integral and rows.size else -1
        fits = (integral and np.abs(w).max(initial=0) < F32_EXACT and row_abs_sum < F32_EXACT
                and float32_is_ieee())
        t64 = torch.from_numpy(w)
        return cls(t64, t64.to(torch.float32) if fits else None, integral, row_abs_sum)


def int_weight(state: dict, key: str, array) -> Optional[IntWeight]:
    """``array`` as an :class:`IntWeight`, converted once per run into the node's state."""
    if key not in state:
        state[key] = None if array is None else IntWeight.of(array)
    return state[key]


def small_to_f32(x: torch.Tensor) -> torch.Tensor:
    """An integer tensor with every ``|x| < 2^24`` as float32, exactly (int64 goes through int32:
    the same values, by conversions that are several times faster than int64 -> float32)."""
    return x.to(torch.int32).to(torch.float32) if x.dtype == torch.int64 else x.to(torch.float32)


def f32_to_i64(y: torch.Tensor, bound: float = F32_EXACT) -> torch.Tensor:
    """A float32 tensor of integers with every ``|y| < bound`` as int64, exactly (through int32, the
    faster conversion, when ``bound <= 2^31``)."""
    return y.to(torch.int32).to(torch.int64) if bound <= 2 ** 31 else y.to(torch.int64)


def max_abs(x: torch.Tensor) -> int:
    """``max |x|`` of an integer tensor as a Python int (0 when empty)."""
    if x.numel() == 0:
        return 0
    lo, hi = torch.aminmax(x)
    return max(-int(lo), int(hi))


def exact_product(fn, x: torch.Tensor, w: IntWeight) -> torch.Tensor:
    """``fn(x, w)`` (a linear map: ``F.linear``, ``F.conv2d``...) of an integer tensor ``x`` as int64,
    exactly: in float32 when ``max over outputs of Σ|w| × max|x| < 2^24`` proves every partial sum an
    integer float32 holds (see the module docstring), else in float64 as before."""
    if x.is_floating_point():  # not an integer input: the float64 definition, rounded
        return i64(fn(f64(x), w.f64))
    if w.f32 is not None:
        m = max_abs(x)
        if m < F32_EXACT and m * w.row_abs_sum < F32_EXACT:
            return f32_to_i64(fn(small_to_f32(x), w.f32))
    y = fn(f64(x), w.f64)
    return y.to(torch.int64) if w.integral else i64(y)


@dataclass(frozen=True)
class FusedAffine:
    """A synapse's ``floor((W·x + c) / 2^k)`` (``c`` and ``k`` per output channel; a negative ``k``
    multiplies) in float32 in one pass: the weights and ``c`` are integers below 2^24, scaling by a
    power of two is exact and so is ``floor`` of an exact value. :meth:`run` takes it only when
    ``Σ|w| × max|x| + max|c| < 2^24`` bounds every partial sum; build it with :func:`fused_affine`."""

    w32: torch.Tensor
    c32: Optional[torch.Tensor]
    scale: Optional[np.ndarray]  # 2^-k per output channel, -38 <= k <= 100; None when every k is 0
    row_abs_sum: int
    c_abs_max: int

    @property
    def y_bound(self) -> float:
        """A bound on ``|y|``: ``|z| < 2^24`` times the largest scale."""
        return float(F32_EXACT) * (max(1.0, float(self.scale.max())) if self.scale is not None else 1.0)

    def to_int64(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` of :meth:`run` as int64, exactly."""
        return f32_to_i64(y, self.y_bound)

    def run(self, fn, x: torch.Tensor, channel_axis: int):
        """``(z, y)``: ``z = W·x + c`` and ``y = floor(z / 2^k)``, float32 tensors of exact integers,
        or None when the bound does not hold (or ``x`` is not an integer tensor)."""
        if x.is_floating_point():
            return None
        m = max_abs(x)
        if m >= F32_EXACT or m * self.row_abs_sum + self.c_abs_max >= F32_EXACT:
            return None
        z = fn(small_to_f32(x), self.w32, self.c32)
        if self.scale is None:
            return z, z
        shape = [1] * z.dim()
        shape[channel_axis] = -1
        return z, torch.floor(z * torch.from_numpy(self.scale).reshape(shape))


def fused_affine(w, c=None, k=None) -> Optional[FusedAffine]:
    """The :class:`FusedAffine` of integer weights ``w`` (axis 0 = outputs), per-channel (or scalar)
    integer offsets ``c`` and right shifts ``k`` (negative: left shifts); None when float32 cannot
    hold it exactly (a non-integer or too large value, a shift outside [-38, 100], so that a result
    below 2^24 · 2^38 stays an exact int64). The caller runs it only while :func:`float32_is_ieee`."""
    w = np.asarray(w, np.float64)
    outs = w.shape[0] if w.ndim else 0
    if w.size == 0 or not (np.all(np.isfinite(w)) and np.all(w == np.round(w))):
        return None
    row = int(np.abs(w).reshape(outs, -1).sum(axis=1).max())
    if np.abs(w).max() >= F32_EXACT or row >= F32_EXACT:
        return None
    c64 = None if c is None else np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (outs,))
    if c64 is not None and not (np.all(np.isfinite(c64)) and np.all(c64 == np.round(c64))):
        return None
    c_max = 0 if c64 is None else int(np.abs(c64).max())
    k64 = None if k is None else np.broadcast_to(np.asarray(k, np.int64).reshape(-1), (outs,))
    if c_max >= F32_EXACT or (k64 is not None and (k64.min() < -38 or k64.max() > 100)):
        return None
    scale = None if k64 is None or not k64.any() else np.ldexp(np.float32(1), -k64).astype(np.float32)
    return FusedAffine(torch.from_numpy(w.astype(np.float32)),
                       None if c64 is None else torch.from_numpy(c64.astype(np.float32)), scale, row, c_max)


_PER_NODE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _content(x):
    """A value as comparable content: an array as its dtype, shape and bytes."""
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, np.ascontiguousarray(x).tobytes())
    return x


def per_node(node, key: str, inputs: tuple, build):
    """``build()`` for ``node``, kept across runs while the node lives and ``inputs`` (the arrays and
    numbers ``build`` reads) are equal, byte for byte, to those it was built from."""
    content = tuple(_content(x) for x in inputs)
    kept = _PER_NODE.setdefault(node, {}).get(key)
    if kept is not None and kept[0] == content:
        return kept[1]
    value = build()
    _PER_NODE[node][key] = (content, value)
    return value


def weight(state: dict, key: str, array) -> Optional[torch.Tensor]:
    """An integer weight array as a float64 tensor, converted once per run into the node's state."""
    if key not in state:
        state[key] = None if array is None else torch.from_numpy(np.asarray(array, np.float64))
    return state[key]


def shift(acc: torch.Tensor, exp: int) -> torch.Tensor:
    """``acc << exp``, or ``acc >> -exp`` (a floor, as numpy's) for a negative ``exp``."""
    return acc << exp if exp >= 0 else acc >> (-exp)


def op_matmul(n: ir.MatMul, xs, state, t):
    if n.scale != 1.0:
        raise GoldenError(f"{n.name}: MatMul scale {n.scale} in an integer graph (the quantization pass folds it)")
    a, b = xs
    if n.transpose_a:
        a = a.transpose(-2, -1)
    if n.transpose_b:
        b = b.transpose(-2, -1)
    if a.is_floating_point() or b.is_floating_point():
        return i64(f64(a) @ f64(b))
    ma, mb = max_abs(a), max_abs(b)
    if "f32_ieee" not in state:  # checked once per run
        state["f32_ieee"] = float32_is_ieee()
    if ma < F32_EXACT and mb < F32_EXACT and a.shape[-1] * ma * mb < F32_EXACT and state["f32_ieee"]:
        return f32_to_i64(small_to_f32(a) @ small_to_f32(b))
    return (f64(a) @ f64(b)).to(torch.int64)  # integer-valued floats: no rounding needed


def op_maxpool2d(n: ir.MaxPool2d, xs, state, t):
    y = F.max_pool2d(f64(xs[0]), tuple(n.kernel_size), tuple(n.stride), tuple(n.padding))
    return i64(y) if xs[0].is_floating_point() else y.to(torch.int64)  # the max is one of the integer inputs


def ceil_log2(x: torch.Tensor) -> torch.Tensor:
    """``ceil(log2 x)`` of positive int64 values, exactly: the bit length of ``x - 1``."""
    y = x - 1
    bits = torch.zeros_like(y)
    while bool((y > 0).any()):
        bits = bits + (y > 0).to(torch.int64)
        y = y >> 1
    return bits


def op_shiftmax(n: ir.Shiftmax, xs, state, t):
    """Integer Shiftmax on integer scores (scale 1): ``a = 2^(F + Δ)`` (0 below ``Δ = -F``),
    ``E = ceil(log2 Σ a)``, ``Y = a << (F + L - E)`` with ``L = ceil(log2 n)``: the float Shiftmax times
    ``2^(F + L)``, exactly (``ir.Shiftmax.out_frac_bits``)."""
    x = xs[0]
    if x.is_floating_point():
        raise GoldenError(f"{n.name}: Shiftmax needs integer scores (a product of spikes), got float values")
    ax = n.axis + 1 if n.axis >= 0 else n.axis
    f = int(n.frac_bits)
    total_bits = n.out_frac_bits(tuple(x.shape[1:]))
    delta = x - x.amax(dim=ax, keepdim=True)
    keep = delta >= -f
    a = torch.where(keep, torch.ones_like(x) << torch.clamp(delta + f, min=0), torch.zeros_like(x))
    e = ceil_log2(a.sum(dim=ax, keepdim=True))
    return a << (total_bits - e)


#: core ops whose float definition is exact on integers
EXACT_ON_INTEGERS = ("Input", "Output", "Mul", "Sum", "Add", "Reshape", "Transpose", "Flatten", "Delay", "ReLU",
                     "TemporalBlockSum")

#: the core IR ops every fixed-point format runs (the others only exist in float graphs)
CORE_INTEGER_OPS = {k: FLOAT_OPS[k] for k in EXACT_ON_INTEGERS}
CORE_INTEGER_OPS.update({"MatMul": op_matmul, "MaxPool2d": op_maxpool2d, "Shiftmax": op_shiftmax})

__all__ = ["GoldenError", "CORE_INTEGER_OPS", "EXACT_ON_INTEGERS", "F32_EXACT", "IntWeight", "FusedAffine",
           "fused_affine", "per_node", "small_to_f32", "f32_to_i64", "f64", "i64", "weight", "int_weight", "max_abs",
           "exact_product", "float32_is_ieee", "shift", "op_matmul", "op_maxpool2d", "op_shiftmax", "ceil_log2"]
