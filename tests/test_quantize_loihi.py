"""quantize_loihi: legal Loihi parameters, scales, thresholds, tie strategies, headroom, report."""
import functools
import importlib.util
import json

import numpy as np
import pytest
import torch
from test_golden import GRAPHS, T, attention_graph, build, _spikes

from step_deploy import ir
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run
from step_deploy.fixedpoint import loihi as fx
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
                  ir.Neuron("lif", ("fc",), v_reset=0.5), ir.Output("y", ("lif",))])  # soft reset deploys now
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


# --------------------------------------------------------------------------- signed analog input


@functools.lru_cache(maxsize=None)
def _normalized_digits_stem():
    """A conv -> LIF stem on mean/std-normalised digits (values about -0.81 .. 1.85, like STEP's
    normalised CIFAR pixels): 256 training images to calibrate, 128 test images to compare."""
    from step_deploy.data import load_dataset

    r = np.random.default_rng(5)
    g = ir.Graph([ir.Input("x", shape=(1, 8, 8), kind="analog"),
                  ir.Conv2d("conv", ("x",), weight=(r.standard_normal((8, 1, 3, 3)) * 0.6).astype(np.float32),
                            bias=(r.standard_normal(8) * 0.2).astype(np.float32), padding=(1, 1)),
                  ir.Neuron("lif", ("conv",)), ir.Output("y", ("lif",))])
    train, test = load_dataset("digits", "train").tensors[0], load_dataset("digits", "test").tensors[0]
    mean, std = train.mean(), train.std()
    return g, (train[:256] - mean) / std, (test[:128] - mean) / std


def _first_layer_mismatches(g, q, x):
    ref = run(g, x, steps=T, record=["lif"]).traces["lif"]
    gold = run_golden(q, x, steps=T, record=["lif"], events=True)
    return int((gold.traces["lif"] != ref.to(torch.int64)).sum()), int(ref.sum()), ref.numel(), gold.events


def test_normalised_input_gets_a_signed_quantizer_without_clipping():
    g, xc, xe = _normalized_digits_stem()
    assert float(xc.min()) < -0.8 and float(xc.max()) > 1.8
    q, rep = quantize_loihi(g, xc, steps=T)
    qi = rep["inputs"]["x"]
    assert q["x.q"].signed and (qi["signed"], qi["range"], qi["scale"]) == (True, [-128, 127], 64.0)  # 127/1.85
    assert qi["clipped"] == 0 and "x.q" not in rep["saturation_events"] and qi["calib_min"] < -0.8
    bad, spikes, total, events = _first_layer_mismatches(g, q, xe)
    assert "input_clip" not in events["x.q"]
    # measured: 803 of 262,144 first-layer spike values differ (99.69 % agree; the float layer fires 28,801):
    # 8-bit input rounding (step 1/64) moves a few membranes across the threshold
    assert bad / total < 0.005 and bad / spikes < 0.05, (bad, spikes, total)


def test_the_old_unsigned_quantizer_clips_normalised_input_and_changes_spikes():
    g, xc, xe = _normalized_digits_stem()
    signed, _ = quantize_loihi(g, xc, steps=T)
    q, rep = quantize_loihi(g, xc, steps=T, input_signed=False)
    qi = rep["inputs"]["x"]
    assert not q["x.q"].signed and qi["signed_reason"] == "forced by input_signed"
    assert qi["clipped"] == rep["saturation_events"]["x.q"] > 10_000  # every background pixel (< 0) -> 0
    bad_unsigned, spikes, total, events = _first_layer_mismatches(g, q, xe)
    bad_signed = _first_layer_mismatches(g, signed, xe)[0]
    assert events["x.q"]["input_clip"] > 0
    # measured: 19,774 of 262,144 differ (92.46 % agree), 24.6x the signed quantizer's 803
    assert bad_unsigned / total > 0.05 and bad_unsigned > 10 * bad_signed, (bad_unsigned, bad_signed)


def test_non_negative_input_keeps_the_unsigned_quantizer():
    g, xc, _ = _normalized_digits_stem()
    _, rep = quantize_loihi(g, xc - xc.min(), steps=T)
    assert rep["inputs"]["x"]["signed"] is False and rep["inputs"]["x"]["range"] == [0, 255]
    assert rep["inputs"]["x"]["signed_reason"] == "calibration inputs are all >= 0"


@pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc not installed (make setup installs it)")
def test_lava_receives_signed_graded_input_bit_exactly():
    from test_lava_parity import assert_parity

    from step_deploy.exporters.lava_runner import host_inputs

    g, xc, xe = _normalized_digits_stem()
    q, _ = quantize_loihi(g, xc, steps=T)
    assert host_inputs(q, xe[0], T)["x.q"].min() < 0  # negative integers really reach the Sparse synapses
    assert_parity(q, xe, samples=(0, 1))


def test_fractional_event_frames_get_an_input_quantizer_integer_counts_do_not():
    """STEP resizes DVS frames bilinearly, so 'counts' inputs can be fractional: the golden model
    would refuse them as counts; they are quantized like analog input instead."""
    r = np.random.default_rng(6)
    g = ir.Graph([ir.Input("x", shape=(2, 8, 8), kind="counts"),
                  ir.Conv2d("conv", ("x",), weight=(r.standard_normal((4, 2, 3, 3)) * 0.8).astype(np.float32),
                            bias=None, padding=(1, 1)),
                  ir.Neuron("lif", ("conv",)), ir.Output("y", ("lif",))])
    counts = torch.poisson(torch.full((T, 96, 2, 16, 16), 0.4), generator=torch.Generator().manual_seed(0))
    resized = torch.nn.functional.interpolate(counts.flatten(0, 1), size=(8, 8), mode="bilinear",
                                              align_corners=False).reshape(T, 96, 2, 8, 8)
    assert not torch.equal(resized, resized.round())
    q, rep = quantize_loihi(g, resized[:, :64], steps=T)
    assert q["x"].kind == "analog" and isinstance(q["x.q"], fx.QuantizeInput) and rep["inputs"]["x"]["clipped"] == 0
    assert "fractional values" in rep["inputs"]["x"]["note"]
    ref = run(g, resized[:, 64:], steps=T, record=["lif"]).traces["lif"]
    gold = run_golden(q, resized[:, 64:], steps=T, record=["lif"]).traces["lif"]
    bad = int((gold != ref.to(torch.int64)).sum())
    # measured: 99 of 32,768 spike values differ (99.70 % agree; the float layer fires 6,650)
    assert int(ref.sum()) > 100 and bad / ref.numel() < 0.01, (bad, int(ref.sum()), ref.numel())
    q2, rep2 = quantize_loihi(g, counts[:, :64, :, :8, :8], steps=T)  # integer counts: exact, no quantizer
    assert rep2["inputs"] == {} and q2["x"].kind == "counts" and q2["conv"].inputs == ("x",)
