"""The seed attention designs on Loihi: ternary neurons, A²OS²A (binary Q × ReLU'd K × ternary V),
bipolar self-attention (Shiftmax over ternary Q·Kᵀ) and STAtten (TemporalBlockSum) through
quantize -> golden model, checked against an integer model written here from contract §2 (Python
ints: ternary fire at ±θ with its ties, Shiftmax rows with ``ceil(log2 Σ)`` as an exact integer, ReLU),
against the float reference on exactly representable weights, against Lava and the mesh simulator
bit for bit; the constraint check (Loihi 1 refuses ternary spikes; ReLU/Shiftmax/TemporalBlockSum
are embedded-core work with their cost, the block sum's buffer and latency stated); a step-by-step
executor without the window op's latency refuses it in one line (Lava streams it with its latency:
``test_seed_lava_window.py``), the mesh simulator runs it block-major and pays its latency; Shiftmax
scales that cannot fit Loihi are refused by name.

Tiny hand-built graphs (4 tokens × 4 channels, T = 4), no training."""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.fixedpoint import loihi as fx
from step_deploy.passes.quantize_loihi import quantize_loihi
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run
from step_deploy.targets import check_target
from step_deploy.targets.mapping import map_to_cores

T, N, C = 4, 4, 4
#: spike inputs (T, B, N, C), fixed
SPIKES = (torch.rand(T, 16, N, C, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.int64)


def _w(seed: int, lo: int, hi: int, shape=(C, C)) -> np.ndarray:
    """Weights k/4 (exact 8-bit mantissas at a power-of-two scale), deterministic."""
    return (np.random.default_rng(seed).integers(lo, hi, shape) / 4).astype(np.float32)


def _head(nodes: list, src: str) -> list:
    """... -> proj Linear -> proj_lif -> TemporalMean -> Output."""
    return nodes + [ir.Linear("proj", (src,), weight=_w(9, 0, 9), bias=None),
                    ir.Neuron("proj_lif", ("proj",)), ir.TemporalMean("tm", ("proj_lif",)), ir.Output("y", ("tm",))]


def ternary_chain() -> ir.Graph:
    """x -> Linear -> ternary LIF -> Linear (signed adds) -> ternary LIF (soft reset) -> readout.
    Weights k/4 of both signs and threshold 1: membranes land on ±θ exactly (the ties)."""
    g = ir.Graph([ir.Input("x", shape=(N, C), kind="spikes"),
                  ir.Linear("fc1", ("x",), weight=_w(1, -6, 7), bias=None),
                  ir.Neuron("t1", ("fc1",), output="ternary"),
                  ir.Linear("fc2", ("t1",), weight=_w(2, -8, 5), bias=None),
                  ir.Neuron("t2", ("fc2",), output="ternary", reset="soft"),
                  ir.TemporalMean("tm", ("t2",)), ir.Output("y", ("tm",))])
    ir.check(g)
    return g


def a2os2a() -> ir.Graph:
    """A²OS²A: Q binary LIF, K = ReLU(Linear(x)) (real, with a bias), V ternary LIF,
    ``Y = (Q·Kᵀ)·V`` (no scale), attn_lif θ = 0.5, proj."""
    bias = (np.arange(C) / 4 - 0.25).astype(np.float32)
    g = ir.Graph(_head([
        ir.Input("x", shape=(N, C), kind="spikes"),
        ir.Linear("q_linear", ("x",), weight=_w(3, -1, 7), bias=None), ir.Neuron("q_lif", ("q_linear",)),
        ir.Linear("k_linear", ("x",), weight=_w(4, -4, 6), bias=bias), ir.ReLU("k_relu", ("k_linear",)),
        ir.Linear("v_linear", ("x",), weight=_w(5, -6, 7), bias=None),
        ir.Neuron("v_lif", ("v_linear",), output="ternary"),
        ir.MatMul("qk", ("q_lif", "k_relu"), transpose_b=True), ir.MatMul("qkv", ("qk", "v_lif")),
        ir.Neuron("attn_lif", ("qkv",), v_threshold=0.5)], "attn_lif"))
    ir.check(g)
    return g


def bsa(frac_bits: int = 4) -> ir.Graph:
    """Bipolar self-attention: Q, K ternary, V binary, ``P = Shiftmax(Q·Kᵀ)``, ``Y = P·V``, attn_lif
    (θ = 0.25 here: P·V <= 1, so the tiny graph fires)."""
    g = ir.Graph(_head([
        ir.Input("x", shape=(N, C), kind="spikes"),
        ir.Linear("q_linear", ("x",), weight=_w(3, -6, 7), bias=None),
        ir.Neuron("q_lif", ("q_linear",), output="ternary"),
        ir.Linear("k_linear", ("x",), weight=_w(4, -6, 7), bias=None),
        ir.Neuron("k_lif", ("k_linear",), output="ternary"),
        ir.Linear("v_linear", ("x",), weight=_w(5, -2, 6), bias=None), ir.Neuron("v_lif", ("v_linear",)),
        ir.MatMul("qk", ("q_lif", "k_lif"), transpose_b=True),
        ir.Shiftmax("attn_shiftmax", ("qk",), frac_bits=frac_bits), ir.MatMul("pv", ("attn_shiftmax", "v_lif")),
        ir.Neuron("attn_lif", ("pv",), v_threshold=0.25)], "attn_lif"))
    ir.check(g)
    return g


def statten(block: int = 2) -> ir.Graph:
    """STAtten: ``M = Σ_block Kᵀ·V``, ``Y = (Q·M)·0.25``, attn_lif θ = 0.5."""
    g = ir.Graph(_head([
        ir.Input("x", shape=(N, C), kind="spikes"),
        ir.Linear("q_linear", ("x",), weight=_w(3, -1, 7), bias=None), ir.Neuron("q_lif", ("q_linear",)),
        ir.Linear("k_linear", ("x",), weight=_w(4, -2, 6), bias=None), ir.Neuron("k_lif", ("k_linear",)),
        ir.Linear("v_linear", ("x",), weight=_w(5, -2, 6), bias=None), ir.Neuron("v_lif", ("v_linear",)),
        ir.MatMul("kv", ("k_lif", "v_lif"), transpose_a=True), ir.TemporalBlockSum("kv_block", ("kv",), block=block),
        ir.MatMul("qkv", ("q_lif", "kv_block"), scale=0.25),
        ir.Neuron("attn_lif", ("qkv",), v_threshold=0.5)], "attn_lif"))
    ir.check(g)
    return g


def mixed() -> ir.Graph:
    """Every op Lava must add, in one graph (one Lava run): ternary Q, K, V; ``Shiftmax(Q·Kᵀ)·V`` into
    a ternary neuron (signed); A²OS²A's product with a real operand, ``(Q·ReLU(Linear(x))ᵀ)·attn``,
    into a ternary neuron whose signed spikes feed a synapse (proj) and a ternary soft-reset neuron."""
    g = ir.Graph([
        ir.Input("x", shape=(N, C), kind="spikes"),
        ir.Linear("q_linear", ("x",), weight=_w(3, -6, 7), bias=None),
        ir.Neuron("q_lif", ("q_linear",), output="ternary"),
        ir.Linear("k_linear", ("x",), weight=_w(4, -6, 7), bias=None),
        ir.Neuron("k_lif", ("k_linear",), output="ternary"),
        ir.Linear("v_linear", ("x",), weight=_w(5, -6, 7), bias=None),
        ir.Neuron("v_lif", ("v_linear",), output="ternary"),
        ir.MatMul("qk", ("q_lif", "k_lif"), transpose_b=True),
        ir.Shiftmax("attn_shiftmax", ("qk",), frac_bits=2), ir.MatMul("pv", ("attn_shiftmax", "v_lif")),
        ir.Neuron("attn_lif", ("pv",), v_threshold=0.25, output="ternary"),
        ir.Linear("r_linear", ("x",), weight=_w(6, -4, 6), bias=None), ir.ReLU("r_relu", ("r_linear",)),
        ir.MatMul("qr", ("q_lif", "r_relu"), transpose_b=True), ir.MatMul("qra", ("qr", "attn_lif")),
        ir.Neuron("mix_lif", ("qra",), v_threshold=0.5, output="ternary"),
        ir.Linear("proj", ("mix_lif",), weight=_w(9, -8, 9), bias=None),
        ir.Neuron("proj_lif", ("proj",), output="ternary", reset="soft"),
        ir.TemporalMean("tm", ("proj_lif",)), ir.Output("y", ("tm",))])
    ir.check(g)
    return g


DESIGNS = {"ternary": ternary_chain, "a2os2a": a2os2a, "bsa": bsa, "statten": statten, "mixed": mixed}


@functools.lru_cache(maxsize=None)
def quantized(design: str):
    g = DESIGNS[design]()
    q, rep = quantize_loihi(g, SPIKES, steps=T)
    return g, q, rep, run_golden(q, SPIKES, steps=T)


# --------------------------------------------------------------------------- an integer model from contract §2


def _trunc(num: int, den: int) -> int:
    """num / den rounded toward zero (Python ints)."""
    return int(Fraction(num, den))


def _ceil_log2(s: int) -> int:
    """The smallest E with 2^E >= s (s >= 1), by doubling: no floating point."""
    e = 0
    while (1 << e) < s:
        e += 1
    return e


def shiftmax_row(row: list, frac_bits: int) -> list:
    """Contract §2 on one row of integer scores: ``a_j = 2^(F + Δ_j)`` (0 below Δ = -F),
    ``E = ceil(log2 Σ a)``, ``Y_j = a_j << (F + L - E)``, L = ceil(log2 n)."""
    m = max(row)
    a = [1 << (frac_bits + x - m) if x - m >= -frac_bits else 0 for x in row]
    shift = frac_bits + _ceil_log2(len(row)) - _ceil_log2(sum(a))
    assert shift >= 0
    return [x << shift for x in a]


class IntegerModel:
    """The quantized graph evaluated node-major with Python ints (object arrays), from the contract's
    equations; shares no code with the golden model. ``ties[node]`` counts membranes exactly at ±θ
    (where '>=' and '>' differ) of the ternary neurons."""

    def __init__(self, q: ir.Graph, x: torch.Tensor):
        self.q, self.ties, self.vals = q, {}, {"x": x.numpy().astype(object)}
        for n in q.topo_order():
            if n.op != "Input":
                self.vals[n.name] = getattr(self, "_" + n.op)(n, *[self.vals[i] for i in n.inputs])

    def _FixedLinear(self, n, x):
        w = n.weight.astype(object)
        y = np.einsum("...i,oi->...o", x, w) * (2 ** n.weight_exp)
        return y + n.effective_bias().astype(object) if n.bias_mant is not None else y

    def _ReLU(self, n, x):
        return np.vectorize(lambda v: max(v, 0), otypes=[object])(x)

    def _MatMul(self, n, a, b):
        assert n.scale == 1.0
        a = np.swapaxes(a, -1, -2) if n.transpose_a else a
        b = np.swapaxes(b, -1, -2) if n.transpose_b else b
        return np.einsum("...ij,...jk->...ik", a, b)

    def _Shiftmax(self, n, x):
        assert n.axis in (-1, len(x.shape) - 3)
        out = np.empty_like(x)
        for idx in np.ndindex(*x.shape[:-1]):
            out[idx] = shiftmax_row([int(v) for v in x[idx]], int(n.frac_bits))
        return out

    def _TemporalBlockSum(self, n, x):
        out = np.empty_like(x)
        for t0 in range(0, x.shape[0], n.block):
            out[t0:t0 + n.block] = x[t0:t0 + n.block].sum(axis=0)
        return out

    def _TemporalSum(self, n, x):
        return np.cumsum(x, axis=0)

    def _Output(self, n, x):
        return x

    def _LoihiLIF(self, n, a):
        theta, out = n.vth * 64, np.zeros(a.shape, dtype=object)
        self.ties[n.name] = 0
        for idx in np.ndindex(*a.shape[1:]):
            u = v = 0
            for t in range(a.shape[0]):
                u = _trunc(u * (4096 - (n.du + 1)), 4096) + int(a[(t,) + idx]) * 64
                assert abs(u) < 2 ** 23  # no wrap in these tiny graphs
                v = max(-(2 ** 23 - 1), min(2 ** 23 - 1, _trunc(v * (4096 - n.dv), 4096) + u))
                if n.fire == "ternary":
                    self.ties[n.name] += abs(v) == theta
                    s = (v >= theta) - (v <= -theta) if n.compare == ">=" else (v > theta) - (v < -theta)
                else:
                    assert n.fire == "threshold"
                    s = int(v >= theta) if n.compare == ">=" else int(v > theta)
                out[(t,) + idx] = int(s)
                v = v - s * theta if n.reset == "soft" else (0 if s else v)
        return out

    def spikes(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.vals[name].astype(np.int64))


def _mismatches(a: dict, b: dict) -> dict:
    return {k: int((a[k].to(torch.int64) != b[k].to(torch.int64)).sum()) for k in a}


# --------------------------------------------------------------------------- golden = the integer model = float


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_golden_equals_the_integer_model_of_the_contract(design):
    """Every spike of every layer and the readout, element by element; the ternary chain hits
    membranes exactly at ±θ (where '>=' and '>' differ) and sends -1 spikes."""
    g, q, rep, gold = quantized(design)
    model = IntegerModel(q, SPIKES)
    bad = {k: int((model.spikes(k) != gold.traces[k]).sum()) for k in gold.traces}
    assert not any(bad.values()), f"golden vs integer model mismatches per layer: {bad}"
    assert torch.equal(model.spikes("y"), gold.outputs["y"])
    assert all(int(v.abs().sum()) > 0 for k, v in gold.traces.items()), "every layer fires in these graphs"
    if design == "ternary":
        assert model.ties["t1"] > 0 and model.ties["t2"] > 0, model.ties
        assert int((gold.traces["t1"] < 0).sum()) > 0 and int((gold.traces["t2"] < 0).sum()) > 0
    if design == "bsa":  # Shiftmax rows: powers of two summing into (2^(F+L-1), 2^(F+L)]
        rows = torch.from_numpy(model.vals["attn_shiftmax"].astype(np.int64)).sum(-1)
        assert bool(((rows > 2 ** 5) & (rows <= 2 ** 6)).all())


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_float_reference_equals_golden_on_exactly_representable_weights(design):
    """Weights k/4 are exact mantissas, thresholds exact, tau = 2 halvings exact for T = 4: the
    integer network is the float network scaled, so every spike agrees (contract §2: float and
    integer differ only by weight rounding, which is zero here), ReLU'd K and Shiftmax included."""
    g, q, rep, gold = quantized(design)
    f = run(g, SPIKES.float(), steps=T, record=list(gold.traces))
    bad = _mismatches(gold.traces, f.traces)
    assert not any(bad.values()), f"float vs golden mismatches per layer: {bad}"
    scale = rep["output"]["scale"]
    got = gold.outputs["y"].double() / (torch.arange(1, T + 1).view(T, 1, 1, 1) * scale)
    assert torch.allclose(got, f.outputs["y"].double())


def test_ternary_fire_rule_at_the_ties_and_both_resets():
    """``lif_update`` on hand-picked inputs: v' = θ -> +1, v' = -θ -> -1 (0 with compare '>'); hard
    reset to 0 where it spiked, soft reset v - S·θ."""
    from step_deploy.simulators.golden_loihi import lif_update

    a = torch.tensor([[4, -4, 3, -3, 8, -8]])  # u = a << 6; θ = 4 << 6; no decay (dv = 0) to keep v exact
    for compare, want in ((">=", [1, -1, 0, 0, 1, -1]), (">", [0, 0, 0, 0, 1, -1])):
        for reset, v_after in (("hard", lambda s, v: v * (s == 0)), ("soft", lambda s, v: v - s * 256)):
            n = fx.LoihiLIF("t", ("a",), du=4095, dv=0, vth=4, compare=compare, reset=reset, fire="ternary")
            state = {}
            s = lif_update(n, a, state)[0]
            assert s.tolist() == [want], (compare, reset)
            assert state["v"].tolist() == v_after(s, a << 6).tolist(), (compare, reset)
    with pytest.raises(ValueError, match="LoihiLIF t: fire='ternary' sends -1/0/\\+1 spikes"):
        fx.LoihiLIF("t", ("a",), fire="ternary", max_level=2)


def test_quantized_parameters_carry_the_scales_into_the_thresholds():
    import json

    for design in DESIGNS:
        json.dumps(quantized(design)[2])  # the report (with the seed ops' entries) is JSON
    _, q, rep, _ = quantized("ternary")
    t1 = rep["layers"]["t1"]
    assert (q["t1"].fire, q["t1"].compare, q["t1"].reset, q["t2"].reset) == ("ternary", ">=", "hard", "soft")
    assert t1["spike_bits"] == 2 and t1["threshold_exact"] and q["t1"].vth == 2 * t1["input_scale"]
    assert "ternary spikes" in t1["neuron_model"] and t1["lava_process"] == "FixedLIF"
    # A²OS²A: K = ReLU(synapse) keeps the synapse's scale; Q·Kᵀ·V carries it into attn_lif's threshold
    _, q, rep, _ = quantized("a2os2a")
    s_k = rep["layers"]["k_linear"]["scale"]
    assert rep["layers"]["k_relu"]["scale"] == s_k == rep["layers"]["qkv"]["scale"] == rep["layers"]["attn_lif"]["input_scale"]
    assert q["attn_lif"].vth == 0.5 * 2 * s_k and isinstance(q["k_relu"], ir.ReLU)
    # BSA: integer scores at scale 1, Shiftmax out at 2^(F + L) = 2^(4 + 2), attn_lif θ = 0.25 · 2 · 64
    _, q, rep, _ = quantized("bsa")
    sm = rep["layers"]["attn_shiftmax"]
    assert (sm["input_scale"], sm["scale"], sm["out_frac_bits"]) == (1.0, 64.0, 6)
    assert rep["layers"]["pv"]["scale"] == 64.0 and q["attn_lif"].vth == 32
    # STAtten: the block sum keeps the count scale; the MatMul's 0.25 folds into the threshold (as SSA's 0.125)
    _, q, rep, _ = quantized("statten")
    blk = rep["layers"]["kv_block"]
    assert (blk["scale"], blk["block"], blk["buffer_elements"], blk["latency_steps"]) == (1.0, 2, C * C, 1)
    assert rep["layers"]["qkv"]["scale"] == 4.0 and q["attn_lif"].vth == 4 and q["qkv"].scale == 1.0


# --------------------------------------------------------------------------- refusals


def _scores_graph(k_node: ir.Node, scale: float = 1.0) -> ir.Graph:
    return ir.Graph([ir.Input("x", shape=(N, C), kind="spikes"),
                     ir.Linear("k_linear", ("x",), weight=_w(4, -4, 6), bias=None), k_node,
                     ir.MatMul("qk", ("x", k_node.name), transpose_b=True, scale=scale),
                     ir.Shiftmax("sm", ("qk",), frac_bits=4), ir.Output("y", ("sm",))])


def test_shiftmax_refuses_scores_that_are_not_integers_at_scale_one():
    for k_node, scale, why in ((ir.Neuron("k_lif", ("k_linear",), output="ternary"), 0.5, "has scale 2 (not an integer score)"),
                               (ir.ReLU("k_relu", ("k_linear",)), 1.0, "depends on a synapse's calibrated scale")):
        with pytest.raises(ir.IRError) as e:
            quantize_loihi(_scores_graph(k_node, scale), SPIKES, steps=T)
        (d,) = e.value.diagnostics
        assert d.node == "sm" and "Shiftmax needs integer scores at scale 1" in d.message and why in d.message
        assert "\n" not in str(d) and "MatMul scale 1" in d.hint


def test_shiftmax_whose_exact_scale_overflows_loihi_is_refused_with_the_frac_bits_that_fit():
    """frac_bits = 16 over rows of 4: scale 2^18, attn_lif's threshold 0.25·2·2^18 = 2^17 needs a bit more
    than the 17-bit field (and the 24-bit state more): refused, naming the Shiftmax and a frac_bits that fits."""
    with pytest.raises(ir.IRError) as e:
        quantize_loihi(bsa(frac_bits=16), SPIKES, steps=T)
    (d,) = e.value.diagnostics
    assert d.node == "attn_shiftmax" and "Shiftmax(frac_bits=16)" in d.message and "2^18" in d.message
    fits = int(d.hint.split("frac_bits <= ")[1].split()[0])
    assert 4 <= fits < 16
    quantize_loihi(bsa(frac_bits=fits), SPIKES, steps=T)  # the suggestion deploys
    (c,) = [c for c in check_target(bsa(frac_bits=16), "loihi2") if c.rule == "shiftmax-scale"]  # --check-only says so
    assert c.node == "attn_shiftmax" and c.severity == "error" and (c.value, c.limit) == (2 ** 17, 2 ** 17 - 1)
    assert not [c for c in check_target(bsa(frac_bits=fits), "loihi2") if c.rule == "shiftmax-scale"]


WINDOW_REFUSAL = ("TemporalBlockSum(block=2)", "non-causal inside a block of 2 steps", "latency of 1 step",
                  "golden model", "block=1")


def test_a_step_by_step_executor_without_its_latency_refuses_the_window_op_in_one_line():
    """(Lava pays the latency and runs it: ``test_seed_lava_window.py``.)"""
    _, q, _, gold = quantized("statten")
    assert int(gold.traces["attn_lif"].sum()) > 0  # the golden model runs it (node-major)
    with pytest.raises(ir.IRError) as e:
        fx.refuse_window_ops(q, "a step-by-step runtime")
    (d,) = e.value.diagnostics
    assert d.node == "kv_block" and "\n" not in str(d)
    assert all(part in d.message for part in WINDOW_REFUSAL + ("cannot run on a step-by-step runtime",)), d.message


# --------------------------------------------------------------------------- chips


def test_loihi1_refuses_ternary_spikes_loihi2_takes_them_as_signed_graded_spikes():
    g = ternary_chain()
    errs = [d for d in check_target(g, "loihi1") if d.severity == "error"]
    model = [d for d in errs if d.rule == "neuron-model"]
    assert {d.node for d in model} == {"t1", "t2"}
    assert "ternary spikes -1/0/+1" in model[0].message and "not programmable" in model[0].message
    assert "Loihi 2" in model[0].hint
    graded = [d for d in errs if d.rule == "graded-spikes"]
    assert graded and graded[0].node == "t1" and "-1..1 (2-bit)" in graded[0].message
    l2 = [d for d in check_target(g, "loihi2") if d.rule in ("neuron-model", "graded-spikes")]
    assert {d.node for d in l2} == {"t1", "t2"} and all(d.severity == "info" for d in l2)
    assert "2-bit signed graded spikes" in l2[0].hint


def test_seed_ops_are_embedded_core_work_with_their_cost_and_the_block_sums_buffer():
    want = {"a2os2a": ("k_relu", N * C, "compares"), "bsa": ("attn_shiftmax", N * (5 * N), "shift/add/compare ops"),
            "statten": ("kv_block", C * C, "adds")}
    for design, (node, ops, unit) in want.items():
        g = DESIGNS[design]()
        m = map_to_cores(g, "loihi2")
        (o,) = [o for o in m.off_core if o.node == node]
        assert (o.placement, o.ops_per_step, o.cost_unit) == ("embedded/host", ops, unit), design
        assert m.nodes[node]["placement"] == "embedded/host"
        (d,) = [d for d in check_target(g, "loihi2") if d.rule == "embedded-op"]
        assert d.node == node and d.severity == "warning" and f"{ops} {unit} per step" in d.message
        if design == "statten":
            assert o.buffer == {"buffer_elements": C * C, "block": 2, "latency_steps": 1}
            assert "block accumulator of 16 elements" in d.message and "wait 1 step(s)" in d.message
        else:
            assert o.buffer is None


# --------------------------------------------------------------------------- Lava and the mesh simulator


def test_lava_equals_golden_bit_for_bit():
    """One Lava run of the graph holding every new op: ternary neurons (FixedLIF), their signed spikes
    into a synapse (graded Sparse input), ReLU and Shiftmax on embedded-core processes."""
    pytest.importorskip("lava", reason="lava-nc is not installed (make setup installs it)")
    from step_deploy.exporters.lava_runner import compare, run_lava

    g, q, rep, gold = quantized("mixed")
    neg = {k: (v < 0).reshape(T, v.shape[1], -1).sum((0, 2)) for k, v in gold.traces.items()}
    i = int((neg["mix_lif"] * neg["proj_lif"]).argmax())  # a sample whose ternary layers send -1 spikes
    lv = run_lava(q, SPIKES[:, i], steps=T)
    bad = compare(gold.traces, lv.traces, i)
    assert not any(bad.values()), f"Lava vs golden mismatches per layer: {bad}"
    assert torch.equal(lv.outputs["y"], gold.outputs["y"][:, i:i + 1])
    assert all(int((lv.traces[k] < 0).sum()) > 0 for k in ("attn_lif", "mix_lif", "proj_lif"))
    assert (lv.counts.get("LiveReLU"), lv.counts.get("Shiftmax"), lv.counts.get("FixedLIF")) == (1, 1, 6)


def test_lava_kernels_compute_the_golden_ternary_relu_and_shiftmax():
    """The numpy arithmetic of the Lava process models (no Lava needed) against the golden ops."""
    from step_deploy.exporters import lava_kernels as k
    from step_deploy.simulators.golden_loihi import lif_update
    from step_deploy.simulators.integer_ops import op_shiftmax

    a = torch.tensor([4, -4, 3, -3, 8, -8, 0, 5]).repeat(3, 1) * torch.tensor([[1], [2], [-1]])
    for compare, reset in ((">=", "hard"), (">", "soft"), (">=", "soft")):
        n = fx.LoihiLIF("t", ("a",), du=4095, dv=2048, vth=4, compare=compare, reset=reset, fire="ternary")
        state, u, v = {}, np.zeros(8, np.int64), np.zeros(8, np.int64)
        for t in range(3):
            s = lif_update(n, a[t], state)[0]
            u, v, s_np, _ = k.lif_fixed_step(u, v, a[t].numpy(), 4095, 2048, 4, 0, 0, compare, reset, "ternary")
            assert s_np.tolist() == s.tolist() and v.tolist() == state["v"].tolist(), (compare, reset, t)
    scores = torch.randint(-9, 9, (3, 5, 6), generator=torch.Generator().manual_seed(0))
    for f in (0, 3, 16):
        node = ir.Shiftmax("sm", ("s",), frac_bits=f)
        want = op_shiftmax(node, [scores.unsqueeze(0)], {}, 0)[0]
        assert k.shiftmax_kernel(scores.numpy(), (3, 5, 6), 2, f).tolist() == want.tolist(), f
        rows = [shiftmax_row(r, f) for r in scores.reshape(-1, 6).tolist()]
        assert want.reshape(-1, 6).tolist() == rows, f  # the golden op = the contract's row equation
    assert k.relu_kernel(np.array([-3, 0, 5])).tolist() == [0, 0, 5]


@pytest.mark.parametrize("design", ["ternary", "a2os2a", "bsa", "statten", "mixed"])
def test_mesh_simulator_equals_golden_with_signed_packets_and_embedded_ops(design):
    from step_deploy.simulators.cycle.mesh import simulate_mesh

    g, q, rep, gold = quantized(design)
    res = simulate_mesh(q, g, SPIKES, steps=T, hardware="loihi2-assumed")
    bad = _mismatches(gold.traces, res.spikes)
    assert not any(bad.values()), f"mesh vs golden mismatches per layer: {bad}"
    assert torch.equal(res.outputs["y"], gold.outputs["y"])
    first = "t1" if design == "ternary" else "v_lif" if design == "a2os2a" else "q_lif"
    s = gold.traces[first]
    assert design == "statten" or int((s < 0).sum()) > 0
    assert res.layers[first]["events"]["spikes_out"] == int((s != 0).sum())  # one packet per ±1 spike
    embedded = {u.name for u in res.units if u.kind == "embedded"}
    want = {"ternary": set(), "a2os2a": {"k_relu", "qk", "qkv"}, "bsa": {"qk", "attn_shiftmax", "pv"},
            "statten": {"kv", "kv_block", "qkv"}, "mixed": {"qk", "attn_shiftmax", "pv", "r_relu", "qr", "qra"}}[design]
    assert embedded == want


def test_mesh_runs_the_block_sum_block_major_and_pays_its_latency():
    """STAtten on the mesh: blocks of 2 steps node-major give the golden spikes (the parametrized
    test); the block sum's unit emits a step late, so the pipeline is one step deeper than with
    block = 1, and it adds every element of its input every step."""
    from step_deploy.simulators.cycle.mesh import simulate_mesh

    runs = {}
    for block in (1, 2):
        g = statten(block)
        q, _ = quantize_loihi(g, SPIKES, steps=T)
        runs[block] = (simulate_mesh(q, g, SPIKES[:, :2], steps=T, hardware="loihi2-assumed"),
                       run_golden(q, SPIKES[:, :2], steps=T))
    (r1, g1), (r2, g2) = runs[1], runs[2]
    assert r2.hw_steps == r1.hw_steps + 1
    assert not any(_mismatches(g2.traces, r2.spikes).values()) and not any(_mismatches(g1.traces, r1.spikes).values())
    u = next(i for i, x in enumerate(r2.units) if x.name == "kv_block")
    assert int(r2.events["embedded_ops"][u].sum()) == 2 * T * C * C  # 2 samples x T steps x 16 elements
