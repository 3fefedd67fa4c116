"""Per-op ONNX emitters for the per-time-step exporter (``onnx_export.export_onnx``).

One function per IR op: ``emit_<op>(cx, node, ins, out)`` appends standard ONNX nodes to the
context ``cx`` that read the value names ``ins`` (one per IR input, each with a leading batch
axis) and write the node's value ``out``. Stateful ops ask ``cx.state(node, key, ...)`` for the
names of their state input (value at step t-1) and state output (value after step t).

The arithmetic order follows ``step_deploy.simulators.reference_ops`` operation by operation, so
that elementwise results agree bit for bit (spikes are compared exactly). BatchNorm is the one op
whose float behaviour depends on how PyTorch's CPU kernel is reached; its constants come from
``onnx_export.batchnorm_plans``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto

from step_deploy import ir

from .onnx_context import Context, OnnxExportError, _pair, _single  # noqa: F401  (OnnxExportError: re-exported)
from .onnx_neurons import (APPROXIMATE_OPS, REFUSED_OPS, emit_clifneuron, emit_glifneuron,  # noqa: F401  (re-exported)
                           emit_heaviside, emit_neuron, glif_coefficients)

F32 = TensorProto.FLOAT
F64 = TensorProto.DOUBLE


Emitter = Callable[[Context, ir.Node, list, str], None]


# --------------------------------------------------------------------------- boundary


def emit_output(cx: Context, n: ir.Output, ins, out):
    cx.op("Identity", ins, out=out)


# --------------------------------------------------------------------------- synapses


def emit_conv2d(cx: Context, n: ir.Conv2d, ins, out):
    w = np.asarray(n.weight, np.float32)
    s, p, d = _pair(n.stride), _pair(n.padding), _pair(n.dilation)
    args = [ins[0], cx.const("weight", w)]
    if n.bias is not None:
        args.append(cx.const("bias", n.bias))
    cx.op("Conv", args, out=out, kernel_shape=list(w.shape[2:]), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
          dilations=list(d), group=int(n.groups))


def emit_conv1d(cx: Context, n: ir.Conv1d, ins, out):
    w = np.asarray(n.weight, np.float32)
    p = _single(n.padding)
    args = [ins[0], cx.const("weight", w)]
    if n.bias is not None:
        args.append(cx.const("bias", n.bias))
    cx.op("Conv", args, out=out, kernel_shape=[int(w.shape[2])], strides=[_single(n.stride)], pads=[p, p],
          dilations=[_single(n.dilation)], group=int(n.groups))


def emit_linear(cx: Context, n: ir.Linear, ins, out):
    w = np.asarray(n.weight, np.float32)
    if cx.rank(n.inputs[0]) == 2:  # (B, in): one Gemm, like torch's addmm
        args = [ins[0], cx.const("weight", w)]
        if n.bias is not None:
            args.append(cx.const("bias", n.bias))
        cx.op("Gemm", args, out=out, transB=1)
        return
    wt = cx.const("weight_t", np.ascontiguousarray(w.T))
    if n.bias is None:
        cx.op("MatMul", [ins[0], wt], out=out)
    else:
        y = cx.op("MatMul", [ins[0], wt], "matmul")
        cx.op("Add", [y, cx.const("bias", n.bias)], out=out)


def emit_batchnorm(cx: Context, n: ir.BatchNorm, ins, out):
    plan = cx.bn_plans[n.name]
    rank = cx.rank(n.inputs[0])
    ax = n.axis % (rank - 1) + 1
    bshape = (-1,) + (1,) * (rank - 1 - ax)  # broadcast a per-channel vector onto axis ``ax``
    if plan["formula"] == "generic":
        # PyTorch's generic (strided) kernel: ((x - mean) * invstd) * weight + bias, float32 each step,
        # invstd = 1 / torch.sqrt(var + eps) as torch computes it (torch's sqrt is vectorized).
        y = cx.op("Sub", [ins[0], cx.const("mean", plan["mean"].reshape(bshape))], "centered")
        y = cx.op("Mul", [y, cx.const("invstd", plan["invstd"].reshape(bshape))], "normalized")
        y = cx.op("Mul", [y, cx.const("gamma", plan["gamma"].reshape(bshape))], "scaled")
        cx.op("Add", [y, cx.const("beta", plan["beta"].reshape(bshape))], out=out)
    elif plan["formula"] == "fma":
        # PyTorch's contiguous kernel on an FMA CPU: y = fma(x, alpha, beta). The product of two
        # float32 is exact in float64, so float64 Mul + Add + Cast gives the fused result (up to a
        # double rounding that needs a tie at 2^-29 relative precision).
        # Initializers stay float32 (the values are float32); they are widened in the graph.
        x = cx.op("Cast", [ins[0]], "x64", to=F64)
        alpha = cx.op("Cast", [cx.const("alpha", plan["alpha"].reshape(bshape))], "alpha64", to=F64)
        beta = cx.op("Cast", [cx.const("beta", plan["beta"].reshape(bshape))], "beta64", to=F64)
        y = cx.op("Add", [cx.op("Mul", [x, alpha], "scaled64"), beta], "shifted64")
        cx.op("Cast", [y], out=out, to=F32)
    elif plan["formula"] == "muladd":
        y = cx.op("Mul", [ins[0], cx.const("alpha", plan["alpha"].reshape(bshape))], "scaled")
        cx.op("Add", [y, cx.const("beta", plan["beta"].reshape(bshape))], out=out)
    else:  # pragma: no cover - plans are made in this module
        raise OnnxExportError(f"node {n.name!r} (BatchNorm): unknown formula {plan['formula']!r}")


# --------------------------------------------------------------------------- attention primitives


def _swap_last(cx: Context, name: str, rank: int, suffix: str) -> str:
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return cx.op("Transpose", [name], suffix, perm=perm)


def emit_matmul(cx: Context, n: ir.MatMul, ins, out):
    a, b = ins
    if n.transpose_a:
        a = _swap_last(cx, a, cx.rank(n.inputs[0]), "a_t")
    if n.transpose_b:
        b = _swap_last(cx, b, cx.rank(n.inputs[1]), "b_t")
    if n.scale != 1.0:
        y = cx.op("MatMul", [a, b], "product")
        cx.op("Mul", [y, cx.const("scale", n.scale)], out=out)
    else:
        cx.op("MatMul", [a, b], out=out)


def _align(cx: Context, name: str, rank: int, want: int, suffix: str) -> str:
    """Insert unit axes after the batch axis so that per-step numpy broadcasting is kept."""
    if rank == want:
        return name
    return cx.op("Unsqueeze", [name, cx.const(suffix + "_axes", list(range(1, 1 + want - rank)), np.int64)], suffix)


def emit_mul(cx: Context, n: ir.Mul, ins, out):
    ra, rb = cx.rank(n.inputs[0]), cx.rank(n.inputs[1])
    r = max(ra, rb)
    cx.op("Mul", [_align(cx, ins[0], ra, r, "a_aligned"), _align(cx, ins[1], rb, r, "b_aligned")], out=out)


def _axis(cx: Context, n, name: str) -> int:
    rank = cx.rank(name) - 1
    if not -rank <= n.axis < rank:
        raise OnnxExportError(f"node {n.name!r} ({n.op}): axis {n.axis} out of range for rank {rank}")
    return n.axis % rank + 1


def emit_sum(cx: Context, n: ir.Sum, ins, out):
    ax = _axis(cx, n, n.inputs[0])
    cx.op("ReduceSum", [ins[0], cx.const("axes", [ax], np.int64)], out=out, keepdims=int(bool(n.keepdim)))


def emit_mean(cx: Context, n: ir.Mean, ins, out):
    # torch's CPU mean is sum(...) followed by a division by the count (not a multiplication)
    ax = _axis(cx, n, n.inputs[0])
    count = cx.shapes[n.inputs[0]][ax - 1]
    s = cx.op("ReduceSum", [ins[0], cx.const("axes", [ax], np.int64)], "sum", keepdims=int(bool(n.keepdim)))
    cx.op("Div", [s, cx.const("count", float(count))], out=out)


def emit_scale(cx: Context, n: ir.Scale, ins, out):
    cx.op("Mul", [ins[0], cx.const("factor", n.factor)], out=out)


def emit_add(cx: Context, n: ir.Add, ins, out):
    if len(ins) == 1:
        cx.op("Identity", ins, out=out)
        return
    y = ins[0]
    for k, x in enumerate(ins[1:], start=1):
        y = cx.op("Add", [y, x], out=out if k == len(ins) - 1 else None, suffix=f"partial{k}")


def emit_relu(cx: Context, n: ir.ReLU, ins, out):
    """``Y = max(X, 0)`` (A²OS²A's K): ``Relu``, exact."""
    cx.op("Relu", ins, out=out)


def emit_shiftmax(cx: Context, n: ir.Shiftmax, ins, out):
    """Shiftmax over ``axis`` in exact float32 operations (the reference's ``op_shiftmax``)::

        Δ = X - ReduceMax(X);  num = Where(Δ >= -frac_bits, Pow(2, Δ), 0);  s = ReduceSum(num)
        den = 2^ceil(log2 s);  Y = num / den

    ``den`` is found exactly: ``p = Pow(2, Ceil(Log(s) / ln 2))`` is a power of two within a factor
    two of the answer (``Log``'s rounding can put ``s = 2^k`` at ``k ± ulp``), then corrected by
    comparison: ``p·2`` where ``p < s``, ``p/2`` where ``p/2 >= s`` (products by 2 are exact). On
    integer scores (``Q·Kᵀ`` of spikes, every use in the seed designs) ``Δ`` is an integer, so ``Pow``
    gives the same power of two as the reference's ``exp2``, ``s`` is an exact sum (at most
    ``2^(24 - frac_bits)`` terms) and ``Y`` is bit-identical."""
    ax = _axis(cx, n, n.inputs[0])
    if cx.opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on (an attribute before)
        peak = cx.op("ReduceMax", [ins[0], cx.const("axes", [ax], np.int64)], "row_max", keepdims=1)
    else:
        peak = cx.op("ReduceMax", [ins[0]], "row_max", keepdims=1, axes=[ax])
    delta = cx.op("Sub", [ins[0], peak], "delta")
    power = cx.op("Pow", [cx.const("two", 2.0), delta], "power")
    kept = cx.op("GreaterOrEqual", [delta, cx.const("floor", -float(n.frac_bits))], "kept")
    num = cx.op("Where", [kept, power, cx.const("zero", 0.0)], "num")
    s = cx.op("ReduceSum", [num, cx.const("sum_axes", [ax], np.int64)], "row_sum", keepdims=1)
    est = cx.op("Ceil", [cx.op("Div", [cx.op("Log", [s], "log_sum"), cx.const("ln2", float(np.log(2.0)))],
                               "log2_sum")], "exponent_estimate")
    p = cx.op("Pow", [cx.const("two_den", 2.0), est], "den_estimate")
    two = cx.const("factor_two", 2.0)
    p = cx.op("Where", [cx.op("Less", [p, s], "den_too_small"), cx.op("Mul", [p, two], "den_doubled"), p], "den_up")
    half = cx.op("Div", [p, two], "den_half")
    p = cx.op("Where", [cx.op("GreaterOrEqual", [half, s], "den_too_large"), half, p], "den")
    cx.op("Div", [num, p], out=out)


# --------------------------------------------------------------------------- layout


def _reshape(cx: Context, n: ir.Node, ins, out):
    # 0 copies the batch axis from the input (allowzero=0 is the default)
    cx.op("Reshape", [ins[0], cx.const("shape", [0, *cx.shapes[n.name]], np.int64)], out=out)


emit_reshape = _reshape
emit_flatten = _reshape


def emit_transpose(cx: Context, n: ir.Transpose, ins, out):
    cx.op("Transpose", ins, out=out, perm=[0] + [int(p) % len(n.perm) + 1 for p in n.perm])


# --------------------------------------------------------------------------- pooling


def _pool_attrs(n) -> dict:
    k = _pair(n.kernel_size)
    s = _pair(n.stride if n.stride is not None else n.kernel_size)
    p = _pair(n.padding)
    return dict(kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]])


def emit_maxpool2d(cx: Context, n: ir.MaxPool2d, ins, out):
    cx.op("MaxPool", ins, out=out, **_pool_attrs(n))


def emit_avgpool2d(cx: Context, n: ir.AvgPool2d, ins, out):
    """Window sum in PyTorch's order (rows, then columns, left to right), then ``/ (kH*kW)``.

    ``AveragePool`` (count_include_pad=1) gives the same value up to rounding, but onnxruntime sums
    in another order and scales by a reciprocal, so on spike counts ``sum/9`` would differ in the
    last bit and could flip a downstream spike. With one Slice + Add per window tap the result is
    bit-identical to ``F.avg_pool2d`` on CPU (zero padding is counted, as PyTorch's default)."""
    (kh, kw), (sh, sw), (ph, pw) = (_pair(n.kernel_size), _pair(n.stride if n.stride is not None else n.kernel_size),
                                    _pair(n.padding))
    ho, wo = cx.shapes[n.name][1:]
    x = ins[0]
    if ph or pw:
        pads = [0, 0, ph, pw, 0, 0, ph, pw]
        x = cx.op("Pad", [x, cx.const("pads", pads, np.int64)], "padded", mode="constant")
    axes, steps = cx.const("axes", [2, 3], np.int64), cx.const("steps", [sh, sw], np.int64)
    total = None
    for ky in range(kh):
        for kx in range(kw):
            tap = cx.op("Slice", [x, cx.const(f"start_{ky}_{kx}", [ky, kx], np.int64),
                                  cx.const(f"end_{ky}_{kx}", [ky + sh * (ho - 1) + 1, kx + sw * (wo - 1) + 1], np.int64),
                                  axes, steps], f"tap_{ky}_{kx}")
            total = tap if total is None else cx.op("Add", [total, tap], f"sum_{ky}_{kx}")
    cx.op("Div", [total, cx.const("window", float(kh * kw))], out=out)


# --------------------------------------------------------------------------- time


def emit_delay(cx: Context, n: ir.Delay, ins, out):
    k = int(n.steps)
    if k == 0:
        cx.op("Identity", ins, out=out)
        return
    fifo, fifo_next = cx.state(n, "fifo", [k, "B", *cx.shapes[n.name]], 0.0,
                               "FIFO of the last `steps` inputs, oldest first (axis 0)")
    cx.op("Gather", [fifo, cx.const("oldest", 0, np.int64)], out=out, axis=0)
    x = cx.op("Unsqueeze", [ins[0], cx.const("time_axis", [0], np.int64)], "newest")
    if k == 1:
        cx.op("Identity", [x], out=fifo_next)
        return
    rest = cx.op("Slice", [fifo, cx.const("starts", [1], np.int64), cx.const("ends", [k], np.int64),
                           cx.const("slice_axes", [0], np.int64)], "kept")
    cx.op("Concat", [rest, x], out=fifo_next, axis=0)


def emit_temporalmean(cx: Context, n: ir.TemporalMean, ins, out):
    acc, acc_next = cx.state(n, "acc", ["B", *cx.shapes[n.name]], 0.0, "running sum of the input over steps 0..t-1")
    total = cx.op("Add", [acc, ins[0]], out=acc_next)
    steps = cx.op("Add", [cx.step_input, cx.const("one", 1, np.int64)], "t_plus_1")
    cx.op("Div", [total, cx.op("Cast", [steps], "count", to=F32)], out=out)


def emit_temporal_block_sum(cx: Context, n, ins, out):
    """STAtten's block sum in a block model (``cx.block`` a multiple of ``n.block``): step j of the
    model's window gets ``Sum`` of its input at the steps of its block (all inside the window)."""
    b = int(n.block)
    if cx.block % b:
        raise OnnxExportError(f"node {n.name!r} (TemporalBlockSum, block {b}): the model computes {cx.block} step(s) "
                              f"per call, not a multiple of the block; export with block={b} (export_onnx picks "
                              f"it by default)")
    b0 = (cx.block_step // b) * b
    srcs = [cx.step_names[j][n.inputs[0]] for j in range(b0, b0 + b)]
    cx.op("Sum", srcs, out=out) if len(srcs) > 1 else cx.op("Identity", srcs, out=out)


EMITTERS: dict[str, Emitter] = {
    "Output": emit_output, "Conv2d": emit_conv2d, "Conv1d": emit_conv1d, "Linear": emit_linear,
    "BatchNorm": emit_batchnorm, "Neuron": emit_neuron, "MatMul": emit_matmul, "Mul": emit_mul, "Sum": emit_sum,
    "Mean": emit_mean, "Scale": emit_scale, "Add": emit_add, "Reshape": emit_reshape, "Transpose": emit_transpose,
    "Flatten": emit_flatten, "MaxPool2d": emit_maxpool2d, "AvgPool2d": emit_avgpool2d, "Delay": emit_delay,
    "TemporalMean": emit_temporalmean, "KLIFNeuron": emit_neuron, "EIFNeuron": emit_neuron,
    "CLIFNeuron": emit_clifneuron, "GLIFNeuron": emit_glifneuron, "Heaviside": emit_heaviside,
    "ReLU": emit_relu, "Shiftmax": emit_shiftmax, "TemporalBlockSum": emit_temporal_block_sum,
}
#: the backend's op set: the emitters plus the graph inputs (they become ONNX graph inputs)
ONNX_BACKEND = ir.register_backend("onnx", set(EMITTERS) | {"Input"}, kind="float", where="exporters/onnx_ops.py",
                                   hint="ONNX takes float graphs (quantized graphs go to the golden model or Lava)")
