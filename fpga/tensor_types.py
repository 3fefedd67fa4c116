"""The integer type of every tensor of an ``'fpga-int'`` graph: value range by interval
propagation, then the fewest bits that hold it (spikes: one bit; counts: just the bits they
need; synapse outputs: the consuming membrane's width). The HLS writer declares buffers with
these types and the resource estimates size memories with them, so both agree.

Propagation per step (``[lo, hi]`` integer bounds):
  analog input quantizer ``[0, 2^b - 1]`` or signed ``b`` bits; synapse ``signed(out_bits)``;
  LIF ``[0, max_level]`` (``[0, 1]`` but for STEP's ILIF integer spikes, ``ceil(log2(D + 1))``
  bits; ternary spikes ``[-1, 1]``, ``ap_int<2>``); readout ``signed(bits)``; ``Add`` sums bounds;
  ``Mul`` the corner products; ``Sum`` over ``n`` elements ``n · [lo, hi]``; ``MatMul`` ``K ·
  corners`` (``K`` the contracted length); ``ReLU`` ``[max(lo, 0), max(hi, 0)]``; ``Shiftmax``
  ``[0, 2^(F + L)]`` (``F = frac_bits``, ``L = ceil(log2 n)``: one surviving term gets it all);
  ``TemporalBlockSum`` over ``B`` steps ``B · [lo, hi]``; ``MaxPool2d``, ``Reshape``, ``Flatten``,
  ``Transpose`` keep bounds.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from step_deploy import ir
from step_deploy.errors import StepDeployError
from step_deploy.fixedpoint import fpga as fx

#: ops whose output is the same memory as their input read in another order or shape
ALIAS_OPS = ("Reshape", "Flatten")


@dataclass(frozen=True)
class TensorType:
    """One tensor per step: ``shape``, integer bounds ``lo..hi``, ``bits`` and ``signed`` of the
    narrowest ``ap_int``/``ap_uint`` that holds them; ``spike`` when the values are 0/1 (integer
    spikes 0..D are multi-bit values: synapses multiply them, they are not gated)."""

    name: str
    shape: tuple
    lo: int
    hi: int

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def bits(self) -> int:
        if self.signed:
            return max((-self.lo - 1).bit_length(), self.hi.bit_length()) + 1
        return max(1, self.hi.bit_length())

    @property
    def spike(self) -> bool:
        return self.lo == 0 and self.hi == 1

    @property
    def ternary(self) -> bool:
        """Signed ternary spikes -1/0/+1 (``ap_int<2>``): a synapse adds or subtracts, no multiplier."""
        return self.lo == -1 and self.hi == 1

    @property
    def size(self) -> int:
        return int(prod(self.shape))

    @property
    def ctype(self) -> str:
        return f"ap_{'' if self.signed else 'u'}int<{self.bits}>"

    @property
    def storage_bits(self) -> int:
        """Bits one step of the tensor occupies in memory (spikes packed one per bit)."""
        return self.size * self.bits


class UnsupportedForFpga(StepDeployError, ValueError):
    """A node the FPGA back end has no integer kernel for."""


def _corners(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    c = [x * y for x in a for y in b]
    return min(c), max(c)


def tensor_types(g: ir.Graph) -> dict[str, TensorType]:
    """``{node name: TensorType}`` for every node but ``Output`` (the input's entry is the analog
    tensor's shape with the bounds of the quantizer that reads it, or of its kind)."""
    shapes = g.infer_shapes()
    bounds: dict[str, tuple[int, int]] = {}
    for n in g.topo_order():
        ins = [bounds[i] for i in n.inputs if i in bounds]
        op = n.op
        if op == "Input":  # counts: the calibration range quantize-fpga recorded (its accumulators assume it)
            b = (0, 1) if n.kind == "spikes" else g.metadata.get("input_bounds", {}).get(n.name)
        elif isinstance(n, fx.FpgaQuantizeInput):
            b = fx.signed_bounds(n.bits) if n.signed else (0, (1 << n.bits) - 1)
        elif isinstance(n, fx.FPGA_SYNAPSES):
            b = fx.signed_bounds(n.out_bits)
        elif isinstance(n, fx.FpgaLIF):
            b = n.spike_range  # 0/1, integer spikes (ILIF) 0..max_level, ternary -1..1
        elif isinstance(n, fx.FpgaTemporalSum):
            b = fx.signed_bounds(n.bits)
        elif op == "Add":
            b = (sum(x[0] for x in ins), sum(x[1] for x in ins))
        elif op == "Mul":
            b = _corners(ins[0], ins[1])
        elif op == "Sum":
            k = shapes[n.inputs[0]][n.axis]
            b = (ins[0][0] * k, ins[0][1] * k)
        elif op == "MatMul":
            if float(n.scale) != 1.0:
                raise UnsupportedForFpga(f"node {n.name!r} (MatMul) has scale {n.scale}; the FPGA format folds "
                                         "attention scales into thresholds, quantize with quantize-fpga")
            a = shapes[n.inputs[0]]
            k = a[-2] if n.transpose_a else a[-1]
            lo, hi = _corners(ins[0], ins[1])
            b = (lo * k, hi * k)
        elif op in ("MaxPool2d", "Reshape", "Flatten", "Transpose"):
            b = ins[0]
        elif op == "ReLU":
            b = (max(ins[0][0], 0), max(ins[0][1], 0))
        elif op == "Shiftmax":
            b = (0, 1 << n.out_frac_bits(shapes[n.inputs[0]]))
        elif op == "TemporalBlockSum":
            b = (ins[0][0] * int(n.block), ins[0][1] * int(n.block))
        elif op == "Output":
            continue
        else:
            raise UnsupportedForFpga(f"node {n.name!r} ({op}) has no FPGA integer kernel")
        if b is None:
            if op == "Input":
                bounds[n.name] = (0, 0)  # analog: only read by its quantizer, on the host
                continue
        bounds[n.name] = (int(b[0]), int(b[1]))
    return {k: TensorType(k, tuple(shapes[k]), lo, hi) for k, (lo, hi) in bounds.items()}


__all__ = ["TensorType", "tensor_types", "UnsupportedForFpga", "ALIAS_OPS"]
