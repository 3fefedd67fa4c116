"""FPGA integer arithmetic: the node types and constants of the format ``'fpga-int'``.

IR-level data (imports only ``ir`` and the Loihi input quantizer it shares); the integer op
functions live in ``simulators.golden_fpga``, which registers the format. Produced by
``passes.quantize_fpga``; executed by the integer golden model (``simulators.golden``), the one
definition the HLS C simulation must reproduce bit for bit. All values are integers (executors
use int64 tensors); every shift, rounding and saturation is stated in the node's docstring, in
``ap_int``/``ap_fixed`` terms where HLS has a name for it.

Units. Every tensor ``X`` is represented by integers ``A ≈ X · scale`` with a power-of-two
``scale`` per tensor (spikes: 1; spike counts: exact integers, the attention's 0.125 folded into
the count's scale 8). A synapse's output is already in the *membrane units* of the neuron it
feeds (the neuron's membrane integer is ``M = H · scale``), so a neuron adds its input without a
multiply. Tensors joined by an ``Add`` (spike-map residuals; SDT's membrane shortcut, where two
synapse outputs meet) share one scale, so the add is an exact integer add. Scales are recorded
in the quantization report, not in the nodes: the nodes alone define the integer network.

Core ops reused unchanged on integers (exact): Add, Mul (AND of spikes), Sum (column sums /
popcounts), MatMul (``scale`` must be 1; Q·Kᵀ and (Q·Kᵀ)·V on binary spikes are AND + popcount),
MaxPool2d, Reshape, Flatten, Transpose, Delay, Output, and the seed attention designs' ReLU (scale
preserving), Shiftmax (integer scores at scale 1 in, scale ``2^(frac_bits + ceil(log2 n))`` out) and
TemporalBlockSum (a window op; the golden model runs such a graph node-major), as
``simulators.integer_ops`` defines them (contract §2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from step_deploy.ir.nodes import Conv1d, Conv2d, Linear, Node, register

from .loihi import QuantizeInput

#: the format's registry name, recorded in a quantized graph's metadata
FORMAT_NAME = "fpga-int"

WEIGHT_BITS_RANGE = (2, 8)
MEMBRANE_BITS_RANGE = (16, 25)
READOUT_BITS = 32
#: ``FpgaLIF.decay``: the tau = 2 charge as a shift, or no leak (IF)
DECAYS = ("input", "state", "none")
#: ``FpgaLIF.reset`` and ``FpgaLIF.fire`` (the IR neuron's names)
RESETS = ("hard", "soft")
FIRE_RULES = ("threshold", "round", "round_normalized", "ternary")
#: the largest integer spike (``fire='round'``) and NILIF ``round_d``: 8-bit spike streams
MAX_LEVEL = 255


def signed_bounds(bits: int) -> tuple[int, int]:
    """``[-2^(bits-1), 2^(bits-1) - 1]``: the range of an ``ap_int<bits>``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@register
@dataclass(frozen=True, eq=False)
class FpgaQuantizeInput(QuantizeInput):
    """Analog input (direct-coded pixels) to ``bits``-bit integers, no state:
    ``Y[t] = clamp(round_half_even(X[t] · scale), lo, hi)`` (``AP_RND_CONV``, ``AP_SAT``) with
    ``[lo, hi] = [0, 2^bits - 1]`` (``signed=False``, ``ap_uint<bits>``) or
    ``[-2^(bits-1), 2^(bits-1) - 1]`` (``signed=True``, ``ap_int<bits>``: chosen when the
    calibration data is signed). ``scale`` is a power of two; clipped values are counted
    (``input_clip``). Runs where the pixels arrive (host or the first layer's input stream)."""


_SYNAPSE_EQUATION = """
    ``acc[o] = sat_acc_bits(Σ W[o, ...] · X[t][...] + bias[o])``
    ``Y[t][o] = sat_out_bits((acc[o] + 2^(k[o]-1)) >> k[o])`` for ``k[o] = shift[o] > 0``
    (round half up, ``AP_RND``; ``>>`` is an arithmetic shift, a floor),
    ``Y[t][o] = sat_out_bits(acc[o] << -k[o])`` for ``k[o] <= 0`` (exact).
    ``sat_b`` clamps to ``[-2^(b-1), 2^(b-1) - 1]`` (``AP_SAT``) and counts the clamped values
    (``acc_overflow``, ``out_sat``). The float weight is ``W · 2^-k[o] · in_scale / out_scale``:
    a power-of-two scale per output channel (one for the layer when quantized per layer)."""


@dataclass(frozen=True, eq=False)
class _FpgaSynapse(Node):
    """Fields shared by the FPGA synapses: ``weight`` (signed ``weight_bits``-bit integers),
    ``shift`` (one int per output channel), integer ``bias`` in accumulator units (or None),
    ``acc_bits`` (accumulator width) and ``out_bits`` (the consuming membrane's width)."""

    weight: np.ndarray = None
    shift: np.ndarray = None
    bias: Optional[np.ndarray] = None
    weight_bits: int = 8
    acc_bits: int = 32
    out_bits: int = 25

    def shifts(self) -> np.ndarray:
        return np.asarray(self.shift, np.int64).reshape(-1)

    def effective_bias(self) -> Optional[np.ndarray]:
        return None if self.bias is None else np.asarray(self.bias, np.int64)


@register
@dataclass(frozen=True, eq=False)
class FpgaLinear(_FpgaSynapse):
    __doc__ = "Integer synapses on the last axis, no state:" + _SYNAPSE_EQUATION

    def infer_shape(self, in_shapes):
        return Linear.infer_shape(self, in_shapes)


@register
@dataclass(frozen=True, eq=False)
class FpgaConv2d(_FpgaSynapse):
    __doc__ = ("Integer 2-D convolution (zero padding, grouped when ``groups > 1``), no state, the sum over "
               "``i, ky, kx`` of ``W[o, i, ky, kx] · X[t][i, y·s + ky·d - p, x·s + kx·d - p]``:"
               + _SYNAPSE_EQUATION)

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def infer_shape(self, in_shapes):
        return Conv2d.infer_shape(self, in_shapes)


@register
@dataclass(frozen=True, eq=False)
class FpgaConv1d(_FpgaSynapse):
    __doc__ = ("Integer 1-D convolution, no state, the sum over ``i, k`` of "
               "``W[o, i, k] · X[t][i, l·s + k·d - p]``:" + _SYNAPSE_EQUATION)

    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def infer_shape(self, in_shapes):
        return Conv1d.infer_shape(self, in_shapes)


@register
@dataclass(frozen=True, eq=False)
class FpgaLIF(Node):
    """STEP's LIF / IF family (tau = 2 or no leak) on a signed ``membrane_bits`` membrane,
    elementwise, stateful, ``M[-1] = 0``, ``A[t]`` the input in membrane units, ``θ = threshold``:

    ``a = A[t] << input_shift`` (exact: finer membrane units where ``V_th · scale`` is not an integer)
    ``decay='input'`` (STEP, ``decay_input=True``): ``H = sat((M[t-1] + a) >> 1)``
    ``decay='state'`` (``decay_input=False``):      ``H = sat((M[t-1] >> 1) + a)``
    ``decay='none'``  (IF):                          ``H = sat(M[t-1] + a)``

    fire (``fire``):
      ``'threshold'``:        ``S[t] = H >= θ``                                   (0/1)
      ``'round'`` (STEP's ILIF, D = ``max_level``): ``S[t] = clamp(rne_div(H, θ), 0, D)``  (0..D)
      ``'round_normalized'`` (STEP's NILIF, D = ``round_d``): ``S[t] = 2·H > D·θ``  (0/1)
      ``'ternary'`` (A²OS²A's V, BSA's Q/K):  ``S[t] = +1 if H >= θ, -1 if H <= -θ, else 0``  (-1/0/+1)
    reset (``reset``):
      ``'hard'``: ``M[t] = H · (S[t] == 0)``   (to 0)
      ``'soft'``: ``M[t] = H - S[t] · θ``      (subtract; never leaves the membrane's range:
                  ``S > 0`` needs ``H >= (S - ½)·θ``, so ``M >= -θ/2``)

    ``rne_div(a, b)`` is the exact integer round-half-to-even of ``a / b`` (``q = floor(a / b)``,
    ``r = a - q·b``; ``q + 1`` when ``2r > b`` or ``2r == b`` and ``q`` is odd), the integer twin
    of STEP's ``torch.round(H / θ)``; NILIF's ``round_half_even(clamp(H/θ, 0, D) / D)`` is 1
    exactly when ``H/θ > D/2`` (the tie ``H/θ = D/2`` rounds to the even 0), i.e. ``2·H > D·θ``.
    Spikes of ``fire='round'`` are ``ceil(log2(D + 1))``-bit unsigned integers on the stream
    (:attr:`spike_bits`), ternary spikes 2-bit signed values (``ap_int<2>``: a synapse they feed adds
    or subtracts its weight, no multiplier); the others are one bit. A ternary neuron's hard reset
    clears the membrane where ``S != 0`` and its soft reset is ``M = H - S·θ`` (``H + θ`` after a
    -1). The defaults are STEP's LIF (hard reset to 0, fire on ``>=``).

    ``>>`` is an arithmetic right shift: a floor (``AP_TRN``); ``sat`` clamps to
    ``[-2^(membrane_bits-1), 2^(membrane_bits-1) - 1]`` (``AP_SAT``) and counts the clamped
    values (``membrane_sat``). The sum ``M + A`` needs one bit more than the membrane.

    Exactness: with integer inputs the floor is exact against the float LIF run on the same
    inputs. ``floor((floor(x) + a) / 2) = floor((x + a) / 2)`` for integer ``a``, so ``H`` is
    the float membrane ``h = H_f · scale`` floored at every step (a soft reset subtracts the
    integer ``S·θ``, which commutes with the floor), and for an integer threshold
    ``floor(h) >= θ  ⇔  h >= θ``: the threshold spikes are those of the float LIF (``threshold =
    V_th · scale · 2^input_shift``; the attention LIF's 0.5 against counts of scale 8 gives
    ``threshold = 4``; a 0.5 threshold on spikes of scale 1 takes ``input_shift = 1``,
    ``threshold = 1``). The rounding rules compare ``H`` with the half-way points ``(k + ½)·θ``,
    which are not all integers: ``round`` and ``round_normalized`` give the float neuron's spike
    exactly when ``h`` is an integer (IF, ``decay='none'``, on integer inputs: exact) and may
    differ when the LIF's halving leaves a fraction and a half-way point lies in ``[floor(h), h)``.
    The ternary rule's positive side is exact like ``'threshold'``; its negative side compares the
    floored ``H <= -θ`` (contract: the Loihi and FPGA golden models both do), which a leaky membrane
    can reach with ``h`` in ``(-θ, -θ + 1)``: exact for IF, within one membrane LSB otherwise. Rounding examples:
    ``θ = 2``, ``h = 1.5``: the float ``round(0.75) = 1``, the integer ``rne_div(1, 2) = 0``
    (a tie, to even); NILIF with ``D·θ = 2``, ``h = 1.5``: float ``3 > 2`` fires, integer ``2 > 2``
    does not. Finer membrane units (``input_shift``) make such cases rarer, never impossible."""

    threshold: int = 1
    membrane_bits: int = 16
    decay: str = "input"
    input_shift: int = 0
    reset: str = "hard"
    fire: str = "threshold"
    max_level: int = 1
    round_d: int = 0
    stateful: ClassVar[bool] = True

    def __post_init__(self):
        who = f"FpgaLIF {self.name}"
        if self.decay not in DECAYS:
            raise ValueError(f"{who}: decay={self.decay!r}, expected one of {DECAYS}")
        if self.reset not in RESETS:
            raise ValueError(f"{who}: reset={self.reset!r}, expected one of {RESETS}")
        if self.fire not in FIRE_RULES:
            raise ValueError(f"{who}: fire={self.fire!r}, expected one of {FIRE_RULES}")
        if not 0 <= int(self.input_shift) <= 30:
            raise ValueError(f"{who}: input_shift={self.input_shift} outside 0..30")
        lo, hi = 2, 62
        if not lo <= int(self.membrane_bits) <= hi:
            raise ValueError(f"{who}: membrane_bits={self.membrane_bits} outside {lo}..{hi}")
        lo_m, hi_m = signed_bounds(int(self.membrane_bits))
        if not lo_m <= int(self.threshold) <= hi_m:
            raise ValueError(f"{who}: threshold {self.threshold} does not fit a signed "
                             f"{self.membrane_bits}-bit membrane; widen membrane_bits")
        if self.fire != "round" and int(self.max_level) != 1:
            raise ValueError(f"{who}: fire={self.fire!r} sends 0/1 spikes, so max_level must be 1 "
                             f"(got {self.max_level}); use fire='round' for integer spikes")
        if self.fire == "round" and not 1 <= int(self.max_level) <= MAX_LEVEL:
            raise ValueError(f"{who}: max_level={self.max_level} outside 1..{MAX_LEVEL} "
                             f"(spikes of at most {MAX_LEVEL.bit_length()} bits)")
        if self.fire == "round_normalized" and not 1 <= int(self.round_d) <= MAX_LEVEL:
            raise ValueError(f"{who}: fire='round_normalized' needs round_d (NILIF's D) in 1..{MAX_LEVEL}, "
                             f"got {self.round_d}")
        if self.fire == "ternary" and int(self.threshold) < 1:
            raise ValueError(f"{who}: fire='ternary' needs a threshold >= 1 (got {self.threshold}): with "
                             "θ <= 0 the +1 and -1 regions overlap")
        if self.fire not in ("threshold", "ternary") and int(self.threshold) < 1:
            raise ValueError(f"{who}: fire={self.fire!r} divides by the threshold, which must be >= 1 "
                             f"(got {self.threshold})")

    @property
    def spike_bits(self) -> int:
        """Bits of one spike on the stream: ``ceil(log2(max_level + 1))`` (1 for 0/1 spikes, 2 for
        signed ternary spikes)."""
        if self.fire == "ternary":
            return 2
        return max(1, int(self.max_level).bit_length())

    @property
    def spike_range(self) -> tuple[int, int]:
        """The smallest and largest spike value: ``(-1, 1)`` ternary, else ``(0, max_level)``."""
        return (-1, 1) if self.fire == "ternary" else (0, int(self.max_level))

    def infer_shape(self, in_shapes):
        return in_shapes[0]


@register
@dataclass(frozen=True, eq=False)
class FpgaTemporalSum(Node):
    """Integer readout (stateful accumulator): ``A[t] = sat_bits(A[t-1] + X[t])``, ``Y[t] = A[t]``
    (``AP_SAT``, counted as ``readout_sat``). Replaces ``TemporalMean``: the float mean at step
    ``t`` is ``Y[t] / ((t + 1) · scale)``; the 1/T and the scale are applied in software only to
    print logits (the argmax needs neither)."""

    bits: int = READOUT_BITS
    stateful: ClassVar[bool] = True

    def infer_shape(self, in_shapes):
        return in_shapes[0]


FPGA_SYNAPSES = (FpgaLinear, FpgaConv2d, FpgaConv1d)
FPGA_NODE_TYPES = (FpgaQuantizeInput, FpgaLinear, FpgaConv2d, FpgaConv1d, FpgaLIF, FpgaTemporalSum)

#: the numbers that define the format; see the node docstrings for the equations
CONSTANTS = {
    "weight_bits": 8, "weight_bits_range": WEIGHT_BITS_RANGE, "weight_scale": "power of two per output channel "
    "(or per layer)", "membrane_bits_range": MEMBRANE_BITS_RANGE, "readout_bits": READOUT_BITS,
    "input_bits": 8, "input_rounding": "half to even (AP_RND_CONV), saturate",
    "synapse_rounding": "round half up: (acc + 2^(k-1)) >> k (AP_RND)", "synapse_overflow": "saturate (AP_SAT)",
    "lif": "tau = 2: H = (M + A) >> 1 (floor, AP_TRN); fire H >= threshold; hard reset to 0",
    "membrane_overflow": "saturate (AP_SAT), counted", "compare": ">=", "reset": "to 0 (hard) or M = H - S*threshold (soft)",
    "fire": "threshold: H >= threshold; round (ILIF): clamp(rne_div(H, threshold), 0, max_level); "
            "round_normalized (NILIF): 2*H > round_d*threshold; ternary: +1 if H >= threshold, -1 if "
            "H <= -threshold, else 0 (2-bit signed spikes; synapses add or subtract)",
    "rne_div": "exact integer round half to even of a / b (b > 0)", "max_level": MAX_LEVEL,
}

__all__ = [c.__name__ for c in FPGA_NODE_TYPES] + [
    "FORMAT_NAME", "CONSTANTS", "FPGA_SYNAPSES", "FPGA_NODE_TYPES", "DECAYS", "RESETS", "FIRE_RULES", "MAX_LEVEL",
    "WEIGHT_BITS_RANGE",
    "MEMBRANE_BITS_RANGE", "READOUT_BITS", "signed_bounds"]
