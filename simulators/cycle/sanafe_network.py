"""The neuro-core part of a Loihi-quantized, core-mapped network as a :class:`SanafeNetwork`
(``sanafe_export``), for the SANA-FE cross-check. Pure numpy/torch; never imports ``sanafe``.

* **Groups**: every mapped layer of role ``neurons`` whose LIF runs on neuro-cores (not the host
  LIF of Loihi 1's analog input), each neuron on the core the mesh simulator puts it
  (``mesh_placement.place_layers``).
* **Synapses**: where a layer's synapse reads only spikes of exported groups through layout
  (Reshape/Transpose/Flatten) and ``Add`` nodes, every source neuron gets an edge per target it
  reaches, with the integer weight ``mantissa * 2^weight_exp`` (found by pushing one-hot spike
  vectors through the nodes with the golden model's op functions). An ``Add`` of spike maps is so
  folded into direct synapses (SANA-FE messages carry no graded values): the ``adder`` layers of the
  mapping are not exported, which the cross-check states.
* **Drives**: a layer whose synaptic input comes from anything else (host analog input, products
  of live tensors on the embedded cores, or-pools, adders feeding accumulators) gets its synaptic
  input per step from the golden model's trace of its synapse node, as a per-step bias. This is
  the cross-check's boundary, not part of the simulator under test.
* **Time**: golden step t of node n is SANA-FE step ``t + L[n]`` with ``L`` from
  ``passes.delay_balance.schedule`` (one step per synapse stage). Where a synapse joins sources of
  different latency (residual adds), SANA-FE 2.2.9 has no working per-synapse delay (its
  ``accumulator_with_delay`` dendrite delivered nothing when tried), so the shorter source is
  re-emitted by ``relay`` neurons (threshold below one synaptic unit, weight 1, on the source's
  core), one relay group per missing step; their events are extra on the SANA-FE side and
  :func:`relay_overhead_pj` prices them."""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import numpy as np
import torch

from step_deploy import ir
from step_deploy.fixedpoint import loihi as fx
from step_deploy.passes.delay_balance import schedule
from step_deploy.simulators.cycle.hardware import MeshHardware, hops, load_hardware
from step_deploy.simulators.cycle.mesh_placement import place_layers
from step_deploy.simulators.cycle.sanafe_export import SanafeExportError, COMPARTMENTS, SanafeNetwork, SfEdges, SfGroup, safe_name
from step_deploy.simulators.golden import integer_ops, run_golden
from step_deploy.fixedpoint.format import format_of

LAYOUT_OPS = ("Reshape", "Transpose", "Flatten")
RELAY = "__relay"


def _lif_of(layer, qgraph: ir.Graph) -> Optional[fx.LoihiLIF]:
    for name in [layer.name] + list(layer.nodes):
        if name in qgraph.nodes and isinstance(qgraph[name], fx.LoihiLIF):
            return qgraph[name]
    return None


def _leaves(qgraph: ir.Graph, name: str, exported: set) -> Optional[list[str]]:
    """The exported LIF nodes a value is a linear (layout/Add) function of; None if anything else."""
    n = qgraph[name]
    if name in exported:
        return [name]
    if n.op in LAYOUT_OPS or n.op == "Add":
        out: list[str] = []
        for i in n.inputs:
            sub = _leaves(qgraph, i, exported)
            if sub is None:
                return None
            out += [s for s in sub if s not in out]
        return out
    return None


def _evaluate(qgraph: ir.Graph, name: str, values: dict, ops: dict, synapse: ir.Node) -> torch.Tensor:
    if name in values:
        return values[name]
    n = synapse if name == synapse.name else qgraph[name]
    xs = [_evaluate(qgraph, i, values, ops, synapse) for i in n.inputs]
    y = ops[n.op](n, xs, {}, 0)
    values[name] = y
    return y


def _connectivity(qgraph: ir.Graph, synapse: ir.Node, leaf: str, leaves: list[str], shapes: dict,
                  weights: np.ndarray) -> np.ndarray:
    """``M[target, source]``: synaptic input of the synapse's neurons per spike of ``leaf``'s neuron
    with the synapse's ``weights`` (at ``weight_exp = 0``, scaled by ``2^weight_exp`` afterwards; bias
    removed). With all-one weights it gives the synapses that exist (Loihi stores and processes a
    zero weight of a dense or conv layer like any other)."""
    ops = integer_ops(format_of(qgraph))
    n_src = int(np.prod(shapes[leaf]))
    probe = dataclasses.replace(synapse, weight_exp=0, bias_mant=None, weight=weights)
    values = {l: torch.zeros((n_src,) + tuple(shapes[l]), dtype=torch.int64) for l in leaves}
    values[leaf] = torch.eye(n_src, dtype=torch.int64).reshape((n_src,) + tuple(shapes[leaf]))
    y = _evaluate(qgraph, synapse.name, values, ops, probe).reshape(n_src, -1).double()
    return (y * (2.0 ** int(synapse.weight_exp))).T.numpy()


def network_from_qgraph(qgraph: ir.Graph, mapping, inputs, steps: int) -> tuple[SanafeNetwork, dict]:
    """The exported network for ONE sample (``inputs`` with batch 1) and its description:
    ``{'groups': {layer: {'node', 'neurons', 'cores', 'latency', 'driven', 'sources'}},
    'offset': L of the earliest exported group, 'sf_steps', 'not_exported': [...]}``."""
    sched = schedule(qgraph)
    placed = place_layers(mapping)  # the mesh simulator's placement, neuron by neuron
    exported, not_exported = {}, []
    for layer in mapping.layers:
        lif = _lif_of(layer, qgraph) if layer.role == "neurons" else None
        if lif is None:
            not_exported.append(f"{layer.name} ({layer.role})")
            continue
        p = placed[layer.name]
        exported[lif.name] = p.first + p.core_of
    if not exported:
        raise SanafeExportError("no neuro-core LIF layer to export: the mapping has no 'neurons' layer with a LoihiLIF")
    synapse_of = {}
    for name in exported:
        src = qgraph[name].inputs[0]
        synapse_of[name] = qgraph[src] if isinstance(qgraph[src], fx.FIXED_SYNAPSES) else None
    record = sorted({s.name for s in synapse_of.values() if s is not None} | set(exported))
    gold = run_golden(qgraph, inputs, steps=steps, record=record)
    batch = next(iter(gold.traces.values())).shape[1]
    if batch != 1:
        raise SanafeExportError(f"SANA-FE simulates one input stream: give one sample (batch 1), got {batch}; "
                                "slice the inputs, e.g. x[:, :1] for (T, B, ...) inputs")
    shapes = {k: tuple(v.shape[2:]) for k, v in gold.traces.items()}
    # the shapes of intermediate layout/Add nodes are not needed: _evaluate infers them by running the ops

    offset = min(sched.latency[n] for n in exported)
    depth = max(sched.latency[n] for n in exported) - offset
    sf_steps = steps + depth
    groups, edges, drives, info = [], [], {}, {}
    relays: dict[tuple[str, int], str] = {}
    notes = []

    spare = [sum(L.cores for L in mapping.layers)]  # relays go to the cores after the mapped ones
    relay_of: dict[str, tuple[str, str]] = {}  # relay group -> (the group feeding it, the origin group)

    def relay(src: str, k: int) -> str:
        """The group re-emitting ``src``'s spikes ``k`` steps later (a chain of k relay groups)."""
        prev = safe_name(src)
        for j in range(1, k + 1):
            key = (src, j)
            if key not in relays:
                name = f"{safe_name(src)}{RELAY}{j}"
                relays[key] = name
                n = len(exported[src])
                cores = tuple(spare[0] + i // COMPARTMENTS for i in range(n))
                spare[0] += -(-n // COMPARTMENTS)
                groups.append(SfGroup(name, cores, threshold=0.5, leak_decay=0.0, compare=">"))
                edges.append(SfEdges(prev, name, tuple(range(n)), tuple(range(n)), (1,) * n))
                relay_of[name] = (prev, safe_name(src))
            prev = relays[key]
        return prev

    for name, cores in exported.items():
        lif, syn = qgraph[name], synapse_of[name]
        lat = sched.latency[name] - offset
        leaves = _leaves(qgraph, syn.inputs[0], set(exported)) if syn is not None else None
        kind = "conv" if isinstance(syn, (fx.FixedConv2d, fx.FixedConv1d)) else "dense"
        n = len(cores)
        entry = {"node": name, "group": safe_name(name), "synapse": syn.name if syn is not None else None, "neurons": n,
                 "cores": sorted({int(c) for c in cores}), "latency": lat, "driven": leaves is None,
                 "sources": leaves or []}
        if leaves is None:
            a = gold.traces[syn.name if syn is not None else lif.inputs[0]][:, 0].reshape(steps, n).numpy()
            drive = np.zeros((sf_steps, n))
            drive[lat:lat + steps] = a
            drives[safe_name(name)] = drive
            bias = None
        else:
            bias_t = _evaluate(qgraph, syn.name, {l: torch.zeros((1,) + shapes[l], dtype=torch.int64) for l in leaves},
                               integer_ops(format_of(qgraph)), syn)
            bias = tuple(float(b) for b in bias_t.reshape(-1).tolist())
            if lat < 0:
                raise SanafeExportError(f"layer {name!r} starts before the first exported layer")
            for leaf in leaves:
                m = _connectivity(qgraph, syn, leaf, leaves, shapes, syn.weight)
                exists = _connectivity(qgraph, syn, leaf, leaves, shapes, np.ones_like(syn.weight)) != 0
                gap = (sched.latency[name] - 1) - sched.latency[leaf]
                if gap < 0:
                    raise SanafeExportError(f"{name!r} reads {leaf!r} without a synapse stage in between")
                src_group = relay(leaf, gap) if gap else safe_name(leaf)
                dst, src = np.nonzero(exists)
                if np.any(m[dst, src] != np.round(m[dst, src])):
                    notes.append(f"{name}: weights from {leaf} are not integers (negative weight_exp): SANA-FE adds "
                                 "scaled weights, Loihi shifts the sum; spikes may differ")
                edges.append(SfEdges(src_group, safe_name(name), tuple(src.tolist()), tuple(dst.tolist()),
                                     tuple(float(w) for w in m[dst, src])))
            if bias is not None and any(bias):  # a bias starts when the data arrives (as on Lava)
                drive = np.zeros((sf_steps, n))
                drive[lat:lat + steps] = np.asarray(bias)
                drives[safe_name(name)] = drive
            bias = None
        groups.append(SfGroup(safe_name(name), tuple(int(c) for c in cores), threshold=float(lif.vth),
                              leak_decay=(4096 - int(lif.dv)) / 4096.0, compare=lif.compare, bias=bias, synapse=kind))
        info[name] = entry
    if relays:
        notes.append(f"{len(relays)} relay group(s) re-emit spikes to align residual joins (SANA-FE has no working "
                     "synaptic delay): " + ", ".join(sorted(relays.values())))
    if not_exported:
        notes.append("not exported (no LIF of their own on neuro-cores; their work is outside SANA-FE's neuron model): "
                      + ", ".join(not_exported))
    net = SanafeNetwork(groups=groups, edges=edges, steps=sf_steps, drives=drives, notes=notes)
    return net, {"groups": info, "offset": offset, "sf_steps": sf_steps, "relays": relay_of,
                 "not_exported": not_exported, "golden": gold}


def relay_overhead_pj(net: SanafeNetwork, result: dict, relays: dict,
                      hw: Union[str, MeshHardware] = "loihi1") -> dict:
    """Energy SANA-FE spent because of relay groups (Loihi delays on the synapse instead), by event,
    from the run's spike trace: per relay neuron and step ``neuron_access + neuron_update``; per relay
    spike ``spike_out``; per spike into a relay (one message to the relay's core) ``axon_out + axon_in
    + synop_dense`` and its hops; for the last relay of a chain, the hops its messages make beyond
    those the origin neuron's messages would have made to the same cores. ``relays``:
    ``{relay group: (feeding group, origin group)}`` from :func:`network_from_qgraph`."""
    hw = load_hardware(hw)
    e = {k: hw.event(k).energy_pj for k in ("neuron_access", "neuron_update", "spike_out", "axon_out", "axon_in",
                                            "synop_dense", "hop_east_west", "hop_north_south")}
    out = {"neurons": 0.0, "spike_out": 0.0, "messages": 0.0, "synapses": 0.0, "noc": 0.0}
    if not relays:
        out["total"] = 0.0
        return out
    by_name = {g.name: g for g in net.groups}

    def hop_pj(a: int, b: int) -> float:
        h = hops(int(a), int(b), hw)
        return h.east_west * e["hop_east_west"] + h.north_south * e["hop_north_south"]

    targets: dict[str, list[set]] = {}
    for edge in net.edges:
        if edge.src_group in relays and edge.dst_group not in relays:
            t = targets.setdefault(edge.src_group, [set() for _ in range(by_name[edge.src_group].neurons)])
            dst_cores = by_name[edge.dst_group].cores
            for s_, d in zip(edge.src, edge.dst):
                t[int(s_)].add(int(dst_cores[int(d)]))
    steps = len(result["steps"])
    for name, (feeder, origin) in relays.items():
        g, fcores, ocores = by_name[name], by_name[feeder].cores, by_name[origin].cores
        out["neurons"] += g.neurons * steps * (e["neuron_access"] + e["neuron_update"])
        for s in result["steps"]:
            for i in s["spikes"].get(feeder, []):
                out["messages"] += e["axon_out"] + e["axon_in"]
                out["synapses"] += e["synop_dense"]
                out["noc"] += hop_pj(fcores[i], g.cores[i])
            for i in s["spikes"].get(name, []):
                out["spike_out"] += e["spike_out"]
                for d in targets.get(name, [set()] * g.neurons)[i]:
                    out["noc"] += hop_pj(g.cores[i], d) - hop_pj(ocores[i], d)
    out["total"] = sum(out.values())
    return out


__all__ = ["RELAY", "network_from_qgraph", "relay_overhead_pj"]
