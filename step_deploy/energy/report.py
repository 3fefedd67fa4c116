"""The energy report: every model's price of one counted run, the QANN baseline beside it, the
break-even firing rates, as JSON (deterministic), Markdown and PNG plots.

Model variants: ``paper`` and ``loihi`` price as they are; ``step`` and ``horowitz`` depend on
the widths of weights and membranes, so each is priced twice: ``/float32`` (the PyTorch model as
trained) and ``/int`` (the widths of the network as deployed: the FPGA quantization's weight bits
and calibrated membrane widths)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .baseline import (QANN_MODELS, BreakEven, activation_rule, break_even, overall_firing_rate, price_qann,
                       qann_counts, spike_levels)
from .constants import Constants
from .counts import CONVENTIONS, Counts, rebit
from .models import FLOAT_BITS, price

WIDTH_DEPENDENT = ("step", "horowitz")


@dataclass
class EnergyResult:
    """Everything ``step-energy`` reports for one run."""

    counts: Counts
    snn: dict            # variant -> EnergyReport
    qann: dict           # variant -> EnergyReport
    comparison: dict     # variant -> BreakEven
    header: dict
    neurobench: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    union: Optional[Counts] = None
    qann_skipping: dict = field(default_factory=dict)        # variant -> EnergyReport (zero-skipping QANN)
    comparison_skipping: dict = field(default_factory=dict)  # variant -> BreakEven against it

    def to_dict(self) -> dict:
        q = qann_counts(self.counts, union=self.union)
        return {**self.header,
                "firing_rate": overall_firing_rate(self.counts),
                "counts": self.counts.to_dict(),
                "energy": {k: v.to_dict() for k, v in self.snn.items()},
                "qann": {"activation_bits": q.activation_bits, "counts_per_sample": q.totals(),
                         "energy": {k: v.to_dict() for k, v in self.qann.items()},
                         "energy_zero_skipping": {k: v.to_dict() for k, v in self.qann_skipping.items()}},
                "comparison": {k: v.to_dict() for k, v in self.comparison.items()},
                "comparison_zero_skipping": {k: v.to_dict() for k, v in self.comparison_skipping.items()},
                "neurobench": self.neurobench, "notes": self.notes, "conventions": CONVENTIONS}


def variants(models: list[str], widths: tuple = ("float32", "int")) -> list[str]:
    out = []
    for m in models:
        out += [f"{m}/{w}" for w in widths] if m in WIDTH_DEPENDENT else [m]
    return out


def price_all(counts: Counts, graph, folded_graph, models: list[str], int_widths: Optional[tuple],
              constants: Constants, header: dict, notes: Optional[list] = None,
              widths: tuple = ("float32", "int"), union: Optional[Counts] = None) -> EnergyResult:
    """Price ``counts`` with every model (and width variant), and the QANN baseline where it applies.
    ``int_widths``: ``(weight_bits, membrane_bits)`` per node of the deployed network (None: the
    ``/int`` variants are skipped, with a note; ``"as-counted"``: the counts already have the deployed
    widths, e.g. from a golden model). ``widths``: the variants to price. ``folded_graph``: the BN-folded float graph the
    Loihi mapping is made from. ``union``: the one-step count of "non-zero at any step"
    (``energy_eval.run.union_traces``), for the zero-skipping QANN (skipped when None)."""
    snn, qann, comp, qs, cs = {}, {}, {}, {}, {}
    notes = list(notes or [])
    for v in variants(models, widths):
        base, _, width = v.partition("/")
        if width == "int" and int_widths is None:
            notes.append(f"{v}: skipped (no integer widths: the network could not be quantized)")
            continue
        c = counts
        if width == "float32":
            c = rebit(counts, FLOAT_BITS, FLOAT_BITS, numeric="float")
        elif width == "int" and int_widths != "as-counted":
            c = rebit(counts, *int_widths, numeric="int")
        g = folded_graph if base == "loihi" else graph
        snn[v] = price(c, base, g, constants)
        if base in QANN_MODELS:
            qc = qann_counts(c, union=union)
            qann[v] = price_qann(qc, base, c, graph, constants)
            comp[v] = dataclasses.replace(break_even(snn[v], qann[v], c), model=v)
            if union is not None:
                qs[v] = price_qann(qc, base, c, graph, constants, zero_skipping=True)
                cs[v] = dataclasses.replace(break_even(snn[v], qs[v], c), model=v + " vs zero-skipping QANN")
    return EnergyResult(counts, snn, qann, comp, header, notes=notes, union=union, qann_skipping=qs,
                        comparison_skipping=cs)


# --------------------------------------------------------------------------- Markdown


def _uj(pj: float) -> str:
    return f"{pj * 1e-6:.4g}"


def _multibit_widths(c: Counts) -> str:
    """``'2 bits'`` (or ``'2 bits, 3 bits'``): the widths of the multi-bit spikes synapses read."""
    return ", ".join(sorted({f"{r.bits} bits" for r in c.of_kind("synapse") if r.value_class == "multibit"}))


def markdown(res: EnergyResult) -> str:
    h = res.header
    c = res.counts
    tot = c.totals()
    syn, neu = tot.get("synapse", {}), tot.get("neuron", {})
    prod, red = tot.get("product", {}), tot.get("reduction", {})
    nl, buf = tot.get("nonlinear", {}), tot.get("buffer", {})
    n = max(c.samples, 1)
    acc = h.get("accuracy")
    lines = [f"# Energy of {h.get('checkpoint', 'the model')} ({h.get('arch', '?')})", "",
             f"Counted: **{h.get('source')}** on {c.samples} sample(s) of {h.get('data')}, T = {c.steps} steps; "
             + (f"accuracy of this run {acc:.4f}; " if acc is not None else "no labels, no accuracy; ")
             + f"overall firing rate {overall_firing_rate(c):.2%}.", "",
             "Counts first (per sample, summed over the steps); energy below prices these counts.", "",
             "| count | per sample |", "|---|---:|",
             f"| synaptic operations on binary spikes (accumulates) | {syn.get('synops_binary', 0) / n:,.0f} |",
             *([f"| synaptic operations on multi-bit spikes (an accumulate per bit: {_multibit_widths(c)}) "
                f"| {syn['synops_multibit'] / n:,.0f} |"] if "synops_multibit" in syn else []),
             f"| synaptic operations on multi-level values (multiplies) | {syn.get('synops_multilevel', 0) / n:,.0f} |",
             f"| synaptic operations on real values (first layer MACs, zeros skipped) | {syn.get('synops_real', 0) / n:,.0f} |",
             f"| dense MACs (every output x kernel, padding included) | {syn.get('dense_macs', 0) / n:,.0f} |",
             f"| spikes | {neu.get('spikes', 0) / n:,.0f} |",
             f"| neuron updates | {neu.get('updates', 0) / n:,.0f} |",
             f"| attention products: coincidences / accumulates / dense | {prod.get('coincidences', 0) / n:,.0f} / "
             f"{prod.get('accumulates', 0) / n:,.0f} / {prod.get('products', 0) / n:,.0f} |",
             f"| reduction accumulates | {red.get('accumulates', 0) / n:,.0f} |",
             *(["| ReLU / Shiftmax: compares / subtractions / adds / shifts / leading-zero counts | "
                + " / ".join(f"{nl.get(k, 0) / n:,.0f}" for k in ("compares", "subtracts", "adds", "shifts",
                                                                 "leading_zero_counts")) + " |"] if nl else []),
             *([f"| block sums over time steps: adds / accumulator bits written + read | {buf.get('adds', 0) / n:,.0f}"
                f" / {(buf.get('buffer_bits_written', 0) + buf.get('buffer_bits_read', 0)) / n:,.0f} |"] if buf else []),
             f"| weight bits read (event-driven) | {syn.get('weight_bits_read', 0) / n:,.0f} |",
             f"| membrane bits read + written | {(neu.get('membrane_bits_read', 0) + neu.get('membrane_bits_written', 0)) / n:,.0f} |",
             "", "## SNN against the quantized ANN (Bit Budget)", "",
             f"QANN: the same network run once with {activation_rule(spike_levels(c))} = {qann_counts(c).activation_bits}-bit "
             "activations, "
             "same weight and accumulator widths; *dense* does every MAC, *zero-skipping* only those of non-zero "
             "activations (an activation is zero where no step had a spike).", "",
             "| model | SNN µJ/sample | QANN dense | QANN zero-skipping | winner vs dense / vs zero-skipping | "
             "SNN breaks even below (vs dense / vs zero-skipping) |", "|---|---:|---:|---:|---|---:|"]

    def be(b: Optional[BreakEven]) -> str:
        if b is None:
            return "n/a"
        return "never" if b.break_even_rate is None else (
            ">100%" if b.break_even_rate >= 1 else f"{b.break_even_rate:.2%}")
    for v, r in res.snn.items():
        b: Optional[BreakEven] = res.comparison.get(v)
        bs: Optional[BreakEven] = res.comparison_skipping.get(v)
        if b is None:
            lines.append(f"| {v} | {_uj(r.per_sample_pj)} | n/a (event-priced chip) | | | |")
        else:
            qs = _uj(bs.qann_pj) if bs else "n/a"
            lines.append(f"| {v} | {_uj(b.snn_pj)} | {_uj(b.qann_pj)} | {qs} | **{b.winner}** / "
                         f"**{bs.winner if bs else 'n/a'}** | {be(b)} / {be(bs)} |")
    lines += [""] + [f"- {b.sentence()}" for b in list(res.comparison.values()) + list(res.comparison_skipping.values())]
    lines += ["", "## Energy by component (µJ per sample)", ""]
    comps = sorted({k for r in res.snn.values() for k in r.by_component()})
    lines += ["| model | " + " | ".join(comps) + " |", "|---|" + "---:|" * len(comps)]
    for v, r in res.snn.items():
        bc = r.by_component()
        lines.append(f"| {v} | " + " | ".join(_uj(bc[k]) if k in bc else "" for k in comps) + " |")
    lines += ["", "## Per layer (µJ per sample)", "", "| layer | kind | value class | " +
              " | ".join(res.snn) + " |", "|---|---|---|" + "---:|" * len(res.snn)]
    names = [r.name for r in c.rows]
    per = {v: {l.name: l.total / n for l in r.layers} for v, r in res.snn.items()}
    for row in c.rows:
        lines.append(f"| {row.name} | {row.kind} | {row.value_class} | " +
                     " | ".join(_uj(per[v].get(row.name, 0.0)) for v in res.snn) + " |")
    extra = sorted({k for v in per for k in per[v]} - set(names))
    for name in extra:
        lines.append(f"| {name} | mapped compartments | | " + " | ".join(
            _uj(per[v][name]) if name in per[v] else "" for v in res.snn) + " |")
    lines += ["", "## Constants (every number with its source)", "", "| constant | value | unit | source | confidence |",
              "|---|---:|---|---|---|"]
    seen = {}
    for r in list(res.snn.values()) + list(res.qann.values()):
        seen.update(r.constants)
    for k, cst in sorted(seen.items()):
        lines.append(f"| {k} | {cst.value:g} | {cst.unit} | {cst.source} | {cst.confidence} |")
    if res.neurobench:
        lines += ["", "## NeuroBench metric names (per sample, NeuroBench's definitions from our counts)", "",
                  "| metric | value |", "|---|---:|"]
        for k, v in sorted(res.neurobench.items()):
            if k == "notes":
                continue
            for kk, vv in (sorted(v.items()) if isinstance(v, dict) else [("", v)]):
                lines.append(f"| {k}{'.' + kk if kk else ''} | {vv:,.6g} |" if isinstance(vv, (int, float))
                             else f"| {k}{'.' + kk if kk else ''} | {vv} |")
        lines += [f"- {x}" for x in res.neurobench.get("notes", [])]
    notes = res.notes + [x for r in res.snn.values() for x in r.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in dict.fromkeys(notes)]
    lines += ["", "Conventions: " + "; ".join(f"{k}: {v}" for k, v in CONVENTIONS.items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.hashsalt"] = "step-deploy"
    return plt


def save(fig, path) -> None:
    """Write ``fig`` as a PNG with no software/date metadata (byte-identical reruns) and close it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot_layers(res: EnergyResult, path) -> None:
    """Energy per layer stacked by component, one panel per model variant."""
    plt = _plt()
    variants_ = list(res.snn)
    names = [r.name for r in res.counts.rows]
    extra = sorted({l.name for r in res.snn.values() for l in r.layers} - set(names))
    names += extra
    fig, axes = plt.subplots(1, len(variants_), figsize=(3.2 * len(variants_) + 3, max(4, 0.17 * len(names) + 1.5)),
                             sharey=True, squeeze=False)
    n = max(res.counts.samples, 1)
    every = sorted({k for r in res.snn.values() for l in r.layers for k in l.components})
    cmap = plt.get_cmap("tab20")
    color = {k: cmap(i % 20) for i, k in enumerate(every)}  # one colour per component in every panel
    for ax, v in zip(axes[0], variants_):
        rep = res.snn[v]
        layers = {l.name: l for l in rep.layers}
        comps = sorted({k for l in rep.layers for k in l.components})
        left = [0.0] * len(names)
        for k in comps:
            vals = [layers[nm].components.get(k, 0.0) / n * 1e-6 if nm in layers else 0.0 for nm in names]
            ax.barh(range(len(names)), vals, left=left, label=k, color=color[k])
            left = [a + b for a, b in zip(left, vals)]
        ax.set_title(f"{v}\n{rep.per_sample_pj * 1e-6:.3g} µJ/sample", fontsize=8)
        ax.set_xlabel("µJ per sample", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="lower right")
    axes[0][0].set_yticks(range(len(names)))
    axes[0][0].set_yticklabels(names, fontsize=5)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"Energy per layer by component ({res.header.get('arch', '')}, {res.header.get('source')})", fontsize=9)
    save(fig, path)


def plot_firing(res: EnergyResult, path) -> None:
    """Firing rate per neuron layer."""
    plt = _plt()
    rows = res.counts.of_kind("neuron")
    fig, ax = plt.subplots(figsize=(7, max(3, 0.18 * len(rows) + 1.2)))
    ax.barh(range(len(rows)), [r.firing_rate * 100 for r in rows], color="tab:orange")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.name for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (% of neurons per step)")
    ax.set_title(f"Firing rate per layer (overall {overall_firing_rate(res.counts):.2%}, T = {res.counts.steps})", fontsize=9)
    save(fig, path)


def plot_qann(res: EnergyResult, path) -> None:
    """SNN against the QANN per model (log scale), with the break-even rate written on each pair."""
    plt = _plt()
    vs = list(res.comparison)
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(vs) + 2), 4))
    xs = range(len(vs))
    snn = [res.comparison[v].snn_pj * 1e-6 for v in vs]
    qa = [res.comparison[v].qann_pj * 1e-6 for v in vs]
    bits = qann_counts(res.counts).activation_bits
    w = 0.27 if res.comparison_skipping else 0.4
    ax.bar([x - w / 2 - (w / 2 if res.comparison_skipping else 0) for x in xs], snn, w, label=f"SNN (T = {res.counts.steps})")
    ax.bar([x + w / 2 - (w / 2 if res.comparison_skipping else 0) for x in xs], qa, w,
           label=f"QANN dense ({bits}-bit activations)")
    if res.comparison_skipping:
        qz = [res.comparison_skipping[v].qann_pj * 1e-6 for v in vs]
        ax.bar([x + w for x in xs], qz, w, label="QANN skipping zero activations")
        qa = qa + qz
    for x, v in zip(xs, vs):
        b = res.comparison[v]
        txt = "never" if b.break_even_rate is None else (">100%" if b.break_even_rate >= 1 else
                                                           f"{b.break_even_rate:.1%}")
        ax.text(x, max(b.snn_pj, b.qann_pj) * 1e-6 * 1.15, f"break-even\n{txt}", ha="center", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(vs, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("µJ per sample")
    top = max(snn + qa) if vs else 1
    ax.set_ylim(top=top * 4)
    ax.set_title(f"SNN vs quantized ANN at equal bit budget (firing rate now {overall_firing_rate(res.counts):.2%})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)


def summary_line(res: EnergyResult) -> str:
    """One line for a target report: the SNN energy per model and who wins against the QANN."""
    parts = []
    for v, r in res.snn.items():
        b = res.comparison.get(v)
        bs = res.comparison_skipping.get(v)
        vs = f" ({b.winner} wins vs dense QANN" + (f"; {bs.winner} wins vs zero-skipping QANN)" if bs else ")") if b else ""
        parts.append(f"{v} {r.per_sample_pj * 1e-6:.3g} µJ{vs}")
    return "energy per sample: " + "; ".join(parts)


__all__ = ["EnergyResult", "markdown", "plot_firing", "plot_layers", "plot_qann", "price_all", "summary_line",
           "variants", "WIDTH_DEPENDENT"]
