"""quantize_loihi: legal Loihi parameters, scales, thresholds, tie strategies, headroom, report."""
import json

import numpy as np
import pytest
import torch
from test_golden import GRAPHS, T, attention_graph, build, _spikes

from step_deploy import ir
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run
from step_deploy.ir import fixed_point as fx
from step_deploy.passes.delay_balance import schedule
from step_deploy.passes.quantize_loihi import prepare, quantize_loihi

LAYER_KEYS = {"FixedLinear": {"scale", "weight_exp", "mantissa_min", "mantissa_max", "sign_mode", "events"},
              "FixedConv2d": {"scale", "weight_exp", "mantissa_min", "mantissa_max", "sign_mode", "events"},
              "LoihiLIF": {"input_scale", "state_scale", "threshold_mantissa", "tie", "compare", "chip",
                           "lava_process", "du", "dv", "events"}}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_parameters_are_legal_loihi_values(name):
    g, x = build(name)
    q, rep = quantize_loihi(g, x[:64], steps=T)
    assert ir.verify(q) == [] or all(d.severity != "error" for d in ir.verify(q))
    for n in q.nodes.values():
        assert not isinstance(n, (ir.Linear, ir.Conv2d, ir.Neuron, ir.Mean, ir.TemporalMean))
        if isinstance(n, fx.FIXED_SYNAPSES):
            assert fx.weight_problems(n.weight) == [], n.name
            if n.bias_mant is not None:
                assert np.abs(n.bias_mant).max() < 1 << (fx.BIAS_MANT_BITS - 1)
        if isinstance(n, fx.LoihiLIF):
            assert (n.du, n.dv) == (4095, 2048) and 0 < n.vth < 1 << fx.VTH_BITS
        if isinstance(n, ir.MatMul):
            assert n.scale == 1.0
    for layer, info in rep["layers"].items():
        assert LAYER_KEYS.get(info["op"], set()) <= set(info), layer
    json.dumps(rep)  # JSON-serialisable


def test_mixed_sign_mantissas_are_even_and_fill_eight_bits():
    g, x = build("mlp")
    q, rep = quantize_loihi(g, x[:64], steps=T)
    w = q["fc2"].weight
    assert w.min() < 0 < w.max() and np.all(w % 2 == 0)
    assert 128 <= np.abs(w).max() <= 254  # full mantissa at weight_exp = 0 (tie 'ge')
    assert rep["layers"]["fc2"]["weight_exp"] == 0 and rep["layers"]["fc2"]["weight_rel_error"] < 0.01


def test_threshold_folds_tau_scale_and_attention_constant():
    g, x = build("ssa")
    q, rep = quantize_loihi(g, x[:64], steps=T)
    attn = rep["layers"]["attn_lif"]
    assert attn["input_scale"] == 8.0  # counts Q·Kᵀ·V with the 0.125 folded into the scale
    assert q["attn_lif"].vth == 8 and q["attn_lif"].compare == ">="  # 0.5 · tau · 8
    proj = rep["layers"]["proj_lif"]
    assert q["proj_lif"].vth == 2 * proj["input_scale"]  # threshold 1 · tau · s_in
    assert proj["state_scale"] == 64 * 2 * proj["input_scale"] and proj["threshold_exact"]


def test_input_quantization_is_stated():
    g, x = build("conv")
    q, rep = quantize_loihi(g, x[:64], steps=T, input_bits=6)
    qi = rep["inputs"]["x"]
    assert (qi["bits"], qi["signed"], qi["node"]) == (6, False, "x.q") and qi["scale"] == 32.0  # 2^floor(log2(63))
    assert isinstance(q["x.q"], fx.QuantizeInput) and q["conv"].inputs == ("x.q",)


def test_membrane_shortcut_shares_one_scale():
    g, x = build("sdt")
    _, rep = quantize_loihi(g, x[:64], steps=T)
    assert rep["layers"]["proj"]["scale"] == rep["layers"]["stem"]["scale"] == rep["layers"]["shortcut"]["scale"]


def test_gap_strategy_for_loihi1_uses_the_stock_lif_everywhere():
    g, x = build("ssa")
    q, rep = quantize_loihi(g, x[:64], steps=T, target="loihi1")
    assert rep["tie"] == "gap" and "loihi1" in rep["chip_required"]
    for n in q.nodes.values():
        if isinstance(n, fx.LoihiLIF):
            assert n.compare == ">" and rep["layers"][n.name]["lava_process"] == "LIF"
        if isinstance(n, fx.FIXED_SYNAPSES) and not n.name.endswith(".gap_shift"):
            assert n.weight_exp >= T - 1
    with pytest.raises(ValueError, match="programmable"):
        quantize_loihi(g, x[:64], steps=T, target="loihi1", tie="ge")


def test_gap_and_ge_define_the_same_spikes_when_scales_agree():
    """With every input a multiple of 2^(T-1), '>' at (vth-1)<<6 equals '>=' at vth<<6."""
    g, x = build("mlp")
    q, _ = quantize_loihi(g, x[:64], steps=T, tie="gap")
    ge = q.copy()
    for n in q.nodes.values():
        if isinstance(n, fx.LoihiLIF):
            ge.replace(ir.replace(n, vth=n.vth + 1, compare=">="))
    a, b = run_golden(q, x, steps=T), run_golden(ge, x, steps=T)
    assert all(torch.equal(a.traces[k], b.traces[k]) for k in a.traces)
    assert sum(int(v.sum()) for v in a.traces.values()) > 0


def test_headroom_lowers_the_scale_instead_of_saturating():
    r = np.random.default_rng(0)
    w = (r.standard_normal((16, 16)) * 0.05).astype(np.float32)
    w[0, :] = 40.0  # one huge row: the 8-bit mantissa wants a small exponent, the state a small scale
    g = ir.Graph([ir.Input("x", shape=(16,), kind="analog"), ir.Linear("fc", ("x",), weight=w, bias=None),
                  ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])
    x = torch.rand(64, 16)
    _, rep = quantize_loihi(g, x, steps=T)
    assert rep["saturation_total"] == 0 and rep["notes"] == []
    assert rep["layers"]["lif"]["calib_max_abs"] * rep["layers"]["lif"]["state_scale"] * 2 <= 1 << 23


def test_prepare_moves_the_temporal_mean_after_the_head_exactly():
    g, x = build("ssa")
    p = prepare(g)
    assert p["head"].inputs == ("tok",) and p["tmean"].inputs == ("head",) and p["y"].inputs == ("tmean",)
    a, b = run(g, x[:8], steps=T).final(), run(p, x[:8], steps=T).final()
    assert torch.allclose(a, b, atol=1e-5)


def test_readout_is_an_integer_accumulator_with_a_stated_scale():
    g, x = build("ssa")
    q, rep = quantize_loihi(g, x[:64], steps=T)
    assert isinstance(q["tmean"], fx.TemporalSum) and rep["output"]["node"] == "tmean"
    f = run(g, x[64:], steps=T).final()
    gd = run_golden(q, x[64:], steps=T).final().double() / (T * rep["output"]["scale"])
    assert (f.argmax(-1) == gd.argmax(-1)).float().mean() >= 0.8


def test_unsupported_neurons_are_named():
    g = ir.Graph([ir.Input("x", shape=(4,)), ir.Linear("fc", ("x",), weight=np.eye(4, dtype=np.float32)),
                  ir.Neuron("lif", ("fc",), reset="soft"), ir.Output("y", ("lif",))])
    with pytest.raises(ir.IRError, match="lif"):
        quantize_loihi(g, torch.rand(8, 4), steps=T)


def test_delay_schedule_balances_every_join():
    g, x = build("residual")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    s = schedule(q)
    for n in q.nodes.values():
        if len(n.inputs) > 1:
            arrivals = {s.latency[i] + s.delays.get((n.name, k), 0) for k, i in enumerate(n.inputs)}
            assert len(arrivals) == 1, n.name
    assert s.delays == {("res", 0): 1} and s.latency["y"] == s.depth == 4


def test_weight_free_attention_needs_no_calibration_bits():
    _, rep = quantize_loihi(attention_graph(), _spikes(0), steps=T)
    assert rep["layers"]["qkv"]["scale"] == 8.0 and rep["saturation_total"] == 0
