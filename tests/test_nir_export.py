"""NIR exporter: every IR op exports and nir.read reads the file; IR -> NIR file -> IR gives the
same nodes and the same spikes; coverage counts; the Euler discretization; determinism."""
import hashlib
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.exporters.nir_export import coverage_markdown, export_nir, nudged_threshold, write_nir
from step_deploy.exporters.nir_read import read_nir_as_ir
from step_deploy.exporters.nir_extensions import EXTENSION_OPS
from step_deploy.simulators.reference import run

F = np.float32
DOCS = (Path(__file__).resolve().parents[1] / "docs" / "nir.md").read_text()


def _w(rng, *shape, scale=0.5):
    return rng.normal(0.0, scale, shape).astype(F)


def all_ops_graph(seed: int = 0) -> ir.Graph:
    """A small spiking-attention graph that uses every IR node type."""
    rng = np.random.default_rng(seed)
    C = 8
    nodes = [
        ir.Input("x", shape=(2, 8, 8)),
        ir.Conv2d("conv", ("x",), weight=_w(rng, C, 1, 3, 3, scale=0.8), bias=_w(rng, C, scale=0.1),
                  padding=(1, 1), groups=2),
        ir.BatchNorm("bn", ("conv",), gamma=(rng.random(C) + 0.5).astype(F), beta=_w(rng, C, scale=0.2),
                     mean=_w(rng, C, scale=0.1), var=(rng.random(C) + 0.5).astype(F)),
        ir.Neuron("sps_lif", ("bn",)),
        ir.MaxPool2d("maxpool", ("sps_lif",)),
        ir.Flatten("tokens_cn", ("maxpool",), start_dim=1, end_dim=2),            # (C, N=16)
        ir.Transpose("tokens", ("tokens_cn",), perm=(1, 0)),                       # (N, C)
        ir.Linear("q", ("tokens",), weight=_w(rng, C, C, scale=0.8), bias=_w(rng, C, scale=0.2)),
        ir.Neuron("q_lif", ("q",)),
        ir.Linear("k", ("tokens",), weight=_w(rng, C, C, scale=0.8), bias=None),
        ir.Neuron("k_lif", ("k",), kind="PLIF", tau=1.0 / (1.0 / (1.0 + np.exp(-0.3)))),
        ir.Linear("v", ("tokens",), weight=_w(rng, C, C, scale=0.8), bias=_w(rng, C, scale=0.2)),
        ir.Neuron("v_lif", ("v",), compare=">", decay_input=False, v_reset=-0.1, tau=3.0, v_threshold=0.3),
        ir.MatMul("qk", ("q_lif", "k_lif"), transpose_b=True, scale=0.125),          # (N, N)
        ir.MatMul("qkv", ("qk", "v_lif")),                                          # (N, C)
        ir.Neuron("attn_lif", ("qkv",), v_threshold=0.5),
        ir.Add("residual", ("tokens", "attn_lif")),                                # feeds Reshape: extension
        ir.Mul("kv", ("k_lif", "v_lif")),
        ir.Sum("kv_sum", ("kv",), axis=0, keepdim=True),                           # (1, C)
        ir.Neuron("kv_lif", ("kv_sum",), reset="soft", v_threshold=0.25),          # extension neuron
        ir.Mul("sdsa", ("q_lif", "kv_lif")),                                       # broadcast (N, C)
        ir.Reshape("heads", ("residual",), shape=(16, 2, 4)),
        ir.Transpose("heads_t", ("heads",), perm=(1, 0, 2)),                       # (2, N, 4)
        ir.Mean("head_mean", ("heads_t",), axis=1),                                # (2, 4)
        ir.Flatten("head_flat", ("head_mean",)),                                   # (8,)
        ir.Neuron("int_lif", ("head_flat",), output="integer", max_level=3, v_threshold=0.25),
        ir.Mean("token_mean", ("sdsa",), axis=0),                                  # (8,)
        ir.AvgPool2d("avgpool", ("sps_lif",)),                                     # (C, 4, 4)
        ir.Flatten("avg_flat", ("avgpool",), start_dim=1, end_dim=-1),            # (C, 16)
        ir.Conv1d("conv1d", ("avg_flat",), weight=_w(rng, 4, C, 3, scale=0.8), bias=_w(rng, 4, scale=0.1),
                  padding=1),
        ir.Scale("scale", ("conv1d",), factor=1.5),
        ir.Neuron("if_n", ("scale",), kind="IF"),
        ir.Delay("delay", ("if_n",), steps=2),
        ir.Flatten("delay_flat", ("delay",)),                                      # (64,)
        ir.Linear("fc1", ("int_lif",), weight=_w(rng, 10, 8), bias=_w(rng, 10, scale=0.1)),
        ir.Linear("fc2", ("token_mean",), weight=_w(rng, 10, 8), bias=None),
        ir.Linear("fc3", ("delay_flat",), weight=_w(rng, 10, 64, scale=0.3), bias=None),
        ir.Add("sum12", ("fc1", "fc2")),                                           # absorbed (nested)
        ir.Add("sum123", ("sum12", "fc3")),                                        # absorbed
        ir.Neuron("out_lif", ("sum123",)),
        ir.TemporalMean("readout", ("out_lif",)),
        ir.Output("logits", ("readout",)),
        ir.Output("spikes", ("out_lif",)),
        # the STEP zoo's neurons and PSN (TemporalLinear across the T=6 steps + Heaviside), all extensions
        ir.KLIFNeuron("klif", ("fc1",), k=1.25, v_threshold=0.5),
        ir.EIFNeuron("eif", ("fc2",), v_threshold=0.5),
        ir.CLIFNeuron("clif", ("fc3",)),
        ir.GLIFNeuron("glif", ("fc1",), params_t=rng.uniform(0.2, 0.8, (6, 5)).astype(F), gates=(1.0, 0.0, 1.0)),
        ir.TemporalLinear("psn_fc", ("fc2",), weight=_w(rng, 6, 6), bias=np.full(6, -0.5, F)),
        ir.Heaviside("psn", ("psn_fc",)),
        ir.Add("zoo", ("klif", "eif", "clif", "glif", "psn")),
        ir.Output("zoo_spikes", ("zoo",)),
        # the seed designs' ops (A²OS²A's ReLU, bipolar attention's Shiftmax, STAtten's block sum), all extensions
        ir.ReLU("relu", ("fc2",)),
        ir.Shiftmax("shiftmax", ("qk",), frac_bits=4),
        ir.TemporalBlockSum("block_sum", ("shiftmax",), block=3),
        ir.Output("seed_relu", ("relu",)),
        ir.Output("seed_attn", ("block_sum",)),
    ]
    return ir.Graph(nodes, metadata={"model": "all-ops", "T": 6})


EXTENSIONS = {"bn", "maxpool", "tokens", "q", "k", "v", "qk", "qkv", "residual", "kv", "kv_sum", "kv_lif",
              "sdsa", "heads", "heads_t", "head_mean", "int_lif", "token_mean", "readout",
              "klif", "eif", "clif", "glif", "psn_fc", "psn", "zoo", "relu", "shiftmax", "block_sum"}
ABSORBED = {"sum12", "sum123"}


@pytest.fixture(scope="module")
def graph():
    g = all_ops_graph()
    core = {k for k, c in ir.NODE_TYPES.items() if ir.is_core_op(c)}  # float IR ops
    assert {n.op for n in g.nodes.values()} == core, "the test graph must use every IR op"
    assert not [d for d in ir.verify(g) if d.severity == "error"]
    return g


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1)
    return torch.from_numpy((rng.random((6, 3, 2, 8, 8)) * 2.0).astype(F))


@pytest.fixture(scope="module")
def reference(graph, inputs):
    result = run(graph, inputs, record=True)
    rates = {k: float((s != 0).float().mean()) for k, s in result.traces.items()}
    assert len(rates) == 14 and all(0.05 < r < 0.95 for r in rates.values()), rates  # every layer spikes, sometimes
    return result


def test_every_op_exports_and_nir_reads_the_file(graph, tmp_path):
    coverage = write_nir(graph, tmp_path / "all.nir")
    g = nir.read(tmp_path / "all.nir")  # default: type_check=True
    assert isinstance(g, nir.NIRGraph)
    assert coverage["counts"] == {"standard": len(graph) - len(EXTENSIONS) - len(ABSORBED),
                                  "extension": len(EXTENSIONS), "absorbed": len(ABSORBED), "total": len(graph)}
    status = {r["name"]: r["status"] for r in coverage["nodes"]}
    assert {k for k, s in status.items() if s == "extension"} == EXTENSIONS
    assert {k for k, s in status.items() if s == "absorbed"} == ABSORBED
    assert coverage["extension_ops"] == sorted({graph[n].op for n in EXTENSIONS})
    assert coverage["by_op"]["Neuron"] == {"standard": 7, "extension": 2, "absorbed": 0}
    # standard nodes really are standard NIR types
    types = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert types["conv"] == "Conv2d" and types["conv1d"] == "Conv1d" and types["avgpool"] == "AvgPool2d"
    assert types["fc1"] == "Affine" and types["fc2"] == "Linear" and types["sps_lif"] == "LIF"
    assert types["if_n"] == "IF" and types["scale"] == "Scale" and types["delay"] == "Delay"
    assert types["tokens_cn"] == "Flatten"
    # absorbed adds: the three synapses feed the neuron directly (NIR sums in-edges)
    assert sorted(s for s, d in g.edges if d == "out_lif") == ["fc1", "fc2", "fc3"]
    # extension = cut: operand ports in order, result as an Input typed with the op's shape
    assert types["qk"] == "Input" and types["qk.in0"] == types["qk.in1"] == "Output"
    assert ("q_lif", "qk.in0") in g.edges and ("k_lif", "qk.in1") in g.edges
    assert list(g.nodes["qk"].output_type["output"]) == [16, 16]
    for op in coverage["extension_ops"]:  # every extension is documented (code table and docs/nir.md)
        assert op in EXTENSION_OPS and f"| `{op}` |" in DOCS
    assert json.loads(json.dumps(coverage))["counts"] == coverage["counts"]  # the CLI can write it as JSON
    md = coverage_markdown(coverage)
    assert "| MatMul | 0 | 2 | 0 |" in md and "soft reset" in md and "fold-batchnorm" in md


def test_round_trip_same_nodes_and_spikes(graph, inputs, reference, tmp_path):
    write_nir(graph, tmp_path / "all.nir")
    back = read_nir_as_ir(tmp_path / "all.nir")
    assert list(back.nodes) == list(graph.nodes)
    for name, node in graph.nodes.items():
        assert ir.nodes_equal(node, back[name]), name
    assert back.metadata == graph.metadata
    b = run(back, inputs, record=True)
    for name, spikes in reference.traces.items():
        assert torch.equal(spikes, b.traces[name]), name
    for name in reference.outputs:
        assert torch.equal(reference.outputs[name], b.outputs[name]), name


@pytest.mark.parametrize("options", [dict(dt=1e-4), dict(threshold="keep"), dict(avgpool="conv"),
                                     dict(tile_linear=True)])
def test_round_trip_with_export_options(graph, tmp_path, options):
    """Field-equal nodes (arrays bit for bit) in the same order: the interpreter gives the same spikes."""
    write_nir(graph, tmp_path / "o.nir", **options)
    back = read_nir_as_ir(tmp_path / "o.nir")
    assert list(back.nodes) == list(graph.nodes)
    for name, node in graph.nodes.items():
        assert ir.nodes_equal(node, back[name]), name


def test_tile_linear_makes_token_linears_standard(graph):
    g, cov = export_nir(graph, tile_linear=True)
    assert type(g.nodes["q"]).__name__ == "Affine" and g.nodes["q"].weight.shape == (16, 8, 8)
    assert type(g.nodes["k"]).__name__ == "Linear"
    assert cov["counts"]["extension"] == len(EXTENSIONS) - 3


def test_reader_rejects_a_file_whose_records_disagree(graph, tmp_path):
    g, _ = export_nir(graph)
    g.nodes["fc1"].weight = g.nodes["fc1"].weight.copy()
    g.nodes["sps_lif"].tau = g.nodes["sps_lif"].tau * 2  # NIR parameter edited behind the record's back
    nir.write(tmp_path / "bad.nir", g)
    with pytest.raises(ValueError, match="sps_lif.tau differs"):
        read_nir_as_ir(tmp_path / "bad.nir")


def test_write_is_deterministic(graph, tmp_path):
    write_nir(graph, tmp_path / "a.nir")
    write_nir(all_ops_graph(), tmp_path / "b.nir")
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.nir", "b.nir")]
    assert digest[0] == digest[1]


def test_allow_extensions_false_names_every_node(graph):
    with pytest.raises(ValueError) as e:
        export_nir(graph, allow_extensions=False)
    msg = str(e.value)
    assert all(f"  {n}:" in msg for n in EXTENSIONS)
    assert "run the fold-batchnorm pass" in msg and "soft reset" in msg


def test_dead_node_gets_a_sink_not_an_auto_output(tmp_path):
    g = ir.Graph([ir.Input("x", shape=(4,)), ir.Neuron("a", ("x",)), ir.Neuron("dead", ("x",)),
                  ir.Output("y", ("a",))])
    write_nir(g, tmp_path / "d.nir")
    n = nir.read(tmp_path / "d.nir")
    assert ("dead", "dead.unused") in n.edges and len(n.nodes) == 5
    back = read_nir_as_ir(tmp_path / "d.nir")
    assert list(back.nodes) == ["x", "a", "dead", "y"]


def test_add_with_a_repeated_source_is_an_extension():
    g = ir.Graph([ir.Input("x", shape=(4,)), ir.Add("twice", ("x", "x")), ir.Neuron("n", ("twice",)),
                  ir.Output("y", ("n",))])
    _, cov = export_nir(g)  # NIR forbids duplicate edges, so x + x cannot be two in-edges
    assert {r["name"]: r["status"] for r in cov["nodes"]}["twice"] == "extension"


def test_reads_a_plain_nir_file():
    """A NIR graph without step-deploy records (e.g. written by another tool)."""
    w = np.eye(3, dtype=F)
    g = nir.NIRGraph(nodes={"in": nir.Input(np.array([3])), "a": nir.Linear(weight=w),
                            "b": nir.Affine(weight=w, bias=np.ones(3, F)),
                            "lif": nir.LIF(tau=np.full(3, 2.0, F), r=np.ones(3, F), v_leak=np.zeros(3, F),
                                           v_threshold=np.ones(3, F)),
                            "out": nir.Output(np.array([3]))},
                     edges=[("in", "a"), ("in", "b"), ("a", "lif"), ("b", "lif"), ("lif", "out")])
    back = read_nir_as_ir(g)
    lif = back["lif"]
    assert lif.compare == ">" and lif.tau == 2.0 and lif.decay_input
    assert back["lif.sum"].op == "Add" and set(back["lif.sum"].inputs) == {"a", "b"}


# --------------------------------------------------------------------------- discretization


def _nir_euler(node, x: np.ndarray, dt: float, steps: int) -> np.ndarray:
    """NIR's ODEs under forward Euler at dt, in float32, from the exported parameters only."""
    dt32 = np.float32(dt)
    v = np.broadcast_to(node.v_reset, x.shape).astype(F)  # the IR's initial state V[-1] = v_reset
    out = []
    for _ in range(steps):
        if isinstance(node, nir.LIF):
            v = v + (dt32 / node.tau) * (node.v_leak - v + node.r * x)
        else:
            v = v + (dt32 * node.r) * x
        z = v > node.v_threshold
        v = np.where(z, node.v_reset, v).astype(F)
        out.append(z.astype(F))
    return np.stack(out)


NEURONS = {
    "lif": dict(),
    "lif_no_decay_input": dict(decay_input=False, tau=4.0),
    "lif_v_reset": dict(v_reset=-0.25, v_threshold=0.5),
    "if": dict(kind="IF", v_threshold=2.0),
    "attention": dict(v_threshold=0.5),
}


@pytest.mark.parametrize("kind", sorted(NEURONS))
def test_euler_with_exported_parameters_equals_the_interpreter(kind):
    x = np.array([0.25, 0.5, 0.6, 1.0, 1.5, 2.0, 3.0], dtype=F)  # includes exact ties (h == θ)
    g = ir.Graph([ir.Input("x", shape=(7,)), ir.Neuron("n", ("x",), **NEURONS[kind]), ir.Output("y", ("n",))])
    ref = run(g, torch.from_numpy(x)[None], steps=20, record=True).traces["n"][:, 0].numpy()
    assert ref.sum() > 0
    nudged, _ = export_nir(g)
    assert np.array_equal(_nir_euler(nudged.nodes["n"], x, 1.0, 20), ref)
    kept, cov = export_nir(g, threshold="keep")
    missed = ref.sum() - _nir_euler(kept.nodes["n"], x, 1.0, 20).sum()
    if kind in ("lif", "attention", "if"):  # these see exact ties: NIR's '>' misses them unless nudged
        assert missed > 0
    assert any("unchanged" in s for s in cov["semantic_notes"])


def test_nudged_threshold_is_exact_for_float32():
    for theta in (0.5, 1.0, 0.1, 4.0, 0.0, -0.3):
        t32, n = np.float32(theta), nudged_threshold(theta)
        probe = np.array([t32, np.nextafter(t32, F(np.inf)), np.nextafter(t32, F(-np.inf)), n, t32 - 1, t32 + 1], F)
        assert np.array_equal(probe > n, probe >= t32)


def test_names_with_slashes_survive(tmp_path):
    """'/' separates HDF5 paths: NIR names replace it, the record keeps the IR name."""
    g = ir.Graph([ir.Input("in/x", shape=(2, 3)), ir.Transpose("blocks/0.t", ("in/x",), perm=(1, 0)),
                  ir.Neuron("blocks/0.lif", ("blocks/0.t",)), ir.Output("out", ("blocks/0.lif",))])
    write_nir(g, tmp_path / "s.nir")
    assert "blocks|0.t" in nir.read(tmp_path / "s.nir").nodes
    back = read_nir_as_ir(tmp_path / "s.nir")
    assert all(ir.nodes_equal(n, back[n.name]) for n in g.nodes.values())
