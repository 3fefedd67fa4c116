"""The published anchor for the estimates: a hand-written INT8 Spikformer-1-384 (CIFAR-10, T = 4)
on an XCZU7EV, against our estimate for the same network on the same part.

``spikformer_1_384_anchor()`` builds ``spikformer-4-384`` with ``depths=1`` (STEP's CIFAR-10
geometry: 32 × 32 × 3 images, patch 4, 384 channels, 12 heads, T = 4), random weights with
non-trivial BatchNorm statistics (so the layers spike and the membranes get realistic widths),
folds BatchNorm, quantizes with ``quantize_fpga`` on a few random images, picks
``auto_parallelism`` for the part and estimates. Our generated design keeps every weight on chip;
the published accelerator keeps weights in DDR, so the result carries two estimates:

* ``as_generated``: our design on the part (weights, state and buffers on chip), parallelism from
  ``auto_parallelism`` (a memory that already does not fit is held at its minimum), its fit;
* ``compute_bound``: the same schedule with parallelism chosen as if on-chip memory were not the
  limit (DSP, LUT and FF within budget): the latency our schedule reaches with the part's logic,
  the figure comparable to an accelerator that streams weights from DDR (DDR bandwidth is not
  modelled). Its memory needs are reported, not checked.
"""
from __future__ import annotations

import dataclasses
import time

#: the published design (abstract of the paper; the clock is not stated there)
PUBLISHED = {
    "latency_ms": 53.0,
    "power_w": 7.181,
    "fps_per_w": 2.63,
    "model": "Spikformer-1-384, CIFAR-10, T = 4, INT8 (QAT + BN folding)",
    "part": "xczu7ev-ffvc1156-2-i",
    "clock_mhz": None,
    "clock_note": "the published clock frequency is unknown (not stated in the abstract)",
    "source": "Acta Physica Sinica 75 (2026), doi 10.7498/aps.75.20260085, abstract; xczu7ev-ffvc1156-2-i",
}
ARCH, OVERRIDES = "spikformer-4-384", {"depths": 1}


def anchor_graph(images: int = 2, seed: int = 0):
    """The quantized (``'fpga-int'``) Spikformer-1-384 with random weights, and its build seconds."""
    import torch

    from step_deploy.frontend.capture import capture
    from step_deploy.models import build_model
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.passes.quantize_fpga import quantize_fpga

    torch.manual_seed(seed)
    from step_deploy.models.random_stats import randomize_batchnorm

    model = randomize_batchnorm(build_model(ARCH, **OVERRIDES).eval(), seed)
    g = fold_batchnorm(capture(model))
    x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    qgraph, _ = quantize_fpga(g, x, steps=4)
    return qgraph


def _summary(est) -> dict:
    return {"latency_ms": round(est.latency_ms, 3), "cycles_per_sample": est.cycles_per_sample,
            "resources": est.totals(), "available": est.part.resources(),
            "utilisation": {r: round(v, 4) for r, v in est.utilisation().items()}, "fits": est.fits(),
            "over_budget": [{"layer": n, "resource": r, "need": need, "have": have}
                            for n, r, need, have in est.over_budget()],
            "parallelism": est.parallelism()}


def spikformer_1_384_anchor(clock_mhz: float = 200.0, part: str = "zcu104", images: int = 2, seed: int = 0) -> dict:
    """Our estimate for Spikformer-1-384 on ``part`` at ``clock_mhz`` beside the published figures
    (see the module docstring). Keys: ``latency_ms``, ``resources``, ``utilisation``, ``fits`` (our
    design as generated), ``compute_bound``, ``published``, ``ratio_to_published``, ``runtime_s``."""
    from .estimate import ESTIMATE_LABEL, auto_parallelism, estimate
    from .parts import load_part

    t0 = time.perf_counter()
    qgraph = anchor_graph(images, seed)
    t1 = time.perf_counter()
    fpga = load_part(part)
    generated = estimate(qgraph, fpga, clock_mhz, auto_parallelism(qgraph, fpga, clock_mhz))
    unlimited = dataclasses.replace(fpga, bram36=10 ** 9, uram=10 ** 9 if fpga.uram else 0)
    bound = estimate(qgraph, fpga, clock_mhz, auto_parallelism(qgraph, unlimited, clock_mhz))
    t2 = time.perf_counter()
    ours = _summary(generated)
    return {
        "label": ESTIMATE_LABEL,
        "model": f"{ARCH} with depths=1 (Spikformer-1-384): 32x32x3 input, patch 4, 384 channels, T = 4; random "
                 f"weights and BatchNorm statistics (seed {seed}), quantized on {images} random images",
        "part": fpga.name, "hls_part": fpga.hls_part, "clock_mhz": float(clock_mhz),
        "latency_ms": ours["latency_ms"], "resources": ours["resources"], "utilisation": ours["utilisation"],
        "fits": ours["fits"], "as_generated": ours,
        "compute_bound": {**_summary(bound), "note": "parallelism chosen with on-chip memory not limiting (DSP, "
                          "LUT, FF within 80 %); comparable to a design that streams weights from DDR (bandwidth "
                          "not modelled); its memory needs are reported, not checked"},
        "published": dict(PUBLISHED),
        "ratio_to_published": {"as_generated": round(generated.latency_ms / PUBLISHED["latency_ms"], 3),
                               "compute_bound": round(bound.latency_ms / PUBLISHED["latency_ms"], 3)},
        "runtime_s": {"build_and_quantize": round(t1 - t0, 2), "estimate_and_auto": round(t2 - t1, 2)},
    }


def anchor_lines(a: dict) -> list[str]:
    """A few printable lines: ours beside the published figure."""
    pub, cb = a["published"], a["compute_bound"]
    fit = "fits" if a["fits"] else "does NOT fit (" + ", ".join(
        f"{o['resource']} {o['need']:,}/{o['have']:,}" for o in a["as_generated"]["over_budget"]) + ")"
    return [f"Spikformer-1-384 (CIFAR-10, T = 4) on {a['part']} ({a['hls_part']}) at {a['clock_mhz']:g} MHz, "
            f"{a['label']}:",
            f"  ours, as generated (all weights on chip): {a['latency_ms']:.1f} ms per image; {fit}",
            f"  ours, compute-bound (memory not limiting): {cb['latency_ms']:.1f} ms per image "
            f"(DSP {cb['resources']['dsp']:,}, LUT {cb['resources']['lut']:,})",
            f"  published: {pub['latency_ms']} ms per image at {pub['power_w']} W on {pub['part']} "
            f"(clock unknown); {pub['source'].split(';')[0]}"]


__all__ = ["spikformer_1_384_anchor", "anchor_graph", "anchor_lines", "PUBLISHED"]
