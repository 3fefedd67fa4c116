"""STEP's neuron zoo through the float stages: capture -> IR -> reference -> ONNX -> NIR, bit-exact.

Per neuron type a tiny Spikformer (random weights, BatchNorm statistics randomized, weights and
thresholds scaled so that every layer fires) on 4 images: the reference interpreter's spikes equal
PyTorch's at every neuron layer and step, onnxruntime's equal the reference's (or ONNX refuses,
naming the node and the reason), the NIR file read back runs to the same spikes, and the float
parity check attributes everything. Hand-built graphs put membranes exactly on the decision
boundaries (threshold, ``(k + 1/2)·θ``, ``D·θ/2``) and check the tie rules, their ONNX/NIR
exports and the float parity attribution; a graph with ``TemporalLinear`` runs node-major and
matches a hand computation.
"""
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import random_model
from step_deploy import ir
from step_deploy.exporters.nir_export import export_nir, write_nir
from step_deploy.exporters.nir_read import read_nir_as_ir
from step_deploy.exporters.onnx_export import OnnxExportError, export_onnx
from step_deploy.exporters.onnx_runner import run_onnx
from step_deploy.frontend import CaptureError, capture, encoded_input, torch_traces
from step_deploy.passes import run_pipeline
from step_deploy.simulators.float_parity import check_float_backend, firing_boundary_distance, is_rounding_tie
from step_deploy.simulators.reference import run
from test_reference import _chain  # hand-built Input -> nodes... -> Output chains

F = np.float32
T = 4

#: test id -> build_model overrides (the model's neurons)
ZOO = {"ilif": dict(node="ilif"), "nilif": dict(node="nilif"), "if-soft": dict(node="if", reset="soft"),
       "lif-soft": dict(node="lif", reset="soft"), "eif": dict(node="eif"), "klif": dict(node="klif"),
       "clif": dict(node="clif"), "glif": dict(node="glif"), "psn": dict(node="psn")}
#: the IR ops each model's spiking layers must be captured as
SPIKING_OPS = {"ilif": {"Neuron"}, "nilif": {"Neuron"}, "if-soft": {"Neuron"}, "lif-soft": {"Neuron"},
               "eif": {"EIFNeuron"}, "klif": {"KLIFNeuron"}, "clif": {"CLIFNeuron"}, "glif": {"GLIFNeuron"},
               "psn": {"Heaviside"}}


def _mismatches(a: dict, b: dict) -> dict:
    """Per layer: how many spike values differ (layers of ``a``; missing in ``b`` counts all)."""
    return {k: int((v != b[k]).sum()) if k in b and b[k].shape == v.shape else int(v.numel()) for k, v in a.items()}


def _lively_model(overrides: dict):
    """A tiny random Spikformer in which every neuron layer fires (weights x3, thresholds x0.4,
    PSN's time mixing random with zero bias)."""
    m = random_model("spikformer-2-64-digits", embed_dim=16, num_heads=2, depths=1, **overrides)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if type(mod).__name__ == "PSNTorch":
                mod.fc.weight.copy_(torch.randn(T, T, generator=g))
                mod.fc.bias.zero_()
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                mod.weight.mul_(3.0)
            if isinstance(getattr(mod, "threshold", None), nn.Parameter):
                mod.threshold.mul_(0.4)
    return m


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_neuron_is_bit_exact_through_the_float_stages(name):
    model = _lively_model(ZOO[name])
    assert model.step == T
    c, s = model.config["in_channels"], model.config["img_size"]
    x = torch.rand(4, c, s, s, generator=torch.Generator().manual_seed(0)) * 2
    logits, traces = torch_traces(model, x)
    graph = capture(model)
    xe = encoded_input(model, x)

    # capture: one spiking IR node per PyTorch neuron, of the right op
    spiking = {n.name: n for n in graph.topo_order() if n.op in SPIKING_OPS[name]}
    assert set(spiking) == set(traces), sorted(set(spiking) ^ set(traces))
    if name == "ilif":
        assert all(n.output == "integer" and n.fire == "round" and n.max_level == 2 for n in spiking.values())
    if name == "nilif":
        assert all(n.fire == "round_normalized" and n.round_d == 2 and n.reset == "soft" for n in spiking.values())
    rates = {k: float((v != 0).float().mean()) for k, v in traces.items()}
    assert all(r > 0.02 for r in rates.values()), rates  # every layer fires: the comparison is not vacuous
    if name == "ilif":
        assert any(bool((v == 2).any()) for v in traces.values())  # two-level spikes occur

    # reference == PyTorch at every layer and step
    ref = run(graph, xe, record=True)
    bad = {k: v for k, v in _mismatches(traces, ref.traces).items() if v}
    assert not bad, f"reference vs PyTorch: {sum(bad.values())} spike mismatches in {bad}"
    assert torch.equal(ref.final(), logits)

    # ONNX: equal element-wise, or refused naming the node, the op and the reason
    onnx_graph = run_pipeline(graph, "onnx")
    if name == "psn":
        with pytest.raises(OnnxExportError, match=r"node 'patch_embed\.proj_lif\.fc' \(TemporalLinear\).*"
                                                  r"across time steps.*one step"):
            export_onnx(onnx_graph)
    else:
        back = run_onnx(export_onnx(onnx_graph, expose_spikes=True), xe, record=True)
        bad = {k: v for k, v in _mismatches(ref.traces, back.traces).items() if v}
        assert not bad, f"onnxruntime vs reference: {sum(bad.values())} spike mismatches in {bad}"
        res = check_float_backend(onnx_graph, xe, logits, traces, back.final(), back.traces)
        assert res["ok"] and res["verdict"] == "0 mismatches", res["verdict"]

    # NIR: every zoo op is written as a documented extension and reads back to equal nodes and spikes
    nir_graph = run_pipeline(graph, "nir")
    with tempfile.TemporaryDirectory() as d:
        write_nir(nir_graph, Path(d) / "model.nir")
        again = read_nir_as_ir(Path(d) / "model.nir")
    for n in nir_graph.topo_order():
        assert ir.nodes_equal(n, again[n.name]), n.name
    back = run(again, xe, record=True)
    bad = {k: v for k, v in _mismatches(ref.traces, back.traces).items() if v}
    assert not bad, f"NIR round trip vs reference: {sum(bad.values())} spike mismatches in {bad}"
    if name == "psn":  # the float parity check also runs node-major graphs (the ONNX case above covers the rest)
        res = check_float_backend(nir_graph, xe, logits, traces, back.final(), back.traces)
        assert res["ok"] and res["verdict"] == "0 mismatches", res["verdict"]
        assert res["neurons_compared"] == len(traces)


def test_hdlif_capture_is_refused_naming_the_module():
    model = random_model("spikformer-2-64-digits", embed_dim=16, num_heads=2, depths=1, node="hdlif")
    with pytest.raises(CaptureError, match=r"'patch_embed\.proj_lif' \(HDLIFNode\) cannot be captured.*PyTorch only"):
        capture(model)


# --------------------------------------------------------------------------- hand-built graphs




def _steps(*rows) -> torch.Tensor:
    """(T, B=1, n) input from per-step rows."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(1)


GLIF_PARAMS = np.array([[0.5, 0.75, 0.25, 0.5, 0.5]] * 2, F)  # (tau, vth, leak, conduct, revth) at t = 0, 1
#: node, input (T, 1, n), the spikes by hand (ties exactly on the boundary)
TIES = {
    # LIF tau=2 halves the first input: H/θ = 0.5, 1.5, 2.5, 3 -> half-to-even 0, 2, 2, clamp 2;
    # soft reset leaves V = 0.5, -0.5, 0.5, 1, then H = (V + 0)/2 = 0.25, -0.25, 0.25, 0.5 -> 0, 0, 0, 0 (0.5 -> 0)
    "ilif": (ir.Neuron("n", (), output="integer", fire="round", max_level=2, round_d=2, reset="soft"),
             _steps([1.0, 3.0, 5.0, 6.0], [0.0, 0.0, 0.0, 0.0]), [[0, 2, 2, 2], [0, 0, 0, 0]]),
    # NILIF D=2: H/θ = D/2 = 1 gives round(0.5) = 0; just above gives 1
    "nilif": (ir.Neuron("n", (), kind="IF", fire="round_normalized", round_d=2, reset="soft"),
              _steps([1.0, 1.0 + 2 ** -20, 2.5]), [[0, 1, 1]]),
    # threshold firing: H == θ fires with >=, not with >
    "threshold": (ir.Neuron("n", (), kind="IF", reset="soft", v_threshold=0.5), _steps([0.5, 0.25]), [[1, 0]]),
    # KLIF: relu(k·H) == θ fires; a negative membrane is rectified to 0
    "klif": (ir.KLIFNeuron("n", (), k=0.5, v_threshold=0.5), _steps([2.0, -4.0, 2.5]), [[1, 0, 1]]),
    # GLIF (al=be=ga=1): U = tau·U' + X·conduct (leak off); O = U - vth > 0: U == vth does not fire
    "glif": (ir.GLIFNeuron("n", (), params_t=GLIF_PARAMS, gates=(1.0, 1.0, 1.0)), _steps([1.5, 2.0, 1.0]),
             [[0, 1, 0]]),
    # Heaviside (PSN's spike): X == 0 fires
    "heaviside": (ir.Heaviside("n", ()), _steps([0.0, -2 ** -30, 1.0]), [[1, 0, 1]]),
}


@pytest.mark.parametrize("case", list(TIES))
def test_ties_fire_as_the_equations_say_in_reference_onnx_and_nir(case, tmp_path):
    node, x, want = TIES[case]
    g = _chain(node, shape=(x.shape[-1],))
    ref = run(g, x, record=True).traces["n"][:, 0]
    assert ref.tolist() == [[float(v) for v in row] for row in want], ref.tolist()
    onnx_back = run_onnx(export_onnx(g, expose_spikes=True), x, record=True).traces["n"][:, 0]
    assert int((onnx_back != ref).sum()) == 0, f"onnx: {onnx_back.tolist()} vs {ref.tolist()}"
    write_nir(g, tmp_path / "t.nir")
    nir_back = run(read_nir_as_ir(tmp_path / "t.nir"), x, record=True).traces["n"][:, 0]
    assert int((nir_back != ref).sum()) == 0, f"nir: {nir_back.tolist()} vs {ref.tolist()}"


@dataclass
class _FlipCase:
    node: ir.Node
    h: float        # float64 membrane
    s: float        # observed spike
    tie: bool       # within tolerance of a boundary
    distance: float


FLIPS = [
    _FlipCase(ir.Neuron("ilif", (), output="integer", fire="round", max_level=2, reset="soft"), 1.5, 1.0, True, 0.0),
    _FlipCase(ir.Neuron("ilif", (), output="integer", fire="round", max_level=2, reset="soft"), 1.4, 2.0, False, 0.1),
    _FlipCase(ir.Neuron("nilif", (), fire="round_normalized", round_d=4, reset="soft", v_threshold=0.5), 1.0, 1.0,
              True, 0.0),
    _FlipCase(ir.Neuron("nilif", (), fire="round_normalized", round_d=4, reset="soft", v_threshold=0.5), 0.9, 1.0,
              False, 0.1),
    _FlipCase(ir.GLIFNeuron("glif", (), params_t=GLIF_PARAMS, gates=(1.0, 1.0, 1.0)), 0.75, 1.0, True, 0.0),
    _FlipCase(ir.Heaviside("psn", ()), 0.01, 0.0, False, 0.01),
]


@pytest.mark.parametrize("c", FLIPS, ids=[f"{c.node.name}-{'tie' if c.tie else 'fault'}" for c in FLIPS])
def test_tie_attribution_knows_every_fire_rule(c):
    h = torch.tensor([c.h], dtype=torch.float64)
    s = torch.tensor([c.s], dtype=torch.float64)
    assert bool(is_rounding_tie(c.node, h, s, 1e-4)[0]) is c.tie
    assert float(firing_boundary_distance(c.node, h)[0]) == pytest.approx(c.distance, abs=1e-12)


def test_float_parity_attributes_an_ilif_tie_and_flags_a_real_flip():
    """A backend that rounds H/θ = 1.5 down (a tie) is ok; one that fires 2 at H/θ = 1.4 is not."""
    g = _chain(ir.Neuron("n", (), kind="IF", output="integer", fire="round", max_level=2, reset="soft"), shape=(2,))
    x = _steps([1.5, 1.4], [0.0, 0.0])
    torch_tr = run(g, x, record=True).traces  # [[2, 1], [0, 0]] (V = -0.5, 0.4)
    assert torch_tr["n"][:, 0].tolist() == [[2, 1], [0, 0]]
    tie = {"n": torch_tr["n"].clone()}
    tie["n"][0, 0, 0] = 1.0  # rounded 1.5 down: V = 0.5, so step 1 rounds 0.5 to 0 (half-to-even) as well
    res = check_float_backend(g, x, torch_tr["n"][-1], torch_tr, tie["n"][-1], tie)
    assert res["ok"] and res["rounding_flips"] == 1 and res["spike_mismatches"] == 1, res
    fault = {"n": torch_tr["n"].clone()}
    fault["n"][0, 0, 1] = 2.0  # 1.4 is 0.1 from the boundary 1.5
    res = check_float_backend(g, x, torch_tr["n"][-1], torch_tr, fault["n"][-1], fault)
    assert not res["ok"] and res["non_tie_flips"]["count"] == 1
    assert res["non_tie_flips"]["first"][0]["distance"] == pytest.approx(0.1)


def test_float_parity_refuses_a_neuron_it_cannot_attribute():
    @dataclass(frozen=True, eq=False)
    class OddNeuron(ir.Neuron):  # not registered: no reference rule
        pass

    g = ir.Graph([ir.Input("x", shape=(2,)), OddNeuron("odd", ("x",)), ir.Output("y", ("odd",))])
    x = torch.zeros(2, 1, 2)
    with pytest.raises(ValueError, match=r"'odd' \(OddNeuron\).*cannot be attributed"):
        check_float_backend(g, x, torch.zeros(1, 2), {"odd": x}, torch.zeros(1, 2), {"odd": x})


# --------------------------------------------------------------------------- sequence ops


def test_temporal_linear_runs_node_major_like_a_hand_computation():
    w = np.array([[1, 0, 2, 0], [0, -1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 3]], F)
    b = np.array([-1, 0, 0.5, -2], F)
    g = _chain(ir.Neuron("if", (), kind="IF", reset="soft"), ir.TemporalLinear("mix", (), weight=w, bias=b),
               ir.Heaviside("psn", ()), shape=(3,))
    x = torch.tensor([[[1.0, 0.5, 2.0]], [[0.0, 0.5, 0.0]], [[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])
    r = run(g, x, record=["if", "mix", "psn"])
    s = r.traces["if"][:, 0].numpy()
    assert s.tolist() == [[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 0]]  # IF soft: V carries the remainder
    y = np.array([[sum(w[t, k] * s[k, i] for k in range(T)) + b[t] for i in range(3)] for t in range(T)], F)
    assert np.array_equal(r.traces["mix"][:, 0].numpy(), y)  # Y[0] needs X[2]: non-causal, exact on integers
    assert np.array_equal(r.traces["psn"][:, 0].numpy(), (y >= 0).astype(F))
    # node-major equals step-major on the causal part: an identity TemporalLinear appended changes nothing
    causal = _chain(ir.Neuron("if", (), kind="IF", reset="soft"), shape=(3,))
    ident = _chain(ir.Neuron("if", (), kind="IF", reset="soft"),
                   ir.TemporalLinear("id", (), weight=np.eye(T, dtype=F), bias=np.zeros(T, F)), shape=(3,))
    assert torch.equal(run(causal, x).outputs["y"], run(ident, x).outputs["y"])
    with pytest.raises(ValueError, match=r"TemporalLinear 'mix'.*T=4.*T=3"):
        run(g, x[:3])


def test_verifier_checks_zoo_parameters():
    bad_clif = _chain(ir.CLIFNeuron("c", (), reset="hard"))
    assert any(d.rule == "neuron-params" and d.node == "c" for d in ir.verify(bad_clif))
    eif_as_lif = _chain(ir.Neuron("e", (), kind="EIF"))  # would run LIF's charge
    assert [d.hint for d in ir.verify(eif_as_lif) if d.rule == "neuron-params"] == ["use ir.EIFNeuron"]
    odd_t = _chain(ir.TemporalLinear("a", (), weight=np.eye(4, dtype=F), bias=np.zeros(4, F)),
                   ir.GLIFNeuron("g", (), params_t=np.full((3, 5), 0.5, F)))
    assert [d.node for d in ir.verify(odd_t) if d.rule == "time-steps"] == ["g"]


# --------------------------------------------------------------------------- capture formats


class _Neuron(nn.Module):
    """A neuron module that describes itself with a given ``neuron_params()`` dict."""

    def __init__(self, params: dict):
        super().__init__()
        self.params = params

    def forward(self, x):
        return x

    def neuron_params(self):
        return dict(self.params)


def _capture(params: dict) -> ir.Graph:
    return capture(nn.Sequential(nn.Linear(4, 3), _Neuron(params)), input_shape=(4,))


def test_capture_keeps_multi_level_spikes_and_refuses_what_it_would_drop():
    g = _capture({"op": "Neuron", "kind": "LIF", "tau": 2.0, "v_threshold": 0.5, "reset": "soft",
                  "output": "integer", "fire": "round", "max_level": 3, "round_d": 3})
    n = g["1"]
    assert (n.op, n.output, n.fire, n.max_level, n.reset, n.v_threshold) == ("Neuron", "integer", "round", 3, "soft", 0.5)
    old = {"kind": "lif", "tau": 2.0, "threshold": 1.0, "v_reset": 0.0, "reset": "hard", "compare": ">=",
           "decay_input": True}
    assert _capture(old)["1"].output == "binary"  # the old format is still read
    with pytest.raises(CaptureError, match=r"module '1'.*\['levels'\].*old format"):
        _capture(dict(old, levels=3))  # would silently become binary
    with pytest.raises(CaptureError, match=r"module '1'.*\['D'\] are not fields of IR Neuron"):
        _capture({"op": "Neuron", "kind": "LIF", "D": 2})
    with pytest.raises(CaptureError, match=r"module '1'.*op 'Spooky'"):
        _capture({"op": "Spooky"})


def test_nir_writes_zoo_neurons_as_extensions_never_as_lif():
    g = _chain(ir.KLIFNeuron("k", (), k=1.5))
    nir_graph, cov = export_nir(g)
    assert type(nir_graph.nodes["k"]).__name__ == "Input"  # a cut carrying the KLIF record, not a nir.LIF
    row = next(r for r in cov["nodes"] if r["name"] == "k")
    assert row["status"] == "extension" and "KLIF" in row["detail"]
