"""The two schedules of the generated FPGA design, as plans the cycle-level simulator executes and
``explore`` compares: per kernel its parallelism, cycles, memories and resources, and for the whole
design the latency and the initiation interval between samples.

Every per-layer number comes from the FPGA target's model (``fpga.resource_model``; stated in the
``fpga.estimate`` docstring): a kernel's cycles per time step are ``step_cycles(layer)`` =
``cycles_per_step + PIPELINE_DEPTH`` (II = 1 loops, dense: they do not depend on the spikes), its
resources are the estimate's layer model, so the ``'step'`` plan *is* the estimate (same numbers).

``'step'``    the generated design (``fpga.hls_writer``): time steps outermost, the kernels one after
              another inside a step. ``busy[k, t] = c_k + D``; ``latency = T · Σ_k (c_k + D)``. Every
              kernel's state lives in the sample's on-chip memories and the design is one sequential
              function: no overlap between samples, ``interval = latency`` (throughput 1/latency).
              With a window op (``TemporalBlockSum``, block ``B``) the design runs **block-major**
              (``fpga.hls_writer``): blocks of ``B`` steps outermost, each kernel over the block's
              ``B`` steps; the work and so ``latency`` are those above, every output buffer holds
              ``B`` steps (the estimate's memories), and a block's first output waits ``B - 1``
              steps for its last input (:attr:`DesignPlan.window_latency_steps`).
``'batched'`` time-step batching (FireFly v2, arXiv 2309.16158; Chen & Chang, arXiv 2503.19643): each
              kernel runs all T steps of its layer before the next kernel starts, the step loop
              innermost, so a lane keeps its neuron's membrane (or readout sum) in a register for the
              T steps: **no membrane memory** (``P × membrane_bits`` flip-flops instead) and a weight is
              fetched once for all T steps; every output buffer holds T steps and is doubled
              (ping-pong) so that the kernels run concurrently on consecutive samples (HLS DATAFLOW).
              ``busy[k, t] = c_k`` plus ``D`` once at ``t = 0``; ``latency = Σ_k (T · c_k + D)``;
              ``interval = max_k (T · c_k + D)`` (throughput 1/interval, the slowest kernel).

Off-chip memory: a design whose BRAM or URAM exceeds the part keeps the weight ROMs of its largest
synapse kernels in DRAM (largest first, until the rest fits); such a kernel's step takes
``max(c_k, ceil(weight bits it reads per step / DRAM bits per cycle))`` with the board's peak DRAM
bandwidth (``arch/fpga_boards.yaml``). A design that fits (every design the estimate accepts) has no
spilled weights, and the ``'step'`` plan's cycles equal ``fpga.estimate``'s."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from math import ceil
from pathlib import Path
from typing import Optional, Union

import yaml

from step_deploy import ir
from step_deploy.errors import UsageError
from step_deploy.fpga.memory_blocks import Memory, place
from step_deploy.fpga.parallelism import resolve_parallelism
from step_deploy.fpga.parts import RESOURCES, FpgaPart, load_part
from step_deploy.fpga.resource_model import (PIPELINE_DEPTH, DesignEstimate, DesignModel, LayerEstimate, check_clock,
                                             step_cycles)
from step_deploy.fixedpoint import fpga as fx
from step_deploy.targets.spec import check_provenance

SCHEDULES = ("step", "batched")
BOARDS_FILE = Path(__file__).with_name("arch") / "fpga_boards.yaml"
#: the keys of a board entry (``boards.<part>``) and of ``memory_blocks``
BOARD_KEYS = ("dram_bandwidth_gbps", "bram36_ports", "bram36_port_bits", "uram_ports", "uram_port_bits")


# ---------------------------------------------------------------------------------------------- boards


@dataclass(frozen=True)
class BoardDataflow:
    """What the dataflow needs beyond the part's resources: peak DRAM bandwidth and the ports of
    one memory block; ``sources`` maps each to ``"confidence: source"``."""

    name: str
    dram_bandwidth_gbps: float
    bram36_ports: int
    bram36_port_bits: int
    uram_ports: int
    uram_port_bits: int
    sources: dict = field(default_factory=dict, hash=False, compare=False)

    def dram_bits_per_cycle(self, clock_mhz: float) -> float:
        return self.dram_bandwidth_gbps * 8e9 / (clock_mhz * 1e6)


@functools.lru_cache(maxsize=8)
def _read_yaml(path: str, stamp) -> dict:
    """A board file's contents, parsed once per path and modification time (``stamp``)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read the FPGA board file {path}: {str(e).splitlines()[0]}") from None
    return data if isinstance(data, dict) else {}


def load_board(part: Union[FpgaPart, str], path: Union[str, Path, None] = None) -> BoardDataflow:
    """The board facts of ``part`` from ``arch/fpga_boards.yaml`` (or ``path``, a file of the same
    layout); parts without an entry get ``default`` (an assumption, stated in ``sources``). Every entry
    needs a positive ``value``, a ``source`` and a ``confidence`` (the device specs' provenance rule);
    what is wrong is one ``UsageError`` naming the file and the keys."""
    p = Path(path) if path is not None else BOARDS_FILE
    try:
        stamp = p.stat().st_mtime_ns
    except OSError:
        stamp = None
    data = _read_yaml(str(p), stamp)
    name = part.name if isinstance(part, FpgaPart) else str(part)
    boards = data.get("boards") or {}
    entry = boards.get(name, boards.get("default")) or {}
    raw = {"dram_bandwidth_gbps": entry.get("dram_bandwidth_gbps"), **(data.get("memory_blocks") or {})}
    problems: list[str] = []
    values, sources = {}, {}
    for key in BOARD_KEYS:
        r = raw.get(key)
        if not isinstance(r, dict) or not {"value", "source", "confidence"} <= set(r):
            problems.append(f"{key!r} needs value, source and confidence")
            continue
        check_provenance(repr(key), r, problems)
        v = r["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            problems.append(f"{key!r}: value {v!r} must be a positive number")
        values[key] = v
        sources[f"fpga.{key}"] = f"{r['confidence']}: {r['source']}"
    if problems:
        raise UsageError(f"FPGA board file {p} ({name!r}): " + "; ".join(problems))
    return BoardDataflow(name=name, sources=sources, **values)


# ---------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class KernelPlan:
    """One kernel under a schedule: ``layer`` its resources and memory bits (the estimate's model;
    for ``'batched'`` with that schedule's memories; a spilled ROM's blocks removed), ``loop_cycles``
    its II = 1 loop per step (``layer.cycles_per_step``, or the DRAM limit of spilled weights when
    longer), ``register_bits`` the state held in flip-flops (batched membranes), ``spilled`` when its
    weights live in DRAM."""

    node: str
    op: str
    parallelism: int
    loop_cycles: int
    layer: LayerEstimate
    register_bits: int = 0
    spilled: bool = False

    @property
    def step_cycles(self) -> int:
        """Cycles per step with the pipeline fill: ``fpga.resource_model.step_cycles`` (the estimate's
        formula) unless DRAM limits a spilled kernel."""
        return step_cycles(self.layer) if not self.spilled else self.loop_cycles + PIPELINE_DEPTH


@dataclass(frozen=True)
class DesignPlan:
    """A design under one schedule (see the module docstring for the formulas)."""

    schedule: str
    part: FpgaPart
    board: BoardDataflow
    clock_mhz: float
    steps: int
    kernels: tuple[KernelPlan, ...]
    host: tuple[str, ...] = ()
    #: a window op's block of steps (``TemporalBlockSum``); > 1: the 'step' design runs block-major
    block: int = 1

    @property
    def window_latency_steps(self) -> int:
        """Steps a block's first output waits for the block's last input: ``block - 1``."""
        return self.block - 1

    @property
    def overlap(self) -> bool:
        """Whether consecutive samples overlap (layers as concurrent kernels)."""
        return self.schedule == "batched"

    def busy_cycles(self, k: int, t: int) -> int:
        """Cycles kernel ``k`` works on step ``t`` of one sample."""
        kp = self.kernels[k]
        if self.schedule == "step":
            return kp.step_cycles
        return kp.loop_cycles + (PIPELINE_DEPTH if t == 0 else 0)

    def kernel_cycles(self, k: int) -> int:
        """Cycles kernel ``k`` works on one sample (all steps)."""
        return sum(self.busy_cycles(k, t) for t in range(self.steps))

    @property
    def latency_cycles(self) -> int:
        return sum(self.kernel_cycles(k) for k in range(len(self.kernels)))

    @property
    def interval_cycles(self) -> int:
        """Cycles between two samples in steady state: the slowest kernel with overlap, else the latency."""
        if self.overlap and self.kernels:
            return max(self.kernel_cycles(k) for k in range(len(self.kernels)))
        return self.latency_cycles

    def ns(self, cycles: float) -> float:
        return cycles * 1e3 / self.clock_mhz

    @property
    def latency_ns(self) -> float:
        return self.ns(self.latency_cycles)

    @property
    def throughput_sps(self) -> float:
        return 1e9 / self.ns(self.interval_cycles) if self.interval_cycles else 0.0

    def estimate(self) -> DesignEstimate:
        """The resource totals as a ``DesignEstimate`` (its latency properties follow the 'step' rule)."""
        return DesignEstimate(self.part, self.clock_mhz, self.steps, tuple(k.layer for k in self.kernels), self.host)

    def resources(self) -> dict[str, int]:
        out = self.estimate().totals()
        out["ff"] += sum(k.register_bits for k in self.kernels)
        return out

    def utilisation(self) -> dict[str, float]:
        have = self.part.resources()
        return {r: (n / have[r] if have[r] else (0.0 if n == 0 else float("inf"))) for r, n in self.resources().items()}

    def fits(self) -> bool:
        return all(u <= 1.0 for u in self.utilisation().values())

    def memory_bits(self) -> dict[str, int]:
        """On-chip bits by role (weights exclude spilled ROMs) and the flip-flops holding state."""
        return {"weights": sum(k.layer.weight_bits for k in self.kernels if not k.spilled),
                "weights_dram": sum(k.layer.weight_bits for k in self.kernels if k.spilled),
                "state": sum(k.layer.state_bits for k in self.kernels),
                "buffers": sum(k.layer.buffer_bits for k in self.kernels),
                "registers": sum(k.register_bits for k in self.kernels)}


def _batched_memories(model: DesignModel, name: str, steps: int) -> tuple[tuple, int]:
    """``(memories, register bits per lane)`` of a kernel under time-step batching: state moves to
    registers (a readout sum keeps a one-step output buffer), buffers hold T steps, twice."""
    mems, lane_regs = [], 0
    for role, bits, word, rom in model.shapes[name].memories:
        if role == "state":
            lane_regs += word
            if isinstance(model.nodes[name], fx.FpgaTemporalSum):  # its output was its state
                mems.append(("buffer", 2 * bits, word, False))
        elif role == "buffer":  # T steps (not the block-major design's B), twice
            mems.append(("buffer", 2 * steps * (bits // model.block), word, False))
        else:
            mems.append((role, bits, word, rom))
    return tuple(mems), lane_regs


def _weight_blocks(model: DesignModel, name: str, p: int) -> tuple[int, int]:
    """``(bram18, uram)`` of a kernel's weight ROM (what spilling it to DRAM frees)."""
    b18 = u = 0
    for role, bits, word, rom in model.shapes[name].memories:
        if role in ("weights", "bias"):
            pl = place(Memory(role, bits, p, word, rom), model.has_uram)
            b18, u = b18 + pl.bram18, u + pl.uram
    return b18, u


def plan_design(qgraph: ir.Graph, part: Union[FpgaPart, str] = "zcu104", *, clock_mhz: float = 200.0,
                parallelism=None, schedule: str = "step", steps: Optional[int] = None,
                model: Optional[DesignModel] = None, board: Optional[BoardDataflow] = None) -> DesignPlan:
    """The :class:`DesignPlan` of ``qgraph`` on ``part``: ``parallelism`` as ``fpga.estimate`` takes it
    (None, an int, ``{node: P}``, ``'auto'`` or the ``--parallelism`` text), ``schedule`` one of
    :data:`SCHEDULES`. ``model`` reuses an already built ``DesignModel`` (``explore``)."""
    if schedule not in SCHEDULES:
        raise UsageError(f"schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    clock = check_clock(clock_mhz)
    part = load_part(part)
    model = model or DesignModel(qgraph, part, steps)
    board = board or load_board(part)
    if isinstance(parallelism, dict) and set(parallelism) == set(model.nodes):  # already resolved: every kernel
        par = model.resolve(parallelism)
    else:
        par = resolve_parallelism(parallelism, qgraph, part, clock, steps=model.steps)
    layers, regs = {}, {}
    for name in model.nodes:
        p = par.get(name, 1)
        if schedule == "step":
            layers[name], regs[name] = model.layer(name, p), 0
        else:
            mems, lane = _batched_memories(model, name, model.steps)
            layers[name] = model.layer_variant(name, p, mems)
            regs[name] = lane * layers[name].parallelism
    spilled = _spill(model, part, layers)
    dram_bpc = board.dram_bits_per_cycle(clock)
    kernels = []
    for name, l in layers.items():
        c = l.cycles_per_step
        if name in spilled:  # every weight read comes from DRAM
            n = model.nodes[name]
            reads = int(n.weight.size) * n.weight_bits * _positions(model, name)
            if schedule == "batched":  # one fetch serves the T steps
                reads = ceil(reads / model.steps)
            c = max(c, ceil(reads / dram_bpc))
            b18, u = _weight_blocks(model, name, l.parallelism)
            l = replace(l, bram36=max(0, l.bram36 - b18 // 2), uram=max(0, l.uram - u))
        kernels.append(KernelPlan(name, l.op, l.parallelism, c, l, regs[name], name in spilled))
    return DesignPlan(schedule, part, board, clock, model.steps, tuple(kernels), tuple(model.host), model.block)


def _positions(model: DesignModel, name: str) -> int:
    """Output positions of a synapse (each reads every weight once per step in the dense loops)."""
    n = model.nodes[name]
    s = model.shapes[name]
    c_out = int(n.weight.shape[0])
    fan_in = int(n.weight.size) // c_out
    return s.cycles_fn(c_out) // fan_in  # cycles at P = C_out: positions x fan_in


def _spill(model: DesignModel, part: FpgaPart, layers: dict) -> set:
    """Synapse kernels whose weight ROMs go to DRAM so that the rest fits BRAM and URAM (largest first)."""
    bram = sum(l.bram36 for l in layers.values())
    uram = sum(l.uram for l in layers.values())
    spilled: set = set()
    if bram <= part.bram36 and uram <= part.uram:
        return spilled
    synapses = sorted((n for n in layers if isinstance(model.nodes[n], fx.FPGA_SYNAPSES)),
                      key=lambda n: (-layers[n].weight_bits, n))
    for n in synapses:
        if bram <= part.bram36 and uram <= part.uram:
            break
        b18, u = _weight_blocks(model, n, layers[n].parallelism)
        bram, uram = bram - b18 // 2, uram - u
        spilled.add(n)
    return spilled


__all__ = ["SCHEDULES", "BoardDataflow", "load_board", "KernelPlan", "DesignPlan", "plan_design", "RESOURCES"]
