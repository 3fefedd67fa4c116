"""The cycle-level FPGA dataflow simulator (``simulators/cycle/fpga_dataflow.py``), its schedules and
the design-space exploration: spikes equal to the golden model's for the three architectures, the
'step' schedule's cycles equal to ``fpga.estimate``'s (one model), the analytic bound, a hand-worked
toy, what time-step batching changes, the counters against the energy module's, and the Pareto front."""
import hashlib

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.energy.counters import count_graph, needed_traces
from step_deploy.errors import StepDeployError, UsageError
from step_deploy.fixedpoint import fpga as fx
from step_deploy.fpga.estimate import PIPELINE_DEPTH, auto_parallelism, estimate
from step_deploy.fpga.resource_model import step_cycles
from step_deploy.simulators.cycle import explore, plan_design, simulate_fpga
from step_deploy.simulators.cycle.fpga_schedule import load_board
from step_deploy.simulators.golden import run_golden, spiking_nodes


T = 4
TINY = ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits"]


@pytest.fixture(scope="module")
def tiny(fpga_tiny):
    return fpga_tiny


def images(n=2, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def mismatches(sim, gold) -> dict:
    """Per spiking node: the number of (step, sample, neuron) values that differ."""
    return {k: int((sim.spikes[k] != v).sum()) for k, v in gold.traces.items()}


def toy_graph(c_out=4, tokens=1, n_in=4, threshold=1):
    """Input spikes (n_in) -> FpgaLinear n_in -> c_out (weight 2 on the diagonal) -> LIF -> Output."""
    w = np.zeros((c_out, n_in), np.int64)
    np.fill_diagonal(w, 2)
    shape = (n_in,) if tokens == 1 else (tokens, n_in)
    return ir.Graph([ir.Input("x", shape=shape, kind="spikes"),
                     fx.FpgaLinear("fc", ("x",), weight=w, shift=np.zeros(c_out, np.int64), acc_bits=16, out_bits=16),
                     fx.FpgaLIF("lif", ("fc",), threshold=threshold, membrane_bits=16), ir.Output("y", ("lif",))],
                    {ir.FORMAT_KEY: fx.FORMAT_NAME, "time_steps": 3})


# --------------------------------------------------------------------------- spikes


@pytest.mark.parametrize("arch", TINY)
@pytest.mark.parametrize("schedule", ["step", "batched"])
def test_spikes_equal_the_golden_model_at_every_spiking_node_and_step(tiny, arch, schedule):
    q = tiny(arch)
    x = images()
    gold = run_golden(q, x, steps=T)
    res = simulate_fpga(q, x, steps=T, schedule=schedule, parallelism=4)
    assert set(res.spikes) == set(spiking_nodes(q)) == set(gold.traces)
    bad = {k: m for k, m in mismatches(res, gold).items() if m}
    assert not bad, f"{arch} ({schedule}): spike mismatches per node {bad}"
    for name, v in gold.outputs.items():
        assert torch.equal(res.outputs[name], v), f"{arch}: output {name}: {int((res.outputs[name] != v).sum())} differ"
    assert sum(int(v.sum()) for v in res.spikes.values()) > 0  # the comparison saw spikes


def test_the_simulator_computes_its_own_spikes_from_its_inputs(tiny):
    """Other inputs give other spikes, equal to the golden model's on those inputs (nothing cached)."""
    q = tiny("sdt-1-64-digits")
    a, b = simulate_fpga(q, images(seed=1), steps=T), simulate_fpga(q, images(seed=2), steps=T)
    gold_b = run_golden(q, images(seed=2), steps=T)
    assert any(not torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert sum(mismatches(b, gold_b).values()) == 0


# --------------------------------------------------------------------------- one model with the estimate


@pytest.mark.parametrize("arch", TINY)
def test_step_schedule_cycles_equal_the_fpga_estimate(tiny, arch):
    q = tiny(arch)
    for par in (None, 4, auto_parallelism(q, "zcu104", 200.0, steps=T)):
        est = estimate(q, "zcu104", 200.0, par, steps=T)
        res = simulate_fpga(q, images(1), steps=T, parallelism=par)
        assert res.hardware["latency_cycles"] == est.cycles_per_sample, par
        assert res.latency_ns[0] == pytest.approx(est.latency_ms * 1e6, rel=1e-12)
        for u, unit in enumerate(res.units):  # every kernel, every step: the estimate's per-layer cycles
            want = step_cycles(est.layer(unit.name)) * 1e3 / 200.0
            assert np.allclose(res.busy_ns[u], want), unit.name
        assert [u.name for u in res.units] == [l.node for l in est.layers]
        assert res.hardware["resources"] == est.totals()
        assert res.throughput_sps == pytest.approx(1e9 / res.latency_ns[0])  # no overlap between samples


def test_cycles_do_not_depend_on_the_spikes_the_design_is_dense(tiny):
    q = tiny("spikformer-2-64-digits")
    zero = simulate_fpga(q, torch.zeros(1, 1, 8, 8), steps=T, parallelism=2)
    busy = simulate_fpga(q, images(1), steps=T, parallelism=2)
    assert zero.events["synops"].sum() < busy.events["synops"].sum()
    assert np.array_equal(zero.events["cycles"], busy.events["cycles"])
    assert zero.latency_ns[0] == busy.latency_ns[0]


# --------------------------------------------------------------------------- analytic bound


@pytest.mark.parametrize("arch", TINY)
def test_kernel_time_is_at_least_work_over_its_lanes(tiny, arch):
    """Per synapse and neuron kernel: loop cycles × P >= its work (dense MACs / neuron updates, the
    energy module's counts), at every parallelism."""
    q = tiny(arch)
    x = images(1)
    gold = run_golden(q, x, steps=T, record=needed_traces(q))
    counts = count_graph(q, gold.traces, T)
    for p in (1, 3, 8, 64):
        plan = plan_design(q, "zcu104", parallelism=p, steps=T)
        checked = 0
        for k in plan.kernels:
            if k.node not in {r.name for r in counts.rows}:
                continue
            row = counts.row(k.node)
            work = {"synapse": "dense_macs", "neuron": "updates"}.get(row.kind)
            if work is None:
                continue
            per_step = int(row.counters[work][0, 0])
            assert k.loop_cycles * k.parallelism >= per_step, (k.node, p)
            assert k.loop_cycles >= -(-per_step // k.parallelism)
            checked += 1
        assert checked >= 4


def test_dense_balanced_toy_meets_the_bound_exactly():
    """C_out divisible by P, every lane busy every cycle: cycles = work / P exactly (+ pipeline fill)."""
    g = toy_graph(c_out=8, tokens=4, n_in=8)
    x = torch.ones(3, 1, 4, 8, dtype=torch.int64)
    res = simulate_fpga(g, x, parallelism=4)
    fc, lif = res.hardware["kernels"]
    assert fc["loop_cycles"] == 4 * 8 * 8 // 4  # 4 tokens x 8 outputs x 8 fan-in MACs on 4 lanes
    assert lif["loop_cycles"] == 4 * 8 // 4  # 32 neurons on 4 lanes
    assert res.hardware["latency_cycles"] == 3 * (64 + PIPELINE_DEPTH + 8 + PIPELINE_DEPTH)


# --------------------------------------------------------------------------- hand-worked toy


def test_hand_worked_linear_lif_toy_step_and_batched():
    """Linear 4 -> 4 (diagonal weight 2) + LIF (threshold 1, H = (M + a) >> 1), P = 2, T = 3, 200 MHz."""
    g = toy_graph()
    x = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 0, 1]], dtype=torch.int64).unsqueeze(1)  # (T, B=1, 4)
    res = simulate_fpga(g, x, parallelism=2)
    # a = 2x; H = (0 + 2x) >> 1 = x: spikes where x = 1, membrane reset to 0 each time
    assert res.spikes["lif"][:, 0].tolist() == x[:, 0].tolist()
    # Linear: ceil(4 / 2) x 1 position x 4 fan-in = 8 cycles + 8 fill = 16; LIF: ceil(4 / 2) = 2 + 8 = 10
    assert res.events["cycles"][:, 0].tolist() == [16, 10]
    assert res.hardware["latency_cycles"] == 3 * 26 == 78
    assert res.latency_ns[0] == pytest.approx(78 * 5.0)  # 5 ns per cycle at 200 MHz
    assert res.step_ns[0].tolist() == pytest.approx([130.0] * 3)
    assert res.stall_ns[:, 0].tolist() == pytest.approx([50.0, 80.0])  # 26 - 16 and 26 - 10 cycles
    assert res.throughput_sps == pytest.approx(1e9 / 390)
    # events: synops = non-zero inputs x fan-out 4 (the counters' convention); spikes; updates
    assert res.events["synops"][0].tolist() == [12, 12, 4]
    assert res.events["spikes_out"][1].tolist() == [3, 3, 1]
    assert res.events["neuron_updates"][1].tolist() == [4, 4, 4]
    # traffic per step: Linear reads 16 weights x 8 b, 8 inputs x 1 b, writes 4 x 16 b; acc register 16 x 16 b
    assert res.events["weight_bits_read"][0].tolist() == [128] * 3
    assert res.events["input_bits_read"][:, 0].tolist() == [8, 64]  # the LIF reads 4 x 16 b
    assert res.events["buffer_bits_written"][:, 0].tolist() == [64, 4]
    assert res.events["state_bits_read"][1, 0] == res.events["state_bits_written"][1, 0] == 64
    per_step_sram = (128 + 8 + 64) + (64 + 4 + 128)
    assert res.traffic_bits == {"registers": 3 * (256 + 64), "sram": 3 * per_step_sram, "dram": 3 * 4 + 4}

    b = simulate_fpga(g, x, parallelism=2, schedule="batched")
    assert b.spikes["lif"].tolist() == res.spikes["lif"].tolist()
    # each kernel runs its 3 steps back to back, one pipeline fill: 3 x 8 + 8 = 32 and 3 x 2 + 8 = 14
    assert b.events["cycles"].tolist() == [[16, 8, 8], [10, 2, 2]]
    assert b.hardware["latency_cycles"] == 46 and b.hardware["interval_cycles"] == 32
    assert b.throughput_sps == pytest.approx(200e6 / 32)
    # weights fetched once for the 3 steps; membranes in registers (4 x 16 b read + written per step)
    assert b.events["weight_bits_read"][0].tolist() == [128, 0, 0]
    assert b.traffic_bits == {"registers": 3 * (256 + 64 + 128), "sram": 128 + 3 * (8 + 64 + 64 + 4), "dram": 16}


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("arch", TINY)
def test_batching_removes_membrane_storage_and_changes_latency_and_throughput(tiny, arch):
    q = tiny(arch)
    step = plan_design(q, "zcu104", parallelism=4, steps=T)
    batched = plan_design(q, "zcu104", parallelism=4, schedule="batched", steps=T)
    ms, mb = step.memory_bits(), batched.memory_bits()
    lifs = [n for n in q.topo_order() if isinstance(n, (fx.FpgaLIF, fx.FpgaTemporalSum))]
    assert ms["state"] == sum(k.layer.state_bits for k in step.kernels) > 0 and ms["registers"] == 0
    assert mb["state"] == 0
    widths = {n.name: int(n.membrane_bits if isinstance(n, fx.FpgaLIF) else n.bits) for n in lifs}
    assert mb["registers"] == sum(k.parallelism * widths[k.node] for k in batched.kernels if k.node in widths)
    readout = sum(k.layer.state_bits for k in step.kernels if k.op == "FpgaTemporalSum")
    assert mb["buffers"] == 2 * T * ms["buffers"] + 2 * readout  # T steps, ping-pong; the readout's one step
    K = len(step.kernels)
    assert batched.latency_cycles == step.latency_cycles - (T - 1) * PIPELINE_DEPTH * K
    assert batched.interval_cycles == max(T * k.loop_cycles + PIPELINE_DEPTH for k in batched.kernels)
    assert step.interval_cycles == step.latency_cycles
    assert batched.throughput_sps > step.throughput_sps
    res = simulate_fpga(q, images(1), steps=T, parallelism=4, schedule="batched")
    assert res.hardware["overlap_between_samples"] and res.hardware["memory_bits"]["state"] == 0
    assert "sram_state" not in res.energy_pj


def test_a_design_whose_memories_do_not_fit_reads_its_weights_from_dram(tiny):
    q = tiny("spikformer-2-64-digits")
    plan = plan_design(q, "pynq-z2", parallelism=64, schedule="batched", steps=T)
    spilled = [k for k in plan.kernels if k.spilled]
    assert spilled and plan.memory_bits()["weights_dram"] > 0
    res = simulate_fpga(q, images(1), part="pynq-z2", parallelism=64, schedule="batched", steps=T)
    assert res.traffic_bits["dram"] > 0 and res.energy_pj["dram_weights"] > 0
    assert any("DRAM" in n for n in res.notes)


def test_user_mistakes_are_one_line_errors_naming_the_option(tiny):
    q = tiny("sdt-1-64-digits")
    with pytest.raises(UsageError, match="schedule 'tick'.*step, batched"):
        simulate_fpga(q, images(1), schedule="tick")
    with pytest.raises(UsageError, match="record names 'nope'"):
        simulate_fpga(q, images(1), record=["nope"])
    with pytest.raises(StepDeployError, match="--parallelism names 'nope'"):
        simulate_fpga(q, images(1), parallelism={"nope": 2})
    loihi_like = ir.Graph([ir.Input("x", shape=(4,), kind="spikes"), ir.Output("y", ("x",))],
                          {ir.FORMAT_KEY: "loihi-fixed_pt", "time_steps": 2})
    with pytest.raises(StepDeployError, match="quantize-fpga"):
        simulate_fpga(loihi_like, torch.zeros(2, 1, 4))


def test_board_facts_carry_sources_and_a_bad_file_names_what_is_wrong(tmp_path):
    zcu = load_board("zcu104")
    assert zcu.dram_bandwidth_gbps == 19.2 and (zcu.bram36_ports, zcu.bram36_port_bits) == (2, 36)
    assert all(v.split(":")[0] in ("primary", "secondary", "to-verify") for v in zcu.sources.values())
    assert "UG573" in zcu.sources["fpga.bram36_ports"]
    assert zcu.dram_bits_per_cycle(200.0) == pytest.approx(768.0)  # 19.2 GB/s at 200 MHz
    assert "assumption" in load_board("my-board").sources["fpga.dram_bandwidth_gbps"]  # the default entry
    bad = tmp_path / "boards.yaml"
    bad.write_text("memory_blocks: {}\nboards:\n  zcu104:\n    dram_bandwidth_gbps: {value: -1, source: x, "
                   "confidence: primary}\n")
    with pytest.raises(UsageError, match=r"dram_bandwidth_gbps.*positive.*bram36_ports.*needs value, source"):
        load_board("zcu104", bad)


def test_port_pressure_names_a_consumer_with_more_lanes_than_its_producer_can_feed():
    g = toy_graph(c_out=8, tokens=4, n_in=8)
    x = torch.ones(3, 1, 4, 8, dtype=torch.int64)
    res = simulate_fpga(g, x, parallelism={"fc": 1, "lif": 16})  # 16 lanes read 16-bit values from 1 bank
    assert res.hardware["port_pressure"] == [{"kernel": "lif", "reads_from": "fc", "reads_per_bank_per_cycle": 8,
                                              "ports": 2}]
    assert any("port_pressure" in n for n in res.notes)
    assert simulate_fpga(g, x, parallelism={"fc": 8, "lif": 16}).hardware["port_pressure"] == []


# --------------------------------------------------------------------------- counters and energy


@pytest.mark.parametrize("schedule", ["step", "batched"])
def test_counters_equal_the_energy_modules_on_the_golden_traces(tiny, schedule):
    q = tiny("qkformer-2-64-digits")
    x = images(2)
    res = simulate_fpga(q, x, steps=T, schedule=schedule)
    counts = count_graph(q, run_golden(q, x, steps=T, record=needed_traces(q)).traces, T)
    index = {u.name: i for i, u in enumerate(res.units)}
    checked = 0
    for row in counts.rows:
        pairs = {"synapse": [("synops", "synops")], "neuron": [("spikes_out", "spikes"), ("neuron_updates", "updates")],
                 "product": [("accumulates", "accumulates")]}.get(row.kind, [])
        for event, counter in pairs:
            assert res.events[event][index[row.name]].tolist() == row.per_step(counter).tolist(), (row.name, event)
            assert res.layers[row.name]["events"][event] == row.total(counter)
            checked += 1
    assert checked > 20
    assert res.total_energy_pj > 0 and set(res.traffic_bits) == {"registers", "sram", "dram"}
    assert any(k.startswith("energy.horowitz.sram_read_64bit") for k in res.sources)
    d = res.to_dict()
    assert d["hardware"]["schedule"] == schedule and d["energy_pj"]["per_sample"] > 0


# --------------------------------------------------------------------------- exploration


def test_explore_returns_a_front_no_point_dominates_and_marks_what_does_not_fit(tiny, tmp_path):
    q = tiny("sdt-1-64-digits")
    res = explore(q, "zcu104", inputs=images(1), steps=T, ladder=(1, 8, 64), budgets=(0.5,))
    assert {p.schedule for p in res.points} == {"step", "batched"}
    assert res.front and all(res.points[i].fits for i in res.front)
    fitting = [p for p in res.points if p.fits]
    for i in res.front:
        assert not any(p.dominates(res.points[i]) for p in fitting), res.points[i].label
    for p in fitting:  # every fitting point off the front is dominated by a front point
        if p not in res.front_points():
            assert any(f.dominates(p) for f in res.front_points()), p.label
    assert any(not p.fits for p in res.points)  # batched at P=64 needs more BRAM than the part has: kept, marked
    d = res.to_dict()
    assert len(d["points"]) == len(res.points) and d["front"] == res.front
    assert "**front**" in res.markdown()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    res.plot(a)
    res.plot(b)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


# --------------------------------------------------------------------------- trained models


@pytest.mark.slow
@pytest.mark.parametrize("arch", TINY)
def test_trained_digits_models_spikes_equal_golden(fpga_digits, arch):
    from step_deploy.data import load_dataset
    from step_deploy.frontend.capture import encoded_input

    model, q, _, _ = fpga_digits(arch)
    x = encoded_input(model, load_dataset("digits", "test").tensors[0][:8])
    gold = run_golden(q, x, steps=model.step)
    for schedule in ("step", "batched"):
        res = simulate_fpga(q, x, steps=model.step, schedule=schedule, parallelism="auto")
        bad = {k: m for k, m in mismatches(res, gold).items() if m}
        assert not bad, f"{arch} ({schedule}): spike mismatches per node {bad}"
