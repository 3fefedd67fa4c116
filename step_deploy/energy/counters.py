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
  (``operation='mac'``: a ``bits``-bit value times the weight).
* **neurons** (``Neuron``, ``LoihiLIF``, ``FpgaLIF``), per step: ``spikes`` emitted (non-zero
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

import math
from typing import Mapping, Optional, Union

import numpy as np
import torch

from step_deploy import ir

from .counts import CONVENTIONS, CountError, Counts, LayerCounts, compare_counts  # noqa: F401 (re-exported)
from .value_classes import BINARY, REAL, ValueClass, value_classes

SYNAPSE_OPS = {"Conv2d": "conv2d", "FixedConv2d": "conv2d", "FpgaConv2d": "conv2d",
               "Conv1d": "conv1d", "FixedConv1d": "conv1d", "FpgaConv1d": "conv1d",
               "Linear": "linear", "FixedLinear": "linear", "FpgaLinear": "linear"}
NEURON_OPS = ("Neuron", "LoihiLIF", "FpgaLIF")
PRODUCT_OPS = ("MatMul", "Mul")
REDUCTION_OPS = ("Sum", "Mean")

#: counters of each kind of row, in report order
COUNTERS = {
    "synapse": ("nonzero_inputs", "synops", "dense_macs", "weight_bits_read", "weight_bits_read_dense"),
    "neuron": ("spikes", "updates", "membrane_bits_read", "membrane_bits_written", "spike_bits", "spike_bits_dense"),
    "product": ("products", "coincidences", "accumulates"),
    "reduction": ("values", "accumulates"),
}

FLOAT_BITS = 32
LOIHI_WEIGHT_BITS = 8
LOIHI_STATE_BITS = 48  # u and v, 24 bits each (lava-nc fixed_pt)

Bits = Union[None, int, Mapping[str, int]]
Trace = Union[torch.Tensor, np.ndarray]


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
    if node.op == "FpgaLIF":
        return int(node.membrane_bits)
    if node.op == "LoihiLIF":
        return LOIHI_STATE_BITS
    return FLOAT_BITS


def bit_widths(graph: ir.Graph) -> tuple[dict[str, int], dict[str, int]]:
    """``(weight_bits, membrane_bits)`` per node, as the graph states them (see the module doc)."""
    wb = {n.name: default_weight_bits(n) for n in graph.nodes.values() if n.op in SYNAPSE_OPS}
    mb = {n.name: default_membrane_bits(n) for n in graph.nodes.values() if n.op in NEURON_OPS}
    return wb, mb


def _synapse_source(graph: ir.Graph, node: ir.Node) -> str:
    """The node whose output a synapse's operations are counted on (see *Readout*)."""
    src = graph[node.inputs[0]]
    return src.inputs[0] if src.op == "TemporalMean" else src.name


def needed_traces(graph: ir.Graph) -> list[str]:
    """The nodes whose outputs :func:`count_graph` reads (record these), in topological order."""
    need = set()
    classes = value_classes(graph)
    for n in graph.nodes.values():
        if n.op in SYNAPSE_OPS:
            need.add(_synapse_source(graph, n))
        elif n.op in NEURON_OPS:
            need.add(n.name)
        elif n.op in PRODUCT_OPS:
            need.update(n.inputs)
        elif n.op in REDUCTION_OPS and classes[n.inputs[0]].kind != REAL:
            need.add(n.inputs[0])
    return [n.name for n in graph.topo_order() if n.name in need]


def _nonzero(traces: Mapping[str, Trace], name: str, shape: tuple, steps: int, samples: Optional[int],
             user: str) -> torch.Tensor:
    if name not in traces:
        raise CountError(f"no trace of node {name!r} (needed to count {user!r}); record every node of "
                         f"energy.counters.needed_traces(graph)")
    x = traces[name]
    x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    want = (steps, samples if samples is not None else (x.shape[1] if x.dim() > 1 else -1)) + tuple(shape)
    if tuple(x.shape) != want:
        raise CountError(f"trace of node {name!r} has shape {tuple(x.shape)}, expected (T, B, *shape) = {want}")
    return x != 0


def _axis_fanout(size_in: int, size_out: int, k: int, s: int, p: int, d: int) -> torch.Tensor:
    """For each input position along one axis: how many (output position, kernel tap) pairs read it."""
    f = np.zeros(size_in, np.float64)
    for o in range(size_out):
        for j in range(k):
            i = o * s + j * d - p
            if 0 <= i < size_in:
                f[i] += 1
    return torch.from_numpy(f)


def _pairs(v, n: int) -> tuple[int, ...]:
    return (int(v),) * n if isinstance(v, (int, np.integer)) else tuple(int(i) for i in v)


def _int(x: torch.Tensor) -> np.ndarray:
    """``(T, B)`` counts (integer or float64) -> int64 ``(B, T)``."""
    x = x.T.numpy()
    return np.rint(x).astype(np.int64) if x.dtype.kind == "f" else x.astype(np.int64)


def _synapse_counts(n: ir.Node, nz: torch.Tensor, in_shape: tuple, out_shape: tuple) -> tuple[torch.Tensor, int]:
    """``(synops (T, B), dense MACs per step and sample)`` of one synapse node."""
    kind = SYNAPSE_OPS[n.op]
    w = n.weight.shape
    if kind == "linear":
        return nz.flatten(2).sum(2) * w[0], math.prod(in_shape[:-1]) * w[1] * w[0]
    dims = 2 if kind == "conv2d" else 1
    k, s = w[2:], _pairs(n.stride, dims)
    p, d = _pairs(n.padding, dims), _pairs(n.dilation, dims)
    per_channel_out = w[0] // int(n.groups)
    fans = [_axis_fanout(in_shape[1 + a], out_shape[1 + a], k[a], s[a], p[a], d[a]) for a in range(dims)]
    c = nz.sum(2).to(torch.float64)  # non-zero inputs per position, over channels: (T, B, *spatial)
    syn = torch.einsum("tbhw,h,w->tb", c, *fans) if dims == 2 else torch.einsum("tbl,l->tb", c, fans[0])
    dense = math.prod(out_shape) * w[1] * math.prod(k)
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


def _product_operation(ca: ValueClass, cb: ValueClass) -> str:
    if ca.kind == BINARY and cb.kind == BINARY:
        return "and"
    return "ac" if BINARY in (ca.kind, cb.kind) else "mac"


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
    shapes = graph.infer_shapes()
    classes = value_classes(graph, steps)
    needed = needed_traces(graph)
    if needed and not any(n in traces for n in needed):
        raise CountError("none of the traces count_graph needs was given; record "
                         "energy.counters.needed_traces(graph) (node outputs, (T, B, *shape))")
    samples: Optional[int] = None
    rows, reductions = [], []
    for n in graph.topo_order():
        if n.op in SYNAPSE_OPS:
            src = _synapse_source(graph, n)
            nz = _nonzero(traces, src, shapes[src], steps, samples, n.name)
            samples = nz.shape[1]
            syn, dense = _synapse_counts(n, nz, shapes[src], shapes[n.name])
            wb = _bits_for(weight_bits, n.name, default_weight_bits(n), "weight_bits")
            c = classes[src]
            ones = torch.ones(steps, samples, dtype=torch.float64)
            counters = {"nonzero_inputs": nz.flatten(2).sum(2), "synops": syn, "dense_macs": ones * dense,
                        "weight_bits_read": syn * wb, "weight_bits_read_dense": ones * (dense * wb)}
            rows.append(LayerCounts(n.name, n.op, "synapse", c.kind, c.bits, "ac" if c.kind == BINARY else "mac",
                                    math.prod(shapes[src]), {k: _int(v) for k, v in counters.items()}, weight_bits=wb))
        elif n.op in NEURON_OPS:
            nz = _nonzero(traces, n.name, shapes[n.name], steps, samples, n.name)
            samples = nz.shape[1]
            size = math.prod(shapes[n.name])
            mb = _bits_for(membrane_bits, n.name, default_membrane_bits(n), "membrane_bits")
            c = classes[n.name]
            spikes = nz.flatten(2).sum(2)
            ones = torch.ones(steps, samples, dtype=torch.float64)
            counters = {"spikes": spikes, "updates": ones * size, "membrane_bits_read": ones * (size * mb),
                        "membrane_bits_written": ones * (size * mb), "spike_bits": spikes * c.bits,
                        "spike_bits_dense": ones * (size * c.bits)}
            rows.append(LayerCounts(n.name, n.op, "neuron", c.kind, c.bits, None, size,
                                    {k: _int(v) for k, v in counters.items()}, membrane_bits=mb))
        elif n.op in PRODUCT_OPS:
            a = _nonzero(traces, n.inputs[0], shapes[n.inputs[0]], steps, samples, n.name)
            b = _nonzero(traces, n.inputs[1], shapes[n.inputs[1]], steps, samples, n.name)
            samples = a.shape[1]
            ca, cb = classes[n.inputs[0]], classes[n.inputs[1]]
            if n.op == "MatMul":
                a, b = _matmul_operands(n, a, b)
                m, k, nn = a.shape[-2], a.shape[-1], b.shape[-1]
                coinc = (a.sum(-2) * b.sum(-1)).flatten(2).sum(2)  # Σ_k (non-zero A[:, k]) · (non-zero B[k, :])
                dense = math.prod(a.shape[2:-2]) * m * k * nn
                acc = coinc
            else:
                rank = len(shapes[n.name])
                coinc = (_lift(a, rank) & _lift(b, rank)).flatten(2).sum(2)
                dense = math.prod(shapes[n.name])
                acc = torch.zeros_like(coinc)
            ones = torch.ones(steps, samples, dtype=torch.float64)
            counters = {"products": ones * dense, "coincidences": coinc, "accumulates": acc}
            rows.append(LayerCounts(n.name, n.op, "product", f"{ca.kind}*{cb.kind}", _wider(ca.bits, cb.bits),
                                    _product_operation(ca, cb), dense, {k: _int(v) for k, v in counters.items()}))
        elif n.op in REDUCTION_OPS:
            reductions.append(n)
    samples = samples or 0
    for n in reductions:  # after the others: a reduction of real values needs no trace, only B
        src = n.inputs[0]
        c = classes[src]
        size = math.prod(shapes[src])
        values = torch.ones(steps, samples, dtype=torch.float64) * size
        if c.kind == REAL:  # membranes, weighted sums: no exact zeros to skip, every value is added
            acc = values
        else:
            nz = _nonzero(traces, src, shapes[src], steps, samples, n.name)
            acc = nz.flatten(2).sum(2)
        row = LayerCounts(n.name, n.op, "reduction", c.kind, c.bits, "ac", size,
                          {"values": _int(values), "accumulates": _int(acc)})
        rows.append(row)
    position = {n.name: i for i, n in enumerate(graph.topo_order())}
    return Counts(steps, samples, tuple(sorted(rows, key=lambda r: position[r.name])))


__all__ = ["COUNTERS", "CONVENTIONS", "CountError", "Counts", "LayerCounts", "bit_widths", "compare_counts",
           "count_graph", "default_membrane_bits", "default_weight_bits", "needed_traces", "SYNAPSE_OPS",
           "NEURON_OPS", "PRODUCT_OPS", "REDUCTION_OPS"]
