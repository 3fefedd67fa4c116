"""FPGA parts, per-layer resource and latency estimates, ``--parallelism`` (syntax and ``auto``) and
the fit table: hand-made graphs against the formulas worked out by hand, the three tiny
architectures under ``auto_parallelism``, full-size models that do not fit, and the published anchor."""
import json
from math import ceil

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.errors import StepDeployError
from step_deploy.fixedpoint import fpga as fx
from step_deploy.fpga.estimate import (PIPELINE_DEPTH, EstimateError, FitError, ParallelismError, auto_parallelism,
                                       estimate, estimate_json, fit_table, parse_parallelism, resolve_parallelism)
from step_deploy.fpga.memory_blocks import Memory, place
from step_deploy.fpga.parts import FpgaPart, PartError, load_part
from step_deploy.frontend.capture import capture
from step_deploy.passes.fold_batchnorm import fold_batchnorm
from step_deploy.passes.quantize_fpga import quantize_fpga
from step_deploy.targets import TargetSpecError

from conftest import random_model

T = 4
TINY = ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits"]


def conv_graph(c_in=4, c_out=8, hw=6, kind="spikes", membrane_bits=16):
    """Input -> [quantizer] -> 3x3 conv (padding 1) -> LIF -> Output, built by hand."""
    nodes = [ir.Input("x", shape=(c_in, hw, hw), kind=kind)]
    src = "x"
    if kind == "analog":
        nodes.append(fx.FpgaQuantizeInput("x.q", ("x",), scale=255.0, bits=8))
        src = "x.q"
    w = np.ones((c_out, c_in, 3, 3), np.int64)
    nodes += [fx.FpgaConv2d("conv", (src,), weight=w, shift=np.zeros(c_out, np.int64), weight_bits=8, acc_bits=20,
                            out_bits=16, padding=(1, 1)),
              fx.FpgaLIF("lif", ("conv",), threshold=64, membrane_bits=membrane_bits),
              ir.Output("y", ("lif",))]
    return ir.Graph(nodes, {ir.FORMAT_KEY: fx.FORMAT_NAME, "time_steps": T})


def linear_graph(n_in=64, n_out=64):
    w = np.ones((n_out, n_in), np.int64)
    return ir.Graph([ir.Input("x", shape=(16, n_in), kind="spikes"),
                     fx.FpgaLinear("fc", ("x",), weight=w, shift=np.zeros(n_out, np.int64), acc_bits=15, out_bits=16),
                     fx.FpgaLIF("lif", ("fc",), threshold=8, membrane_bits=16), ir.Output("y", ("lif",))],
                    {ir.FORMAT_KEY: fx.FORMAT_NAME, "time_steps": T})


@pytest.fixture(scope="module")
def tiny(fpga_tiny):
    return fpga_tiny


# --------------------------------------------------------------------------- parts


def test_builtin_parts_carry_hls_part_and_flip_flops_with_sources():
    expect = {"zcu102": ("xczu9eg-ffvb1156-2-e", 548_160), "zcu104": ("xczu7ev-ffvc1156-2-e", 460_800),
              "vcu118": ("xcvu9p-flga2104-2L-e", 2_364_480), "pynq-z2": ("xc7z020clg400-1", 106_400)}
    for name, (hls, ff) in expect.items():
        p = load_part(name)
        assert (p.hls_part, p.ff) == (hls, ff)
        assert p.hls_part.lower().startswith(p.part.lower())
        assert "secondary" in p.sources["ff"] and "AMD" in p.sources["ff"]
    with pytest.raises(Exception):
        load_part("zcu104").dsp = 1  # frozen


def test_load_part_refuses_other_kinds_and_missing_files(tmp_path):
    with pytest.raises(PartError, match=r"loihi2\.yaml.*kind 'neuromorphic', not an FPGA part"):
        load_part("loihi2")
    assert isinstance(PartError("x"), StepDeployError)
    with pytest.raises(TargetSpecError, match="no such file"):
        load_part(tmp_path / "nope.yaml")
    p = tmp_path / "small.yaml"
    p.write_text("name: small-zu7\nextends: zcu104\nlimits:\n  dsp_slices: 10\n  flip_flops: 1000\n")
    part = load_part(p)
    assert (part.name, part.dsp, part.ff, part.bram36, part.hls_part) == ("small-zu7", 10, 1000, 312,
                                                                         "xczu7ev-ffvc1156-2-e")
    assert str(p) in part.sources["dsp"]


# --------------------------------------------------------------------------- one layer by hand


def test_synapse_and_lif_cycles_equal_the_formula_by_hand():
    g = conv_graph(c_in=4, c_out=8, hw=6)
    for p, conv_cycles in [(1, 8 * 36 * 36), (2, 4 * 36 * 36), (3, 3 * 36 * 36), (8, 36 * 36)]:
        est = estimate(g, "zcu104", clock_mhz=100, parallelism=p)
        conv, lif = est.layers
        assert (conv.node, conv.parallelism, conv.cycles_per_step) == ("conv", p, conv_cycles)
        assert lif.cycles_per_step == ceil(8 * 36 / p)  # 288 neurons
        per_step = conv_cycles + ceil(288 / p) + 2 * PIPELINE_DEPTH
        assert est.cycles_per_step == per_step and est.cycles_per_sample == T * per_step
        assert est.latency_ms == pytest.approx(T * per_step / 100e3)
    # P beyond the 8 output channels is capped and says so
    capped = estimate(g, "zcu104", parallelism={"conv": 32}).layer("conv")
    assert capped.parallelism == 8 and "capped at 8" in capped.model and "estimate" in capped.model


def test_doubling_parallelism_halves_synapse_cycles_and_raises_its_logic():
    g = linear_graph()
    a, b = (estimate(g, "zcu104", parallelism={"fc": p}).layer("fc") for p in (4, 8))
    assert b.cycles_per_step * 2 == a.cycles_per_step == ceil(64 / 4) * 16 * 64
    assert b.lut > a.lut and b.ff > a.ff
    assert a.dsp == b.dsp == 0  # spike input: gated adders, no multiplier
    assert a.weight_bits == b.weight_bits == 64 * 64 * 8 + 64 * 6  # weights + per-channel shift


def test_spike_input_synapse_has_no_dsp_and_the_analog_first_layer_one_per_lane():
    spikes = estimate(conv_graph(kind="spikes"), "zcu104", parallelism=4)
    analog = estimate(conv_graph(kind="analog"), "zcu104", parallelism=4)
    assert spikes.layer("conv").dsp == 0 and spikes.dsp == 0
    assert analog.layer("conv").dsp == 4 and analog.dsp == 4
    assert analog.host == ("x.q",) and [l.node for l in analog.layers] == ["conv", "lif"]  # quantizer on the host


def test_memories_a_layer_owns_and_where_they_land():
    lif = estimate(conv_graph(c_out=8, hw=6, membrane_bits=18), "zcu104").layer("lif")
    assert (lif.state_bits, lif.buffer_bits, lif.weight_bits) == (288 * 18, 288, 0)
    # the placement rule, block by block
    assert place(Memory("buffer", 1024, 1, 1), True).where == "lutram"
    assert place(Memory("buffer", 1024, 1, 8), True).lut == (128 // 64) * 8  # 128 words of 8 bits
    assert place(Memory("weights", 4096 * 8, 1, 8, rom=True), True).bram18 == 2  # 4K x 9 BRAM36
    assert place(Memory("weights", 16384 * 8, 2, 8, rom=True), True).bram18 == 8  # two banks of 8K x 8
    big = 40 * 36_864
    assert place(Memory("state", big, 1, 16), True).uram == ceil(big / 294_912)
    assert place(Memory("state", big, 1, 16), False).where == "bram"       # no URAM on the part
    assert place(Memory("weights", big, 1, 8, rom=True), True).where == "bram"  # ROMs never in URAM


# --------------------------------------------------------------------------- auto parallelism, fit


@pytest.mark.parametrize("arch", TINY)
@pytest.mark.parametrize("part", ["pynq-z2", "zcu104"])
def test_auto_parallelism_stays_within_budget_and_beats_p1(tiny, arch, part):
    q = tiny(arch)
    base = estimate(q, part)
    par = auto_parallelism(q, part, budget=0.8)
    est = estimate(q, part, parallelism=par)
    assert set(par) == {l.node for l in base.layers}
    assert est.fits(budget=0.8) and not est.over_budget(0.8)
    assert all(v <= 0.8 for v in est.utilisation().values())
    assert est.latency_ms < base.latency_ms / 3  # far faster than P = 1
    assert auto_parallelism(q, part, budget=0.8) == par  # deterministic


def test_auto_keeps_overrides_and_respects_a_smaller_budget(tiny):
    q = tiny("spikformer-2-64-digits")
    par = auto_parallelism(q, "zcu104", overrides={"head": 2, "block.0.mlp.fc1_linear": 3})
    assert par["head"] == 2 and par["block.0.mlp.fc1_linear"] == 3
    base = estimate(q, "zcu104")
    assert 0.3 < base.utilisation()["bram36"] < 0.4  # the minimal design's BRAM sets what a budget can do
    small = estimate(q, "zcu104", parallelism=auto_parallelism(q, "zcu104", budget=0.4))
    assert small.fits(budget=0.4) and not small.fits(budget=0.3) and small.latency_ms < base.latency_ms / 3
    # a budget the minimal design already exceeds: that resource is held at its minimum, the rest still used
    tight = estimate(q, "zcu104", parallelism=auto_parallelism(q, "zcu104", budget=0.2))
    assert tight.bram36 <= base.bram36 and tight.over_budget(0.2)[0][1] == "bram36"
    assert tight.latency_ms < base.latency_ms
    with pytest.raises(ParallelismError, match="'blok.0.mlp.fc1_linear'.*did you mean block.0.mlp.fc1_linear"):
        auto_parallelism(q, "zcu104", overrides={"blok.0.mlp.fc1_linear": 4})
    with pytest.raises(ParallelismError, match="'block.0.attn.q_split'.*no hardware of its own"):
        estimate(q, "zcu104", parallelism={"block.0.attn.q_split": 4})


def test_a_user_part_with_fewer_dsps_changes_the_fit(tiny, tmp_path):
    q = tiny("qkformer-2-64-digits")
    par = auto_parallelism(q, "zcu104")
    est = estimate(q, "zcu104", parallelism=par)
    assert est.fits() and est.dsp > 20
    p = tmp_path / "few_dsp.yaml"
    p.write_text(f"name: zu7-few-dsp\nextends: zcu104\nlimits:\n  dsp_slices: {est.dsp - 1}\n")
    small = estimate(q, p, parallelism=par)
    assert not small.fits()
    top = max(small.layers, key=lambda l: l.dsp)
    assert small.over_budget() == [(top.node, "dsp", est.dsp, est.dsp - 1)]
    with pytest.raises(FitError, match=rf"zu7-few-dsp.*dsp needs {est.dsp:,} of {est.dsp - 1:,}.*{top.node}"):
        small.require_fit()
    # auto on the smaller part fits it
    assert estimate(q, p, parallelism=auto_parallelism(q, p)).fits()


@pytest.mark.slow
def test_full_size_spikformer_does_not_fit_pynq_z2_and_the_error_names_layer_and_resource():
    g = fold_batchnorm(capture(random_model("spikformer-4-384")))
    q = quantize_fpga(g, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), steps=T)[0]
    est = estimate(q, "pynq-z2")
    assert not est.fits()
    over = {r: (node, need, have) for node, r, need, have in est.over_budget()}
    assert "bram36" in over and over["bram36"][2] == 140 and over["bram36"][1] > 10 * 140
    biggest = max(est.layers, key=lambda l: l.bram36)
    assert over["bram36"][0] == biggest.node
    with pytest.raises(FitError) as e:
        est.require_fit()
    msg = str(e.value)
    assert "pynq-z2" in msg and "bram36" in msg and biggest.node in msg and "--part" in msg and "\n" not in msg
    assert "**OVER**" in fit_table(est) and "Does not fit" in fit_table(est)
    # auto cannot make it fit, but never makes the memory that does not fit any worse
    auto = estimate(q, "pynq-z2", parallelism=auto_parallelism(q, "pynq-z2"))
    assert auto.bram36 <= est.bram36 and auto.latency_ms < est.latency_ms


# --------------------------------------------------------------------------- syntax, reports, errors


def test_parse_parallelism_accepts_the_cli_syntax():
    assert parse_parallelism("auto") == parse_parallelism(" AUTO ") == "auto"
    assert parse_parallelism("8") == 8 and parse_parallelism(4) == 4
    assert parse_parallelism("a.b=4, c=16") == {"a.b": 4, "c": 16}
    assert parse_parallelism("a=4,auto") == parse_parallelism("a=4,*=auto") == {"a": 4, "auto": True}
    assert parse_parallelism("a=4,*=8") == {"a": 4, "*": 8}


@pytest.mark.parametrize("text, expect", [
    ("0", "positive integer"), ("-2", "positive integer"), ("", "empty"), ("fast", "'fast' is not node=P"),
    ("a=x", "value of 'a' must be a positive integer"), ("a=4,a=8", "'a' is given twice"), ("a=0", "positive"),
    ("=4", "is not node=P"), (True, "expected 'auto'"), ("auto=3", "write 'auto' alone")])
def test_parse_parallelism_rejects_bad_syntax_with_clear_errors(text, expect):
    with pytest.raises(ParallelismError, match=expect):
        parse_parallelism(text)


def test_resolve_parallelism_runs_auto_where_asked(tiny):
    q = tiny("sdt-1-64-digits")
    assert resolve_parallelism("auto", q, "pynq-z2") == auto_parallelism(q, "pynq-z2")
    mixed = resolve_parallelism("head=2,auto", q, "pynq-z2")
    assert mixed["head"] == 2 and mixed == auto_parallelism(q, "pynq-z2", overrides={"head": 2})
    assert set(resolve_parallelism("3", q, "pynq-z2").values()) == {3}
    assert resolve_parallelism("head=2,*=4", q, "pynq-z2")["head"] == 2
    with pytest.raises(ParallelismError, match="auto_parallelism"):
        estimate(q, "pynq-z2", parallelism="auto")


def test_fit_table_and_json_label_estimates_and_are_deterministic(tiny):
    q = tiny("spikformer-2-64-digits")
    par = auto_parallelism(q, "pynq-z2")
    est = estimate(q, "pynq-z2", parallelism=par)
    table = fit_table(est)
    assert "estimate" in table.splitlines()[0] and "Fits the part." in table and "**OVER**" not in table
    assert all(f"| {l.node} | {l.op} | {l.parallelism} |" in table for l in est.layers)
    assert "| **total** |" in table and "utilisation" in table and "Model (estimate):" in table
    j = estimate_json(est)
    again = estimate_json(estimate(q, "pynq-z2", parallelism=par))
    assert json.dumps(j) == json.dumps(again)
    assert j["totals"] == est.totals() and j["fits"] is True and j["latency_ms"] == pytest.approx(est.latency_ms)
    assert [l["node"] for l in j["layers"]] == [l.node for l in est.layers] and j["label"].startswith("estimate")


def test_errors_for_graphs_that_cannot_be_estimated():
    g = conv_graph()
    g.metadata[ir.FORMAT_KEY] = "loihi-fixed"
    with pytest.raises(EstimateError, match="quantize-fpga"):
        estimate(g, "zcu104")
    g = conv_graph()
    g.metadata.pop("time_steps")
    with pytest.raises(EstimateError, match="steps=T"):
        estimate(g, "zcu104")
    assert estimate(g, "zcu104", steps=2).steps == 2
    with pytest.raises(StepDeployError, match="--clock-mhz"):
        estimate(conv_graph(), "zcu104", clock_mhz=0)
    with pytest.raises(ParallelismError, match="positive integer"):
        estimate(conv_graph(), "zcu104", parallelism={"conv": 0})


# --------------------------------------------------------------------------- the published anchor


@pytest.mark.slow
def test_spikformer_1_384_anchor_on_xczu7ev():
    from step_deploy.fpga.anchor import anchor_lines, spikformer_1_384_anchor

    a = spikformer_1_384_anchor()
    assert a["published"]["latency_ms"] == 53.0 and a["published"]["power_w"] == 7.181
    assert a["published"]["clock_mhz"] is None and "unknown" in a["published"]["clock_note"]
    assert "10.7498/aps.75.20260085" in a["published"]["source"]
    assert a["hls_part"] == "xczu7ev-ffvc1156-2-e" and a["label"].startswith("estimate")
    # all weights on chip (about 32 Mbit) cannot fit the XCZU7EV's 312 BRAM36: said, with the resource
    assert not a["fits"] and any(o["resource"] == "bram36" for o in a["as_generated"]["over_budget"])
    cb = a["compute_bound"]
    assert cb["resources"]["dsp"] <= 0.8 * 1728 and cb["resources"]["lut"] <= 0.8 * 230_400
    assert cb["latency_ms"] < a["latency_ms"]
    assert len(anchor_lines(a)) == 4 and "53.0 ms" in anchor_lines(a)[-1]
