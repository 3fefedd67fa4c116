"""The integer op functions of Loihi ``fixed_pt`` (``step_deploy.fixedpoint.loihi``) and its
registration as the fixed-point format ``'loihi-fixed_pt'``.

Arithmetic (lava-nc 0.10.0 ``fixed_pt``, read in its source): synapses
``A = (W·X) << weight_exp + bias`` with 8-bit mantissas; neurons ``u = wrap24(a << 6)`` (``du =
4095``: no current memory), ``v = sat24(trunc0(v·(4096-dv)/4096) + u)``, spike on ``v > vth<<6``
(or ``>=`` on Loihi 2), reset to 0. See ``fixedpoint.loihi.LoihiLIF``.

**Events, no silent clipping** (counted with ``run_golden(..., events=True)``): see
:data:`EVENTS`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from step_deploy.fixedpoint import loihi as fx
from step_deploy.fixedpoint.format import EVENTS_STATE_KEY, FixedPointFormat, count_event, register_format

from .integer_ops import exact_product, int_weight, shift

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
    p = x * int(keep)
    return torch.sign(p) * (p.abs() >> 12)


def wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's current wrap: one ±2^24 correction outside ``(-2^23, 2^23]``."""
    if u.numel() == 0 or (int(u.max()) <= MAX_UV and int(u.min()) > -MAX_UV):
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


def op_fixed_linear(n: fx.FixedLinear, xs, state, t):
    acc = exact_product(F.linear, xs[0], int_weight(state, "w", n.weight))
    b = _bias(n, state, acc.dim(), acc.dim() - 1)
    y = shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def op_fixed_conv2d(n: fx.FixedConv2d, xs, state, t):
    acc = exact_product(lambda x, w: F.conv2d(x, w, None, tuple(n.stride), tuple(n.padding), tuple(n.dilation),
                                              n.groups), xs[0], int_weight(state, "w", n.weight))
    b = _bias(n, state, acc.dim(), 1)
    y = shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def op_fixed_conv1d(n: fx.FixedConv1d, xs, state, t):
    acc = exact_product(lambda x, w: F.conv1d(x, w, None, n.stride, n.padding, n.dilation, n.groups), xs[0],
                        int_weight(state, "w", n.weight))
    b = _bias(n, state, acc.dim(), 1)
    y = shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def lif_step(n: fx.LoihiLIF, a: torch.Tensor, state: dict):
    """One LoihiLIF step; returns ``(spikes, u_wrapped_mask, v_saturated_mask)``."""
    a = a.to(torch.int64)
    u = state.get("u")
    v = state.get("v")
    if u is None:
        u = torch.zeros_like(a)
        v = torch.zeros_like(a)
    u_raw = trunc_decay(u, 4096 - (int(n.du) + 1)) + (a << 6)
    u = wrap24(u_raw)
    v_raw = trunc_decay(v, 4096 - int(n.dv)) + u
    v = torch.clamp(v_raw, -MAX_UV + 1, MAX_UV - 1)
    thr = int(n.vth) << 6
    s = v >= thr if n.compare == ">=" else v > thr
    state["u"] = u
    state["v"] = torch.where(s, torch.zeros_like(v), v)
    return s.to(torch.int64), u != u_raw, v != v_raw


def op_loihi_lif(n: fx.LoihiLIF, xs, state, t):
    s, wrapped, sat = lif_step(n, xs[0], state)
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

__all__ = ["LOIHI_FIXED_PT", "EVENTS", "MAX_UV", "lif_step", "trunc_decay", "wrap24", "quantize_input", "observe"]
