"""The integer op functions of the FPGA format (``step_deploy.fixedpoint.fpga``) and its
registration as the fixed-point format ``'fpga-int'``.

Arithmetic: synapses ``acc = sat(W·X + bias)``, ``Y = sat((acc + 2^(k-1)) >> k)`` per output
channel (round half up); neurons ``H = sat((M + (A << j)) >> 1)`` (tau = 2, floor), spike on
``H >= threshold`` (or STEP's ILIF/NILIF rounding: ``clamp(rne_div(H, θ), 0, D)``, ``2H > Dθ``; or
ternary ``+1 if H >= θ, -1 if H <= -θ``),
reset to 0 or by subtraction (``H - S·θ``); readout ``A[t] = sat32(A[t-1] + X[t])``. Every saturation is
counted (``run_golden(..., events=True)``), never silent: see :data:`EVENTS`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from step_deploy.fixedpoint import fpga as fx
from step_deploy.fixedpoint.format import FixedPointFormat, count_event, register_format

from .golden_loihi import _bias, quantize_input
from .integer_ops import FusedAffine, exact_product, float32_is_ieee, fused_affine, i64, int_weight, per_node

EVENTS = {
    "input_clip": "analog input clamped to its bits (FpgaQuantizeInput)",
    "acc_overflow": "a synapse accumulator clamped to acc_bits (FpgaLinear/Conv)",
    "out_sat": "a synapse output clamped to out_bits, the consuming membrane's width (FpgaLinear/Conv)",
    "membrane_sat": "a membrane clamped to membrane_bits (FpgaLIF)",
    "readout_sat": "the readout sum clamped to its bits (FpgaTemporalSum)",
    "max_abs": "the largest magnitude seen (not an error)",
}


def saturate(x: torch.Tensor, bits: int, state: dict, event: str) -> torch.Tensor:
    """Clamp to a signed ``bits``-bit range (``AP_SAT``), counting the clamped values as ``event``."""
    lo, hi = fx.signed_bounds(int(bits))
    if x.numel():
        x_lo, x_hi = torch.aminmax(x)
        if int(x_lo) >= lo and int(x_hi) <= hi:  # nothing to clamp: no event, the values unchanged
            return x
    y = torch.clamp(x, lo, hi)
    count_event(state, event, y != x)
    return y


def round_shift(acc: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-channel ``(acc + 2^(k-1)) >> k`` for ``k > 0`` (round half up, ``AP_RND``), ``acc << -k``
    for ``k <= 0``; ``k`` broadcasts against ``acc``."""
    pos = k.clamp(min=0)
    half = torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))
    return torch.where(k > 0, (acc + half) >> pos, acc << (-k).clamp(min=0))


def _channel_shift(n, state, rank: int, channel_axis: int) -> torch.Tensor:
    if "k" not in state:
        shape = [1] * rank
        shape[channel_axis] = -1
        state["k"] = torch.from_numpy(n.shifts()).reshape(shape)
    return state["k"]


def _round_shift_terms(k: torch.Tensor, state: dict):
    """``(half, pos, neg)`` with ``round_shift(acc, k) == ((acc + half) >> pos) << neg``, computed once
    per run (``neg`` None when every ``k >= 0``, the usual case)."""
    if "k_terms" not in state:
        pos = k.clamp(min=0)
        half = torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))
        neg = (-k).clamp(min=0)
        state["k_terms"] = (half, pos, neg if bool((neg > 0).any()) else None)
    return state["k_terms"]


def _synapse(n, acc: torch.Tensor, state: dict, channel_axis: int) -> torch.Tensor:
    acc = i64(acc) if acc.is_floating_point() else acc
    b = _bias(n, state, acc.dim(), channel_axis)
    acc = saturate(acc + b if b is not None else acc, n.acc_bits, state, "acc_overflow")
    k = _channel_shift(n, state, acc.dim(), channel_axis)
    half, pos, neg = _round_shift_terms(k, state)
    y = (acc + half) >> pos  # round_shift(acc, k): for k > 0 this, for k <= 0 half = pos = 0 and ...
    if neg is not None:
        y = y << neg  # ... the left shift
    return saturate(y, n.out_bits, state, "out_sat")


def _fused(n, state) -> Optional[FusedAffine]:
    """The synapse as one float32 pass: ``floor((W·x + bias + half) / 2^k)``, ``half = 2^(k-1)`` for
    ``k > 0`` else 0 (``round_shift``; see ``integer_ops.FusedAffine``), built once per run; None
    when float32 cannot hold it."""
    if "fused" not in state:
        k = np.broadcast_to(n.shifts(), (n.weight.shape[0],))
        half = np.where(k > 0, np.left_shift(1, np.maximum(k - 1, 0)), 0)
        b = n.effective_bias()

        def build():
            return fused_affine(n.weight, half if b is None else np.asarray(b, np.int64).reshape(-1) + half, k)

        fused = per_node(n, "fused", (n.weight, b, n.shifts()), build)
        state["fused"] = fused if fused is not None and float32_is_ieee() else None
        state["half_max"] = int(half.max(initial=0))
    return state["fused"]


def _synapse_op(n, x: torch.Tensor, state: dict, fn, channel_axis: int) -> torch.Tensor:
    """``_synapse`` of ``fn(x, W)``; in one float32 pass (``_fused``) when exact and nothing
    saturates, else as defined (``exact_product`` and ``_synapse``)."""
    fused = _fused(n, state)
    zy = fused.run(fn, x, channel_axis) if fused is not None else None
    if zy is not None:
        z, y = zy
        lo, hi = fx.signed_bounds(int(n.acc_bits))
        z_lo, z_hi = torch.aminmax(z)  # z = acc + bias + half, half >= 0: acc + bias lies in [z_lo - half_max, z_hi]
        if int(z_lo) - state["half_max"] >= lo and int(z_hi) <= hi:
            return saturate(fused.to_int64(y), n.out_bits, state, "out_sat")
    acc = exact_product(lambda a, w: fn(a, w, None), x, int_weight(state, "w", n.weight))
    return _synapse(n, acc, state, channel_axis)


def op_quantize_input(n: fx.FpgaQuantizeInput, xs, state, t):
    y = quantize_input(n, xs[0])
    x = xs[0] if xs[0].is_floating_point() else xs[0].to(torch.float32)
    count_event(state, "input_clip", torch.round(x * n.scale) != y)  # clamped iff not the rounded value
    return y


def op_fpga_linear(n: fx.FpgaLinear, xs, state, t):
    return _synapse_op(n, xs[0], state, F.linear, xs[0].dim() - 1)


def op_fpga_conv2d(n: fx.FpgaConv2d, xs, state, t):
    return _synapse_op(n, xs[0], state, lambda x, w, b: F.conv2d(x, w, b, tuple(n.stride), tuple(n.padding),
                                                                 tuple(n.dilation), n.groups), 1)


def op_fpga_conv1d(n: fx.FpgaConv1d, xs, state, t):
    return _synapse_op(n, xs[0], state, lambda x, w, b: F.conv1d(x, w, b, n.stride, n.padding, n.dilation,
                                                                 n.groups), 1)


def lif_charge(n: fx.FpgaLIF, m: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The unsaturated ``H`` of :class:`FpgaLIF` (floor shifts)."""
    if n.decay == "input":
        return (m + a) >> 1
    if n.decay == "state":
        return (m >> 1) + a
    return m + a


def rne_div(a: torch.Tensor, b: int) -> torch.Tensor:
    """Round-half-to-even of ``a / b`` for int64 ``a`` and an integer ``b > 0``, exactly:
    ``q = floor(a / b)``, ``r = a - q·b``, up by one when ``2r > b`` or ``2r == b`` and ``q`` is odd."""
    q = torch.div(a, b, rounding_mode="floor")
    r2 = 2 * (a - q * b)
    return q + ((r2 > b) | ((r2 == b) & ((q & 1) == 1))).to(q.dtype)


def lif_fire(n: fx.FpgaLIF, h: torch.Tensor) -> torch.Tensor:
    """The spikes ``S`` (int64) of the saturated membrane ``H`` under ``n.fire`` (see ``FpgaLIF``)."""
    thr = int(n.threshold)
    if n.fire == "round":
        return torch.clamp(rne_div(h, thr), 0, int(n.max_level))
    if n.fire == "round_normalized":
        return (2 * h > int(n.round_d) * thr).to(torch.int64)
    if n.fire == "ternary":  # +1 at or above θ, -1 at or below -θ (2-bit signed spikes)
        return (h >= thr).to(torch.int64) - (h <= -thr).to(torch.int64)
    return (h >= thr).to(torch.int64)


def op_fpga_lif(n: fx.FpgaLIF, xs, state, t):
    a = xs[0].to(torch.int64) << int(n.input_shift)
    m = state.get("m")
    h = saturate(lif_charge(n, torch.zeros_like(a) if m is None else m, a), n.membrane_bits, state, "membrane_sat")
    if n.fire == "threshold" and n.reset == "hard":  # STEP's LIF: the fast path
        s = h >= int(n.threshold)
        state["m"] = h * ~s  # the reset: 0 where it spiked (a product with 0/1, exact)
        return s.to(torch.int64)
    s = lif_fire(n, h)
    state["m"] = h - s * int(n.threshold) if n.reset == "soft" else h * (s == 0)
    return s


def op_fpga_temporal_sum(n: fx.FpgaTemporalSum, xs, state, t):
    acc = saturate(state["acc"] + xs[0] if "acc" in state else xs[0].clone(), n.bits, state, "readout_sat")
    state["acc"] = acc
    return acc


def observe(n, xs, y: torch.Tensor, ev: dict) -> None:
    """The largest magnitude every node produces (the ops count their own saturations)."""
    if n.op != "Input" and y.numel():
        ev["max_abs"] = max(ev.get("max_abs", 0), int(y.abs().max()))


FPGA_INT = register_format(FixedPointFormat(
    name=fx.FORMAT_NAME,
    node_types=fx.FPGA_NODE_TYPES,
    ops={"FpgaQuantizeInput": op_quantize_input, "FpgaLinear": op_fpga_linear, "FpgaConv2d": op_fpga_conv2d,
         "FpgaConv1d": op_fpga_conv1d, "FpgaLIF": op_fpga_lif, "FpgaTemporalSum": op_fpga_temporal_sum},
    events=EVENTS,
    observe=observe,
    spiking_ops=("FpgaLIF",),
    constants=fx.CONSTANTS,
    doc=__doc__.split("\n\n")[1],
))

__all__ = ["FPGA_INT", "EVENTS", "saturate", "round_shift", "lif_charge", "lif_fire", "rne_div", "observe"]
