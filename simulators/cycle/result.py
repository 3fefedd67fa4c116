"""What one cycle-level simulation returns, for both architecture kinds (a Loihi-style core mesh and
the FPGA dataflow of the generated HLS design): the spikes it computed itself, and time, events,
memory traffic and energy per unit (a neuro-core, an embedded core, an FPGA kernel) and step.

Time is in nanoseconds throughout. ``hw_steps`` are the hardware's own steps: on the mesh a layer at
pipeline depth ``d`` works on golden step ``t`` in hardware step ``t + d`` (one synaptic delay per
layer, as on Loihi and in Lava), so a T-step sample takes ``T + depth`` hardware steps; on the FPGA
the generated design runs the golden steps in order (``hw_steps == steps``).
Arrays summed over samples are marked so; ``step_ns`` and ``latency_ns`` are per sample."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

#: memory levels of the traffic counters, innermost first
LEVELS = ("registers", "sram", "dram")


@dataclass(frozen=True)
class Unit:
    """One resource that does work: ``kind`` is ``'core'`` (a neuro-core), ``'embedded'`` (an
    embedded/host core running products of live tensors), ``'host'`` or ``'kernel'`` (an FPGA
    kernel); ``layer`` is the mapped layer or graph node it runs; ``index`` its position (the core
    number on the mesh, the kernel's order in the design)."""

    name: str
    kind: str
    layer: str
    index: int = 0


@dataclass
class SimResult:
    """One simulation of ``samples`` samples.

    * ``busy_ns``, ``stall_ns``: ``(units, hw_steps)``, summed over samples: time a unit works and
      waits for its inputs inside a step;
    * ``events[name]``: ``(units, hw_steps)`` counts summed over samples (``synops``,
      ``neuron_updates``, ``spikes_out``, ``msgs_in``, ``msgs_out``, ``hops``, ``embedded_ops``,
      ``cycles`` ...; each simulator documents its names);
    * ``step_ns``: ``(samples, hw_steps)`` wall time of each hardware step (barrier included);
      ``latency_ns``: ``(samples,)``; ``throughput_sps``: samples per second in steady state
      (with overlap between samples where the schedule has it);
    * ``layers[layer]``: per layer ``{"busy_ns", "events": {...}, "energy_pj": {component: pJ},
      "traffic_bits": {level: bits}}`` summed over samples;
    * ``energy_pj[component]`` and ``traffic_bits[level]``: totals over samples;
    * ``spikes[node]``: ``(T, B, ...)`` int64, golden-aligned (step t is golden step t), for the
      nodes recorded; ``outputs``: the graph outputs the same way;
    * ``sources``: every constant used -> ``"confidence: source"``; ``notes``: what is assumed or
      not modelled."""

    arch: str
    kind: str
    schedule: str
    steps: int
    samples: int
    hw_steps: int
    units: list[Unit]
    busy_ns: np.ndarray
    stall_ns: np.ndarray
    step_ns: np.ndarray
    latency_ns: np.ndarray
    throughput_sps: float
    events: dict[str, np.ndarray] = field(default_factory=dict)
    layers: dict[str, dict] = field(default_factory=dict)
    energy_pj: dict[str, float] = field(default_factory=dict)
    traffic_bits: dict[str, int] = field(default_factory=dict)
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_energy_pj(self) -> float:
        return float(sum(self.energy_pj.values()))

    @property
    def energy_per_sample_pj(self) -> float:
        return self.total_energy_pj / max(1, self.samples)

    @property
    def mean_latency_ns(self) -> float:
        return float(np.mean(self.latency_ns)) if len(self.latency_ns) else 0.0

    def to_dict(self) -> dict:
        """Everything but the spike tensors, as plain JSON-ready values (deterministic order)."""
        def r(x: float) -> float:
            return float(f"{float(x):.6g}")

        return {
            "arch": self.arch, "kind": self.kind, "schedule": self.schedule, "steps": self.steps,
            "samples": self.samples, "hw_steps": self.hw_steps, "hardware": self.hardware,
            "latency_ns": {"mean": r(self.mean_latency_ns),
                           "min": r(self.latency_ns.min()) if len(self.latency_ns) else 0.0,
                           "max": r(self.latency_ns.max()) if len(self.latency_ns) else 0.0},
            "throughput_samples_per_s": r(self.throughput_sps),
            "energy_pj": {"per_sample": r(self.energy_per_sample_pj),
                          "by_component_per_sample": {k: r(v / max(1, self.samples))
                                                      for k, v in sorted(self.energy_pj.items())}},
            "traffic_bits_per_sample": {k: r(v / max(1, self.samples)) for k, v in sorted(self.traffic_bits.items())},
            "step_ns_mean": [r(x) for x in self.step_ns.mean(axis=0)] if self.step_ns.size else [],
            "units": len(self.units),
            "layers": {k: _plain(v, self.samples) for k, v in self.layers.items()},
            "sources": dict(sorted(self.sources.items())),
            "notes": list(self.notes),
        }

    def unit_step_rows(self) -> list[dict]:
        """One row per unit and hardware step, summed over samples: busy, stall and every event."""
        rows = []
        names = sorted(self.events)
        for u, unit in enumerate(self.units):
            for s in range(self.hw_steps):
                row = {"unit": unit.name, "kind": unit.kind, "layer": unit.layer, "hw_step": s,
                       "busy_ns": f"{float(self.busy_ns[u, s]):.6g}", "stall_ns": f"{float(self.stall_ns[u, s]):.6g}"}
                row.update({k: int(self.events[k][u, s]) for k in names})
                rows.append(row)
        return rows

    def unit_step_csv(self) -> str:
        rows = self.unit_step_rows()
        out = io.StringIO()
        fields = ["unit", "kind", "layer", "hw_step", "busy_ns", "stall_ns"] + sorted(self.events)
        w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return out.getvalue()


def _plain(v, samples: int, per_sample: Optional[bool] = None):
    """Layer dicts to JSON: floats rounded to 6 significant digits, per sample."""
    if isinstance(v, dict):
        return {k: _plain(x, samples) for k, x in sorted(v.items())}
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v) / max(1, samples):.6g}")
    if isinstance(v, (int, np.integer)):
        x = int(v) / max(1, samples)
        return int(x) if x == int(x) else float(f"{x:.6g}")
    return v


__all__ = ["LEVELS", "Unit", "SimResult"]
