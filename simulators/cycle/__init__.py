"""Cycle-level simulator (issue 10). This first slice: neuromorphic mesh hardware as data
(``hardware.py``, bundled files in ``arch/``): geometry and per-event energy and latency, each
number with its source and confidence, core placement on the mesh and hop counts."""
from step_deploy.simulators.cycle.hardware import (
    BUNDLED, EVENTS, GEOMETRY, EventCost, HardwareError, Hops, MeshHardware, Quantity, SyncTable, core_xy, hops,
    load_hardware)

__all__ = ["BUNDLED", "EVENTS", "GEOMETRY", "EventCost", "HardwareError", "Hops", "MeshHardware", "Quantity",
           "SyncTable", "core_xy", "hops", "load_hardware"]
