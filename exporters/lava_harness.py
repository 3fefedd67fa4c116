"""Run a small open-loop Lava network on the CPU in fixed point: RingBuffer sources feed given
in ports, RingBuffer sinks record given out ports. Used by the tests of the Lava processes and
handy for checking one process or a short chain; whole networks are assembled by the exporter.

Data layout at this boundary is time-first, ``(T, N)`` integer arrays (one flattened vector per
step); Lava's RingBuffers hold ``(N, T)``.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from step_deploy.simulators.lava_compat import import_lava


def fixed_pt_config(**kwargs):
    """``Loihi2SimCfg(select_tag='fixed_pt')``: Loihi-2 bit-accurate CPU simulation."""
    import_lava()
    from lava.magma.core.run_configs import Loihi2SimCfg

    return Loihi2SimCfg(select_tag="fixed_pt", **kwargs)


def run_open_loop(inputs: Mapping, outputs: Mapping, num_steps: Optional[int] = None,
                  run_cfg=None) -> dict[str, np.ndarray]:
    """Feed ``inputs`` ``{in_port: (T, N) int array}`` (step t of the array is sent in step t),
    record ``outputs`` ``{name: out_port}`` for ``num_steps`` steps (default T; the input
    repeats cyclically beyond T, so pad it with zeros to run longer) and return
    ``{name: (num_steps, N) int64 array}``. Output row t holds what the port sent in step t."""
    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    if not outputs:
        raise ValueError("run_open_loop: give at least one output port to record")
    steps = num_steps
    for port, data in inputs.items():
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != port.shape[0]:
            raise ValueError(f"input for {port.process.name}.{port.name}: expected (T, "
                             f"{port.shape[0]}), got {data.shape}")
        if not np.issubdtype(data.dtype, np.integer):
            raise TypeError(f"input for {port.process.name}.{port.name} must be integer, "
                            f"got {data.dtype}")
        steps = steps or data.shape[0]
        Source(data=np.ascontiguousarray(data.T.astype(np.int32))).s_out.connect(port)
    if not steps:
        raise ValueError("run_open_loop: num_steps is required when there are no inputs")
    sinks = {}
    for name, port in outputs.items():
        sinks[name] = Sink(shape=port.shape, buffer=steps)
        port.connect(sinks[name].a_in)
    anchor = next(iter(sinks.values()))
    try:
        anchor.run(condition=RunSteps(num_steps=steps), run_cfg=run_cfg or fixed_pt_config())
        return {name: np.asarray(s.data.get()).T.astype(np.int64) for name, s in sinks.items()}
    finally:
        anchor.stop()
