"""Energy models: price the counts of ``counters`` (never the network directly).

Four models (``MODELS``), each a function ``(counts, graph, constants, options) -> rows``; every
number comes from ``constants.yaml`` (source and confidence carried into the report):

``paper``   E = E_MAC · (MACs of the real-valued first layer, every output and tap, dense)
            + E_AC · (synaptic operations of every other synapse + attention accumulates +
            reduction accumulates). The Spikformer-line convention, float32, a coarse proxy: it
            prices multi-level inputs (Spikformer's spike-map sums) as accumulates like the papers do.
``step``    The operations priced as ``paper``, except that a multi-level input's synaptic
            operation is a MAC (it is a multiply: that many bits times the weight), plus
            ``e_memory_bit`` per bit of weights read (per synaptic operation), membrane read and
            written (every neuron, every step) and spikes moved (written once, read once).
``horowitz`` Operations by width (int or float, the smallest tabulated width >= the operand's):
            binary synop = add at the accumulator width; multi-level or real synop = multiply
            (max of weight and input bits) + add; neuron update = 2 adds at the membrane width
            for integer neurons (integrate, compare; the τ = 2 leak is a shift), 1 mult + 3 adds
            in float32 (X − V, ×1/τ, +V, compare), one compare for PSN's stateless Heaviside;
            attention: an add per accumulate (AND and
            popcount gating are free: no Horowitz figure, below an 8-bit add), a multiply more
            when neither operand is binary; memory: SRAM 64-bit reads priced by the size of the
            memory the bits come from (the layer's weights, its membranes, its output buffer).
``loihi``   The network as mapped on Loihi neuro-cores (``targets.mapping``): synaptic events by
            connection type (conv / dense), neuron access + update for every compartment of every
            mapped layer every step, spike out per spike, one axon message per destination core,
            NoC hops between the layers' cores on the mesh (layers placed on consecutive cores),
            attention accumulates on the embedded cores; host nodes (the head) are not priced.

**Multi-bit spikes (Bit Budget).** A neuron with L output levels sends b = ceil(log2(L)) bits per
non-zero spike (ternary and ILIF with D = 2: 2 bits); the counts state it (``spike_bits`` = spikes
x b; ``bit_ops`` = b on the neuron, on every synapse reading it and on products with it, see
``counters``). Every model prices such a spike as b one-bit spikes where it prices spike work,
and binary networks (b = 1) are priced exactly as before:

``paper``    a synaptic operation on a b-bit spike is b accumulates: ``E_AC · b`` (value·w as a
             shift-and-add over the spike's bits; the papers' E_AC, Horowitz 2014 via Spikformer).
``step``     the same ``E_AC · b`` per synaptic operation (not a MAC: no multiplier is needed); its
             weight is read once; spike traffic is ``e_memory_bit`` per bit moved, so b bits per spike.
``horowitz`` b adds at the accumulator width per synaptic operation; spike traffic per bit as before.
``loihi``    a b-bit graded spike (Loihi 2) is priced as b binary events: synaptic events, spike out
             and axon/NoC messages each x b x ``loihi.graded_events_per_bit`` (an assumption: no
             graded-spike energy of Loihi 2 is published; Davies et al.'s events are binary).

So a network whose neurons send 2-bit spikes costs exactly twice the spike-driven terms of the
same network with binary spikes at the same spike counts (synaptic operations, spike traffic;
Loihi: synaptic events, spike out, messages) and the same in every other term (weight reads,
membranes, neuron updates). Sources: Shen et al., "Are Conventional SNNs Really Efficient? A
Perspective from Network Quantization" (Bit Budget, CVPR 2024: spike and weight bits, not SynOps,
are the budget; only its abstract could be read, its S-ACE formula is not reproduced here); the
shift-and-add decomposition is this project's convention, stated in ``CONVENTIONS``.

**The seed attention designs' ops** (``counters``: *nonlinear* and *buffers*). ReLU's compares and
Shiftmax's compares, subtractions, shifts, adds and leading-zero count are priced as add
equivalents (``elementwise.adds_per_*`` in ``constants.yaml``, each an assumption stated there):
``paper``/``step`` at E_AC each, ``horowitz`` as an add at the accumulator width, ``loihi`` as one
embedded-core operation each (they run beside attention, off the neuro-cores, wherever the core
mapping places them: as products, they are priced even where it says host). TemporalBlockSum's
adds (one per element per step) are priced the same way; its block accumulator's traffic (every
element written and read once per step) is priced by the models that price memory: ``step`` at
``e_memory_bit`` per bit, ``horowitz`` per bit of an SRAM the accumulator's size. Products with
A²OS²A's ReLU-graded K are accumulates gated by the spikes of Q (``ac``, one add each), with its
ternary V signed adds (2 bits: ``bit_ops = 2``).

A model returns one :class:`LayerEnergy` per counted row (pJ summed over the batch, split into
components); :func:`price` wraps them in an :class:`EnergyReport` with the constants used."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from step_deploy import ir
from step_deploy.errors import StepDeployError

from .constants import Constants, load_constants
from .counts import Counts, LayerCounts

FLOAT_BITS = 32


class EnergyModelError(StepDeployError, ValueError):
    """An unknown energy model, or counts a model cannot price (names what and why)."""


@dataclass(frozen=True)
class LayerEnergy:
    """Energy of one counted node over the whole batch, in pJ, by component."""

    name: str
    kind: str
    components: dict

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))


@dataclass(frozen=True)
class EnergyReport:
    """``layers`` priced by ``model`` for ``samples`` samples; ``constants`` the entries used."""

    model: str
    description: str
    samples: int
    layers: tuple
    constants: dict
    notes: tuple = ()
    assumptions: dict = field(default_factory=dict)

    @property
    def total_pj(self) -> float:
        return float(sum(l.total for l in self.layers))

    @property
    def per_sample_pj(self) -> float:
        return self.total_pj / self.samples if self.samples else 0.0

    def by_component(self) -> dict:
        """pJ per sample of each component over all layers."""
        out: dict = {}
        for l in self.layers:
            for k, v in l.components.items():
                out[k] = out.get(k, 0.0) + v / max(self.samples, 1)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        n = max(self.samples, 1)
        return {"model": self.model, "description": self.description, "samples": self.samples,
                "per_sample_pj": self.per_sample_pj, "per_sample_uj": self.per_sample_pj * 1e-6,
                "by_component_pj": self.by_component(),
                "layers": [{"name": l.name, "kind": l.kind, "per_sample_pj": l.total / n,
                            "components_pj": {k: v / n for k, v in sorted(l.components.items())}}
                           for l in self.layers],
                "constants": {k: c.to_dict() for k, c in sorted(self.constants.items())},
                "assumptions": dict(sorted(self.assumptions.items())), "notes": list(self.notes)}


# --------------------------------------------------------------------------- shared helpers


def counts_format(counts: Counts) -> str:
    """``'int'`` when the counted synapses and neurons are integer (a quantized graph, or counts
    given integer widths with :func:`~step_deploy.energy.counts.rebit`), else ``'float'``."""
    rows = counts.of_kind("synapse") + counts.of_kind("neuron")
    return "int" if rows and all(r.number_format == "int" for r in rows) else "float"


def weight_counts(graph: ir.Graph) -> dict:
    """Number of weights of every synapse node (its weight memory's size with the weight bits)."""
    return {n.name: int(math.prod(n.weight.shape)) for n in graph.nodes.values()
            if getattr(n, "weight", None) is not None}


def neuron_op_bits(row: LayerCounts) -> int:
    """Width of one neuron's arithmetic: its membrane's, except Loihi's 48 state bits, which are two
    24-bit registers (u and v)."""
    mb = row.membrane_bits or FLOAT_BITS
    return mb // 2 if row.op == "LoihiLIF" else mb


def accumulator_bits(counts: Counts) -> int:
    """The accumulator width synapses add into: the widest neuron arithmetic of the counted neurons
    (float graphs: 32)."""
    if counts_format(counts) == "float":
        return FLOAT_BITS
    widths = [neuron_op_bits(r) for r in counts.of_kind("neuron") if r.membrane_bits]
    return max(widths) if widths else FLOAT_BITS


def _input_bits(row: LayerCounts) -> int:
    """Bits of the values arriving at a synapse: its value class's, else 8 (the input quantizer's
    pixels; a float graph's real values are float32, priced as such by the caller)."""
    return row.bits or 8


#: add equivalents of each counted element-wise operation (constants ``elementwise.*``); adds are adds
ELEMENTWISE_COSTS = (("compares", "adds_per_compare"), ("subtracts", "adds_per_subtract"),
                     ("shifts", "adds_per_shift"), ("leading_zero_counts", "adds_per_leading_zero_count"))


def elementwise_adds(r: LayerCounts, c: Constants) -> float:
    """Add equivalents of a ``nonlinear`` or ``buffer`` row over the batch (a constant is looked up,
    and so reported, only where its operation occurs)."""
    total = float(r.total("adds"))
    for counter, key in ELEMENTWISE_COSTS:
        n = r.total(counter) if counter in r.counters else 0
        if n:
            total += c.get(f"elementwise.{key}") * n
    return total


def _elementwise(r: LayerCounts, c: Constants, per_add: float, e_bit: Optional[float] = None) -> dict:
    """Components of a ``nonlinear``/``buffer`` row: its ops at ``per_add`` pJ per add equivalent, and
    (``e_bit``: pJ per bit, None where the model prices no memory) the block accumulator's traffic."""
    if r.kind == "nonlinear":
        return {"nonlinear": per_add * elementwise_adds(r, c)}
    comp = {"temporal_buffer": per_add * elementwise_adds(r, c)}
    if e_bit is not None:
        comp["buffer_memory"] = e_bit * (r.total("buffer_bits_written") + r.total("buffer_bits_read"))
    return comp


ELEMENTWISE_KINDS = ("nonlinear", "buffer")


# --------------------------------------------------------------------------- paper / STEP


def _paper(counts: Counts, graph, c: Constants, opts: dict) -> list:
    e_mac, e_ac = c.get("paper.e_mac"), c.get("paper.e_ac")
    out = []
    for r in counts.rows:
        if r.kind == "synapse":
            comp = ({"synapses_mac": e_mac * r.total("dense_macs")} if r.value_class == "real"
                    else {"synapses_ac": e_ac * r.bit_ops * r.total("synops")})
        elif r.kind == "product":
            comp = {"attention": e_ac * r.bit_ops * r.total("accumulates")}
        elif r.kind == "reduction":
            comp = {"reductions": e_ac * r.total("accumulates")}
        elif r.kind in ELEMENTWISE_KINDS:
            comp = _elementwise(r, c, e_ac)
        else:
            comp = {}
        out.append(LayerEnergy(r.name, r.kind, comp))
    return out


def _step(counts: Counts, graph, c: Constants, opts: dict) -> list:
    e_mac, e_ac, e_bit = c.get("step.e_mac"), c.get("step.e_ac"), c.get("step.e_memory_bit")
    out = []
    for r in counts.rows:
        comp = {}
        if r.kind == "synapse":
            e = e_ac * r.bit_ops if r.operation == "ac" else e_mac
            comp = {"synapses": e * r.total("synops"), "weights_memory": e_bit * r.total("weight_bits_read")}
        elif r.kind == "neuron":
            comp = {"membrane_memory": e_bit * (r.total("membrane_bits_read") + r.total("membrane_bits_written")),
                    "spike_traffic": e_bit * 2 * r.total("spike_bits")}
        elif r.kind == "product":
            e = e_ac * r.bit_ops if r.operation in ("and", "ac") else e_mac
            comp = {"attention": e * r.total("accumulates")}
        elif r.kind == "reduction":
            comp = {"reductions": e_ac * r.total("accumulates")}
        elif r.kind in ELEMENTWISE_KINDS:
            comp = _elementwise(r, c, e_ac, e_bit)
        out.append(LayerEnergy(r.name, r.kind, comp))
    return out


# --------------------------------------------------------------------------- Horowitz by width


class _Widths:
    """Horowitz prices by width and number format (``fmt``: 'int' or 'float')."""

    def __init__(self, c: Constants):
        self.c = c

    def add(self, bits: int, fmt: str) -> float:
        return self.c.at_least(f"horowitz.{fmt}_add", bits)[0]

    def mult(self, bits: int, fmt: str) -> float:
        return self.c.at_least(f"horowitz.{fmt}_mult", bits)[0]

    def sram_bit(self, memory_bits: int) -> float:
        """pJ per bit read from a memory of ``memory_bits`` (a 64-bit access shared by its bits)."""
        size_bytes = max(1, math.ceil(memory_bits / 8))
        sizes = self.c.widths("horowitz.sram_read_64bit")
        if sizes and size_bytes > sizes[-1]:
            return self.c.get("horowitz.dram_access_64bit") / 64.0
        return self.c.at_least("horowitz.sram_read_64bit", size_bytes)[0] / 64.0


def _horowitz(counts: Counts, graph, c: Constants, opts: dict) -> list:
    w = _Widths(c)
    fmt = counts_format(counts)
    acc = opts.get("accumulator_bits") or accumulator_bits(counts)
    n_weights = weight_counts(graph) if graph is not None else {}
    out = []
    for r in counts.rows:
        comp = {}
        if r.kind == "synapse":
            wb = r.weight_bits or FLOAT_BITS
            f = r.number_format
            if r.operation == "ac":  # binary spikes: one add; b-bit spikes: b shift-adds
                op = r.bit_ops * w.add(acc if f == "int" else FLOAT_BITS, f)
            elif f == "int":
                op = w.mult(max(wb, _input_bits(r)), f) + w.add(acc, f)
            else:
                op = w.mult(FLOAT_BITS, f) + w.add(FLOAT_BITS, f)
            mem = n_weights.get(r.name, r.size) * wb
            comp = {"synapses": op * r.total("synops"),
                    "weights_memory": w.sram_bit(mem) * r.total("weight_bits_read")}
        elif r.kind == "neuron":
            mb = r.membrane_bits or FLOAT_BITS
            ob = neuron_op_bits(r)
            if r.membrane_bits == 0:  # stateless firing (PSN's Heaviside): one compare
                upd = w.add(FLOAT_BITS if r.number_format == "float" else ob, r.number_format)
            elif r.number_format == "float":
                upd = w.mult(FLOAT_BITS, "float") + 3 * w.add(FLOAT_BITS, "float")
            elif r.op == "LoihiLIF":  # u and v: decay multiply + add each, compare
                upd = 2 * w.mult(ob, "int") + 3 * w.add(ob, "int")
            else:  # integrate, compare; the tau = 2 leak is a shift
                upd = 2 * w.add(ob, "int")
            comp = {"neurons": upd * r.total("updates"),
                    "membrane_memory": w.sram_bit(r.size * mb) * (r.total("membrane_bits_read")
                                                                  + r.total("membrane_bits_written")),
                    "spike_traffic": w.sram_bit(r.size * (r.bits or 1)) * 2 * r.total("spike_bits")}
        elif r.kind == "product":
            per = r.bit_ops * w.add(acc, fmt) if r.operation in ("and", "ac") else w.add(acc, fmt) + w.mult(acc, fmt)
            comp = {"attention": per * r.total("accumulates")}
        elif r.kind == "reduction":
            comp = {"reductions": w.add(acc, fmt) * r.total("accumulates")}
        elif r.kind in ELEMENTWISE_KINDS:
            e_bit = w.sram_bit(r.size * (r.membrane_bits or FLOAT_BITS)) if r.kind == "buffer" else None
            comp = _elementwise(r, c, w.add(acc, fmt), e_bit)
        out.append(LayerEnergy(r.name, r.kind, comp))
    return out


# --------------------------------------------------------------------------- Loihi per event


def _core_xy(core: int, cores_per_tile: int, mesh_x: int) -> tuple[int, int]:
    tile = core // cores_per_tile
    return tile % mesh_x, tile // mesh_x


def _mean_hop_pj(src: range, dst: range, cpt: int, mx: int, e_ew: float, e_ns: float) -> float:
    if not len(src) or not len(dst):
        return 0.0
    tot = 0.0
    for a in src:
        ax, ay = _core_xy(a, cpt, mx)
        for b in dst:
            bx, by = _core_xy(b, cpt, mx)
            tot += abs(ax - bx) * e_ew + abs(ay - by) * e_ns
    return tot / (len(src) * len(dst))


def loihi_mapping(graph: ir.Graph, chip: str = "loihi2"):
    """The core mapping the Loihi model prices (BatchNorm counted as folded)."""
    from step_deploy.targets.mapping import map_to_cores
    from step_deploy.targets.spec import load_target
    return map_to_cores(graph, load_target(chip))


def _loihi(counts: Counts, graph, c: Constants, opts: dict) -> list:
    if graph is None:
        raise EnergyModelError("the loihi energy model prices the mapped network: give the graph the counts came from")
    e = {k: c.get(f"loihi.{k}") for k in ("e_synop_conv", "e_synop_sparse", "e_synop_dense", "e_neuron_access",
                                          "e_neuron_update", "e_spike_out", "e_axon_out", "e_hop_east_west",
                                          "e_hop_north_south", "e_embedded_op")}
    cpt, mx = int(c.get("loihi.cores_per_tile")), int(c.get("loihi.mesh_tiles_x"))
    mp = opts.get("mapping") or loihi_mapping(graph, opts.get("chip", "loihi2"))
    steps_samples = counts.steps * counts.samples
    start, first = 0, {}
    for L in mp.layers:  # consecutive placement in graph order
        first[L.name] = range(start, start + L.cores)
        start += L.cores
    origin = lambda s: mp.origin.get(s, s)  # noqa: E731
    readers: dict = {}
    for L in mp.layers:
        for s in L.sources:
            readers.setdefault(origin(s), []).append(L.name)
    hop = {}
    for name, dsts in readers.items():
        if name in first:
            hop[name] = sum(_mean_hop_pj(first[name], first[d], cpt, mx, e["e_hop_east_west"], e["e_hop_north_south"])
                            for d in dsts) / len(dsts)
    layer_of = {n: L for L in mp.layers for n in L.nodes}

    def graded(r: LayerCounts) -> float:
        """Binary events one counted event of ``r`` stands for: 1, or b x the graded-spike assumption."""
        return 1 if r.bit_ops == 1 else r.bit_ops * c.get("loihi.graded_events_per_bit")

    counted = {r.name: r for r in counts.rows}
    # output events of mapped layers that are not neuron rows (adders, accumulators, or-pools): the
    # non-zero inputs of a synapse that reads them (what they send, one message per non-zero value)
    sent = {}
    for r in counts.of_kind("synapse"):
        if r.name not in graph.nodes:  # a synapse only the quantized graph has (e.g. Loihi's tie-gap shift)
            continue
        src = graph[graph[r.name].inputs[0]]
        src = src.inputs[0] if src.op == "TemporalMean" else src.name
        sent.setdefault(origin(src), r.total("nonzero_inputs"))
    for r in counts.of_kind("reduction"):  # a spike-map reduction reads the non-zero values it adds
        if r.name in graph.nodes and r.value_class != "real":
            sent.setdefault(origin(graph[r.name].inputs[0]), r.total("accumulates"))
    out, notes = [], []
    host = [r.name for r in counts.rows if mp.nodes.get(r.name, {}).get("placement") == "host"
            and r.kind not in ELEMENTWISE_KINDS]
    for r in counts.rows:
        comp = {}
        L = layer_of.get(r.name)
        if r.kind == "synapse":
            if r.name in host:
                comp = {}
            else:
                key = "e_synop_conv" if r.op.endswith(("Conv2d", "Conv1d")) else "e_synop_dense"
                comp = {"synapses": e[key] * graded(r) * r.total("synops")}
        elif r.kind == "product":
            comp = {"attention": e["e_embedded_op"] * r.bit_ops * r.total("accumulates")}
        elif r.kind == "reduction":
            comp = {"reductions": e["e_synop_sparse"] * r.total("accumulates")} if r.name not in host else {}
        elif r.kind in ELEMENTWISE_KINDS:  # off the neuro-cores, priced like attention wherever the mapping puts them
            comp = _elementwise(r, c, e["e_embedded_op"])
            if r.kind == "buffer":
                notes.append(f"{r.name}: its block accumulator's memory traffic is not priced (the loihi model "
                             f"prices operations and events; step and horowitz price it)")
        if r.kind == "neuron" and L is not None and L.name == r.name:
            events = r.total("spikes") * graded(r)
            comp.update(_layer_events(L, steps_samples, events, e, hop.get(L.name, 0.0)))
        out.append(LayerEnergy(r.name, r.kind, comp))
    for L in mp.layers:  # compartments with no neuron row: adders, accumulators, or-pools, readouts
        if L.name in counted and counted[L.name].kind == "neuron":
            continue
        events = sent.get(L.name, 0) if L.role != "readout" else 0
        if L.name not in sent and L.role != "readout":
            notes.append(f"{L.name} ({L.role}): its output messages are not counted (no synapse reads it)")
        out.append(LayerEnergy(L.name + ":compartments", "compartments",
                               _layer_events(L, steps_samples, events, e, hop.get(L.name, 0.0))))
    if host:
        notes.append("on the host, not priced: " + ", ".join(host))
    opts["_notes"] = notes
    return out


def _layer_events(L, steps_samples: int, events: int, e: dict, hop_pj: float) -> dict:
    fan = max(1, int(L.out_axons_per_neuron))
    return {"neurons": (e["e_neuron_access"] + e["e_neuron_update"]) * L.neurons * steps_samples,
            "spike_out": e["e_spike_out"] * events,
            "noc": (e["e_axon_out"] + hop_pj) * events * fan}


# --------------------------------------------------------------------------- entry point

MODELS: dict[str, Callable] = {"paper": _paper, "step": _step, "horowitz": _horowitz, "loihi": _loihi}


def resolve_models(spec: str) -> list[str]:
    """``'all'`` or a comma list -> model names (a clear error for an unknown one)."""
    names = list(MODELS) if spec in ("all", "", None) else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise EnergyModelError(f"unknown energy model {bad[0]!r}; choose from {', '.join(MODELS)} or 'all'")
    return names


def price(counts: Counts, model: str, graph: Optional[ir.Graph] = None, constants: Optional[Constants] = None,
          **options) -> EnergyReport:
    """Price ``counts`` (of ``graph``) with energy model ``model``. Options: ``accumulator_bits``
    (horowitz; default the widest membrane), ``mapping``/``chip`` (loihi)."""
    resolve_models(model)
    c = constants if constants is not None else load_constants()
    c.used = {}
    opts = dict(options)
    rows = MODELS[model](counts, graph, c, opts)
    assumptions = {}
    if model == "horowitz":
        assumptions["accumulator_bits"] = opts.get("accumulator_bits") or accumulator_bits(counts)
        assumptions["number_format"] = counts_format(counts)
    return EnergyReport(model, c.description(model), counts.samples, tuple(rows), dict(c.used),
                        tuple(opts.get("_notes", ())), assumptions)


__all__ = ["EnergyModelError", "EnergyReport", "LayerEnergy", "MODELS", "accumulator_bits", "counts_format",
           "ELEMENTWISE_COSTS", "ELEMENTWISE_KINDS", "elementwise_adds",
           "loihi_mapping", "neuron_op_bits",
           "price", "resolve_models", "weight_counts"]
