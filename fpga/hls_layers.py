"""One C++ kernel call per node of an ``'fpga-int'`` graph: the config struct (shapes, widths,
parallelism) and the call the generated top makes. The kernels are the templates in
``fpga/templates/kernels/``; the widths here make every intermediate exact before the one
saturation the golden model applies (see each kernel's header comment).

Nodes map to kernels as follows: ``FpgaConv2d``/``FpgaConv1d`` (as ``H = 1``) -> ``conv2d``,
``FpgaLinear`` -> ``linear``, ``FpgaLIF`` -> ``lif`` (every fire rule and reset; integer spikes as
``ap_uint<ceil(log2(D+1))>``), ``FpgaTemporalSum`` -> ``readout``,
``MatMul`` -> ``matmul`` (AND + popcount on spikes, signed adds on ternary spikes),
``Add``/``Mul`` -> ``add``/``mul`` (broadcasting), ``Sum`` -> ``sum``, ``MaxPool2d`` ->
``maxpool2d``, ``Transpose`` -> ``transpose``, and the seed designs' ops: ``ReLU`` -> ``relu``,
``Shiftmax`` -> ``shiftmax`` (shifts, adds and a leading-zero count per row), ``TemporalBlockSum``
-> ``block_sum`` (a window op: called once per block of ``block`` steps on B-step buffers, see
``hls_writer``). ``Reshape`` and ``Flatten`` are the same memory (no code), ``FpgaQuantizeInput``
runs where the pixels come from (the top's input is its output).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Optional

import numpy as np

from step_deploy import ir
from step_deploy.fixedpoint import fpga as fx
from step_deploy.ir.nodes import _pair

from .tensor_types import ALIAS_OPS, TensorType, UnsupportedForFpga

MAX_RANK = 4
DECAY_CODE = {"input": 0, "state": 1, "none": 2}
FIRE_CODE = {"threshold": 0, "round": 1, "round_normalized": 2, "ternary": 3}

#: what the HLS writer emits: kernels, plus ports, aliases and the host-side input quantizer
KERNEL_OPS = ("FpgaConv2d", "FpgaConv1d", "FpgaLinear", "FpgaLIF", "FpgaTemporalSum", "MatMul", "Add", "Mul", "Sum",
              "MaxPool2d", "Transpose", "ReLU", "Shiftmax", "TemporalBlockSum")
HLS_BACKEND = ir.register_backend(
    "fpga-hls", set(KERNEL_OPS) | {"Input", "Output", "FpgaQuantizeInput", *ALIAS_OPS}, kind="integer",
    where="fpga/hls_layers.py",
    hint=f"the HLS writer emits {fx.FORMAT_NAME} graphs: quantize with passes.quantize_fpga first")


@dataclass
class Layer:
    """A node the top function runs: its id (index into the trace table), C names and code."""

    id: int
    node: ir.Node
    out: TensorType
    config: list[str] = field(default_factory=list)  # lines of the config struct body
    kernel: str = ""  # the kernel call, with {in0}, {in1}, {out} placeholders
    state: Optional[str] = None  # declaration of the state array (membrane / readout sum)
    state_bits: int = 0
    reset: Optional[str] = None  # the reset call
    weights: Optional[dict] = None  # {"w": int8 array, "bias": int64 or None, "k": int8}
    window: int = 1  # a window op's block: the kernel runs once per block on B-step buffers

    @property
    def cname(self) -> str:
        return f"n{self.id}"


def _ceil_bits_signed(v: int) -> int:
    return int(v).bit_length() + 1


def lif_cmp_bits(n: fx.FpgaLIF) -> int:
    """Signed bits of the LIF kernel's fire comparisons: ``2·H`` for any membrane, the ILIF
    half-way points ``(2k - 1)·θ`` (k up to ``max_level``) and NILIF's ``round_d·θ``, and the
    soft reset's ``H - S·θ``."""
    top = max(1 << int(n.membrane_bits), (2 * int(n.max_level) - 1) * abs(int(n.threshold)),
              int(n.round_d) * abs(int(n.threshold)))
    return top.bit_length() + 2


def _pad4(shape, fill=1) -> list:
    shape = list(shape)
    if len(shape) > MAX_RANK:
        raise UnsupportedForFpga(f"rank {len(shape)} > {MAX_RANK}")
    return [fill] * (MAX_RANK - len(shape)) + shape


def _strides(shape) -> list:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


def _max_abs(t: TensorType) -> int:
    return max(abs(t.lo), abs(t.hi))


def _synapse(layer: Layer, n, x: TensorType) -> None:
    w = np.asarray(n.weight, np.int64)
    if w.min() < -128 or w.max() > 127:
        raise UnsupportedForFpga(f"weights of {n.name!r} do not fit int8")
    k = n.shifts()
    if len(k) == 1 and w.shape[0] > 1:
        k = np.repeat(k, w.shape[0])
    bias = n.effective_bias()
    cout = w.shape[0]
    fan = np.abs(w.reshape(cout, -1)).sum(axis=1) * _max_abs(x)
    if bias is not None:
        fan = fan + np.abs(bias.reshape(-1))
    sum_bits = max(_ceil_bits_signed(int(fan.max())), int(n.acc_bits))
    shift_bits = max(int(n.acc_bits) + 1 + max(0, -int(k.min())), int(n.out_bits))
    layer.weights = {"w": w.astype(np.int8).reshape(-1), "bias": None if bias is None else bias.reshape(-1),
                     "k": k.astype(np.int8)}
    common = [f"typedef {x.ctype} in_t;", f"typedef {layer.out.ctype} out_t;",
              f"typedef ap_int<{sum_bits}> sum_t;",
              f"static const int weight_bits = {int(n.weight_bits)}, acc_bits = {int(n.acc_bits)}, "
              f"out_bits = {int(n.out_bits)}, shift_bits = {shift_bits};",
              f"static const bool spike_in = {'true' if x.spike else 'false'}, "
              f"ternary_in = {'true' if x.ternary else 'false'}, has_bias = {'false' if bias is None else 'true'};"]
    if isinstance(n, fx.FpgaLinear):
        tokens = int(prod(x.shape[:-1])) if len(x.shape) > 1 else 1
        layer.config = common + [f"static const int tokens = {tokens}, cin = {w.shape[1]}, cout = {cout};"]
        kern = "linear"
    else:
        if isinstance(n, fx.FpgaConv2d):
            c, h, wd = x.shape
            _, ho, wo = layer.out.shape
            kh, kw = w.shape[2], w.shape[3]
            (sh, sw), (ph, pw), (dh, dw) = n.stride, n.padding, n.dilation
        else:  # Conv1d as a 2-D convolution with H = 1
            c, wd = x.shape
            h, ho, wo = 1, 1, layer.out.shape[1]
            kh, kw = 1, w.shape[2]
            sh, sw, ph, pw, dh, dw = 1, n.stride, 0, n.padding, 1, n.dilation
        layer.config = common + [
            f"static const int cin = {c}, h = {h}, w = {wd}, cout = {cout}, ho = {ho}, wo = {wo};",
            f"static const int kh = {kh}, kw = {kw}, sh = {sh}, sw = {sw}, ph = {ph}, pw = {pw}, "
            f"dh = {dh}, dw = {dw}, groups = {n.groups};"]
        kern = "conv2d"
    cn = layer.cname
    layer.kernel = f"stepd::{kern}<cfg_{cn}>({{in0}}, w_{cn}, bias_{cn}, k_{cn}, {{out}});"


def build_layer(idx: int, n: ir.Node, types: dict[str, TensorType], source) -> Optional[Layer]:
    """The :class:`Layer` for node ``n`` (None for ports, aliases and the input quantizer)."""
    if n.op in ("Input", "Output") or n.op in ALIAS_OPS or isinstance(n, fx.FpgaQuantizeInput):
        return None
    out = types[n.name]
    ins = [types[i] for i in n.inputs]  # an alias has its own shape, its source's memory
    layer = Layer(idx, n, out)
    cn = layer.cname
    if isinstance(n, fx.FPGA_SYNAPSES):
        _synapse(layer, n, ins[0])
    elif isinstance(n, fx.FpgaLIF):
        a = ins[0]
        mb = int(n.membrane_bits)
        wide = max(mb, a.bits + (0 if a.signed else 1) + int(n.input_shift)) + 2
        layer.config = [f"typedef {a.ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int n = {out.size}, mem_bits = {mb}, wide_bits = {wide};",
                        f"static const int threshold = {int(n.threshold)}, decay = {DECAY_CODE[n.decay]}, "
                        f"input_shift = {int(n.input_shift)};",
                        f"static const int fire = {FIRE_CODE[n.fire]}, soft_reset = {int(n.reset == 'soft')}, "
                        f"max_level = {int(n.max_level)}, round_d = {int(n.round_d)}, cmp_bits = {lif_cmp_bits(n)};"]
        layer.state = f"ap_int<{mb}> m_{cn}[{out.size}];"
        layer.state_bits = out.size * mb
        layer.reset = f"stepd::lif_reset<cfg_{cn}>(m_{cn});"
        layer.kernel = f"stepd::lif<cfg_{cn}>({{in0}}, m_{cn}, {{out}});"
    elif isinstance(n, fx.FpgaTemporalSum):
        a = ins[0]
        wide = max(int(n.bits), a.bits + (0 if a.signed else 1)) + 1
        layer.config = [f"typedef {a.ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int n = {out.size}, bits = {int(n.bits)}, wide_bits = {wide};"]
        layer.state = f"ap_int<{int(n.bits)}> acc_{cn}[{out.size}];"
        layer.state_bits = out.size * int(n.bits)
        layer.reset = f"stepd::readout_reset<cfg_{cn}>(acc_{cn});"
        layer.kernel = f"stepd::readout<cfg_{cn}>({{in0}}, acc_{cn}, {{out}});"
    elif n.op == "MatMul":
        a, b = ins
        sa, sb = list(a.shape), list(b.shape)
        m, k = (sa[-1], sa[-2]) if n.transpose_a else (sa[-2], sa[-1])
        nn = sb[-2] if n.transpose_b else sb[-1]
        layer.config = [f"typedef {a.ctype} a_t;", f"typedef {b.ctype} b_t;", f"typedef {out.ctype} out_t;",
                        f"static const int batch = {int(prod(sa[:-2]))}, m = {m}, k = {k}, n = {nn};",
                        f"static const bool ta = {str(bool(n.transpose_a)).lower()}, "
                        f"tb = {str(bool(n.transpose_b)).lower()};",
                        f"static const bool a_spike = {str(a.spike).lower()}, b_spike = {str(b.spike).lower()};",
                        f"static const bool a_ternary = {str(a.ternary).lower()}, "
                        f"b_ternary = {str(b.ternary).lower()};"]
        layer.kernel = f"stepd::matmul<cfg_{cn}>({{in0}}, {{in1}}, {{out}});"
    elif n.op in ("Add", "Mul"):
        a, b = ins
        shape = _pad4(out.shape)
        strides = []
        for t in (a, b):
            s = _pad4(t.shape)
            st = _strides(s)
            strides.append([0 if s[d] == 1 and shape[d] != 1 else st[d] for d in range(MAX_RANK)])
        layer.config = [f"typedef {a.ctype} a_t;", f"typedef {b.ctype} b_t;", f"typedef {out.ctype} out_t;",
                        "static const int " + ", ".join(f"s{d} = {shape[d]}" for d in range(MAX_RANK)) + ";",
                        "static const int " + ", ".join(f"a{d} = {strides[0][d]}" for d in range(MAX_RANK)) + ";",
                        "static const int " + ", ".join(f"b{d} = {strides[1][d]}" for d in range(MAX_RANK)) + ";",
                        f"static const bool a_spike = {str(a.spike).lower()}, b_spike = {str(b.spike).lower()};"]
        layer.kernel = f"stepd::{n.op.lower()}<cfg_{cn}>({{in0}}, {{in1}}, {{out}});"
    elif n.op == "Sum":
        s = list(ins[0].shape)
        ax = n.axis % len(s)
        layer.config = [f"typedef {ins[0].ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int outer = {int(prod(s[:ax]))}, len = {s[ax]}, inner = {int(prod(s[ax + 1:]))};"]
        layer.kernel = f"stepd::sum<cfg_{cn}>({{in0}}, {{out}});"
    elif n.op == "MaxPool2d":
        c, h, w = ins[0].shape
        _, ho, wo = out.shape
        (kh, kw), (sh, sw), (ph, pw) = (_pair(v) for v in (n.kernel_size, n.stride, n.padding))
        layer.config = [f"typedef {ins[0].ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int c = {c}, h = {h}, w = {w}, ho = {ho}, wo = {wo};",
                        f"static const int kh = {kh}, kw = {kw}, sh = {sh}, sw = {sw}, ph = {ph}, pw = {pw};"]
        layer.kernel = f"stepd::maxpool2d<cfg_{cn}>({{in0}}, {{out}});"
    elif n.op == "Transpose":
        s = list(ins[0].shape)
        st = _strides(s)
        dims = _pad4([s[p] for p in n.perm])
        istr = _pad4([st[p] for p in n.perm], fill=0)
        layer.config = [f"typedef {ins[0].ctype} in_t;", f"typedef {out.ctype} out_t;",
                        "static const int " + ", ".join(f"d{d} = {dims[d]}" for d in range(MAX_RANK)) + ";",
                        "static const int " + ", ".join(f"i{d} = {istr[d]}" for d in range(MAX_RANK)) + ";"]
        layer.kernel = f"stepd::transpose<cfg_{cn}>({{in0}}, {{out}});"
    elif n.op == "ReLU":
        layer.config = [f"typedef {ins[0].ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int n = {out.size};"]
        layer.kernel = f"stepd::relu<cfg_{cn}>({{in0}}, {{out}});"
    elif n.op == "Shiftmax":
        s = list(ins[0].shape)
        ax = n.axis % len(s)
        f, total = int(n.frac_bits), n.out_frac_bits(tuple(s))
        delta_bits = ins[0].bits + 1 + (0 if ins[0].signed else 1)
        layer.config = [f"typedef {ins[0].ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int outer = {int(prod(s[:ax]))}, len = {s[ax]}, "
                        f"inner = {int(prod(s[ax + 1:]))};",
                        f"static const int frac_bits = {f}, log_len = {total - f}, sum_bits = {total + 1}, "
                        f"delta_bits = {delta_bits};"]
        layer.kernel = f"stepd::shiftmax<cfg_{cn}>({{in0}}, {{out}});"
    elif n.op == "TemporalBlockSum":
        layer.window = int(n.block)
        layer.config = [f"typedef {ins[0].ctype} in_t;", f"typedef {out.ctype} out_t;",
                        f"static const int n = {out.size}, block = {int(n.block)};"]
        layer.kernel = f"stepd::block_sum<cfg_{cn}>({{in0}}, {{out}});"
    else:
        raise UnsupportedForFpga(f"node {n.name!r} ({n.op}) has no FPGA kernel")
    return layer


__all__ = ["Layer", "build_layer", "lif_cmp_bits", "DECAY_CODE", "FIRE_CODE", "MAX_RANK", "KERNEL_OPS", "HLS_BACKEND"]
