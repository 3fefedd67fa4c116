"""Memory traffic of the generated FPGA design per kernel and time step, by level, and its energy
from the energy module's tables (``step_deploy/energy/constants.yaml``, ``horowitz``).

Traffic per kernel and step of one sample (bits; the design's loops are dense, so none of it
depends on the spikes):

* synapses (``Fpga{Linear,Conv1d,Conv2d}``): every lane reads one weight per loop iteration,
  ``dense_macs × weight_bits`` (``dense_macs`` = output values × fan-in, padding taps included, as the
  energy module's ``dense_macs``); one input value per iteration, broadcast to the ``P`` lanes,
  ``loop_cycles × input_bits``; the accumulator register is written every MAC, ``dense_macs ×
  acc_bits`` (registers). Under ``'batched'`` a weight is fetched once for the T steps (counted at
  step 0).
* ``FpgaLIF`` / ``FpgaTemporalSum``: the state (membrane, readout sum) read and written once per
  element per step (on chip under ``'step'``, registers under ``'batched'``), the input read once per
  element; the charge ``H`` in a register.
* ``MatMul``: on two spike operands a 64-bit word of each per output per word of the contracted
  length; else one value of each per output per contracted element. ``Sum`` / ``MaxPool2d``: one
  input value per output per reduced element; ``Add`` / ``Mul`` / ``Transpose`` / ``ReLU`` /
  ``TemporalBlockSum`` (per step of its block): every input once; ``Shiftmax``: every input three
  times (row max, row sum, output).
* every kernel writes its output buffer once per step (``storage_bits``; spikes packed one per bit,
  STEP's ILIF integer spikes 0..D ``ceil(log2(D + 1))`` bits each); a readout's output is its state.
* DRAM: the input port reads the quantized input once per step (``x[T × IN]``), the output port
  writes the readout once per sample, and spilled weight ROMs (``fpga_schedule``) are read from DRAM.

Energy (pJ): ``compute`` = the energy module's ``horowitz`` compute components (``synapses``,
``neurons``, ``attention``, ``reductions``) of the same counts: one pricing of the operations.
``sram`` = bits × (the 64-bit access energy of the smallest tabulated memory at least as large as
the memory the bits come from) / 64, the energy module's rule; ``dram`` = bits ×
``horowitz.dram_access_64bit`` / 64. Register traffic is reported but not priced (Horowitz gives no
register figure)."""
from __future__ import annotations

from math import ceil, prod

from step_deploy import ir
from step_deploy.energy.constants import Constants
from step_deploy.fixedpoint import fpga as fx
from step_deploy.fpga.resource_model import POPCOUNT_WORD
from step_deploy.fpga.tensor_types import ALIAS_OPS, TensorType

from .fpga_schedule import DesignPlan

#: traffic counters per kernel and step, and the level each one goes to under each schedule
TRAFFIC = ("weight_bits_read", "state_bits_read", "state_bits_written", "input_bits_read", "buffer_bits_written",
           "register_bits", "dram_bits")
COMPUTE_COMPONENTS = ("synapses", "neurons", "attention", "reductions")


def storage_source(g: ir.Graph, name: str) -> str:
    """The node whose buffer holds ``name``'s values (Reshape/Flatten are views of their input)."""
    while g[name].op in ALIAS_OPS:
        name = g[name].inputs[0]
    return name


def kernel_traffic(g: ir.Graph, plan: DesignPlan, k: int, tt: dict[str, TensorType], shapes: dict) -> dict:
    """``{counter: bits}`` of kernel ``k`` at one step of one sample under ``plan.schedule``, with
    ``weight_bits_read_once`` the part of the weight reads a batched kernel makes only at step 0."""
    kp = plan.kernels[k]
    n = g[kp.node]
    out = tt[n.name]
    ins = [tt[storage_source(g, i)] for i in n.inputs]
    c = dict.fromkeys(TRAFFIC, 0)
    c["buffer_bits_written"] = out.storage_bits
    if isinstance(n, fx.FPGA_SYNAPSES):
        fan_in = int(prod(n.weight.shape[1:]))
        dense = out.size * fan_in
        c["weight_bits_read"] = dense * int(n.weight_bits)
        c["input_bits_read"] = kp.layer.cycles_per_step * ins[0].bits
        c["register_bits"] = dense * int(n.acc_bits)
    elif isinstance(n, (fx.FpgaLIF, fx.FpgaTemporalSum)):
        width = int(n.membrane_bits) if isinstance(n, fx.FpgaLIF) else int(n.bits)
        c["state_bits_read"] = c["state_bits_written"] = out.size * width
        c["input_bits_read"] = out.size * ins[0].bits
        c["register_bits"] = out.size * width
        if isinstance(n, fx.FpgaTemporalSum):
            c["buffer_bits_written"] = 0  # its output is its state
    elif n.op == "MatMul":
        K = int(shapes[n.inputs[0]][-2] if n.transpose_a else shapes[n.inputs[0]][-1])
        if all(x.spike for x in ins):
            words = ceil(K / POPCOUNT_WORD)
            c["input_bits_read"] = out.size * words * 2 * POPCOUNT_WORD
            c["register_bits"] = out.size * words * out.bits
        else:
            c["input_bits_read"] = out.size * K * (ins[0].bits + ins[1].bits)
            c["register_bits"] = out.size * K * out.bits
    elif n.op == "Sum":
        c["input_bits_read"] = out.size * int(shapes[n.inputs[0]][n.axis]) * ins[0].bits
        c["register_bits"] = out.size * out.bits
    elif n.op == "MaxPool2d":
        c["input_bits_read"] = out.size * int(prod(n.kernel_size)) * ins[0].bits
        c["register_bits"] = out.size * out.bits
    elif n.op == "Shiftmax":  # three passes over each row: max, sum of powers of two, output shifts
        c["input_bits_read"] = 3 * out.size * ins[0].bits
        c["register_bits"] = 2 * out.size * out.bits
    else:  # Add, Mul, Transpose, ReLU, TemporalBlockSum (per step of its block): every input value once
        c["input_bits_read"] = sum(out.size * x.bits for x in ins)
        c["register_bits"] = out.size * out.bits
    return c


def level_bits(plan: DesignPlan, k: int, c: dict, t: int) -> dict[str, int]:
    """Kernel ``k``'s traffic ``c`` at step ``t`` split into levels (registers, sram, dram)."""
    kp = plan.kernels[k]
    batched = plan.schedule == "batched"
    weights = c["weight_bits_read"]
    if batched:  # one fetch serves all T steps: counted at step 0
        weights = weights if t == 0 else 0
    state = c["state_bits_read"] + c["state_bits_written"]
    regs = c["register_bits"] + (state if batched else 0)
    sram = c["input_bits_read"] + c["buffer_bits_written"] + (0 if batched else state) + (0 if kp.spilled else weights)
    dram = weights if kp.spilled else 0
    return {"registers": regs, "sram": sram, "dram": dram, "weights": weights}


class SramPrices:
    """pJ per bit read from a memory of a given size: the energy module's Horowitz rule and table."""

    def __init__(self, constants: Constants):
        self.c = constants
        self.sizes = constants.widths("horowitz.sram_read_64bit")

    def dram_bit(self) -> float:
        return self.c.get("horowitz.dram_access_64bit") / 64.0

    def bit(self, memory_bits: int) -> float:
        size_bytes = max(1, ceil(memory_bits / 8))
        if self.sizes and size_bytes > self.sizes[-1]:
            return self.dram_bit()
        return self.c.at_least("horowitz.sram_read_64bit", size_bytes)[0] / 64.0


def memory_energy(plan: DesignPlan, k: int, c: dict, t: int, prices: SramPrices, tt: dict, g: ir.Graph) -> dict:
    """pJ of kernel ``k``'s memory traffic at step ``t`` of one sample, by component."""
    kp = plan.kernels[k]
    lv = level_bits(plan, k, c, t)
    n = g[kp.node]
    src_bits = max([tt[storage_source(g, i)].storage_bits for i in n.inputs] + [1])
    buf = max(1, kp.layer.buffer_bits)
    out = {"sram_inputs": c["input_bits_read"] * prices.bit(src_bits),
           "sram_outputs": c["buffer_bits_written"] * prices.bit(buf)}
    if plan.schedule == "step":
        out["sram_state"] = (c["state_bits_read"] + c["state_bits_written"]) * prices.bit(max(1, kp.layer.state_bits))
    if kp.spilled:
        out["dram_weights"] = lv["weights"] * prices.dram_bit()
    else:
        out["sram_weights"] = lv["weights"] * prices.bit(max(1, kp.layer.weight_bits))
    return out


def port_bits(g: ir.Graph, tt: dict[str, TensorType], steps: int) -> dict[str, int]:
    """DRAM bits per sample through the design's ports: the quantized input at every step, the
    readout once."""
    ins = [n for n in g.topo_order() if isinstance(n, fx.FpgaQuantizeInput)]
    src = ins[0].name if ins else next(n.name for n in g.inputs)
    out = storage_source(g, g.outputs[0].inputs[0])
    return {"input": steps * tt[src].storage_bits, "output": tt[out].storage_bits}


__all__ = ["TRAFFIC", "COMPUTE_COMPONENTS", "kernel_traffic", "level_bits", "SramPrices", "memory_energy",
           "port_bits", "storage_source"]
