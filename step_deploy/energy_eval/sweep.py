"""``step-energy --sweep``: accuracy against energy over a grid of weight bits x time steps.

Each grid point quantizes the BN-folded float graph into the FPGA format with that many weight
bits (membrane widths calibrated for that T, as ``quantize-fpga`` does), runs the integer golden
model on the evaluation samples at that T, and counts and prices what it ran. Membrane bits are
not a free axis here: the FPGA format sizes each membrane from calibration (see ``quantize_fpga``),
so the report lists the widths each point ended with. The model is not retrained per T; a T other
than the trained one measures how the trained weights degrade, which is what a deployment that
cuts time steps gets."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from step_deploy import ir
from step_deploy.errors import StepDeployError
from step_deploy.frontend.capture import encoded_input

from step_deploy.energy.baseline import overall_firing_rate
from step_deploy.energy.constants import Constants
from step_deploy.energy.models import price
from .run import count_dataset, quantized_graph

SWEEP_MODELS = ("paper", "step", "horowitz", "loihi")


@dataclass(frozen=True)
class SweepPoint:
    weight_bits: int
    steps: int
    accuracy: Optional[float]
    firing_rate: float
    energy_uj: dict        # model -> µJ per sample
    membrane_bits: tuple   # (min, max) over the neuron layers

    def to_dict(self) -> dict:
        return {"weight_bits": self.weight_bits, "steps": self.steps, "accuracy": self.accuracy,
                "firing_rate": self.firing_rate, "energy_uj_per_sample": dict(sorted(self.energy_uj.items())),
                "membrane_bits_min_max": list(self.membrane_bits)}


@contextlib.contextmanager
def steps_set_to(model, steps: int):
    """Run ``model`` (every module holding a ``step``: the model, its encoder, its neurons) at ``steps``."""
    held = [(m, m.step) for m in model.modules() if isinstance(getattr(m, "step", None), int)]
    if steps != int(model.step) and type(getattr(model, "encoder", None)).__name__ == "EventEncoder":
        raise SweepError(f"T = {steps}: event inputs carry their own number of frames ({model.step}); sweep time "
                         "steps only on direct- or rate-coded models (--sweep-steps {model.step})")
    try:
        for m, _ in held:
            m.step = int(steps)
        yield model
    finally:
        for m, t in held:
            m.step = t


class SweepError(StepDeployError, ValueError):
    """A sweep point cannot be run (names the point and why)."""


def run_sweep(model, folded: ir.Graph, x_calib: torch.Tensor, x: torch.Tensor, y: Optional[torch.Tensor],
              weight_bits: list[int], steps: list[int], constants: Constants, batch_size: int = 64,
              progress: bool = True) -> list[SweepPoint]:
    """Every (weight bits, T) point, in grid order (weight bits outer)."""
    points = []
    grid = [(w, t) for w in weight_bits for t in steps]
    it = grid
    if progress:
        from tqdm import tqdm
        it = tqdm(grid, desc="sweep", unit="point")
    for w, t in it:
        with steps_set_to(model, t):
            q = quantized_graph("golden-fpga", folded, encoded_input(model, x_calib), t, weight_bits=w)
            run = count_dataset(model, folded, x, y, source="golden-fpga", qgraph=q, batch_size=batch_size)
            energy = {}
            for m in SWEEP_MODELS:
                g = folded if m == "loihi" else q
                energy[m] = price(run.counts, m, g, constants).per_sample_pj * 1e-6
            mb = [r.membrane_bits for r in run.counts.of_kind("neuron")]
            points.append(SweepPoint(w, t, run.accuracy, overall_firing_rate(run.counts), energy,
                                     (min(mb), max(mb)) if mb else (0, 0)))
    return points


def pareto(points: list[SweepPoint], model: str) -> list[SweepPoint]:
    """Points no other point beats on both energy (lower) and accuracy (higher), by energy."""
    pts = [p for p in points if p.accuracy is not None]
    front = [p for p in pts if not any((o.energy_uj[model] <= p.energy_uj[model] and o.accuracy >= p.accuracy and
                                        (o.energy_uj[model] < p.energy_uj[model] or o.accuracy > p.accuracy))
                                       for o in pts)]
    return sorted(front, key=lambda p: p.energy_uj[model])


def sweep_markdown(points: list[SweepPoint], model: str) -> str:
    front = {(p.weight_bits, p.steps) for p in pareto(points, model)}
    lines = ["# Sweep: weight bits x time steps (FPGA integer golden model)", "",
             f"Pareto front (marked *) by accuracy against {model} energy.", "",
             "| weight bits | T | accuracy | firing rate | " + " | ".join(f"{m} µJ" for m in SWEEP_MODELS) +
             " | membrane bits | Pareto |", "|---:|---:|---:|---:|" + "---:|" * len(SWEEP_MODELS) + "---|---|"]
    for p in points:
        acc = f"{p.accuracy:.4f}" if p.accuracy is not None else "n/a"
        lines.append(f"| {p.weight_bits} | {p.steps} | {acc} | {p.firing_rate:.2%} | " +
                     " | ".join(f"{p.energy_uj[m]:.4g}" for m in SWEEP_MODELS) +
                     f" | {p.membrane_bits[0]}..{p.membrane_bits[1]} | {'*' if (p.weight_bits, p.steps) in front else ''} |")
    return "\n".join(lines) + "\n"


def plot_sweep(points: list[SweepPoint], model: str, path) -> None:
    from step_deploy.energy.report import _plt, save
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = [p for p in points if p.accuracy is not None]
    for w in sorted({p.weight_bits for p in pts}):
        sel = [p for p in pts if p.weight_bits == w]
        ax.scatter([p.energy_uj[model] for p in sel], [p.accuracy for p in sel], label=f"{w}-bit weights")
        for p in sel:
            ax.annotate(f"T={p.steps}", (p.energy_uj[model], p.accuracy), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    front = pareto(points, model)
    if front:
        ax.plot([p.energy_uj[model] for p in front], [p.accuracy for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
    ax.set_xlabel(f"energy per sample, {model} model at the deployed integer widths (µJ)")
    ax.set_ylabel("test accuracy (integer golden model)")
    ax.set_title("Accuracy against energy: weight bits x time steps", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)


__all__ = ["SWEEP_MODELS", "SweepPoint", "pareto", "plot_sweep", "run_sweep", "sweep_markdown"]
