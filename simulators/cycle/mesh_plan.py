"""What the mesh simulator precomputes once per network: the units (neuro-cores of every mapped
layer, one embedded unit per product of live tensors, the host), each layer's member nodes in the
quantized graph and the edges that bring packets into it (with their fan-out per core, hops and
network latency), every sender's destination count per value, and every unit's pipeline depth.

**Depth** (this module's own count, not ``passes.delay_balance``'s Lava latencies): a value that
crosses from one unit to another travels as packets and arrives one hardware step later; inside a
unit (a layer's synapses and neurons) it takes no step. So a layer's depth is ``1 + max`` over the
depths of the units that feed it, an embedded product's likewise, and the host's input is at depth
0. Lava's custom processes for the products have latency 0 (``exporters.lava_processes``); on the
mesh the product runs on an embedded core whose results re-enter the mesh as packets, so it takes a
step of its own, which Lava's latency count would hide."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from step_deploy import ir

from .mesh_placement import LAYOUT_OPS, SYNAPSE_KIND, LayerPlacement, edge_fans, mesh_xy, origin_index, place_layers
from .result import Unit

HOST = "host"
EMBEDDED_OPS = ("MatMul", "Mul", "ReLU", "Shiftmax", "TemporalBlockSum")
#: ops whose values are spikes (0 or 1), and so, through layout ops, their views
SPIKING_OPS = ("LoihiLIF",)


@dataclass
class Edge:
    """Packets from ``src`` (a node whose values come from sender ``origin``) into ``member``'s
    input ``k``; ``kind``: the synop kind. ``counts`` ``(S, 4C)`` float32 holds, per value j and
    core c of the layer, ``[reach | fan | hops_east_west | hops_north_south]``: 1 if j has a
    synapse on c (one message), the synapses it reaches there, and the hops of that message. For
    the network wait, ``src_reach`` ``(S, n·C)`` says which of the ``n`` sending cores a value comes
    from and where it goes, ``lat_sc`` ``(n, C)`` the hop latency between those cores (both None
    when no message crosses a tile)."""

    member: str
    k: int
    src: str
    origin: str
    kind: str
    cores: int
    counts: torch.Tensor
    src_reach: Optional[torch.Tensor] = None
    lat_sc: Optional[torch.Tensor] = None
    counts_t: Optional[torch.Tensor] = None     # counts transposed (see transposed_if_exact)
    src_reach_t: Optional[torch.Tensor] = None  # src_reach transposed
    #: this edge's synaptic operations are the node's in ``synops_by_node`` (see ``MeshPlan``): False on
    #: every layer but the first that holds the same synapse input (a membrane shortcut's replicas)
    counted: bool = True

    @property
    def reach(self) -> torch.Tensor:
        return self.counts[:, :self.cores]

    @property
    def fan(self) -> torch.Tensor:
        return self.counts[:, self.cores:2 * self.cores]


@dataclass
class LayerPlan:
    name: str
    head: str
    members: list[str]
    place: LayerPlacement
    unit0: int
    depth: int
    edges: list[Edge] = field(default_factory=list)
    core_idx: list = field(default_factory=list)   # per core: its neurons' indices
    core_order: Optional[torch.Tensor] = None       # neurons in core-major order
    weight_bits: int = 8


@dataclass
class MeshPlan:
    units: list[Unit]
    layers: dict[str, LayerPlan]
    embedded: dict[str, int]          # node -> unit index
    host_unit: int
    member_of: dict[str, list[str]]   # node -> layers it is a member of
    unit_of: dict[str, str]           # node -> 'layer name' | embedded node | 'host'
    depth: dict[str, int]             # value depth of every node
    dest_count: dict[str, torch.Tensor]  # sender -> (size,) destinations per value
    hw_depth: int
    total_cores: int
    shapes: dict
    send_mats: dict = field(default_factory=dict)  # sender -> matrix of spikes / messages per value
    send_mats_t: dict = field(default_factory=dict)  # the same transposed (see transposed_if_exact)
    spiking: frozenset = frozenset()  # nodes whose values are 0/1 spikes: their packets carry no payload
    # (an ILIF neuron's 0..max_level spikes are graded: one packet per non-zero spike, carrying its value)
    # A synapse node several layers hold (SDT's membrane shortcuts: the same synapses on the cores of
    # every layer that adds them) runs on each of those layers' cores, and each books its events there
    # (the hardware's work, priced per core); the node's synaptic operations as ``energy.counters``
    # counts them (once per node) are booked in ``synops_by_node`` by the first of those layers only
    # (``Edge.counted``), so the per-node sum over layers is the graph's count.


def transposed_if_exact(m: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``m.T`` (contiguous) when a 0/1 row vector times the float32 matrix ``m`` is exact whatever
    the summation order (every column's Σ|m| below 2^24: all partial sums are integers float32
    holds), else None. ``(m.T @ nz.T).T`` then equals ``nz @ m`` bit for bit and is several times
    faster for the tall, narrow matrices of the plan."""
    if m is None or m.dim() != 2:
        return None
    if m.numel() and float(m.to(torch.float64).abs().sum(0).max()) >= 2 ** 24:
        return None
    if m.numel() and not bool((m == torch.round(m)).all()):
        return None
    return m.T.contiguous()


def row_product(nz: torch.Tensor, m: torch.Tensor, m_t: Optional[torch.Tensor]) -> torch.Tensor:
    """``nz @ m`` for a 0/1 float32 ``nz`` ``(B, S)``: through ``m_t`` (``transposed_if_exact``) when given."""
    return (m_t @ nz.T).T if m_t is not None else nz @ m


def _members(qgraph: ir.Graph, graph: ir.Graph, mapping) -> dict[str, list[str]]:
    qnames = set(qgraph.nodes)
    members = {L.name: {n for n in L.nodes if n in qnames} | {L.name} for L in mapping.layers}
    for n in qgraph.topo_order():  # nodes only the quantized graph has (e.g. a tie-gap shift synapse)
        if n.name in graph.nodes or n.op in ("QuantizeInput", "Input", "Output"):
            continue
        users = {c.name for c in qgraph.consumers(n.name)}
        for name, ms in members.items():
            if users and users <= ms:
                ms.add(n.name)
    order = [n.name for n in qgraph.topo_order()]
    return {name: [n for n in order if n in ms] for name, ms in members.items()}


def build_plan(qgraph: ir.Graph, graph: ir.Graph, mapping, hw, lat_ns: dict) -> MeshPlan:
    shapes = qgraph.infer_shapes()
    places = place_layers(mapping)
    total = sum(p.cores for p in places.values())
    members = _members(qgraph, graph, mapping)
    member_of: dict[str, list[str]] = {}
    for L, ms in members.items():
        for m in ms:
            member_of.setdefault(m, []).append(L)
    units: list[Unit] = []
    layers: dict[str, LayerPlan] = {}
    for L in mapping.layers:
        p = places[L.name]
        layers[L.name] = LayerPlan(L.name, L.name, members[L.name], p, len(units), 0, weight_bits=mapping.weight_bits)
        units += [Unit(f"{L.name}[{c}]", "core", L.name, p.first + c) for c in range(p.cores)]
    embedded, unit_of, depth = {}, {}, {}
    for n in qgraph.topo_order():
        if n.name in layers:
            unit_of[n.name] = n.name
        elif n.name in member_of:
            unit_of[n.name] = member_of[n.name][0]
        elif n.op in EMBEDDED_OPS and mapping.nodes.get(n.name, {}).get("placement", "").startswith("embedded"):
            embedded[n.name] = len(units)
            units.append(Unit(n.name, "embedded", n.name, len(embedded) - 1))
            unit_of[n.name] = n.name
        elif n.op in LAYOUT_OPS:
            unit_of[n.name] = unit_of[n.inputs[0]]
        else:
            unit_of[n.name] = HOST
    host_unit = len(units)
    units.append(Unit(HOST, "host", HOST, 0))
    # depths: one step per unit crossing
    for n in qgraph.topo_order():
        if n.name in member_of and n.name not in layers:
            continue
        if n.name in layers:
            L = layers[n.name]
            ext = [(m, k, i) for m in L.members for k, i in enumerate(qgraph[m].inputs) if i not in set(L.members)]
            L.depth = max([depth[i] + 1 for _, _, i in ext], default=0)
            for m in L.members:
                depth[m] = L.depth
            L.edges = [(m, k, i) for m, k, i in ext]  # resolved below
            continue
        u = unit_of[n.name]
        depth[n.name] = max([depth[i] + (unit_of[i] != u and n.op not in LAYOUT_OPS) for i in n.inputs], default=0)
        if n.op == "TemporalBlockSum":  # a window op emits a block's sum at the block's last step
            depth[n.name] += n.latency
    hw_depth = max([L.depth for L in layers.values()] + [depth[n] for n in embedded], default=0)
    xy = torch.from_numpy(mesh_xy(total, hw)).to(torch.float64) if total else torch.zeros((0, 2))
    dest_count: dict[str, torch.Tensor] = {}

    def count_into(origin: str, index: Optional[torch.Tensor], per_value: torch.Tensor):
        size = math.prod(shapes[origin])
        acc = dest_count.setdefault(origin, torch.zeros(size, dtype=torch.float64))
        acc.index_add_(0, index if index is not None else torch.arange(size), per_value.to(torch.float64))

    counted_inputs: set = set()  # (member, input index) whose synops a layer already books for the node
    for L in layers.values():
        raw = L.edges
        fans = edge_fans(qgraph, L.members, L.head, raw, shapes, L.place)
        L.core_idx = [torch.from_numpy(np.nonzero(L.place.core_of == c)[0]) for c in range(L.place.cores)]
        order = np.argsort(L.place.core_of, kind="stable")
        L.core_order = None if (order == np.arange(len(order))).all() else torch.from_numpy(order)
        edges = []
        for (m, k, src), fan in zip(raw, fans):
            origin, index = origin_index(qgraph, src, shapes)
            reach = (fan > 0).to(torch.float64)
            C = L.place.cores
            dst = xy[L.place.first: L.place.first + C]  # (C, 2)
            ew = torch.zeros_like(reach)
            ns = torch.zeros_like(reach)
            src_reach = lat_sc = None
            if origin in layers:
                sp = layers[origin].place
                g = torch.from_numpy(sp.first + sp.core_of)
                g = g[index] if index is not None else g
                uniq, inv = torch.unique(g, return_inverse=True)
                ew_sc = (xy[uniq, 0][:, None] - dst[None, :, 0]).abs()
                ns_sc = (xy[uniq, 1][:, None] - dst[None, :, 1]).abs()
                ew, ns = ew_sc[inv] * reach, ns_sc[inv] * reach
                lat = ew_sc * lat_ns["hops_east_west"] + ns_sc * lat_ns["hops_north_south"]
                if bool(lat.any()):
                    onehot = torch.nn.functional.one_hot(inv, len(uniq)).to(torch.float32)
                    src_reach = (onehot[:, :, None] * reach[:, None, :].to(torch.float32)).reshape(len(inv), -1)
                    lat_sc = lat
            kind = SYNAPSE_KIND.get(qgraph[m].op, "sparse")
            counts = torch.cat([reach, fan.to(torch.float64), ew, ns], 1).to(torch.float32)
            edges.append(Edge(m, k, src, origin, kind, C, counts, src_reach, lat_sc,
                              transposed_if_exact(counts), transposed_if_exact(src_reach),
                              counted=(m, k) not in counted_inputs))
            counted_inputs.add((m, k))
            count_into(origin, index, reach.sum(1))
        L.edges = edges
    for n in qgraph.topo_order():  # values read off the mesh: one message per non-zero value per reader
        if unit_of[n.name] in layers or n.op in LAYOUT_OPS:
            continue
        for i in n.inputs:
            origin, index = origin_index(qgraph, i, shapes)
            if unit_of.get(origin) != unit_of[n.name] and (origin in layers or origin in embedded):
                count_into(origin, index, torch.ones(math.prod(shapes[i])))
    send_mats = {}  # sender -> (size, [C +] n) float32: [its core of each value |] messages per value per unit
    for name in layers:  # a layer nobody reads still emits spikes
        dest_count.setdefault(name, torch.zeros(math.prod(shapes[name]), dtype=torch.float64))
    for name, dest in dest_count.items():
        if name in layers:
            p = layers[name].place
            onehot = torch.nn.functional.one_hot(torch.from_numpy(p.core_of), p.cores).to(torch.float64)
            send_mats[name] = torch.cat([onehot, onehot * dest[:, None]], 1).to(torch.float32)
        else:
            send_mats[name] = dest[:, None].to(torch.float32)
    spiking: set = set()
    for n in qgraph.topo_order():
        binary = (n.op in SPIKING_OPS and int(getattr(n, "max_level", 1)) == 1  # ILIF: one packet carrying 0..D
                  and getattr(n, "fire", "threshold") != "ternary")  # ternary: one packet carrying -1 or +1
        if binary or (n.op in LAYOUT_OPS and n.inputs and n.inputs[0] in spiking):
            spiking.add(n.name)
    return MeshPlan(units, layers, embedded, host_unit, member_of, unit_of, depth, dest_count, hw_depth, total,
                    shapes, send_mats, {k: transposed_if_exact(v) for k, v in send_mats.items()}, frozenset(spiking))


__all__ = ["EMBEDDED_OPS", "HOST", "Edge", "LayerPlan", "MeshPlan", "build_plan", "row_product",
           "transposed_if_exact"]
