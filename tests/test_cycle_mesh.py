"""The event-driven mesh simulator (``simulators/cycle/mesh.py``): its own spikes equal the golden
model's at every spiking node and step, events and nanoseconds of hand-worked toys, the analytic
bound, data-dependent time, the energy module's counters, placement, and the loihi2 null-cost error."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from conftest import random_model
from test_golden import T, build

from step_deploy import ir
from step_deploy.energy.counters import count_graph, needed_traces
from step_deploy.errors import StepDeployError
from step_deploy.passes.quantize_loihi import quantize_loihi
from step_deploy.simulators.cycle import HardwareError, core_xy, hops, load_hardware
from step_deploy.simulators.cycle.mesh import simulate_mesh
from step_deploy.simulators.cycle.mesh_plan import build_plan
from step_deploy.simulators.cycle.mesh_timing import MeshCosts
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.golden_loihi import op_fixed_conv2d
from step_deploy.targets.mapping import map_to_cores

ARCHS = ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits"]
HARDWARE = ["loihi1", "loihi2-assumed"]
L1 = {"axon_in": 20.0, "synop_dense": 4.0, "synop_conv": 3.1, "neuron": 6.0 + 3.7, "spike_out": 30.0,
      "axon_out": 5.1, "hop_ew": 4.1, "sync": 600.0}  # loihi1.yaml latencies (ns), by hand


def assert_same_spikes(qgraph, res, x, steps):
    gold = run_golden(qgraph, x, steps=steps)
    assert set(res.spikes) == set(gold.traces) and gold.traces
    bad = {k: int((res.spikes[k] != v).sum()) for k, v in gold.traces.items()}
    total = sum(v.numel() for v in gold.traces.values())
    assert not any(bad.values()), f"mismatches per node (of {total} values): {bad}"
    for name, out in gold.outputs.items():
        assert torch.equal(res.outputs[name], out), name
    assert sum(int(v.sum()) for v in res.spikes.values()) > 0  # something spiked


@functools.lru_cache(maxsize=None)
def quantized_model(arch):
    from step_deploy.data import load_dataset
    from step_deploy.frontend.capture import capture, encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    model = random_model(arch)
    g = fold_batchnorm(capture(model))
    digits = load_dataset("digits", "train").tensors[0]
    q, _ = quantize_loihi(g, encoded_input(model, digits[:8]), steps=model.step)
    return g, q, encoded_input(model, digits[8:11]), model.step


def spike_toy(weight, layers=1):
    """Spike input (4,) -> [Linear 4->4 -> LIF] x layers, no bias."""
    nodes, src = [ir.Input("x", shape=(4,), kind="spikes")], "x"
    for i in range(layers):
        nodes += [ir.Linear(f"fc{i}", (src,), weight=np.asarray(weight, np.float32), bias=None),
                  ir.Neuron(f"lif{i}", (f"fc{i}",))]
        src = f"lif{i}"
    g = ir.Graph(nodes + [ir.Output("y", (src,))])
    return g


@pytest.fixture
def two_core_target(tmp_path):
    """A Loihi 2 spec with 2 neurons per core: a 4-neuron layer takes 2 cores."""
    p = tmp_path / "tiny.yaml"
    p.write_text("name: tiny\nextends: loihi2\nlimits:\n  neurons_per_core: 2\n")
    return str(p)


# ---------------------------------------------------------------- spikes equal the golden model


@pytest.mark.parametrize("hardware", HARDWARE)
@pytest.mark.parametrize("arch", ARCHS)
def test_spikes_equal_golden_for_the_three_architectures(arch, hardware):
    g, q, x, steps = quantized_model(arch)
    res = simulate_mesh(q, g, x, steps=steps, hardware=hardware)
    assert_same_spikes(q, res, x, steps)
    assert res.kind == "mesh" and res.hw_steps == steps + res.hardware["depth"] and res.samples == 3
    assert res.step_ns.shape == (3, res.hw_steps) and (res.latency_ns > 0).all()


@pytest.mark.parametrize("name", ["mlp", "conv", "residual", "ssa", "sdt"])
def test_spikes_equal_golden_on_the_hand_built_graphs(name):
    g, x = build(name)
    q, _ = quantize_loihi(g, x[:64], steps=T)
    assert_same_spikes(q, simulate_mesh(q, g, x[64:70], steps=T, hardware="loihi1"), x[64:70], T)


def test_each_core_computes_its_currents_from_only_the_packets_it_received(tmp_path):
    """The layer-wide synaptic call equals each core's own: rebuild a core's input from only the
    values with a synapse onto it and its neurons get the same currents."""
    p = tmp_path / "small.yaml"
    p.write_text("name: small\nextends: loihi2\nlimits:\n  neurons_per_core: 64\n")
    g, x = build("conv")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    hw = load_hardware("loihi1")
    plan = build_plan(q, g, map_to_cores(g, str(p)), hw, MeshCosts.from_hardware(hw, 1, False).latency_ns)
    L = plan.layers["lif0"]
    assert L.place.cores >= 4
    (edge,) = L.edges
    xin = torch.randint(0, 50, (3,) + tuple(plan.shapes[edge.src]))
    full = op_fixed_conv2d(q["conv"], [xin], {}, 0).reshape(3, -1)
    partial = 0
    for c, idx in enumerate(L.core_idx):
        got = (edge.reach[:, c] > 0).reshape(plan.shapes[edge.src])
        partial += int((~got).sum() > 0)
        mine = op_fixed_conv2d(q["conv"], [xin * got], {}, 0).reshape(3, -1)
        assert torch.equal(mine[:, idx], full[:, idx]), c
    assert partial > 0  # some core does not receive every input (spatial tiles)


# ---------------------------------------------------------------- hand-worked toys


def test_two_core_toy_events_and_nanoseconds_by_hand(two_core_target):
    w = np.full((4, 4), 0.3, np.float32)
    w[:, 0] = 2.5  # input 0 alone makes every neuron fire
    g = spike_toy(w)
    x = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]], [[1, 1, 1, 0]]], dtype=torch.float32)  # (T=3, B=1, 4)
    q, _ = quantize_loihi(g, x, steps=3)
    res = simulate_mesh(q, g, x, hardware="loihi1", target=two_core_target)
    assert_same_spikes(q, res, x, 3)
    assert [u.index for u in res.units if u.kind == "core"] == [0, 1] and res.hw_steps == 4
    spikes = res.spikes["lif0"][:, 0]  # (T, 4)
    nnz = x[:, 0].sum(1)
    for c, cols in enumerate(([0, 1], [2, 3])):
        s = spikes[:, cols].sum(1)
        want = {"msgs_in": nnz, "synops_dense": 2 * nnz, "neuron_updates": torch.full((3,), 2.0),
                "spikes_out": s, "msgs_out": s}  # one message per spike to its reader (the host)
        for name, v in want.items():
            assert res.events[name][c].tolist() == [0] + v.long().tolist(), (name, c)
        busy = (nnz * L1["axon_in"] + 2 * nnz * L1["synop_dense"] + 2 * L1["neuron"]
                + s * (L1["spike_out"] + L1["axon_out"]))
        assert np.allclose(res.busy_ns[c], [0.0] + busy.tolist()), c
    assert spikes[0].tolist() == [1, 1, 1, 1] and spikes[1].sum() == 0
    assert np.allclose(res.step_ns[0], L1["sync"] + res.busy_ns[:2].max(0))
    assert np.isclose(res.latency_ns[0], res.step_ns[0].sum()) and np.isclose(res.throughput_sps, 1e9 / res.latency_ns[0])
    e = res.layers["lif0"]["energy_pj"]
    # both cores: 4 synops per input spike, 4 compartments x 3 steps
    assert np.isclose(e["synapses"], 35.5 * 4 * nnz.sum()) and np.isclose(e["neurons"], (51.2 + 21.6) * 12)
    assert res.layers["lif0"]["traffic_bits"] == {"registers": 12 * 96, "sram": int(4 * nnz.sum()) * 8 + 12 * 96,
                                                  "dram": 0}


def test_hops_between_tiles_by_hand(tmp_path, two_core_target):
    hwp = tmp_path / "mesh.yaml"
    geo = {"mesh_width": ("tiles", 2), "mesh_height": ("tiles", 1), "cores_per_tile": ("cores", 2),
           "cores_per_chip": ("cores", 4)}
    hwp.write_text("name: twotiles\nextends: loihi1\ngeometry:\n" + "".join(
        f"  {k}: {{value: {v}, unit: {u}, source: test, confidence: to-verify}}\n" for k, (u, v) in geo.items()))
    g = spike_toy(np.full((4, 4), 2.5, np.float32), layers=2)
    x = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]], dtype=torch.float32)
    q, _ = quantize_loihi(g, x, steps=3)
    res = simulate_mesh(q, g, x, hardware=str(hwp), target=two_core_target)
    assert_same_spikes(q, res, x, 3)
    hw = load_hardware(str(hwp))
    assert [core_xy(u.index, hw) for u in res.units if u.kind == "core"] == [(0, 0, 0), (0, 0, 0), (0, 1, 0), (0, 1, 0)]
    s0 = res.spikes["lif0"][:, 0]  # layer 0 on tile 0, layer 1 on tile 1: one east-west hop per packet
    per_core = torch.tensor([sum(hops(a, b, hw).east_west for a in (0, 1)) / 2 for b in (2, 3)])
    for c in (2, 3):
        got = res.events["hops_east_west"][c]
        assert got.tolist() == [0, 0] + (s0.sum(1) * per_core[c - 2]).long().tolist(), c
        assert np.allclose(res.stall_ns[c], [0, 0] + [L1["hop_ew"] * (n > 0) for n in s0.sum(1).tolist()])
    assert res.events["hops_north_south"].sum() == 0


# ---------------------------------------------------------------- analytic bound, data-dependent time


def test_step_time_is_at_least_work_over_cores_and_equal_when_dense_and_balanced(two_core_target):
    g = spike_toy(np.full((4, 4), 0.6, np.float32))
    x = torch.ones((3, 1, 4))  # every input, every step: both cores do the same work
    q, _ = quantize_loihi(g, x, steps=3)
    res = simulate_mesh(q, g, x, hardware="loihi1", target=two_core_target)
    cores = [i for i, u in enumerate(res.units) if u.kind == "core"]
    work = res.busy_ns[cores].sum(0)
    compute = res.step_ns[0] - L1["sync"]
    assert (compute + 1e-9 >= work / len(cores)).all()
    assert np.allclose(compute[1:], work[1:] / 2) and np.allclose(res.busy_ns[0], res.busy_ns[1])
    assert (res.spikes["lif0"].sum() > 0)
    costs = MeshCosts.from_hardware(load_hardware("loihi1"), 1, False)
    for ev in ("synops_dense", "msgs_in", "neuron_updates"):  # per resource
        assert (compute + 1e-9 >= res.events[ev][cores].sum(0) * costs.latency_ns[ev] / len(cores)).all(), ev


@pytest.mark.parametrize("arch", ["sdt-1-64-digits"])
def test_bound_holds_on_a_model_and_fewer_spikes_take_fewer_ns(arch):
    g, q, x, steps = quantized_model(arch)
    busy = simulate_mesh(q, g, x[:, :1], steps=steps, hardware="loihi2-assumed")
    assert_same_spikes(q, busy, x[:, :1], steps)
    idle = simulate_mesh(q, g, torch.zeros_like(x[:, :1]), steps=steps, hardware="loihi2-assumed")
    priced = [i for i, u in enumerate(busy.units) if u.kind != "host"]
    compute = busy.step_ns[0] - busy.hardware["sync_ns"]
    assert (compute + 1e-6 >= busy.busy_ns[priced].max(0)).all()
    assert (compute + 1e-6 >= busy.busy_ns[priced].sum(0) / len(priced)).all()
    n_busy = sum(int(v.sum()) for v in busy.spikes.values())
    n_idle = sum(int(v.sum()) for v in idle.spikes.values())
    assert n_idle < n_busy
    assert idle.latency_ns[0] < busy.latency_ns[0] and idle.total_energy_pj < busy.total_energy_pj


def test_no_input_spikes_means_only_neuron_updates(two_core_target):
    g = spike_toy(np.full((4, 4), 0.6, np.float32))
    x = torch.zeros((3, 1, 4))
    q, _ = quantize_loihi(g, torch.ones((3, 4, 4)), steps=3)
    res = simulate_mesh(q, g, x, hardware="loihi1", target=two_core_target)
    assert res.events["synops"].sum() == 0 and res.events["msgs_in"].sum() == 0
    assert np.allclose(res.busy_ns[:2, 1:], 2 * L1["neuron"])


# ---------------------------------------------------------------- the energy module's counters


@pytest.mark.parametrize("source", ["sdt-1-64-digits", "ssa"])
def test_synops_spikes_and_updates_equal_the_energy_counters(source):
    if source in ARCHS:
        g, q, x, steps = quantized_model(source)
    else:
        g, xs = build(source)
        q, _ = quantize_loihi(g, xs[:64], steps=T)
        x, steps = xs[64:67], T
    res = simulate_mesh(q, g, x, steps=steps, hardware="loihi2-assumed")
    gold = run_golden(q, x, steps=steps, record=needed_traces(q))
    counts = count_graph(q, gold.traces, steps)
    compared = 0
    for name, layer in res.layers.items():
        row = next((r for r in counts.rows if r.name == name), None)
        if row is not None and row.kind == "neuron":
            assert layer["events"]["spikes_out"] == row.total("spikes"), name
            assert layer["events"]["neuron_updates"] == row.total("updates"), name
            compared += 1
        for node, syn in layer.get("synops_by_node", {}).items():
            r = next((r for r in counts.rows if r.name == node), None)
            if r is not None and r.kind in ("synapse", "reduction"):
                assert syn == r.total("synops" if r.kind == "synapse" else "accumulates"), (name, node)
                compared += 1
    assert compared >= 6


# ---------------------------------------------------------------- hardware files, placement, errors


def test_loihi2_refuses_with_the_null_key_named():
    g, x = build("mlp")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    with pytest.raises(HardwareError) as e:
        simulate_mesh(q, g, x[64:66], steps=T, hardware="loihi2")
    msg = str(e.value)
    assert isinstance(e.value, StepDeployError) and "\n" not in msg
    assert "is null" in msg and "loihi2.yaml" in msg and "extends: loihi2" in msg


def test_loihi2_assumed_fills_every_null_with_loihi1_figures_marked_as_assumptions():
    a, l1 = load_hardware("loihi2-assumed"), load_hardware("loihi1")
    assert a.cores_per_chip == load_hardware("loihi2").cores_per_chip
    for k, ev in a.events.items():
        assert (ev.energy_pj, ev.latency_ns) == (l1.events[k].energy_pj, l1.events[k].latency_ns), k
        assert ev.confidence == "to-verify" and "Loihi 2" in ev.note and "Loihi 1" in ev.note, k
    assert a.event("embedded_op").confidence == "to-verify" and "assumption" in a.event("embedded_op").source
    assert dict(a.barrier_sync.latency_ns) == dict(l1.barrier_sync.latency_ns)
    for k in ("mesh_width", "mesh_height", "cores_per_tile"):
        assert a.geometry[k].value == l1.geometry[k].value and a.geometry[k].confidence == "to-verify"


def test_placement_is_consecutive_in_graph_order_and_spills_to_more_chips(tmp_path):
    g, q, x, steps = quantized_model("sdt-1-64-digits")
    hwp = tmp_path / "small_chip.yaml"
    geo = {"mesh_width": ("tiles", 2), "mesh_height": ("tiles", 1), "cores_per_tile": ("cores", 2),
           "cores_per_chip": ("cores", 4)}
    hwp.write_text("name: smallchip\nextends: loihi1\ngeometry:\n" + "".join(
        f"  {k}: {{value: {v}, unit: {u}, source: test, confidence: to-verify}}\n" for k, (u, v) in geo.items()))
    res = simulate_mesh(q, g, x[:, :1], steps=steps, hardware=str(hwp), target="loihi1")
    mapping = map_to_cores(g, "loihi1")
    cores = [u for u in res.units if u.kind == "core"]
    assert [u.layer for u in cores] == [L.name for L in mapping.layers for _ in range(L.cores)]
    assert [u.index for u in cores] == list(range(mapping.total_cores))
    assert res.hardware["chips"] == math.ceil(mapping.total_cores / 4) > 1
    assert res.hardware["sync_ns"] == load_hardware("loihi1").sync_latency_ns(res.hardware["chips"])
    assert_same_spikes(q, res, x[:, :1], steps)


def test_runs_are_deterministic_and_energy_adds_up():
    g, x = build("ssa")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    a = simulate_mesh(q, g, x[64:68], steps=T)
    b = simulate_mesh(q, g, x[64:68], steps=T)
    assert a.to_dict() == b.to_dict() and a.unit_step_csv() == b.unit_step_csv()
    assert np.isclose(a.total_energy_pj, sum(sum(L["energy_pj"].values()) for L in a.layers.values()))
    assert a.traffic_bits["dram"] == 0 and a.traffic_bits["sram"] > a.traffic_bits["registers"] > 0
    emb = [u for u in a.units if u.kind == "embedded"]
    assert {u.layer for u in emb} == {"qk", "attn_v"} and a.layers["qk"]["events"]["embedded_ops"] > 0


def test_recording_a_value_that_never_leaves_the_cores_is_refused():
    g, x = build("mlp")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    res = simulate_mesh(q, g, x[64:66], steps=T, record=["lif2"])
    assert set(res.spikes) == {"lif2"}
    with pytest.raises(HardwareError, match="'fc2' is computed inside the cores of layer 'lif2'"):
        simulate_mesh(q, g, x[64:66], steps=T, record=["fc2"])


def test_a_file_without_embedded_costs_is_refused_for_attention_naming_the_event(tmp_path):
    g, x = build("ssa")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    base = load_hardware("loihi1").path
    text = open(base).read()
    cut = text.index("  embedded_op:")
    p = tmp_path / "no_embedded.yaml"
    p.write_text(text[:cut] + text[text.index("barrier_sync:"):])
    with pytest.raises(HardwareError, match="no event 'embedded_op'.*add 'embedded_op' under 'events'"):
        simulate_mesh(q, g, x[64:66], steps=T, hardware=str(p))
    g2, x2 = build("mlp")  # no products of live tensors: the file is enough
    q2, _ = quantize_loihi(g2, x2[:64], steps=T)
    assert simulate_mesh(q2, g2, x2[64:66], steps=T, hardware=str(p), progress=True).samples == 2
