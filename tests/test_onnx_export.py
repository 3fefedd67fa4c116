"""ONNX exporter + onnxruntime runner against the reference interpreter.

Every test graph is built by hand with deterministic random weights; B=3, T=4. For each:
the model passes ``onnx.checker`` (full check), onnxruntime's spikes equal the reference's for
every Neuron at every step, and the outputs agree to 1e-4 relative."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch

from step_deploy import ir
from step_deploy.exporters.onnx_export import (OnnxExportError, batchnorm_plans, export_onnx, read_metadata,
                                               sanitize_names)
from step_deploy.exporters.onnx_runner import OnnxSession, run_onnx
from step_deploy.simulators.reference import run

B, T = 3, 4


class W:
    """Deterministic random parameters."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape, scale=0.5):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def bn(self, name, inp, c, axis=0, shift=0.8):
        """Shifted so that the LIF after it fires at a useful rate."""
        return ir.BatchNorm(name, (inp,), gamma=1.5 + self(c, scale=0.3), beta=shift + self(c, scale=0.5),
                            mean=self(c, scale=0.2), var=0.5 + np.abs(self(c)), eps=1e-5, axis=axis)

    def linear(self, name, inp, cin, cout, bias=True):
        return ir.Linear(name, (inp,), weight=self(cout, cin, scale=1.5 / np.sqrt(cin)), bias=self(cout, scale=0.2) if bias else None)

    def spikes(self, *shape, p=0.3):
        return (self.rng.random(shape) < p).astype(np.float32)


# --------------------------------------------------------------------------- graphs


def conv_graph():
    w = W(1)
    return ir.Graph([
        ir.Input("img", shape=(3, 12, 12)),
        ir.Conv2d("stem.conv", ("img",), weight=w(8, 3, 3, 3), bias=w(8), padding=(1, 1)),
        w.bn("stem.bn", "stem.conv", 8),
        ir.Neuron("stem.lif", ("stem.bn",)),
        ir.MaxPool2d("stem.pool", ("stem.lif",), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
        ir.Conv2d("c2", ("stem.pool",), weight=w(16, 4, 3, 3, scale=0.8), bias=None, padding=(2, 2), dilation=(2, 2), groups=2),
        w.bn("bn2", "c2", 16),
        ir.Neuron("lif2", ("bn2",), tau=3.0),
        ir.AvgPool2d("avg", ("lif2",), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
        ir.Neuron("if3", ("avg",), kind="IF", v_threshold=0.4),
        ir.Flatten("flat", ("if3",)),
        w.linear("head", "flat", 16 * 3 * 3, 10),
        ir.TemporalMean("readout", ("head",)),
        ir.Output("logits", ("readout",)),
    ])


def ssa_graph(n=16, c=32, heads=4):
    """Spikformer SSA block: Linear+BN(axis -1)+LIF for Q, K, V; (Q Kᵀ)·0.125 V -> LIF(0.5); residual."""
    w, d = W(2), c // heads
    nodes = [ir.Input("x", shape=(n, c), kind="spikes")]
    for p in "qkv":
        nodes += [w.linear(f"attn.{p}_linear", "x", c, c), w.bn(f"attn.{p}_bn", f"attn.{p}_linear", c, axis=-1),
                  ir.Neuron(f"attn.{p}_lif", (f"attn.{p}_bn",)),
                  ir.Reshape(f"attn.{p}_heads", (f"attn.{p}_lif",), shape=(n, heads, d)),
                  ir.Transpose(f"attn.{p}_t", (f"attn.{p}_heads",), perm=(1, 0, 2))]
    nodes += [
        ir.MatMul("attn.qk", ("attn.q_t", "attn.k_t"), transpose_b=True, scale=0.125),
        ir.MatMul("attn.qkv", ("attn.qk", "attn.v_t")),
        ir.Neuron("attn.attn_lif", ("attn.qkv",), v_threshold=0.5),
        ir.Transpose("attn.merge_t", ("attn.attn_lif",), perm=(1, 0, 2)),
        ir.Reshape("attn.merge", ("attn.merge_t",), shape=(n, c)),
        w.linear("attn.proj", "attn.merge", c, c), w.bn("attn.proj_bn", "attn.proj", c, axis=-1),
        ir.Neuron("attn.proj_lif", ("attn.proj_bn",)),
        ir.Add("res", ("x", "attn.proj_lif")),
        ir.Mean("pool", ("res",), axis=0),
        w.linear("head", "pool", c, 5),
        ir.Output("logits", ("head",)),
    ]
    return ir.Graph(nodes)


def sdt_graph(n=16, c=24):
    """Spike-driven Transformer SDSA: kv = LIF(sum_tokens(K ⊙ V)); Y = Q ⊙ kv; membrane residual."""
    w = W(3)
    nodes = [ir.Input("u", shape=(n, c)), ir.Neuron("in_lif", ("u",))]
    for p in "qkv":
        nodes += [w.linear(f"{p}", "in_lif", c, c, bias=False), w.bn(f"{p}_bn", p, c, axis=-1),
                  ir.Neuron(f"{p}_lif", (f"{p}_bn",))]
    nodes += [
        ir.Mul("kv", ("k_lif", "v_lif")),
        ir.Sum("kv_sum", ("kv",), axis=0, keepdim=True),
        ir.Neuron("kv_lif", ("kv_sum",), v_threshold=0.5),
        ir.Mul("y", ("q_lif", "kv_lif")),
        w.linear("proj", "y", c, c), w.bn("proj_bn", "proj", c, axis=-1),
        ir.Add("res", ("u", "proj_bn")),
        ir.Output("membrane", ("res",)),
    ]
    return ir.Graph(nodes)


def qkformer_graph(n=16, c=32, heads=4):
    """QKFormer token attention (mask = LIF0.5(sum of Q's channels per head); mask ⊙ K) and the
    stage-3 linear-order SSA Q @ (Kᵀ @ V) * 0.125."""
    w, d = W(4), c // heads
    nodes = [ir.Input("x", shape=(c, n), kind="spikes")]
    for p in "qkv":  # conv1d(k=1) + BN1d on (C, N), as QKFormer's token mixers
        nodes += [ir.Conv1d(f"{p}_conv", ("x",), weight=w(c, c, 1, scale=0.3), bias=None),
                  w.bn(f"{p}_bn", f"{p}_conv", c, axis=0, shift=0.2 if p == "q" else 0.8),
                  ir.Neuron(f"{p}_lif", (f"{p}_bn",)),
                  ir.Reshape(f"{p}_h", (f"{p}_lif",), shape=(heads, d, n))]
    nodes += [
        ir.Sum("q_sum", ("q_h",), axis=1, keepdim=True),             # (heads, 1, n): per-head channel sum
        ir.Neuron("token_mask", ("q_sum",), v_threshold=0.5),
        ir.Mul("masked", ("token_mask", "k_h")),                     # (heads, d, n)
        ir.Reshape("masked_flat", ("masked",), shape=(c, n)),
        ir.Conv1d("proj", ("masked_flat",), weight=w(c, c, 1, scale=0.3), bias=w(c)),
        w.bn("proj_bn", "proj", c), ir.Neuron("proj_lif", ("proj_bn",)),
        # stage-3 SSA in linear order on tokens-major heads
        ir.Transpose("q_t", ("q_h",), perm=(0, 2, 1)), ir.Transpose("k_t", ("k_h",), perm=(0, 2, 1)),
        ir.Transpose("v_t", ("v_h",), perm=(0, 2, 1)),
        ir.MatMul("ktv", ("k_t", "v_t"), transpose_a=True),           # (heads, d, d)
        ir.MatMul("q_ktv", ("q_t", "ktv"), scale=0.125),              # (heads, n, d)
        ir.Neuron("ssa_lif", ("q_ktv",), v_threshold=0.5),
        ir.Transpose("ssa_back", ("ssa_lif",), perm=(0, 2, 1)),
        ir.Reshape("ssa_flat", ("ssa_back",), shape=(c, n)),
        ir.Add("res", ("x", "proj_lif", "ssa_flat")),
        ir.Mean("tokens", ("res",), axis=-1),
        w.linear("head", "tokens", c, 6),
        ir.Output("logits", ("head",)),
    ]
    return ir.Graph(nodes)


def temporal_graph(c=12):
    """Delay FIFOs (0, 1, 3 steps), neuron variants, Scale, TemporalMean -> Linear head."""
    w = W(5)
    return ir.Graph([
        ir.Input("x", shape=(c,)),
        w.linear("fc", "x", c, c),
        ir.Delay("d0", ("fc",), steps=0),
        ir.Delay("d1", ("fc",), steps=1),
        ir.Delay("d3", ("fc",), steps=3),
        ir.Add("mix", ("d0", "d1", "d3")),
        ir.Neuron("soft", ("mix",), reset="soft", compare=">"),
        ir.Neuron("leaky", ("mix",), decay_input=False, v_reset=-0.2, tau=1.5),
        ir.Neuron("plif", ("mix",), kind="PLIF", tau=float(1 / (1 / (1 + np.exp(-0.3)))), v_reset=0.1),
        ir.Neuron("tern_hard", ("mix",), output="ternary", v_threshold=0.6),
        ir.Neuron("tern_soft", ("mix",), output="ternary", reset="soft", compare=">", v_threshold=0.6),
        ir.Neuron("ilif", ("mix",), output="integer", max_level=4, v_threshold=0.5),
        ir.Neuron("ilif_soft", ("mix",), output="integer", max_level=2, reset="soft", v_threshold=0.7),
        ir.Scale("scaled", ("ilif",), factor=0.25),
        ir.Add("spk", ("soft", "leaky", "plif", "tern_hard", "tern_soft", "scaled", "ilif_soft")),
        ir.TemporalMean("rate", ("spk",)),
        w.linear("head", "rate", c, 4),
        ir.Output("logits", ("head",)),
        ir.Output("rate_out", ("rate",)),
    ])


def _inputs(graph, seed=0):
    w = W(100 + seed)
    out = {}
    for n in graph.inputs:
        if n.kind == "spikes":
            out[n.name] = w.spikes(T, B, *n.shape)
        else:
            out[n.name] = w(T, B, *n.shape, scale=1.5)
    return out


GRAPHS = {"conv": conv_graph, "ssa": ssa_graph, "sdt": sdt_graph, "qkformer": qkformer_graph, "temporal": temporal_graph}


def _neurons(g):
    return [n.name for n in g.topo_order() if isinstance(n, ir.Neuron)]


def _assert_close(ref, got, name):
    ref, got = ref.float(), got.float()
    scale = max(ref.abs().max().item(), 1e-6)
    err = (ref - got).abs().max().item()
    assert err <= 1e-4 * scale, f"{name}: max abs error {err} vs scale {scale}"


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_parity_with_reference(name, tmp_path):
    g = GRAPHS[name]()
    ir.check(g)  # the test graphs are valid IR
    path = tmp_path / f"{name}.onnx"
    model = export_onnx(g, path, expose_spikes=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.checker.check_model(str(path), full_check=True)
    x = _inputs(g)
    ref = run(g, x, record=True)
    got = run_onnx(path, x, record=True)
    neurons = _neurons(g)
    assert neurons and set(got.traces) == set(neurons)
    for n in neurons:
        a, b = ref.traces[n], got.traces[n]
        assert a.shape == b.shape == (T, B, *g.infer_shapes()[n])
        for t in range(T):
            bad = int((a[t] != b[t]).sum())
            assert bad == 0, f"{name}: neuron {n!r} step {t}: {bad} spikes differ"
        rate = float(a.abs().mean())
        assert 0.0 < rate < 1.0 and (a == 0).any(), f"{name}: neuron {n!r} is silent or saturated (rate {rate})"
    for o in ref.outputs:
        assert ref.outputs[o].shape == got.outputs[o].shape
        _assert_close(ref.outputs[o], got.outputs[o], o)


@pytest.mark.parametrize("name", ["ssa", "qkformer"])
def test_parity_with_onnxruntime_optimizations(name):
    g = GRAPHS[name]()
    model = export_onnx(g, expose_spikes=True)
    x = _inputs(g, seed=1)
    ref, got = run(g, x, record=True), run_onnx(model, x, record=True, optimize=True)
    for n in _neurons(g):
        assert torch.equal(ref.traces[n], got.traces[n]), n
    _assert_close(ref.final(), got.final(), "logits")


def test_attention_neurons_see_exact_integer_counts():
    """Q·Kᵀ·V on spikes is an integer count; scale 0.125 and threshold 0.5 give ties that must agree."""
    g = ssa_graph()
    model = export_onnx(g, expose=["attn.qkv", "attn.qk"])
    x = _inputs(g, seed=2)
    ref, got = run(g, x, record=["attn.qkv", "attn.qk"]), run_onnx(model, x, record=["attn.qkv", "attn.qk"])
    for k in ("attn.qk", "attn.qkv"):
        assert torch.equal(ref.traces[k], got.traces[k]), k
    assert torch.equal(got.traces["attn.qk"] * 8, torch.round(got.traces["attn.qk"] * 8))


def test_batchnorm_bit_exact_in_every_layout():
    """BatchNorm outputs equal the reference bit for bit whichever kernel PyTorch picks
    (contiguous/channels-last -> fused multiply-add form; strided -> four-step float32 form)."""
    w = W(7)
    g = ir.Graph([
        ir.Input("img", shape=(6, 5, 7)), ir.Input("tok", shape=(19, 13)), ir.Input("vec", shape=(9,)),
        w.bn("img_c", "img", 6, 0), w.bn("img_w", "img", 7, -1), w.bn("img_h", "img", 5, 1),
        w.bn("tok_c", "tok", 13, -1), w.bn("tok_n", "tok", 19, 0), w.bn("vec_c", "vec", 9, 0),
        ir.Transpose("tok_t", ("tok",), perm=(1, 0)), w.bn("tok_t_c", "tok_t", 13, 0),
        ir.Neuron("tok_t_lif", ("tok_t",)), w.bn("after_view", "tok_t_lif", 13, 0),
        ir.Output("o", ("img_c",)),
    ])
    names = [n for n, node in g.nodes.items() if isinstance(node, ir.BatchNorm)]
    plans = batchnorm_plans(g, g.infer_shapes())
    assert all(p["matched"] for p in plans.values()), {k: p["mismatches"] for k, p in plans.items()}
    formulas = {k: p["formula"] for k, p in plans.items()}
    assert formulas["tok_c"] == "generic" and formulas["img_c"] != "generic"  # both kernels are covered
    model = export_onnx(g, expose=names)
    assert read_metadata(model)["batchnorm"] == formulas
    x = {k: v * 3 for k, v in _inputs(g, seed=3).items()}
    ref, got = run(g, x, record=names), run_onnx(model, x, record=names)
    for n in names:
        assert torch.equal(ref.traces[n], got.traces[n]), f"{n} ({formulas[n]})"


def test_pools_and_reductions_on_spikes_are_exact():
    """AvgPool (sum in PyTorch's order, then /k²), Mean (sum, then /n) on spike maps: bit-exact."""
    w = W(8)
    g = ir.Graph([
        ir.Input("s", shape=(4, 9, 9), kind="spikes"),
        ir.AvgPool2d("avg3", ("s",), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
        ir.AvgPool2d("avg2", ("s",), kernel_size=(2, 2), stride=(2, 2)),
        ir.MaxPool2d("max", ("s",), kernel_size=(2, 2), stride=(1, 1)),
        ir.Mean("mean_w", ("s",), axis=-1), ir.Sum("sum_c", ("s",), axis=0, keepdim=True),
        ir.Neuron("n_avg", ("avg3",), v_threshold=0.3),
        ir.Output("o", ("n_avg",)),
    ])
    names = ["avg3", "avg2", "max", "mean_w", "sum_c", "n_avg"]
    x = {"s": w.spikes(T, B, 4, 9, 9, p=0.5)}
    ref, got = run(g, x, record=names), run_onnx(export_onnx(g, expose=names), x, record=names)
    for n in names:
        assert torch.equal(ref.traces[n], got.traces[n]), n
    xf = {"s": w(T, B, 4, 9, 9)}  # float input too: the pools follow PyTorch's summation order
    ref, got = run(g, xf, record=names[:3]), run_onnx(export_onnx(g, expose=names[:3]), xf, record=names[:3])
    for n in names[:3]:
        assert torch.equal(ref.traces[n], got.traces[n]), n


# --------------------------------------------------------------------------- model format


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_export_is_byte_deterministic(name, tmp_path):
    a = export_onnx(GRAPHS[name](), tmp_path / "a.onnx", expose_spikes=True)
    b = export_onnx(GRAPHS[name](), tmp_path / "b.onnx", expose_spikes=True)
    assert a.SerializeToString() == b.SerializeToString()
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    # the same graph after an IR save/load round trip exports to the same bytes
    ir.save(GRAPHS[name](), tmp_path / "g")
    c = export_onnx(ir.load(tmp_path / "g"), expose_spikes=True)
    assert c.SerializeToString() == a.SerializeToString()


def test_interface_names_states_and_metadata():
    g = temporal_graph()
    model = export_onnx(g, expose_spikes=True)
    assert model.producer_name == "step-deploy" and model.producer_version
    assert {o.domain for o in model.opset_import} == {""} and model.opset_import[0].version == 17
    ins = {i.name: i for i in model.graph.input}
    outs = [o.name for o in model.graph.output]
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(ins["x"]) == ["B", 12]
    assert dims(ins["state/soft/v"]) == ["B", 12]
    assert dims(ins["state/d3/fifo"]) == [3, "B", 12] and dims(ins["state/d1/fifo"]) == [1, "B", 12]
    assert "state/d0/fifo" not in ins  # a zero-step delay is a wire
    assert dims(ins["state/rate/acc"]) == ["B", 12]
    assert ins["t"].type.tensor_type.elem_type == onnx.TensorProto.INT64 and dims(ins["t"]) == []
    assert outs[:2] == ["logits", "rate_out"]
    assert "state_next/leaky/v" in outs and "spikes/ilif" in outs
    meta = read_metadata(model)
    init = {s["node"]: s["init"] for s in meta["states"]}
    assert init["leaky"] == pytest.approx(-0.2) and init["plif"] == pytest.approx(0.1) and init["d3"] == 0.0
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer
               if i.name.endswith(("weight", "weight_t", "bias")))
    sess = OnnxSession(model)
    st = sess.initial_states(2)
    assert st["state/leaky/v"].shape == (2, 12) and np.all(st["state/leaky/v"] == np.float32(-0.2))


def test_names_are_sanitized_uniquely():
    g = ir.Graph([ir.Input("in put", shape=(4,)), ir.Scale("blocks.0/attn:q", ("in put",), factor=2.0),
                  ir.Scale("blocks.0_attn_q", ("blocks.0/attn:q",), factor=2.0), ir.Scale("0lead", ("blocks.0_attn_q",)),
                  ir.Scale("t", ("0lead",)), ir.Scale("state", ("t",)), ir.Output("out", ("state",))])
    names = sanitize_names(g)
    assert names["in put"] == "in_put" and names["blocks.0/attn:q"] == "blocks.0_attn_q"
    assert names["blocks.0_attn_q"] == "blocks.0_attn_q_1" and names["0lead"] == "n_0lead"
    assert names["t"] == "t_1" and names["state"] == "state_1"
    model = export_onnx(g)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert torch.equal(run_onnx(model, x, steps=2).final(), run(g, x, steps=2).final())


def test_static_and_multi_input_conventions():
    w = W(9)
    g = ir.Graph([ir.Input("a", shape=(5,)), ir.Input("b", shape=(5,)), ir.Mul("ab", ("a", "b")),
                  ir.Neuron("n", ("ab",), kind="IF"), ir.Output("o", ("n",))])
    xa, xb = w(B, 5), w(T, B, 5)
    ref = run(g, {"a": xa, "b": xb}, steps=T, record=True)
    got = run_onnx(export_onnx(g, expose_spikes=True), {"a": torch.from_numpy(xa), "b": xb}, steps=T, record=True)
    assert torch.equal(ref.traces["n"], got.traces["n"]) and torch.equal(ref.outputs["o"], got.outputs["o"])
    with pytest.raises(ValueError, match="pass steps=T"):
        run_onnx(export_onnx(g), {"a": xa, "b": xb})
    with pytest.raises(ValueError, match="not exposed"):
        run_onnx(export_onnx(g), {"a": xb, "b": xb}, record=["ab"])


def test_mul_broadcast_follows_per_step_numpy_rules():
    """(N, C) ⊙ (C,) broadcasts over the per-step shapes (batch axis kept first)."""
    w = W(10)
    g = ir.Graph([ir.Input("x", shape=(6, 4)), ir.Input("g", shape=(4,)), ir.Mul("y", ("x", "g")), ir.Output("o", ("y",))])
    assert g.infer_shapes()["y"] == (6, 4)
    x, gate = w(T, B, 6, 4), w(T, B, 4)
    got = run_onnx(export_onnx(g), {"x": x, "g": gate}).outputs["o"].numpy()
    np.testing.assert_array_equal(got, x * gate[:, :, None, :])


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_opsets(opset):
    g = qkformer_graph()
    model = export_onnx(g, opset=opset, expose_spikes=True)
    assert model.opset_import[0].version == opset
    x = _inputs(g, seed=4)
    ref, got = run(g, x, record=True), run_onnx(model, x, record=True)
    for n in _neurons(g):
        assert torch.equal(ref.traces[n], got.traces[n]), n


def test_bad_opset_rejected():
    with pytest.raises(ValueError, match="opset 16"):
        export_onnx(temporal_graph(), opset=16)


@dataclass(frozen=True, eq=False)
class Softmax(ir.Node):
    """Not an IR op (deliberately unregistered): the exporter must refuse it by name."""

    axis: int = -1

    def infer_shape(self, in_shapes):
        return in_shapes[0]


def test_unsupported_op_names_the_node():
    g = ir.Graph([ir.Input("x", shape=(4, 8)), Softmax("blocks.3.attn.softmax", ("x",)), ir.Output("o", ("blocks.3.attn.softmax",))])
    with pytest.raises(ir.UnsupportedOpError, match=r"\[blocks\.3\.attn\.softmax\] op Softmax is not supported by "
                                                    r"backend 'onnx'"):
        export_onnx(g)


def test_emitter_failure_names_the_node():
    g = ir.Graph([ir.Input("x", shape=(4, 8)), ir.Sum("bad_sum", ("x",), axis=5), ir.Output("o", ("bad_sum",))])
    with pytest.raises((OnnxExportError, ir.IRError), match="bad_sum"):
        export_onnx(g)


def test_expose_unknown_node_rejected():
    with pytest.raises(KeyError, match="nope"):
        export_onnx(temporal_graph(), expose=["nope"])
