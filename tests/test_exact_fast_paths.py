"""The exactness guards of the simulators' fast paths (issue 10's speed target): float32 synapses
only under a proven 2^24 bound, else float64; transposed count products only when every column sum
is below 2^24; the per-node cache rebuilt when a node's arrays change. Each test compares with a
pure int64 reference and shows that the case is one where the unguarded float32 result is wrong."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from step_deploy.simulators import integer_ops as io
from step_deploy.simulators.cycle.mesh_plan import row_product, transposed_if_exact
from step_deploy.simulators.golden_loihi import trunc_decay

BIG = 1 << 24


def _recording(fn, seen: list):
    def run(x, w, *rest):
        seen.append(x.dtype)
        return fn(x, w, *rest)
    return run


def _int_linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("bi,oi->bo", x.astype(np.int64), w.astype(np.int64))


def test_small_bound_takes_float32_and_equals_int64():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (16, 64), generator=g).numpy()
    x = torch.randint(-3, 4, (8, 64), generator=g)
    seen: list = []
    got = io.exact_product(_recording(F.linear, seen), x, io.IntWeight.of(w))
    assert seen == [torch.float32] and got.dtype == torch.int64
    assert np.array_equal(got.numpy(), _int_linear(x.numpy(), w))


def test_bound_above_2_24_takes_float64_and_equals_int64():
    w = np.array([[1, 1, 1, -1]], np.int64)
    x = torch.tensor([[BIG + 1, 0, 0, 0]])  # max|x| · Σ|w| > 2^24, and float32 has no 2^24 + 1
    ref = _int_linear(x.numpy(), w)
    naive = F.linear(x.to(torch.float32), torch.from_numpy(w).to(torch.float32)).to(torch.int64).numpy()
    assert not np.array_equal(naive, ref)  # float32 would be wrong here: the guard matters
    seen: list = []
    got = io.exact_product(_recording(F.linear, seen), x, io.IntWeight.of(w))
    assert seen == [torch.float64]
    assert np.array_equal(got.numpy(), ref)


def test_the_bound_is_max_over_outputs_of_sum_abs_w_times_max_abs_x():
    w = np.zeros((2, 3), np.int64)
    w[0] = [BIG // 8, BIG // 8, BIG // 8]  # Σ|w| = 3 · 2^21
    w[1] = [1, 0, 0]
    wt = io.IntWeight.of(w)
    assert wt.row_abs_sum == 3 * (BIG // 8)
    for m, want in ((2, torch.float32), (3, torch.float64)):  # 2 · 3 · 2^21 < 2^24 <= 3 · 3 · 2^21
        seen: list = []
        x = torch.tensor([[m, -m, m]])
        got = io.exact_product(_recording(F.linear, seen), x, wt)
        assert seen == [want], m
        assert np.array_equal(got.numpy(), _int_linear(x.numpy(), w))


def test_conv_bound_sums_every_tap_of_an_output_channel():
    g = torch.Generator().manual_seed(1)
    w = torch.randint(-127, 128, (4, 3, 3, 3), generator=g).numpy()
    x = torch.randint(-2, 3, (2, 3, 6, 6), generator=g)
    wt = io.IntWeight.of(w)
    assert wt.row_abs_sum == int(np.abs(w).reshape(4, -1).sum(1).max())
    got = io.exact_product(lambda a, b: F.conv2d(a, b, None, 1, 1), x, wt)
    ref = F.conv2d(x.to(torch.float64), torch.from_numpy(w).to(torch.float64), None, 1, 1)
    assert torch.equal(got, ref.to(torch.int64))


def test_reduced_float32_precision_falls_back_to_float64():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert not io.float32_is_ieee()
        assert io.IntWeight.of(np.ones((2, 2))).f32 is None
        seen: list = []
        x = torch.ones((1, 2), dtype=torch.int64)
        io.exact_product(_recording(F.linear, seen), x, io.IntWeight.of(np.ones((2, 2))))
        assert seen == [torch.float64]
    finally:
        torch.set_float32_matmul_precision(before)
    assert io.float32_is_ieee()


def _floor_ref(x: np.ndarray, w: np.ndarray, c: np.ndarray, k: np.ndarray) -> np.ndarray:
    z = _int_linear(x, w) + c[None, :]
    return np.where(k >= 0, z >> np.maximum(k, 0), z << np.maximum(-k, 0))


def test_fused_affine_equals_floor_shift_of_int64_including_negative_shifts():
    g = torch.Generator().manual_seed(2)
    w = torch.randint(-127, 128, (6, 32), generator=g).numpy()
    c = np.array([0, 5, -7, 300, -1, 2], np.int64)
    k = np.array([0, 1, 3, -2, 12, -1], np.int64)
    fused = io.fused_affine(w, c, k)
    x = torch.randint(-4, 5, (10, 32), generator=g)
    z, y = fused.run(F.linear, x, 1)
    assert torch.equal(z.to(torch.int64), torch.from_numpy(_int_linear(x.numpy(), w) + c))
    assert np.array_equal(fused.to_int64(y).numpy(), _floor_ref(x.numpy(), w, c, k))


def test_fused_affine_declines_past_the_bound_and_rejects_what_float32_cannot_hold():
    w = np.full((1, 4), 100, np.int64)
    fused = io.fused_affine(w, np.array([BIG - 400 * 7]), None)  # Σ|w|·m + |c| < 2^24 only for m <= 6
    assert fused.run(F.linear, torch.full((1, 4), 6), 1) is not None
    assert fused.run(F.linear, torch.full((1, 4), 7), 1) is None  # 7·400 + c = 2^24: the op takes the int64 path
    assert io.fused_affine(np.array([[0.5, 1.0]])) is None  # not an integer
    assert io.fused_affine(np.array([[BIG, 1]])) is None  # a weight float32 cannot hold
    assert io.fused_affine(np.ones((1, 2)), np.array([BIG])) is None
    assert io.fused_affine(np.ones((1, 2)), None, np.array([-39])) is None  # the int64 result could overflow


def test_per_node_cache_rebuilds_when_an_array_changes_in_place():
    class Node:  # any weak-referenceable object stands for a graph node
        pass

    n, w, built = Node(), np.arange(4), []
    build = lambda: built.append(1) or int(w.sum())  # noqa: E731
    assert io.per_node(n, "k", (w, 2), build) == 6
    assert io.per_node(n, "k", (w, 2), build) == 6 and len(built) == 1
    w[0] = 10
    assert io.per_node(n, "k", (w, 2), build) == 16 and len(built) == 2
    assert io.per_node(n, "k", (w, 3), build) == 16 and len(built) == 3  # any input that changes rebuilds


def test_transposed_count_product_only_when_every_column_sum_is_below_2_24():
    g = torch.Generator().manual_seed(3)
    m = torch.randint(0, 50, (300, 4), generator=g).to(torch.float32)
    nz = (torch.rand((7, 300), generator=g) < 0.3).to(torch.float32)
    mt = transposed_if_exact(m)
    assert mt is not None and torch.equal(row_product(nz, m, mt), nz @ m)
    big = torch.full((3, 1), float(1 << 23))  # the column sums to 1.5 · 2^24: the product could round
    assert transposed_if_exact(big) is None
    assert torch.equal(row_product(torch.ones((1, 3)), big, None), torch.ones((1, 3)) @ big)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_trunc_decay_rounds_toward_zero_as_lava(dtype):
    x = torch.arange(-(1 << 18), 1 << 18, 3, dtype=torch.int64).to(dtype)  # x · 4096 fits int32
    for keep in (1, 2, 7, 1024, 2048, 3000, 4095, 4096):
        p = x.to(torch.int64) * keep
        want = torch.sign(p) * (p.abs() >> 12)
        assert torch.equal(trunc_decay(x, keep).to(torch.int64), want), keep
