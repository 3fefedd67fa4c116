"""Mesh hardware descriptions for the cycle-level simulator: bundled files, user overrides, every
error path (one line naming the key and the file), core placement and hop counts by hand."""
from __future__ import annotations

import math

import pytest

from step_deploy.errors import StepDeployError
from step_deploy.simulators.cycle import (EVENTS, GEOMETRY, EventCost, HardwareError, Hops, core_xy, hops,
                                          load_hardware)
from step_deploy.simulators.cycle.hardware import ARCH_DIR


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert isinstance(e.value, StepDeployError)
    return msg


def _write(tmp_path, text: str, name: str = "hw.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- bundled files


def test_loihi1_loads_with_the_published_figures():
    hw = load_hardware("loihi1")
    assert (hw.mesh_width, hw.mesh_height, hw.cores_per_tile, hw.cores_per_chip, hw.chips) == (8, 4, 4, 128, 1)
    expected = {"synop_dense": (35.5, 4.0), "synop_sparse": (33.6, 4.7), "synop_conv": (24.0, 3.1),
                "neuron_access": (51.2, 6.0), "neuron_update": (21.6, 3.7), "spike_out": (69.3, 30.0),
                "axon_in": (0.0, 20.0), "axon_out": (111.0, 5.1), "hop_east_west": (3.0, 4.1),
                "hop_north_south": (4.2, 6.5)}
    assert {k: (e.energy_pj, e.latency_ns) for k, e in hw.events.items()} == expected
    assert hw.synop("conv") == hw.event("synop_conv")
    assert dict(hw.barrier_sync.latency_ns) == {1: 600.0, 2: 1000.0, 4: 1400.0, 29: 1800.0}


def test_loihi1_energies_match_the_energy_model_constants():
    from step_deploy.energy.constants import load_constants
    c, hw = load_constants(), load_hardware("loihi1")
    for ev in ("synop_conv", "synop_sparse", "synop_dense", "neuron_access", "neuron_update", "spike_out",
               "axon_out", "hop_east_west", "hop_north_south"):
        assert hw.require(f"{ev}.energy_pj") == c.get(f"loihi.e_{ev}"), ev
    assert hw.mesh_width == c.get("loihi.mesh_tiles_x") and hw.cores_per_tile == c.get("loihi.cores_per_tile")


@pytest.mark.parametrize("name", ["loihi1", "loihi2"])
def test_every_number_has_a_source_and_confidence(name):
    hw = load_hardware(name)
    srcs = hw.sources()
    assert set(srcs) == set(GEOMETRY) | set(EVENTS) | set(hw.extra_events) | {"barrier_sync"}
    for key, (conf, src) in srcs.items():
        assert conf in ("primary", "secondary", "to-verify"), key
        assert src.strip(), key


def test_loihi2_says_its_event_costs_are_unpublished_and_refuses_to_use_them():
    hw = load_hardware("loihi2")
    assert hw.cores_per_chip == 128
    for k, e in hw.events.items():
        assert e.energy_pj is None and e.latency_ns is None and e.confidence == "to-verify", k
    with pytest.raises(HardwareError) as e:
        hw.require("synop_dense.energy_pj")
    msg = _one_line(e)
    assert "'synop_dense.energy_pj'" in msg and "loihi2.yaml" in msg and "null" in msg
    with pytest.raises(HardwareError, match="'spike_out.energy_pj' is null"):
        hw.event("spike_out")
    with pytest.raises(HardwareError, match="'cores_per_tile' is null"):
        core_xy(0, hw)
    with pytest.raises(HardwareError, match="barrier_sync.latency_ns' is null"):
        hw.sync_latency_ns()


def test_sync_latency_uses_the_smallest_tabulated_chip_count_at_least_n():
    hw = load_hardware("loihi1")
    assert [hw.sync_latency_ns(n) for n in (1, 2, 3, 4, 5, 29)] == [600, 1000, 1400, 1400, 1800, 1800]
    with pytest.raises(HardwareError) as e:
        hw.sync_latency_ns(30)
    assert "stops at 29 chips" in _one_line(e)


# ---------------------------------------------------------------- user files


def test_a_user_file_overrides_entries_and_keeps_the_rest(tmp_path):
    p = _write(tmp_path, """
extends: loihi2
name: my-loihi2
geometry:
  mesh_width: {value: 8, unit: tiles, source: "my floorplan", confidence: to-verify}
  mesh_height: {value: 4, unit: tiles, source: "my floorplan", confidence: to-verify}
  cores_per_tile: {value: 4, unit: cores, source: "my floorplan", confidence: to-verify}
  chips: {value: 2, unit: chips, source: "my board", confidence: primary}
events:
  synop_dense: {energy_pj: 12.5, latency_ns: 2.0, source: "my measurement", confidence: primary}
""")
    hw = load_hardware(p)
    assert hw.name == "my-loihi2" and hw.path == str(p)
    assert hw.synop("dense") == EventCost(12.5, 2.0, "my measurement", "primary")
    assert hw.chips == 2 and hw.geometry["cores_per_chip"].value == 128  # kept from loihi2
    assert hw.events["spike_out"].energy_pj is None  # not overridden: still null
    assert core_xy(128 + 37, hw) == (1, 1, 1)
    assert load_hardware("loihi2").synop  # the bundled one is untouched
    with pytest.raises(HardwareError):
        load_hardware("loihi2").synop("dense")


def test_a_complete_user_file_without_extends_loads(tmp_path):
    text = (ARCH_DIR / "loihi1.yaml").read_text().replace("name: loihi1", "name: copy")
    hw = load_hardware(_write(tmp_path, text))
    assert hw.name == "copy" and hw.events == load_hardware("loihi1").events


# ---------------------------------------------------------------- error paths


def _err(tmp_path, text: str) -> str:
    with pytest.raises(HardwareError) as e:
        load_hardware(_write(tmp_path, text))
    msg = _one_line(e)
    assert "hw.yaml" in msg
    return msg


def test_missing_key_is_named(tmp_path):
    msg = _err(tmp_path, (ARCH_DIR / "loihi1.yaml").read_text().replace("  axon_in:\n", "  axon_in_removed:\n"))
    assert "'axon_in_removed': unknown event" in msg and "missing key(s): axon_in" in msg


def test_unknown_keys_are_named(tmp_path):
    msg = _err(tmp_path, "extends: loihi1\ngeometry:\n  mesh_depth: {value: 2, unit: tiles, source: x, confidence: primary}\n"
                         "events:\n  spike_out: {energy_nj: 1, energy_pj: 1, latency_ns: 1, source: x, confidence: primary}\n"
                         "colour: blue\n")
    assert "'mesh_depth': unknown geometry key" in msg
    assert "'spike_out': unknown field(s) energy_nj" in msg
    assert "'colour': unknown top-level key" in msg


@pytest.mark.parametrize("value, why", [("-1.0", ">= 0"), (".nan", ">= 0"), ("'fast'", ">= 0"), ("true", ">= 0")])
def test_bad_event_numbers_are_named(tmp_path, value, why):
    msg = _err(tmp_path, f"extends: loihi1\nevents:\n  hop_east_west: {{energy_pj: {value}, latency_ns: 1, "
                         f"source: x, confidence: primary}}\n")
    assert "'hop_east_west.energy_pj': value must be a finite number >= 0" in msg and why in msg


def test_bad_geometry_is_named(tmp_path):
    msg = _err(tmp_path, "extends: loihi1\ngeometry:\n  mesh_width: {value: -2, unit: tiles, source: x, confidence: primary}\n"
                         "  cores_per_tile: {value: 4, unit: neurons, source: x, confidence: primary}\n")
    assert "'mesh_width': value must be a positive integer, got -2" in msg
    assert "'cores_per_tile': unit must be 'cores', got 'neurons'" in msg
    msg = _err(tmp_path, "extends: loihi1\ngeometry:\n  mesh_width: {value: 4, unit: tiles, source: x, confidence: primary}\n")
    assert "'cores_per_chip': 128 differs from mesh_width x mesh_height x cores_per_tile = 4 x 4 x 4 = 64" in msg


def test_null_needs_to_verify_and_a_source(tmp_path):
    msg = _err(tmp_path, "extends: loihi1\nevents:\n  spike_out: {energy_pj: null, latency_ns: 1, source: '', confidence: primary}\n")
    assert "'spike_out.energy_pj': a null value must have confidence 'to-verify'" in msg
    assert "'spike_out': 'source' must be a non-empty string" in msg
    msg = _err(tmp_path, "extends: loihi1\nevents:\n  spike_out: {energy_pj: 1, latency_ns: 1}\n")
    assert "'spike_out': missing field(s) source, confidence" in msg


def test_bad_sync_table_is_named(tmp_path):
    msg = _err(tmp_path, "extends: loihi1\nbarrier_sync: {latency_ns: {0: 5, 2: -1}, source: x, confidence: primary}\n")
    assert "chip count 0 must be a positive integer" in msg and "'barrier_sync.latency_ns.2'" in msg


def test_bad_yaml_missing_file_and_cycles(tmp_path):
    with pytest.raises(HardwareError) as e:
        load_hardware(_write(tmp_path, "events: [unclosed\n"))
    assert "hw.yaml is not valid YAML" in _one_line(e)
    with pytest.raises(HardwareError) as e:
        load_hardware(_write(tmp_path, "- a list\n"))
    assert "must hold a mapping" in _one_line(e)
    with pytest.raises(HardwareError) as e:
        load_hardware(tmp_path / "nope.yaml")
    assert "nope.yaml: no such file" in _one_line(e) and "loihi1, loihi2" in str(e.value)
    _write(tmp_path, "extends: b.yaml\n", "a.yaml")
    _write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(HardwareError) as e:
        load_hardware(tmp_path / "a.yaml")
    assert "'extends' forms a cycle" in _one_line(e)


def test_unknown_require_keys_and_connection_types():
    hw = load_hardware("loihi1")
    with pytest.raises(HardwareError, match="has no key 'synop_dense.power'"):
        hw.require("synop_dense.power")
    with pytest.raises(HardwareError, match="unknown connection type 'full'"):
        hw.synop("full")


# ---------------------------------------------------------------- placement and hops, by hand


def _small(tmp_path, chips: int = 1):
    """A 3 x 2 mesh, 2 cores per tile: 12 cores per chip."""
    g = "\n".join(f"  {k}: {{value: {v}, unit: {u}, source: test, confidence: primary}}" for k, v, u in
                  [("mesh_width", 3, "tiles"), ("mesh_height", 2, "tiles"), ("cores_per_tile", 2, "cores"),
                   ("cores_per_chip", 12, "cores"), ("chips", chips, "chips")])
    return load_hardware(_write(tmp_path, f"extends: loihi1\nname: small\ngeometry:\n{g}\n", f"small{chips}.yaml"))


def test_core_placement_by_hand(tmp_path):
    hw = _small(tmp_path, chips=2)
    # tiles row-major: tile t at (t % 3, t // 3); cores 2t, 2t+1 on tile t; chip 1 starts at core 12
    expected = {0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 1, 0), 5: (0, 2, 0), 6: (0, 0, 1), 11: (0, 2, 1),
                12: (1, 0, 0), 19: (1, 0, 1), 23: (1, 2, 1)}
    assert {c: core_xy(c, hw) for c in expected} == expected
    with pytest.raises(HardwareError) as e:
        core_xy(24, hw)
    assert "core 24 is outside hardware 'small': 2 chip(s) x 12 cores = 24 cores" in _one_line(e)
    with pytest.raises(HardwareError):
        core_xy(-1, hw)


def test_placement_agrees_with_the_energy_model():
    from step_deploy.energy.models import _core_xy
    hw = load_hardware("loihi1")
    for c in range(128):
        assert core_xy(c, hw)[1:] == _core_xy(c, 4, 8)


def test_hop_counts_by_hand(tmp_path):
    hw = _small(tmp_path, chips=2)
    assert hops(0, 1, hw) == Hops(0, 0)  # same tile
    assert hops(0, 5, hw) == Hops(2, 0)  # (0,0) -> (2,0)
    assert hops(11, 0, hw) == Hops(2, 1)  # (2,1) -> (0,0)
    assert hops(2, 6, hw).total == 2  # (1,0) -> (0,1)
    assert hops(5, 12, hw) == Hops(1, 0)  # chip 0 (2,0) -> chip 1 (0,0): next column east
    assert hops(0, 23, hw) == Hops(5, 1)  # chip 0 (0,0) -> chip 1 (2,1) = global (5,1)
    assert hops(7, 3, hw) == hops(3, 7, hw)
    assert math.isclose(hops(11, 0, hw).east_west * hw.event("hop_east_west").energy_pj
                        + hops(11, 0, hw).north_south * hw.event("hop_north_south").energy_pj, 2 * 3.0 + 4.2)


def test_hardware_is_frozen():
    hw = load_hardware("loihi1")
    with pytest.raises(Exception):
        hw.name = "x"
    with pytest.raises(TypeError):
        hw.events["spike_out"] = EventCost(1.0, 1.0)
