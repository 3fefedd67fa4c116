"""The quantized-ANN baseline at an equal bit budget, and the SNN's break-even firing rate.

**Baseline.** The same network run once as a quantized ANN whose activations have
``b = ceil(log2(T + 1))`` bits: a T-step rate-coded spike train carries at most T + 1 levels, which
b bits hold (Bit Budget, Shen et al. CVPR 2024; Yan et al., arXiv 2409.08290). Its counts come
from the SNN's counts of the same graph: every synapse does its dense MACs once (one step's
``dense_macs``: a synchronous accelerator does not skip zero activations), reading one weight per
MAC (the same no-reuse convention as the SNN's event-driven reads); every neuron layer becomes an
activation layer (one quantize/ReLU per value, b bits written and read, no membrane); attention
products are dense MACs of b-bit operands; reductions add every value once. Weight widths and
the accumulator width are the SNN's; the seed designs' element-wise ops (ReLU, Shiftmax) run once
with the SNN's operation counts of one step, and STAtten's block sum over time steps has no
QANN counterpart (one pass, no steps). So the two differ only in what the issue compares:
activations of b bits once versus spikes over T steps. Multi-level spikes widen the budget: T
steps of spikes with L levels (ILIF: D + 1; ternary: 3) sum to T·(L − 1) + 1 values, so
``b = ceil(log2(T·(L − 1) + 1))`` with L the most levels of any neuron (:func:`spike_levels`).

**Break-even.** The SNN's energy is split into a part that scales with the number of spikes
(synaptic operations and their weight reads on spike or spike-sum inputs, spike traffic, attention,
reductions, spike-out and NoC messages) and a fixed part (the analog first layer, neuron updates,
membrane traffic, mapped compartments, and the seed designs' dense element-wise work: ReLU,
Shiftmax, block sums and their accumulator traffic). Assuming every spike-driven count scales with the overall
firing rate r, E(r) = fixed + variable · r / r₀, so the SNN costs less than the QANN while
r < r* = r₀ · (E_QANN − fixed) / variable; when the fixed part alone exceeds E_QANN, no firing
rate breaks even."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from step_deploy import ir

from .constants import Constants, load_constants
from .counts import Counts
from .models import ELEMENTWISE_COSTS, FLOAT_BITS, EnergyModelError, EnergyReport, LayerEnergy, _Widths, accumulator_bits, \
    counts_format, weight_counts

#: components of an SNN energy report that scale with the spikes (see the module doc)
VARIABLE = ("synapses", "synapses_ac", "weights_memory", "spike_traffic", "attention", "reductions", "spike_out", "noc")
#: models that price a synchronous QANN (Loihi prices events; a QANN there is graded spikes of one step)
QANN_MODELS = ("paper", "step", "horowitz")


def activation_bits(steps: int, levels: int = 2) -> int:
    """Bits of a QANN activation equivalent to ``steps`` time steps of spikes with ``levels``
    values each: a sum of T such spikes takes ``T·(L - 1) + 1`` values, so
    ``ceil(log2(T·(L - 1) + 1))``; binary spikes (L = 2): ``ceil(log2(T + 1))``."""
    if steps < 1:
        raise EnergyModelError(f"steps={steps}: need at least one time step")
    return max(1, math.ceil(math.log2(steps * (levels - 1) + 1)))


def spike_levels(counts: Counts) -> int:
    """The most output levels of any counted neuron (2 when every neuron sends binary spikes)."""
    return max([r.levels for r in counts.of_kind("neuron")] + [2])


def activation_rule(levels: int) -> str:
    """How the QANN's activation bits were chosen, as a formula (for reports)."""
    return "ceil(log2(T+1))" if levels == 2 else f"ceil(log2(T·(L-1)+1)) with L = {levels} spike levels"


@dataclass(frozen=True)
class QannCounts:
    """Per-inference counts of the QANN baseline, per layer: ``{name: {counter: value}}`` for one sample."""

    activation_bits: int
    layers: dict

    def totals(self) -> dict:
        out: dict = {}
        for row in self.layers.values():
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[k] = out.get(k, 0) + v
        return dict(sorted(out.items()))


def qann_counts(counts: Counts, activation_bits_: Optional[int] = None, union: Optional[Counts] = None) -> QannCounts:
    """The QANN's counts per inference (per sample), derived from the SNN ``counts``. With ``union``
    (the same graph counted once on "non-zero at any step", ``energy_eval.run.union_traces``), each layer also
    gets the work of a QANN that skips zero activations: ``effective_macs`` (non-zero activations x
    fan-out), ``nonzero_values`` and ``effective_adds``."""
    b = activation_bits_ or activation_bits(counts.steps, spike_levels(counts))
    T, B = counts.steps, max(counts.samples, 1)
    u = {r.name: r for r in union.rows} if union is not None else {}
    layers = {}
    for r in counts.rows:
        if r.kind == "synapse":
            macs = r.total("dense_macs") // (T * B)
            layers[r.name] = {"kind": "synapse", "macs": macs, "weight_bits": r.weight_bits,
                              "weight_bits_read": macs * (r.weight_bits or FLOAT_BITS),
                              "input": "real" if r.value_class == "real" else "activation"}
            if r.name in u:
                layers[r.name]["effective_macs"] = u[r.name].total("synops") / B
        elif r.kind == "neuron":
            layers[r.name] = {"kind": "activation", "values": r.size, "activation_bits_moved": r.size * b}
            if r.name in u:
                layers[r.name]["nonzero_values"] = u[r.name].total("spikes") / B
        elif r.kind == "product":
            layers[r.name] = {"kind": "product", "macs": r.total("products") // (T * B)}
            if r.name in u:
                layers[r.name]["effective_macs"] = u[r.name].total("coincidences") / B
        elif r.kind == "reduction":
            layers[r.name] = {"kind": "reduction", "adds": r.total("values") // (T * B)}
            if r.name in u:
                layers[r.name]["effective_adds"] = u[r.name].total("accumulates") / B
        elif r.kind == "nonlinear":  # ReLU, Shiftmax: the same operations, once
            layers[r.name] = {"kind": "nonlinear", **{k: r.total(k) // (T * B) for k in r.counters}}
        # a "buffer" row (TemporalBlockSum) has no QANN counterpart: a single pass has no steps to sum over
    return QannCounts(b, layers)


def price_qann(q: QannCounts, model: str, snn_counts: Counts, graph: Optional[ir.Graph] = None,
               constants: Optional[Constants] = None, accumulator_bits_: Optional[int] = None,
               zero_skipping: bool = False) -> EnergyReport:
    """Price the QANN baseline with ``model`` (paper, step or horowitz), per one sample; dense, or
    with ``zero_skipping`` only the products of non-zero activations (and their weight reads)."""
    if model not in QANN_MODELS:
        raise EnergyModelError(f"the QANN baseline is priced with {', '.join(QANN_MODELS)}; {model!r} prices "
                               f"spike events on a neuromorphic chip, where a QANN has no equivalent run")
    c = constants if constants is not None else load_constants()
    c.used = {}
    b = q.activation_bits
    if zero_skipping:
        missing = [n for n, r in q.layers.items() if r["kind"] in ("synapse", "product") and "effective_macs" not in r]
        if missing:
            raise EnergyModelError(f"the zero-skipping QANN needs the union counts (layer {missing[0]!r} has none): "
                                   "count with step_deploy.energy_eval.run.count_dataset, which records them")
        q = QannCounts(b, {n: _skipping(r) for n, r in q.layers.items()})
    acc = accumulator_bits_ or accumulator_bits(snn_counts)
    rows = []
    if model in ("paper", "step"):
        e_mac, e_ac = c.get(f"{model}.e_mac"), c.get(f"{model}.e_ac")
        e_bit = c.get("step.e_memory_bit") if model == "step" else 0.0
        for name, r in q.layers.items():
            if r["kind"] == "synapse":
                comp = {"synapses_mac": e_mac * r["macs"]}
                if model == "step":
                    comp["weights_memory"] = e_bit * r["weight_bits_read"]
            elif r["kind"] == "activation":
                comp = {"activation_traffic": e_bit * 2 * r["activation_bits_moved"]} if model == "step" else {}
            elif r["kind"] == "product":
                comp = {"attention": e_mac * r["macs"]}
            elif r["kind"] == "nonlinear":
                comp = {"nonlinear": e_ac * _elementwise_adds(r, c)}
            else:
                comp = {"reductions": e_ac * r["adds"]}
            rows.append(LayerEnergy(name, r["kind"], comp))
    else:
        w = _Widths(c)
        n_weights = weight_counts(graph) if graph is not None else {}
        fmt = counts_format(snn_counts)
        wide = FLOAT_BITS if fmt == "float" else None
        add = w.add(wide or acc, fmt)
        for name, r in q.layers.items():
            if r["kind"] == "synapse":
                wb = r["weight_bits"] or FLOAT_BITS
                in_bits = 8 if r["input"] == "real" else b
                comp = {"synapses_mac": (w.mult(wide or max(wb, in_bits), fmt) + add) * r["macs"],
                        "weights_memory": w.sram_bit(n_weights.get(name, 1) * wb) * r["weight_bits_read"]}
            elif r["kind"] == "activation":
                comp = {"activations": add * r["values"],
                        "activation_traffic": w.sram_bit(r["activation_bits_moved"]) * 2 * r["activation_bits_moved"]}
            elif r["kind"] == "product":
                comp = {"attention": (w.mult(wide or max(b, 8), fmt) + add) * r["macs"]}
            elif r["kind"] == "nonlinear":
                comp = {"nonlinear": add * _elementwise_adds(r, c)}
            else:
                comp = {"reductions": add * r["adds"]}
            rows.append(LayerEnergy(name, r["kind"], comp))
    how = "skipping zero activations" if zero_skipping else "dense (no zero skipping)"
    return EnergyReport(f"{model} (QANN, {b}-bit activations, {how})", c.description(model), 1, tuple(rows),
                        dict(c.used), (f"activations of {activation_rule(spike_levels(snn_counts))} = {b} bits, {how}, run once",),
                        {"activation_bits": b, "accumulator_bits": acc, "number_format": counts_format(snn_counts)})


def _elementwise_adds(r: dict, c: Constants) -> float:
    """Add equivalents of a QANN ``nonlinear`` layer (one inference), as the SNN's are priced."""
    return r["adds"] + sum(c.get(f"elementwise.{key}") * r[k] for k, key in ELEMENTWISE_COSTS if r.get(k))


def _skipping(r: dict) -> dict:
    """A QANN layer as a zero-skipping accelerator runs it: effective MACs (and their weight reads)."""
    r = dict(r)
    if r["kind"] in ("synapse", "product"):
        r["macs"] = r["effective_macs"]
        if r["kind"] == "synapse":
            r["weight_bits_read"] = r["macs"] * (r["weight_bits"] or FLOAT_BITS)
    elif r["kind"] == "reduction" and "effective_adds" in r:
        r["adds"] = r["effective_adds"]
    return r


@dataclass(frozen=True)
class BreakEven:
    """The SNN against the QANN under one model (energies per sample, pJ)."""

    model: str
    snn_pj: float
    qann_pj: float
    fixed_pj: float
    variable_pj: float
    firing_rate: float
    break_even_rate: Optional[float]

    @property
    def winner(self) -> str:
        return "SNN" if self.snn_pj < self.qann_pj else ("QANN" if self.qann_pj < self.snn_pj else "tie")

    def sentence(self) -> str:
        ratio = self.qann_pj / self.snn_pj if self.snn_pj else float("inf")
        if self.break_even_rate is None:
            be = "no firing rate breaks even: the SNN's fixed cost (neuron updates, membranes, first layer) alone " \
                 "exceeds the QANN"
        elif self.break_even_rate >= 1.0:
            be = f"the SNN costs less at every firing rate up to 100% (now {self.firing_rate:.2%})"
        else:
            be = f"the SNN costs less while its firing rate stays below {self.break_even_rate:.2%} (now {self.firing_rate:.2%})"
        return f"{self.model}: {self.winner} wins (QANN/SNN energy = {ratio:.2f}); {be}"

    def to_dict(self) -> dict:
        rate = self.break_even_rate
        return {"model": self.model, "snn_pj": self.snn_pj, "qann_pj": self.qann_pj, "fixed_pj": self.fixed_pj,
                "variable_pj": self.variable_pj, "firing_rate": self.firing_rate,
                "break_even_firing_rate": rate if rate is None or math.isfinite(rate) else "any", "winner": self.winner, "summary": self.sentence()}


def overall_firing_rate(counts: Counts) -> float:
    """Spikes per neuron per step over every neuron layer and sample."""
    spikes = sum(r.total("spikes") for r in counts.of_kind("neuron"))
    slots = sum(r.size for r in counts.of_kind("neuron")) * counts.steps * counts.samples
    return spikes / slots if slots else 0.0


def break_even(snn: EnergyReport, qann: EnergyReport, counts: Counts) -> BreakEven:
    """Compare the SNN's report with the QANN's under the same model (see the module doc)."""
    real = {r.name for r in counts.of_kind("synapse") if r.value_class == "real"}  # the analog first layer
    var = sum(v for l in snn.layers if l.name not in real
              for k, v in l.components.items() if k in VARIABLE) / max(snn.samples, 1)
    fixed = snn.per_sample_pj - var
    r0 = overall_firing_rate(counts)
    e_q = qann.per_sample_pj
    if fixed >= e_q:
        rate = None
    elif var <= 0 or r0 <= 0:
        rate = math.inf
    else:
        rate = r0 * (e_q - fixed) / var  # may exceed 1: then the SNN wins at every rate
    return BreakEven(snn.model, snn.per_sample_pj, e_q, fixed, var, r0, rate)


__all__ = ["BreakEven", "QANN_MODELS", "QannCounts", "VARIABLE", "activation_bits", "activation_rule", "break_even",
           "spike_levels",
           "overall_firing_rate", "price_qann", "qann_counts"]
