"""Reports of a cycle-level simulation: ``sim.md`` (what was simulated, latency, throughput, energy,
memory traffic, the parity with the golden model, per layer), the per-unit-per-step CSV, and two
plots: the timeline of busy time per unit and hardware step, and latency and energy per layer.
Plots are written without metadata (byte-identical reruns)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from step_deploy.energy.report import save

from .result import LEVELS, SimResult


def _si_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns * 1e-6:.4g} ms"
    if ns >= 1e3:
        return f"{ns * 1e-3:.4g} µs"
    return f"{ns:.4g} ns"


def _uj(pj: float) -> str:
    return f"{pj * 1e-6:.4g} µJ"


def parity_ok(parity: Optional[dict]) -> bool:
    return parity is not None and all(v["mismatches"] == 0 for v in parity.values())


def summary_line(res: SimResult, parity: Optional[dict] = None) -> str:
    tail = ""
    if parity is not None:
        bad = sum(v["mismatches"] for v in parity.values())
        tail = (f"; spikes equal the golden model at {len(parity)} node(s)" if bad == 0 else
                f"; {bad} spike MISMATCHES against the golden model")
    return (f"{res.arch} ({res.schedule}): latency {_si_ns(res.mean_latency_ns)} per sample, "
            f"{res.throughput_sps:.4g} samples/s, energy {_uj(res.energy_per_sample_pj)} per sample{tail}")


def layer_rows(res: SimResult) -> list[dict]:
    """Per layer, per sample: busy time, energy and traffic (sorted by graph order of the units)."""
    order = list(dict.fromkeys(u.layer for u in res.units))
    order += [k for k in res.layers if k not in order]
    s = max(1, res.samples)
    rows = []
    for name in order:
        d = res.layers.get(name)
        if d is None:
            continue
        rows.append({"layer": name, "busy_ns": float(d.get("busy_ns", 0.0)) / s,
                     "energy_pj": float(sum(d.get("energy_pj", {}).values())) / s,
                     "traffic_bits": {k: float(v) / s for k, v in d.get("traffic_bits", {}).items()}})
    return rows


def markdown(res: SimResult, header: Optional[dict] = None, parity: Optional[dict] = None) -> str:
    h = header or {}
    L = [f"# Cycle-level simulation: {h.get('checkpoint', 'model')} on {res.arch}", ""]
    L.append("Simulated, not measured: every number below comes from the per-event / per-kernel costs listed "
             "under *Sources* applied to the events this simulator executed.")
    L.append("")
    for k in ("checkpoint", "arch", "data", "samples", "steps", "accuracy", "quantization"):
        if k in h and h[k] is not None:
            L.append(f"- {k}: {h[k]}")
    L += [f"- hardware: {res.hardware.get('name', res.arch)}" + (f" ({res.hardware['path']})"
                                                                 if res.hardware.get("path") else ""),
          f"- schedule: {res.schedule}", f"- units: {len(res.units)}; hardware steps per sample: {res.hw_steps}", ""]
    L += ["## Result (per sample)", "", "| quantity | value |", "|---|---:|",
          f"| latency (mean) | {_si_ns(res.mean_latency_ns)} |",
          f"| latency (min / max) | {_si_ns(float(res.latency_ns.min()))} / {_si_ns(float(res.latency_ns.max()))} |"
          if len(res.latency_ns) else "| latency (min / max) | n/a |",
          f"| throughput | {res.throughput_sps:.4g} samples/s |",
          f"| energy | {_uj(res.energy_per_sample_pj)} |"]
    for lv in LEVELS:
        if lv in res.traffic_bits:
            L.append(f"| traffic {lv} | {res.traffic_bits[lv] / max(1, res.samples):.4g} bits |")
    L.append("")
    if parity is not None:
        bad = {k: v for k, v in parity.items() if v["mismatches"]}
        L += ["## Parity with the integer golden model", ""]
        if not bad:
            L.append(f"The simulated spikes equal the golden model's element by element at all {len(parity)} "
                     f"spiking node(s), every step ({sum(v['elements'] for v in parity.values())} values compared).")
        else:
            L += ["| node | mismatches | of |", "|---|---:|---:|"]
            L += [f"| {k} | {v['mismatches']} | {v['elements']} |" for k, v in bad.items()]
        L.append("")
    if res.energy_pj:
        L += ["## Energy by component (per sample)", "", "| component | energy |", "|---|---:|"]
        L += [f"| {k} | {_uj(v / max(1, res.samples))} |" for k, v in sorted(res.energy_pj.items())]
        L.append("")
    rows = layer_rows(res)
    if rows:
        levels = [lv for lv in LEVELS if any(lv in r["traffic_bits"] for r in rows)]
        L += ["## Per layer (per sample)", "",
              "| layer | busy | energy | " + " | ".join(f"{lv} bits" for lv in levels) + " |",
              "|---|---:|---:|" + "---:|" * len(levels)]
        for r in rows:
            L.append(f"| {r['layer']} | {_si_ns(r['busy_ns'])} | {_uj(r['energy_pj'])} | "
                     + " | ".join(f"{r['traffic_bits'].get(lv, 0):.4g}" for lv in levels) + " |")
        L.append("")
    if res.step_ns.size:
        L += ["## Time per hardware step (mean over samples)", "", "| step | time |", "|---:|---:|"]
        L += [f"| {i} | {_si_ns(float(v))} |" for i, v in enumerate(res.step_ns.mean(axis=0))]
        L.append("")
    if res.notes:
        L += ["## Notes and assumptions", ""] + [f"- {n}" for n in res.notes] + [""]
    if res.sources:
        L += ["## Sources", "", "| constant | confidence: source |", "|---|---|"]
        L += [f"| {k} | {v} |" for k, v in sorted(res.sources.items())]
        L.append("")
    return "\n".join(L)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_timeline(res: SimResult, path) -> None:
    """Busy time per unit (rows) and hardware step (columns), summed over samples, as a heat map."""
    plt = _plt()
    busy = np.asarray(res.busy_ns, dtype=float) / max(1, res.samples)
    n = len(res.units)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * res.hw_steps + 3), min(12.0, 2 + 0.04 * n + 2)))
    if busy.size:
        im = ax.imshow(busy, aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, label="busy ns per sample")
    ax.set_xlabel("hardware step")
    ax.set_ylabel("unit (core / kernel)")
    layers = [u.layer for u in res.units]
    ticks = [i for i in range(n) if i == 0 or layers[i] != layers[i - 1]]
    if len(ticks) <= 40:
        ax.set_yticks(ticks)
        ax.set_yticklabels([layers[i][:28] for i in ticks], fontsize=6)
    ax.set_title(f"{res.arch}: busy time per unit and step")
    fig.tight_layout()
    save(fig, path)


def plot_layers(res: SimResult, path) -> None:
    """Busy time and energy per layer (per sample), two bar charts."""
    plt = _plt()
    rows = layer_rows(res)
    names = [r["layer"][:32] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.0, 0.22 * len(rows) + 1.5)))
    y = np.arange(len(rows))
    axes[0].barh(y, [r["busy_ns"] * 1e-3 for r in rows], color="tab:blue")
    axes[0].set_xlabel("busy µs per sample (summed over the layer's units)")
    axes[1].barh(y, [r["energy_pj"] * 1e-6 for r in rows], color="tab:orange")
    axes[1].set_xlabel("µJ per sample")
    for ax in axes:
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=6)
        ax.invert_yaxis()
    fig.suptitle(f"{res.arch}: latency and energy per layer")
    fig.tight_layout()
    save(fig, path)


def parity_table(sim_spikes: dict, golden_traces: dict) -> dict:
    """``{node: {"mismatches", "elements", "first_step"}}`` comparing every node both recorded,
    element by element (``first_step``: the first step with a mismatch, or None)."""
    import torch
    out = {}
    for k in sorted(set(sim_spikes) & set(golden_traces)):
        a, b = sim_spikes[k], golden_traces[k]
        a = a if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))
        b = b if torch.is_tensor(b) else torch.as_tensor(np.asarray(b))
        if a.shape != b.shape:
            out[k] = {"mismatches": max(a.numel(), b.numel()), "elements": max(a.numel(), b.numel()),
                      "first_step": 0, "note": f"shape {tuple(a.shape)} vs golden {tuple(b.shape)}"}
            continue
        diff = (a.to(torch.int64) != b.to(torch.int64))
        per_step = diff.reshape(diff.shape[0], -1).sum(1) if diff.dim() else diff.reshape(1)
        bad = [i for i, v in enumerate(per_step.tolist()) if v]
        out[k] = {"mismatches": int(diff.sum()), "elements": int(diff.numel()), "first_step": bad[0] if bad else None}
    return out


__all__ = ["markdown", "plot_timeline", "plot_layers", "summary_line", "layer_rows", "parity_table", "parity_ok"]
