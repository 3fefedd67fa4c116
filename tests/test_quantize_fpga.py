"""The FPGA fixed-point format ``'fpga-int'``: its integer ops against hand-computed values (the
rounding and saturation the node docstrings state), the tau = 2 LIF bit-exact against the float
LIF where inputs are representable, attention exact in integers, membrane widths and saturation
reported, weight bits, and float vs golden accuracy on the trained digits models."""

import numpy as np
import pytest
import torch

from step_deploy import fixedpoint, ir
from step_deploy.fixedpoint import fpga as fx
from step_deploy.frontend.capture import capture, encoded_input
from step_deploy.ir.diagnostics import IRError
from step_deploy.passes import PassContext, graph_properties, run_pipeline
from step_deploy.passes.fold_batchnorm import fold_batchnorm
from step_deploy.passes.quantize_fpga import quantize_fpga, quantize_weights
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.golden_fpga import lif_charge, op_fpga_lif, round_shift
from step_deploy.simulators.reference import run

from conftest import DIGITS_EPOCHS, random_model, reuse_quantized
from test_golden import T, build


def fpga_graph(*nodes, shape=(3,)):
    return ir.Graph([ir.Input("x", shape=shape, kind="counts"), *nodes, ir.Output("y", (nodes[-1].name,))],
                    {ir.FORMAT_KEY: fx.FORMAT_NAME})


def steps_of(values):
    """``[[step0 values], [step1 values], ...]`` -> int64 ``(T, 1, n)``."""
    return torch.tensor(values, dtype=torch.int64).unsqueeze(1)


# --------------------------------------------------------------------------- integer ops, by hand


def test_round_shift_rounds_half_up_and_left_shifts_negative_shifts():
    acc = torch.tensor([5, 6, 7, -5, -6, -7, 1, -1])
    assert round_shift(acc, torch.tensor(1)).tolist() == [3, 3, 4, -2, -3, -3, 1, 0]  # 2.5->3, -2.5->-2, -0.5->0
    assert round_shift(acc, torch.tensor(2)).tolist() == [1, 2, 2, -1, -1, -2, 0, 0]  # 1.25, 1.5, 1.75, -1.25 ...
    assert round_shift(acc, torch.tensor(0)).tolist() == acc.tolist()
    assert round_shift(acc, torch.tensor(-2)).tolist() == (acc * 4).tolist()


def test_linear_rounds_saturates_the_accumulator_and_the_output_and_counts_both():
    lin = fx.FpgaLinear("fc", ("x",), weight=np.array([[1, 2, -3]], np.int8), shift=np.array([1]),
                        bias=np.array([1]), acc_bits=8, out_bits=4)
    x = steps_of([[1, 1, 1], [2, 0, 0], [0, 0, 1], [0, 0, 2], [0, 100, 0], [0, 0, 50]])
    res = run_golden(fpga_graph(lin), x, events=True)
    # acc = 1, 3, -2, -5, 201 -> 127 (8 bits), -149 -> -128; (acc + 1) >> 1, then 4 bits [-8, 7]
    assert res.outputs["y"][:, 0, 0].tolist() == [1, 2, -1, -2, 7, -8]
    assert res.events["fc"]["acc_overflow"] == 2 and res.events["fc"]["out_sat"] == 2


def test_conv_applies_one_shift_per_output_channel():
    w = np.ones((2, 1, 2, 2), np.int8)
    conv = fx.FpgaConv2d("c", ("x",), weight=w, shift=np.array([0, 2]), bias=None, acc_bits=16, out_bits=16)
    x = torch.arange(9, dtype=torch.int64).reshape(1, 1, 1, 3, 3)
    y = run_golden(fpga_graph(conv, shape=(1, 3, 3)), x).outputs["y"][0, 0]
    sums = torch.tensor([[8, 12], [20, 24]])  # 2x2 window sums of 0..8
    assert torch.equal(y[0], sums) and torch.equal(y[1], (sums + 2) >> 2)


def test_lif_halves_with_a_floor_fires_on_ge_and_resets_to_zero():
    lif = fx.FpgaLIF("lif", ("x",), threshold=4, membrane_bits=16)
    state, spikes, membranes = {}, [], []
    for a in (5, 3, 9, -3, 8):
        spikes.append(int(op_fpga_lif(lif, [torch.tensor([a])], state, 0)))
        membranes.append(int(state["m"]))
    # H = (M + A) >> 1: 2 (2.5), 2, 5 -> spike, reset; -2 (-1.5 floors); 3 (-2 + 8 = 6 -> 3)
    assert spikes == [0, 0, 1, 0, 0] and membranes == [2, 2, 0, -2, 3]
    m, a = torch.tensor([7, -7]), torch.tensor([0, 0])
    assert lif_charge(ir.replace(lif, decay="state"), m, a).tolist() == [3, -4]
    assert lif_charge(ir.replace(lif, decay="none"), m, a).tolist() == [7, -7]


def test_lif_membrane_saturates_at_its_bits_and_counts_it():
    lif = fx.FpgaLIF("lif", ("x",), threshold=7, membrane_bits=4, decay="none")  # 4 bits: [-8, 7]
    res = run_golden(fpga_graph(lif, shape=(1,)), steps_of([[-5], [-5], [30], [-1]]), events=True)
    assert res.traces["lif"][:, 0, 0].tolist() == [0, 0, 1, 0]  # -5, -10 -> -8, 22 -> 7 >= 7, -1
    assert res.events["lif"]["membrane_sat"] == 2
    with pytest.raises(ValueError, match="threshold 100 does not fit a signed 4-bit membrane"):
        fx.FpgaLIF("bad", ("x",), threshold=100, membrane_bits=4)


def test_input_quantizer_rounds_half_even_clips_and_counts():
    q = fx.FpgaQuantizeInput("x.q", ("x",), scale=4.0, bits=4, signed=False)
    g = ir.Graph([ir.Input("x", shape=(5,), kind="analog"), q, ir.Output("y", ("x.q",))],
                 {ir.FORMAT_KEY: fx.FORMAT_NAME})
    res = run_golden(g, torch.tensor([[[0.125, 0.375, 3.9, -1.0, 2.0]]]), events=True)
    assert res.outputs["y"][0, 0].tolist() == [0, 2, 15, 0, 8]  # 0.5 -> 0, 1.5 -> 2, 15.6 -> 15, -4 -> 0
    assert res.events["x.q"]["input_clip"] == 2


def test_readout_sum_saturates_and_counts():
    g = fpga_graph(fx.FpgaTemporalSum("acc", ("x",), bits=5), shape=(1,))  # [-16, 15]
    res = run_golden(g, steps_of([[9], [9], [-40]]), events=True)
    assert res.outputs["y"][:, 0, 0].tolist() == [9, 15, -16]
    assert res.events["acc"]["readout_sat"] == 2


# --------------------------------------------------------------------------- exact against float


@pytest.mark.parametrize("kind,decay_input,decay", [("LIF", True, "input"), ("LIF", False, "state"),
                                                    ("IF", True, "none")])
def test_lif_is_bit_exact_with_the_float_lif_on_representable_inputs(kind, decay_input, decay):
    """Inputs on a grid of 1/8 (membrane scale 8), threshold 1.0 -> 8: the floor in the shift
    never changes a spike, over 16 steps and 4000 neurons."""
    a = torch.randint(-24, 40, (16, 4, 1000), generator=torch.Generator().manual_seed(0))
    fl = ir.Graph([ir.Input("x", shape=(1000,), kind="analog"),
                   ir.Neuron("lif", ("x",), kind=kind, decay_input=decay_input), ir.Output("y", ("lif",))])
    ref = run(fl, a.to(torch.float64) / 8, record=True, dtype=torch.float64).traces["lif"]
    q = fx.FpgaLIF("lif", ("x",), threshold=8, membrane_bits=16, decay=decay)
    gold = run_golden(fpga_graph(q, shape=(1000,)), a).traces["lif"]
    assert 0.02 < float(ref.mean()) < 0.9
    assert int((ref.to(torch.int64) != gold).sum()) == 0


def _spike_inputs(names, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.rand((T, 48) + shape, generator=g) < 0.4).float() for k in names}


def attention_graph(kind, n=8, c=8, heads=2):
    d = c // heads
    inputs = [ir.Input(p, shape=(heads, n, d), kind="spikes") for p in "qkv"]
    if kind == "ssa":  # Spikformer: LIF_0.5((Q Kᵀ · 0.125) V)
        body = [ir.MatMul("qk", ("q", "k"), transpose_b=True, scale=0.125), ir.MatMul("attn", ("qk", "v")),
                ir.Neuron("attn_lif", ("attn",), v_threshold=0.5)]
    elif kind == "ssa-linear":  # QKFormer stage 3: Q (Kᵀ V) · 0.125
        body = [ir.MatMul("kv", ("k", "v"), transpose_a=True), ir.MatMul("attn", ("q", "kv"), scale=0.125),
                ir.Neuron("attn_lif", ("attn",), v_threshold=0.5)]
    elif kind == "sdsa":  # SDT: Q ⊙ LIF(Σ_tokens K ⊙ V)
        body = [ir.Mul("kv", ("k", "v")), ir.Sum("kv_sum", ("kv",), axis=1, keepdim=True),
                ir.Neuron("kv_lif", ("kv_sum",)), ir.Mul("attn", ("q", "kv_lif")),
                ir.Neuron("attn_lif", ("attn",), v_threshold=0.5)]
    else:  # QKFormer token attention: K ⊙ LIF_0.5(Σ_channels Q)
        body = [ir.Sum("q_sum", ("q",), axis=2, keepdim=True), ir.Neuron("mask", ("q_sum",), v_threshold=0.5),
                ir.Mul("attn", ("mask", "k")), ir.Neuron("attn_lif", ("attn",), v_threshold=0.5)]
    return ir.Graph(inputs + body + [ir.Output("y", ("attn_lif",))]), (heads, n, d)


@pytest.mark.parametrize("kind", ["ssa", "ssa-linear", "sdsa", "token"])
def test_attention_is_exact_in_integers_on_binary_inputs(kind):
    g, shape = attention_graph(kind)
    x = _spike_inputs("qkv", shape, seed=3)
    q, report = quantize_fpga(g, {k: v[:, :16] for k, v in x.items()}, steps=T)
    assert {n.op for n in q.nodes.values()} <= {"Input", "Output", "MatMul", "Mul", "Sum", "FpgaLIF"}
    ref, gold = run(g, x, record=True), run_golden(q, x, record=True)
    for name, spikes in gold.traces.items():
        assert int((ref.traces[name].to(torch.int64) != spikes).sum()) == 0, name
        assert report["layers"][name]["threshold_exact"]
    assert float(gold.traces["attn_lif"].float().mean()) > 0.02
    if kind.startswith("ssa"):  # the 0.125 folds into the count's scale: 0.5 -> 4
        assert report["layers"]["attn_lif"]["threshold_int"] == 4


def test_membrane_residual_adds_two_synapses_in_the_same_units():
    g, x = build("sdt")
    q, report = quantize_fpga(g, x, steps=T)
    lay = report["layers"]
    assert lay["proj"]["scale"] == lay["stem"]["scale"] == lay["out_lif"]["membrane_scale"]
    assert q["shortcut"].op == "Add" and q["proj"].out_bits == lay["out_lif"]["membrane_bits"]


# --------------------------------------------------------------------------- quantizer and report


def test_report_has_weights_membrane_bits_thresholds_and_no_saturation_with_headroom():
    g, x = build("mlp")
    q, report = quantize_fpga(g, x, steps=T)
    fc1, lif1 = report["layers"]["fc1"], report["layers"]["lif1"]
    assert fc1["op"] == "FpgaLinear" and fc1["weight_bits"] == 8 and len(fc1["weight_scale_log2"]) == 32
    assert -128 <= fc1["weight_min"] < 0 < fc1["weight_max"] <= 127 and fc1["acc_bits"] > 8
    assert q["fc1"].weight.dtype == np.int8 and q["fc1"].shifts().shape == (32,)
    assert report["membrane_bits"] == {"lif1": q["lif1"].membrane_bits, "lif2": q["lif2"].membrane_bits}
    assert all(16 <= b <= 25 for b in report["membrane_bits"].values())
    assert lif1["threshold_int"] == lif1["membrane_scale"] and lif1["threshold_exact"]
    assert report["saturation_total"] == 0 and report["inputs"]["x"]["clipped"] == 0


def test_saturation_on_calibration_data_is_counted_per_layer():
    g, x = build("mlp")
    q, report = quantize_fpga(g, x, steps=T, margin=0.01)  # sized for 1 % of the largest value
    assert q["lif1"].membrane_bits == q["fc1"].out_bits == 16  # the floor of the width range
    assert report["layers"]["fc1"]["events"]["out_sat"] > 0  # fc1's output clamped to lif1's width
    assert report["saturation_events"]["fc1"] == report["layers"]["fc1"]["events"]["out_sat"]
    g.replace(ir.replace(g["lif1"], kind="IF"))  # no halving: a clamped input on top of M overflows M
    q, report = quantize_fpga(g, x, steps=T, margin=0.01)
    assert report["layers"]["lif1"]["events"]["membrane_sat"] > 0 and report["saturation_events"]["lif1"] > 0
    assert report["saturation_total"] >= report["saturation_events"]["lif1"]


def test_four_bit_weights_change_the_weights_and_are_reported():
    g, x = build("conv")
    q8, r8 = quantize_fpga(g, x, steps=T)
    q4, r4 = quantize_fpga(g, x, steps=T, weight_bits=4)
    w4 = q4["conv"].weight
    assert w4.min() >= -8 and w4.max() <= 7 and not np.array_equal(w4, q8["conv"].weight)
    assert r4["weight_bits"] == 4 and r4["layers"]["conv"]["weight_bits"] == 4 and q4["conv"].weight_bits == 4
    assert r4["layers"]["conv"]["weight_rel_error"] > r8["layers"]["conv"]["weight_rel_error"]
    per_layer = quantize_fpga(g, x, steps=T, per_channel=False)[0]
    assert len(set(per_layer["conv"].shifts().tolist())) == 1 and len(set(q8["conv"].shifts().tolist())) > 1


def test_quantize_weights_fills_the_bits_per_channel():
    w = np.array([[0.5, -0.25], [0.01, 0.02]])
    q, k, _ = quantize_weights(w, 1.0, 8, True)
    assert k.tolist() == [7, 12] and q.tolist() == [[64, -32], [41, 82]]  # 127/0.5 -> 2^7; 127/0.02 -> 2^12


def test_bias_correction_removes_the_mean_output_error_of_coarse_weights():
    """2-bit weights shift the synapse's mean output; bias correction takes the calibration mean
    of that shift back out of the bias."""
    g, x = build("mlp")
    ref = run(g, x, steps=T, record=["fc1"]).traces["fc1"].to(torch.float64)
    err = {}
    for corr in (False, True):
        q, rep = quantize_fpga(g, x, steps=T, weight_bits=2, bias_correction=corr)
        out = run_golden(q, x, steps=T, record=["fc1"]).traces["fc1"] / rep["layers"]["fc1"]["scale"]
        err[corr] = float((out - ref).mean(dim=(0, 1)).abs().mean())  # per-channel mean error
    assert err[True] < 0.5 * err[False], err


def test_bad_options_and_neurons_name_what_to_do():
    g, x = build("mlp")
    with pytest.raises(ValueError, match="weight_bits=9: the FPGA format takes 2..8 bits"):
        quantize_fpga(g, x, steps=T, weight_bits=9)
    g3 = g.copy()
    g3.replace(ir.replace(g3["lif1"], tau=3.0))
    with pytest.raises(IRError, match="lif1.*tau=3.0 has no exact FPGA shift form"):
        quantize_fpga(g3, x, steps=T)


def test_fpga_pipeline_records_the_format_and_the_saved_graph_reloads(tmp_path):
    g, x = build("residual")
    ctx = PassContext(calibration=x[:32], steps=T)
    q = run_pipeline(g, "fpga", ctx)
    assert graph_properties(q) == {"bn-folded", "quantized:fpga-int"} and "quantize-fpga" in ctx.results
    ir.save(q, tmp_path / "net")
    again = fixedpoint.load(tmp_path / "net")
    a, b = run_golden(q, x[:8], steps=T), run_golden(again, x[:8], steps=T)
    assert all(torch.equal(a.traces[k], b.traces[k]) for k in a.traces) and torch.equal(a.final(), b.final())


def test_random_bn_tiny_model_spikes_agree_with_float_per_layer():
    """A random-weight Spikformer with random BatchNorm statistics: per layer, float and FPGA
    golden spikes agree on >= 98 % of values (measured: 99.85 % on the lowest layer)."""
    from step_deploy.data import load_dataset

    model = random_model("spikformer-2-64-digits")
    graph = fold_batchnorm(capture(model))
    data = load_dataset("digits", "train")
    x = torch.stack([data[i][0] for i in range(48)])
    q, report = quantize_fpga(graph, encoded_input(model, x[:32]), steps=model.step)
    xs = encoded_input(model, x[32:])
    ref, gold = run(graph, xs, steps=model.step, record=True), run_golden(q, xs, steps=model.step, record=True)
    agree = {k: float((ref.traces[k].to(torch.int64) == v).float().mean()) for k, v in gold.traces.items()}
    assert len(agree) == 19 and min(agree.values()) >= 0.98, agree
    assert report["saturation_total"] == 0


# --------------------------------------------------------------------------- accuracy (issue criterion)

@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(DIGITS_EPOCHS))
def test_trained_model_accuracy_float_vs_fpga_golden(arch, fpga_digits):
    """Issue criterion: on the 360 digits test samples the FPGA golden model loses <= 1 point
    (with bias correction, the default; measured on this machine: sdt 98.33 -> 97.78, without it
    97.22, see README); 4-bit weights are reported and stay runnable. The 8-bit graph is
    ``fpga_digits``'s (quantized once per session, shared with test_fpga_csim's whole-test-set
    parity; ``reuse_quantized`` checks it was calibrated on the same 256 training digits)."""
    from step_deploy.data import load_dataset
    from step_deploy.evaluation import accuracy_float_vs_golden

    model, qgraph, report, calib_x = fpga_digits(arch)
    test, calib = load_dataset("digits", "test"), load_dataset("digits", "train")
    res = accuracy_float_vs_golden(model, test, calib=calib, quantize=reuse_quantized(qgraph, report, calib_x))
    assert res["n"] == 360 and res["report"]["saturation_total"] == 0
    assert res["float_acc"] >= 0.9, res
    assert res["golden_acc"] >= res["float_acc"] - 0.01 and res["prediction_agreement"] >= 0.95, res
    # 4-bit weights: only the golden model's accuracy is claimed, so only the golden model runs (no second
    # float run of the test set, no spike traces)
    q4, report4 = quantize_fpga(fold_batchnorm(capture(model)), calib_x, steps=model.step, weight_bits=4)
    x, y = test.tensors[:2]
    pred4 = torch.cat([run_golden(q4, encoded_input(model, xb), steps=model.step, record=()).final().argmax(-1)
                       for xb in x.split(64)])
    golden4 = float((pred4 == y).float().mean())
    assert report4["weight_bits"] == 4 and golden4 >= 0.8, (golden4, report4)
    assert res["report"]["bias_correction"] and report4["bias_correction"]
    print(f"{arch}: float {res['float_acc']:.4f} golden8 {res['golden_acc']:.4f} golden4 {golden4:.4f} "
          f"agreement {res['prediction_agreement']:.4f} spikes {res['spike_agreement']:.4f}")
