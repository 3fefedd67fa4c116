"""The seed designs' IR ops (ReLU, Shiftmax, TemporalBlockSum): the reference (float) and golden (integer)
definitions against loops written here from the docstring equations, element-wise with mismatch counts."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from step_deploy import ir
from simulators import reference
from simulators.integer_ops import CORE_INTEGER_OPS, ceil_log2, op_shiftmax as int_shiftmax
from simulators.reference_ops import op_shiftmax, op_temporalblocksum


def shiftmax_row(row, frac_bits):
    """The docstring's equation on one row, in exact rationals."""
    m = max(row)
    num = [Fraction(2) ** (x - m) if x - m >= -frac_bits else Fraction(0) for x in row]
    total = sum(num)
    e = 0
    while Fraction(2) ** e < total:
        e += 1
    while e > -64 and Fraction(2) ** (e - 1) >= total:
        e -= 1
    return [v / Fraction(2) ** e for v in num]


def scores(seed=0, shape=(40, 3, 6), lo=-7, hi=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(lo, hi, shape, generator=g)
    x[0, 0] = 5  # a row of ties: every term is 2^0
    x[0, 1, :] = torch.tensor([4, -9, -12, 4, 0, -3])  # terms dropped below 2^-frac_bits
    return x


@pytest.mark.parametrize("frac_bits", [0, 3, 8])
def test_shiftmax_float_matches_exact_rationals(frac_bits):
    n = ir.Shiftmax("s", ("x",), frac_bits=frac_bits)
    x = scores()
    y = op_shiftmax(n, [x.to(torch.float32)], {}, 0)
    want = torch.tensor([[[float(v) for v in shiftmax_row(row.tolist(), frac_bits)] for row in b] for b in x],
                        dtype=torch.float64)
    bad = int((y.double() != want).sum())
    assert bad == 0, f"{bad} of {want.numel()} Shiftmax values differ from the exact equation"
    sums = y.double().sum(-1)
    assert bool(((sums > 0.5) & (sums <= 1.0)).all()), "each row sums to a value in (1/2, 1]"
    if frac_bits == 3:
        assert float(y[0, 1, 2]) == 0.0 and float(y[0, 1, 1]) == 0.0  # Δ = -13, -16 < -3: dropped


def test_shiftmax_integer_is_float_times_power_of_two():
    n = ir.Shiftmax("s", ("x",), axis=-1, frac_bits=5)
    x = scores(seed=3)
    yi = int_shiftmax(n, [x], {}, 0)
    assert yi.dtype == torch.int64
    bits = n.out_frac_bits(tuple(x.shape[1:]))
    assert bits == 5 + math.ceil(math.log2(6))
    yf = op_shiftmax(n, [x.to(torch.float32)], {}, 0).double()
    bad = int((yi.double() / 2 ** bits != yf).sum())
    assert bad == 0, f"{bad} integer Shiftmax values differ from float x 2^-{bits}"


def test_shiftmax_integer_refuses_float_scores():
    n = ir.Shiftmax("s", ("x",))
    with pytest.raises(ValueError, match="integer scores"):
        int_shiftmax(n, [torch.zeros(2, 3)], {}, 0)


def test_ceil_log2_exact():
    x = torch.arange(1, 5000, dtype=torch.int64)
    want = torch.tensor([math.ceil(math.log2(v)) if v & (v - 1) else v.bit_length() - 1 for v in range(1, 5000)])
    assert torch.equal(ceil_log2(x), want)


def block_sum_loop(x, block):
    out = torch.empty_like(x)
    for t in range(x.shape[0]):
        start = block * (t // block)
        acc = torch.zeros_like(x[0])
        for tau in range(start, start + block):
            acc = acc + x[tau]
        out[t] = acc
    return out


@pytest.mark.parametrize("block", [1, 2, 4])
def test_temporal_block_sum_matches_loop(block):
    x = torch.randint(0, 5, (8, 2, 3, 3)).to(torch.float32)
    n = ir.TemporalBlockSum("m", ("x",), block=block)
    y = op_temporalblocksum(n, [x], {}, None)
    assert int((y != block_sum_loop(x, block)).sum()) == 0
    yi = CORE_INTEGER_OPS["TemporalBlockSum"](n, [x.to(torch.int64)], {}, None)
    assert yi.dtype == torch.int64 and torch.equal(yi, block_sum_loop(x.to(torch.int64), block))
    if block == 1:
        assert torch.equal(y, x)


def statten_graph(block=2):
    """STAtten's attention on one head: KV_t = K_tᵀ V_t, M = block sum, A_t = Q_t M."""
    return ir.Graph([
        ir.Input("q", shape=(4, 3), kind="spikes"), ir.Input("k", shape=(4, 3), kind="spikes"),
        ir.Input("v", shape=(4, 3), kind="spikes"),
        ir.MatMul("kv", ("k", "v"), transpose_a=True), ir.TemporalBlockSum("m", ("kv",), block=block),
        ir.MatMul("a", ("q", "m"), scale=0.25), ir.Output("out", ("a",))])


def test_window_op_is_non_causal_inside_a_block_and_causal_across():
    g = statten_graph(block=2)
    gen = torch.Generator().manual_seed(1)
    feeds = {k: torch.randint(0, 2, (4, 2, 4, 3), generator=gen).float() for k in "qkv"}
    base = reference.run(g, feeds).outputs["out"]
    changed = dict(feeds, k=feeds["k"].clone())
    changed["k"][3] = 1 - changed["k"][3]  # flip the keys of step 3 only
    out = reference.run(g, changed).outputs["out"]
    assert torch.equal(out[:2], base[:2]), "steps of the first block do not see step 3"
    assert not torch.equal(out[2], base[2]), "step 2 sees step 3 (same block)"
    want = torch.stack([feeds["q"][t] @ sum(feeds["k"][tau].transpose(-1, -2) @ feeds["v"][tau]
                                            for tau in range(2 * (t // 2), 2 * (t // 2) + 2)) * 0.25
                        for t in range(4)])
    assert int((base != want).sum()) == 0


def test_window_op_needs_a_multiple_of_its_block():
    g = statten_graph(block=4)
    feeds = {k: torch.zeros(6, 1, 4, 3) for k in "qkv"}
    with pytest.raises(ir.ShapeError, match="not a multiple of the block size 4"):
        reference.run(g, feeds)


def test_new_ops_round_trip(tmp_path):
    g = ir.Graph([ir.Input("x", shape=(2, 5, 5)), ir.ReLU("r", ("x",)), ir.Shiftmax("s", ("r",), frac_bits=7),
                  ir.TemporalBlockSum("b", ("s",), block=4), ir.Output("o", ("b",))])
    ir.save(g, tmp_path / "g")
    h = ir.load(tmp_path / "g")
    assert [n.describe() for n in h.topo_order()] == [n.describe() for n in g.topo_order()]
    assert h.nodes["b"].latency == 3 and h.nodes["b"].buffer_elements((2, 5, 5)) == 50
    x = np.random.default_rng(0).integers(-3, 4, (8, 2, 2, 5, 5)).astype(np.float32)
    assert torch.equal(reference.run(g, x).outputs["o"], reference.run(h, x).outputs["o"])


def test_invalid_fields_rejected():
    with pytest.raises(ValueError, match="block"):
        ir.TemporalBlockSum("b", ("x",), block=0)
    with pytest.raises(ValueError, match="frac_bits"):
        ir.Shiftmax("s", ("x",), frac_bits=40)
