"""Energy models, the QANN baseline and step-energy: hand-computed prices on hand-made counts, the
constants as data (sources, missing entries, a user's file), break-even, and the command's files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from step_deploy.energy.baseline import activation_bits, break_even, overall_firing_rate, price_qann, qann_counts
from step_deploy.energy.constants import BUNDLED, ConstantError, load_constants
from step_deploy.energy.counts import Counts, LayerCounts, rebit
from step_deploy.energy.models import EnergyModelError, accumulator_bits, price, resolve_models

T, B = 2, 1


def _arr(*per_step):
    return np.array([per_step], dtype=np.int64)  # (B=1, T)


def tiny_counts(numeric=None) -> Counts:
    """A hand-made network: analog conv (8 non-zero pixels x fan-out 4 = 32 synops per step, 100 dense
    MACs), 16 LIF neurons (3 then 1 spikes), a binary Linear (4 spikes x 10 outputs), a product."""
    conv = LayerCounts("conv", "Conv2d", "synapse", "real", None, "mac", 64,
                       {"nonzero_inputs": _arr(8, 8), "synops": _arr(32, 32), "dense_macs": _arr(100, 100),
                        "weight_bits_read": _arr(32 * 8, 32 * 8), "weight_bits_read_dense": _arr(800, 800)},
                       weight_bits=8, numeric=numeric)
    lif = LayerCounts("lif", "Neuron", "neuron", "binary", 1, None, 16,
                      {"spikes": _arr(3, 1), "updates": _arr(16, 16), "membrane_bits_read": _arr(16 * 12, 16 * 12),
                       "membrane_bits_written": _arr(16 * 12, 16 * 12), "spike_bits": _arr(3, 1),
                       "spike_bits_dense": _arr(16, 16)}, membrane_bits=12, numeric=numeric)
    fc = LayerCounts("fc", "Linear", "synapse", "binary", 1, "ac", 16,
                     {"nonzero_inputs": _arr(3, 1), "synops": _arr(30, 10), "dense_macs": _arr(160, 160),
                      "weight_bits_read": _arr(240, 80), "weight_bits_read_dense": _arr(1280, 1280)},
                     weight_bits=8, numeric=numeric)
    qk = LayerCounts("qk", "MatMul", "product", "binary*binary", 1, "and", 64,
                     {"products": _arr(64, 64), "coincidences": _arr(5, 2), "accumulates": _arr(5, 2)},
                     numeric=numeric)
    return Counts(T, B, (conv, lif, fc, qk))


def test_paper_convention_by_hand():
    r = price(tiny_counts(), "paper")
    # 4.6 pJ x 200 dense MACs of the analog layer + 0.9 pJ x (40 synops + 7 attention accumulates)
    assert r.per_sample_pj == pytest.approx(4.6 * 200 + 0.9 * (40 + 7))
    assert r.by_component() == pytest.approx({"synapses_mac": 920.0, "synapses_ac": 36.0, "attention": 6.3})
    assert set(r.constants) == {"paper.e_mac", "paper.e_ac"}
    assert "Horowitz" in r.constants["paper.e_mac"].source


def test_step_model_prices_memory_per_bit_by_hand():
    r = price(tiny_counts(), "step")
    ops = 4.6 * 64 + 0.9 * 40 + 0.9 * 7          # real synops are MACs here, binary ones ACs
    # weights: 512 + 320 bits; membranes: 16 neurons x 12 bits, read and written, 2 steps = 768;
    # spikes: 4 one-bit spikes written and read = 8
    mem = 3.12 * (512 + 320 + 768 + 8)
    assert r.per_sample_pj == pytest.approx(ops + mem)


def test_horowitz_prices_by_width_and_format():
    c = tiny_counts()
    r_int = price(rebit(c, 8, 12, numeric="int"), "horowitz")
    r_float = price(rebit(c, 32, 32, numeric="float"), "horowitz")
    # integer: the 12-bit accumulator is priced at the 16-bit add (0.05), rounding up
    assert accumulator_bits(rebit(c, 8, 12, numeric="int")) == 12
    syn_int = r_int.layers[2].components["synapses"]
    assert syn_int == pytest.approx(40 * 0.05)
    conv_int = r_int.layers[0].components["synapses"]
    assert conv_int == pytest.approx(64 * (0.2 + 0.05))  # 8-bit mult + 16-bit add per MAC
    neurons_int = r_int.layers[1].components["neurons"]
    assert neurons_int == pytest.approx(32 * 2 * 0.05)  # integrate + compare, the leak is a shift
    # float32: add 0.9, mult 3.7; a neuron update = 1 mult + 3 adds
    assert r_float.layers[2].components["synapses"] == pytest.approx(40 * 0.9)
    assert r_float.layers[1].components["neurons"] == pytest.approx(32 * (3.7 + 3 * 0.9))
    assert r_float.per_sample_pj > 5 * r_int.per_sample_pj
    # SRAM: the fc layer holds 16 x 10 = 160 8-bit weights (160 B <= 8 KB: 10 pJ per 64-bit access)
    from step_deploy import ir
    g = ir.Graph()
    g.add(ir.Input("input", shape=(16,)))
    g.add(ir.Linear("fc", inputs=("input",), weight=np.zeros((10, 16), np.float32), bias=None))
    r_g = price(rebit(c, 8, 12, numeric="int"), "horowitz", g)
    assert r_g.layers[2].components["weights_memory"] == pytest.approx(320 * 10 / 64)


def test_user_constants_file_changes_the_price_and_a_missing_one_is_named(tmp_path):
    data = yaml.safe_load(BUNDLED.read_text())
    data["paper"]["e_ac"]["value"] = 1.8
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(data))
    assert price(tiny_counts(), "paper", constants=load_constants(p)).per_sample_pj == \
        pytest.approx(4.6 * 200 + 1.8 * 47)
    del data["paper"]["e_mac"]
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConstantError, match=r"'paper.e_mac' is missing from .*mine.yaml"):
        price(tiny_counts(), "paper", constants=load_constants(p))
    data = yaml.safe_load(BUNDLED.read_text())
    data["paper"]["e_mac"]["source"] = ""
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConstantError, match="has no 'source'"):
        price(tiny_counts(), "paper", constants=load_constants(p))
    with pytest.raises(ConstantError, match="cannot read"):
        load_constants(tmp_path / "absent.yaml")


def test_an_operation_wider_than_the_table_is_an_error_not_a_guess():
    c = rebit(tiny_counts(), 8, 40, numeric="int")
    with pytest.raises(ConstantError, match="stops at 32; an operation of 40 bits"):
        price(c, "horowitz")


def test_every_bundled_constant_has_value_unit_source_confidence():
    data = yaml.safe_load(BUNDLED.read_text())

    def leaves(d, path=""):
        if isinstance(d, dict) and "value" in d:
            yield path, d
        elif isinstance(d, dict):
            for k, v in d.items():
                if k not in ("description", "version"):
                    yield from leaves(v, f"{path}.{k}" if path else str(k))
    found = list(leaves(data))
    assert len(found) >= 30
    for path, d in found:
        assert d["source"] and d["unit"] and d["confidence"] in ("primary", "secondary", "to-verify", "assumption"), path


def test_unknown_model_is_a_clear_error():
    with pytest.raises(EnergyModelError, match="unknown energy model 'joules'; choose from paper, step, horowitz, loihi"):
        resolve_models("paper,joules")
    assert resolve_models("all") == ["paper", "step", "horowitz", "loihi"]


def test_activation_bits_follow_bit_budget():
    assert [activation_bits(t) for t in (1, 2, 3, 4, 7, 8, 15, 16)] == [1, 2, 2, 3, 3, 4, 4, 5]


def test_qann_counts_are_one_dense_inference():
    q = qann_counts(tiny_counts())
    assert q.activation_bits == 2
    assert q.layers["conv"]["macs"] == 100 and q.layers["fc"]["macs"] == 160
    assert q.layers["lif"] == {"kind": "activation", "values": 16, "activation_bits_moved": 32}
    assert q.layers["qk"]["macs"] == 64
    r = price_qann(q, "paper", tiny_counts())
    assert r.per_sample_pj == pytest.approx(4.6 * (100 + 160 + 64))
    with pytest.raises(EnergyModelError, match="QANN baseline is priced with paper, step, horowitz"):
        price_qann(q, "loihi", tiny_counts())


def test_zero_skipping_qann_counts_the_union_of_non_zeros_over_the_steps():
    """A QANN activation is zero exactly where no step had a spike: counting the union over T as one
    step gives its MACs; checked by hand on a Linear whose inputs spike at different steps."""
    import torch

    from step_deploy import ir
    from step_deploy.energy import count_graph
    from step_deploy.energy_eval.run import union_traces

    g = ir.Graph()
    g.add(ir.Input("input", shape=(4,)))
    g.add(ir.Linear("fc", inputs=("input",), weight=np.ones((3, 4), np.float32), bias=None))
    g.add(ir.Output("out", inputs=("fc",)))
    # T = 3, B = 1: input 0 spikes at steps 0 and 2, input 1 at step 1, inputs 2 and 3 never
    x = torch.tensor([[[1., 0, 0, 0]], [[0., 1, 0, 0]], [[1., 0, 0, 0]]])
    snn = count_graph(g, {"input": x}, 3)
    union = count_graph(g, union_traces({"input": x}), 1)
    assert snn.row("fc").total("synops") == 3 * 3          # three spikes x fan-out 3
    q = qann_counts(snn, union=union)
    assert q.layers["fc"]["macs"] == 12                     # dense: 4 inputs x 3 outputs, once
    assert q.layers["fc"]["effective_macs"] == 6            # two non-zero activations x 3
    dense = price_qann(q, "paper", snn)
    skipping = price_qann(q, "paper", snn, zero_skipping=True)
    assert dense.per_sample_pj == pytest.approx(4.6 * 12) and skipping.per_sample_pj == pytest.approx(4.6 * 6)
    with pytest.raises(EnergyModelError, match="needs the union counts"):
        price_qann(qann_counts(snn), "paper", snn, zero_skipping=True)


def test_break_even_rate_makes_the_two_energies_equal():
    c = tiny_counts()
    snn, qann = price(c, "paper"), price_qann(qann_counts(c), "paper", c)
    b = break_even(snn, qann, c)
    assert b.firing_rate == pytest.approx(4 / 32) == overall_firing_rate(c)
    assert b.fixed_pj == pytest.approx(920.0)  # the analog layer does not scale with spikes
    # at the break-even rate the linear model of the SNN's energy meets the QANN's
    assert b.fixed_pj + b.variable_pj * b.break_even_rate / b.firing_rate == pytest.approx(b.qann_pj)
    assert b.winner == "SNN" and b.break_even_rate > 1 and "every firing rate" in b.sentence()
    # with step's memory terms the same counts break even inside (0, 1)
    snn_s, qann_s = price(c, "step"), price_qann(qann_counts(c), "step", c)
    bs = break_even(snn_s, qann_s, c)
    assert bs.fixed_pj + bs.variable_pj * bs.break_even_rate / bs.firing_rate == pytest.approx(bs.qann_pj)
    # a QANN cheaper than the SNN's fixed part: no rate breaks even
    cheap = price_qann(qann_counts(c), "paper", c)
    cheap = type(cheap)(cheap.model, "", 1, tuple(), {})
    nb = break_even(snn, cheap, c)
    assert nb.break_even_rate is None and nb.winner == "QANN" and "no firing rate" in nb.sentence()


def test_loihi_model_prices_every_mapped_compartment_every_step():
    from conftest import random_model
    from test_energy_counters import digits

    from step_deploy.energy import count_graph, hook_traces
    from step_deploy.energy.models import loihi_mapping
    from step_deploy.frontend import capture
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    m = random_model("sdt-1-64-digits")
    g = capture(m)
    c = count_graph(g, hook_traces(m, digits(2), g), m.step)
    folded = fold_batchnorm(g)
    r = price(c, "loihi", folded)
    mp = loihi_mapping(folded)
    neurons_pj = sum(l.components.get("neurons", 0.0) for l in r.layers)
    assert neurons_pj == pytest.approx((51.2 + 21.6) * mp.neurons * m.step * 2)
    spikes = sum(x.total("spikes") for x in c.of_kind("neuron"))
    spike_out = sum(l.components.get("spike_out", 0.0) for l in r.layers if l.kind == "neuron")
    assert spike_out == pytest.approx(69.3 * spikes)
    syn = sum(l.components.get("synapses", 0.0) for l in r.layers)
    host = {"head"}
    conv = sum(x.total("synops") for x in c.of_kind("synapse") if x.op == "Conv2d")
    dense = sum(x.total("synops") for x in c.of_kind("synapse") if x.op != "Conv2d" and x.name not in host)
    assert syn == pytest.approx(24.0 * conv + 35.5 * dense)
    assert any("head" in n for n in r.notes)
    assert sum(l.components.get("noc", 0.0) for l in r.layers) > 0


# --------------------------------------------------------------------------- step-energy


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory):
    """A random-weight SDT checkpoint (BN statistics randomized so that neurons fire): the command's
    files and errors do not need a trained model, and the fast suite trains nothing."""
    from conftest import random_model

    from step_deploy.frontend.checkpoint import save_checkpoint
    p = tmp_path_factory.mktemp("ck") / "sdt.ckpt"
    save_checkpoint(random_model("sdt-1-64-digits"), p, metadata={"dataset": "digits"})
    return p


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory, trained_digits):
    from step_deploy.frontend.checkpoint import save_checkpoint
    p = tmp_path_factory.mktemp("ck") / "sdt-trained.ckpt"
    save_checkpoint(trained_digits("sdt-1-64-digits"), p, metadata={"dataset": "digits"})
    return p


@pytest.mark.slow
def test_step_energy_writes_a_deterministic_report(demo_ckpt, tmp_path):
    from step_deploy.cli import energy_main
    out1, out2 = tmp_path / "e1", tmp_path / "e2"
    assert energy_main([str(demo_ckpt), "-o", str(out1), "--samples", "24", "--calib-samples", "16"]) == 0
    assert energy_main([str(demo_ckpt), "-o", str(out2), "--samples", "24", "--calib-samples", "16"]) == 0
    for f in ("energy.json", "energy.md", "energy_per_layer.png", "firing_rate.png", "snn_vs_qann.png"):
        assert (out1 / f).read_bytes() == (out2 / f).read_bytes(), f
    rep = json.loads((out1 / "energy.json").read_text())
    assert rep["samples"] == 24 and rep["steps"] == 4 and 0.0 <= rep["accuracy"] <= 1.0
    assert set(rep["energy"]) == {"paper", "step/float32", "step/int", "horowitz/float32", "horowitz/int", "loihi"}
    assert set(rep["comparison"]) == {"paper", "step/float32", "step/int", "horowitz/float32", "horowitz/int"}
    assert set(rep["comparison_zero_skipping"]) == set(rep["comparison"])
    for v in rep["comparison"]:  # skipping zeros never costs the QANN more
        assert rep["comparison_zero_skipping"][v]["qann_pj"] <= rep["comparison"][v]["qann_pj"]
    for v in rep["comparison"].values():
        assert v["winner"] in ("SNN", "QANN") and v["summary"]
    assert rep["energy"]["horowitz/float32"]["per_sample_pj"] > rep["energy"]["horowitz/int"]["per_sample_pj"]
    assert rep["qann"]["activation_bits"] == 3
    assert all(c["source"] for r in rep["energy"].values() for c in r["constants"].values())
    md = (out1 / "energy.md").read_text()
    assert "## SNN against the quantized ANN" in md and "| paper.e_mac | 4.6 |" in md


def test_step_energy_refuses_bad_input_with_one_line(demo_ckpt, tmp_path, capsys):
    from step_deploy.cli import energy_main
    assert energy_main([str(demo_ckpt), "-o", str(tmp_path / "x"), "--model", "joules"]) == 2
    assert "unknown energy model 'joules'" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert energy_main([str(demo_ckpt), "-o", str(foreign), "--samples", "4"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"
    bad = tmp_path / "c.yaml"
    bad.write_text("paper: [1, 2")
    assert energy_main([str(demo_ckpt), "-o", str(tmp_path / "y"), "--constants", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert energy_main([str(tmp_path / "none.ckpt"), "-o", str(tmp_path / "z")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert energy_main([str(demo_ckpt), "--sweep-steps", "2"]) == 2
    assert "need --sweep" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_golden_source_counts_the_integer_network(demo_ckpt, tmp_path):
    from step_deploy.cli import energy_main
    out = tmp_path / "g"
    assert energy_main([str(demo_ckpt), "-o", str(out), "--samples", "8", "--calib-samples", "16",
                        "--source", "golden-fpga", "--model", "horowitz,paper"]) == 0
    rep = json.loads((out / "energy.json").read_text())
    assert rep["source"] == "golden-fpga" and set(rep["energy"]) == {"paper", "horowitz/float32", "horowitz/int"}
    ops = {row["op"] for row in rep["counts"]["layers"]}
    assert "FpgaLIF" in ops and "Neuron" not in ops
    names = {p.name for p in out.iterdir()}
    assert {"energy.json", "energy.md", "energy_per_layer.png", "firing_rate.png", "snn_vs_qann.png"} <= names
    # counted on the integer network, its widths are the deployed ones: /int and the counts agree
    assert rep["energy"]["horowitz/int"]["per_sample_pj"] < rep["energy"]["horowitz/float32"]["per_sample_pj"]
    assert "| paper.e_mac | 4.6 |" in (out / "energy.md").read_text()
    z = rep["comparison_zero_skipping"]
    assert z and all(z[v]["qann_pj"] <= rep["comparison"][v]["qann_pj"] for v in z)


@pytest.mark.slow
def test_sweep_grid_and_pareto_front(trained_ckpt, tmp_path):
    from step_deploy.cli import energy_main
    from step_deploy.energy_eval.sweep import SweepPoint, pareto
    out = tmp_path / "s"
    assert energy_main([str(trained_ckpt), "-o", str(out), "--samples", "48", "--calib-samples", "16", "--model",
                        "paper", "--sweep", "--sweep-weight-bits", "2,8", "--sweep-steps", "1,4"]) == 0
    sw = json.loads((out / "sweep.json").read_text())
    pts = sw["points"]
    assert [(p["weight_bits"], p["steps"]) for p in pts] == [(2, 1), (2, 4), (8, 1), (8, 4)]
    by = {(p["weight_bits"], p["steps"]): p for p in pts}
    # four steps do more work than one; 2-bit weights lose accuracy against 8-bit ones at the trained T
    for w in (2, 8):
        assert by[(w, 4)]["energy_uj_per_sample"]["horowitz"] > by[(w, 1)]["energy_uj_per_sample"]["horowitz"]
    assert by[(8, 4)]["accuracy"] > by[(2, 4)]["accuracy"]
    assert (out / "sweep.png").stat().st_size > 0 and "Pareto" in (out / "sweep.md").read_text()
    # the Pareto front by hand
    mk = lambda a, e: SweepPoint(8, 1, a, 0.1, {"m": e}, (1, 1))  # noqa: E731
    p1, p2, p3 = mk(0.9, 1.0), mk(0.95, 2.0), mk(0.9, 3.0)
    assert pareto([p1, p2, p3], "m") == [p1, p2]


def test_a_loihi_golden_run_is_priced_at_loihis_own_widths(demo_ckpt, tmp_path):
    from step_deploy.cli import energy_main
    out = tmp_path / "l"
    assert energy_main([str(demo_ckpt), "-o", str(out), "--samples", "4", "--calib-samples", "16",
                        "--source", "golden-loihi", "--model", "horowitz"]) == 0
    rep = json.loads((out / "energy.json").read_text())
    lifs = [r for r in rep["counts"]["layers"] if r["op"] == "LoihiLIF"]
    assert lifs and all(r["membrane_bits"] == 48 for r in lifs)
    # u and v are 24-bit registers: the integer variant adds at 24 bits (priced at the 32-bit entry)
    assert rep["energy"]["horowitz/int"]["assumptions"] == {"accumulator_bits": 24, "number_format": "int"}
    assert rep["energy"]["horowitz/float32"]["assumptions"]["number_format"] == "float"


def test_loihi_model_counts_the_messages_of_every_spikformer_adder():
    """Spikformer's residual adders send graded spikes: their messages are the non-zero values the
    next synapse or the token mean reads, so no mapped layer is left without its output events."""
    from conftest import random_model
    from test_energy_counters import digits

    from step_deploy.energy import count_graph, hook_traces
    from step_deploy.frontend import capture
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    m = random_model("spikformer-2-64-digits")
    g = capture(m)
    c = count_graph(g, hook_traces(m, digits(2), g), m.step)
    r = price(c, "loihi", fold_batchnorm(g))
    assert not [n for n in r.notes if "not counted" in n], r.notes
    adders = [l for l in r.layers if l.name.endswith("_res:compartments")]
    assert len(adders) == 4 and all(l.components["spike_out"] > 0 for l in adders)
