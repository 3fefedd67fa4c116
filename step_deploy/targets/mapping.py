"""Core mapping: place every layer of a graph onto a target's neuro-cores and say how every other
node maps (the resource model the constraint rules check; the registered pass is
``passes.map_to_cores``).

Requires: a graph whose shapes infer (BatchNorm may still be present: it is counted as folded
into the synapse before it). Guarantees: nothing is changed; returns a :class:`Mapping`.

A *layer* is a group of neurons with the synapse groups that feed them:
  * a ``Neuron`` node and the synapses in front of it: Linear/Conv (with BatchNorm and Scale
    folded), Add of synapse outputs (several synapse groups onto the same neurons), and
    Sum/Mean/AvgPool/Add of spike maps whose consumers are all neurons (fused as synapses);
  * ``adder`` neurons for an Add of spike maps read by a synapse (a neuron per element with one
    weight-1 synapse per operand, emitting the sum as a graded spike);
  * ``accumulator`` neurons for Sum/Mean/AvgPool of spikes (a neuron per output, fan-in = window);
  * ``or-pool`` neurons for MaxPool of binary spikes (OR: weight 1, fire at one spike);
  * ``readout`` compartments for a synapse no neuron consumes (the host reads their voltage).
MatMul and Mul of two live tensors are not synapses: they go to the embedded cores / host with
their cost (AND-popcount operations per step) and the cost of expanding them into coincidence
neurons. The seed attention ops run there too, with their cost per step (:func:`embedded_cost`):
ReLU (a compare per value), Shiftmax (per row of n scores: n compares, n subtractions, 2n shifts,
n-1 adds and a leading-zero count) and TemporalBlockSum (an add per element per step into a block
accumulator of ``buffer_elements`` counters, emitting after ``block - 1`` steps: ``OffCore.buffer``).
Ternary neurons send signed 2-bit graded spikes.
Reshape/Transpose/Flatten are free (index remapping in the connectivity), Delay is a
synaptic delay, TemporalMean is a host readout. An analog Input needs graded spikes (Loihi 2);
without them the first synapse layer and its neurons run on the host (Loihi 1).
The per-core resource model is in ``step_deploy.targets.memory``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .. import ir
from .memory import Fit, Geometry, dest_cores_per_source, fit, payload_bits
from .spec import TargetSpec, load_target

SYNAPSES = (ir.Linear, ir.Conv2d, ir.Conv1d)
ROLE_NOTES = {
    "neurons": "spiking neurons; their synapses hold the folded weights",
    "adder": "a neuron per element, one weight-1 synapse per operand, sends the sum as a graded spike",
    "accumulator": "a neuron per output summing its window (weight 1), sends the count as a graded spike",
    "or-pool": "a neuron per output, weight-1 synapses, fires at one input spike (OR), full voltage decay",
    "readout": "non-spiking compartments integrating the synapse output; the host reads their voltage",
}
LAYOUT = (ir.Reshape, ir.Transpose, ir.Flatten, ir.Delay)
LINEAR_REDUCE = (ir.Add, ir.Sum, ir.AvgPool2d)  # Mean is a Sum; linear maps of spike maps
#: the seed attention ops: embedded-core work like the products of live tensors
SEED_EMBEDDED = (ir.ReLU, ir.Shiftmax, ir.TemporalBlockSum)


def embedded_cost(n: ir.Node, shape: tuple) -> tuple[int, str, str]:
    """``(operations per step and sample, unit, what)`` of a seed attention op on an embedded core,
    for its per-step output ``shape`` (the same operations ``energy.counters`` counts)."""
    size = math.prod(shape)
    if isinstance(n, ir.ReLU):
        return size, "compares", "max(x, 0) of a graded value (A²OS²A's K)"
    if isinstance(n, ir.Shiftmax):
        row = int(shape[n.axis % len(shape)])
        rows = size // row if row else 0
        return (row + row + 2 * row + (row - 1) + 1) * rows, "shift/add/compare ops", (
            f"Shiftmax over {rows} row(s) of {row} integer scores (compares, subtractions, shifts, adds, "
            f"a leading-zero count per row; frac_bits={n.frac_bits})")
    return size, "adds", (f"sum over a block of {n.block} steps (non-causal inside the block: emits at the "
                          f"block's last step)")


@dataclass
class Layer:
    """A group of neurons on ``cores`` neuro-cores, cut into equal ``tile``s. ``per_core`` holds one
    core's neurons, in_axons, out_axons, synapses, stored entries and memory_bits; ``binding`` is the
    resource that sets the core count; ``infeasible`` lists resources no split can bring in limit."""

    name: str
    role: str
    nodes: list[str]
    sources: list[str]
    shape: tuple
    neurons: int
    fan_in: int
    synapses: int
    cores: int
    tile: tuple
    per_core: dict
    binding: str
    infeasible: list[str]
    stored: int
    payload_in: int
    out_axons_per_neuron: int = 1
    note: str = ""
    synapse_nodes: list[str] = field(default_factory=list)

    @property
    def cause(self) -> str:
        """The node a per-core violation is best reported at: the main synapse node, else the layer."""
        return self.synapse_nodes[0] if self.synapse_nodes else self.name


@dataclass
class OffCore:
    """A node that runs on the host or the embedded cores, with its cost per step and, for
    products of live tensors, the cost of expanding it into neurons instead."""

    node: str
    op: str
    placement: str
    how: str
    ops_per_step: int
    cost_unit: str
    expansion: Optional[dict] = None
    buffer: Optional[dict] = None  # a window op's block accumulator: elements, block, latency in steps


@dataclass
class Mapping:
    """Layers on neuro-cores (graph order), off-core nodes, and for every node how it maps
    (``nodes[name] = {op, placement, layer, how}``); ``values`` and ``origin`` are what the checker
    needs (each node's value kind and range; the node whose value a layout node carries)."""

    target: str
    weight_bits: int
    layers: list[Layer]
    off_core: list[OffCore]
    nodes: dict[str, dict]
    cores_per_chip: int
    values: dict[str, dict] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        return next(l for l in self.layers if l.name == name or name in l.nodes)

    @property
    def total_cores(self) -> int:
        return sum(l.cores for l in self.layers)

    @property
    def chips(self) -> int:
        return max(1, math.ceil(self.total_cores / self.cores_per_chip))

    @property
    def neurons(self) -> int:
        return sum(l.neurons for l in self.layers)

    @property
    def synapses(self) -> int:
        return sum(l.synapses for l in self.layers)

    @property
    def stored_synapses(self) -> int:
        return sum(l.stored for l in self.layers)

    @property
    def off_core_ops(self) -> int:
        return sum(o.ops_per_step for o in self.off_core)


def _values(g: ir.Graph, shapes: dict, target: TargetSpec) -> tuple[dict, dict]:
    """Forward pass: what each node's output is and where it runs.

    Value kinds: ``spikes`` (binary), ``graded`` (integers: counts, sums of spike maps),
    ``current`` (a synapse output before a neuron), ``analog`` (the input), ``host`` (computed on
    the host mid-network: enters the chip as graded spikes, like the analog input, or keeps its
    readers on the host on a chip without graded spikes) and ``final`` (after a temporal readout:
    everything downstream stays on the host)."""
    graded = bool(target.limit("graded_spikes"))
    val, where = {}, {}
    for n in g.topo_order():
        ins = [val[i] for i in n.inputs]
        kinds = {v["kind"] for v in ins}
        k0 = ins[0] if ins else None
        out, place = dict(k0) if k0 else {}, "pending"
        offchip = {"host", "analog"} & kinds
        if isinstance(n, ir.Input):
            kind = {"analog": "analog", "spikes": "spikes"}.get(n.kind, "graded")
            out, place = {"kind": kind, "vmax": 1 if kind == "spikes" else None, "signed": False}, "io"
        elif isinstance(n, ir.Output):
            place = "io"
        elif isinstance(n, LAYOUT):
            place = "free"
        elif "final" in kinds or (offchip and not graded):
            out, place = {"kind": "final" if "final" in kinds else "host", "vmax": None, "signed": False}, "host"
            if isinstance(n, ir.Neuron) and n.output == "binary":
                out = {"kind": "spikes", "vmax": 1, "signed": False}  # its spikes go to the chip
            out["from_analog"] = any(v["kind"] == "analog" or v.get("from_analog") for v in ins)
        elif isinstance(n, SYNAPSES):
            out = {"kind": "current", "vmax": None, "signed": True}
            if k0["kind"] == "current":  # a synapse on a synapse output: compose on the host
                out["kind"], place = "host", "host"
        elif isinstance(n, (ir.BatchNorm, ir.Scale)):
            place = "folded"
        elif isinstance(n, ir.Neuron):
            out = {"kind": "spikes" if n.output == "binary" else "graded",
                   "vmax": 1 if n.output != "integer" else n.max_level, "signed": n.output == "ternary"}
        elif isinstance(n, (ir.MatMul, ir.Mul)):
            a, b = ins
            m = shapes[n.inputs[0]][-2 if n.transpose_a else -1] if isinstance(n, ir.MatMul) else 1
            both_bin = a["kind"] == b["kind"] == "spikes"
            vm = None if None in (a["vmax"], b["vmax"]) else m * a["vmax"] * b["vmax"]
            kind = "spikes" if both_bin and isinstance(n, ir.Mul) else "graded"
            out, place = {"kind": kind, "vmax": vm, "signed": a["signed"] or b["signed"]}, "embedded"
        elif isinstance(n, SEED_EMBEDDED):
            vm = k0["vmax"] * int(n.block) if isinstance(n, ir.TemporalBlockSum) and k0["vmax"] else None
            out = {"kind": "graded", "vmax": vm,
                   "signed": bool(k0["signed"]) and isinstance(n, ir.TemporalBlockSum)}
            place = "embedded"
        elif isinstance(n, LINEAR_REDUCE):
            if "current" in kinds:
                out, place = {"kind": "current", "vmax": None, "signed": True}, "folded"
            else:
                fan = len(ins) if isinstance(n, ir.Add) else (
                    shapes[n.inputs[0]][n.axis] if isinstance(n, ir.Sum) else math.prod(ir.nodes._pair(n.kernel_size)))
                vm = None if any(v["vmax"] is None for v in ins) else (
                    sum(v["vmax"] for v in ins) if isinstance(n, ir.Add) else fan * k0["vmax"])
                out = {"kind": "graded", "vmax": vm, "signed": any(v["signed"] for v in ins)}
        elif isinstance(n, ir.MaxPool2d) and k0["kind"] == "spikes":
            place = "pending"
        elif isinstance(n, ir.TemporalMean):
            out, place = {"kind": "final", "vmax": None, "signed": False}, "host"
        else:  # max of non-binary values and anything else: host
            out, place = {"kind": "host", "vmax": None, "signed": False}, "host"
        val[n.name], where[n.name] = out, place
    return val, where


def _geometry(n: ir.Node, shapes: dict, k_sources: list[str]) -> Geometry:
    out, ins = shapes[n.name], [shapes[i] for i in n.inputs]
    if isinstance(n, ir.Linear):
        return Geometry("dense", (math.prod(out[:-1]), out[-1]), n.weight.shape[1], math.prod(ins[0]),
                        shareable=True, in_features=n.weight.shape[1])
    if isinstance(n, (ir.Conv2d, ir.Conv1d, ir.AvgPool2d, ir.MaxPool2d)):
        if isinstance(n, ir.MaxPool2d):  # AvgPool2d too: depthwise, weight 1
            k, s, d, grp, cin_g = ir.nodes._pair(n.kernel_size), ir.nodes._pair(n.stride), (1, 1), ins[0][0], 1
        else:
            conv2 = isinstance(n, ir.Conv2d)
            tup = (lambda v: ir.nodes._pair(v)) if conv2 else (lambda v: (int(v),))
            k, s, d, grp, cin_g = n.weight.shape[2:], tup(n.stride), tup(n.dilation), n.groups, n.weight.shape[1]
        return Geometry("conv", tuple(out), cin_g * math.prod(k), math.prod(ins[0]), shareable=True,
                        in_channels=ins[0][0], groups=grp, kernel=tuple(k), stride=tuple(s),
                        dilation=tuple(d), in_spatial=tuple(ins[0][1:]))
    if isinstance(n, ir.Sum):
        return Geometry("onetoone", (math.prod(out),), shapes[n.inputs[0]][n.axis], math.prod(ins[0]))
    k = len(k_sources)
    return Geometry("onetoone", (math.prod(out),), k, k * math.prod(out))


def _afferents(g: ir.Graph, name: str, shapes, val, where, fusable) -> tuple[list, list[str]]:
    """Synapse groups feeding the neurons of ``name``: [(geometry, source nodes)], member nodes."""
    n = g[name]
    if not isinstance(n, ir.Neuron) and val[name]["kind"] != "current":  # adder / accumulator / OR
        return [(_geometry(n, shapes, list(n.inputs)), list(n.inputs))], []
    geoms, members = [], []

    def walk(src: str):
        p = g[src]
        if isinstance(p, SYNAPSES) and where[src] == "pending":
            geoms.append((_geometry(p, shapes, []), [p.inputs[0]]))
            members.append(src)
        elif val[src]["kind"] == "current" and isinstance(p, (ir.BatchNorm, ir.Scale, *LAYOUT, *LINEAR_REDUCE)):
            members.append(src)
            for i in p.inputs:
                walk(i)
        elif src in fusable:
            geoms.append((_geometry(p, shapes, list(p.inputs)), list(p.inputs)))
            members.append(src)
        else:  # spikes / graded values from elsewhere: one-to-one weight-1 synapses
            geoms.append((Geometry("onetoone", (math.prod(shapes[name]),), 1, math.prod(shapes[src])), [src]))

    for i in (n.inputs if isinstance(n, ir.Neuron) else (name,)):
        walk(i)
    geoms.sort(key=lambda gs: -gs[0].synapses)
    return geoms, members


def _consumers_through_layout(g: ir.Graph, name: str) -> list[ir.Node]:
    out = []
    for c in g.consumers(name):
        out.extend(_consumers_through_layout(g, c.name) if isinstance(c, LAYOUT) else [c])
    return out


def _matmul_dims(n: ir.Node, shapes: dict) -> tuple[int, int, int, int]:
    a, b = list(shapes[n.inputs[0]]), list(shapes[n.inputs[1]])
    if n.transpose_a:
        a[-1], a[-2] = a[-2], a[-1]
    if n.transpose_b:
        b[-1], b[-2] = b[-2], b[-1]
    return math.prod(a[:-2]), a[-2], a[-1], b[-1]


_FIT_CACHE: dict = {}


def _fit_cached(g: Geometry, target: TargetSpec, wb: int) -> Fit:
    key = (g, wb, id(target))
    if key not in _FIT_CACHE or _FIT_CACHE[key][0] is not target:
        if len(_FIT_CACHE) > 256:
            _FIT_CACHE.clear()
        _FIT_CACHE[key] = (target, fit([g], target, wb))
    return _FIT_CACHE[key][1]


def _expansion(n: ir.Node, shapes, val, target: TargetSpec, wb: int) -> dict:
    a, b = (val[i] for i in n.inputs)
    both_bin = a["kind"] == b["kind"] == "spikes"
    if isinstance(n, ir.MatMul):
        bt, rows, m, cols = _matmul_dims(n, shapes)
        terms, outs = bt * rows * m * cols, bt * rows * cols
    else:
        terms, outs, m = math.prod(shapes[n.name]), 0, 1
    if both_bin:
        how, possible = "coincidence neurons (2 weight-1 synapses, fire at 2: q AND k)", True
    elif a["kind"] == "spikes" or b["kind"] == "spikes":
        how = "gated graded-ReLU neurons (graded operand + spike gate, graded output)"
        possible = bool(target.limit("graded_spikes") and target.limit("programmable_neurons"))
    else:
        how = "product neurons (two graded inputs multiplied, like Lava ProdNeuron)"
        possible = bool(target.limit("graded_spikes") and target.limit("programmable_neurons"))
    f1 = _fit_cached(Geometry("onetoone", (terms,), 2, 2 * terms), target, wb)
    cores, neurons, syn = f1.cores, terms, 2 * terms
    if outs:  # a neuron per output sums its m products
        f2 = _fit_cached(Geometry("onetoone", (outs,), m, terms), target, wb)
        cores, neurons, syn = cores + f2.cores, neurons + outs, syn + terms
        how += f" + {outs} accumulator neurons (fan-in {m})"
    return {"how": how, "possible": possible, "neurons": neurons, "synapses": syn, "cores": cores}


def _heads(graph, order, val, where, fusable, shapes) -> list[str]:
    """Nodes whose neurons occupy cores: neurons, unfused reductions, OR pools, unread synapses."""
    heads, claimed = [], set()
    for n in reversed(order):
        nm, kind = n.name, val[n.name]["kind"]
        if where[nm] != "pending" and not (where[nm] == "folded" and kind == "current"):
            continue
        head = isinstance(n, ir.Neuron) or (isinstance(n, (*LINEAR_REDUCE, ir.MaxPool2d))
                                            and nm not in fusable and kind != "current")
        if not head and kind == "current" and nm not in claimed:
            cons = _consumers_through_layout(graph, nm)
            head = not any(isinstance(c, ir.Neuron) or (val[c.name]["kind"] == "current"
                                                        and not isinstance(c, SYNAPSES)) for c in cons)
        if head:
            heads.append(nm)
            claimed.update(_afferents(graph, nm, shapes, val, where, fusable)[1])
    return heads[::-1]


def map_to_cores(graph: ir.Graph, target: TargetSpec | str, weight_bits: int = 8) -> Mapping:
    """Place every layer of ``graph`` on ``target``'s neuro-cores; classify every other node."""
    target = load_target(target)
    shapes = graph.infer_shapes()
    order = graph.topo_order()
    val, where = _values(graph, shapes, target)
    # reductions of spike maps read only by on-chip neurons are fused into them as synapses
    fusable = set()
    for n in order:
        if isinstance(n, LINEAR_REDUCE) and where[n.name] == "pending" and val[n.name]["kind"] == "graded":
            cons = _consumers_through_layout(graph, n.name)
            if cons and all(isinstance(c, ir.Neuron) and where[c.name] == "pending" for c in cons):
                fusable.add(n.name)
    heads = _heads(graph, order, val, where, fusable, shapes)
    groups = {h: _afferents(graph, h, shapes, val, where, fusable) for h in heads}
    member_of = {m: h for h, (_, ms) in groups.items() for m in ms}
    origin = {}  # node -> layer head (or off-core node) whose value it carries
    for n in order:
        nm = n.name
        carries = (isinstance(n, LAYOUT) or where[nm] == "folded") and nm not in member_of and nm not in groups
        origin[nm] = origin.get(n.inputs[0]) if carries and n.inputs else nm
    readers = {h: 0 for h in heads}  # off-core readers (host, embedded cores, graph outputs)
    for n in order:
        if n.name not in member_of and n.name not in groups and where[n.name] in ("host", "embedded", "io"):
            for i in set(n.inputs):
                if origin.get(i) in readers:
                    readers[origin[i]] = 1
    dest = dict(readers)
    layers: dict[str, Layer] = {}
    for h in reversed(heads):  # consumers first: their tiles set the producers' fan-out
        geoms, members = groups[h]
        node, fan_out = graph[h], max(1, dest[h])
        ups = [sum(math.prod(shapes[origin[s]]) for s in ss if origin.get(s) in dest and origin[s] != h)
               for _, ss in geoms]
        f: Fit = fit([gm for gm, _ in geoms], target, weight_bits, fan_out, ups)
        role = {ir.Neuron: "neurons", ir.Add: "adder", ir.MaxPool2d: "or-pool"}.get(type(node), "accumulator")
        if val[h]["kind"] == "current":
            role = "readout"
        srcs = list(dict.fromkeys(s for _, ss in geoms for s in ss))
        for gm, ss in geoms:
            for s in ss:
                if origin.get(s) in dest and origin[s] != h:
                    dest[origin[s]] += dest_cores_per_source(gm, f.tile)
        layers[h] = Layer(h, role, members + [h] * (h not in members), srcs, shapes[h], math.prod(shapes[h]),
                          sum(gm.fan_in for gm, _ in geoms), sum(gm.synapses for gm, _ in geoms), f.cores,
                          f.tile, f.per_core, f.binding, f.infeasible, f.per_core["stored"] * f.cores,
                          max([payload_bits(val[s]) for s in srcs] or [1]), fan_out, ROLE_NOTES[role],
                          [x for x in members if isinstance(graph[x], SYNAPSES)])
    off, nodes = [], {}
    for n in order:
        nm, pl = n.name, where[n.name]
        grp = nm if nm in layers else member_of.get(nm, origin.get(nm) if origin.get(nm) in layers else None)
        if nm in layers:
            L = layers[nm]
            nodes[nm] = {"op": n.op, "placement": "core", "layer": nm,
                         "how": f"{L.role}: {L.neurons} neurons on {L.cores} core(s), bound by {L.binding}"}
        elif nm in member_of:
            pl = "folded" if isinstance(n, (ir.BatchNorm, ir.Scale)) else (
                "synapses" if isinstance(n, SYNAPSES) else "fused")
            nodes[nm] = {"op": n.op, "placement": pl, "layer": grp, "how": {
                "folded": "folded into the weights/bias of the synapse before it",
                "synapses": f"synapses of layer {grp} ({layers[grp].cores} core(s))",
                "fused": f"fused into layer {grp} as extra synapse groups onto its neurons"}[pl]}
        elif pl in ("io", "free", "folded"):
            how = {"io": "graph boundary (host sends / reads)",
                   "free": f"synaptic delay of {n.steps} step(s)" if isinstance(n, ir.Delay)
                   else "index remapping in the connectivity",
                   "folded": "constant folded into the consumer's weights or threshold"}[pl]
            nodes[nm] = {"op": n.op, "placement": pl, "layer": grp, "how": how}
        else:
            o = _off_core(n, shapes, val, target, weight_bits)
            off.append(o)
            nodes[nm] = {"op": n.op, "placement": o.placement, "layer": None, "how": o.how}
    return Mapping(target.name, weight_bits, [layers[h] for h in heads], off, nodes,
                   target.limit("neuro_cores_per_chip"), val, origin)


def _off_core(n: ir.Node, shapes, val, target: TargetSpec, wb: int) -> OffCore:
    size = math.prod(shapes[n.name])
    if isinstance(n, ir.MatMul):
        bt, rows, m, cols = _matmul_dims(n, shapes)
        both = all(val[i]["kind"] == "spikes" for i in n.inputs)
        unit = "AND-popcount ops" if both else "multiply-accumulates"
        return OffCore(n.name, n.op, "embedded/host", f"product of two live tensors ({bt}x{rows}x{m} @ {m}x{cols})",
                       bt * rows * m * cols, unit, _expansion(n, shapes, val, target, wb))
    if isinstance(n, ir.Mul):
        return OffCore(n.name, n.op, "embedded/host", "elementwise product of two live tensors", size,
                       "AND ops" if val[n.name]["kind"] == "spikes" else "multiplies",
                       _expansion(n, shapes, val, target, wb))
    if isinstance(n, SYNAPSES):
        fan = n.weight.shape[1] if isinstance(n, ir.Linear) else math.prod(n.weight.shape[1:])
        why = ("analog input on a chip without graded spikes" if val[n.inputs[0]]["kind"] == "analog"
               else "reads a value computed on the host" if val[n.inputs[0]]["kind"] in ("host", "final")
               else "synapse on a synapse output (compose the weights first)")
        return OffCore(n.name, n.op, "host", why, size * fan, "MACs")
    if isinstance(n, SEED_EMBEDDED):
        ops, unit, how = embedded_cost(n, tuple(shapes[n.name]))
        buf = None
        if isinstance(n, ir.TemporalBlockSum):
            buf = {"buffer_elements": n.buffer_elements(tuple(shapes[n.inputs[0]])), "block": int(n.block),
                   "latency_steps": n.latency}
        return OffCore(n.name, n.op, "embedded/host", how, ops, unit, buffer=buf)
    if isinstance(n, ir.TemporalMean):
        return OffCore(n.name, n.op, "host", "temporal readout (running mean over steps)", size, "adds")
    if isinstance(n, ir.MaxPool2d):
        k = math.prod(ir.nodes._pair(n.kernel_size))
        return OffCore(n.name, n.op, "host", "max of non-binary values is not an OR of spikes", size * k, "compares")
    if isinstance(n, ir.Neuron):
        return OffCore(n.name, n.op, "host", "neuron fed by a host-computed value", size, "neuron updates")
    fan = math.prod(shapes[n.inputs[0]]) if n.inputs else 0
    return OffCore(n.name, n.op, "host", "reads a value computed on the host", max(size, fan), "ops")
