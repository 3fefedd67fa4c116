"""Where the mesh simulator puts things: mapped layers on consecutive neuro-cores, each neuron on the
core of its tile, and the structural connectivity between them (which core a packet goes to, how many
synapses it reaches there, how many router hops it makes).

* **Placement.** The layers of ``targets.mapping.map_to_cores`` take ``Layer.cores`` consecutive core
  indices in graph order (the placement ``energy.models``' Loihi model prices); a core index becomes
  a chip and tile with :func:`hardware.core_xy` (cores beyond one chip go to the next chip).
* **Tiles.** A layer's neurons form the grid its tile splits (``memory.Geometry.dims``: a dense
  layer ``(positions, features)``, a convolution ``(C, H, W)``, anything else the flat count); the
  tile grid is numbered row-major, so neuron ``i`` (C order of the layer's shape) is on local core
  ``core_of[i]``.
* **Fan-out per core.** For every edge that enters a layer from outside (a source node's values read
  by one of the layer's member nodes), ``fan[j, c]`` is the number of synapses value ``j`` reaches
  on core ``c``: the layer's member subgraph evaluated with every stored synapse set to 1
  (structural connectivity, zero weights included, as ``energy.counters`` counts fan-out; a synapse
  on a synapse output, such as Loihi's tie-gap shift, uses its non-zero pattern), differentiated
  with respect to the edge's input. One backward pass per edge, batched over the layer's cores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from step_deploy import ir
from step_deploy.simulators.reference_ops import FLOAT_OPS

from .hardware import HardwareError, MeshHardware, core_xy

#: nodes that only move values (their output is a permutation of their input's)
LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Delay")
SYNAPSE_KIND = {"FixedLinear": "dense", "FixedConv2d": "conv", "FixedConv1d": "conv"}


@dataclass(frozen=True)
class LayerPlacement:
    """A mapped layer on cores ``first .. first + cores - 1``; ``core_of[i]`` is the local core of
    neuron ``i`` (C order of ``shape``), ``neurons_per_core[c]`` how many neurons core ``c`` holds."""

    name: str
    first: int
    cores: int
    tile: tuple
    shape: tuple
    core_of: np.ndarray = field(compare=False, repr=False)
    neurons_per_core: np.ndarray = field(compare=False, repr=False)

    @property
    def indices(self) -> range:
        return range(self.first, self.first + self.cores)


def tile_grid(shape: tuple, tile: tuple) -> tuple:
    """The neuron grid a layer's ``tile`` splits (``memory.Geometry.dims``)."""
    size = math.prod(shape)
    if len(tile) == len(shape):
        return tuple(shape)
    if len(tile) == 1:
        return (size,)
    if len(tile) == 2 and len(shape) >= 2:
        return (size // shape[-1], shape[-1])
    raise HardwareError(f"tile {tile} does not split a layer of shape {shape}")


def core_of_neurons(shape: tuple, tile: tuple, cores: Optional[int] = None) -> np.ndarray:
    """Local core index of every neuron of a layer of ``shape`` split into ``tile``s (row-major tiles).
    A tile of another grid than the neurons' (a layer whose largest synapse group is a convolution
    reduced into fewer neurons, e.g. SDT's token mean into the head neurons) puts all neurons on one
    core when the layer has one, else splits them into ``cores`` equal consecutive blocks."""
    size = math.prod(shape)
    try:
        dims = tile_grid(shape, tile)
    except HardwareError:
        dims = None
    if dims is None or len(dims) != len(tile) or math.prod(dims) != size:
        n = cores or 1
        return (np.arange(size, dtype=np.int64) * n) // max(1, size)
    blocks = [-(-d // t) for d, t in zip(dims, tile)]
    idx = np.zeros(dims, np.int64)
    for axis, (d, t) in enumerate(zip(dims, tile)):
        view = [1] * len(dims)
        view[axis] = d
        stride = math.prod(blocks[axis + 1:])
        idx = idx + (np.arange(d) // t).reshape(view) * stride
    return idx.reshape(-1)


def place_layers(mapping) -> dict[str, LayerPlacement]:
    """Every mapped layer on consecutive cores in graph order (as ``energy.models``' Loihi model)."""
    out, start = {}, 0
    for L in mapping.layers:
        core_of = core_of_neurons(tuple(L.shape), tuple(L.tile), L.cores)
        if int(core_of.max(initial=0)) + 1 != L.cores:
            raise HardwareError(f"layer {L.name!r}: tile {L.tile} of shape {L.shape} gives "
                                f"{int(core_of.max()) + 1} cores, the mapping says {L.cores}")
        per = np.bincount(core_of, minlength=L.cores)
        out[L.name] = LayerPlacement(L.name, start, L.cores, tuple(L.tile), tuple(L.shape), core_of, per)
        start += L.cores
    return out


def mesh_xy(total_cores: int, hw: MeshHardware) -> np.ndarray:
    """``(cores, 2)``: every core's east-west and north-south tile coordinate on the whole system
    (chips side by side east-west, as :func:`hardware.hops`)."""
    xy = np.zeros((total_cores, 2), np.int64)
    for c in range(total_cores):
        chip, x, y = core_xy(c, hw)
        xy[c] = (chip * hw.mesh_width + x, y)
    return xy


# ---------------------------------------------------------------- structural connectivity


def _structural_op(n: ir.Node, xs: list, internal: bool, state: dict) -> torch.Tensor:
    """``n`` with every stored synapse set to 1 (``internal``: a synapse on another member's output
    keeps its non-zero pattern), on float64 tensors with a leading core axis."""
    if n.op in SYNAPSE_KIND:
        w = torch.from_numpy((np.asarray(n.weight) != 0) if internal else np.ones_like(n.weight)).to(torch.float64)
        if n.op == "FixedLinear":
            return F.linear(xs[0], w)
        conv = F.conv2d if n.op == "FixedConv2d" else F.conv1d
        return conv(xs[0], w, None, n.stride, n.padding, n.dilation, n.groups)
    if n.op in ("LoihiLIF", "Delay", "TemporalSum"):
        return xs[0]
    if n.op == "Add":
        return sum(xs[1:], xs[0])
    return FLOAT_OPS[n.op](n, xs, state, 0)


def edge_fans(qgraph: ir.Graph, members: list[str], head: str, edges: list[tuple[str, int, str]],
              shapes: dict, place: LayerPlacement) -> list[torch.Tensor]:
    """For each edge ``(member, input index, source)`` into the layer: int64 ``(source size, cores)``,
    the synapses each source value reaches on each of the layer's cores (found by differentiating the
    layer's structure, so gradients are enabled here even when the caller runs under ``no_grad``)."""
    with torch.enable_grad():
        return _edge_fans(qgraph, members, head, edges, shapes, place)


def _edge_fans(qgraph, members, head, edges, shapes, place) -> list[torch.Tensor]:
    cores = place.cores
    mask = torch.zeros((cores, math.prod(place.shape)), dtype=torch.float64)
    mask[torch.from_numpy(place.core_of), torch.arange(mask.shape[1])] = 1.0
    mask = mask.reshape((cores,) + tuple(shapes[head]))
    member_set = set(members)
    out = []
    for (m, k, src) in edges:
        x = torch.zeros((cores,) + tuple(shapes[src]), dtype=torch.float64, requires_grad=True)
        vals: dict[str, torch.Tensor] = {}
        for name in members:
            n = qgraph[name]
            xs = []
            for kk, i in enumerate(n.inputs):
                if (name, kk) == (m, k):
                    xs.append(x)
                elif i in member_set:
                    xs.append(vals[i])
                else:
                    xs.append(torch.zeros((cores,) + tuple(shapes[i]), dtype=torch.float64))
            internal = any(i in member_set for i in n.inputs)
            vals[name] = _structural_op(n, xs, internal, {})
        (vals[head] * mask).sum().backward()
        out.append(torch.round(x.grad.reshape(cores, -1).T).to(torch.int64).contiguous())
    return out


def origin_index(qgraph: ir.Graph, name: str, shapes: dict) -> tuple[str, Optional[torch.Tensor]]:
    """The node whose values ``name`` carries through layout nodes, and for every value of ``name``
    its index in that node's output (None when ``name`` is not a layout node)."""
    chain = []
    n = qgraph[name]
    while n.op in LAYOUT_OPS:
        chain.append(n)
        n = qgraph[n.inputs[0]]
    if not chain:
        return name, None
    idx = torch.arange(math.prod(shapes[n.name]), dtype=torch.float64).reshape((1,) + tuple(shapes[n.name]))
    for node in reversed(chain):
        idx = idx if node.op == "Delay" else FLOAT_OPS[node.op](node, [idx], {}, 0)
    return n.name, idx.reshape(-1).to(torch.int64)


__all__ = ["LAYOUT_OPS", "SYNAPSE_KIND", "LayerPlacement", "core_of_neurons", "edge_fans", "mesh_xy",
           "origin_index", "place_layers", "tile_grid"]
