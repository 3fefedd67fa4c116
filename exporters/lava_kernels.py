"""The integer arithmetic of the custom Lava processes, in plain numpy (no lava import): the
process models in ``lava_models.py`` call these functions, and a golden model or a test can use
them without Lava. All functions take flattened or shaped integer arrays and compute in int64.
"""
from __future__ import annotations

import numpy as np

_I32 = np.iinfo(np.int32)


def to_int32(y: np.ndarray, who: str) -> np.ndarray:
    """Flatten ``y`` (int64) to an int32 vector; an out-of-range value is an error, not a wrap."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if y.size and (y.max() > _I32.max or y.min() < _I32.min):
        raise OverflowError(f"{who}: output {int(np.abs(y).max())} does not fit int32")
    return y.astype(np.int32)


def _swap_last(x: np.ndarray, flag: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if flag else x


def matmul_kernel(a, b, a_shape, b_shape, transpose_a=False, transpose_b=False) -> np.ndarray:
    a = np.asarray(a, np.int64).reshape(a_shape)
    b = np.asarray(b, np.int64).reshape(b_shape)
    return np.matmul(_swap_last(a, transpose_a), _swap_last(b, transpose_b))


def mul_kernel(a, b, a_shape, b_shape) -> np.ndarray:
    return np.asarray(a, np.int64).reshape(a_shape) * np.asarray(b, np.int64).reshape(b_shape)


def axis_sum_kernel(x, in_shape, axis, keepdim=False) -> np.ndarray:
    return np.asarray(x, np.int64).reshape(in_shape).sum(axis=axis, keepdims=keepdim)


def maxpool_kernel(x, in_shape, kernel, stride, padding) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    x = np.asarray(x, np.int64).reshape(in_shape)
    c, h, w = in_shape
    lo = np.iinfo(np.int64).min
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)), constant_values=lo)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.full((c, ho, wo), lo, dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            out = np.maximum(out, xp[:, dy:dy + sh * (ho - 1) + 1:sh, dx:dx + sw * (wo - 1) + 1:sw])
    return out


def relu_kernel(x) -> np.ndarray:
    """``max(x, 0)`` (A²OS²A's K on the embedded cores)."""
    return np.maximum(np.asarray(x, np.int64), 0)


def _bit_length(s: np.ndarray) -> np.ndarray:
    """Bits of each non-negative int64 (0 for 0): a leading-zero count, by halving."""
    s, bits = s.copy(), np.zeros_like(s)
    while np.any(s > 0):
        bits += s > 0
        s >>= 1
    return bits


def shiftmax_kernel(x, in_shape, axis, frac_bits) -> np.ndarray:
    """Integer Shiftmax over ``axis`` of integer scores (contract §2): ``a = 2^(F + Δ)`` where
    ``Δ = x - rowmax >= -F`` (else 0), ``E = ceil(log2 Σ a)``, ``y = a << (F + L - E)`` with
    ``L = ceil(log2 n)``: shifts, adds and one leading-zero count per row."""
    x = np.asarray(x, np.int64).reshape(in_shape)
    f, n = int(frac_bits), int(in_shape[axis])
    delta = x - x.max(axis=axis, keepdims=True)
    a = np.where(delta >= -f, np.left_shift(1, np.maximum(delta + f, 0)), 0).astype(np.int64)
    e = _bit_length(a.sum(axis=axis, keepdims=True) - 1)  # ceil(log2 S) = bit length of S - 1
    return a << (f + int(_bit_length(np.array([n - 1]))[0]) - e)


def block_sum_step(acc, last, x, u: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """One step of STAtten's block sum streamed with a latency of ``block - 1`` steps. ``u`` is the
    golden step of the input ``x`` (negative: the data has not arrived yet, ``x`` is ignored); ``acc``
    sums the current block, ``last`` holds the sum of the latest completed block. Returns the new
    ``(acc, last)``; the output of this step is ``last``, which is ``Y[u - (block - 1)]``: the block of
    step ``u - block + 1`` is either the block that ends at ``u`` (summed this step) or the one
    before ``u``'s block, completed earlier."""
    acc, last = np.asarray(acc, np.int64), np.asarray(last, np.int64)
    if u < 0:
        return acc, last
    acc = acc + np.asarray(x, np.int64)
    if u % int(block) == int(block) - 1:
        return np.zeros_like(acc), acc
    return acc, last


def permute_kernel(x, in_shape, perm) -> np.ndarray:
    return np.asarray(x, np.int64).reshape(in_shape).transpose(perm)


def _trunc_decay(x: np.ndarray, keep: int) -> np.ndarray:
    """``x·keep / 4096`` rounded toward zero (Lava: ``sign(p)·(|p| >> 12)``)."""
    p = x.astype(np.int64) * int(keep)
    return np.sign(p) * (np.abs(p) >> 12)


def rne_div(a: np.ndarray, b) -> np.ndarray:
    """Round-half-to-even of ``a / b`` (int64 ``a``, integers ``b > 0``, broadcast), exactly:
    ``q = a // b``, ``r = a - q·b``, plus one when ``2r > b`` or ``2r == b`` and ``q`` is odd."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    q = np.floor_divide(a, b)
    r2 = 2 * (a - q * b)
    return q + ((r2 > b) | ((r2 == b) & (q % 2 == 1)))


def lif_fire(v, thr, compare=">", fire="threshold", max_level=1, round_d=0) -> np.ndarray:
    """Spikes (int64) of the membrane ``v`` against ``thr = vth << 6`` (``fixedpoint.loihi.LoihiLIF``):
    ``threshold``: ``v > thr`` (or ``>=``); ``round``: ``clamp(rne_div(v, thr), 0, max_level)``;
    ``round_normalized``: ``2v > round_d·thr``; ``ternary``: ``+1`` at ``v >= thr``, ``-1`` at
    ``v <= -thr`` (``>`` / ``<`` with ``compare='>'``)."""
    if fire == "round":
        return np.clip(rne_div(v, thr), 0, int(max_level))
    if fire == "round_normalized":
        return (2 * v > int(round_d) * np.asarray(thr, np.int64)).astype(np.int64)
    if fire == "ternary":  # signed spikes: +1 at v >= thr, -1 at v <= -thr (strict with '>')
        pos, neg = (v >= thr, v <= -thr) if compare == ">=" else (v > thr, v < -thr)
        return pos.astype(np.int64) - neg.astype(np.int64)
    return (v >= thr if compare == ">=" else v > thr).astype(np.int64)


def lif_fixed_step(u, v, a_in, du, dv, vth, bias_mant, bias_exp, compare=">", reset="hard", fire="threshold",
                   max_level=1, round_d=0):
    """One step of Lava's ``PyLifModelBitAcc`` (plus ``>=``, soft reset and the rounded ILIF / NILIF
    spikes of Loihi 2's programmable neuron). Returns ``(u, v, spikes, v_pre)`` as int64 arrays;
    ``v`` is after the reset, ``v_pre`` before it, ``spikes`` the integer spike values."""
    max_uv = 1 << 23
    bias_mant = np.asarray(bias_mant, np.int64)
    bias_exp = np.asarray(bias_exp, np.int64)
    bias = np.where(bias_exp >= 0, bias_mant << np.maximum(bias_exp, 0),
                    bias_mant >> np.maximum(-bias_exp, 0))
    u = _trunc_decay(np.asarray(u), 4096 - (int(du) + 1)) + (np.asarray(a_in, np.int64) << 6)
    wrapped = np.where(u > max_uv, u - 2 * max_uv, u)
    u = np.where(wrapped <= -max_uv, u + 2 * max_uv, wrapped)
    v = _trunc_decay(np.asarray(v), 4096 - int(dv)) + u + bias
    v = np.clip(v, -max_uv + 1, max_uv - 1)
    thr = np.asarray(vth, np.int64) << 6
    s = lif_fire(v, thr, compare, fire, max_level, round_d)
    v_next = v - s * thr if reset == "soft" else np.where(s != 0, 0, v)
    return u, v_next, s, v
