"""Tests of step_deploy.targets: specs as data, user specs, validation, the checker's rules, reports."""
import dataclasses
import json

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


def test_loihi1_limits_match_nengo_loihi():
    t = load_target("loihi1")
    assert (t.limit("neuro_cores_per_chip"), t.limit("neurons_per_core")) == (128, 1024)
    assert (t.limit("in_axons_per_core"), t.limit("out_axons_per_core")) == (4096, 4096)
    assert t.limit("core_memory_bits") == 1048576 == 128 * 1024 * 8
    assert t.limit("embedded_cores_per_chip") == 3 and t.limit("neurons_per_chip") == 131072
    assert t.limit("vth_mantissa_bits") == 17 and t.limit("state_bits") == 24
    assert t.limit("graded_spikes") is False and t.limit("spike_payload_bits") == 1
    assert t.limit("programmable_neurons") is False and t.limit("builtin_compare") == ">"
    assert t.limit("weight_bits_allowed") == [1, 2, 3, 4, 5, 6, 8]
    assert "MAX_SYNAPSE_BITS" in t.source("core_memory_bits") and t.confidence("neurons_per_core") == "primary"


def test_loihi2_limits_and_confidence_marks():
    t = load_target("loihi2")
    assert (t.limit("neuro_cores_per_chip"), t.limit("embedded_cores_per_chip"), t.limit("embedded_cores_usable")) == (128, 6, 3)
    assert (t.limit("neurons_per_chip"), t.limit("synapses_per_chip")) == (1_000_000, 120_000_000)
    assert t.limit("neurons_per_core") == 8192 and t.confidence("neurons_per_core") == "secondary"
    assert t.limit("core_memory_bits") == 192 * 1024 * 8 and t.confidence("core_memory_bits") == "to-verify"
    assert t.limit("spike_payload_bits") == 32 and "24" in t.entry("spike_payload_bits").note
    assert t.limit("graded_spikes") and t.limit("programmable_neurons")
    assert (t.limit("decay_bits"), t.limit("bias_mantissa_bits"), t.limit("bias_exponent_bits")) == (12, 13, 3)
    assert t.limit("in_axons_per_core") is None and t.confidence("in_axons_per_core") == "to-verify"
    assert "MAX_EMBEDDED_CORES_PER_CHIP" in t.source("embedded_cores_usable")


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
    assert [L.name for L in map_to_cores(g, "loihi2").layers] == ["lif", "out"]


def test_threshold_compare_and_neuron_model():
    ge, gg = linear_graph(4, 4), linear_graph(4, 4, compare=">")
    d = by_rule(check_target(ge, "loihi2"), "threshold-compare")
    assert d and d[0].node == "lif" and d[0].severity == "warning" and "custom neuron" in d[0].hint
    d = by_rule(check_target(ge, "loihi1"), "threshold-compare")
    assert d and "not programmable" in d[0].hint
    assert not by_rule(check_target(gg, "loihi1"), "threshold-compare")
    soft = linear_graph(4, 4, reset="soft")
    assert by_rule(check_target(soft, "loihi1"), "neuron-model")[0].severity == "error"
    assert by_rule(check_target(soft, "loihi2"), "neuron-model")[0].severity == "warning"


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
    assert "same for: k_lif, a_lif [2 more]" in table  # three '>=' neurons share one row
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
