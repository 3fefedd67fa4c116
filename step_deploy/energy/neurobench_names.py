"""NeuroBench 2.3's metrics computed from our counts, under NeuroBench's names and definitions, so a
report can be pasted next to a NeuroBench table (``docs/energy_oracles.md`` says how each one was
checked against NeuroBench itself).

NeuroBench's definitions (read in ``neurobench/metrics/``; the keys are the names its
``Benchmark.run`` reports):

* ``SynapticOperations`` (per sample: totals divided by the number of samples)

  - ``Effective_ACs`` / ``Effective_MACs``: each Conv/Linear run on its input with non-zero
    inputs and non-zero weights set to 1, outputs summed: non-zero input x the outputs it reaches
    (padding positions are zeros, so they add nothing) -- our ``synops``. A layer's operations are
    ACs when every value of its input (the whole batch of that call) is -1, 0 or 1, else MACs:
    NeuroBench decides by value, our rows by the graph (``value_class``). With ``traces``, the
    split here is decided by value like NeuroBench's; without, ``binary`` rows are ACs and
    ``multilevel``/``real`` rows MACs (the same whenever a multi-level input reaches 2 in the batch).
  - ``Dense``: the same with every input and weight set to 1 -- padding still excluded, so it is
    our ``synops`` on an all-non-zero input, *not* our ``dense_macs`` (which counts padded taps).
  - The head after the temporal mean: the PyTorch model runs it once per sample on the mean over T
    (real values: MACs), where our counters count it per step on the mean's input (see
    ``counters`` *Readout*). NeuroBench's numbers for it need the traces (non-zero means); without
    them our per-step count is used and ``notes`` says so.
  - Bias additions are not counted (as in our counters); zero weights are skipped (our ``synops``
    count fan-out whatever the weight: they differ only for pruned weights).

* ``ActivationSparsity``: zero outputs / all outputs of every activation module (our neuron rows),
  over steps and samples: ``1 - spikes / (neurons x T x B)``.
* ``Footprint``: bytes of parameters and buffers; here: bytes of every array the graph holds
  (weights, biases, batch-norm statistics) at its stored dtype. A PyTorch model also holds
  training-only buffers (``num_batches_tracked``, surrogate constants), scalar neuron parameters
  (a threshold ``nn.Parameter``; a node field, not an array, in the graph) and modules the forward
  never runs: those are in NeuroBench's number and not here.
* ``ConnectionSparsity``: zero weights / weights of every Conv/Linear (weights only, no biases),
  computed in float32 and rounded to 4 decimals as NeuroBench does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from step_deploy import ir

from .counters import SYNAPSE_OPS
from .counts import CountError, Counts
from .value_classes import BINARY

NEUROBENCH_VERSION = "2.3"

#: NeuroBench's metric names (as ``Benchmark.run`` reports them) and what each is computed from here
METRICS = {
    "SynapticOperations": {
        "Effective_MACs": "synops of Conv/Linear rows whose input is not spikes, per sample",
        "Effective_ACs": "synops of Conv/Linear rows whose input is spikes (values in {-1, 0, 1}), per sample",
        "Dense": "synops if every input were non-zero (padding excluded, unlike dense_macs), per sample",
    },
    "ActivationSparsity": "1 - spikes / (neurons x steps x samples), over every neuron row",
    "Footprint": "bytes of every array the graph holds (weights, biases, batch-norm statistics); "
                 "scalar neuron constants and training-only buffers are not arrays there",
    "ConnectionSparsity": "zero weights / weights of every Conv/Linear node, rounded to 4 decimals",
}
#: the snake_case names NeuroBench 1.x used for the same metrics
LEGACY_NAMES = {"synaptic_operations": "SynapticOperations", "activation_sparsity": "ActivationSparsity",
                "footprint": "Footprint", "connection_sparsity": "ConnectionSparsity"}


@dataclass(frozen=True)
class LayerOps:
    """One Conv/Linear as NeuroBench counts it, over the whole batch: ``effective`` operations,
    ``dense`` operations (every input and weight non-zero), ``spiking`` (ACs, else MACs) and
    ``readout`` (run once per sample on the temporal mean)."""

    name: str
    effective: int
    dense: int
    spiking: bool
    readout: bool


def _binary_by_value(x) -> bool:
    x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return bool(((x == 0) | (x == 1) | (x == -1)).all())


def _valid_taps(size_in: int, size_out: int, k: int, s: int, p: int, d: int) -> int:
    """Kernel taps that land inside the input (not on padding), summed over one axis's outputs."""
    return sum(1 for o in range(size_out) for j in range(k) if 0 <= o * s + j * d - p < size_in)


def _all_nonzero_synops(node: ir.Node, in_shape: tuple, out_shape: tuple) -> int:
    """Operations of one step and sample when every input and weight is non-zero: NeuroBench's
    ``Dense`` (a convolution of ones with ones; zero padding adds nothing)."""
    w = node.weight.shape
    if SYNAPSE_OPS[node.op] == "linear":
        return math.prod(in_shape[:-1]) * w[1] * w[0]
    if SYNAPSE_OPS[node.op] == "temporal":  # PSN's map across time: a T-term sum per output value
        return math.prod(out_shape) * w[1]
    dims = len(w) - 2
    pairs = [(v,) * dims if isinstance(v, (int, np.integer)) else tuple(v)
             for v in (node.stride, node.padding, node.dilation)]
    taps = math.prod(_valid_taps(in_shape[1 + a], out_shape[1 + a], w[2 + a], pairs[0][a], pairs[1][a], pairs[2][a])
                     for a in range(dims))
    return w[0] * w[1] * taps


def _synapse_source(graph: ir.Graph, node: ir.Node) -> tuple[str, bool]:
    """``(the node a synapse's operations are counted on, whether it reads a temporal mean)``
    (our counters count a head after ``TemporalMean`` per step on the mean's input)."""
    src = graph[node.inputs[0]]
    return (src.inputs[0], True) if src.op == "TemporalMean" else (src.name, False)


def synaptic_operations_by_layer(counts: Counts, graph: ir.Graph,
                                 traces: Optional[Mapping[str, object]] = None) -> dict[str, LayerOps]:
    """NeuroBench's per-layer view of our counts (``counts`` taken on ``graph``). ``traces``: the
    same ``{node: (T, B, ...)}`` the counts came from (e.g. ``energy.hook_traces``); with them the
    AC/MAC split is decided by value and the readout head is counted on the temporal mean, exactly
    as NeuroBench does; without them by value class, and the head per step."""
    shapes = graph.infer_shapes()
    out = {}
    for row in counts.of_kind("synapse"):
        node = graph[row.name]
        if node.op not in SYNAPSE_OPS:
            raise CountError(f"row {row.name!r} is a synapse but node {node.op} is not a Conv/Linear")
        src, readout = _synapse_source(graph, node)
        per_step = _all_nonzero_synops(node, shapes[src], shapes[node.name])
        if traces is not None and src not in traces:
            raise CountError(f"no trace of node {src!r} (the input of {row.name!r}); pass the traces the "
                             f"counts were taken from")
        if not readout:
            dense = per_step * counts.steps * counts.samples
            effective = row.total("synops")
            spiking = _binary_by_value(traces[src]) if traces is not None else row.value_class == BINARY
        else:  # once per sample, on the mean over T: the Linear's full size per sample
            dense = per_step * counts.samples
            if traces is not None:
                x = traces[src]
                x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
                mean = x.to(torch.float64).mean(0)  # (B, *shape)
                fan_out = int(node.weight.shape[0])
                effective = int((mean != 0).sum()) * fan_out
                spiking = _binary_by_value(mean)
            else:
                effective = row.total("synops")
                spiking = counts.steps == 1 and row.value_class == BINARY
        out[row.name] = LayerOps(row.name, int(effective), int(dense), bool(spiking), readout)
    return out


def activation_sparsity(counts: Counts) -> float:
    """NeuroBench's ``ActivationSparsity`` of our neuron rows: zero outputs over all outputs."""
    total = sum(r.size * r.counters["spikes"].size for r in counts.of_kind("neuron"))
    spikes = sum(r.total("spikes") for r in counts.of_kind("neuron"))
    return (total - spikes) / total if total else 0.0


def footprint(graph: ir.Graph) -> int:
    """Bytes of every array the graph holds, at its stored dtype."""
    return int(sum(a.nbytes for n in graph.nodes.values() for a in n.arrays().values()))


def connection_sparsity(graph: ir.Graph) -> float:
    """Zero weights over weights of every Conv/Linear node, as NeuroBench computes it (float32
    division, rounded to 4 decimals)."""
    zeros = weights = 0
    for n in graph.nodes.values():
        if n.op in SYNAPSE_OPS:
            w = np.asarray(n.weight)
            zeros += int((w == 0).sum())
            weights += int(w.size)
    if not weights:
        raise CountError("connection sparsity: the graph has no Conv/Linear node with weights")
    return round(float(np.float32(zeros) / np.float32(weights)), 4)


def neurobench_metrics(counts: Counts, graph: ir.Graph, traces: Optional[Mapping[str, object]] = None) -> dict:
    """``{NeuroBench metric name: value}`` (see :data:`METRICS`) computed from our counts (and the
    graph for ``Footprint``/``ConnectionSparsity``); ``traces`` as in
    :func:`synaptic_operations_by_layer`. ``notes`` lists where a value follows our convention
    rather than NeuroBench's (empty when every number is NeuroBench's)."""
    if counts.samples < 1:
        raise CountError("neurobench_metrics: the counts hold no sample")
    layers = synaptic_operations_by_layer(counts, graph, traces)
    ac = sum(op.effective for op in layers.values() if op.spiking)
    mac = sum(op.effective for op in layers.values() if not op.spiking)
    dense = sum(op.dense for op in layers.values())
    notes = []
    if traces is None:
        heads = [op.name for op in layers.values() if op.readout]
        if heads:
            notes.append(f"{', '.join(heads)}: effective operations counted per step (no traces given); "
                         f"NeuroBench counts the head once per sample on the temporal mean")
        notes.append("AC/MAC split by value class; NeuroBench decides by the values of each batch")
    b = counts.samples
    return {"SynapticOperations": {"Effective_MACs": mac / b, "Effective_ACs": ac / b, "Dense": dense / b},
            "ActivationSparsity": activation_sparsity(counts),
            "Footprint": footprint(graph),
            "ConnectionSparsity": connection_sparsity(graph),
            "notes": notes}


__all__ = ["LEGACY_NAMES", "METRICS", "NEUROBENCH_VERSION", "LayerOps", "activation_sparsity", "connection_sparsity",
           "footprint", "neurobench_metrics", "synaptic_operations_by_layer"]
