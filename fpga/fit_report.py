"""The fit table (Markdown) and the JSON form of a ``DesignEstimate``; every number is labelled an
estimate and every resource over the part is marked."""
from __future__ import annotations

from .resource_model import (DESIGN_CONTROL_FF, DESIGN_CONTROL_LUT, ESTIMATE_LABEL, MODEL_RULES, PIPELINE_DEPTH,
                       DesignEstimate, fit_message)
from .parts import RESOURCES

_HEAD = {"dsp": "DSP", "bram36": "BRAM36", "uram": "URAM", "lut": "LUT", "ff": "FF"}


def _pct(x: float) -> str:
    return "n/a" if x == float("inf") else f"{100 * x:.1f}%"


def fit_table(est: DesignEstimate) -> str:
    """Markdown: one row per layer (P, cycles per step, resources, memory bits), the design
    control overhead, totals, the part, utilisation (resources over the part marked **OVER**),
    latency, and the model behind the numbers."""
    p = est.part
    util = est.utilisation()
    over = {r for _, r, _, _ in est.over_budget()}
    lines = [f"### FPGA resources and latency: **{ESTIMATE_LABEL}**", "",
             f"Part {p.name} ({p.part}, `{p.hls_part}`) at {est.clock_mhz:g} MHz, T = {est.steps}; "
             f"{len(est.layers)} compute layers" + (f"; on the host: {', '.join(est.host)}" if est.host else ""), "",
             "| layer | op | P | cycles/step | µs/sample | " + " | ".join(_HEAD[r] for r in RESOURCES)
             + " | weight bits | state bits | buffer bits |",
             "|---|---|---:|---:|---:|" + "---:|" * len(RESOURCES) + "---:|---:|---:|"]
    for l in est.layers:
        us = est.steps * (l.cycles_per_step + PIPELINE_DEPTH) / est.clock_mhz
        lines.append(f"| {l.node} | {l.op} | {l.parallelism} | {l.cycles_per_step:,} | {us:,.2f} | "
                     + " | ".join(f"{getattr(l, r):,}" for r in RESOURCES)
                     + f" | {l.weight_bits:,} | {l.state_bits:,} | {l.buffer_bits:,} |")
    control = {"lut": DESIGN_CONTROL_LUT, "ff": DESIGN_CONTROL_FF}
    lines.append("| design control | | | | | " + " | ".join(f"{control.get(r, 0):,}" for r in RESOURCES) + " | | | |")
    tot = est.totals()
    lines.append(f"| **total** | | | {est.cycles_per_step:,} (incl. {PIPELINE_DEPTH}/layer depth) | "
                 f"{1000 * est.latency_ms:,.2f} | "
                 + " | ".join(f"**{tot[r]:,}**" for r in RESOURCES)
                 + f" | {sum(l.weight_bits for l in est.layers):,} | {sum(l.state_bits for l in est.layers):,} "
                   f"| {sum(l.buffer_bits for l in est.layers):,} |")
    have = p.resources()
    lines.append(f"| part {p.name} | | | | | " + " | ".join(f"{have[r]:,}" for r in RESOURCES) + " | | | |")
    lines.append("| utilisation | | | | | " + " | ".join(_pct(util[r]) + (" **OVER**" if r in over else "")
                                                       for r in RESOURCES) + " | | | |")
    lines += ["", f"Latency (estimate): {est.cycles_per_sample:,} cycles per sample = {est.latency_ms:.3f} ms at "
                  f"{est.clock_mhz:g} MHz ({1000 / est.latency_ms if est.latency_ms else 0:.1f} samples/s).",
              "Fits the part." if est.fits() else "**Does not fit**: " + fit_message(est, est.over_budget()) + ".",
              "", "Model (estimate):"] + [f"- {r}" for r in MODEL_RULES]
    return "\n".join(lines) + "\n"


def estimate_json(est: DesignEstimate) -> dict:
    """Everything in the estimate as JSON-serialisable data, in a fixed order."""
    util = est.utilisation()
    return {
        "label": ESTIMATE_LABEL,
        "part": est.part.as_dict(),
        "clock_mhz": est.clock_mhz,
        "steps": est.steps,
        "host_nodes": list(est.host),
        "parallelism": est.parallelism(),
        "layers": [{"node": l.node, "op": l.op, "parallelism": l.parallelism, "cycles_per_step": l.cycles_per_step,
                    **{r: getattr(l, r) for r in RESOURCES}, "weight_bits": l.weight_bits,
                    "state_bits": l.state_bits, "buffer_bits": l.buffer_bits, "model": l.model}
                   for l in est.layers],
        "design_control": {"lut": DESIGN_CONTROL_LUT, "ff": DESIGN_CONTROL_FF},
        "totals": est.totals(),
        "available": est.part.resources(),
        "utilisation": {r: (None if v == float("inf") else round(v, 6)) for r, v in util.items()},
        "fits": est.fits(),
        "over_budget": [{"layer": n, "resource": r, "need": need, "have": have}
                        for n, r, need, have in est.over_budget()],
        "cycles_per_step": est.cycles_per_step,
        "cycles_per_sample": est.cycles_per_sample,
        "pipeline_depth_per_layer": PIPELINE_DEPTH,
        "latency_ms": round(est.latency_ms, 9),
        "model": list(MODEL_RULES),
    }


__all__ = ["fit_table", "estimate_json"]
