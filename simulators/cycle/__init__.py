"""Cycle-level simulator (issue 10). This first slice: neuromorphic mesh hardware as data
(``hardware.py``, bundled files in ``arch/``): geometry and per-event energy and latency, each
number with its source and confidence, core placement on the mesh and hop counts."""
from step_deploy.simulators.cycle.hardware import (
    BUNDLED, EVENTS, GEOMETRY, EventCost, HardwareError, Hops, MeshHardware, Quantity, SyncTable, core_xy, hops,
    load_hardware)

__all__ = ["BUNDLED", "EVENTS", "GEOMETRY", "EventCost", "HardwareError", "Hops", "MeshHardware", "Quantity",
           "SyncTable", "core_xy", "hops", "load_hardware"]
from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga  # noqa: E402
from step_deploy.simulators.cycle.fpga_schedule import SCHEDULES, DesignPlan, plan_design  # noqa: E402
from step_deploy.simulators.cycle.explore import ExplorePoint, ExploreResult, explore  # noqa: E402
__all__ += ["simulate_fpga", "SCHEDULES", "DesignPlan", "plan_design", "ExplorePoint", "ExploreResult", "explore"]
from step_deploy.simulators.cycle.mesh import simulate_mesh  # noqa: E402
from step_deploy.simulators.cycle.result import SimResult, Unit  # noqa: E402
__all__ += ["simulate_mesh", "SimResult", "Unit"]
