"""What kind of values each tensor of a graph carries, read from the graph's structure alone.

The counters state, for every synapse and attention product, the *value class* of its inputs:

* ``binary``: spikes 0/1 (one bit; a synaptic event is an accumulate of the weight);
* ``multilevel``: small integers, or such integers times a constant (spike counts, Spikformer's
  spike-map residual sums 0..n, Q·Kᵀ coincidence counts, means of spikes over tokens or time):
  ``max_level`` is the largest integer (in count units), ``bits`` the width that holds it;
* ``real``: anything computed with weights (synapse outputs, membranes, analog pixels): its
  width is the representation's (float32 or the quantizer's), not a property of the network.

The class is decided from the graph, never from the values, so a float graph and its quantized
version (``Mean`` becomes ``Sum``, ``TemporalMean`` becomes a ``TemporalSum``, ``Neuron`` becomes
``FpgaLIF``/``LoihiLIF``) get the same classes. Unknown node types are ``real`` (the safe
assumption: nothing is claimed to be cheap that is not known to be)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from step_deploy import ir

BINARY, MULTILEVEL, REAL = "binary", "multilevel", "real"

#: node types (by op name) whose output is a binary spike
SPIKING_OPS = ("LoihiLIF", "FpgaLIF")
#: node types that only move values around (the class passes through unchanged)
LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Delay", "MaxPool2d", "Output", "QuantizeInput",
              "FpgaQuantizeInput")
#: temporal readouts: a running sum (or mean) over the steps
TEMPORAL_OPS = ("TemporalMean", "TemporalSum", "FpgaTemporalSum")


@dataclass(frozen=True)
class ValueClass:
    """``kind`` (binary / multilevel / real); ``max_level``: the largest magnitude in count units
    (1 for spikes; None for real values or when unknown, e.g. a ``counts`` input); ``signed``:
    values may be negative (ternary spikes)."""

    kind: str
    max_level: Optional[int] = None
    signed: bool = False

    @property
    def bits(self) -> Optional[int]:
        """Bits of one value: 1 for binary spikes, ``ceil(log2(max_level + 1))`` (+1 sign bit) for
        multi-level values, None for real values (their width is the representation's)."""
        if self.kind == BINARY:
            return 1
        if self.kind == REAL or self.max_level is None:
            return None
        return max(1, math.ceil(math.log2(self.max_level + 1))) + (1 if self.signed else 0)


REAL_VALUE = ValueClass(REAL)
SPIKE = ValueClass(BINARY, 1)


def _levels(max_level: Optional[int], signed: bool = False) -> ValueClass:
    if max_level is None:
        return ValueClass(MULTILEVEL, None, signed)
    if max_level <= 1 and not signed:
        return SPIKE
    return ValueClass(MULTILEVEL, int(max_level), signed)


def _combine(classes: list[ValueClass], fn) -> ValueClass:
    """Class of a count-valued combination: real if any input is real, else ``fn`` of the maxima."""
    if any(c.kind == REAL for c in classes):
        return REAL_VALUE
    levels = [c.max_level for c in classes]
    signed = any(c.signed for c in classes)
    return _levels(None if None in levels else fn(levels), signed)


def _neuron_class(n: ir.Neuron) -> ValueClass:
    if n.output == "binary":
        return SPIKE
    if n.output == "ternary":
        return ValueClass(MULTILEVEL, 1, True)
    return _levels(int(n.max_level))


def value_classes(graph: ir.Graph, steps: Optional[int] = None) -> dict[str, ValueClass]:
    """The value class of every node's output. ``steps`` bounds the temporal readouts (a sum over
    T steps of spikes reaches T); without it their level is unknown."""
    shapes = graph.infer_shapes()
    out: dict[str, ValueClass] = {}
    for n in graph.topo_order():
        ins = [out[i] for i in n.inputs]
        op = n.op
        if op == "Input":
            out[n.name] = {"spikes": SPIKE, "counts": ValueClass(MULTILEVEL, None)}.get(n.kind, REAL_VALUE)
        elif op == "Neuron":
            out[n.name] = _neuron_class(n)
        elif op in SPIKING_OPS:
            out[n.name] = SPIKE
        elif op in LAYOUT_OPS or op == "Scale":
            out[n.name] = ins[0]  # a constant factor changes the unit, not the levels
        elif op == "Add":
            out[n.name] = _combine(ins, sum)
        elif op == "Mul":
            out[n.name] = _combine(ins, math.prod)
        elif op == "MatMul":
            a_shape = shapes[n.inputs[0]]
            inner = a_shape[-2] if n.transpose_a else a_shape[-1]
            out[n.name] = _combine(ins, lambda m: inner * math.prod(m))
        elif op in ("Sum", "Mean"):
            size = shapes[n.inputs[0]][n.axis % len(shapes[n.inputs[0]])]
            out[n.name] = _combine(ins, lambda m: size * m[0])
        elif op == "AvgPool2d":
            kh, kw = (n.kernel_size, n.kernel_size) if isinstance(n.kernel_size, int) else n.kernel_size
            out[n.name] = _combine(ins, lambda m: kh * kw * m[0])
        elif op in TEMPORAL_OPS:
            out[n.name] = _combine(ins, lambda m: steps * m[0]) if steps else _combine(ins, lambda m: None)
        else:  # synapses, batch norm, and anything not known to keep values small
            out[n.name] = REAL_VALUE
    return out


__all__ = ["BINARY", "MULTILEVEL", "REAL", "ValueClass", "value_classes", "SPIKING_OPS", "LAYOUT_OPS",
           "TEMPORAL_OPS"]
