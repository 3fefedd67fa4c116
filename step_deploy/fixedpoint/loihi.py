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
Reshape, Flatten, Transpose, Delay, Output, and the seed attention ops (``simulators.integer_ops``):
ReLU (``max(x, 0)``, scale kept), Shiftmax (integer scores at scale 1 in, ``2^(F+L)`` out) and
TemporalBlockSum (block sum, scale kept; a window op: the golden model runs it node-major, the
mesh simulator block-major, and Lava streams it with a latency of ``block - 1`` steps
(``exporters.lava_processes.BlockSum``, counted by ``passes.delay_balance``); a step-by-step executor
without that latency refuses it with :func:`refuse_window_ops`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from step_deploy.ir.nodes import Conv1d, Conv2d, Linear, Node, register

#: the format's registry name, recorded in a quantized graph's metadata
FORMAT_NAME = "loihi-fixed_pt"

LOIHI_COMPARES = (">", ">=")
LOIHI_RESETS = ("hard", "soft")
LOIHI_FIRE_RULES = ("threshold", "round", "round_normalized", "ternary")
GRADED_SPIKE_BITS = 24  # Lava's CPU models carry 24-bit graded payloads (Loihi 2: up to 32)
#: bounds of a legal 8-bit Loihi weight mantissa per sign mode (lava ``clip_weights``)
WEIGHT_RANGE = {"mixed": (-256, 254), "excitatory": (0, 255), "inhibitory": (-255, 0)}
BIAS_MANT_BITS = 13  # Loihi neuron bias mantissa (signed)
UV_BITS = 24  # Loihi u and v registers
VTH_BITS = 17  # Loihi threshold mantissa (unsigned)


#: float IR ops with no exact integer form: refused (naming the node) by the integer quantizers of both
#: formats (``passes.loihi_scales.prepare``) and by the Loihi constraint check; float stages run them
NO_INTEGER_FORM = {
    "KLIFNeuron": "its learned gain k multiplies the membrane every step; a fixed-point gain would be an "
                  "approximation, which is not built",
    "EIFNeuron": "its exponential term delta_t·exp((V - theta_rh)/delta_t) has no exact integer form",
    "CLIFNeuron": "its reset subtracts sigmoid(M) of a second state, which has no exact integer form",
    "GLIFNeuron": "its per-step learned parameters and gates (sigmoids) have no exact integer form",
    "TemporalLinear": "PSN's linear map across time steps is non-causal (Y[0] needs X[T-1]): it needs a "
                      "T-step buffer, which is not built for streaming targets",
    "Heaviside": "PSN's stateless spike reads a TemporalLinear (non-causal over T), which is not built for "
                 "streaming targets",
}
NO_INTEGER_FORM_FIX = ("run it on a float stage (reference, ONNX, NIR), or use LIF/IF/PLIF neurons "
                       "(hard or soft reset, ILIF or NILIF spikes) for integer targets")


def window_op_problem(node, executor: str) -> str:
    """The one-line refusal of a window op (``TemporalBlockSum``) by a step-by-step ``executor`` that
    cannot pay its latency (Lava pays it with ``lava_processes.BlockSum``; the mesh simulator runs it
    block-major): op, why and what to do (the caller's diagnostic names the node)."""
    b = int(node.block)
    return (f"{node.op}(block={b}) cannot run on {executor}: it is non-causal inside a block of {b} "
            f"steps (Y[t] needs X up to the block's last step), which needs block-major execution or a latency of "
            f"{b - 1} step(s) with a buffer, and {executor} runs every process step by step; run the golden model "
            f"(which evaluates it node-major), or use block=1 (per-step attention)")


def refuse_window_ops(graph, executor: str, backend=None) -> None:
    """Raise ``ir.UnsupportedOpError`` (an ``IRError`` whose text is one diagnostic line per node)
    for every window op (``TemporalBlockSum``) of ``graph``: ``executor`` runs every process step by
    step with no latency for it (Lava does not call this: it streams the block sum with a latency of
    ``block - 1`` steps). ``backend``: the executor's registered ``ir.Backend``, if any."""
    from step_deploy.ir.attention_nodes import WINDOW_OPS
    from step_deploy.ir.backends import Backend, UnsupportedOpError
    from step_deploy.ir.diagnostics import Diagnostic

    bad = [n for n in graph.topo_order() if n.op in WINDOW_OPS]
    if bad:
        raise UnsupportedOpError(backend or Backend(executor, frozenset(), "integer"),
                                 [Diagnostic("window-op", n.name, window_op_problem(n, executor)) for n in bad])


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


def programmable_features(n) -> list[str]:
    """What a neuron (an IR ``Neuron`` or a ``LoihiLIF``: fields ``reset``, ``fire``, ``max_level``,
    ``round_d``) needs of Loihi 2's programmable neuron beyond the stock LIF rule (empty for the
    stock rule): the constraint check and the quantization report state the same list."""
    out = []
    if n.reset == "soft":
        out.append("soft reset (v - S·θ)")
    if n.fire == "ternary" or getattr(n, "output", None) == "ternary":
        out.append("ternary spikes -1/0/+1 (signed 2-bit graded spikes)")
    if n.fire == "round":
        out.append(f"multi-level spikes 0..{n.max_level} (ILIF: round half to even of v/θ)")
    elif n.fire == "round_normalized":
        out.append(f"NILIF firing (2v > {n.round_d}·θ)")
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
    before step 0, ``A[t]`` the integer synaptic input, ``θ = vth << 6``:

    ``u[t] = wrap24(trunc0(u[t-1] · (4096 - (du + 1)) / 4096) + (A[t] << 6))``
    ``v'   = sat24(trunc0(v[t-1] · (4096 - dv) / 4096) + u[t])``

    fire (``fire``):
      ``'threshold'``: ``S[t] = v' > θ`` (``compare='>'``, any Loihi / Lava's ``LIF``) or
                       ``S[t] = v' >= θ`` (``compare='>='``, Loihi 2 programmable neuron only)
      ``'round'`` (STEP's ILIF, integer spikes 0..max_level, Loihi 2 graded spikes):
                       ``S[t] = clamp(rne_div(v', θ), 0, max_level)``
      ``'round_normalized'`` (STEP's NILIF, D = ``round_d``, binary): ``S[t] = 2·v' > D·θ``
      ``'ternary'`` (signed spikes -1/0/+1, Loihi 2 graded spikes):
                       ``S[t] = +1 if v' >= θ; -1 if v' <= -θ; else 0`` (``compare='>='``), or
                       ``S[t] = +1 if v' > θ; -1 if v' < -θ; else 0`` (``compare='>'``)
    reset (``reset``):
      ``'hard'``: ``v[t] = v' · (S[t] == 0)``   (to 0; ``u`` is not reset; Lava's ``LIF``)
      ``'soft'``: ``v[t] = v' - S[t] · θ``     (Loihi 2 programmable neuron only)

    ``rne_div(a, b)`` is the exact integer round-half-to-even of ``a / b`` (``q = floor(a / b)``,
    ``r = a - q·b``; ``q + 1`` when ``2r > b`` or ``2r == b`` and ``q`` is odd), the integer
    twin of ``torch.round(H / θ)``. ``trunc0`` rounds toward zero; ``wrap24`` is Lava's single
    ±2^24 correction beyond ``(-2^23, 2^23]``; ``sat24`` clips to ``±(2^23 - 1)``. STEP's LIF
    ``H = V + (X - V)/2`` is ``du = 4095`` (no current memory), ``dv = 2048``. Spikes are integers
    0/1 (0..max_level for ``fire='round'``). The defaults are the stock Loihi neuron."""

    du: int = 4095
    dv: int = 2048
    vth: int = 1
    compare: str = ">"
    reset: str = "hard"
    fire: str = "threshold"
    max_level: int = 1
    round_d: int = 0
    stateful: ClassVar[bool] = True

    def __post_init__(self):
        who = f"LoihiLIF {self.name}"
        if self.compare not in LOIHI_COMPARES:
            raise ValueError(f"{who}: compare={self.compare!r}, expected one of {LOIHI_COMPARES}")
        if self.reset not in LOIHI_RESETS:
            raise ValueError(f"{who}: reset={self.reset!r}, expected one of {LOIHI_RESETS}")
        if self.fire not in LOIHI_FIRE_RULES:
            raise ValueError(f"{who}: fire={self.fire!r}, expected one of {LOIHI_FIRE_RULES}")
        for k in ("du", "dv"):
            if not 0 <= int(getattr(self, k)) <= 4095:
                raise ValueError(f"{who}: {k}={getattr(self, k)} is not a 12-bit decay (0..4095)")
        if not 0 <= int(self.vth) < (1 << VTH_BITS):
            raise ValueError(f"{who}: vth={self.vth} does not fit {VTH_BITS} unsigned bits")
        if self.fire == "threshold" and int(self.max_level) != 1:
            raise ValueError(f"{who}: fire='threshold' sends 0/1 spikes, so max_level must be 1 "
                             f"(got {self.max_level}); use fire='round' for integer spikes")
        if self.fire == "round" and not 1 <= int(self.max_level) < (1 << GRADED_SPIKE_BITS):
            raise ValueError(f"{who}: max_level={self.max_level} must lie in 1..2^{GRADED_SPIKE_BITS}-1 "
                             f"(a graded spike of {GRADED_SPIKE_BITS} bits)")
        if self.fire == "round_normalized" and int(self.round_d) < 1:
            raise ValueError(f"{who}: fire='round_normalized' (NILIF) needs round_d >= 1, got {self.round_d}")
        if self.fire == "ternary" and int(self.max_level) != 1:
            raise ValueError(f"{who}: fire='ternary' sends -1/0/+1 spikes, so max_level must be 1 "
                             f"(got {self.max_level})")
        if self.fire != "threshold" and int(self.vth) < 1:
            raise ValueError(f"{who}: fire={self.fire!r} needs a positive threshold (it divides by it or fires at "
                             f"±θ): vth must be >= 1")

    def infer_shape(self, in_shapes):
        return in_shapes[0]

    @property
    def stock(self) -> bool:
        """True when Lava's (and Loihi 1's) built-in LIF computes it: ``>``, hard reset, 0/1 spikes."""
        return self.compare == ">" and self.reset == "hard" and self.fire == "threshold"

    @property
    def spike_bits(self) -> int:
        """Bits of one spike: 1, ``ceil(log2(max_level + 1))`` for integer spikes, 2 for ternary (signed)."""
        return 2 if self.fire == "ternary" else max(1, int(self.max_level).bit_length())

    @property
    def output(self) -> str:
        """The spike alphabet, named as the IR ``Neuron``'s: ``ternary``, ``integer`` (ILIF) or ``binary``."""
        return {"ternary": "ternary", "round": "integer"}.get(self.fire, "binary")

    @property
    def signed(self) -> bool:
        """True for ternary spikes (-1 travels as a signed graded payload)."""
        return self.fire == "ternary"


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
    "voltage_overflow": "saturate to ±(2^23 - 1)", "reset": "to 0 (current not reset); soft: v - S·(vth << 6)",
    "fire_rules": LOIHI_FIRE_RULES, "round": "half to even, exact integer division (rne_div)",
    "ternary": "S = +1 if v >= θ, -1 if v <= -θ (strict with compare '>'); 2-bit signed graded spikes",
    "graded_spike_bits": GRADED_SPIKE_BITS,
    "synapse_output_bits": 16,
}

__all__ = [c.__name__ for c in FIXED_NODE_TYPES] + [
    "FORMAT_NAME", "CONSTANTS", "FIXED_SYNAPSES", "FIXED_NODE_TYPES", "LOIHI_COMPARES", "LOIHI_RESETS",
    "LOIHI_FIRE_RULES", "GRADED_SPIKE_BITS", "NO_INTEGER_FORM", "NO_INTEGER_FORM_FIX", "WEIGHT_RANGE",
    "BIAS_MANT_BITS", "UV_BITS", "window_op_problem", "refuse_window_ops", "programmable_features",
    "VTH_BITS", "sign_mode", "weight_problems"]
