"""Count a model over a data set (orchestration above frontend, passes and simulators).

:func:`count_dataset` runs batches through one *source* and concatenates their counts:

* ``torch``: the PyTorch model itself, counted by forward hooks (``torch_hooks``); the widths
  priced are float32 unless ``widths`` gives others (e.g. those of the FPGA-quantized graph);
* ``golden-fpga`` / ``golden-loihi``: the integer golden model of the quantized graph, counted on
  its own values with the widths the quantized graph states.

It also returns the predictions (and accuracy when labels are given), so an energy number is
never reported without the accuracy of the very run that was counted."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from step_deploy import ir
from step_deploy.errors import StepDeployError
from step_deploy.frontend.capture import encoded_input

from step_deploy.energy.counters import count_graph, needed_traces
from step_deploy.energy.counts import Counts
from step_deploy.energy.torch_hooks import hook_traces

SOURCES = ("torch", "golden-fpga", "golden-loihi")


class EnergyRunError(StepDeployError, ValueError):
    """The counting run cannot proceed (unknown source, no samples)."""


@dataclass(frozen=True)
class CountedRun:
    """Counts of ``source`` over the samples, with predictions and (when labelled) accuracy."""

    source: str
    graph: ir.Graph
    counts: Counts
    predictions: torch.Tensor
    accuracy: Optional[float]
    union: Optional[Counts] = None  # the same graph counted once on "non-zero at any step" (see union_traces)


def union_traces(traces: dict) -> dict:
    """Each ``(T, B, ...)`` trace reduced to one step: non-zero where the value is non-zero at any step.
    Counted with ``steps=1`` this gives the work of the quantized ANN that skips zero activations: an
    activation (a spike count over T) is zero exactly where no step had a non-zero value."""
    out = {}
    for k, v in traces.items():
        v = v if torch.is_tensor(v) else torch.as_tensor(v)
        out[k] = (v != 0).any(0, keepdim=True)
    return out


def quantized_graph(source: str, folded: ir.Graph, calib_encoded: torch.Tensor, steps: int, weight_bits: int = 8):
    """The graph a golden source runs: FPGA (``weight_bits``) or Loihi quantization of ``folded``."""
    if source == "golden-fpga":
        from step_deploy.passes.quantize_fpga import quantize_fpga
        return quantize_fpga(folded, calib_encoded, steps=steps, weight_bits=weight_bits)[0]
    from step_deploy.passes.quantize_loihi import quantize_loihi
    return quantize_loihi(folded, calib_encoded, steps=steps)[0]


def count_dataset(model, graph: ir.Graph, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                  source: str = "torch", qgraph: Optional[ir.Graph] = None, batch_size: int = 64,
                  widths: Optional[tuple] = None, progress: bool = False, desc: str = "counting") -> CountedRun:
    """Count ``model`` (its captured ``graph``) on raw inputs ``x`` through ``source``; for a golden
    source ``qgraph`` is the quantized graph. ``widths``: ``(weight_bits, membrane_bits)`` to count
    the torch source with (default: the graph's, float32)."""
    if source not in SOURCES:
        raise EnergyRunError(f"unknown counting source {source!r}; choose from {', '.join(SOURCES)}")
    if len(x) == 0:
        raise EnergyRunError("no samples to count: give at least one (--samples)")
    if source != "torch" and qgraph is None:
        raise EnergyRunError(f"source {source!r} needs the quantized graph (qgraph)")
    T = int(model.step)
    counted_graph = graph if source == "torch" else qgraph
    wb, mb = widths if widths is not None else (None, None)
    parts, unions, preds = [], [], []
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=desc, unit="batch", total=len(starts), leave=False)
    for s in starts:
        xb = x[s:s + batch_size]
        if source == "torch":
            out: list = []
            h = model.register_forward_hook(lambda m, i, o: out.append(o.detach()))
            try:
                with torch.no_grad():
                    traces = hook_traces(model, xb, graph, T)
            finally:
                h.remove()
            logits = out[-1]
            parts.append(count_graph(graph, traces, T, weight_bits=wb, membrane_bits=mb))
            unions.append(count_graph(graph, union_traces(traces), 1, weight_bits=wb, membrane_bits=mb))
        else:
            from step_deploy.simulators.golden import run_golden
            res = run_golden(qgraph, encoded_input(model, xb), steps=T, record=needed_traces(qgraph))
            logits = res.final()
            parts.append(count_graph(qgraph, res.traces, T))
            unions.append(count_graph(qgraph, union_traces(res.traces), 1))
        preds.append(logits.argmax(-1))
    p = torch.cat(preds)
    acc = float((p == y[:len(p)]).float().mean()) if y is not None else None
    return CountedRun(source, counted_graph, Counts.concat(parts), p, acc, Counts.concat(unions))


__all__ = ["CountedRun", "EnergyRunError", "SOURCES", "count_dataset", "quantized_graph", "union_traces"]
