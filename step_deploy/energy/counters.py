"""Operation and bit counters per layer and time step: what an energy model prices.

``count_graph(graph, traces, steps)`` counts, for a batch, from the values the graph's nodes
produced (``traces[name]``: ``(T, B, *node_shape)``, what ``simulators.reference.run(...,
record=needed_traces(graph))`` or ``simulators.golden.run_golden`` return, or what
``energy.torch_hooks.hook_traces`` takes from the PyTorch model):

* **synapses** (``Conv1d``/``Conv2d``/``Linear`` and their Loihi ``Fixed*`` and FPGA ``Fpga*``
  versions), per step: ``nonzero_inputs``; ``synops``: each non-zero input times its fan-out, the
  number of outputs it reaches (stride, dilation and padding aware: padding positions are not
  inputs; NeuroBench's "effective" operations); ``dense_macs``: every output times its full
  kernel (padding included, the paper convention); ``weight_bits_read``: one weight per synaptic
  operation (event-driven); ``weight_bits_read_dense``: one weight per dense MAC (no reuse). The
  row's ``value_class`` says what arrives: ``binary`` spikes make each synop an accumulate
  (``operation='ac'``); ``multilevel`` values (spike-map residual sums, counts; ``bits`` says how
  wide) and ``real`` values (the analog first layer) make it a multiply-accumulate
  (``operation='mac'``: a ``bits``-bit value times the weight); ``multibit`` spikes (a neuron's
  integer or ternary output of ``bits`` bits, see *Multi-bit spikes*) make it ``bit_ops = bits``
  accumulates (``operation='ac'``).
  ``TemporalLinear`` (PSN's charge across time, ``Y[t] = Σ_τ W[t,τ] X[τ] + b[t]``) is a synapse
  too: an input value at step τ reaches the T outputs of its position (counted at step τ), and
  every output is a T-term sum (``dense_macs`` = values x T per step).
* **neurons** (``Neuron`` and its subclasses ``KLIFNeuron``, ``EIFNeuron``, ``CLIFNeuron``,
  ``GLIFNeuron``; ``LoihiLIF``, ``FpgaLIF``; ``Heaviside``, PSN's stateless spike, which has no
  membrane: 0 state bits), per step: ``spikes`` emitted (non-zero
  outputs); ``updates`` (every neuron, every step: leak, compare, reset);
  ``membrane_bits_read`` and ``membrane_bits_written`` (every neuron's state, every step);
  ``spike_bits``: spikes times the bits of one spike (event traffic to the next layers);
  ``spike_bits_dense``: every output value's bits (a dense stream of the layer's output).
* **products** of two live tensors (``MatMul``, ``Mul``: attention, never synapses), per step:
  ``products`` (the dense count), ``coincidences`` (products whose operands are both non-zero:
  the ANDs that are 1, the popcount's increments) and ``accumulates`` (the additions of those
  products into outputs: the coincidences of a ``MatMul``, none for an elementwise ``Mul``).
  ``operation`` is ``and`` when both operands are binary, ``ac`` when one is binary (the other
  operand's value is added where the spike is 1), ``mac`` otherwise.
* **reductions** (``Sum``, ``Mean``: SDT's column sum, QKFormer's per-head channel sum, the token
  mean before the head), per step: ``values`` read and ``accumulates`` (non-zero inputs added).
* **nonlinear** element-wise ops of the seed attention designs, dense (every value, every step:
  their cost does not depend on which values are zero), per step:

  - ``ReLU`` (A²OS²A's K): ``compares`` = one per value (``max(x, 0)``: a compare with zero and a
    select; assumption: counted as one compare, no source prices a sign-bit select separately).
  - ``Shiftmax`` (bipolar self-attention), per score row of ``n`` entries, from its integer
    definition (``ir.Shiftmax``, ``simulators.integer_ops.op_shiftmax``): ``n`` compares (the running
    row maximum, one per arriving entry), ``n`` subtractions (``Δ = x - max``), ``n`` shifts
    (``a = 1 << (F + Δ)``; the floor ``Δ >= -F`` is the sign of the shift amount, no extra
    operation), ``n - 1`` adds (``S = Σ a``), one leading-zero count (``E = ceil(log2 S)``) and ``n``
    shifts (``a << (F + L - E)``). Source: the operation list of the definition; that a hardware
    unit needs no more (no multiplier, no divider) is the design's claim (seed_models.md §4), the
    op-by-op count is ours.

  Counters: ``values``, ``compares``, ``subtracts``, ``adds``, ``shifts``, ``leading_zero_counts``.
* **buffers** (``TemporalBlockSum``: STAtten's sum of ``K_τᵀ V_τ`` over a block of ``block``
  steps), dense, per step: ``adds`` (one per element: the step's value added into the block
  accumulator), ``buffer_bits_written`` and ``buffer_bits_read`` (every element of the accumulator
  written and read once per step, at ``membrane_bits`` bits per element: the block sum's own width,
  ``ceil(log2(level + 1))`` of its value class when the level is known, else 32). Emitting the
  block's sum to the ``block`` steps of the block reads the same accumulator (counted in the read);
  the consumers' operands that wait ``block - 1`` steps for it are not counted (assumption: the
  cycle simulator prices that latency, not the energy models).

**Multi-bit spikes (Bit Budget).** A neuron with L output levels (IR ``Neuron.levels``: STEP's
ILIF sends integers 0..D, L = D + 1; ternary neurons -1/0/+1, L = 3) sends ``b = ceil(log2(L))``
bits per non-zero spike, so ``spike_bits`` = spikes x b. A synaptic operation on such a spike adds
``value·w``; with no multiplier that is a shift-and-add over the spike's bits
(``value·w = Σ_i bit_i(value)·(w << i)``), so the row states ``bit_ops = b``: the accumulates one
counted synaptic operation costs (the weight is read once). A product (attention) with a
multi-bit spike operand and no binary one likewise costs ``bit_ops`` = the bits of its narrower
multi-bit spike operand (a binary operand only gates: one accumulate, as before). A ternary
spike (-1/0/+1: L = 3, 2 bits, a magnitude bit and a sign) makes each synaptic operation a
*signed add* (the weight added or subtracted, no multiplier: contract §2) and a product with a
ternary operand (A²OS²A's ``(Q·Kᵀ)·V``, bipolar attention's ``Q·Kᵀ``) signed adds of the other
operand; both are priced by the spike's 2 bits like every multi-bit spike (``bit_ops = 2``; an
assumption: in a sign-magnitude datapath the sign bit selects add or subtract, so one add/subtract
is a lower bound and 2 the Bit Budget convention used throughout). Shen et al.'s
Bit Budget (CVPR 2024, abstract: spike and weight bits are the budget, not SynOps; its S-ACE
formula could not be read, see ``docs/energy.md``) is the source of pricing by bits; the
shift-and-add decomposition is ours. Binary networks are unchanged (``bit_ops = 1`` everywhere).

**Readout.** A synapse that reads a ``TemporalMean`` (the head after STEP's mean over T) is
counted as every deployed network runs it: per step on the mean's input, followed by a temporal
sum (``quantize-loihi``/``quantize-fpga`` reorder ``TemporalMean -> Linear`` into ``Linear ->
TemporalSum``, exactly). So the head's counts are the same for the float graph, the quantized
graph and the PyTorch model.

**Bits.** ``weight_bits``/``membrane_bits`` (an int for every layer, or ``{node: bits}``)
override the widths the graph states: FPGA nodes their ``weight_bits``/``membrane_bits``, Loihi
synapses 8-bit mantissas and ``LoihiLIF`` 48 state bits (``u`` and ``v``, 24 bits each), float
graphs 32 bits (float32). :func:`bit_widths` reads them from a graph, so a float graph can be
counted with the widths of its quantized version.

All counts are exact integers (int64) per sample and step; nothing depends on the order of the
batch or on the float precision, only on which values are zero."""
from __future__ import annotations

import functools
import math
import weakref
from typing import Mapping, Optional, Union

import numpy as np
import torch

from step_deploy import ir

from .counts import CONVENTIONS, CountError, Counts, LayerCounts, compare_counts  # noqa: F401 (re-exported)
from .nonzeros import Trace, _count_true, _NonZeros
from .value_classes import BINARY, MULTIBIT, REAL, ValueClass, value_classes

SYNAPSE_OPS = {"Conv2d": "conv2d", "FixedConv2d": "conv2d", "FpgaConv2d": "conv2d",
               "Conv1d": "conv1d", "FixedConv1d": "conv1d", "FpgaConv1d": "conv1d",
               "Linear": "linear", "FixedLinear": "linear", "FpgaLinear": "linear",
               "TemporalLinear": "temporal"}
NEURON_OPS = ("Neuron", "KLIFNeuron", "EIFNeuron", "CLIFNeuron", "GLIFNeuron", "LoihiLIF", "FpgaLIF", "Heaviside")
PRODUCT_OPS = ("MatMul", "Mul")
REDUCTION_OPS = ("Sum", "Mean")
NONLINEAR_OPS = ("ReLU", "Shiftmax")
BUFFER_OPS = ("TemporalBlockSum",)

#: counters of each kind of row, in report order
COUNTERS = {
    "synapse": ("nonzero_inputs", "synops", "dense_macs", "weight_bits_read", "weight_bits_read_dense"),
    "neuron": ("spikes", "updates", "membrane_bits_read", "membrane_bits_written", "spike_bits", "spike_bits_dense"),
    "product": ("products", "coincidences", "accumulates"),
    "reduction": ("values", "accumulates"),
    "nonlinear": ("values", "compares", "subtracts", "adds", "shifts", "leading_zero_counts"),
    "buffer": ("values", "adds", "buffer_bits_written", "buffer_bits_read"),
}

#: neurons with no state to read and write
STATELESS_NEURON_OPS = ("Heaviside",)
#: float neurons with more than one state variable per neuron
FLOAT_STATES = {"CLIFNeuron": 2}

FLOAT_BITS = 32
LOIHI_WEIGHT_BITS = 8
LOIHI_STATE_BITS = 48  # u and v, 24 bits each (lava-nc fixed_pt)

Bits = Union[None, int, Mapping[str, int]]


# --------------------------------------------------------------------------- helpers


def _bits_for(spec: Bits, name: str, default: int, option: str) -> int:
    if spec is None:
        return default
    bits = spec.get(name, default) if isinstance(spec, Mapping) else spec
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
        raise CountError(f"{option}={bits!r} for node {name!r}: give a positive number of bits")
    return int(bits)


def default_weight_bits(node: ir.Node) -> int:
    if node.op.startswith("Fpga"):
        return int(node.weight_bits)
    if node.op.startswith("Fixed"):
        return LOIHI_WEIGHT_BITS
    return FLOAT_BITS


def default_membrane_bits(node: ir.Node) -> int:
    """State bits of one neuron: FPGA its ``membrane_bits``, Loihi ``u`` and ``v``, float32 per
    state of a float neuron (CLIF has two: ``V`` and ``M``), none for the stateless ``Heaviside``."""
    if node.op == "FpgaLIF":
        return int(node.membrane_bits)
    if node.op == "LoihiLIF":
        return LOIHI_STATE_BITS
    if node.op in STATELESS_NEURON_OPS:
        return 0
    return FLOAT_BITS * FLOAT_STATES.get(node.op, 1)


def bit_widths(graph: ir.Graph) -> tuple[dict[str, int], dict[str, int]]:
    """``(weight_bits, membrane_bits)`` per node, as the graph states them (see the module doc)."""
    wb = {n.name: default_weight_bits(n) for n in graph.nodes.values() if n.op in SYNAPSE_OPS}
    mb = {n.name: default_membrane_bits(n) for n in graph.nodes.values() if n.op in NEURON_OPS}
    return wb, mb


def _synapse_source(graph: ir.Graph, node: ir.Node) -> str:
    """The node whose output a synapse's operations are counted on (see *Readout*)."""
    src = graph[node.inputs[0]]
    return src.inputs[0] if src.op == "TemporalMean" else src.name


def _needed(graph: ir.Graph, classes: Mapping[str, ValueClass], order: list) -> list[str]:
    need = set()
    for n in graph.nodes.values():
        if n.op in SYNAPSE_OPS:
            need.add(_synapse_source(graph, n))
        elif n.op in NEURON_OPS:
            need.add(n.name)
        elif n.op in PRODUCT_OPS:
            need.update(n.inputs)
        elif n.op in REDUCTION_OPS and classes[n.inputs[0]].kind != REAL:
            need.add(n.inputs[0])
    return [n.name for n in order if n.name in need]


def needed_traces(graph: ir.Graph) -> list[str]:
    """The nodes whose outputs :func:`count_graph` reads (record these), in topological order."""
    return list(graph_plan(graph).needed)


# --------------------------------------------------------------------------- what a graph needs, once


class GraphPlan:
    """What counting a graph needs from its structure alone: topological order, per-step shapes,
    value classes (for ``steps``), the traces to record, and per convolution its fan-out map
    (``fans[name]``: int64 ``(*input spatial)`` and, when every position reaches as many outputs
    (a 1x1 convolution), that number; ``positional``: the traces some convolution needs counted per
    position). Built by :func:`graph_plan`."""

    __slots__ = ("order", "shapes", "classes", "needed", "position", "fans", "positional")

    def __init__(self, graph: ir.Graph, steps: Optional[int]):
        self.order = tuple(graph.topo_order())
        self.shapes = graph.infer_shapes()
        self.classes = value_classes(graph, steps)
        self.needed = tuple(_needed(graph, self.classes, self.order))  # a class's kind never depends on T
        self.position = {n.name: i for i, n in enumerate(self.order)}
        self.fans: dict = {}
        positional = set()
        for n in self.order:
            if SYNAPSE_OPS.get(n.op) in ("conv2d", "conv1d"):
                src = _synapse_source(graph, n)
                fan = _conv_fanout(n, self.shapes[src], self.shapes[n.name])
                same = int(fan.reshape(-1)[0]) if bool((fan == fan.reshape(-1)[0]).all()) else None
                self.fans[n.name] = (fan, same)
                if same is None:
                    positional.add(src)
        self.positional = frozenset(positional)


#: graph -> (its node objects when planned, {steps: GraphPlan}); an entry is dropped with its graph
_PLANS: "weakref.WeakKeyDictionary[ir.Graph, tuple]" = weakref.WeakKeyDictionary()


def graph_plan(graph: ir.Graph, steps: Optional[int] = None) -> GraphPlan:
    """The :class:`GraphPlan` of ``graph`` for ``steps``, computed once and reused while the graph
    has the same node objects in the same order (nodes are frozen: adding, removing or replacing
    one gives a new plan). Counting every batch of a data set re-derives nothing."""
    nodes = tuple(graph.nodes.values())
    entry = _PLANS.get(graph)
    if entry is None or len(entry[0]) != len(nodes) or any(a is not b for a, b in zip(entry[0], nodes)):
        entry = (nodes, {})
        _PLANS[graph] = entry
    plan = entry[1].get(steps)
    if plan is None:
        plan = entry[1][steps] = GraphPlan(graph, steps)
    return plan


@functools.lru_cache(maxsize=256)
def _axis_fanout(size_in: int, size_out: int, k: int, s: int, p: int, d: int) -> tuple[int, ...]:
    """For each input position along one axis: how many (output position, kernel tap) pairs read it."""
    f = [0] * size_in
    for o in range(size_out):
        for j in range(k):
            i = o * s + j * d - p
            if 0 <= i < size_in:
                f[i] += 1
    return tuple(f)


def _conv_fanout(n: ir.Node, in_shape: tuple, out_shape: tuple) -> torch.Tensor:
    """int64 ``(*input spatial)``: the (output position, kernel tap) pairs each input position of
    convolution ``n`` reaches, per output channel of its group (the outer product of the per-axis
    fan-outs; stride, dilation and padding aware)."""
    dims = 2 if SYNAPSE_OPS[n.op] == "conv2d" else 1
    k, s = tuple(int(i) for i in n.weight.shape[2:]), _pairs(n.stride, dims)
    p, d = _pairs(n.padding, dims), _pairs(n.dilation, dims)
    fans = [torch.tensor(_axis_fanout(in_shape[1 + a], out_shape[1 + a], k[a], s[a], p[a], d[a]), dtype=torch.int64)
            for a in range(dims)]
    out = fans[0]
    for f in fans[1:]:
        out = out[..., None] * f
    return out


def _pairs(v, n: int) -> tuple[int, ...]:
    return (int(v),) * n if isinstance(v, (int, np.integer)) else tuple(int(i) for i in v)


def _to_arrays(rows: list[LayerCounts], steps: int, samples: int) -> None:
    """Replace every row's counters, ``(T, B)`` int64 tensors or an int (the same count at every
    step of every sample), by int64 ``(B, T)`` arrays, in place: all tensors are stacked and
    converted in one go, all constants filled in one go (each counter its own C-ordered block)."""
    tensors, consts = [], []
    for r in rows:
        for k, v in r.counters.items():
            (tensors if torch.is_tensor(v) else consts).append((r.counters, k, v))
    if tensors:
        block = torch.stack([v for _, _, v in tensors]).transpose(1, 2).contiguous().numpy()
        for (counters, k, _), arr in zip(tensors, block):
            counters[k] = arr
    if consts:
        block = np.empty((len(consts), samples, steps), np.int64)
        block[...] = np.array([int(v) for _, _, v in consts], np.int64)[:, None, None]
        for (counters, k, _), arr in zip(consts, block):
            counters[k] = arr


def _synapse_counts(n: ir.Node, nz: _NonZeros, plan: GraphPlan, src: str) -> tuple[torch.Tensor, int]:
    """``(synops (T, B) int64, dense MACs per step and sample)`` of one synapse node."""
    w = n.weight.shape
    in_shape, out_shape = plan.shapes[src], plan.shapes[n.name]
    if SYNAPSE_OPS[n.op] == "temporal":  # each value reaches the T outputs of its position; T MACs per output
        return nz.count(src, n.name) * int(w[0]), math.prod(out_shape) * int(w[1])
    if SYNAPSE_OPS[n.op] == "linear":
        return nz.count(src, n.name) * int(w[0]), math.prod(in_shape[:-1]) * w[1] * w[0]
    per_channel_out = int(w[0]) // int(n.groups)
    fan, same = plan.fans[n.name]
    if same is not None:  # every position reaches as many outputs (1x1): no per-position counts
        syn = nz.count(src, n.name) * same
    else:
        c = nz.per_position(src, n.name)  # non-zero inputs per position, over channels: (T, B, *spatial)
        syn = (c * fan).sum(tuple(range(2, c.dim())))
    dense = math.prod(out_shape) * w[1] * math.prod(w[2:])
    return syn * per_channel_out, dense


def _matmul_operands(n: ir.Node, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if n.transpose_a:
        a = a.transpose(-1, -2)
    if n.transpose_b:
        b = b.transpose(-1, -2)
    return a, b


def _lift(x: torch.Tensor, rank: int) -> torch.Tensor:
    """``(T, B, *shape)`` -> ``(T, B, 1.., *shape)`` with per-step rank ``rank`` (numpy broadcasting)."""
    extra = rank - (x.dim() - 2)
    return x.reshape(x.shape[:2] + (1,) * extra + x.shape[2:]) if extra > 0 else x


def _product_operation(ca: ValueClass, cb: ValueClass) -> tuple[str, int]:
    """``(operation, bit_ops)`` of a product of two live tensors (see *Multi-bit spikes*)."""
    if ca.kind == BINARY and cb.kind == BINARY:
        return "and", 1
    if BINARY in (ca.kind, cb.kind):
        return "ac", 1
    multibit = [c.bits for c in (ca, cb) if c.kind == MULTIBIT]
    return ("ac", min(multibit)) if multibit else ("mac", 1)


def _synapse_operation(c: ValueClass) -> tuple[str, int]:
    """``(operation, bit_ops)`` of one synaptic operation on an input of class ``c``."""
    if c.kind == BINARY:
        return "ac", 1
    if c.kind == MULTIBIT:
        return "ac", int(c.bits)
    return "mac", 1


def nonlinear_ops(n: ir.Node, shape: tuple) -> dict:
    """Operations of one step and sample of a ``ReLU`` or ``Shiftmax`` node with per-step output
    ``shape`` (see the module doc, *nonlinear*)."""
    size = math.prod(shape)
    ops = {"values": size, "compares": 0, "subtracts": 0, "adds": 0, "shifts": 0, "leading_zero_counts": 0}
    if n.op == "ReLU":
        ops["compares"] = size
        return ops
    row = int(shape[n.axis % len(shape)])
    rows = size // row if row else 0
    ops.update(compares=row * rows, subtracts=row * rows, shifts=2 * row * rows, adds=(row - 1) * rows,
               leading_zero_counts=rows)
    return ops


def default_buffer_bits(c: ValueClass) -> int:
    """Bits of one element of a block accumulator holding values of class ``c``: its level's width,
    else float32."""
    return int(c.bits) if c.kind != REAL and c.bits else FLOAT_BITS


def _wider(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return None if a is None or b is None else max(a, b)


# --------------------------------------------------------------------------- counting


def count_graph(graph: ir.Graph, traces: Mapping[str, Trace], steps: int, membrane_bits: Bits = None,
                weight_bits: Bits = None) -> Counts:
    """Count every synapse, neuron layer, product and reduction of ``graph`` for one batch.

    ``traces[name]``: the output of node ``name`` at every step, ``(T, B, *shape)`` (torch or
    numpy; only which values are non-zero matters) for every node in :func:`needed_traces`.
    ``steps``: T. ``membrane_bits`` / ``weight_bits``: widths overriding the graph's (an int for
    all layers or ``{node name: bits}``). Raises :class:`CountError` naming a missing or misshapen
    trace."""
    steps = int(steps)
    if steps < 1:
        raise CountError(f"steps={steps}: count at least one time step")
    plan = graph_plan(graph, steps)
    shapes, classes, needed = plan.shapes, plan.classes, plan.needed
    if needed and not any(n in traces for n in needed):
        raise CountError("none of the traces count_graph needs was given; record "
                         "energy.counters.needed_traces(graph) (node outputs, (T, B, *shape))")
    nz = _NonZeros(traces, steps, plan.shapes, plan.positional)
    rows, reductions = [], []  # counters: (T, B) int64 tensors, or an int where every entry is the same
    for n in plan.order:
        if n.op in SYNAPSE_OPS:
            src = _synapse_source(graph, n)
            inputs = nz.count(src, n.name)
            syn, dense = _synapse_counts(n, nz, plan, src)
            wb = _bits_for(weight_bits, n.name, default_weight_bits(n), "weight_bits")
            c = classes[src]
            counters = {"nonzero_inputs": inputs, "synops": syn, "dense_macs": dense, "weight_bits_read": syn * wb,
                        "weight_bits_read_dense": dense * wb}
            operation, bit_ops = _synapse_operation(c)
            rows.append(LayerCounts(n.name, n.op, "synapse", c.kind, c.bits, operation,
                                    math.prod(shapes[src]), counters, weight_bits=wb, bit_ops=bit_ops))
        elif n.op in NEURON_OPS:
            spikes = nz.count(n.name, n.name)
            size = math.prod(shapes[n.name])
            mb = 0 if n.op in STATELESS_NEURON_OPS else _bits_for(membrane_bits, n.name, default_membrane_bits(n),
                                                                  "membrane_bits")
            c = classes[n.name]
            counters = {"spikes": spikes, "updates": size, "membrane_bits_read": size * mb,
                        "membrane_bits_written": size * mb, "spike_bits": spikes * c.bits,
                        "spike_bits_dense": size * c.bits}
            rows.append(LayerCounts(n.name, n.op, "neuron", c.kind, c.bits, None, size, counters, membrane_bits=mb,
                                    bit_ops=c.bits if c.kind == MULTIBIT else 1, levels=c.levels))
        elif n.op in PRODUCT_OPS:
            a = nz.mask(n.inputs[0], n.name)
            b = nz.mask(n.inputs[1], n.name)
            ca, cb = classes[n.inputs[0]], classes[n.inputs[1]]
            if n.op == "MatMul":
                a, b = _matmul_operands(n, a, b)
                m, k, nn = a.shape[-2], a.shape[-1], b.shape[-1]
                # Σ_k (non-zero A[:, k]) · (non-zero B[k, :])
                coinc = (_count_true(a, (a.dim() - 2,)) * _count_true(b, (b.dim() - 1,))).flatten(2).sum(2)
                dense = math.prod(a.shape[2:-2]) * m * k * nn
                acc = coinc
            else:
                rank = len(shapes[n.name])
                both = _lift(a, rank) & _lift(b, rank)
                coinc = _count_true(both, tuple(range(2, both.dim())))
                dense = math.prod(shapes[n.name])
                acc = 0
            counters = {"products": dense, "coincidences": coinc, "accumulates": acc}
            operation, bit_ops = _product_operation(ca, cb)
            rows.append(LayerCounts(n.name, n.op, "product", f"{ca.kind}*{cb.kind}", _wider(ca.bits, cb.bits),
                                    operation, dense, counters, bit_ops=bit_ops))
        elif n.op in REDUCTION_OPS:
            reductions.append(n)
        elif n.op in NONLINEAR_OPS:
            c = classes[n.inputs[0]]
            ops = nonlinear_ops(n, shapes[n.name])
            rows.append(LayerCounts(n.name, n.op, "nonlinear", c.kind, c.bits, n.op.lower(), ops["values"], ops))
        elif n.op in BUFFER_OPS:
            c = classes[n.inputs[0]]
            size = math.prod(shapes[n.name])
            bb = _bits_for(membrane_bits, n.name, default_buffer_bits(classes[n.name]), "membrane_bits")
            counters = {"values": size, "adds": size, "buffer_bits_written": size * bb, "buffer_bits_read": size * bb}
            rows.append(LayerCounts(n.name, n.op, "buffer", c.kind, c.bits, "ac", size, counters, membrane_bits=bb))
    for n in reductions:  # after the others: a reduction of real values needs no trace, only B
        src = n.inputs[0]
        c = classes[src]
        size = math.prod(shapes[src])
        # membranes, weighted sums: no exact zeros to skip, every value is added
        acc = size if c.kind == REAL else nz.count(src, n.name)
        rows.append(LayerCounts(n.name, n.op, "reduction", c.kind, c.bits, "ac", size,
                                {"values": size, "accumulates": acc}))
    samples = nz.samples or 0
    _to_arrays(rows, steps, samples)
    return Counts(steps, samples, tuple(sorted(rows, key=lambda r: plan.position[r.name])))


__all__ = ["COUNTERS", "CONVENTIONS", "CountError", "Counts", "GraphPlan", "LayerCounts", "bit_widths",
           "compare_counts", "count_graph", "default_membrane_bits", "default_weight_bits", "graph_plan",
           "needed_traces", "SYNAPSE_OPS", "NEURON_OPS", "PRODUCT_OPS", "REDUCTION_OPS", "STATELESS_NEURON_OPS",
           "NONLINEAR_OPS", "BUFFER_OPS", "nonlinear_ops", "default_buffer_bits"]
