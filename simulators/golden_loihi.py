"""The integer op functions of Loihi ``fixed_pt`` (``step_deploy.fixedpoint.loihi``) and its
registration as the fixed-point format ``'loihi-fixed_pt'``.

Arithmetic (lava-nc 0.10.0 ``fixed_pt``, read in its source): synapses
``A = (W·X) << weight_exp + bias`` with 8-bit mantissas; neurons ``u = wrap24(a << 6)`` (``du =
4095``: no current memory), ``v = sat24(trunc0(v·(4096-dv)/4096) + u)``, spike on ``v > vth<<6``
(or ``>=`` on Loihi 2), reset to 0; Loihi 2's programmable neuron adds soft reset
(``v - S·θ``), integer spikes (``fire='round'``: ``clamp(rne_div(v, θ), 0, max_level)``, STEP's
ILIF; ``'round_normalized'``: ``2v > D·θ``, NILIF) and ternary spikes (``fire='ternary'``: ``+1`` at
``v >= θ``, ``-1`` at ``v <= -θ``; hard reset to 0 where ``S != 0``, soft ``v - S·θ``). See
``fixedpoint.loihi.LoihiLIF``.

**Events, no silent clipping** (counted with ``run_golden(..., events=True)``): see
:data:`EVENTS`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from step_deploy.fixedpoint import loihi as fx
from step_deploy.fixedpoint.format import EVENTS_STATE_KEY, FixedPointFormat, count_event, register_format

from .integer_ops import FusedAffine, exact_product, float32_is_ieee, fused_affine, int_weight, per_node, shift

MAX_UV = 1 << 23
_I32 = (1 << 31) - 1

EVENTS = {
    "u_wrap": "the 24-bit current u wrapped (LoihiLIF)",
    "v_sat": "the 24-bit voltage v saturated (LoihiLIF)",
    "a_shift_int32_overflow": "a synaptic input >= 2^25 whose << 6 overflows Lava's int32 (LoihiLIF)",
    "input_clip": "analog input clamped to its bits (QuantizeInput)",
    "a_over_16bit": "a synaptic input beyond Lava's declared 16-bit a_out (Lava's CPU models do not clip it)",
    "over_24bit": "a graded value beyond 24 bits",
    "int32_overflow": "a value beyond int32 (Lava would fail)",
    "max_abs": "the largest magnitude seen (not an error)",
}


def _bias(n, state, rank: int, channel_axis: int) -> Optional[torch.Tensor]:
    if "bias" not in state:
        b = n.effective_bias()
        if b is None:
            state["bias"] = None
        else:
            shape = [1] * rank
            shape[channel_axis] = -1
            state["bias"] = torch.from_numpy(b).reshape(shape)
    return state["bias"]


def trunc_decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """``x·keep / 4096`` rounded toward zero (Lava: ``sign(p)·(|p| >> 12)``)."""
    if keep == 0:
        return torch.zeros_like(x)
    keep = int(keep)
    if x.dtype in (torch.int64, torch.int32):  # the same: a floor shift after adding 2^j - 1 to a negative value
        sign = 8 * x.element_size() - 1
        if 0 < keep <= 4096 and keep & (keep - 1) == 0:  # keep = 2^m: x·2^m / 4096 = x / 2^j, j = 12 - m
            j = 12 - (keep.bit_length() - 1)
            return (x + ((x >> sign) & ((1 << j) - 1))) >> j
        p = x * keep
        return (p + ((p >> sign) & 4095)) >> 12
    p = x * keep
    return torch.sign(p) * (p.abs() >> 12)


def wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's current wrap: one ±2^24 correction outside ``(-2^23, 2^23]``."""
    if u.numel() == 0:
        return u
    lo, hi = torch.aminmax(u)
    if int(hi) <= MAX_UV and int(lo) > -MAX_UV:
        return u
    w = torch.where(u > MAX_UV, u - 2 * MAX_UV, u)
    return torch.where(w <= -MAX_UV, u + 2 * MAX_UV, w)


def quantize_input(n: fx.QuantizeInput, x: torch.Tensor) -> torch.Tensor:
    """The host-side input quantization (shared with the Lava runner, so both see the same ints)."""
    if not x.is_floating_point():
        x = x.to(torch.float32)
    lo, hi = n.bounds
    return torch.clamp(torch.round(x * n.scale), lo, hi).to(torch.int64)


def op_quantize_input(n: fx.QuantizeInput, xs, state, t):
    return quantize_input(n, xs[0])


def _fused(n, state) -> Optional[FusedAffine]:
    """The synapse ``(W·X) << weight_exp + bias`` as one float32 pass (``integer_ops.FusedAffine``),
    built once per run: ``W·2^e`` and ``bias`` for ``e >= 0``; for ``e < 0``, ``floor((W·X + bias·2^-e)
    / 2^-e)``, equal to ``(W·X >> -e) + bias`` as the bias is an integer. None when float32 cannot
    hold it."""
    if "fused" not in state:
        e, b = int(n.weight_exp), n.effective_bias()

        def build():
            w = np.asarray(n.weight, np.float64)
            if e >= 0:
                return fused_affine(np.ldexp(w, e), b)
            c = None if b is None else np.ldexp(np.asarray(b, np.float64), -e)
            return fused_affine(w, c, np.full(w.shape[0], -e))

        fused = per_node(n, "fused", (n.weight, b, e), build)
        state["fused"] = fused if fused is not None and float32_is_ieee() else None
    return state["fused"]


def _synapse_op(n, x: torch.Tensor, state: dict, fn, channel_axis: int) -> torch.Tensor:
    """``(fn(x, W)) << weight_exp + bias``: in one float32 pass when exact (``_fused``), else with the
    accumulation in ``exact_product`` and the shift and bias on int64."""
    fused = _fused(n, state)
    zy = fused.run(fn, x, channel_axis) if fused is not None else None
    if zy is not None:
        return fused.to_int64(zy[1])
    acc = exact_product(lambda a, w: fn(a, w, None), x, int_weight(state, "w", n.weight))
    b = _bias(n, state, acc.dim(), channel_axis)
    y = shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def op_fixed_linear(n: fx.FixedLinear, xs, state, t):
    return _synapse_op(n, xs[0], state, F.linear, xs[0].dim() - 1)


def op_fixed_conv2d(n: fx.FixedConv2d, xs, state, t):
    return _synapse_op(n, xs[0], state, lambda x, w, b: F.conv2d(x, w, b, tuple(n.stride), tuple(n.padding),
                                                                 tuple(n.dilation), n.groups), 1)


def op_fixed_conv1d(n: fx.FixedConv1d, xs, state, t):
    return _synapse_op(n, xs[0], state, lambda x, w, b: F.conv1d(x, w, b, n.stride, n.padding, n.dilation,
                                                                 n.groups), 1)


def lif_step(n: fx.LoihiLIF, a: torch.Tensor, state: dict):
    """One LoihiLIF step; returns ``(spikes, u_wrapped_mask, v_saturated_mask)``."""
    return lif_update(n, a, state, masks=True)


def rne_div(a: torch.Tensor, b: int) -> torch.Tensor:
    """Round-half-to-even of ``a / b`` for int64 ``a`` and an integer ``b > 0``, exactly:
    ``q = floor(a / b)``, ``r = a - q·b``, up by one when ``2r > b`` or ``2r == b`` and ``q`` is odd."""
    q = torch.div(a, b, rounding_mode="floor")
    r2 = 2 * (a - q * b)
    return q + ((r2 > b) | ((r2 == b) & (q % 2 == 1))).to(q.dtype)


def lif_fire(n: fx.LoihiLIF, v: torch.Tensor) -> torch.Tensor:
    """The spikes ``S`` (int64) of the saturated membrane ``v'`` under ``n.fire`` (see ``LoihiLIF``)."""
    thr = int(n.vth) << 6
    if n.fire == "round":
        return torch.clamp(rne_div(v, thr), 0, int(n.max_level))
    if n.fire == "round_normalized":
        return (2 * v > int(n.round_d) * thr).to(torch.int64)
    if n.fire == "ternary":  # +1 at v >= θ, -1 at v <= -θ (strict for compare '>')
        pos, neg = (v >= thr, v <= -thr) if n.compare == ">=" else (v > thr, v < -thr)
        return pos.to(torch.int64) - neg.to(torch.int64)
    return (v >= thr if n.compare == ">=" else v > thr).to(torch.int64)


def lif_update(n: fx.LoihiLIF, a: torch.Tensor, state: dict, masks: bool = False):
    """:func:`lif_step`; the two masks are None unless ``masks`` (the spikes and state are the same).
    A zero state or a zero decay factor contributes nothing, so its term is left out."""
    a = a.to(torch.int64)
    u = state.get("u")
    v = state.get("v")
    keep_u, keep_v = 4096 - (int(n.du) + 1), 4096 - int(n.dv)
    u_raw = a << 6
    if u is not None and keep_u != 0:
        u_raw = trunc_decay(u, keep_u) + u_raw
    u = wrap24(u_raw)
    v_raw = trunc_decay(v, keep_v) + u if v is not None and keep_v != 0 else u
    v = torch.clamp(v_raw, -MAX_UV + 1, MAX_UV - 1)
    state["u"] = u
    if n.fire == "threshold" and n.reset == "hard":  # the stock neuron: the fast path
        thr = int(n.vth) << 6
        s = v >= thr if n.compare == ">=" else v > thr
        state["v"] = v * ~s  # the reset: 0 where it spiked (a product with 0/1, exact)
        s = s.to(torch.int64)
    else:
        s = lif_fire(n, v)
        state["v"] = v - s * (int(n.vth) << 6) if n.reset == "soft" else v * (s == 0)
    if not masks:
        return s, None, None
    return s, u != u_raw, v != v_raw


def op_loihi_lif(n: fx.LoihiLIF, xs, state, t):
    counting = state.get(EVENTS_STATE_KEY) is not None
    s, wrapped, sat = lif_update(n, xs[0], state, masks=counting)
    if counting:
        count_event(state, "u_wrap", wrapped)
        count_event(state, "v_sat", sat)
        count_event(state, "a_shift_int32_overflow", xs[0].abs() >= (1 << 25))
    return s


def op_temporal_sum(n: fx.TemporalSum, xs, state, t):
    acc = state["acc"] + xs[0] if "acc" in state else xs[0].clone()
    state["acc"] = acc
    return acc


def _count(ev: dict, key: str, mask: torch.Tensor) -> None:
    c = int(mask.sum())
    if c:
        ev[key] = ev.get(key, 0) + c


def observe(n, xs, y: torch.Tensor, ev: dict) -> None:
    """Value-based counters of every node (the LIF counts its own state events)."""
    if n.op in ("Input", "LoihiLIF"):
        return
    if y.numel():
        ev["max_abs"] = max(ev.get("max_abs", 0), int(y.abs().max()))
    if n.op == "QuantizeInput":
        x = xs[0].to(torch.float32) if not xs[0].is_floating_point() else xs[0]
        lo, hi = n.bounds
        r = torch.round(x * n.scale)
        _count(ev, "input_clip", (r < lo) | (r > hi))
    if isinstance(n, fx.FIXED_SYNAPSES):
        _count(ev, "a_over_16bit", y.abs() > (1 << 15) - 1)
    if n.op not in ("Output", "TemporalSum"):  # the readout sum is a host-side int32
        _count(ev, "over_24bit", y.abs() > MAX_UV - 1)
        _count(ev, "int32_overflow", y.abs() > _I32)


LOIHI_FIXED_PT = register_format(FixedPointFormat(
    name=fx.FORMAT_NAME,
    node_types=fx.FIXED_NODE_TYPES,
    ops={"QuantizeInput": op_quantize_input, "FixedLinear": op_fixed_linear, "FixedConv2d": op_fixed_conv2d,
         "FixedConv1d": op_fixed_conv1d, "LoihiLIF": op_loihi_lif, "TemporalSum": op_temporal_sum},
    events=EVENTS,
    observe=observe,
    spiking_ops=("LoihiLIF",),
    constants=fx.CONSTANTS,
    doc=__doc__.split("\n\n")[1],
))

__all__ = ["LOIHI_FIXED_PT", "EVENTS", "MAX_UV", "lif_step", "lif_update", "rne_div", "lif_fire", "trunc_decay", "wrap24",
           "quantize_input",
           "observe"]
