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

import math
import os
import tempfile
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


_WINDOW_SINK = None


def window_sink_class():
    """A recording process (defined on first use, after Lava is imported): it keeps the steps
    ``[start, start + length)`` of its input and writes them to ``path`` (``.npy``) in the last
    of those steps. Lava's ``Var.get`` sends arrays element by element (about 30 µs per value),
    which made reading the sinks the slowest part of a run; a file costs nothing. It only
    records, so it cannot change what the network computes."""
    global _WINDOW_SINK
    if _WINDOW_SINK is not None:
        return _WINDOW_SINK
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    from .lava_compat import register_process_models

    class WindowSink(AbstractProcess):
        def __init__(self, size: int, start: int, length: int, path: str, name: Optional[str] = None):
            super().__init__(size=int(size), start=int(start), length=int(length), path=str(path), name=name)
            self.a_in = InPort(shape=(int(size),))

    @implements(proc=WindowSink, protocol=LoihiProtocol)
    @requires(CPU)
    @tag("fixed_pt")
    class PyWindowSinkModel(PyLoihiProcessModel):
        a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=32)

        def __init__(self, proc_params):
            super().__init__(proc_params)
            p = self.proc_params
            self._buf = np.zeros((p["length"], p["size"]), np.int64)

        def run_spk(self):
            x = self.a_in.recv()
            p = self.proc_params
            k = self.time_step - 1 - p["start"]
            if 0 <= k < p["length"]:
                self._buf[k] = x
                if k == p["length"] - 1:
                    np.save(p["path"], self._buf)

    register_process_models(WindowSink, PyWindowSinkModel)
    _WINDOW_SINK = WindowSink
    return WindowSink


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
             matrices: Optional[dict] = None) -> LavaResult:
    """Run one sample for ``steps`` golden steps (``steps + depth`` Lava steps) and return the
    recorded nodes (``record=True``: every LoihiLIF) and the Outputs, aligned to the golden model:
    ``traces[name][t, 0]`` equals ``run_golden(...).traces[name][t, 0]`` bit for bit."""
    from lava.magma.core.run_conditions import RunSteps

    from .lava_export import build_lava
    from .lava_harness import fixed_pt_config, stop_runtime

    t0 = time.perf_counter()
    names = spiking_nodes(qgraph) if record is True else list(record or ())
    outs = [o.name for o in qgraph.outputs]
    wanted = list(dict.fromkeys(names + outs))
    net = build_lava(qgraph, host_inputs(qgraph, x, steps), steps, matrices=matrices)
    shapes = qgraph.infer_shapes()
    lat = net.schedule.latency
    sink_cls = window_sink_class()
    with tempfile.TemporaryDirectory(prefix="step_deploy_lava_") as tmp:
        paths = {}
        for i, name in enumerate(wanted):
            paths[name] = os.path.join(tmp, f"{i}.npy")
            sink = sink_cls(int(math.prod(shapes[name])), lat[name], steps, paths[name], name=f"{name}.sink")
            net.processes.append(sink)
            for port in net.ports[name]:
                port.connect(sink.a_in)
            net.sinks[name] = sink
        if not net.sinks:
            raise ValueError("run_lava: nothing to record")
        anchor = next(iter(net.sinks.values()))
        t1 = time.perf_counter()
        try:
            anchor.run(condition=RunSteps(num_steps=net.num_steps), run_cfg=fixed_pt_config())
        except Exception:
            stop_runtime(anchor, failed=True)  # lava's stop() would hang after a failed run
            raise
        stop_runtime(anchor, failed=False)
        t2 = time.perf_counter()
        data = {name: np.load(p) for name, p in paths.items()}
    t3 = time.perf_counter()

    def aligned(name):
        return torch.from_numpy(data[name].reshape(steps, 1, *shapes[name]))

    return LavaResult(outputs={o: aligned(o) for o in outs}, traces={n: aligned(n) for n in names},
                      schedule=net.schedule.as_dict(), num_steps=net.num_steps, counts=net.counts(),
                      timing={"build": t1 - t0, "run": t2 - t1, "read": t3 - t2, "total": t3 - t0})


def compare(golden_traces: dict, lava_traces: dict, sample: int = 0) -> dict[str, int]:
    """Mismatching elements per node between a golden batch (sample ``sample``) and a Lava run."""
    out = {}
    for name, lv in lava_traces.items():
        g = golden_traces[name][:, sample: sample + 1]
        out[name] = int((g.to(torch.int64) != lv).sum())
    return out


__all__ = ["LavaResult", "run_lava", "host_inputs", "compare"]
