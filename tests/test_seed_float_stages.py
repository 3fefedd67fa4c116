"""The seed attention designs through the float stages: capture -> IR -> reference -> ONNX -> NIR.

Per design (STAtten on Spikformer and on SDT, A²OS²A, bipolar self-attention, SEMM) a tiny random
model (one block, 16 channels, T = 4, 2 digits images, weights x3 and thresholds x0.4 so that every
layer fires): the reference interpreter equals PyTorch at every neuron and step (mismatch counts),
onnxruntime equals the reference (STAtten's window op as a block model, 2 steps per call), the NIR file reads back to equal nodes and spikes, and the float parity check attributes
everything. Hand-built graphs put Shiftmax on its edge cases (ties for the row maximum, terms
exactly at and below the ``2^-frac_bits`` floor, row sums exactly a power of two) and check it
against a hand computation in integers, through the reference and ONNX; ternary ties at ±θ and a
node-major window-op graph go through the float parity attribution.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import random_model
from step_deploy import ir
from step_deploy.exporters.nir_export import export_nir, write_nir
from step_deploy.exporters.nir_read import read_nir_as_ir
from step_deploy.exporters.onnx_export import OnnxExportError, export_onnx, read_metadata
from step_deploy.exporters.onnx_runner import run_onnx
from step_deploy.frontend import capture, encoded_input, torch_traces
from step_deploy.passes import run_pipeline
from step_deploy.simulators.float_parity import NEURON_GROUPS_KEY, check_float_backend, group_traces
from step_deploy.simulators.reference import run
from test_reference import _chain  # hand-built Input -> nodes... -> Output chains

F = np.float32
T = 4

#: test id -> (config, build overrides, the design's own IR op, its ternary neurons)
DESIGNS = {
    "statten": ("spikformer-statten-2-64-digits", dict(num_heads=2), "TemporalBlockSum", ()),
    "sdt-statten": ("sdt-statten-1-64-digits", dict(num_heads=2), "TemporalBlockSum", ()),
    "a2os2a": ("spikformer-a2os2a-2-64-digits", dict(num_heads=2), "ReLU", ("block.0.attn.v_lif",)),
    "bsa": ("spikformer-bsa-2-64-digits", dict(num_heads=2), "Shiftmax", ("block.0.attn.q_lif", "block.0.attn.k_lif")),
    "semm": ("spikformer_semm-2-64-digits", dict(expert_dim=8), None, ()),
}


def _mismatches(a: dict, b: dict) -> dict:
    """Per layer: how many spike values differ (layers of ``a``; missing in ``b`` counts all)."""
    return {k: int((v != b[k]).sum()) if k in b and b[k].shape == v.shape else int(v.numel()) for k, v in a.items()}


def _lively(arch: str, over: dict):
    m = random_model(arch, embed_dim=16, depths=1, **over)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                mod.weight.mul_(3.0)
            if isinstance(getattr(mod, "threshold", None), nn.Parameter):
                mod.threshold.mul_(0.4)
    return m


@pytest.mark.parametrize("design", list(DESIGNS))
def test_seed_design_is_bit_exact_through_the_float_stages(design, tmp_path):
    arch, over, op, ternary = DESIGNS[design]
    model = _lively(arch, over)
    assert model.step == T
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    logits, module_traces = torch_traces(model, x)
    graph = capture(model)
    xe = encoded_input(model, x)
    traces = group_traces(graph, module_traces)  # SEMM: IR neurons standing for several PyTorch neurons

    # capture: every IR neuron has a PyTorch trace; the design's own op is in the graph
    neurons = {n.name: n for n in graph.topo_order() if isinstance(n, ir.Neuron)}
    assert set(neurons) <= set(traces), sorted(set(neurons) - set(traces))
    if op:
        assert op in graph.op_counts()
    for name in ternary:
        assert neurons[name].output == "ternary"
        assert bool((traces[name] == -1).any()) and bool((traces[name] == 1).any()), name
    if design == "semm":  # stacked experts, split fc1: every PyTorch neuron is covered by a group or a node
        groups = graph.metadata[NEURON_GROUPS_KEY]
        covered = {m for g in groups.values() for m in g["modules"]} | set(neurons)
        assert {k for k in traces if k not in groups} <= covered
        assert graph["block.0.attn.lif_list"].op == "Neuron" and len(groups) == 4
    rates = {k: float((traces[k] != 0).float().mean()) for k in neurons}
    assert all(r > 0.02 for r in rates.values()), rates  # every layer fires: the comparison is not vacuous

    # reference == PyTorch at every neuron and step
    ref = run(graph, xe, record=True)
    bad = {k: v for k, v in _mismatches(ref.traces, traces).items() if v}
    assert not bad, f"reference vs PyTorch: {sum(bad.values())} spike mismatches in {bad}"
    assert torch.equal(ref.final(), logits)

    # ONNX: equal element-wise (STAtten: a block model, 2 steps per call)
    onnx_graph = run_pipeline(graph, "onnx")
    model = export_onnx(onnx_graph, expose_spikes=True)
    assert read_metadata(model).get("block", 1) == (2 if op == "TemporalBlockSum" else 1)
    back = run_onnx(model, xe, record=True)
    bad = {k: v for k, v in _mismatches(ref.traces, back.traces).items() if v}
    assert not bad, f"onnxruntime vs reference: {sum(bad.values())} spike mismatches in {bad}"
    res = check_float_backend(onnx_graph, xe, logits, module_traces, back.final(), back.traces)  # groups itself
    assert res["ok"] and res["verdict"] == "0 mismatches", res["verdict"]
    assert res["neurons_compared"] == len(neurons) and not res["neurons_missing"]

    # NIR: the new ops are documented extensions; the file reads back to equal nodes and spikes
    nir_graph = run_pipeline(graph, "nir")
    write_nir(nir_graph, tmp_path / "model.nir")
    again = read_nir_as_ir(tmp_path / "model.nir")
    assert list(again.nodes) == list(nir_graph.nodes)
    for n in nir_graph.topo_order():
        assert ir.nodes_equal(n, again[n.name]), n.name
    back = run(again, xe, record=True)
    bad = {k: v for k, v in _mismatches(ref.traces, back.traces).items() if v}
    assert not bad, f"NIR round trip vs reference: {sum(bad.values())} spike mismatches in {bad}"
    if op == "TemporalBlockSum":  # the window op runs node-major; the float parity check follows it
        res = check_float_backend(nir_graph, xe, logits, traces, back.final(), back.traces)
        assert res["ok"] and res["verdict"] == "0 mismatches" and res["neurons_compared"] == len(neurons), res


# --------------------------------------------------------------------------- Shiftmax by hand


def _shiftmax_by_hand(scores: np.ndarray, frac_bits: int) -> np.ndarray:
    """Contract §2 in integers: ``a_j = 2^(F + Δ_j)`` (0 below ``-F``), ``E = ceil(log2 Σ a)``,
    ``Y_j = a_j · 2^(F + L - E) / 2^(F + L)``."""
    n = scores.shape[-1]
    big_l = max(0, math.ceil(math.log2(n)))
    out = np.zeros(scores.shape, np.float64)
    for idx in np.ndindex(scores.shape[:-1]):
        row = [int(v) for v in scores[idx]]
        a = [1 << (frac_bits + d) if d >= -frac_bits else 0 for d in (v - max(row) for v in row)]
        e = (sum(a) - 1).bit_length()  # smallest E with 2^E >= S
        out[idx] = [(aj << (frac_bits + big_l - e)) / 2 ** (frac_bits + big_l) for aj in a]
    return out


#: name -> (frac_bits, score rows (one step, one sample))
SHIFTMAX_ROWS = {
    "ties-for-the-max": (4, [[3, 3, 3, 3], [5, 5, 1, -2], [0, 0, 0, 0]]),     # Σ = 4: exactly a power of two
    "dropped-terms": (2, [[0, -2, -3, -9], [7, 5, 4, -30], [1, -1, -1, -2]]),  # Δ = -2 kept, -3 dropped
    "sum-just-above-2^k": (4, [[0, 0, -4, -4], [0, -1, -1, -4], [2, 2, 2, -1]]),
    "frac-bits-0": (0, [[1, 0, 0, 1], [2, 1, 0, -1], [0, 0, 0, 0]]),          # only the maxima survive
    "bipolar-range": (16, [[8, -8, 0, 8], [-8, -8, -8, -8], [1, -1, 7, -7]]),
}


@pytest.mark.parametrize("case", list(SHIFTMAX_ROWS))
def test_shiftmax_equals_the_integer_definition_in_reference_and_onnx(case):
    fb, rows = SHIFTMAX_ROWS[case]
    scores = np.asarray(rows, F)  # (3 rows, 4 keys)
    g = _chain(ir.Shiftmax("sm", (), axis=-1, frac_bits=fb), shape=scores.shape)
    x = torch.from_numpy(np.stack([scores, scores[::-1].copy()])[:, None])  # (T=2, B=1, 3, 4)
    want = np.stack([_shiftmax_by_hand(scores, fb), _shiftmax_by_hand(scores[::-1], fb)])
    ref = run(g, x).outputs["y"][:, 0].double().numpy()
    assert int((ref != want).sum()) == 0, (ref, want)
    assert np.all((ref.sum(-1) > 0.5) & (ref.sum(-1) <= 1.0))  # rows sum to (1/2, 1]
    back = run_onnx(export_onnx(g), x).outputs["y"][:, 0].double().numpy()
    assert int((back != ref).sum()) == 0, f"onnx vs reference: {back} vs {ref}"


def test_shiftmax_onnx_is_bit_exact_on_random_integer_scores():
    """Random integer scores (the seed designs' Q·Kᵀ) over several row lengths, including rows whose
    sum is a power of two: 0 mismatches in every value."""
    rng = np.random.default_rng(0)
    total = 0
    for n, fb in ((1, 16), (3, 1), (8, 16), (64, 4)):
        g = _chain(ir.Shiftmax("sm", (), axis=-1, frac_bits=fb), shape=(4, n))
        x = torch.from_numpy(rng.integers(-12, 12, size=(2, 8, 4, n)).astype(F))
        ref, back = run(g, x).outputs["y"], run_onnx(export_onnx(g), x).outputs["y"]
        assert int((back != ref).sum()) == 0, (n, fb)
        total += ref.numel()
    assert total == 2 * 8 * 4 * (1 + 3 + 8 + 64)


# --------------------------------------------------------------------------- window op, ReLU, NIR


def test_block_sum_is_non_causal_inside_a_block_and_onnx_runs_it_as_a_block_model():
    g = _chain(ir.TemporalBlockSum("blk", (), block=2), ir.ReLU("relu", ()), shape=(2,))
    x = torch.tensor([[1.0, -2.0], [2.0, 0.5], [-4.0, 1.0], [0.5, 0.5]]).reshape(T, 1, 2)
    y = run(g, x).outputs["y"][:, 0]
    assert y.tolist() == [[3.0, 0.0], [3.0, 0.0], [0.0, 1.5], [0.0, 1.5]]  # step 0 already sees step 1
    model = export_onnx(g)  # 2 steps per call: step 0's sum reads the call's step 1
    names = {i.name for i in model.graph.input}
    assert {"x@0", "x@1", "t"} <= names and "x" not in names and read_metadata(model)["block"] == 2
    assert run_onnx(model, x).outputs["y"][:, 0].tolist() == y.tolist()
    with pytest.raises(ValueError, match="not a multiple"):  # a block cut in two is refused, not run wrong
        run_onnx(model, x[:3])
    with pytest.raises(OnnxExportError, match=r"node 'blk' \(TemporalBlockSum, block 2\).*export with block=2"):
        export_onnx(g, block=1)


def test_nir_writes_the_three_ops_as_documented_extensions(tmp_path):
    g = _chain(ir.ReLU("relu", ()), ir.Shiftmax("sm", (), frac_bits=3), ir.TemporalBlockSum("blk", (), block=2),
               shape=(2, 5))
    _, cov = export_nir(g)
    rows = {r["name"]: r for r in cov["nodes"]}
    assert {rows[k]["status"] for k in ("relu", "sm", "blk")} == {"extension"}
    assert "non-causal" in rows["blk"]["detail"] and "rectifier" in rows["relu"]["detail"]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "nir.md").read_text()
    assert all(f"| `{op}` |" in docs for op in ("ReLU", "Shiftmax", "TemporalBlockSum"))
    write_nir(g, tmp_path / "g.nir")
    again = read_nir_as_ir(tmp_path / "g.nir")
    assert all(ir.nodes_equal(n, again[n.name]) for n in g.topo_order())
    x = torch.from_numpy(np.random.default_rng(1).integers(-6, 6, size=(T, 3, 2, 5)).astype(F))
    assert torch.equal(run(g, x).outputs["y"], run(again, x).outputs["y"])


# --------------------------------------------------------------------------- float parity with the new ops


def test_float_parity_attributes_ternary_ties_at_both_thresholds():
    """LIF tau=2 halves the first input: H = ±θ exactly fires ±1 (``>=`` / ``<=``). A backend that
    misses either tie is ok (rounding); one that fires -1 at H = -0.4θ is not."""
    g = _chain(ir.Neuron("n", (), output="ternary", v_threshold=0.5), shape=(3,))
    x = torch.tensor([[[1.0, -1.0, -0.4]], [[0.0, 0.0, 0.0]]])
    torch_tr = run(g, x, record=True).traces
    assert torch_tr["n"][:, 0].tolist() == [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]
    tie = {"n": torch_tr["n"].clone()}
    tie["n"][0, 0, :2] = 0.0  # both ties missed: V keeps ±0.5, so step 1 (H = ±0.25) stays silent
    res = check_float_backend(g, x, torch_tr["n"][-1], torch_tr, tie["n"][-1], tie)
    assert res["ok"] and res["rounding_flips"] == 2 and res["spike_mismatches"] == 2, res
    fault = {"n": torch_tr["n"].clone()}
    fault["n"][0, 0, 2] = -1.0  # H = -0.2 is 0.3 from -θ
    res = check_float_backend(g, x, torch_tr["n"][-1], torch_tr, fault["n"][-1], fault)
    assert not res["ok"] and res["non_tie_flips"]["count"] == 1
    assert res["non_tie_flips"]["first"][0]["distance"] == pytest.approx(0.3)


def test_float_parity_runs_a_window_op_graph_node_major():
    """Neuron -> TemporalBlockSum -> Neuron: a wrong spike of the first layer at step 1 changes the
    second layer already at step 0 (the block sum is non-causal); the check names the first layer's
    flip as the root, not the earlier-step cascade."""
    g = _chain(ir.Neuron("a", (), kind="IF"), ir.TemporalBlockSum("blk", (), block=2),
               ir.Neuron("b", (), kind="IF", v_threshold=2.0), shape=(1,))
    x = torch.tensor([1.0, 0.25, 1.0, 1.0]).reshape(T, 1, 1)
    torch_tr = run(g, x, record=True).traces
    assert torch_tr["a"][:, 0, 0].tolist() == [1, 0, 1, 1] and torch_tr["b"][:, 0, 0].tolist() == [0, 1, 1, 1]
    fault = {k: v.clone() for k, v in torch_tr.items()}
    fault["a"][1, 0, 0] = 1.0  # H = 0.25 fires: not a tie
    fault["b"][0, 0, 0] = 1.0  # the block sum of step 0 now counts 2 spikes: b fires at step 0 (cascade)
    res = check_float_backend(g, x, torch_tr["b"][-1], torch_tr, fault["b"][-1], fault)
    assert not res["ok"] and res["non_tie_flips"]["count"] == 1
    assert res["first_divergence"]["layer"] == "a" and res["first_divergence"]["step"] == 1
    assert res["cascade_mismatches"] >= 1
