"""Soft reset and multi-level spikes on Loihi (STEP's ILIF with D = 2 and 3, NILIF, soft-reset IF and
LIF): quantize -> golden model, checked against an integer model written here from the equations
(Python ints and ``Fraction``, whose ``round`` is half-to-even), against the float reference on
exactly representable weights, against Lava and the mesh simulator bit for bit; Loihi 1 refuses
these neurons in the constraint check; neurons and ops without an integer form are refused by name.

Tiny hand-built graphs (6 inputs -> 5 -> 3 neurons, T = 4), no training."""
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
from step_deploy.simulators.golden_loihi import lif_update, rne_div
from step_deploy.simulators.reference import run
from step_deploy.targets import check_target

T = 4
#: the float IR of each mode (contract: ILIF = integer output, fire 'round'; NILIF = binary, 'round_normalized')
MODES = {
    "ilif2": dict(output="integer", fire="round", max_level=2, round_d=2, reset="soft"),
    "ilif3": dict(output="integer", fire="round", max_level=3, round_d=3, reset="soft"),
    "nilif": dict(output="binary", fire="round_normalized", round_d=2, reset="soft"),
    "soft_if": dict(kind="IF", reset="soft"),
    "soft_lif": dict(kind="LIF", reset="soft"),
}
#: spike inputs (T, B, 6), fixed
SPIKES = (torch.rand(T, 24, 6, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.int64)


def chain(mode: str, seed: int = 0) -> ir.Graph:
    """Input -> Linear -> Neuron(mode) -> Linear -> Neuron(mode) -> TemporalMean -> Output. The
    weights are multiples of 1/4 below 2 (exact 8-bit mantissas at scale 2^7), thresholds 1."""
    r = np.random.default_rng(seed)
    w1 = (r.integers(-2, 8, (5, 6)) / 4).astype(np.float32)
    w2 = (r.integers(-1, 7, (3, 5)) / 4).astype(np.float32)
    kw = MODES[mode]
    g = ir.Graph([ir.Input("x", shape=(6,), kind="spikes"),
                  ir.Linear("fc1", ("x",), weight=w1, bias=None), ir.Neuron("n1", ("fc1",), **kw),
                  ir.Linear("fc2", ("n1",), weight=w2, bias=None), ir.Neuron("n2", ("fc2",), **kw),
                  ir.TemporalMean("tm", ("n2",)), ir.Output("y", ("tm",))])
    ir.check(g)
    return g


@functools.lru_cache(maxsize=None)
def quantized(mode: str):
    g = chain(mode)
    q, rep = quantize_loihi(g, SPIKES, steps=T)
    return g, q, rep, run_golden(q, SPIKES, steps=T)


# --------------------------------------------------------------------------- an integer model from the equations


def _trunc(num: int, den: int) -> int:
    """num / den rounded toward zero (Python ints)."""
    return int(Fraction(num, den))


def equation_model(q: ir.Graph, x: torch.Tensor) -> tuple[dict, dict]:
    """The quantized chain evaluated element by element with Python ints from the contract's
    equations (no code shared with the golden model). Returns ({neuron: (T, B, n) spikes},
    {'half': ILIF ties v' = (k + 1/2)θ, 'nilif': NILIF ties 2v' = Dθ})."""
    ties = {"half": 0, "nilif": 0}
    spikes, cur = {}, x.numpy().astype(object)
    for syn, neu in (("fc1", "n1"), ("fc2", "n2")):
        s, n = q[syn], q[neu]
        assert s.bias_mant is None and s.weight_exp >= 0
        w = s.weight.astype(object)
        theta = n.vth * 64
        out = np.zeros(cur.shape[:2] + (w.shape[0],), dtype=object)
        for b in range(cur.shape[1]):
            u = v = [0] * w.shape[0]
            for t in range(T):
                a = [sum(int(w[o, i]) * int(cur[t, b, i]) for i in range(w.shape[1])) * 2 ** s.weight_exp
                     for o in range(w.shape[0])]
                u = [_trunc(uu * (4096 - (n.du + 1)), 4096) + aa * 64 for uu, aa in zip(u, a)]
                assert all(abs(uu) < 2 ** 23 for uu in u)  # no wrap in these tiny graphs
                v = [max(-(2 ** 23 - 1), min(2 ** 23 - 1, _trunc(vv * (4096 - n.dv), 4096) + uu))
                     for vv, uu in zip(v, u)]
                for o, vp in enumerate(v):
                    if n.fire == "round":
                        ratio = Fraction(vp, theta)
                        ties["half"] += ratio.denominator == 2
                        sp = min(max(round(ratio), 0), n.max_level)  # Python rounds half to even
                    elif n.fire == "round_normalized":
                        ties["nilif"] += 2 * vp == n.round_d * theta
                        sp = int(Fraction(vp, theta) > Fraction(n.round_d, 2))
                    else:
                        sp = int(vp >= theta) if n.compare == ">=" else int(vp > theta)
                    out[t, b, o] = sp
                    v[o] = vp - sp * theta if n.reset == "soft" else (0 if sp else vp)
        spikes[neu] = torch.from_numpy(out.astype(np.int64))
        cur = out
    return spikes, ties


def _mismatches(a: dict, b: dict) -> dict:
    return {k: int((a[k].to(torch.int64) != b[k].to(torch.int64)).sum()) for k in a}


# --------------------------------------------------------------------------- the integer rules


def test_rne_div_rounds_half_to_even_like_python_and_torch():
    a = torch.arange(-40, 41, dtype=torch.int64)
    for b in (1, 2, 3, 4, 6, 64 * 5):
        want = torch.tensor([round(Fraction(int(x), b)) for x in a])
        assert torch.equal(rne_div(a, b), want), b
    assert rne_div(torch.tensor([1, 3, 5, -1, -3]), 2).tolist() == [0, 2, 2, 0, -2]
    assert torch.equal(rne_div(a, 4), torch.round(a.double() / 4).to(torch.int64))


@pytest.mark.parametrize("mode", ["ilif3", "nilif", "soft_if"])
def test_lava_kernel_equals_golden_lif_update_including_ties_and_saturation(mode):
    """``lava_kernels.lif_fixed_step`` (the Lava process model's arithmetic, numpy) against the golden
    ``lif_update`` (torch) on inputs that saturate v and hit the rounding ties."""
    kernels = pytest.importorskip("step_deploy.exporters.lava_kernels")
    kw = MODES[mode]
    node = fx.LoihiLIF("n", ("a",), du=4095, dv=0 if mode == "soft_if" else 2048, vth=4, compare=">=",
                       reset="soft", fire=kw.get("fire", "threshold"), max_level=kw.get("max_level", 1),
                       round_d=kw.get("round_d", 0))
    theta = node.vth << 6
    r = np.random.default_rng(1)
    a = r.integers(-12, 40, (8, 300))
    a[:, :8] = np.arange(8) * 2  # a << 6 = k·θ/2: v' = (k + 1/2)θ and 2v' = 2θ at step 0
    a[2:4, 8:11] = (1 << 17) - 1  # u just below 2^23 two steps running: the voltage saturates
    state, u, v = {}, np.zeros(300, np.int64), np.zeros(300, np.int64)
    ties = sat = 0
    for t in range(a.shape[0]):
        s, _, sat_t = lif_update(node, torch.from_numpy(a[t]), state, masks=True)
        u, v, ref, v_pre = kernels.lif_fixed_step(u, v, a[t], node.du, node.dv, node.vth, 0, 0, node.compare,
                                                  node.reset, node.fire, node.max_level, node.round_d)
        assert np.array_equal(s.numpy(), ref) and np.array_equal(state["v"].numpy(), v), t
        assert np.array_equal(state["u"].numpy(), u), t
        ties += int(((2 * v_pre) % theta == 0).sum() - (v_pre % theta == 0).sum()) if mode == "ilif3" else \
            int((2 * v_pre == 2 * theta).sum())
        sat += int(sat_t.sum())
    assert sat > 0 and ties > 0


def test_loihi_lif_refuses_inconsistent_fields_naming_the_node():
    with pytest.raises(ValueError, match="LoihiLIF n1: fire='threshold' sends 0/1 spikes"):
        fx.LoihiLIF("n1", ("a",), vth=4, max_level=2)
    with pytest.raises(ValueError, match="LoihiLIF n2: fire='round_normalized' .* round_d >= 1"):
        fx.LoihiLIF("n2", ("a",), vth=4, fire="round_normalized")
    with pytest.raises(ValueError, match="LoihiLIF n3: reset='subtract'"):
        fx.LoihiLIF("n3", ("a",), vth=4, reset="subtract")
    with pytest.raises(ValueError, match="LoihiLIF n4: .*vth must be >= 1"):
        fx.LoihiLIF("n4", ("a",), vth=0, fire="round", max_level=2)


# --------------------------------------------------------------------------- quantize -> golden


@pytest.mark.parametrize("mode", sorted(MODES))
def test_quantized_neurons_keep_the_mode_with_an_exact_threshold(mode):
    g, q, rep, _ = quantized(mode)
    kw = MODES[mode]
    for name in ("n1", "n2"):
        n, info = q[name], rep["layers"][name]
        assert isinstance(n, fx.LoihiLIF) and not n.stock
        assert (n.reset, n.fire) == ("soft", kw.get("fire", "threshold"))
        assert n.max_level == kw.get("max_level", 1) and info["spike_bits"] == max(1, n.max_level.bit_length())
        assert n.round_d == (kw["round_d"] if n.fire == "round_normalized" else 0)
        # threshold 1 · tau · s_in (s_in = 2^7 for these weights), no 'gap' shift: a soft reset subtracts θ
        tau = 1 if mode == "soft_if" else 2
        assert info["tie"] == "exact" and info["threshold_exact"] and n.vth == tau * 128 and info["gap_shift"] == 0
        assert info["lava_process"] == "FixedLIF" and "programmable" in info["chip"]
    assert rep["chip_required"].startswith("loihi2") and rep["saturation_total"] == 0
    # the synapse after an ILIF layer is bounded with spike values up to D, not 1
    d, fc2 = MODES[mode].get("max_level", 1), q["fc2"]
    worst = int(np.abs(fc2.weight.astype(np.int64)).sum(1).max()) * d << fc2.weight_exp
    assert (rep["layers"]["fc2"]["input_max_level"], rep["layers"]["fc2"]["worst_case_input"]) == (d, worst)
    assert rep["layers"]["fc1"]["input_max_level"] == 1 and rep["layers"]["fc2"]["worst_case_fits_u24"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_golden_equals_the_equation_model_including_rounding_ties(mode):
    g, q, rep, gold = quantized(mode)
    ours, ties = equation_model(q, SPIKES)
    bad = _mismatches(ours, gold.traces)
    assert not any(bad.values()), f"mismatches per layer (of {SPIKES.shape[1] * T * 5} values): {bad}"
    if mode.startswith("ilif"):  # v' = (k + 1/2)θ happened, and the spikes reach their top level
        assert ties["half"] > 0 and int(gold.traces["n1"].max()) == MODES[mode]["max_level"]
    if mode == "nilif":  # 2v' = Dθ happened (no spike there)
        assert ties["nilif"] > 0
    assert all(int(gold.traces[k].sum()) > 0 for k in ("n1", "n2"))  # both layers spike


@pytest.mark.parametrize("mode", sorted(MODES))
def test_float_reference_equals_golden_on_exactly_representable_weights(mode):
    """Lossless quantization: weights k/4 are exact mantissas at scale 2^7, the threshold is exact,
    and with tau = 2 the membrane only halves T - 1 = 3 times, so ``v`` stays a multiple of 8 and
    ``trunc0`` never rounds; ``v' / θ`` then equals the float ``H / V_th`` exactly and the integer
    rounding rules equal ``torch.round`` (ILIF) and NILIF's ``round(clamp(H/θ, 0, D) / D)``:
    every spike of both layers must agree (float32 holds these dyadic values exactly)."""
    g, q, rep, gold = quantized(mode)
    f = run(g, SPIKES.float(), steps=T, record=["n1", "n2"])
    bad = _mismatches(gold.traces, f.traces)
    assert not any(bad.values()), f"float vs golden mismatches per layer: {bad}"
    scale = rep["output"]["scale"]
    got = gold.outputs["y"].double() / (torch.arange(1, T + 1).view(T, 1, 1) * scale)
    assert torch.allclose(got, f.outputs["y"].double())  # the readout: same mean spike values


# --------------------------------------------------------------------------- Lava and the mesh simulator


@pytest.mark.parametrize("mode", sorted(MODES))
def test_lava_equals_golden_bit_for_bit(mode):
    pytest.importorskip("lava", reason="lava-nc is not installed (make setup installs it)")
    from step_deploy.exporters.lava_runner import compare, run_lava

    g, q, rep, gold = quantized(mode)
    i = int(gold.traces["n2"].reshape(T, -1, 3).sum((0, 2)).argmax())  # the busiest sample
    lv = run_lava(q, SPIKES[:, i], steps=T)
    bad = compare(gold.traces, lv.traces, i)
    assert not any(bad.values()), f"Lava vs golden mismatches per layer (of {T * 5} / {T * 3}): {bad}"
    assert torch.equal(lv.outputs["y"], gold.outputs["y"][:, i:i + 1])
    assert lv.counts.get("FixedLIF") == 2 and "LIF" not in lv.counts
    assert int(lv.traces["n2"].sum()) > 0
    if mode.startswith("ilif"):  # graded payloads: a spike of 2 arrives as 2, not as a 1-bit event
        assert int(lv.traces["n1"].max()) >= 2


@pytest.mark.parametrize("mode", ["ilif2", "nilif", "soft_lif"])
def test_mesh_simulator_equals_golden_and_sends_spike_values_as_one_packet(mode):
    from step_deploy.simulators.cycle.mesh import simulate_mesh

    g, q, rep, gold = quantized(mode)
    res = simulate_mesh(q, g, SPIKES, steps=T, hardware="loihi2-assumed")
    bad = _mismatches(gold.traces, res.spikes)
    assert not any(bad.values()), f"mesh vs golden mismatches per layer: {bad}"
    assert torch.equal(res.outputs["y"], gold.outputs["y"])
    s = gold.traces["n1"]
    assert res.layers["n1"]["events"]["spikes_out"] == int((s != 0).sum())  # one packet per non-zero spike
    if mode == "ilif2":
        assert int(s.sum()) > int((s != 0).sum())  # ...carrying values up to 2


# --------------------------------------------------------------------------- chips and refusals


def test_loihi1_refuses_soft_reset_and_multi_level_spikes_naming_node_and_feature():
    for mode, feature in (("ilif2", "multi-level spikes 0..2"), ("nilif", "NILIF firing"),
                          ("soft_if", "soft reset")):
        g = chain(mode)
        errs = [d for d in check_target(g, "loihi1") if d.rule == "neuron-model" and d.severity == "error"]
        assert {d.node for d in errs} == {"n1", "n2"}, mode
        assert feature in errs[0].message and "not programmable" in errs[0].message and "Loihi 2" in errs[0].hint
        l2 = [d for d in check_target(g, "loihi2") if d.rule == "neuron-model"]
        assert l2 and all(d.severity == "info" and "FixedLIF" in d.hint for d in l2), mode
    graded = [d for d in check_target(chain("ilif2"), "loihi1") if d.rule == "graded-spikes"]
    assert graded and graded[0].node == "n1" and "0..2" in graded[0].message and graded[0].severity == "error"


def _zoo_node(op: str, name: str, src: str) -> ir.Node:
    if op == "KLIFNeuron":
        return ir.KLIFNeuron(name, (src,), k=1.5)
    if op == "EIFNeuron":
        return ir.EIFNeuron(name, (src,))
    if op == "CLIFNeuron":
        return ir.CLIFNeuron(name, (src,))
    if op == "GLIFNeuron":
        return ir.GLIFNeuron(name, (src,), params_t=np.full((T, 5), 0.5, np.float32))
    return ir.TemporalLinear(name, (src,), weight=np.eye(T, dtype=np.float32), bias=np.zeros(T, np.float32))


@pytest.mark.parametrize("op", ["KLIFNeuron", "EIFNeuron", "CLIFNeuron", "GLIFNeuron", "TemporalLinear"])
def test_ops_without_an_integer_form_are_refused_naming_the_node(op):
    nodes = [ir.Input("x", shape=(6,), kind="spikes"),
             ir.Linear("fc1", ("x",), weight=np.ones((5, 6), np.float32) / 4, bias=None),
             _zoo_node(op, "zoo_node", "fc1")]
    if op == "TemporalLinear":  # PSN: the time mix, then a stateless spike
        nodes.append(ir.Heaviside("psn_fire", ("zoo_node",)))
    g = ir.Graph(nodes + [ir.Output("y", (nodes[-1].name,))])
    with pytest.raises(ir.IRError) as e:
        quantize_loihi(g, SPIKES, steps=T)
    lines = [str(d) for d in e.value.diagnostics]
    assert f"[zoo_node] {op} has no Loihi integer form" in lines[0] and "float stage" in lines[0]
    assert all("\n" not in line for line in lines)
    if op == "TemporalLinear":
        assert any("[psn_fire] Heaviside" in line for line in lines)
    errs = [d for d in check_target(g, "loihi2") if d.rule == "neuron-model" and d.severity == "error"]
    assert errs and errs[0].node == "zoo_node" and f"{op} has no integer form for loihi2" in errs[0].message
