"""Run a quantized IR graph on Lava's CPU simulator (``Loihi2SimCfg(select_tag='fixed_pt')``) and
read the spikes back on the golden model's timeline.

Lava runs one sample at a time (every Lava process is an OS process; a run of a tiny Spiking
Transformer takes seconds). For a T-step sample the network runs ``T + depth`` Lava steps, where
``depth`` is the largest latency of ``passes.delay_balance.schedule``; node n's golden step t is
read from Lava step ``t + latency[n]`` (see ``simulators.golden``'s time alignment). The analog
input is quantized on the host with exactly the golden model's function, so both see the same
integers.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

import numpy as np
import torch

from step_deploy import ir

from step_deploy.fixedpoint import loihi as fx
from step_deploy.simulators.golden import spiking_nodes
from step_deploy.simulators.golden_loihi import quantize_input
from step_deploy.simulators.reference import RunResult


@dataclass
class LavaResult(RunResult):
    """``RunResult`` (int64 ``(T, 1, ...)`` tensors on the golden timeline) plus the Lava side:
    ``schedule`` (latencies), ``num_steps`` run, process ``counts`` and ``timing`` in seconds."""

    schedule: dict = field(default_factory=dict)
    num_steps: int = 0
    counts: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


def host_inputs(qgraph: ir.Graph, x, steps: int) -> dict[str, np.ndarray]:
    """One sample -> ``{node: (T, *shape) int64}`` for the Lava sources: each analog Input goes
    through its ``QuantizeInput`` (host side), integer inputs are passed as they are. ``x`` is a
    per-step tensor ``(*shape)`` (repeated T times) or ``(T, *shape)``, or a dict by input name."""
    ins = qgraph.inputs
    if not isinstance(x, dict):
        if len(ins) != 1:
            raise ValueError(f"graph has {len(ins)} inputs; pass a dict")
        x = {ins[0].name: x}
    out = {}
    for n in ins:
        v = torch.as_tensor(np.asarray(x[n.name])) if not torch.is_tensor(x[n.name]) else x[n.name]
        if v.is_floating_point():
            v = v.float()  # the golden model sees float32 (reference.run)
        if v.dim() == len(n.shape):
            v = v.unsqueeze(0).expand(steps, *v.shape)
        quant = [c for c in qgraph.consumers(n.name) if isinstance(c, fx.QuantizeInput)]
        if quant:
            out[quant[0].name] = quantize_input(quant[0], v).numpy()
        else:
            if v.is_floating_point():
                raise TypeError(f"input {n.name!r} ({n.kind}) must be integers for Lava")
            out[n.name] = v.to(torch.int64).numpy()
    return out


def run_lava(qgraph: ir.Graph, x, steps: int, record: Union[bool, Iterable[str]] = True,
             matrices: Optional[dict] = None, isolate: Optional[bool] = None) -> LavaResult:
    """Run one sample for ``steps`` golden steps (``steps + depth`` Lava steps) and return the
    recorded nodes (``record=True``: every LoihiLIF) and the Outputs, aligned to the golden model:
    ``traces[name][t, 0]`` equals ``run_golden(...).traces[name][t, 0]`` bit for bit.

    ``isolate`` (default: True unless ``$STEP_DEPLOY_LAVA_ISOLATE`` is 0): Lava runs in a fresh
    worker process that has not loaded torch (:mod:`.lava_record`). Lava forks one OS process per
    Lava process, and a fork copies the page tables of its parent: from a process holding torch
    that costs tens of milliseconds per fork, about a hundred forks per Spiking Transformer. The
    inputs are quantized and the synapse matrices built here, so both processes compute the same
    integers; ``isolate=False`` runs everything in this process."""
    from .lava_export import check_lava, synapse_matrices
    from .lava_record import record_run, record_run_isolated

    t0 = time.perf_counter()
    names = spiking_nodes(qgraph) if record is True else list(record or ())
    outs = [o.name for o in qgraph.outputs]
    wanted = list(dict.fromkeys(names + outs))
    if not wanted:
        raise ValueError("run_lava: nothing to record")
    inputs = host_inputs(qgraph, x, steps)
    if isolate is None:
        isolate = os.environ.get("STEP_DEPLOY_LAVA_ISOLATE", "1") != "0"
    if isolate:
        check_lava(qgraph, steps)  # a refusal is raised here, as it is, not as the worker's failure
        run = record_run_isolated(qgraph, inputs, steps, wanted, synapse_matrices(qgraph, matrices))
    else:
        run = record_run(qgraph, inputs, steps, wanted, matrices)
    shapes = qgraph.infer_shapes()

    def aligned(name):
        return torch.from_numpy(run.data[name].reshape(steps, 1, *shapes[name]))

    timing = {**run.timing, "total": time.perf_counter() - t0}
    return LavaResult(outputs={o: aligned(o) for o in outs}, traces={n: aligned(n) for n in names},
                      schedule=run.schedule, num_steps=run.num_steps, counts=run.counts, timing=timing)


def compare(golden_traces: dict, lava_traces: dict, sample: int = 0) -> dict[str, int]:
    """Mismatching elements per node between a golden batch (sample ``sample``) and a Lava run."""
    out = {}
    for name, lv in lava_traces.items():
        g = golden_traces[name][:, sample: sample + 1]
        out[name] = int((g.to(torch.int64) != lv).sum())
    return out


__all__ = ["LavaResult", "run_lava", "host_inputs", "compare"]

