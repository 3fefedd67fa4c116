"""Per-core resource model: what one core holding a tile of a layer uses, and the tile search.

A layer's neurons are cut into equal tiles, one per core (cores are not shared between layers,
as NengoLoihi places one block per core). A tile is a box in the layer's output coordinates:
``(rows, outputs)`` for a Linear over tokens, ``(channels, *spatial)`` for a convolution,
``(elements,)`` for one-to-one / reduction groups. For a tile the model counts

* ``neurons``: compartments on the core;
* ``in_axons``: distinct presynaptic sources the tile reads (each is one input axon);
* ``synapses``: unshared synapses, ``neurons x fan_in`` (conv taps that fall on padding count:
  an upper bound);
* ``stored``: synapse entries in memory: ``synapses`` without weight sharing; with sharing
  (target ``weight_sharing``) a Linear's weight slice ``in x outputs`` or a conv kernel slice
  ``channels x C_in/groups x kH x kW`` is stored once per core;
* ``memory bits``: stored entries are kept as synapse lists (one per input axon, or one per
  shared kernel row), each cut into blocks of ``synapse_block_size`` entries with
  ``synapse_block_overhead_bits`` of header, rounded up to ``synapse_word_bits``
  (NengoLoihi ``SynapseConfig.bits_per_axon``); an entry takes ``weight_bits`` plus, for an
  ``indexed`` encoding, the index bits for the neurons on the core. Plus
  ``neurons x neuron_state_bits`` (Loihi 2's memory is shared with neuron state).
* ``out_axons``: ``neurons x`` destination cores per neuron (from the consumers' tiles).

``fit`` picks the tile with the fewest cores that keeps every resource within its limit. A
resource that even a one-neuron tile exceeds cannot be fixed by splitting: it is left out of
the limits, kept as small as the layout allows, and reported as a violation (e.g. a fan-in
above the input-axon limit)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Optional

from .spec import TargetSpec

RESOURCES = {"neurons": "neurons_per_core", "in_axons": "in_axons_per_core",
             "out_axons": "out_axons_per_core", "memory_bits": "core_memory_bits"}


@dataclass(frozen=True)
class Geometry:
    """How one synapse group connects its sources to the group's neurons.

    ``kind``: ``dense`` (Linear over ``rows`` tokens, ``in_features`` inputs), ``conv``
    (Conv1d/Conv2d, pools as depthwise convs) or ``onetoone`` (each neuron reads ``fan_in``
    sources of its own: identity, adders, reductions, coincidence neurons)."""

    kind: str
    dims: tuple[int, ...]
    fan_in: int
    sources: int
    shareable: bool = False
    in_features: int = 0
    in_channels: int = 0
    groups: int = 1
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    in_spatial: tuple[int, ...] = ()

    @property
    def neurons(self) -> int:
        return math.prod(self.dims)

    @property
    def synapses(self) -> int:
        return self.neurons * self.fan_in


@dataclass(frozen=True)
class Usage:
    neurons: int
    in_axons: int
    synapses: int
    stored: int
    lists: int


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def usage(g: Geometry, tile: tuple[int, ...], shared: bool) -> Usage:
    """Resources of one core holding ``tile`` (in ``g.dims`` coordinates) of this synapse group."""
    n = math.prod(tile)
    if g.kind == "dense":
        r, o = tile
        if shared and g.shareable:
            return Usage(n, r * g.in_features, n * g.fan_in, g.in_features * o, g.in_features)
        return Usage(n, r * g.in_features, n * g.fan_in, n * g.fan_in, r * g.in_features)
    if g.kind == "conv":
        c, sp = tile[0], tile[1:]
        cin_g = g.in_channels // g.groups
        cout_g = g.dims[0] // g.groups
        cin = min(g.in_channels, _ceil(c, cout_g) * cin_g)
        extent = [min(size, (t - 1) * s + (k - 1) * d + 1)
                  for size, t, s, k, d in zip(g.in_spatial, sp, g.stride, g.kernel, g.dilation)]
        in_axons = cin * math.prod(extent)
        if shared and g.shareable:
            taps = cin_g * math.prod(g.kernel)
            return Usage(n, in_axons, n * g.fan_in, c * taps, taps)
        return Usage(n, in_axons, n * g.fan_in, n * g.fan_in, in_axons)
    k = g.fan_in  # onetoone
    return Usage(n, min(g.sources, n * k), n * k, n * k, min(g.sources, n * k))


def dest_cores_per_source(g: Geometry, tile: tuple[int, ...]) -> int:
    """Cores a presynaptic neuron must reach when this group is split into ``tile``s."""
    if g.kind == "dense":
        return _ceil(g.dims[1], tile[1])
    if g.kind == "conv":
        out = _ceil(g.dims[0], tile[0]) if g.groups == 1 else 1
        for size, t, s, k, d in zip(g.dims[1:], tile[1:], g.stride, g.kernel, g.dilation):
            reach = _ceil((k - 1) * d + 1, s)  # output positions that read one input position
            out *= min(_ceil(size, t), 1 + _ceil(reach - 1, t))
        return out
    return 1


ANALOG_INPUT_BITS = 8  # assumed quantization of an analog input sent as graded spikes


def payload_bits(value: dict) -> int:
    """Bits a spike must carry for a value ``{kind, vmax, signed}``: 1 for binary spikes; for
    graded values ceil(log2(vmax + 1)) (+1 sign bit); an analog input or an unknown range: 8."""
    if value["kind"] == "spikes":
        return 1
    if value["kind"] == "analog" or value.get("vmax") is None:
        return ANALOG_INPUT_BITS
    return max(1, math.ceil(math.log2(value["vmax"] + 1))) + (1 if value.get("signed") else 0)


def index_bits(target: TargetSpec, neurons: int) -> int:
    need = max(1, math.ceil(math.log2(max(neurons, 2))))
    table = target.limit("index_bits_map")
    if not table:
        return need
    return next((b for b in table if b >= need), need)


def list_bits(length: int, bits_per_entry: int, target: TargetSpec) -> int:
    """Memory bits of one synapse list of ``length`` entries (NengoLoihi ``bits_per_axon``)."""
    if length <= 0:
        return 0
    block = target.limit("synapse_block_size") or length
    word, head = target.limit("synapse_word_bits"), target.limit("synapse_block_overhead_bits")
    full, rest = divmod(length, block)
    per_block = lambda m: _ceil(m * bits_per_entry + head, word) * word  # noqa: E731
    return full * per_block(block) + (per_block(rest) if rest else 0)


def memory_bits(u: Usage, target: TargetSpec, weight_bits: int, shared: bool, neurons_on_core: int) -> int:
    enc = target.limit("shared_synapse_encoding" if shared else "unshared_synapse_encoding")
    bpe = weight_bits + (index_bits(target, neurons_on_core) if enc == "indexed" else 0)
    syn = u.lists * list_bits(_ceil(u.stored, u.lists), bpe, target) if u.lists else 0
    return syn + neurons_on_core * target.limit("neuron_state_bits")


def _tile_sizes(d: int) -> list[int]:
    """Distinct tile sizes ``ceil(d / j)``, j = 1..d (O(sqrt d) of them)."""
    root = math.isqrt(d)
    sizes = {_ceil(d, j) for j in range(1, root + 2)} | set(range(1, root + 2))
    return sorted(s for s in sizes if 1 <= s <= d)


@dataclass
class Fit:
    tile: tuple[int, ...]
    cores: int
    per_core: dict
    binding: str
    infeasible: list[str] = field(default_factory=list)
    shared: bool = False


def _per_core(geoms: list[Geometry], tile, target, weight_bits, dest_per_neuron, shared) -> dict:
    prim = geoms[0]
    n = math.prod(tile)
    tot = {"neurons": n, "in_axons": 0, "out_axons": n * dest_per_neuron, "synapses": 0, "stored": 0}
    bits = n * target.limit("neuron_state_bits")
    for g in geoms:
        if g.dims == prim.dims:
            u = usage(g, tile, shared)
        else:  # a second synapse group onto the same neurons, other layout: proportional bound
            u = Usage(n, min(g.sources, n * g.fan_in), n * g.fan_in,
                      n * g.fan_in, min(g.sources, n * g.fan_in))
        tot["in_axons"] += u.in_axons
        tot["synapses"] += u.synapses
        tot["stored"] += u.stored
        bits += memory_bits(u, target, weight_bits, shared and g.shareable, n) - n * target.limit("neuron_state_bits")
    tot["memory_bits"] = bits
    return tot


def _upstream(geoms, tile, producer_neurons, out_limit) -> int:
    if not producer_neurons or not out_limit:
        return 0
    return sum(_ceil(p * dest_cores_per_source(g, tile), out_limit)
               for g, p in zip(geoms, producer_neurons) if p and g.dims == geoms[0].dims)


def fit(geoms: list[Geometry], target: TargetSpec, weight_bits: int, dest_per_neuron: int = 1,
        producer_neurons: Optional[list[int]] = None) -> Fit:
    """Fewest-cores tile for a group whose synapse groups are ``geoms`` (the first sets the layout).

    ``producer_neurons[i]`` (neurons of the layer feeding ``geoms[i]``, 0 if none) lets the search
    count the cores a fine tile costs upstream: every destination core of a presynaptic neuron is
    one of its output axons, so the score is ``cores + sum(ceil(producer x dest / out_axons))``."""
    shared = bool(target.limit("weight_sharing"))
    dims = geoms[0].dims
    limits = {r: target.limit(k) for r, k in RESOURCES.items() if target.limit(k) is not None}
    one = _per_core(geoms, tuple(1 for _ in dims), target, weight_bits, dest_per_neuron, shared)
    infeasible = [r for r, lim in limits.items() if one[r] > lim]
    checked = {r: lim for r, lim in limits.items() if r not in infeasible}
    best = None
    for tile in itertools.product(*[_tile_sizes(d) for d in dims]):
        cores = math.prod(_ceil(d, t) for d, t in zip(dims, tile))
        if best is not None and not infeasible and cores > best[0][1]:
            continue  # the score is at least the core count
        pc = _per_core(geoms, tile, target, weight_bits, dest_per_neuron, shared)
        if any(pc[r] > lim for r, lim in checked.items()):
            continue
        excess = sum(pc[r] / limits[r] for r in infeasible)
        key = (excess, cores + _upstream(geoms, tile, producer_neurons, limits.get("out_axons")), cores,
               tuple(-t for t in tile))
        if best is None or key < best[0]:
            best = (key, tile, pc)
    (_, _, cores, _), tile, pc = best
    util = {r: pc[r] / lim for r, lim in limits.items()}
    binding = "none (fits one core)" if cores == 1 and not infeasible else max(util, key=lambda r: (util[r], r))
    if infeasible:
        binding = infeasible[0]
    return Fit(tuple(tile), cores, pc, binding, infeasible, shared)
