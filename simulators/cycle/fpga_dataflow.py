"""The cycle-level simulator of the generated FPGA design (issue 10, FPGA half).

    res = simulate_fpga(qgraph, images, part="zcu104", parallelism="auto", schedule="step")
    res.spikes["block.0.mlp.fc1_lif"], res.mean_latency_ns, res.throughput_sps, res.energy_pj

Execution. The kernels of ``fpga.hls_writer``'s design (the compute nodes in graph order; the input
quantizer runs on the host, Reshape/Flatten are views) run in the schedule's order: ``'step'``
step-major (the generated design; block-major when the graph holds a window op, ``TemporalBlockSum``:
each kernel over the block's steps, the window op once per block), ``'batched'`` kernel-major (each
kernel all T steps). A kernel
reads the streams its producers delivered (their output buffers) and computes its outputs with the
format's integer op functions (``simulators.golden_fpga`` and the core integer ops: one reference
function per op); it keeps its own state. It never reads the golden model's outputs; its spikes are
tested equal to ``run_golden``'s at every layer and step, for every ``FpgaLIF`` mode (hard or soft
reset, STEP's ILIF integer spikes, NILIF, ternary). An integer spike is one value of its stream (a 2 is one
``ceil(log2(D + 1))``-bit value, not two events), and the traffic counts its bits (``tensor_types``).

Time (``fpga_schedule``): per kernel and step ``busy`` from the FPGA target's own per-layer model
(``fpga.resource_model.step_cycles``: the II = 1 loop plus the pipeline fill), so the ``'step'``
schedule's cycles equal ``fpga.estimate``'s. The kernels' loops are dense (every input value is
read, zero or not): **the design's cycles do not depend on the spikes**. ``stall[k, t] = step_ns[t] -
busy[k, t]``: the time kernel ``k`` waits within step ``t`` of a sample (for its producers, or for the
step's other kernels); ``step_ns[t] = Σ_k busy[k, t]``, ``latency = Σ_t step_ns[t]``. Throughput:
``'step'`` has no overlap between samples (1 / latency), ``'batched'`` runs its kernels concurrently
on consecutive samples (1 / slowest kernel).

Events per kernel and step (``SimResult.events``, summed over samples): ``cycles``; ``synops``,
``spikes_out``, ``neuron_updates``, ``accumulates`` (the energy module's counters,
``energy.counters.count_graph``, on the streams this simulator delivered); the traffic counters of
``fpga_memory.TRAFFIC``. Memory traffic per level and energy: ``fpga_memory``.
"""
from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from step_deploy import ir
from step_deploy.energy.constants import BUNDLED, Constants, load_constants
from step_deploy.energy.counters import count_graph, needed_traces
from step_deploy.energy.models import price
from step_deploy.errors import UsageError
from step_deploy.fixedpoint import fpga as fx
from step_deploy.fixedpoint.format import format_of
from step_deploy.fpga.parts import FpgaPart
from step_deploy.fpga.tensor_types import tensor_types
from step_deploy.simulators.golden import integer_inputs, integer_ops, spiking_nodes
from step_deploy.simulators.reference import as_time_major

from .fpga_memory import (COMPUTE_COMPONENTS, TRAFFIC, SramPrices, kernel_traffic, level_bits, memory_energy,
                          port_bits, storage_source)
from .fpga_schedule import BOARDS_FILE, DesignPlan, plan_design
from .result import LEVELS, SimResult, Unit

#: counters taken from the energy module's rows, per kind of row: event name -> counter
COUNTED_EVENTS = {"synapse": {"synops": "synops"}, "neuron": {"spikes_out": "spikes", "neuron_updates": "updates"},
                  "product": {"accumulates": "accumulates"}, "reduction": {"accumulates": "accumulates"}}


def window_block(qgraph: ir.Graph) -> int:
    """The block of steps the design runs together: the common block of its window ops
    (``TemporalBlockSum``), 1 when it has none (step by step)."""
    blocks = [int(n.block) for n in qgraph.nodes.values() if n.op == "TemporalBlockSum"]
    return math.lcm(*blocks) if blocks else 1


def execute(qgraph: ir.Graph, inputs, steps: Optional[int], schedule: str,
            keep: Iterable[str], progress: bool = False) -> tuple[dict, dict, int]:
    """Run the design's kernels in ``schedule`` order on ``inputs``; ``(outputs, traces, T)`` with
    ``traces[name]`` ``(T, B, ...)`` int64 for the nodes in ``keep``. A window op (``TemporalBlockSum``)
    runs once per block on the block's steps of its input; with one in the graph the ``'step'``
    schedule is block-major (the generated design: each kernel over a block's steps in turn)."""
    fmt = format_of(qgraph)
    ops = integer_ops(fmt)
    order = qgraph.topo_order()
    feeds = {k: as_time_major(x, qgraph[k], steps) for k, x in integer_inputs(qgraph, inputs).items()}
    T = next(iter(feeds.values())).shape[0]
    block = window_block(qgraph)
    if T % block:
        w = next(n for n in order if n.op == "TemporalBlockSum" and T % int(n.block))
        raise UsageError(f"node {w.name!r} (TemporalBlockSum) sums blocks of {w.block} steps but the inputs have "
                         f"T={T} steps: run a T that is a multiple of {block}")
    keep = set(keep) | {o.name for o in qgraph.outputs}
    streams: dict[str, list] = {n.name: [None] * T for n in order}  # what each node delivered, per step
    state: dict[str, dict] = {n.name: {} for n in order}

    def fire(n, t):
        xs = [feeds[n.name][t]] if n.op == "Input" else [streams[i][t] for i in n.inputs]
        streams[n.name][t] = ops[n.op](n, xs, state[n.name], t)

    def fire_steps(n, t0, length):
        """Node ``n`` over steps ``t0 .. t0 + length - 1``: a window op in one call on the stacked steps."""
        if n.op != "TemporalBlockSum":
            for t in range(t0, t0 + length):
                fire(n, t)
            return
        x = torch.stack(streams[n.inputs[0]][t0:t0 + length])
        y = ops[n.op](n, [x], state[n.name], None)
        for t in range(length):
            streams[n.name][t0 + t] = y[t]

    bar = _bar(progress, T if schedule == "step" else len(order), schedule)
    with torch.no_grad():
        if schedule == "step":  # the generated design: steps (blocks of a window op's steps) outermost
            for t0 in range(0, T, block):
                for n in order:
                    fire_steps(n, t0, block)
                bar.update(block)
        else:  # time-step batching: each kernel runs its T steps before the next kernel
            for n in order:
                fire_steps(n, 0, T)
                bar.update(1)
    bar.close()
    traces = {k: torch.stack(v) for k, v in streams.items() if k in keep}
    outputs = {o.name: traces[o.name] for o in qgraph.outputs}
    return outputs, traces, T


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(progress: bool, total: int, schedule: str):
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=f"fpga {schedule}", unit="step" if schedule == "step" else "kernel", leave=False)


# ---------------------------------------------------------------------------------------------
# Per-call fixed costs, kept for the last few designs: repeated runs of one design (benchmarks,
# sweeps over inputs) neither re-plan it, nor re-read the energy constants, nor redo the parts of
# its accounting that do not depend on the spikes. Each cache holds the objects its key names by
# identity, and a graph's key includes the identity of every node (nodes are frozen: an edited
# graph has new node objects), so a key cannot outlive or mistake what it stands for.

_PLANS: "OrderedDict[tuple, tuple]" = OrderedDict()
_STATIC: "OrderedDict[tuple, tuple]" = OrderedDict()
_CONSTANTS: dict = {}
_CACHE_SIZE = 8


def _graph_key(g: ir.Graph) -> tuple:
    return (id(g), tuple((k, id(n)) for k, n in g.nodes.items()))


def _arg_key(x) -> tuple:
    """A part / parallelism argument as a cache key: plain values as they are, a dict as its sorted
    items, a file name with its modification time, any other object by identity."""
    if x is None or isinstance(x, (bool, int, float)):
        return (x,)
    if isinstance(x, str):
        p = Path(x)
        return (x, p.stat().st_mtime_ns if p.is_file() else None)
    if isinstance(x, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in x.items()):
        return ("dict",) + tuple(sorted(x.items()))
    return ("id", id(x))


def _remember(cache: OrderedDict, key: tuple, held: tuple, value):
    cache[key] = (held, value)  # held: the objects whose ids are in the key stay alive
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def _cached_plan(qgraph: ir.Graph, part, **kw) -> DesignPlan:
    """``plan_design(qgraph, part, **kw)``, kept for the last few designs."""
    key = (_graph_key(qgraph), _arg_key(part), _arg_key(kw["parallelism"]),
           kw["clock_mhz"], kw["schedule"], kw["steps"], _arg_key(str(BOARDS_FILE)))
    hit = _PLANS.get(key)
    if hit is not None:
        _PLANS.move_to_end(key)
        return hit[1]
    return _remember(_PLANS, key, (qgraph, part, kw["parallelism"]), plan_design(qgraph, part, **kw))


def bundled_constants() -> Constants:
    """A fresh ``load_constants()`` (its own ``used`` record) from the bundled file, parsed once per
    modification of the file."""
    stamp = BUNDLED.stat().st_mtime_ns
    if _CONSTANTS.get("stamp") != stamp:
        c = load_constants()
        _CONSTANTS.update(stamp=stamp, path=c.path, blob=pickle.dumps(c.data))
    return Constants(pickle.loads(_CONSTANTS["blob"]), _CONSTANTS["path"])


def simulate_fpga(qgraph: ir.Graph, inputs, *, part: Union[str, FpgaPart] = "zcu104", clock_mhz: float = 200.0,
                  parallelism=None, schedule: str = "step", steps: Optional[int] = None,
                  record: Union[bool, Iterable[str]] = True, progress: bool = False) -> SimResult:
    """Simulate the generated design of ``qgraph`` (an ``'fpga-int'`` graph) on ``inputs`` (as
    ``run_golden`` takes them). ``parallelism`` as ``fpga.estimate`` takes it (None, an int,
    ``{node: P}``, ``'auto'``); ``schedule`` ``'step'`` or ``'batched'``; ``record`` True (every
    spiking node) or node names. See the module docstring for the semantics."""
    plan = _cached_plan(qgraph, part, clock_mhz=clock_mhz, parallelism=parallelism, schedule=schedule, steps=steps)
    names = spiking_nodes(qgraph) if record is True else list(record or ())
    missing = [k for k in names if k not in qgraph.nodes]
    if missing:
        raise UsageError(f"record names {missing[0]!r}, which is not a node of the graph; record True (every "
                         "spiking node) or node names")
    needed = needed_traces(qgraph)
    outputs, traces, T = execute(qgraph, inputs, steps or plan.steps, schedule, set(names) | set(needed), progress)
    if T != plan.steps:  # the inputs carry their own time axis
        plan = _cached_plan(qgraph, part, clock_mhz=clock_mhz, parallelism=parallelism, schedule=schedule, steps=T)
    return account(qgraph, plan, traces, outputs, T, names)


@dataclass(frozen=True)
class _Static:
    """What ``account`` needs of a design that does not depend on the spikes, per sample: busy
    cycles ``(K, T)``, traffic counters per kernel ``{counter: (K, T)}``, level bits per kernel and
    step, memory energy per kernel and step (pJ), port bits, the summary and notes, and the energy
    constants these read (``used``)."""

    busy: np.ndarray
    traffic: dict
    levels: list
    memory_pj: list
    ports: dict
    summary_blob: bytes
    notes: tuple
    used: dict


def _static(qgraph: ir.Graph, plan: DesignPlan, T: int, c: Constants) -> _Static:
    K = len(plan.kernels)
    prices = SramPrices(c)
    tt = tensor_types(qgraph)
    shapes = qgraph.infer_shapes()
    busy = np.array([[plan.busy_cycles(k, t) for t in range(T)] for k in range(K)], np.int64).reshape(K, T)
    traffic_ = {name: np.zeros((K, T), np.int64) for name in TRAFFIC}
    levels, memory_pj = [], []
    for k in range(K):
        per_step = kernel_traffic(qgraph, plan, k, tt, shapes)
        lv_k, pj_k = [], []
        for t in range(T):
            lv = level_bits(plan, k, per_step, t)
            for name in TRAFFIC:
                v = per_step[name]
                if name == "weight_bits_read":
                    v = lv["weights"]
                elif name == "dram_bits":
                    v = lv["dram"]
                traffic_[name][k, t] = v
            lv_k.append(lv)
            pj_k.append(tuple(memory_energy(plan, k, per_step, t, prices, tt, qgraph).items()))
        levels.append(lv_k)
        memory_pj.append(pj_k)
    ports = port_bits(qgraph, tt, T)
    prices.dram_bit()
    summary = hardware_summary(plan, qgraph)
    return _Static(busy, traffic_, levels, memory_pj, ports, pickle.dumps(summary),
                   tuple(notes(plan, len(summary["port_pressure"]))), dict(c.used))


def _cached_static(qgraph: ir.Graph, plan: DesignPlan, T: int, constants: Optional[Constants]) -> _Static:
    """``_static`` of the design; kept for the last few designs when the constants are the bundled
    ones (a caller's own ``constants`` are read afresh, so their ``used`` record is complete)."""
    if constants is not None:
        return _static(qgraph, plan, T, constants)
    key = (_graph_key(qgraph), id(plan), T, _CONSTANTS.get("stamp"))
    hit = _STATIC.get(key)
    if hit is not None:
        _STATIC.move_to_end(key)
        return hit[1]
    return _remember(_STATIC, key, (qgraph, plan), _static(qgraph, plan, T, bundled_constants()))


def account(qgraph: ir.Graph, plan: DesignPlan, traces: dict, outputs: dict, steps: int,
            record: Iterable[str] = (), constants=None, counts=None) -> SimResult:
    """Time, events, traffic and energy of ``plan`` for the streams ``traces`` (one execution serves
    every plan of the same graph: the spikes do not depend on the schedule or the parallelism;
    ``counts``, the energy module's counts of ``traces``, may be passed in when already made)."""
    T = steps
    if T != plan.steps:
        raise ValueError(f"the streams have {T} steps, the plan {plan.steps}: plan the design with steps={T}")
    B = int(next(iter(traces.values())).shape[1])
    K = len(plan.kernels)
    c = constants or bundled_constants()
    counts = counts if counts is not None else count_graph(qgraph, traces, T)
    compute = {l.name: l.components for l in price(counts, "horowitz", qgraph, c).layers}
    st = _cached_static(qgraph, plan, T, constants)
    for k, v in st.used.items():  # the constants the design's memory prices read, as if read now
        c.used.setdefault(k, v)
    prices = SramPrices(c)

    busy = st.busy
    step_cycles = busy.sum(axis=0)
    events = {"cycles": busy * B}
    for name in ("synops", "spikes_out", "neuron_updates", "accumulates"):
        events[name] = np.zeros((K, T), np.int64)
    for name in TRAFFIC:
        events[name] = st.traffic[name] * B
    counted = {r.name for r in counts.rows}
    layers, energy, traffic = {}, {}, dict.fromkeys(LEVELS, 0)
    for k, kp in enumerate(plan.kernels):
        lay_levels = dict.fromkeys(LEVELS, 0)
        lay_energy = {comp: float(v) for comp, v in compute.get(kp.node, {}).items() if comp in COMPUTE_COMPONENTS}
        for t in range(T):
            lv = st.levels[k][t]
            for lvl in LEVELS:
                lay_levels[lvl] += lv[lvl] * B
            for comp, pj in st.memory_pj[k][t]:
                lay_energy[comp] = lay_energy.get(comp, 0.0) + pj * B
        if kp.node in counted:
            row = counts.row(kp.node)
            for ev, counter in COUNTED_EVENTS.get(row.kind, {}).items():
                events[ev][k] = row.counters[counter].sum(axis=0)
        layers[kp.node] = {"busy_ns": float(plan.ns(busy[k].sum()) * B),
                           "events": {ev: int(events[ev][k].sum()) for ev in sorted(events)},
                           "energy_pj": dict(sorted(lay_energy.items())), "traffic_bits": lay_levels}
        for comp, pj in lay_energy.items():
            energy[comp] = energy.get(comp, 0.0) + pj
        for lvl in LEVELS:
            traffic[lvl] += lay_levels[lvl]
    ports = st.ports
    traffic["dram"] += (ports["input"] + ports["output"]) * B
    energy["dram_ports"] = (ports["input"] + ports["output"]) * B * prices.dram_bit()

    busy_ns = plan.ns(busy.astype(np.float64)) * B
    step_ns = np.tile(plan.ns(step_cycles.astype(np.float64)), (B, 1))
    stall_ns = plan.ns((step_cycles[None, :] - busy).astype(np.float64)) * B
    spikes = {k: traces[k] for k in record if k in traces}
    sources = dict(plan.board.sources)
    sources.update({f"energy.{k}": f"{v.confidence}: {v.source}" for k, v in sorted(c.used.items())})
    sources.update({f"part.{k}": v for k, v in plan.part.sources.items()})
    return SimResult(
        arch="fpga", kind="fpga-dataflow", schedule=plan.schedule, steps=T, samples=B, hw_steps=T,
        units=[Unit(kp.node, "kernel", kp.node, i) for i, kp in enumerate(plan.kernels)],
        busy_ns=busy_ns, stall_ns=stall_ns, step_ns=step_ns,
        latency_ns=np.full(B, plan.latency_ns), throughput_sps=plan.throughput_sps,
        events=events, layers=layers, energy_pj=dict(sorted(energy.items())), traffic_bits=traffic,
        spikes=spikes, outputs=outputs, hardware=pickle.loads(st.summary_blob), sources=dict(sorted(sources.items())),
        notes=list(st.notes))


def port_pressure(qgraph: ir.Graph, plan: DesignPlan) -> list[dict]:
    """Kernels whose ``P`` lanes read more values per cycle from a producer's buffer than its banks'
    ports deliver (an elementwise kernel reads ``P`` values per cycle from a buffer split into the
    producer's ``P`` banks, each with ``bram36_ports`` ports of ``bram36_port_bits``, narrow values
    packed into a port's width: an approximation of the writer's packing). The estimate does not model
    this (its docstring says so) and neither does the time here: it is reported so a user can match
    the parallelism of producer and consumer. Synapses read one broadcast input value per cycle."""
    lanes = {k.node: k.parallelism for k in plan.kernels}
    ports, port_bits_ = int(plan.board.bram36_ports), int(plan.board.bram36_port_bits)
    tt = tensor_types(qgraph)
    out = []
    for k in plan.kernels:
        n = qgraph[k.node]
        if isinstance(n, fx.FPGA_SYNAPSES) or n.op == "MatMul":
            continue
        for i in n.inputs:
            src = storage_source(qgraph, i)
            banks = lanes.get(src, 1)
            per_read = max(1, port_bits_ // tt[src].bits)
            need = ceil(ceil(k.parallelism / banks) / per_read)  # port reads per bank per cycle
            if need > ports:
                out.append({"kernel": k.node, "reads_from": src, "reads_per_bank_per_cycle": need, "ports": ports})
    return out


def hardware_summary(plan: DesignPlan, qgraph: Optional[ir.Graph] = None) -> dict:
    """The design as JSON-ready values: part, clock, schedule, per-kernel P and cycles, resources
    (and, with ``qgraph``, the port pressure between kernels)."""
    util = plan.utilisation()
    return {"part": plan.part.name, "device": plan.part.part, "clock_mhz": plan.clock_mhz, "schedule": plan.schedule,
            "overlap_between_samples": plan.overlap, "latency_cycles": plan.latency_cycles,
            "interval_cycles": plan.interval_cycles, "resources": plan.resources(),
            "utilisation": {r: float(f"{u:.6g}") for r, u in util.items()}, "fits": plan.fits(),
            "window_block": plan.block, "window_latency_steps": plan.window_latency_steps,
            "memory_bits": plan.memory_bits(), "dram_bandwidth_gbps": plan.board.dram_bandwidth_gbps,
            "kernels": [{"node": k.node, "op": k.op, "parallelism": k.parallelism, "loop_cycles": k.loop_cycles,
                         "step_cycles": k.step_cycles, "spilled_weights": k.spilled} for k in plan.kernels],
            "host": list(plan.host), "port_pressure": port_pressure(qgraph, plan) if qgraph is not None else []}


def notes(plan: DesignPlan, port_pressure: int = 0) -> list[str]:
    out = ["cycles come from the FPGA target's layer model (fpga.resource_model.step_cycles): the kernels' "
           "loops are dense at II = 1, so the design's time does not depend on the spikes",
           "the input quantizer runs on the host; moving the input and output through the ports is counted as "
           "DRAM traffic but takes no cycles (as in fpga.estimate)",
           "register traffic is reported, not priced (no Horowitz register figure)",
           "memory energy is that of the generated (dense) design: it reads a weight for every MAC of its loops, "
           "spiking or not, where step-energy's horowitz model prices an event-driven design (a weight read per "
           "synaptic event); with sparse spikes the simulated energy is therefore the larger, and the gap is the "
           "price of dense loops"]
    if plan.schedule == "step":
        out.append("schedule 'step' (the generated design): no overlap between samples, throughput = 1 / latency")
    else:
        out.append("schedule 'batched' (time-step batching): membranes in registers, buffers hold T steps twice "
                   "(ping-pong); kernels overlap on consecutive samples, throughput = 1 / slowest kernel; stall "
                   "counts the idle time within one sample's window")
    if plan.block > 1:
        out.append(f"a window op (TemporalBlockSum) sums blocks of {plan.block} steps: "
                   + ("the design runs block-major, every output buffer holds the block's steps (memory_bits."
                      "buffers), and a block's first output waits " if plan.schedule == "step" else
                      "its kernel waits for the block's last input step, ") + f"{plan.window_latency_steps} step(s)")
    if port_pressure:
        out.append(f"{port_pressure} kernel input(s) read more values per cycle than the producer's banks have ports "
                   "(hardware.port_pressure); not modelled in the time, as in fpga.estimate")
    spilled = [k.node for k in plan.kernels if k.spilled]
    if spilled:
        out.append(f"on-chip memory does not fit {plan.part.name}: the weights of {', '.join(spilled)} are read "
                   "from DRAM at the board's peak bandwidth")
    return out


__all__ = ["simulate_fpga", "execute", "account", "hardware_summary", "port_pressure", "COUNTED_EVENTS"]
