"""Design-space exploration of the generated FPGA design: per-layer parallelism × schedule on one
part, every point simulated by the cycle-level FPGA simulator, and the Pareto front of latency ×
resources × energy.

    res = explore(qgraph, "zcu104", inputs=images)
    print(res.markdown()); res.plot("explore.png"); res.front

Points: a uniform ladder (the same ``P`` for every kernel, capped per kernel at its parallel
dimension) and ``fpga.auto_parallelism`` at each budget, each under every schedule. The network is
executed once (its spikes depend on neither the parallelism nor the schedule); every point is then
accounted by ``fpga_dataflow.account`` (time from ``fpga_schedule``, traffic and energy from
``fpga_memory``). ``resources`` of a point is its largest utilisation over DSP, BRAM36, URAM, LUT and
FF. A point dominates another when it is no worse in latency, resources and energy per sample and
better in one. The front is taken over the points that fit the part (over all points when none
does); points that do not fit are kept and marked ``fits = False``. Without ``inputs`` the energy is
that of one seeded random input (uniform pixels, or spikes at rate 0.5), which the result says.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from step_deploy import ir
from step_deploy.energy.counters import count_graph, needed_traces
from step_deploy.fpga.parallelism import auto_parallelism
from step_deploy.fpga.parts import RESOURCES, FpgaPart, load_part
from step_deploy.fpga.resource_model import DesignModel, check_clock
from step_deploy.simulators.golden import spiking_nodes

from .fpga_dataflow import account, execute
from .fpga_schedule import SCHEDULES, load_board, plan_design

LADDER = (1, 2, 4, 8, 16, 32, 64)
BUDGETS = (0.25, 0.5, 0.8, 1.0)


@dataclass(frozen=True)
class ExplorePoint:
    """One design: ``label`` says how its parallelism was chosen (``P=8``, ``auto@0.8``)."""

    schedule: str
    label: str
    parallelism: tuple  # ((node, P), ...) in kernel order
    latency_ns: float
    throughput_sps: float
    energy_pj: float  # per sample
    resources: dict
    utilisation: dict
    fits: bool
    spilled: tuple = ()

    @property
    def max_utilisation(self) -> float:
        return max(self.utilisation.values()) if self.utilisation else 0.0

    def objectives(self) -> tuple[float, float, float]:
        return (self.latency_ns, self.max_utilisation, self.energy_pj)

    def dominates(self, other: "ExplorePoint") -> bool:
        a, b = self.objectives(), other.objectives()
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    def to_dict(self) -> dict:
        r = lambda x: float(f"{float(x):.6g}")  # noqa: E731
        return {"schedule": self.schedule, "label": self.label, "latency_ns": r(self.latency_ns),
                "throughput_samples_per_s": r(self.throughput_sps), "energy_pj_per_sample": r(self.energy_pj),
                "resources": dict(self.resources), "utilisation": {k: r(v) for k, v in self.utilisation.items()},
                "max_utilisation": r(self.max_utilisation), "fits": self.fits, "spilled_weights": list(self.spilled),
                "parallelism": dict(self.parallelism)}


def pareto_front(points: list[ExplorePoint]) -> list[int]:
    """Indices of the points no other point dominates, among those that fit (all when none fits)."""
    pool = [i for i, p in enumerate(points) if p.fits] or list(range(len(points)))
    return [i for i in pool if not any(points[j].dominates(points[i]) for j in pool if j != i)]


@dataclass
class ExploreResult:
    part: str
    clock_mhz: float
    steps: int
    samples: int
    points: list[ExplorePoint]
    front: list[int]
    notes: list[str] = field(default_factory=list)

    def front_points(self) -> list[ExplorePoint]:
        return [self.points[i] for i in self.front]

    def to_dict(self) -> dict:
        return {"part": self.part, "clock_mhz": self.clock_mhz, "steps": self.steps, "samples": self.samples,
                "objectives": ["latency_ns", "max_utilisation", "energy_pj_per_sample"],
                "points": [p.to_dict() for p in self.points], "front": list(self.front), "notes": list(self.notes)}

    def markdown(self) -> str:
        lines = [f"# Design space: {self.part} at {self.clock_mhz:g} MHz, T = {self.steps}", "",
                 "| | schedule | parallelism | latency (µs) | throughput (samples/s) | energy (µJ/sample) | "
                 "DSP | BRAM36 | URAM | LUT | FF | max util. | fits |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, p in enumerate(self.points):
            star = "**front**" if i in self.front else ""
            r = p.resources
            lines.append(f"| {star} | {p.schedule} | {p.label} | {p.latency_ns / 1e3:.4g} | {p.throughput_sps:.4g} | "
                         f"{p.energy_pj / 1e6:.4g} | {r['dsp']:,} | {r['bram36']:,} | {r['uram']:,} | {r['lut']:,} | "
                         f"{r['ff']:,} | {p.max_utilisation:.1%} | {'yes' if p.fits else 'no'} |")
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def plot(self, path) -> None:
        """Latency vs energy per sample, colour = largest utilisation, front circled, non-fitting
        points as crosses; a PNG with no metadata (byte-identical reruns)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from step_deploy.energy.report import save

        fig, ax = plt.subplots(figsize=(7, 4.5))
        markers = {"step": "o", "batched": "s"}
        for sched in SCHEDULES:
            for fits in (True, False):
                pts = [p for p in self.points if p.schedule == sched and p.fits == fits]
                if not pts:
                    continue
                sc = ax.scatter([p.latency_ns / 1e3 for p in pts], [p.energy_pj / 1e6 for p in pts],
                                c=[min(p.max_utilisation, 2.0) for p in pts], cmap="viridis", vmin=0, vmax=1.2,
                                marker=markers[sched] if fits else "x",
                                label=f"{sched}{'' if fits else ' (does not fit)'}")
        front = self.front_points()
        ax.scatter([p.latency_ns / 1e3 for p in front], [p.energy_pj / 1e6 for p in front], s=160,
                   facecolors="none", edgecolors="red", label="Pareto front")
        if self.points:
            fig.colorbar(sc, ax=ax, label="largest resource utilisation")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latency per sample (µs)")
        ax.set_ylabel("energy per sample (µJ)")
        ax.set_title(f"{self.part} at {self.clock_mhz:g} MHz, T = {self.steps}")
        ax.legend(fontsize=7)
        save(fig, path)


def _default_inputs(qgraph: ir.Graph) -> torch.Tensor:
    n = qgraph.inputs[0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand((1,) + tuple(n.shape), generator=g)
    return x if n.kind == "analog" else (x < 0.5).to(torch.int64)


def explore(qgraph: ir.Graph, part: Union[str, FpgaPart] = "zcu104", *, clock_mhz: float = 200.0, inputs=None,
            steps: Optional[int] = None, schedules=SCHEDULES, budgets=BUDGETS, ladder=LADDER,
            progress: bool = False) -> "ExploreResult":
    """Sweep parallelism (``ladder`` uniform P values, ``auto_parallelism`` at each of ``budgets``) ×
    ``schedules`` for ``part``; see the module docstring."""
    clock = check_clock(clock_mhz)
    fpga_part = load_part(part)
    model = DesignModel(qgraph, fpga_part, steps)
    board = load_board(fpga_part)
    notes = []
    if inputs is None:
        inputs = _default_inputs(qgraph)
        notes.append("energy from one seeded random input (no inputs given): pass inputs for a data set's figure")
    keep = set(spiking_nodes(qgraph)) | set(needed_traces(qgraph))
    outputs, traces, T = execute(qgraph, inputs, steps or model.steps, "step", keep, progress)
    counts = count_graph(qgraph, traces, T)
    choices = []
    for p in ladder:
        choices.append((f"P={p}", {k: min(int(p), model.shapes[k].n) for k in model.nodes}))
    for b in budgets:
        choices.append((f"auto@{b:g}", auto_parallelism(qgraph, fpga_part, clock, None, b, steps=model.steps)))
    points, seen = [], set()
    for sched in schedules:
        for label, par in choices:
            key = (sched, tuple(sorted(par.items())))
            if key in seen:  # two choices that give the same design: keep the first
                continue
            seen.add(key)
            plan = plan_design(qgraph, fpga_part, clock_mhz=clock, parallelism=par, schedule=sched, model=model,
                               board=board)
            res = account(qgraph, plan, traces, outputs, T, (), counts=counts)
            points.append(ExplorePoint(sched, label, tuple((k.node, k.parallelism) for k in plan.kernels),
                                       plan.latency_ns, plan.throughput_sps, res.energy_per_sample_pj,
                                       plan.resources(), plan.utilisation(), plan.fits(),
                                       tuple(k.node for k in plan.kernels if k.spilled)))
    front = pareto_front(points)
    if not any(p.fits for p in points):
        notes.append(f"no point fits {fpga_part.name}: the front is taken over all points")
    notes.append("resources = the largest utilisation over " + ", ".join(RESOURCES) + " (estimate, not synthesis)")
    return ExploreResult(fpga_part.name, clock, T, int(next(iter(traces.values())).shape[1]), points, front, notes)


__all__ = ["ExplorePoint", "ExploreResult", "explore", "pareto_front", "LADDER", "BUDGETS"]
