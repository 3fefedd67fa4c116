"""What kind of values each tensor of a graph carries, read from the graph's structure alone.

The counters state, for every synapse and attention product, the *value class* of its inputs:

* ``binary``: spikes 0/1 (one bit; a synaptic event is an accumulate of the weight);
* ``multibit``: multi-level spikes as a neuron sends them (STEP's ILIF: integers 0..D; ternary
  spikes -1/0/+1): ``bits = ceil(log2(L))`` for L output levels (ternary: 2 bits, ILIF D = 2:
  2 bits, D = 4: 3 bits); they keep this class through layout nodes only (a sum of them is a
  ``multilevel`` value). Priced by their bits (Bit Budget): see ``counters`` and ``models``;
* ``multilevel``: small integers, or such integers times a constant (spike counts, Spikformer's
  spike-map residual sums 0..n, Q·Kᵀ coincidence counts, means of spikes over tokens or time):
  ``max_level`` is the largest integer (in count units), ``bits`` the width that holds it;
* ``real``: anything computed with weights (synapse outputs, membranes, analog pixels): its
  width is the representation's (float32 or the quantizer's), not a property of the network.

The seed attention designs' ops: ``ReLU`` keeps its input's class without the sign (A²OS²A's K,
``ReLU(BN(Linear(x)))``, is ``real``: a product with it is an accumulate of K's entries gated by
the other operand's spikes, not an AND); ``Shiftmax`` gives ``real`` values (powers of two below
one); ``TemporalBlockSum`` (STAtten's block of ``block`` steps) multiplies the level by ``block``.

The class is decided from the graph, never from the values, so a float graph and its quantized
version (``Mean`` becomes ``Sum``, ``TemporalMean`` becomes a ``TemporalSum``, ``Neuron`` becomes
``FpgaLIF``/``LoihiLIF``, whose ``max_level`` keeps the levels) get the same classes. Unknown node
types are ``real`` (the safe assumption: nothing is claimed to be cheap that is not known to be)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from step_deploy import ir

BINARY, MULTIBIT, MULTILEVEL, REAL = "binary", "multibit", "multilevel", "real"

#: integer-format neurons (by op name): binary spikes, or integers 0..max_level where they have one
SPIKING_OPS = ("LoihiLIF", "FpgaLIF")
#: stateless firing (PSN's spike): binary
HEAVISIDE_OPS = ("Heaviside",)
#: node types that only move values around (the class passes through unchanged)
LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Delay", "MaxPool2d", "Output", "QuantizeInput",
              "FpgaQuantizeInput")
#: temporal readouts: a running sum (or mean) over the steps
TEMPORAL_OPS = ("TemporalMean", "TemporalSum", "FpgaTemporalSum")


@dataclass(frozen=True)
class ValueClass:
    """``kind`` (binary / multibit / multilevel / real); ``max_level``: the largest magnitude in
    count units (1 for spikes; D for an ILIF neuron's spikes; None for real values or when unknown,
    e.g. a ``counts`` input); ``signed``: values may be negative (ternary spikes)."""

    kind: str
    max_level: Optional[int] = None
    signed: bool = False

    @property
    def bits(self) -> Optional[int]:
        """Bits of one value: 1 for binary spikes, ``ceil(log2(max_level + 1))`` (+1 sign bit) for
        multi-bit spikes and multi-level values (= ``ceil(log2(L))`` for a neuron with L levels),
        None for real values (their width is the representation's)."""
        if self.kind == BINARY:
            return 1
        if self.kind == REAL or self.max_level is None:
            return None
        return max(1, math.ceil(math.log2(self.max_level + 1))) + (1 if self.signed else 0)

    @property
    def levels(self) -> Optional[int]:
        """Distinct values of one value: ``max_level + 1`` (``2·max_level + 1`` when signed); None
        for real values or an unknown level."""
        if self.kind == REAL or self.max_level is None:
            return None
        return (2 if self.signed else 1) * self.max_level + 1


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


def _neuron_class(n: ir.Node) -> ValueClass:
    """What a neuron sends: binary spikes, or multi-bit spikes of its levels (IR ``Neuron`` and its
    subclasses by ``output``; ``LoihiLIF``/``FpgaLIF`` by ``fire='ternary'`` or ``max_level``, 1 when
    they have none)."""
    output = getattr(n, "output", "binary")
    max_level = int(getattr(n, "max_level", 1) or 1)
    if output == "ternary" or getattr(n, "fire", None) == "ternary":  # IR Neuron / FpgaLIF, LoihiLIF
        return ValueClass(MULTIBIT, 1, True)
    if output == "integer" or max_level > 1:
        return ValueClass(MULTIBIT, max_level) if max_level > 1 else SPIKE
    return SPIKE


def _rectified(c: ValueClass) -> ValueClass:
    """Class of ``max(x, 0)``: real stays real (A²OS²A's K: a graded activation, not a spike); signed
    levels lose their sign (a rectified ternary spike is a binary one)."""
    if c.kind == REAL or not c.signed:
        return c
    if c.kind == MULTIBIT:
        return SPIKE if (c.max_level or 0) <= 1 else ValueClass(MULTIBIT, c.max_level)
    return _levels(c.max_level)


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
        elif isinstance(n, ir.Neuron) or op in SPIKING_OPS:
            out[n.name] = _neuron_class(n)
        elif op in HEAVISIDE_OPS:
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
        elif op == "TemporalBlockSum":  # a sum of `block` steps of the input
            out[n.name] = _combine(ins, lambda m: int(n.block) * m[0])
        elif op == "ReLU":
            out[n.name] = _rectified(ins[0])
        else:  # synapses, batch norm, Shiftmax (fractions), and anything not known to keep values small
            out[n.name] = REAL_VALUE
    return out


__all__ = ["BINARY", "MULTIBIT", "MULTILEVEL", "REAL", "ValueClass", "value_classes", "SPIKING_OPS", "HEAVISIDE_OPS",
           "LAYOUT_OPS", "TEMPORAL_OPS"]
