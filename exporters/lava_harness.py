"""Run a small open-loop Lava network on the CPU in fixed point: RingBuffer sources feed given
in ports, RingBuffer sinks record given out ports. Used by the tests of the Lava processes and
handy for checking one process or a short chain; whole networks are assembled by the exporter.

Data layout at this boundary is time-first, ``(T, N)`` integer arrays (one flattened vector per
step); Lava's RingBuffers hold ``(N, T)``.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Mapping, Optional

import numpy as np

from .lava_compat import check_start_method, import_lava


def fixed_pt_config(**kwargs):
    """``Loihi2SimCfg(select_tag='fixed_pt')``: Loihi-2 bit-accurate CPU simulation."""
    import_lava()
    from lava.magma.core.run_configs import Loihi2SimCfg

    return Loihi2SimCfg(select_tag="fixed_pt", **kwargs)


def run_open_loop(inputs: Mapping, outputs: Mapping, num_steps: Optional[int] = None,
                  run_cfg=None, read_vars: Optional[Mapping] = None) -> dict[str, np.ndarray]:
    """Feed ``inputs`` ``{in_port: (T, N) int array}`` (step t of the array is sent in step t),
    record ``outputs`` ``{name: out_port}`` for ``num_steps`` steps (default T; the input
    repeats cyclically beyond T, so pad it with zeros to run longer) and return
    ``{name: (num_steps, N) int64 array}``. Output row t holds what the port sent in step t.
    ``read_vars`` ``{name: Var}`` adds the Vars' values after the last step (``Var.get()`` is
    slow for big Vars: prefer sinks). Lava runs only the processes connected to the first sink:
    pass the *same* array object for several ports to feed them from one source (one graph)."""
    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    # our processes' fixed_pt models, registered on import: Lava's own search (the files next to a
    # process's module, executed as top-level modules) cannot load them (relative imports), so a run of
    # one of our processes by a caller that never imported ``lava_models`` failed with NoProcessModelFound
    from . import lava_models  # noqa: F401

    if not outputs:
        raise ValueError("run_open_loop: give at least one output port to record")
    steps = num_steps
    groups: dict[int, tuple[np.ndarray, list]] = {}  # one source per input array object
    for port, data in inputs.items():
        groups.setdefault(id(data), (data, []))[1].append(port)
    for data, ports in groups.values():
        data = np.asarray(data)
        for port in ports:
            if data.ndim != 2 or data.shape[1] != port.shape[0]:
                raise ValueError(f"input for {port.process.name}.{port.name}: expected (T, "
                                 f"{port.shape[0]}), got {data.shape}")
        if not np.issubdtype(data.dtype, np.integer):
            raise TypeError(f"input for {ports[0].process.name} must be integer, got {data.dtype}")
        steps = steps or data.shape[0]
        Source(data=np.ascontiguousarray(data.T.astype(np.int32))).s_out.connect(ports)
    if not steps:
        raise ValueError("run_open_loop: num_steps is required when there are no inputs")
    sinks = {}
    for name, port in outputs.items():
        sinks[name] = Sink(shape=port.shape, buffer=steps)
        port.connect(sinks[name].a_in)
    anchor = next(iter(sinks.values()))
    check_start_method()
    try:
        anchor.run(condition=RunSteps(num_steps=steps), run_cfg=run_cfg or fixed_pt_config())
    except Exception:
        stop_runtime(anchor, failed=True)
        raise
    try:
        result = {name: np.asarray(s.data.get()).T.astype(np.int64) for name, s in sinks.items()}
        for name, var in (read_vars or {}).items():
            result[name] = np.asarray(var.get()).astype(np.int64)
        return result
    finally:
        stop_runtime(anchor, failed=False)


#: seconds ``stop_runtime`` waits for Lava's runtime to stop (``STEP_DEPLOY_LAVA_STOP_TIMEOUT``)
STOP_TIMEOUT = float(os.environ.get("STEP_DEPLOY_LAVA_STOP_TIMEOUT", "120"))


def stop_runtime(proc, failed: bool, timeout: Optional[float] = None) -> bool:
    """``proc.stop()``, safe after a failed ``run()`` (``failed=True``) and bounded in time.

    When a process model raises, lava-nc 0.10.0's runtime service stops every process and exits,
    and ``run()`` raises ``RuntimeError``; a later ``proc.stop()`` would then wait forever for an
    answer from the exited service. After a failure this only releases the shared memory.

    After a successful run, lava-nc 0.10.0 occasionally never finishes ``stop()``: its runtime
    service waits for an answer from a process model that has already exited (seen here on a
    loaded 2-core machine; lava-nc issue #178 asks for exactly this detection). The results were
    recorded during ``run()``, so nothing is lost: after ``timeout`` seconds (default
    :data:`STOP_TIMEOUT`) the runtime's processes are terminated, a ``RuntimeWarning`` says so,
    and this returns False (True when Lava stopped by itself)."""
    import multiprocessing

    runtime = getattr(proc, "runtime", None)
    if runtime is None:
        return True
    if failed:
        runtime._is_started = False
        runtime._is_running = False
    before = set(multiprocessing.active_children())  # Lava's own processes are among these
    stopper = threading.Thread(target=proc.stop, name="lava-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT if timeout is None else timeout)
    if not stopper.is_alive():
        return True
    for child in before:
        if child.is_alive():
            child.terminate()
    for child in before:
        child.join(5)
    warnings.warn(f"Lava's runtime did not stop within {STOP_TIMEOUT if timeout is None else timeout:g} s (a "
                  f"lava-nc 0.10.0 shutdown hang); its {len(before)} processes were terminated. The results "
                  f"were recorded before the stop, so they are complete.", RuntimeWarning, stacklevel=2)
    return False
