"""The Lava run itself, free of torch: build the network, attach recording sinks, run, read the spikes.

:func:`exporters.lava_runner.run_lava` prepares the integers (host-quantized inputs, unrolled synapse
matrices) and calls :func:`record_run_isolated`, which runs :func:`record_run` in a fresh Python
process (``python -m step_deploy.exporters.lava_record JOB RESULT``) that imports numpy, scipy, Lava
and the IR, but not torch. Lava forks one OS process per Lava process, and every fork copies its
parent's page tables: from a process that holds torch (about 0.5 GB mapped) a fork costs tens of
milliseconds, and a Spiking Transformer has about a hundred Lava processes. The job and result files
are written and read by step-deploy only, in a private temporary directory.
"""
from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from step_deploy import ir


class LavaRunError(RuntimeError):
    """Lava failed in its worker process; the message is the worker's own error."""


@dataclass
class RecordedRun:
    """What a Lava run recorded: ``data[node]`` int64 ``(steps, size)`` on the golden timeline, the
    delay ``schedule`` (as a dict), the Lava steps run, the process ``counts`` and ``timing`` (s)."""

    data: dict
    schedule: dict
    num_steps: int
    counts: dict
    timing: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


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


def record_run(qgraph: ir.Graph, inputs: dict, steps: int, wanted: list, matrices: Optional[dict] = None
               ) -> RecordedRun:
    """Build ``qgraph`` in Lava with host ``inputs`` (``{node: (T, *shape) int64}``), record the nodes
    ``wanted`` with one sink each, run ``steps + depth`` Lava steps and read the recordings."""
    from .lava_compat import import_lava

    import_lava()  # lava-nc 0.10.0 needs its Python 3.11 fix before any of its modules is imported
    from lava.magma.core.run_conditions import RunSteps

    from .lava_export import build_lava
    from .lava_harness import fixed_pt_config, stop_runtime

    t0 = time.perf_counter()
    net = build_lava(qgraph, inputs, steps, matrices=matrices)
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
    return RecordedRun(data=data, schedule=net.schedule.as_dict(), num_steps=net.num_steps, counts=net.counts(),
                       timing={"build": t1 - t0, "run": t2 - t1, "read": time.perf_counter() - t2})


def record_run_isolated(qgraph: ir.Graph, inputs: dict, steps: int, wanted: list,
                        matrices: dict) -> RecordedRun:
    """:func:`record_run` in a fresh worker process without torch (see the module docstring). Warnings the
    worker raised (e.g. Lava's shutdown hang) are raised again here; its failure is a
    :class:`LavaRunError` carrying the worker's error."""
    with tempfile.TemporaryDirectory(prefix="step_deploy_lava_job_") as tmp:
        job, result = os.path.join(tmp, "job.pkl"), os.path.join(tmp, "result.pkl")
        with open(job, "wb") as f:
            pickle.dump((qgraph, inputs, int(steps), list(wanted), matrices), f, protocol=pickle.HIGHEST_PROTOCOL)
        proc = subprocess.run([sys.executable, "-m", "step_deploy.exporters.lava_record", job, result],
                              capture_output=True, text=True)
        if not os.path.isfile(result):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
            raise LavaRunError(f"the Lava worker process exited with code {proc.returncode} without a result:\n"
                               + "\n".join(tail))
        with open(result, "rb") as f:
            out = pickle.load(f)  # our own file, written by our worker a moment ago
    if isinstance(out, dict) and "error" in out:
        raise LavaRunError(f"Lava failed in its worker process: {out['error']}")
    for message in out.warnings:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return out


def main(argv=None) -> int:
    """Worker entry point: ``python -m step_deploy.exporters.lava_record JOB RESULT``."""
    job, result = (sys.argv[1:] if argv is None else argv)[:2]
    with open(job, "rb") as f:
        qgraph, inputs, steps, wanted, matrices = pickle.load(f)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            out = record_run(qgraph, inputs, steps, wanted, matrices)
        out.warnings = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    except Exception as e:  # noqa: BLE001 - handed to the parent, which raises it with this message
        out = {"error": f"{type(e).__name__}: {e}"}
    with open(result + ".tmp", "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(result + ".tmp", result)
    return 0


if __name__ == "__main__":  # run by its package name, so that what it pickles names this module, not __main__
    from step_deploy.exporters.lava_record import main as _main

    sys.exit(_main())
