"""Energy counters (``step_deploy.energy``): hand-computed counts, value classes, attention
products, and the same counts from the PyTorch model (forward hooks), the float reference
interpreter and the integer golden model."""
import json

import numpy as np
import pytest
import torch

from conftest import random_model
from step_deploy import ir
from step_deploy.energy.counters import CountError, Counts, bit_widths, compare_counts, count_graph, needed_traces
from step_deploy.energy.torch_hooks import hook_traces
from step_deploy.energy.value_classes import value_classes
from step_deploy.frontend.capture import capture, encoded_input
from step_deploy.simulators import reference

ARCHS = ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits"]


def digits(n, split="test"):
    from step_deploy.data.digits import digits_arrays

    return torch.from_numpy(digits_arrays(split)[0][:n])


def counted(graph, x, steps, **bits):
    res = reference.run(graph, x, steps=steps, record=needed_traces(graph))
    return count_graph(graph, res.traces, next(iter(res.outputs.values())).shape[0], **bits)


# --------------------------------------------------------------------------- a network counted by hand


def two_layer_graph():
    """Input spikes (1, 3, 3) -> Conv2d 1->2, 3x3, padding 1, all weights 1 -> LIF (tau 2, V_th 1)
    -> flatten -> Linear 18 -> 3."""
    return ir.Graph([
        ir.Input("x", (), shape=(1, 3, 3), kind="spikes"),
        ir.Conv2d("conv", ("x",), weight=np.ones((2, 1, 3, 3), np.float32), bias=None, padding=(1, 1)),
        ir.Neuron("lif", ("conv",), tau=2.0, v_threshold=1.0),
        ir.Flatten("flat", ("lif",), start_dim=0, end_dim=-1),
        ir.Linear("fc", ("flat",), weight=np.ones((3, 18), np.float32), bias=None),
        ir.Output("out", ("fc",)),
    ])


def two_layer_spikes():
    """Step 0: the centre pixel; step 1: the centre and the top-left corner. (T=2, B=1, 1, 3, 3)."""
    x = torch.zeros(2, 1, 1, 3, 3)
    x[0, 0, 0, 1, 1] = 1
    x[1, 0, 0, 1, 1] = 1
    x[1, 0, 0, 0, 0] = 1
    return x


def test_a_two_layer_network_counted_by_hand():
    c = counted(two_layer_graph(), two_layer_spikes(), 2, weight_bits=8, membrane_bits=16)
    assert [r.name for r in c.rows] == ["conv", "lif", "fc"]
    conv, lif, fc = c.rows
    # fan-out with a 3x3 kernel and padding 1 on a 3x3 map: an edge position feeds 2 outputs per
    # axis, the centre 3. The centre spike reaches 3*3 outputs in each of 2 channels (18), the
    # corner 2*2*2 = 8.
    assert conv.value_class == "binary" and conv.bits == 1 and conv.operation == "ac"
    assert conv.per_step("nonzero_inputs").tolist() == [1, 2]
    assert conv.per_step("synops").tolist() == [18, 26]
    assert conv.per_step("dense_macs").tolist() == [2 * 3 * 3 * 9] * 2  # every output x full kernel
    assert conv.per_step("weight_bits_read").tolist() == [18 * 8, 26 * 8]
    assert conv.per_step("weight_bits_read_dense").tolist() == [162 * 8] * 2
    # LIF: step 0 every output sees 1 -> H = 0.5; step 1 the four outputs around the corner see 2
    # -> H = 0.5 + (2 - 0.5) / 2 = 1.25 >= 1, in both channels: 8 spikes.
    assert lif.per_step("spikes").tolist() == [0, 8]
    assert lif.firing_rate == 8 / (18 * 2)
    assert lif.firing_rate_per_step().tolist() == [0.0, 8 / 18]
    assert lif.per_step("updates").tolist() == [18, 18]
    assert lif.per_step("membrane_bits_read").tolist() == [18 * 16] * 2
    assert lif.per_step("membrane_bits_written").tolist() == [18 * 16] * 2
    assert lif.per_step("spike_bits").tolist() == [0, 8]
    assert lif.per_step("spike_bits_dense").tolist() == [18, 18]
    # Linear 18 -> 3: each spike reaches 3 outputs.
    assert fc.per_step("synops").tolist() == [0, 24]
    assert fc.per_step("dense_macs").tolist() == [54, 54]
    assert c.totals()["synapse"]["synops"] == 18 + 26 + 24
    assert c.totals()["synapse"]["synops_binary"] == 68


def test_default_bit_widths_come_from_the_graph():
    c = counted(two_layer_graph(), two_layer_spikes(), 2)
    assert c.row("conv").weight_bits == 32 and c.row("lif").membrane_bits == 32
    c = counted(two_layer_graph(), two_layer_spikes(), 2, weight_bits={"fc": 4}, membrane_bits=20)
    assert (c.row("conv").weight_bits, c.row("fc").weight_bits, c.row("lif").membrane_bits) == (32, 4, 20)
    assert c.row("fc").per_step("weight_bits_read").tolist() == [0, 24 * 4]


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2),
                                                           (3, 2, 1, 4)])
def test_synops_equal_a_convolution_of_the_nonzero_map_with_unit_weights(stride, padding, dilation, groups):
    """NeuroBench's effective operations: convolve the non-zero map with all-ones weights and sum
    the outputs; padding positions contribute nothing."""
    cin, cout = 4, 8
    g = ir.Graph([ir.Input("x", (), shape=(cin, 7, 6), kind="spikes"),
                  ir.Conv2d("conv", ("x",), weight=np.ones((cout, cin // groups, 3, 3), np.float32), bias=None,
                            stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation),
                            groups=groups),
                  ir.Output("out", ("conv",))])
    x = (torch.rand(3, 2, cin, 7, 6, generator=torch.Generator().manual_seed(stride + padding)) < 0.3).float()
    c = count_graph(g, {"x": x}, 3)
    ones = torch.ones(cout, cin // groups, 3, 3)
    ref = torch.nn.functional.conv2d(x.flatten(0, 1), ones, None, stride, padding, dilation, groups)
    want = ref.reshape(3, 2, -1).sum(-1).T.to(torch.int64).numpy()
    assert np.array_equal(c.row("conv").counters["synops"], want)
    out = g.infer_shapes()["conv"]
    assert c.row("conv").per_step("dense_macs").tolist() == [2 * int(np.prod(out)) * (cin // groups) * 9] * 3


def test_conv1d_and_linear_on_token_maps_count_each_nonzero_times_its_fan_out():
    g = ir.Graph([ir.Input("x", (), shape=(5, 4), kind="spikes"),
                  ir.Conv1d("c1", ("x",), weight=np.ones((6, 5, 1), np.float32), bias=None),
                  ir.Linear("fc", ("x",), weight=np.ones((7, 4), np.float32), bias=None),
                  ir.Output("o1", ("c1",)), ir.Output("o2", ("fc",))])
    x = torch.zeros(1, 1, 5, 4)
    x[0, 0, [0, 2, 4], [1, 1, 3]] = 1
    c = count_graph(g, {"x": x}, 1)
    assert c.row("c1").total("synops") == 3 * 6 and c.row("c1").total("dense_macs") == 6 * 4 * 5
    assert c.row("fc").total("synops") == 3 * 7 and c.row("fc").total("dense_macs") == 5 * 4 * 7


# --------------------------------------------------------------------------- value classes


def test_value_classes_of_spikes_residual_sums_and_analog_input():
    lif = dict(tau=2.0, v_threshold=1.0)
    g = ir.Graph([
        ir.Input("img", (), shape=(6,), kind="analog"),
        ir.Linear("l0", ("img",), weight=np.eye(6, dtype=np.float32), bias=None),
        ir.Neuron("s1", ("l0",), **lif), ir.Neuron("s2", ("l0",), **lif), ir.Neuron("s3", ("l0",), **lif),
        ir.Add("res", ("s1", "s2")), ir.Add("res2", ("res", "s3")),
        ir.Linear("l1", ("res2",), weight=np.ones((2, 6), np.float32), bias=None),
        ir.Output("out", ("l1",)),
    ])
    cls = value_classes(g)
    assert (cls["img"].kind, cls["img"].bits) == ("real", None)
    assert (cls["s1"].kind, cls["s1"].bits) == ("binary", 1)
    assert (cls["res"].kind, cls["res"].max_level, cls["res"].bits) == ("multilevel", 2, 2)
    assert (cls["res2"].kind, cls["res2"].max_level, cls["res2"].bits) == ("multilevel", 3, 2)
    x = torch.tensor([[0.0, 2.0, 0.0, 3.0, 0.0, 0.5]])
    c = counted(g, x, 2)
    l0, l1 = c.row("l0"), c.row("l1")
    assert (l0.value_class, l0.bits, l0.operation) == ("real", None, "mac")
    assert l0.per_step("nonzero_inputs").tolist() == [3, 3]  # zero pixels are skipped (effective MACs)
    assert l0.per_step("synops").tolist() == [18, 18]
    assert (l1.value_class, l1.bits, l1.operation) == ("multilevel", 2, "mac")


def test_the_spikformer_residual_stream_is_multilevel_with_its_bits():
    g = capture(random_model("spikformer-2-64-digits"))
    cls = value_classes(g)
    # stem: rpe_lif + maxpooled spikes (0..2); each of the 2 blocks adds attn and mlp spikes
    assert cls["patch_embed.rpe_add"].max_level == 2
    assert cls["block.1.mlp_res"].max_level == 6 and cls["block.1.mlp_res"].bits == 3
    assert cls["block.0.attn.qk"].kind == "multilevel"


# --------------------------------------------------------------------------- attention products


def attention_graph():
    return ir.Graph([
        ir.Input("a", (), shape=(2, 3), kind="spikes"), ir.Input("b", (), shape=(3, 2), kind="spikes"),
        ir.Input("m", (), shape=(2, 3), kind="spikes"),
        ir.MatMul("ab", ("a", "b")),
        ir.Mul("am", ("a", "m")),
        ir.MatMul("abt", ("ab", "b"), transpose_b=True),
        ir.Sum("col", ("am",), axis=0, keepdim=True),
        ir.Output("o1", ("abt",)), ir.Output("o2", ("col",)),
    ])


def test_attention_products_count_coincidences_and_accumulates():
    a = torch.tensor([[1.0, 0, 1], [0, 1, 1]])
    b = torch.tensor([[1.0, 1], [0, 1], [1, 0]])
    m = torch.tensor([[1.0, 1, 0], [0, 1, 0]])
    feed = {k: v.reshape(1, 1, *v.shape) for k, v in (("a", a), ("b", b), ("m", m))}
    c = counted(attention_graph(), feed, None)
    ab, am, abt, col = (c.row(n) for n in ("ab", "am", "abt", "col"))
    # a @ b: AND + popcount; column counts of a [1, 1, 2] times row counts of b [2, 1, 1] = 5
    assert (ab.kind, ab.value_class, ab.operation) == ("product", "binary*binary", "and")
    assert (ab.total("products"), ab.total("coincidences"), ab.total("accumulates")) == (12, 5, 5)
    assert ab.total("coincidences") == int((a @ b).sum())
    # a * m: elementwise AND, nothing accumulated
    assert (am.total("products"), am.total("coincidences"), am.total("accumulates")) == (6, 2, 0)
    # (a @ b) @ b^T: a count (0..3) times spikes: the count is added where the spike is 1
    ab_val = a @ b  # [[2, 1], [1, 1]], all non-zero
    assert (abt.value_class, abt.operation, abt.bits) == ("multilevel*binary", "ac", 2)
    assert abt.total("products") == 2 * 2 * 3
    assert abt.total("coincidences") == int(((ab_val != 0).float() @ (b.T != 0).float()).sum()) == 8
    # column sum of the AND map: one accumulate per non-zero value
    assert (col.kind, col.total("values"), col.total("accumulates")) == ("reduction", 6, 2)


def test_sdt_attention_is_counted_apart_from_synapses():
    g = capture(random_model("sdt-1-64-digits"))
    c = counted(g, encoded_input(random_model("sdt-1-64-digits"), digits(2)), None)
    kinds = {r.name: r.kind for r in c.rows}
    assert kinds["block.0.attn.k_mul_v"] == kinds["block.0.attn.q_mul_kv"] == "product"
    assert kinds["block.0.attn.kv_sum"] == "reduction"
    assert not any(r.kind == "synapse" and r.op in ("MatMul", "Mul") for r in c.rows)
    # readout: the head is counted per step on head_lif's spikes (Linear -> temporal sum)
    head, lif = c.row("head"), c.row("head_lif")
    assert np.array_equal(head.counters["nonzero_inputs"], lif.counters["spikes"])
    assert np.array_equal(head.counters["synops"], lif.counters["spikes"] * 10)


# --------------------------------------------------------------------------- the same counts from every source


@pytest.mark.parametrize("arch", ARCHS)
def test_pytorch_hooks_and_the_reference_interpreter_count_the_same(arch):
    """(a) forward hooks on the PyTorch model == (b) the float reference interpreter on the
    captured graph, every counter of every layer, sample and step (float32: the same spikes)."""
    model = random_model(arch)
    graph = capture(model)
    x = digits(3)
    a = count_graph(graph, hook_traces(model, x, graph), model.step)
    b = counted(graph, encoded_input(model, x), None)
    assert compare_counts(a, b) == []
    assert a.as_json(per_sample=True) == b.as_json(per_sample=True)
    assert sum(r.total("spikes") for r in a.of_kind("neuron")) > 0
    assert any(r.value_class == "multilevel" for r in a.of_kind("synapse")) == (arch != "sdt-1-64-digits")
    assert a.rows[0].value_class == "real" and a.rows[0].operation == "mac"


def _golden_vs_float(arch, fmt="fpga"):
    """(c) the integer golden model on the FPGA- (or Loihi-) quantized graph against (b) the float graph counted
    on (c)'s own values. Quantization flips a few spikes, so (b)'s own run is not comparable
    spike for spike; counting the float graph on the golden spikes checks that the quantized
    graph's structure (FpgaConv2d/FpgaLIF, Mean -> Sum, Linear -> FpgaTemporalSum readout,
    QuantizeInput) is counted exactly like the float one. The float graph's analog input is the
    float pixels (zero exactly where the quantized pixels are)."""
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.passes.quantize_fpga import quantize_fpga
    from step_deploy.passes.quantize_loihi import quantize_loihi
    from step_deploy.simulators.golden import run_golden

    model = random_model(arch)
    g = fold_batchnorm(capture(model))
    T = model.step
    calib = encoded_input(model, digits(8, "train"))
    if fmt == "fpga":  # bias correction changes biases, not what is counted: skip its extra float run
        q, _ = quantize_fpga(g, calib, steps=T, bias_correction=False)
    else:
        q, _ = quantize_loihi(g, calib, steps=T)
    x = encoded_input(model, digits(2))
    gold = run_golden(q, x, steps=T, record=needed_traces(q))
    c = count_graph(q, gold.traces, T)
    own = {n: (x if n == "input" else gold.traces[n]) for n in needed_traces(g)}
    wb, mb = bit_widths(q)
    b = count_graph(g, own, T, weight_bits=wb, membrane_bits=mb)
    # before any spike can flip, the float run's own counts are the golden model's: the analog first
    # layer sees the same non-zero pixels
    first = next(r.name for r in c.rows)
    float_run = reference.run(g, x, record=needed_traces(g)).traces
    mine = count_graph(g, float_run, T, weight_bits=wb, membrane_bits=mb)
    assert not [d for d in compare_counts(mine, c) if d.startswith(first + " ")]
    return b, c, q


@pytest.mark.parametrize("arch", ARCHS)
def test_the_fpga_golden_model_counts_like_the_float_graph_on_its_own_spikes(arch):
    b, c, _ = _golden_vs_float(arch)
    assert compare_counts(b, c) == []
    first, neuron = c.rows[0], c.of_kind("neuron")[0]
    assert (first.op, first.weight_bits, neuron.op) == ("FpgaConv2d", 8, "FpgaLIF")
    assert 16 <= neuron.membrane_bits <= 25
    assert c.row("head").op == "FpgaLinear"


def test_the_loihi_golden_model_counts_like_the_float_graph_on_its_own_spikes():
    b, c, _ = _golden_vs_float("sdt-1-64-digits", "loihi")
    assert compare_counts(b, c) == []
    assert c.row("patch_embed.proj_conv").op == "FixedConv2d" and c.row("patch_embed.proj_conv").weight_bits == 8
    assert c.row("patch_embed.proj_lif").op == "LoihiLIF" and c.row("patch_embed.proj_lif").membrane_bits == 48


def test_a_single_flipped_spike_is_reported_with_its_count():
    g = two_layer_graph()
    res = reference.run(g, two_layer_spikes(), record=needed_traces(g))
    a = count_graph(g, res.traces, 2)
    flipped = dict(res.traces)
    lif = flipped["lif"].clone()
    lif[0, 0, 1, 2, 2] = 1
    flipped["lif"], flipped["flat"] = lif, lif.flatten(2)
    d = compare_counts(a, count_graph(g, flipped, 2))
    assert "lif spikes: 1 of 2 (sample, step) entries differ, first at sample 0 step 0: 0 vs 1" in d
    assert any(line.startswith("fc synops: 1 of 2") for line in d)


# --------------------------------------------------------------------------- reports and errors


def test_json_is_deterministic_and_batches_concatenate():
    model = random_model("sdt-1-64-digits")
    g = capture(model)
    traces = reference.run(g, encoded_input(model, digits(4)), record=needed_traces(g)).traces
    whole = count_graph(g, traces, model.step)
    again = count_graph(g, {k: v.clone() for k, v in traces.items()}, model.step)
    assert whole.as_json(per_sample=True) == again.as_json(per_sample=True)
    d = json.loads(whole.as_json(per_sample=True))
    assert list(d) == sorted(d) and d["samples"] == 4 and d["steps"] == model.step
    halves = Counts.concat([count_graph(g, {k: v[:, :2] for k, v in traces.items()}, model.step),
                            count_graph(g, {k: v[:, 2:] for k, v in traces.items()}, model.step)])
    assert compare_counts(halves, whole) == []
    one = whole.sample(3)
    assert one.samples == 1 and one.row("head").total("synops") == int(whole.row("head").per_sample("synops")[3])
    row = d["layers"][0]
    assert row["total"]["synops"] == sum(row["per_step"]["synops"]) == sum(row["per_sample"]["synops"])


def test_missing_or_misshapen_traces_are_errors_naming_the_node():
    g = two_layer_graph()
    res = reference.run(g, two_layer_spikes(), record=needed_traces(g))
    assert needed_traces(g) == ["x", "lif", "flat"]
    partial = {k: v for k, v in res.traces.items() if k != "flat"}
    with pytest.raises(CountError, match="no trace of node 'flat' \\(needed to count 'fc'\\)"):
        count_graph(g, partial, 2)
    bad = dict(res.traces, lif=res.traces["lif"][:, :, :1])
    with pytest.raises(CountError, match="trace of node 'lif' has shape"):
        count_graph(g, bad, 2)
    with pytest.raises(CountError, match="none of the traces"):
        count_graph(g, {}, 2)
    with pytest.raises(CountError, match="weight_bits=0 for node 'conv'"):
        count_graph(g, res.traces, 2, weight_bits={"conv": 0})
    with pytest.raises(CountError, match="steps=0"):
        count_graph(g, res.traces, 0)


def test_hooking_a_model_the_graph_was_not_captured_from_is_an_error():
    sdt = random_model("sdt-1-64-digits")
    other = capture(random_model("qkformer-2-64-digits"))
    with pytest.raises(CountError, match="cannot be traced from PyTorch|cannot be taken from the PyTorch model"):
        hook_traces(sdt, digits(1), other)
    with pytest.raises(CountError, match="pass steps=T"):
        hook_traces(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), digits(1), two_layer_graph())
