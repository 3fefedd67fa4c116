"""Energy counters of the seed attention designs' ops on tiny hand-built graphs: Shiftmax (bipolar
self-attention), ReLU-graded K and ternary V (A²OS²A), TemporalBlockSum (STAtten). Every expected
count is derived here from the operation list of the op's definition, not read from the code."""
import math

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.energy.baseline import price_qann, qann_counts
from step_deploy.energy.counters import count_graph, needed_traces
from step_deploy.energy.counts import rebit
from step_deploy.energy.models import price
from step_deploy.energy.torch_hooks import _derive
from step_deploy.simulators.reference_ops import op_shiftmax, op_temporalblocksum

T, B = 4, 2
MODELS = ("paper", "step", "horowitz", "loihi")
E_AC, E_BIT, E_EMBEDDED = 0.9, 3.12, 0.1  # constants.yaml: paper/step e_ac, step e_memory_bit, loihi e_embedded_op


def components(report) -> dict:
    return {(l.name, k): v for l in report.layers for k, v in l.components.items()}


def spikes(rng, *shape, p=0.5, value=1.0):
    return torch.tensor((rng.random(shape) < p).astype(np.float32) * value)


# --------------------------------------------------------------------------- Shiftmax


def shiftmax_graph(axis: int) -> ir.Graph:
    """Binary spikes (3, 5) as scores -> Shiftmax over ``axis`` -> P @ V with V binary (5, 2)."""
    return ir.Graph([
        ir.Input("s", (), shape=(3, 5), kind="spikes"),
        ir.Input("v", (), shape=(5, 2), kind="spikes"),
        ir.Shiftmax("p", ("s",), axis=axis, frac_bits=4),
        ir.MatMul("y", ("p", "v")),
        ir.Output("o", ("y",)),
    ])


@pytest.mark.parametrize("axis, rows, n", [(-1, 3, 5), (0, 5, 3)])
def test_shiftmax_counts_the_operations_of_its_definition_per_row(axis, rows, n):
    rng = np.random.default_rng(1)
    g = shiftmax_graph(axis)
    s, v = spikes(rng, T, B, 3, 5), spikes(rng, T, B, 5, 2)
    traces = {"s": s, "v": v, "p": _derive(g, {"s": s, "v": v}, "p")}
    c = count_graph(g, traces, T)
    r = c.row("p")
    assert (r.kind, r.operation) == ("nonlinear", "shiftmax")
    # per row of n scores: n compares (max), n subtractions, n shifts (2^delta), n - 1 adds, 1 LZC, n shifts
    per_step = {"values": rows * n, "compares": rows * n, "subtracts": rows * n, "shifts": rows * 2 * n,
                "adds": rows * (n - 1), "leading_zero_counts": rows}
    for k, v_ in per_step.items():
        assert r.counters[k].shape == (B, T)
        assert (r.counters[k] == v_).all(), k
    # every op an add equivalent (elementwise.adds_per_* = 1): paper and step at E_AC
    ops = sum(per_step[k] for k in ("compares", "subtracts", "shifts", "adds", "leading_zero_counts")) * T * B
    for model in ("paper", "step"):
        rep = price(c, model, g)
        assert components(rep)[("p", "nonlinear")] == pytest.approx(E_AC * ops)
        assert rep.constants["elementwise.adds_per_shift"].confidence == "assumption"
    assert components(price(c, "loihi", g))[("p", "nonlinear")] == pytest.approx(E_EMBEDDED * ops)
    # P (real) @ V (binary): accumulates of P's entries gated by V's spikes, one add each
    y = c.row("y")
    assert (y.value_class, y.operation, y.bit_ops) == ("real*binary", "ac", 1)


def test_the_values_derived_for_pytorch_counting_follow_the_ops_definitions():
    rng = np.random.default_rng(2)
    g = ir.Graph([
        ir.Input("a", (), shape=(3, 4), kind="spikes"),
        ir.Input("b", (), shape=(4, 3), kind="spikes"),
        ir.MatMul("ab", ("a", "b")),
        ir.Shiftmax("p", ("ab",), frac_bits=1),
        ir.TemporalBlockSum("m", ("ab",), block=2),
        ir.Output("o", ("p",)), ir.Output("o2", ("m",)),
    ])
    a, b = spikes(rng, T, B, 3, 4), spikes(rng, T, B, 4, 3)
    derived = {"a": a, "b": b}
    for name in ("p", "m"):
        _derive(g, derived, name)
    ab = torch.einsum("tbik,tbkj->tbij", a, b)
    # the reference interpreter's functions: Shiftmax per step on (B, ...), the block sum on (T, B, ...)
    assert torch.equal(derived["m"], op_temporalblocksum(g["m"], [ab], {}, 0))
    per_step = op_shiftmax(g["p"], [ab.reshape(T * B, 3, 3)], {}, 0).reshape(T, B, 3, 3)
    assert torch.equal(derived["p"], per_step)
    assert int((derived["p"] == 0).sum()) > 0  # the frac_bits floor drops some terms here


# --------------------------------------------------------------------------- A²OS²A: ReLU-graded K, ternary V


def a2os2a_graph(v_output: str = "ternary") -> ir.Graph:
    """Analog tokens (3 x 4) -> Q binary LIF, K = ReLU(Linear), V LIF with `v_output` spikes; (Q Kᵀ) V."""
    rng = np.random.default_rng(0)
    n, c = 3, 4

    def lin(name):
        return ir.Linear(name, ("x",), weight=rng.normal(size=(c, c)).astype(np.float32), bias=None)
    return ir.Graph([
        ir.Input("x", (), shape=(n, c), kind="analog"),
        lin("ql"), ir.Neuron("q", ("ql",), v_threshold=0.5),
        lin("kl"), ir.ReLU("k", ("kl",)),
        lin("vl"), ir.Neuron("v", ("vl",), v_threshold=0.5, output=v_output),
        ir.MatMul("qk", ("q", "k"), transpose_b=True),
        ir.MatMul("y", ("qk", "v")),
        ir.Neuron("a", ("y",), v_threshold=0.5),
        ir.Output("o", ("a",)),
    ])


def a2os2a_traces(v_value: float) -> dict:
    """Hand-made values: the same non-zero positions for a ternary (-1) or binary (+1) V."""
    rng = np.random.default_rng(3)
    q = spikes(rng, T, B, 3, 4)
    k = torch.tensor(np.maximum(rng.normal(size=(T, B, 3, 4)), 0).astype(np.float32))
    v = spikes(rng, T, B, 3, 4, value=v_value)
    qk = torch.einsum("tbic,tbjc->tbij", q, k)
    return {"x": torch.ones(T, B, 3, 4), "q": q, "k": k, "v": v, "qk": qk, "a": spikes(rng, T, B, 3, 4)}


def coincidences(a: np.ndarray, b: np.ndarray) -> int:
    """Σ over (t, sample, i, j, k) of [a[i, k] != 0 and b[k, j] != 0], by loops."""
    total = 0
    for t in range(a.shape[0]):
        for s in range(a.shape[1]):
            for i in range(a.shape[2]):
                for j in range(b.shape[3]):
                    total += sum(int(a[t, s, i, k] != 0 and b[t, s, k, j] != 0) for k in range(a.shape[3]))
    return total


def test_a2os2a_relu_k_is_graded_and_its_products_are_gated_and_signed_adds():
    g = a2os2a_graph()
    tr = a2os2a_traces(-1.0)
    c = count_graph(g, tr, T)
    k = c.row("k")
    assert (k.kind, k.value_class, k.operation) == ("nonlinear", "real", "relu")
    assert (k.counters["compares"] == 3 * 4).all()  # max(x, 0): one compare per value, every step
    qk, y = c.row("qk"), c.row("y")
    # Q binary x K real: an add of K's entry where Q spikes (AC), not an AND
    assert (qk.value_class, qk.operation, qk.bit_ops) == ("binary*real", "ac", 1)
    assert qk.total("accumulates") == coincidences(tr["q"].numpy(), tr["k"].numpy().transpose(0, 1, 3, 2))
    # (Q Kᵀ) real x V ternary: signed adds priced by the spike's 2 bits
    assert (y.value_class, y.operation, y.bit_ops) == ("real*multibit", "ac", 2)
    assert y.total("accumulates") == coincidences(tr["qk"].numpy(), tr["v"].numpy())
    paper = components(price(c, "paper", g))
    assert paper[("qk", "attention")] == pytest.approx(E_AC * qk.total("accumulates"))
    assert paper[("y", "attention")] == pytest.approx(E_AC * 2 * y.total("accumulates"))
    assert paper[("k", "nonlinear")] == pytest.approx(E_AC * 12 * T * B)


@pytest.mark.parametrize("model", MODELS)
def test_ternary_v_costs_twice_binary_v_in_its_spike_driven_terms_only(model):
    """The same non-zero positions: a ternary V (2-bit spikes) against a binary one."""
    g2, g1 = a2os2a_graph("ternary"), a2os2a_graph("binary")
    c2, c1 = count_graph(g2, a2os2a_traces(-1.0), T), count_graph(g1, a2os2a_traces(1.0), T)
    e2, e1 = components(price(c2, model, g2)), components(price(c1, model, g1))
    assert set(e2) == set(e1)
    doubled = {("y", "attention"), ("v", "spike_traffic"), ("v", "spike_out"), ("v", "noc")}
    assert ("y", "attention") in e1 and e1[("y", "attention")] > 0
    for key, value in e1.items():
        factor = 2 if key in doubled else 1
        assert e2[key] == pytest.approx(factor * value, rel=1e-12), key


@pytest.mark.parametrize("quantizer", ["fpga", "loihi"])
def test_quantized_ternary_neurons_keep_their_two_bit_class(quantizer):
    """``FpgaLIF``/``LoihiLIF`` with ``fire='ternary'``: the same value classes as the float graph, so
    the golden models' counts are priced as the PyTorch model's."""
    from step_deploy.energy.value_classes import value_classes
    if quantizer == "fpga":
        from step_deploy.passes.quantize_fpga import quantize_fpga as quantize
    else:
        from step_deploy.passes.quantize_loihi import quantize_loihi as quantize
    g = a2os2a_graph("ternary")
    q = quantize(g, 2 * torch.rand(4, 3, 4, generator=torch.Generator().manual_seed(0)), steps=T)[0]
    assert getattr(q["v"], "fire", None) == "ternary"
    cf, cq = value_classes(g, T), value_classes(q, T)
    for name in ("q", "k", "v", "qk", "y", "a"):
        assert cq[name] == cf[name], name
    assert (cq["v"].kind, cq["v"].bits) == ("multibit", 2)


# --------------------------------------------------------------------------- STAtten's block sum


def statten_graph(block: int = 2) -> ir.Graph:
    """K (3 tokens x 2) and V (3 x 2) spikes -> Kᵀ V (2 x 2) -> block sum -> Q (3 x 2) @ M."""
    return ir.Graph([
        ir.Input("q", (), shape=(3, 2), kind="spikes"),
        ir.Input("k", (), shape=(3, 2), kind="spikes"),
        ir.Input("v", (), shape=(3, 2), kind="spikes"),
        ir.MatMul("kv", ("k", "v"), transpose_a=True),
        ir.TemporalBlockSum("m", ("kv",), block=block),
        ir.MatMul("y", ("q", "m"), scale=0.5),
        ir.Output("o", ("y",)),
    ])


def statten_counts(block: int = 2):
    rng = np.random.default_rng(4)
    g = statten_graph(block)
    tr = {n: spikes(rng, T, B, 3, 2) for n in ("q", "k", "v")}
    _derive(g, tr, "m")
    return g, count_graph(g, tr, T)


def test_block_sum_adds_one_value_per_element_and_moves_its_accumulator_every_step():
    g, c = statten_counts(block=2)
    m = c.row("m")
    numel = 2 * 2
    # Kᵀ V of 3 tokens counts 0..3, a block of 2 steps 0..6: ceil(log2(7)) = 3 bits per element
    bits = math.ceil(math.log2(2 * 3 + 1))
    assert (m.kind, m.membrane_bits) == ("buffer", bits)
    assert (m.counters["adds"] == numel).all()
    assert (m.counters["buffer_bits_written"] == numel * bits).all()
    assert (m.counters["buffer_bits_read"] == numel * bits).all()
    adds, traffic = numel * T * B, 2 * numel * bits * T * B
    paper, step = components(price(c, "paper", g)), components(price(c, "step", g))
    assert paper[("m", "temporal_buffer")] == pytest.approx(E_AC * adds)
    assert ("m", "buffer_memory") not in paper  # the paper convention prices no memory
    assert step[("m", "temporal_buffer")] == pytest.approx(E_AC * adds)
    assert step[("m", "buffer_memory")] == pytest.approx(E_BIT * traffic)
    hz = components(price(c, "horowitz", g))
    # an SRAM of 4 x 3 bits (2 bytes: the smallest table entry) per bit read or written
    from step_deploy.energy.constants import load_constants
    cst = load_constants()
    sram_bit = cst.at_least("horowitz.sram_read_64bit", math.ceil(numel * bits / 8))[0] / 64
    assert hz[("m", "buffer_memory")] == pytest.approx(sram_bit * traffic)
    loihi = price(c, "loihi", g)
    assert components(loihi)[("m", "temporal_buffer")] == pytest.approx(E_EMBEDDED * adds)
    assert any("m: its block accumulator's memory traffic is not priced" in n for n in loihi.notes)
    # as trained (float32) the accumulator holds 32-bit values
    f = rebit(c, 32, 32, numeric="float").row("m")
    assert (f.membrane_bits, f.total("buffer_bits_read")) == (32, numel * 32 * T * B)


def test_the_qann_runs_the_elementwise_ops_once_and_has_no_block_accumulator():
    g, c = statten_counts()
    q = qann_counts(c)
    assert "m" not in q.layers
    gs = shiftmax_graph(-1)
    rng = np.random.default_rng(5)
    tr = {"s": spikes(rng, T, B, 3, 5), "v": spikes(rng, T, B, 5, 2)}
    _derive(gs, tr, "p")
    cs = count_graph(gs, tr, T)
    qs = qann_counts(cs)
    assert qs.layers["p"]["shifts"] == 3 * 2 * 5  # one step's operations, per inference
    ops = 3 * 5 + 3 * 5 + 3 * 2 * 5 + 3 * 4 + 3
    rep = price_qann(qs, "paper", cs, gs)
    assert components(rep)[("p", "nonlinear")] == pytest.approx(E_AC * ops)


def test_needed_traces_ask_for_no_value_the_dense_ops_do_not_read():
    g = statten_graph()
    assert "m" in needed_traces(g)  # an operand of Q @ M
    assert "kv" not in needed_traces(g)  # the block sum's count is dense: its input is not read


# --------------------------------------------------------------------------- the designs' models


@pytest.mark.parametrize("arch", ["spikformer-a2os2a-2-64-digits", "spikformer_semm-2-64-digits"])
def test_pytorch_hooks_count_the_designs_as_the_reference_interpreter_does(arch):
    """A²OS²A's K is hooked on its ReLU module; SEMM's stacked experts are gathered from the expert
    modules (graph metadata ``neuron_groups``): every counter equals the reference interpreter's."""
    from conftest import random_model
    from step_deploy.energy.counts import compare_counts
    from step_deploy.energy.torch_hooks import hook_traces
    from step_deploy.frontend.capture import capture, encoded_input
    from step_deploy.simulators import reference

    model = random_model(arch)
    g = capture(model)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    steps = int(model.step)
    hooked = count_graph(g, hook_traces(model, x, g, steps), steps)
    ref = count_graph(g, reference.run(g, encoded_input(model, x), steps=steps, record=needed_traces(g)).traces, steps)
    assert compare_counts(hooked, ref) == []
    kinds = {r.kind for r in hooked.rows}
    assert ("nonlinear" in kinds) == (arch.startswith("spikformer-a2os2a"))
    assert sum(r.total("spikes") for r in hooked.of_kind("neuron")) > 0


# --------------------------------------------------------------------------- the comparison table script


def test_seed_designs_help_names_every_option(capsys):
    from conftest import load_benchmark
    mod = load_benchmark("seed_designs")
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--designs", "--data", "--epochs", "--samples", "--sim-samples", "--random-weights", "--output"):
        assert opt in out
    with pytest.raises(SystemExit):
        mod.parse(["--data", "mnist"])
    assert "--data 'mnist': choose from" in capsys.readouterr().err


def test_seed_designs_smoke_run_fills_every_cell(tmp_path, capsys):
    """One design on random weights through every stage, and a config that does not exist: every cell
    holds a value or 'n/a: <reason>'."""
    from conftest import load_benchmark
    import json
    mod = load_benchmark("seed_designs")
    threads = torch.get_num_threads()
    assert mod.main(["--designs", "spikformer-a2os2a-2-64-digits,no-such-config", "--data", "digits",
                     "--random-weights", "--samples", "4", "--calib-samples", "4", "--sim-samples", "1",
                     "--threads", "1", "-o", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "seed_designs.json").read_text())
    a2, missing = doc["rows"]
    assert missing["error"] == "n/a: config 'no-such-config' is not defined (step_deploy.models.CONFIGS)"
    assert set(a2["energy_uj"]) >= {"paper", "step/float32", "horowitz/float32", "loihi"}
    assert all(v > 0 for v in a2["energy_uj"].values())
    assert a2["loihi_cores"]["cores"] > 0 and a2["fpga"]["p_1"]["lut"] > 0
    for key in ("float_accuracy", "golden_loihi_accuracy", "golden_fpga_accuracy", "firing_rate"):
        assert isinstance(a2[key], float), (key, a2[key])
    md = (tmp_path / "seed_designs.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 16 and all(cells), line
    assert "n/a: config 'no-such-config'" in rows[1]
    assert md in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # --threads is the run's only
    # with --qat-epochs the table gains the float-trained model's three accuracies (PTQ) before the rest
    o = mod.Options(qat_epochs=2, samples=4)
    a2["float_trained"] = {"float_accuracy": 0.5, "golden_loihi_accuracy": 0.25, "golden_fpga_accuracy": 0.75}
    md = mod.markdown([a2, {**missing, "qat": True}], o)
    header, _, *lines = [line for line in md.splitlines() if line.startswith("|")]
    assert "PTQ golden Loihi acc" in header and "on-grid golden FPGA acc" in header
    for line in lines:
        assert len(line.strip().strip("|").split(" | ")) == len(header.strip().strip("|").split(" | ")) == 19, line
    assert "| 50.00% | 25.00% | 75.00% |" in lines[0]
