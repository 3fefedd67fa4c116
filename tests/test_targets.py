"""Tests of step_deploy.targets: specs as data, user specs, validation, the checker's rules, reports."""
import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from step_deploy import ir
from step_deploy.passes.map_to_cores import map_to_cores
from step_deploy.targets import (CONFIDENCES, RULES, SCHEMA, TargetSpecError, check_target, diagnostics_table,
                                 load_target, report_dict, report_markdown)
from step_deploy.targets.spec import SPEC_DIR


def linear_graph(n_in, n_out, kind="spikes", **neuron):
    return ir.Graph([ir.Input("x", shape=(n_in,), kind=kind),
                     ir.Linear("fc", ("x",), weight=np.ones((n_out, n_in))),
                     ir.Neuron("lif", ("fc",), **neuron), ir.Output("y", ("lif",))])


def by_rule(diags, rule):
    return [d for d in diags if d.rule == rule]


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("name", ["loihi2", "loihi1"])
def test_builtin_spec_has_every_limit_with_source_and_confidence(name):
    t = load_target(name)
    assert t.name == name and list(t.limits) == list(SCHEMA)
    for key, e in t.limits.items():
        assert e.source.strip() and e.unit.strip(), key
        assert e.confidence in CONFIDENCES, key
        assert t.source(key) == e.source and t.limit(key) == e.value


# Published figures, written down here independently of the YAML files (which must agree):
# Loihi: Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro
# 38(1), 2018: 128 neuromorphic cores, 3 embedded x86 cores, 1024 compartments per core, 16 MB
# synaptic memory in total, about 130 M synapses. Loihi 2: Intel, "Taking Neuromorphic Computing to
# the Next Level with Loihi 2" (technology brief, 2021): 128 neuro cores, 6 embedded cores, up to 1 M
# neurons and 120 M synapses per chip, graded spikes with up to 32-bit payloads, programmable neurons.
PUBLISHED = {
    "loihi1": {"neuro_cores_per_chip": 128, "embedded_cores_per_chip": 3, "neurons_per_core": 1024,
               "graded_spikes": False, "programmable_neurons": False},
    "loihi2": {"neuro_cores_per_chip": 128, "embedded_cores_per_chip": 6, "neurons_per_chip": 1_000_000,
               "synapses_per_chip": 120_000_000, "graded_spikes": True, "spike_payload_bits": 32,
               "programmable_neurons": True},
}


@pytest.mark.parametrize("name", ["loihi1", "loihi2"])
def test_loihi_specs_agree_with_published_figures(name):
    t = load_target(name)
    assert {k: t.limit(k) for k in PUBLISHED[name]} == PUBLISHED[name]
    if name == "loihi1":
        assert t.limit("core_memory_bits") * t.limit("neuro_cores_per_chip") == 16 * 2**20 * 8  # 16 MB in all
        assert abs(t.limit("synapses_per_chip") - 130e6) <= 0.01 * 130e6


@pytest.mark.parametrize("name", ["loihi1", "loihi2"])
def test_loihi_specs_are_self_consistent(name):
    t = load_target(name)
    cores = t.limit("neuro_cores_per_chip")
    # a chip holds no more than its cores: neurons, and synapses of at least one bit each
    assert t.limit("neurons_per_chip") <= t.limit("neurons_per_core") * cores
    assert t.limit("synapses_per_chip") <= t.limit("core_memory_bits") * cores
    assert t.limit("embedded_cores_usable") <= t.limit("embedded_cores_per_chip")
    assert t.limit("weight_bits") == max(t.limit("weight_bits_allowed"))
    assert t.limit("core_memory_bits") % t.limit("synapse_word_bits") == 0
    assert (t.limit("spike_payload_bits") > 1) == bool(t.limit("graded_spikes"))
    lo, hi = t.limit("weight_exponent_range")
    assert lo < 0 < hi


@pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc not installed (make setup installs it)")
def test_loihi2_spec_agrees_with_the_lava_package():
    """lava-nc 0.10.0's own files: compiler constants and the bit-accurate LIF model (read as text,
    so nothing of Lava needs to import)."""
    root = Path(importlib.util.find_spec("lava").submodule_search_locations[0])
    consts = (root / "magma" / "compiler" / "subcompilers" / "constants.py").read_text()
    lif = (root / "proc" / "lif" / "models.py").read_text()

    def number(text, name):
        m = re.search(rf"\b{name}\s*=\s*(\d+)", text)
        assert m, f"{name} not found in lava-nc's source"
        return int(m.group(1))

    t = load_target("loihi2")
    assert t.limit("neuro_cores_per_chip") == number(consts, "NUM_VIRTUAL_CORES_L2")
    assert t.limit("embedded_cores_usable") == number(consts, "MAX_EMBEDDED_CORES_PER_CHIP")
    assert t.limit("state_bits") == number(lif, "self.uv_bitwidth")
    assert t.limit("decay_bits") == number(lif, "self.decay_shift")
    assert t.limit("vth_shift") == number(lif, "self.vth_shift")


def test_spec_is_frozen_and_unknown_key_is_named():
    t = load_target("loihi1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "x"
    with pytest.raises(TypeError):
        t.limits["neurons_per_core"] = None
    with pytest.raises(KeyError, match="no_such_limit"):
        t.limit("no_such_limit")


def test_user_spec_extends_and_overrides(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("name: loihi1-small\nextends: loihi1\nlimits:\n  neurons_per_core: 256\n"
                 "  in_axons_per_core: {value: 100, unit: axons, source: my board, confidence: secondary}\n")
    t = load_target(p)
    assert t.name == "loihi1-small" and t.limit("neurons_per_core") == 256
    assert str(p) in t.source("neurons_per_core") and t.entry("neurons_per_core").unit == "compartments"
    assert t.source("in_axons_per_core") == "my board" and t.limit("out_axons_per_core") == 4096
    m = map_to_cores(linear_graph(16, 3000), t)
    assert m.layers[0].cores == 12  # ceil(3000 / 256)
    diags = by_rule(check_target(linear_graph(200, 10), t), "fan-in-axons")
    assert diags and diags[0].value == 200 and diags[0].limit == 100


def test_user_spec_full_json(tmp_path):
    data = yaml.safe_load((SPEC_DIR / "loihi2.yaml").read_text())
    data["name"] = "my-loihi2"
    data["limits"]["neuro_cores_per_chip"]["value"] = 120
    p = tmp_path / "t.json"
    p.write_text(json.dumps(data))
    t = load_target(str(p))
    assert t.name == "my-loihi2" and t.limit("neuro_cores_per_chip") == 120 and t.path == str(p)


def test_bad_specs_name_the_key_and_the_file(tmp_path):
    data = yaml.safe_load((SPEC_DIR / "loihi1.yaml").read_text())
    del data["limits"]["neurons_per_core"]
    data["limits"]["core_memory_bits"]["value"] = "lots"
    data["limits"]["state_bits"]["confidence"] = "probably"
    data["limits"]["decay_bits"] = {"value": 12, "unit": "bits"}
    data["limits"]["cores_per_moon"] = {"value": 1, "unit": "x", "source": "s", "confidence": "primary"}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(TargetSpecError) as e:
        load_target(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "missing limit(s): neurons_per_core" in msg
    assert "'core_memory_bits': value must be int, got str" in msg
    assert "'state_bits': confidence 'probably'" in msg
    assert "'decay_bits': missing field(s) source, confidence" in msg
    assert "'cores_per_moon': unknown key" in msg
    assert len(e.value.problems) == 5


@pytest.mark.parametrize("text,expect", [("limits: [1, 2]", "'limits' is missing or not a mapping"),
                                         ("name: [unclosed", "not valid YAML"),
                                         ("- a\n- b", "must hold a mapping")])
def test_malformed_spec_files(tmp_path, text, expect):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(TargetSpecError, match=expect):
        load_target(p)


def test_missing_spec_file_and_bad_override(tmp_path):
    with pytest.raises(TargetSpecError, match="not a built-in target"):
        load_target(tmp_path / "nope.yaml")
    p = tmp_path / "o.yaml"
    p.write_text("extends: loihi2\nlimits:\n  neurons_per_core: many\n")
    with pytest.raises(TargetSpecError, match="'neurons_per_core': value must be int"):
        load_target(p)


# --------------------------------------------------------------------------- rules


def test_rules_are_data():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names)) and all(r.description for r in RULES)
    for rule in ("neurons-per-core", "synaptic-memory-per-core", "fan-in-axons", "fan-out-axons", "weight-precision",
                 "graded-spikes", "live-spike-product", "analog-input", "threshold-compare"):
        assert rule in names


def test_fan_in_violation_names_node_value_limit_and_hint():
    g = linear_graph(5000, 10)
    d = by_rule(check_target(g, "loihi1"), "fan-in-axons")
    assert len(d) == 1
    d = d[0]
    assert (d.node, d.value, d.limit, d.severity) == ("fc", 5000, 4096, "error")
    assert "partial sums" in d.hint and "2" in d.hint
    assert not by_rule(check_target(g, "loihi2"), "fan-in-axons")  # unknown limit: not checked
    assert any("in_axons_per_core" in x.message for x in by_rule(check_target(g, "loihi2"), "limit-unknown"))


def test_per_core_rules_check_a_given_mapping():
    g = linear_graph(16, 3000)
    m = map_to_cores(g, "loihi1")
    assert not by_rule(check_target(g, "loihi1", m), "neurons-per-core")
    L = m.layers[0]
    m.layers[0] = dataclasses.replace(L, cores=1, per_core=dict(L.per_core, neurons=3000))
    d = by_rule(check_target(g, "loihi1", m), "neurons-per-core")
    assert d and (d[0].node, d[0].value, d[0].limit) == ("lif", 3000, 1024)


def test_weight_precision():
    g = linear_graph(8, 4)
    assert not [d for d in by_rule(check_target(g, "loihi1"), "weight-precision") if d.severity == "error"]
    d = by_rule(check_target(g, "loihi1", weight_bits=7), "weight-precision")
    assert d and d[0].node == "fc" and d[0].value == 7 and d[0].severity == "error"  # Loihi 1 has no 7-bit format
    assert not by_rule(check_target(g, "loihi2", weight_bits=7), "weight-precision")
    d = by_rule(check_target(g, "loihi2", weight_bits={"fc": 12}), "weight-precision")
    assert d and (d[0].value, d[0].limit) == (12, 8)


def test_graded_spikes_from_residual_add():
    g = ir.Graph([ir.Input("x", shape=(4, 8), kind="spikes"),
                  ir.Linear("fc", ("x",), weight=np.ones((8, 8))), ir.Neuron("lif", ("fc",)),
                  ir.Add("res", ("x", "lif")),
                  ir.Linear("fc2", ("res",), weight=np.ones((8, 8))), ir.Neuron("lif2", ("fc2",)),
                  ir.Output("y", ("lif2",))])
    d = by_rule(check_target(g, "loihi1"), "graded-spikes")
    assert len(d) == 1 and d[0].node == "res" and d[0].severity == "error"
    assert (d[0].value, d[0].limit) == (2, 1) and "fold the add" in d[0].hint
    assert not by_rule(check_target(g, "loihi2"), "graded-spikes")


def test_analog_input_on_both_chips():
    g = ir.Graph([ir.Input("img", shape=(2, 6, 6), kind="analog"),
                  ir.Conv2d("conv", ("img",), weight=np.ones((4, 2, 3, 3)), padding=(1, 1)),
                  ir.Neuron("lif", ("conv",)), ir.Flatten("f", ("lif",)),
                  ir.Linear("fc", ("f",), weight=np.ones((5, 144))), ir.Neuron("out", ("fc",)),
                  ir.Output("y", ("out",))])
    d1 = by_rule(check_target(g, "loihi1"), "analog-input")
    assert len(d1) == 1 and d1[0].node == "img" and "host" in d1[0].message
    assert "conv: 2592 MACs" in d1[0].hint  # 144 outputs x 18 taps
    m1 = map_to_cores(g, "loihi1")
    assert m1.nodes["conv"]["placement"] == m1.nodes["lif"]["placement"] == "host"
    assert [L.name for L in m1.layers] == ["out"]
    d2 = by_rule(check_target(g, "loihi2"), "analog-input")
    assert len(d2) == 1 and "graded spikes" in d2[0].message and "lif" in d2[0].hint
    assert d2[0].severity == "info" and d1[0].severity == "warning"  # Loihi 2: quantized on the host, exactly
    assert [L.name for L in map_to_cores(g, "loihi2").layers] == ["lif", "out"]


def test_threshold_compare_and_neuron_model():
    ge, gg = linear_graph(4, 4), linear_graph(4, 4, compare=">")
    # Loihi 2: the export's custom '>=' neuron makes it exact -> info, not a warning
    d = by_rule(check_target(ge, "loihi2"), "threshold-compare")
    assert d and d[0].node == "lif" and d[0].severity == "info" and "custom neuron" in d[0].hint
    # Loihi 1, tau = 2: the 'gap' tie strategy makes the stock '>' neuron exact -> info
    d = by_rule(check_target(ge, "loihi1"), "threshold-compare")
    assert d and d[0].severity == "info" and "'gap'" in d[0].hint
    # Loihi 1, tau = 3: neither works -> a warning that says why
    d = by_rule(check_target(linear_graph(4, 4, tau=3.0), "loihi1"), "threshold-compare")
    assert d and d[0].severity == "warning" and "not programmable" in d[0].hint
    assert not by_rule(check_target(gg, "loihi1"), "threshold-compare")
    soft = linear_graph(4, 4, reset="soft")
    assert by_rule(check_target(soft, "loihi1"), "neuron-model")[0].severity == "error"
    assert by_rule(check_target(soft, "loihi2"), "neuron-model")[0].severity == "info"  # FixedLIF: exact


def test_synaptic_delay_rule():
    g = ir.Graph([ir.Input("x", shape=(4,), kind="spikes"), ir.Delay("d", ("x",), steps=100),
                  ir.Linear("fc", ("d",), weight=np.ones((2, 4))), ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])
    d = by_rule(check_target(g, "loihi2"), "synaptic-delay")
    assert d and (d[0].node, d[0].value, d[0].limit) == ("d", 100, 63) and "1 relay layer" in d[0].hint


# --------------------------------------------------------------------------- reports


def attention_graph():
    g = ir.Graph([ir.Input("x", shape=(4, 8), kind="spikes")])
    for t in "qk":
        g.add(ir.Linear(t, ("x",), weight=np.ones((8, 8))))
        g.add(ir.Neuron(t + "_lif", (t,)))
    g.add(ir.MatMul("qk", ("q_lif", "k_lif"), transpose_b=True))
    g.add(ir.Neuron("a_lif", ("qk",), v_threshold=0.5))
    g.add(ir.Output("y", ("a_lif",)))
    return g


def test_diagnostics_table_groups_and_lists_everything():
    g = attention_graph()
    diags = check_target(g, "loihi1")
    table = diagnostics_table(diags)
    assert table.splitlines()[0].split() == ["SEVERITY", "RULE", "NODE", "VALUE", "LIMIT"]
    assert "live-spike-product" in table and "qk" in table and "fix:" in table
    # three '>=' neurons share one row, which says plainly how many there are in all
    assert "same for: 2 more layers (3 layers in all): k_lif, a_lif" in table
    assert table.splitlines()[-1].endswith("info") and "error(s)" in table.splitlines()[-1]
    ungrouped = diagnostics_table(diags, group=False)
    assert ungrouped.count("threshold-compare") == 3
    assert "no diagnostics" in diagnostics_table([])


def test_report_dict_is_json_and_deterministic():
    g = attention_graph()
    t = load_target("loihi2")
    a = report_dict(map_to_cores(g, t), check_target(g, t), t)
    b = report_dict(map_to_cores(g, t), check_target(g, t), t)
    assert json.dumps(a) == json.dumps(b)
    assert a["totals"]["cores"] == sum(L["cores"] for L in a["layers"]) and a["totals"]["chips"] == 1
    assert [o["node"] for o in a["off_core"]] == ["qk"]
    assert set(a["nodes"]) == set(g.nodes) and a["limits"]["neurons_per_core"]["confidence"] == "secondary"
    assert a["summary"]["error"] == 0 and a["memory_model"]


def test_report_markdown_sections():
    g = attention_graph()
    m = map_to_cores(g, "loihi1")
    md = report_markdown(m, check_target(g, "loihi1", m), load_target("loihi1"))
    for part in ("# Mapping onto loihi1", "## Layers", "## Not on the neuro-cores", "| qk | MatMul |",
                 "## Diagnostics", "## Memory model", "## Limits used", "MAX_COMPARTMENTS"):
        assert part in md


# --------------------------------------------------------------------------- device kinds (FPGA parts)

FPGA_PARTS = ["zcu102", "zcu104", "vcu118", "pynq-z2"]


@pytest.mark.parametrize("name", FPGA_PARTS)
def test_fpga_part_specs_load_with_their_own_schema(name):
    from step_deploy.targets import FPGA_SCHEMA

    t = load_target(name)
    assert t.kind == "fpga" and list(t.limits) == list(FPGA_SCHEMA)
    for key, e in t.limits.items():
        assert e.source.strip() and e.confidence in CONFIDENCES, key
    assert all(t.limit(k) > 0 for k in ("dsp_slices", "bram36_blocks", "luts")) and t.limit("uram_blocks") >= 0


def test_fpga_parts_agree_with_device_facts():
    """Facts independent of the numbers: UltraRAM exists only on the EV/VU+ parts named; the VU9P is
    the biggest device in every resource and the 7-series Z-7020 the smallest."""
    t = {n: load_target(n) for n in FPGA_PARTS}
    assert [n for n in FPGA_PARTS if t[n].limit("uram_blocks")] == ["zcu104", "vcu118"]
    assert {n: t[n].limit("part") for n in FPGA_PARTS} == {"zcu102": "XCZU9EG", "zcu104": "XCZU7EV",
                                                             "vcu118": "XCVU9P", "pynq-z2": "XC7Z020"}
    for key in ("dsp_slices", "bram36_blocks", "luts"):
        values = sorted(t, key=lambda n: t[n].limit(key))
        assert values[0] == "pynq-z2" and values[-1] == "vcu118", key


def test_spec_kinds_are_checked(tmp_path):
    # a user FPGA part extending a built-in one: same kind, bare-value override
    p = tmp_path / "my_zcu.yaml"
    p.write_text("name: my-zcu\nextends: zcu102\nlimits:\n  dsp_slices: 2000\n")
    t = load_target(p)
    assert t.kind == "fpga" and t.limit("dsp_slices") == 2000 and str(p) in t.source("dsp_slices")
    # a neuromorphic key in an FPGA spec, a wrong kind, a kind that differs from the base
    for text, expect in [("name: x\nkind: fpga\nlimits:\n  neurons_per_core: 4\n", "unknown key for kind 'fpga'"),
                         ("name: x\nkind: gpu\nlimits: {}\n", "'gpu' is not one of neuromorphic, fpga"),
                         ("name: x\nkind: neuromorphic\nextends: zcu102\nlimits: {}\n", "differs from the kind")]:
        q = tmp_path / "bad.yaml"
        q.write_text(text)
        with pytest.raises(TargetSpecError, match=expect):
            load_target(q)
    # the constraint rules are for neuromorphic chips: an FPGA part is refused with a message
    with pytest.raises(TargetSpecError, match="fpga spec"):
        check_target(linear_graph(4, 4), "zcu104")


@pytest.mark.parametrize("name", ["loihi2", "loihi1", *FPGA_PARTS])
def test_spec_sources_cite_public_references_only(name):
    """Sources name papers, URLs and package files, never notes that are not in the repository."""
    text = (SPEC_DIR / f"{name}.yaml").read_text()
    for private in ("research/", "shared/", "deploy.md", "DESIGN", "deploy_probe"):
        assert private not in text, f"{name}.yaml cites {private!r}, which is not public"
