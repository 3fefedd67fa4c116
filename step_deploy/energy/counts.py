"""The result of counting: per-layer rows of int64 ``(sample, step)`` counters, their sums, a
deterministic JSON form, and the element-wise comparison the parity tests use. What each counter
means is stated in ``counters`` and in :data:`CONVENTIONS` (which every JSON report carries)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from step_deploy.errors import StepDeployError


class CountError(StepDeployError, ValueError):
    """Counting cannot proceed: a trace is missing or has the wrong shape (names the node)."""


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, eq=False)
class LayerCounts:
    """One counted node. ``counters[name]`` is an int64 ``(B, T)`` array (sample, step).

    ``value_class``/``bits``: of the input (synapses, reductions), of the output (neurons), of both
    operands (products, e.g. ``'binary*binary'``, ``bits`` the wider one). ``size``: values per
    step and sample (a neuron layer's neurons, a synapse's input values). ``weight_bits`` and
    ``membrane_bits``: the widths used (None where they do not apply; a ``buffer`` row's
    ``membrane_bits`` is the width of one element of its block accumulator). ``bit_ops``: accumulates
    one counted operation costs when a multi-bit spike of b bits is involved (Bit Budget, see
    ``counters`` *Multi-bit spikes*): b for a synapse reading such spikes and for the neuron
    sending them, the narrower spike's bits for a product of two; 1 everywhere else. ``levels``:
    the output levels L of a neuron row (2 for binary spikes, D + 1 for ILIF, 3 for ternary)."""

    name: str
    op: str
    kind: str
    value_class: str
    bits: Optional[int]
    operation: Optional[str]
    size: int
    counters: dict = field(default_factory=dict)
    weight_bits: Optional[int] = None
    membrane_bits: Optional[int] = None
    numeric: Optional[str] = None
    bit_ops: int = 1
    levels: int = 2

    @property
    def number_format(self) -> str:
        """``'int'`` or ``'float'``: how the widths are to be read. ``numeric`` when set (by
        :func:`rebit`), else from the node type: the quantized formats' ops (``Fixed*``, ``Fpga*``,
        ``Loihi*``) are integer, the float graph's float."""
        if self.numeric:
            return self.numeric
        return "int" if self.op.startswith(("Fixed", "Fpga", "Loihi")) else "float"

    def per_sample(self, counter: str) -> np.ndarray:
        """``(B,)``: the counter summed over the steps, per sample."""
        return self.counters[counter].sum(axis=1)

    def per_step(self, counter: str) -> np.ndarray:
        """``(T,)``: the counter summed over the batch, per step."""
        return self.counters[counter].sum(axis=0)

    def total(self, counter: str) -> int:
        return int(self.counters[counter].sum())

    @property
    def firing_rate(self) -> Optional[float]:
        """Spikes per neuron per step over the batch (neuron rows only)."""
        if self.kind != "neuron":
            return None
        b, t = self.counters["spikes"].shape
        return self.total("spikes") / float(self.size * b * t) if self.size * b * t else 0.0

    def firing_rate_per_step(self) -> Optional[np.ndarray]:
        """``(T,)``: spikes per neuron at each step over the batch (neuron rows only)."""
        if self.kind != "neuron":
            return None
        b = self.counters["spikes"].shape[0]
        return self.per_step("spikes") / float(self.size * b) if self.size * b else self.per_step("spikes") * 0.0

    def to_dict(self, per_sample: bool = False) -> dict:
        d = {"name": self.name, "op": self.op, "kind": self.kind, "value_class": self.value_class,
             "bits": self.bits, "operation": self.operation, "size": self.size,
             "weight_bits": self.weight_bits, "membrane_bits": self.membrane_bits,
             "total": {k: self.total(k) for k in self.counters},
             "per_step": {k: [int(v) for v in self.per_step(k)] for k in self.counters}}
        if self.bit_ops != 1:  # only multi-bit rows: the files of binary networks stay as they were
            d["bit_ops"] = self.bit_ops
        if self.levels != 2:
            d["levels"] = self.levels
        if self.kind == "neuron":
            d["firing_rate"] = self.firing_rate
            d["firing_rate_per_step"] = [float(v) for v in self.firing_rate_per_step()]
        if per_sample:
            d["per_sample"] = {k: [int(v) for v in self.per_sample(k)] for k in self.counters}
        return d


@dataclass(frozen=True, eq=False)
class Counts:
    """The counts of a batch: ``rows`` in the graph's topological order, ``steps`` T, ``samples`` B."""

    steps: int
    samples: int
    rows: tuple[LayerCounts, ...]

    def row(self, name: str) -> LayerCounts:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no counted node {name!r}; counted: {[r.name for r in self.rows]}")

    def of_kind(self, kind: str) -> list[LayerCounts]:
        return [r for r in self.rows if r.kind == kind]

    def totals(self) -> dict:
        """``{kind: {counter: total}}`` over all rows of that kind; synapse counters also split by
        the input's value class (``synops_binary``, ``synops_multilevel``, ``synops_real``)."""
        out: dict = {}
        for r in self.rows:
            dst = out.setdefault(r.kind, {})
            for k in r.counters:
                dst[k] = dst.get(k, 0) + r.total(k)
            if r.kind == "synapse":
                key = f"synops_{r.value_class}"
                dst[key] = dst.get(key, 0) + r.total("synops")
        return out

    def sample(self, i: int) -> "Counts":
        """The counts of sample ``i`` alone."""
        rows = tuple(_with_counters(r, {k: v[i:i + 1] for k, v in r.counters.items()}) for r in self.rows)
        return Counts(self.steps, 1, rows)

    @staticmethod
    def concat(parts: Sequence["Counts"]) -> "Counts":
        """Counts of several batches of the same graph and T as one (samples appended in order)."""
        if not parts:
            raise CountError("Counts.concat needs at least one Counts")
        first = parts[0]
        for p in parts[1:]:
            if p.steps != first.steps or [r.name for r in p.rows] != [r.name for r in first.rows]:
                raise CountError("Counts.concat: the parts count different graphs or numbers of steps")
        rows = tuple(_with_counters(r, {k: np.concatenate([p.rows[j].counters[k] for p in parts])
                                        for k in r.counters}) for j, r in enumerate(first.rows))
        return Counts(first.steps, sum(p.samples for p in parts), rows)

    def to_dict(self, per_sample: bool = False) -> dict:
        return {"steps": self.steps, "samples": self.samples, "layers": [r.to_dict(per_sample) for r in self.rows],
                "totals": self.totals(), "conventions": CONVENTIONS}

    def as_json(self, per_sample: bool = False) -> str:
        """Deterministic JSON (sorted keys, rows in topological order)."""
        return json.dumps(self.to_dict(per_sample), sort_keys=True, indent=1)


CONVENTIONS = {
    "synops": "non-zero input x fan-out (outputs it reaches; padding positions are not inputs)",
    "dense_macs": "every output x its full kernel, padding included",
    "weight_bits_read": "one weight per synaptic operation (event-driven)",
    "weight_bits_read_dense": "one weight per dense MAC (no reuse)",
    "membrane_bits": "every neuron's state read and written every step",
    "spike_bits": "non-zero outputs x bits of one output value",
    "spike_bits_dense": "every output value x its bits",
    "products": "MatMul/Mul of two live tensors: dense products, coincidences (both operands non-zero), "
                "accumulates (coincidences added into outputs; none for Mul)",
    "readout": "a synapse after TemporalMean is counted per step on the mean's input (Linear -> TemporalSum)",
    "value_class": "binary: spikes (synop = accumulate); multibit: a neuron's multi-level spikes of 'bits' = "
                   "ceil(log2(levels)) bits (synop = 'bits' accumulates, a shift-and-add per bit); multilevel: "
                   "integer counts of 'bits' bits (synop = multiply by the weight); real: analog / weighted values "
                   "(synop = MAC)",
    "nonlinear": "ReLU: one compare per value; Shiftmax per row of n scores: n compares (row max), n subtractions, "
                 "n shifts (2^delta), n-1 adds (row sum), 1 leading-zero count (ceil log2 of the sum), n shifts "
                 "(normalise); dense, every step",
    "buffer": "TemporalBlockSum: one add per element per step into the block accumulator, every element written "
              "and read once per step at the block sum's width",
    "bit_ops": "accumulates per counted operation on multi-bit spikes (Bit Budget): a spike's bits for a synapse "
               "and its neuron, the narrower spike's bits for a product of two; 1 (and omitted) elsewhere",
}


def _with_counters(r: LayerCounts, counters: dict) -> LayerCounts:
    return dataclasses.replace(r, counters=counters)


def compare_counts(a: Counts, b: Counts, counters: Optional[Sequence[str]] = None) -> list[str]:
    """Where two counts differ: one line per (row, counter) with the number of differing
    (sample, step) entries and the first one; rows present in only one side and differing value
    classes are listed too. Empty when equal. ``counters`` restricts the comparison."""
    out = []
    if (a.steps, a.samples) != (b.steps, b.samples):
        return [f"different batch: T={a.steps}, B={a.samples} vs T={b.steps}, B={b.samples}"]
    names_a, names_b = [r.name for r in a.rows], [r.name for r in b.rows]
    for name in sorted(set(names_a) ^ set(names_b)):
        out.append(f"{name}: counted only in the {'first' if name in names_a else 'second'}")
    for ra in a.rows:
        if ra.name not in names_b:
            continue
        rb = b.row(ra.name)
        if (ra.kind, ra.value_class, ra.bits) != (rb.kind, rb.value_class, rb.bits):
            out.append(f"{ra.name}: {ra.kind} {ra.value_class} ({ra.bits} bits) vs {rb.kind} {rb.value_class} "
                       f"({rb.bits} bits)")
        for k in ra.counters:
            if counters is not None and k not in counters:
                continue
            x, y = ra.counters[k], rb.counters.get(k)
            if y is None or x.shape != y.shape:
                out.append(f"{ra.name} {k}: missing or shaped differently in the second")
                continue
            bad = np.argwhere(x != y)
            if len(bad):
                s, t = bad[0]
                out.append(f"{ra.name} {k}: {len(bad)} of {x.size} (sample, step) entries differ, first at "
                           f"sample {s} step {t}: {x[s, t]} vs {y[s, t]}")
    return out


__all__ = ["CONVENTIONS", "CountError", "Counts", "LayerCounts", "compare_counts"]


def rebit(counts: Counts, weight_bits=None, membrane_bits=None, numeric: Optional[str] = None) -> Counts:
    """The same counts with other widths: ``weight_bits_read`` (= synops x bits),
    ``weight_bits_read_dense`` (= dense MACs x bits) and the membrane bits (= updates x bits)
    recomputed exactly. ``weight_bits`` / ``membrane_bits``: an int for every layer, a
    ``{node: bits}`` mapping (nodes not in it keep theirs), or None to keep them. ``numeric``:
    ``'int'`` or ``'float'``, how every row's widths are to be read (None: as before)."""

    def pick(spec, name, old):
        if spec is None:
            return old
        return int(spec.get(name, old)) if isinstance(spec, dict) else int(spec)

    rows = []
    for r in counts.rows:
        c = dict(r.counters)
        if r.kind == "synapse":
            wb = pick(weight_bits, r.name, r.weight_bits)
            c["weight_bits_read"] = r.counters["synops"] * wb
            c["weight_bits_read_dense"] = r.counters["dense_macs"] * wb
            rows.append(dataclasses.replace(r, counters=c, weight_bits=wb, numeric=numeric or r.numeric))
        elif r.kind == "buffer":  # a block accumulator is state: it takes the membranes' width when one is given
            bb = pick(membrane_bits, r.name, r.membrane_bits)
            c["buffer_bits_written"] = r.counters["values"] * bb
            c["buffer_bits_read"] = r.counters["values"] * bb
            rows.append(dataclasses.replace(r, counters=c, membrane_bits=bb, numeric=numeric or r.numeric))
        elif r.kind == "neuron":
            mb = 0 if r.membrane_bits == 0 else pick(membrane_bits, r.name, r.membrane_bits)  # stateless stays so
            c["membrane_bits_read"] = r.counters["updates"] * mb
            c["membrane_bits_written"] = r.counters["updates"] * mb
            rows.append(dataclasses.replace(r, counters=c, membrane_bits=mb, numeric=numeric or r.numeric))
        else:
            rows.append(dataclasses.replace(r, numeric=numeric or r.numeric))
    return Counts(counts.steps, counts.samples, tuple(rows))


__all__ += ["rebit"]
