"""Multi-bit spikes priced by their bits (Bit Budget) in every energy model: the same network and
the same spike counts with binary, ternary and integer (ILIF) neurons; the neuron zoo's nodes
(KLIF/EIF/CLIF/GLIF neurons, PSN's Heaviside and TemporalLinear) counted as neurons and synapses."""
import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.energy.counters import count_graph
from step_deploy.energy.models import price
from step_deploy.energy.value_classes import value_classes

T, B = 2, 1
MODELS = ("paper", "step", "horowitz", "loihi")

#: neuron variants: IR fields, and the spike value each of the same firing positions takes
VARIANTS = {
    "binary": (dict(), 1.0),
    "ternary": (dict(output="ternary"), -1.0),          # 3 levels: 2 bits
    "ilif2": (dict(output="integer", max_level=2, reset="soft"), 2.0),  # 0..2: 2 bits
    "ilif4": (dict(output="integer", max_level=4, reset="soft"), 3.0),  # 0..4: 3 bits
}
BITS = {"binary": 1, "ternary": 2, "ilif2": 2, "ilif4": 3}


def network(variant: str) -> ir.Graph:
    """Analog pixels (6) -> Linear 6->8 -> neuron -> Linear 8->3 -> LIF -> output (the last LIF keeps
    ``l1`` on a Loihi core rather than the host)."""
    rng = np.random.default_rng(0)
    fields, _ = VARIANTS[variant]
    return ir.Graph([
        ir.Input("img", (), shape=(6,), kind="analog"),
        ir.Linear("l0", ("img",), weight=rng.normal(size=(8, 6)).astype(np.float32), bias=None),
        ir.Neuron("s", ("l0",), tau=2.0, v_threshold=1.0, **fields),
        ir.Linear("l1", ("s",), weight=rng.normal(size=(3, 8)).astype(np.float32), bias=None),
        ir.Neuron("s2", ("l1",), tau=2.0, v_threshold=1.0),
        ir.Output("out", ("s2",)),
    ])


def counts_of(variant: str):
    """Counted on hand-made traces: the neuron fires at the same 5 (step, neuron) positions in
    every variant, with its variant's spike value there."""
    _, value = VARIANTS[variant]
    spikes = torch.zeros(T, B, 8)
    spikes[0, 0, [0, 3, 5]] = value
    spikes[1, 0, [1, 3]] = value
    img = torch.arange(1.0, 7.0).repeat(T, B, 1)
    g = network(variant)
    out = torch.zeros(T, B, 3)
    out[1, 0, 2] = 1.0
    return g, count_graph(g, {"img": img, "s": spikes, "s2": out}, T)


def components(report) -> dict:
    return {(l.name, k): v for l in report.layers for k, v in l.components.items()}


def test_a_neurons_levels_set_its_spike_bits_and_the_synapses_bit_ops():
    for variant, bits in BITS.items():
        g, c = counts_of(variant)
        s, l1 = c.row("s"), c.row("l1")
        levels = g["s"].levels
        assert levels == {"binary": 2, "ternary": 3, "ilif2": 3, "ilif4": 5}[variant]
        assert bits == int(np.ceil(np.log2(levels)))
        assert (s.bits, s.bit_ops, s.total("spikes"), s.total("spike_bits")) == (bits, bits, 5, 5 * bits)
        assert (l1.value_class, l1.operation, l1.bit_ops) == (("binary", "ac", 1) if bits == 1 else
                                                              ("multibit", "ac", bits))
        # one weight read per synaptic operation whatever the spike's bits
        assert l1.total("synops") == 5 * 3 and l1.total("weight_bits_read") == 5 * 3 * 32
        assert ("bit_ops" in l1.to_dict()) == (bits > 1)  # binary files are unchanged


#: the components that scale with a spike's bits in each model; every other one is unchanged
SCALED = {
    "paper": {("l1", "synapses_ac")},
    "step": {("l1", "synapses"), ("s", "spike_traffic")},
    "horowitz": {("l1", "synapses"), ("s", "spike_traffic")},
    "loihi": {("l1", "synapses"), ("s", "spike_out"), ("s", "noc")},
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("variant", ["ternary", "ilif2", "ilif4"])
def test_multi_bit_spikes_cost_exactly_their_bits_times_binary_ones(model, variant):
    g0, c0 = counts_of("binary")
    g1, c1 = counts_of(variant)
    e0, e1 = components(price(c0, model, g0)), components(price(c1, model, g1))
    assert set(e0) == set(e1)
    scaled = SCALED[model]
    assert scaled <= set(e0) and all(e0[k] > 0 for k in scaled)
    for key in e0:
        factor = BITS[variant] if key in scaled else 1
        assert e1[key] == pytest.approx(factor * e0[key], rel=1e-12), (model, key)


def test_the_step_model_by_hand_for_two_bit_spikes():
    g, c = counts_of("ilif2")
    e = components(price(c, "step", g))
    # 15 synaptic operations x 2 accumulates (0.9 pJ) each; 5 spikes x 2 bits written and read (3.12 pJ/bit)
    assert e[("l1", "synapses")] == pytest.approx(15 * 2 * 0.9)
    assert e[("s", "spike_traffic")] == pytest.approx(3.12 * 2 * 5 * 2)


def test_loihi_graded_spikes_are_an_assumption_in_the_report():
    g, c = counts_of("ilif2")
    r = price(c, "loihi", g)
    assert r.constants["loihi.graded_events_per_bit"].confidence == "assumption"
    g0, c0 = counts_of("binary")
    assert "loihi.graded_events_per_bit" not in price(c0, "loihi", g0).constants


def test_products_with_multi_bit_spikes_cost_the_narrower_spikes_bits():
    g = ir.Graph([
        ir.Input("a", (), shape=(2, 3), kind="spikes"),
        ir.Input("x", (), shape=(3, 2), kind="analog"),
        ir.Neuron("q", ("a",), output="integer", max_level=2, reset="soft"),
        ir.Neuron("k", ("x",), output="integer", max_level=4, reset="soft"),
        ir.MatMul("qk", ("q", "k")),
        ir.Mul("qa", ("q", "a")),
        ir.Output("o", ("qk",)), ir.Output("o2", ("qa",)),
    ])
    q = torch.tensor([[2.0, 0, 1], [0, 1, 1]]).reshape(1, 1, 2, 3)
    k = torch.tensor([[1.0, 3], [0, 4], [2, 0]]).reshape(1, 1, 3, 2)
    c = count_graph(g, {"q": q, "k": k, "a": (q != 0).float()}, 1)
    qk, qa = c.row("qk"), c.row("qa")
    assert (qk.value_class, qk.operation, qk.bit_ops) == ("multibit*multibit", "ac", 2)  # 2-bit q, 3-bit k
    assert (qa.value_class, qa.operation, qa.bit_ops) == ("multibit*binary", "ac", 1)   # a spike only gates
    paper = components(price(c, "paper", g))
    assert paper[("qk", "attention")] == pytest.approx(0.9 * 2 * qk.total("accumulates"))


def test_zoo_neurons_and_psn_are_counted():
    steps = 4
    params = np.ones((steps, 5), np.float32)
    g = ir.Graph([
        ir.Input("x", (), shape=(4,), kind="analog"),
        ir.KLIFNeuron("klif", ("x",), k=1.5), ir.EIFNeuron("eif", ("x",)), ir.CLIFNeuron("clif", ("x",)),
        ir.GLIFNeuron("glif", ("x",), params_t=params),
        ir.TemporalLinear("psn_fc", ("x",), weight=np.eye(steps, dtype=np.float32), bias=np.zeros(steps, np.float32)),
        ir.Heaviside("psn", ("psn_fc",)),
        ir.Add("sum", ("klif", "eif")), ir.Add("sum2", ("clif", "glif")), ir.Add("sum3", ("sum", "sum2")),
        ir.Add("sum4", ("sum3", "psn")),
        ir.Output("o", ("sum4",)),
    ])
    cls = value_classes(g)
    assert all(cls[n].kind == "binary" for n in ("klif", "eif", "clif", "glif", "psn"))
    x = torch.zeros(steps, 1, 4)
    x[:, 0, :2] = 1.0  # two non-zero inputs per step
    traces = {n: x for n in ("x", "klif", "eif", "clif", "glif", "psn")}
    c = count_graph(g, traces, steps)
    neurons = {r.name: r for r in c.of_kind("neuron")}
    assert set(neurons) == {"klif", "eif", "clif", "glif", "psn"}
    assert neurons["psn"].membrane_bits == 0 and neurons["psn"].total("membrane_bits_read") == 0  # stateless
    assert neurons["clif"].membrane_bits == 64  # V and M
    fc = c.row("psn_fc")
    # each non-zero input reaches the T outputs of its position; every output is a T-term sum
    assert (fc.kind, fc.operation) == ("synapse", "mac")
    assert fc.per_step("synops").tolist() == [2 * steps] * steps
    assert fc.per_step("dense_macs").tolist() == [4 * steps] * steps


@pytest.mark.parametrize("target", ["loihi", "fpga"])
def test_the_quantized_ilif_network_counts_its_spikes_bits_like_the_float_graph(target):
    """The golden model's ``LoihiLIF``/``FpgaLIF`` with ``max_level = 2`` carry the same classes,
    bits and ``bit_ops`` as the float ILIF neuron (counts equal across stages need this)."""
    from step_deploy.neuron_support import TinyContext, tiny_inputs, tiny_network
    from step_deploy.energy.counters import needed_traces
    from step_deploy.frontend import capture
    from step_deploy.simulators.golden import run_golden

    model = tiny_network("ilif", {})
    graph = capture(model, input_shape=(4,), input_kind="analog")
    ctx = TinyContext(model, graph)
    try:
        qgraph = ctx.loihi[1] if target == "loihi" else ctx.fpga[0]
    finally:
        ctx.close()
    neuron = next(n for n in qgraph.topo_order() if n.op in ("LoihiLIF", "FpgaLIF"))
    assert int(neuron.max_level) == 2
    x = tiny_inputs(2)
    q = count_graph(qgraph, run_golden(qgraph, x, record=needed_traces(qgraph)).traces, 4)
    spikes = q.row(neuron.name)
    assert (spikes.value_class, spikes.bits, spikes.bit_ops) == ("multibit", 2, 2)
    reader = next(r for r in q.of_kind("synapse") if r.value_class != "real")
    assert (reader.value_class, reader.operation, reader.bit_ops) == ("multibit", "ac", 2)
    assert value_classes(graph)[neuron.name] == value_classes(qgraph)[neuron.name]


def test_psn_heaviside_is_priced_as_one_compare_with_no_membrane():
    g = ir.Graph([ir.Input("x", (), shape=(4,), kind="analog"), ir.Heaviside("psn", ("x",)), ir.Output("o", ("psn",))])
    x = torch.zeros(T, B, 4)
    x[0, 0, 1] = 1.0
    c = count_graph(g, {"psn": x}, T)
    e = components(price(c, "horowitz", g))
    assert e[("psn", "neurons")] == pytest.approx(0.9 * 4 * T)  # a float32 add per value and step
    assert e[("psn", "membrane_memory")] == 0.0


def test_step_energy_prices_a_network_with_no_integer_form_at_float32_and_says_why(tmp_path):
    """PSN (its TemporalLinear) has no FPGA integer form: step-energy skips the deployed (/int)
    prices with the quantizer's reason and prices float32 (what ``step-energy`` computes before
    writing its files); PSN's map across time is counted as a synapse, NeuroBench's view included."""
    from step_deploy.energy_eval.command import EnergyOptions, compute
    from step_deploy.frontend.checkpoint import save_checkpoint
    from step_deploy.models import build_model

    torch.manual_seed(0)
    model = build_model("spikformer-2-64-digits", node="psn", embed_dim=16, num_heads=2, depths=1)
    ckpt = save_checkpoint(model, tmp_path / "psn.ckpt", metadata={"dataset": "digits"})
    res, _, _ = compute(ckpt, EnergyOptions(samples=4, calib_samples=4, models="paper,step", progress=False))
    assert set(res.snn) == {"paper", "step/float32"}
    assert any("no /int prices" in n and "TemporalLinear has no FPGA integer form" in n for n in res.notes)
    assert any(n.startswith("step/int: skipped") for n in res.notes)
    temporal = [r for r in res.counts.rows if r.op == "TemporalLinear"]
    assert temporal and all(r.kind == "synapse" and r.total("dense_macs") > 0 for r in temporal)
    assert any(r.total("synops") > 0 for r in temporal)
    assert set(res.neurobench["SynapticOperations"]) >= {"Effective_MACs"}


def test_the_equal_bit_budget_qann_widens_with_the_spikes_levels():
    """T steps of L-level spikes sum to T·(L-1)+1 values: a binary T = 2 network is matched by a
    2-bit QANN, a ternary or ILIF (D = 2) one by 3 bits, ILIF D = 4 by 4 bits."""
    from step_deploy.energy.baseline import activation_bits, price_qann, qann_counts, spike_levels

    for variant, (levels, bits) in {"binary": (2, 2), "ternary": (3, 3), "ilif2": (3, 3), "ilif4": (5, 4)}.items():
        _, c = counts_of(variant)
        assert spike_levels(c) == levels and activation_bits(T, levels) == bits
        q = qann_counts(c)
        assert q.activation_bits == bits
        assert f"= {bits} bits" in price_qann(q, "step", c).notes[0]
    assert activation_bits(4) == 3 and activation_bits(4, 3) == 4  # STEP's T = 4: ILIF's QANN has 4 bits
