"""Loihi ``fixed_pt``: the node types and constants of the format ``'loihi-fixed_pt'``.

IR-level data (imports only ``ir``); the integer op functions live in
``simulators.golden_loihi``, which registers the format. Produced by ``passes.quantize_loihi``;
executed by the integer golden model (``simulators.golden``), the definition that Lava
(``exporters.lava_export``) must reproduce bit for bit. All values are integers (executors use
int64 tensors); the arithmetic follows lava-nc 0.10.0's ``fixed_pt`` process models
(``PyDenseModelBitAcc``, ``PyLifModelBitAcc``).

Units. A synapse node outputs the *synaptic input* ``a`` (Lava's ``a_out``/``a_in``); the neuron
left-shifts it by 6 into its 24-bit state (``u = a << 6``), so ``v`` and the threshold
``vth << 6`` live in "state units". A float tensor ``X`` is represented by the integer ``A`` with
``X ≈ A / scale``; the per-tensor ``scale`` (a power of two, or an exact integer factor for
counts) is recorded in the quantization report, not in the nodes: the nodes alone define the
integer network.

Core ops reused unchanged on integers: Add, Mul, Sum, MatMul (``scale`` must be 1), MaxPool2d,
Reshape, Flatten, Transpose, Delay, Output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from step_deploy.ir.nodes import Conv1d, Conv2d, Linear, Node, register

#: the format's registry name, recorded in a quantized graph's metadata
FORMAT_NAME = "loihi-fixed_pt"

LOIHI_COMPARES = (">", ">=")
#: bounds of a legal 8-bit Loihi weight mantissa per sign mode (lava ``clip_weights``)
WEIGHT_RANGE = {"mixed": (-256, 254), "excitatory": (0, 255), "inhibitory": (-255, 0)}
BIAS_MANT_BITS = 13  # Loihi neuron bias mantissa (signed)
UV_BITS = 24  # Loihi u and v registers
VTH_BITS = 17  # Loihi threshold mantissa (unsigned)


def sign_mode(weight: np.ndarray) -> str:
    """Lava's ``determine_sign_mode``: 'excitatory' (all >= 0), 'inhibitory' (all <= 0) or 'mixed'."""
    if weight.size == 0 or weight.min() >= 0:
        return "excitatory"
    return "inhibitory" if weight.max() <= 0 else "mixed"


def weight_problems(weight: np.ndarray) -> list[str]:
    """Why ``weight`` is not a legal Loihi mantissa array (empty when it is): integers within the
    sign mode's 8-bit range and, with mixed signs, even (Loihi drops the LSB)."""
    out = []
    if weight.dtype.kind not in "iu":
        out.append(f"dtype {weight.dtype} is not integer")
        return out
    mode = sign_mode(weight)
    lo, hi = WEIGHT_RANGE[mode]
    if weight.size and (weight.min() < lo or weight.max() > hi):
        out.append(f"{mode} weights must lie in [{lo}, {hi}], got [{weight.min()}, {weight.max()}]")
    if mode == "mixed" and np.any(weight % 2):
        out.append("mixed-sign weights must be even (Loihi truncates the LSB)")
    return out


class _FixedSynapse:
    """Fields shared by the fixed-point synapses: integer mantissas ``weight`` with the shared
    exponent ``weight_exp`` and an integer bias ``bias_mant << bias_exp`` (in ``a`` units)."""

    def effective_bias(self) -> Optional[np.ndarray]:
        if self.bias_mant is None:
            return None
        return np.asarray(self.bias_mant, np.int64) << int(self.bias_exp)


@register
@dataclass(frozen=True, eq=False)
class QuantizeInput(Node):
    """Analog input to graded integer spikes, no state:
    ``Y[t] = clamp(round_half_even(X[t] · scale), lo, hi)`` with ``[lo, hi] = [0, 2^bits - 1]``
    (``signed=False``) or ``[-2^(bits-1), 2^(bits-1) - 1]``. Runs on the host; the chip sees the
    integers as graded spikes of ``bits`` bits."""

    scale: float = 1.0
    bits: int = 8
    signed: bool = False

    def infer_shape(self, in_shapes):
        return in_shapes[0]

    @property
    def bounds(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1


@register
@dataclass(frozen=True, eq=False)
class FixedLinear(_FixedSynapse, Node):
    """Loihi synapses on the last axis (lava ``Dense``/``Sparse`` fixed_pt), no state:
    ``A[t][..., o] = (Σ_i W[o, i] · X[t][..., i]) << weight_exp + (bias_mant[o] << bias_exp)``,
    with ``>>`` (floor) for a negative ``weight_exp``. ``weight`` holds legal 8-bit mantissas
    (see :func:`weight_problems`). On Lava the bias is a graded input that starts when the data
    arrives; on a chip it is the neuron bias ``bias_mant << (bias_exp + 6)``."""

    weight: np.ndarray = None
    weight_exp: int = 0
    bias_mant: Optional[np.ndarray] = None
    bias_exp: int = 0

    def infer_shape(self, in_shapes):
        return Linear.infer_shape(self, in_shapes)


@register
@dataclass(frozen=True, eq=False)
class FixedConv2d(_FixedSynapse, Node):
    """Integer 2-D convolution (unrolled into Loihi synapses), no state:
    ``A[t][o, y, x] = (Σ_{i,ky,kx} W[o, i, ky, kx] · X[t][i, y·s + ky·d - p, x·s + kx·d - p]) << weight_exp
    + (bias_mant[o] << bias_exp)`` (zero padding, grouped when ``groups > 1``)."""

    weight: np.ndarray = None
    weight_exp: int = 0
    bias_mant: Optional[np.ndarray] = None
    bias_exp: int = 0
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def infer_shape(self, in_shapes):
        return Conv2d.infer_shape(self, in_shapes)


@register
@dataclass(frozen=True, eq=False)
class FixedConv1d(_FixedSynapse, Node):
    """Integer 1-D convolution, no state:
    ``A[t][o, l] = (Σ_{i,k} W[o, i, k] · X[t][i, l·s + k·d - p]) << weight_exp + (bias_mant[o] << bias_exp)``."""

    weight: np.ndarray = None
    weight_exp: int = 0
    bias_mant: Optional[np.ndarray] = None
    bias_exp: int = 0
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def infer_shape(self, in_shapes):
        return Conv1d.infer_shape(self, in_shapes)


@register
@dataclass(frozen=True, eq=False)
class LoihiLIF(Node):
    """Loihi CUBA LIF neuron (lava-nc ``PyLifModelBitAcc``), elementwise, stateful, ``u = v = 0``
    before step 0, ``A[t]`` the integer synaptic input:

    ``u[t] = wrap24(trunc0(u[t-1] · (4096 - (du + 1)) / 4096) + (A[t] << 6))``
    ``v'   = sat24(trunc0(v[t-1] · (4096 - dv) / 4096) + u[t])``
    ``S[t] = v' > (vth << 6)``  (``compare='>'``, any Loihi / Lava's ``LIF``) or
    ``S[t] = v' >= (vth << 6)`` (``compare='>='``, Loihi 2 programmable neuron only)
    ``v[t] = v' · (1 - S[t])``   (reset to 0; ``u`` is not reset)

    ``trunc0`` rounds toward zero; ``wrap24`` is Lava's single ±2^24 correction beyond
    ``(-2^23, 2^23]``; ``sat24`` clips to ``±(2^23 - 1)``. STEP's LIF ``H = V + (X - V)/2`` is
    ``du = 4095`` (no current memory), ``dv = 2048``. Spikes are 0/1 integers."""

    du: int = 4095
    dv: int = 2048
    vth: int = 1
    compare: str = ">"
    stateful: ClassVar[bool] = True

    def __post_init__(self):
        if self.compare not in LOIHI_COMPARES:
            raise ValueError(f"LoihiLIF {self.name}: compare={self.compare!r}, expected one of {LOIHI_COMPARES}")
        for k in ("du", "dv"):
            if not 0 <= int(getattr(self, k)) <= 4095:
                raise ValueError(f"LoihiLIF {self.name}: {k}={getattr(self, k)} is not a 12-bit decay (0..4095)")
        if not 0 <= int(self.vth) < (1 << VTH_BITS):
            raise ValueError(f"LoihiLIF {self.name}: vth={self.vth} does not fit {VTH_BITS} unsigned bits")

    def infer_shape(self, in_shapes):
        return in_shapes[0]


@register
@dataclass(frozen=True, eq=False)
class TemporalSum(Node):
    """Integer readout (stateful accumulator, Lava ``Accumulator``):
    ``A[t] = A[t-1] + X[t]``, ``Y[t] = A[t]``. Replaces ``TemporalMean``: the float mean at step
    ``t`` is ``Y[t] / ((t + 1) · scale)``."""

    stateful: ClassVar[bool] = True

    def infer_shape(self, in_shapes):
        return in_shapes[0]


FIXED_SYNAPSES = (FixedLinear, FixedConv2d, FixedConv1d)
FIXED_NODE_TYPES = (QuantizeInput, FixedLinear, FixedConv2d, FixedConv1d, LoihiLIF, TemporalSum)

#: the numbers that define the format (lava-nc 0.10.0 ``fixed_pt``); see ``LoihiLIF`` for the equations
CONSTANTS = {
    "weight_bits": 8, "weight_range": WEIGHT_RANGE, "bias_mant_bits": BIAS_MANT_BITS, "state_bits": UV_BITS,
    "vth_bits": VTH_BITS, "input_shift": 6, "decay_bits": 12, "compares": LOIHI_COMPARES,
    "decay_rounding": "toward zero", "current_overflow": "wrap (one ±2^24 correction)",
    "voltage_overflow": "saturate to ±(2^23 - 1)", "reset": "to 0 (current not reset)",
    "synapse_output_bits": 16,
}

__all__ = [c.__name__ for c in FIXED_NODE_TYPES] + [
    "FORMAT_NAME", "CONSTANTS", "FIXED_SYNAPSES", "FIXED_NODE_TYPES", "LOIHI_COMPARES", "WEIGHT_RANGE",
    "BIAS_MANT_BITS", "UV_BITS",
    "VTH_BITS", "sign_mode", "weight_problems"]
