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

from step_deploy.errors import StepDeployError

from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from step_deploy import ir

F32 = TensorProto.FLOAT
F64 = TensorProto.DOUBLE


class OnnxExportError(StepDeployError, ValueError):
    """A node cannot be expressed in ONNX (the message names the node and its op)."""


def _pair(v) -> tuple[int, int]:
    if v is None:
        raise ValueError("missing value")
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(a) for a in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _single(v) -> int:
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = tuple(v)
    if len(v) != 1:
        raise ValueError(f"expected one value, got {v}")
    return int(v[0])


class Context:
    """Collects ONNX nodes, initializers and state declarations while the graph is emitted."""

    def __init__(self, opset: int, shapes: dict[str, tuple[int, ...]], names: dict[str, str],
                 bn_plans: dict[str, dict]):
        self.opset = opset
        self.shapes = shapes          # IR per-step shapes (no batch axis)
        self.names = names            # IR node name -> sanitized ONNX value name
        self.bn_plans = bn_plans      # BatchNorm node name -> plan from ``batchnorm_plans``
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.states: list[dict] = []  # declared state tensors, in emission order
        self._used: set[str] = set()
        self.node: Optional[ir.Node] = None  # node being emitted (for names)
        self.step_input = "t"  # scalar int64 graph input: the step index t

    # ------------------------------------------------------------------ helpers
    def _fresh(self, suffix: str) -> str:
        base = f"{self.names[self.node.name]}/{suffix}"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def const(self, suffix: str, value, dtype=np.float32) -> str:
        """An initializer owned by the current node (float32 unless told)."""
        arr = np.array(value, dtype=dtype, order="C")  # (ascontiguousarray would make scalars 1-D)
        name = self._fresh(suffix)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], suffix: Optional[str] = None, out: Optional[str] = None,
           **attrs) -> str:
        """Append one ONNX node; returns its (single) output name."""
        out = out or self._fresh(suffix or op_type)
        self._used.add(out)
        idx = len(self.nodes)
        name = f"{self.names[self.node.name]}/{op_type}_{idx}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def state(self, node: ir.Node, key: str, shape: list, init: float, description: str) -> tuple[str, str]:
        """Declare a state tensor of ``node``: returns (input name, output name).

        ``shape`` uses the string ``"B"`` for the batch axis; ``init`` is its value before step 0."""
        san = self.names[node.name]
        spec = {"node": node.name, "key": key, "input": f"state/{san}/{key}", "output": f"state_next/{san}/{key}",
                "shape": list(shape), "init": float(init), "description": description}
        self.states.append(spec)
        self._used.update((spec["input"], spec["output"]))
        return spec["input"], spec["output"]

    def rank(self, ir_name: str) -> int:
        """Rank of an IR value with the batch axis."""
        return len(self.shapes[ir_name]) + 1


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


# --------------------------------------------------------------------------- neurons


def _charge_lif(cx: Context, n: ir.Neuron, x: str, v: str) -> str:
    """``H`` of LIF/IF/PLIF, the reference's float32 operations in order (PLIF multiplies by 1/tau)."""
    vr = float(n.v_reset)
    if n.kind == "IF":
        return cx.op("Add", [v, x], "h")
    d = cx.op("Sub", [v, cx.const("v_reset", vr)], "v_minus_reset") if vr else v  # v - 0.0 == v bitwise
    if n.kind == "PLIF" and n.decay_input:
        drive = cx.op("Sub", [x, d], "drive")
        return cx.op("Add", [v, cx.op("Mul", [drive, cx.const("inv_tau", 1.0 / n.tau)], "charge")], "h")
    tau = cx.const("tau", n.tau)
    if n.decay_input:
        return cx.op("Add", [v, cx.op("Div", [cx.op("Sub", [x, d], "drive"), tau], "charge")], "h")
    return cx.op("Add", [cx.op("Sub", [v, cx.op("Div", [d, tau], "leak")], "decayed"), x], "h")


def _charge_klif(cx: Context, n: ir.KLIFNeuron, x: str, v: str) -> str:
    """``H = relu(k · LIF charge)`` (STEP's ``mem *= k; relu``)."""
    return cx.op("Relu", [cx.op("Mul", [_charge_lif(cx, n, x, v), cx.const("k", n.k)], "gained")], "h_rectified")


def _charge_eif(cx: Context, n: ir.EIFNeuron, x: str, v: str) -> str:
    """``H = v + (x - v + ΔT·exp((v - θ_rh)/ΔT)) / tau`` in STEP's order."""
    dt = cx.const("delta_t", n.delta_t)
    z = cx.op("Div", [cx.op("Sub", [v, cx.const("theta_rh", n.theta_rh)], "above_rheobase"), dt], "exponent")
    boost = cx.op("Mul", [dt, cx.op("Exp", [z], "exp")], "boost")
    inner = cx.op("Add", [cx.op("Sub", [x, v], "drive"), boost], "drive_boosted")
    return cx.op("Add", [v, cx.op("Div", [inner, cx.const("tau", n.tau)], "charge")], "h")


def _fire(cx: Context, n: ir.Neuron, h: str, out: str) -> str:
    """``S`` by the node's fire rule; returns the spike's value name (``out``)."""
    thr = float(n.v_threshold)
    ge = n.compare == ">="
    if n.fire == "round_normalized":  # NILIF: round_half_even(clamp(h / θ, 0, D) / D)
        q = cx.op("Div", [h, cx.const("v_threshold", thr)], "quotient")
        c = cx.op("Clip", [q, cx.const("min_level", 0.0), cx.const("max_quotient", float(n.round_d))], "clamped")
        return cx.op("Round", [cx.op("Div", [c, cx.const("levels", float(n.round_d))], "normalized")], out=out)
    if n.output == "binary":
        return cx.op("Cast", [cx.op("GreaterOrEqual" if ge else "Greater", [h, cx.const("v_threshold", thr)], "fire")],
                     out=out, to=F32)
    if n.output == "ternary":
        pos = cx.op("GreaterOrEqual" if ge else "Greater", [h, cx.const("v_threshold", thr)], "fire_pos")
        neg = cx.op("LessOrEqual" if ge else "Less", [h, cx.const("neg_threshold", -thr)], "fire_neg")
        pos = cx.op("Cast", [pos], "pos", to=F32)
        neg = cx.op("Cast", [neg], "neg", to=F32)
        return cx.op("Sub", [pos, neg], out=out)
    # integer (ILIF): clamp(round_half_even(h / thr), 0, max_level)
    q = cx.op("Round", [cx.op("Div", [h, cx.const("v_threshold", thr)], "quotient")], "level")
    return cx.op("Clip", [q, cx.const("min_level", 0.0), cx.const("max_level", float(n.max_level))], out=out)


def _reset(cx: Context, n: ir.Neuron, h: str, s: str, v_next: str) -> None:
    """``V`` after the spike: hard ``h·(1 - fired) + v_reset·fired``, soft ``h - s·θ``."""
    thr, vr = float(n.v_threshold), float(n.v_reset)
    if n.reset == "soft":
        cx.op("Sub", [h, cx.op("Mul", [s, cx.const("v_threshold_soft", thr)], "subtracted")], out=v_next)
        return
    if n.output == "binary":
        fired = s
    elif n.output == "ternary":
        fired = cx.op("Abs", [s], "fired")
    else:
        fired = cx.op("Cast", [cx.op("Greater", [s, cx.const("zero", 0.0)], "spiked")], "fired", to=F32)
    keep = cx.op("Sub", [cx.const("one", 1.0), fired], "keep")
    if vr:
        kept = cx.op("Mul", [h, keep], "kept")
        cx.op("Add", [kept, cx.op("Mul", [cx.const("v_reset_value", vr), fired], "reset_part")], out=v_next)
    else:
        cx.op("Mul", [h, keep], out=v_next)


_CHARGES = {"Neuron": _charge_lif, "KLIFNeuron": _charge_klif, "EIFNeuron": _charge_eif}


def emit_neuron(cx: Context, n: ir.Neuron, ins, out):
    """LIF/IF/PLIF (every fire rule and reset), KLIF and EIF: state ``v`` (starts at ``v_reset``)."""
    v, v_next = cx.state(n, "v", ["B", *cx.shapes[n.name]], n.v_reset, "membrane potential V[t-1] (starts at v_reset)")
    h = _CHARGES[n.op](cx, n, ins[0], v)
    _reset(cx, n, h, _fire(cx, n, h, out), v_next)


def _sigmoid(cx: Context, z: str, suffix: str) -> str:
    """``1 / (1 + exp(-z))``: the form PyTorch's CPU sigmoid evaluates (ONNX ``Sigmoid`` is an
    approximation in onnxruntime); ``exp`` itself may still differ from PyTorch's in the last bit."""
    e = cx.op("Exp", [cx.op("Neg", [z], f"{suffix}_neg")], f"{suffix}_exp")
    return cx.op("Reciprocal", [cx.op("Add", [cx.const(f"{suffix}_one", 1.0), e], f"{suffix}_den")], suffix)


def emit_clifneuron(cx: Context, n: ir.CLIFNeuron, ins, out):
    """CLIF: states ``v`` and ``m`` (both 0 before step 0)::

        H = v·(1 - 1/tau) + x;  S = H >= θ;  m = m·sigmoid(H/tau) + S;  v = (H - S·θ) - S·sigmoid(m)
    """
    shape = ["B", *cx.shapes[n.name]]
    v, v_next = cx.state(n, "v", shape, 0.0, "membrane potential V[t-1] (starts at 0)")
    m, m_next = cx.state(n, "m", shape, 0.0, "complementary memory M[t-1] (starts at 0)")
    x = ins[0]
    if n.decay_input:
        x = cx.op("Div", [x, cx.const("tau_input", n.tau)], "x_decayed")
    h = cx.op("Add", [cx.op("Mul", [v, cx.const("decay", 1.0 - 1.0 / n.tau)], "decayed"), x], "h")
    s = _fire(cx, n, h, out)
    gate = _sigmoid(cx, cx.op("Div", [h, cx.const("tau", n.tau)], "h_over_tau"), "forming")
    mm = cx.op("Add", [cx.op("Mul", [m, gate], "m_formed"), s], out=m_next)
    v1 = cx.op("Sub", [h, cx.op("Mul", [s, cx.const("v_threshold_soft", float(n.v_threshold))], "subtracted")],
               "v_soft")
    cx.op("Sub", [v1, cx.op("Mul", [s, _sigmoid(cx, mm, "m_sigmoid")], "complement")], out=v_next)


def glif_coefficients(n: ir.GLIFNeuron) -> np.ndarray:
    """Per step ``(1 - be·(1 - conduct), 1 - al·(1 - tau), (1 - al)·leak, (1 - ga)·revth, vth)`` in
    float32, each with the float32 operations of STEP's 0-d parameter arithmetic."""
    f = np.float32
    p = np.asarray(n.params_t, np.float32)
    al, be, ga = (f(g) for g in n.gates)
    one = f(1)
    rows = [(one - be * (one - cond), one - al * (one - tau), (one - al) * leak, (one - ga) * revth, vth)
            for tau, vth, leak, cond, revth in p]
    return np.asarray(rows, np.float32).reshape(len(rows), 5)


def emit_glifneuron(cx: Context, n: ir.GLIFNeuron, ins, out):
    """GLIF: states ``u`` and ``o`` (0 before step 0), step ``t``'s coefficients gathered by ``t``::

        U = ((a·U') · (1 - ga·O') - l) + x·c - r·O';  O = (U - vth) > 0
    """
    shape = ["B", *cx.shapes[n.name]]
    u, u_next = cx.state(n, "u", shape, 0.0, "membrane U[t-1] (starts at 0)")
    o, o_next = cx.state(n, "o", shape, 0.0, "spike O[t-1] (starts at 0)")
    row = cx.op("Gather", [cx.const("coefficients", glif_coefficients(n)), cx.step_input], "step_coefficients", axis=0)
    c_in, a, leak, rev, vth = (cx.op("Gather", [row, cx.const(f"col{k}", k, np.int64)], name, axis=0)
                               for k, name in enumerate(("c_in", "a_decay", "leak_term", "rev_term", "vth")))
    i = cx.op("Mul", [ins[0], c_in], "current")
    gate = cx.op("Sub", [cx.const("one", 1.0), cx.op("Mul", [cx.const("ga", float(n.gates[2])), o], "ga_o")], "gate")
    kept = cx.op("Mul", [cx.op("Mul", [a, u], "decayed"), gate], "kept")
    h = cx.op("Sub", [cx.op("Add", [cx.op("Sub", [kept, leak], "leaked"), i], "charged"),
                      cx.op("Mul", [rev, o], "reversal")], out=u_next)
    d = cx.op("Sub", [h, vth], "above")
    fire = cx.op("Greater" if n.compare == ">" else "GreaterOrEqual", [d, cx.const("zero", 0.0)], "fire")
    s = cx.op("Cast", [fire], out=out, to=F32)
    cx.op("Identity", [s], out=o_next)


def emit_heaviside(cx: Context, n: ir.Heaviside, ins, out):
    """``S = X >= threshold`` (or ``>``)."""
    cmp = "GreaterOrEqual" if n.compare == ">=" else "Greater"
    cx.op("Cast", [cx.op(cmp, [ins[0], cx.const("threshold", float(n.threshold))], "fire")], out=out, to=F32)


#: ops the per-step ONNX model cannot express, with the reason (``export_onnx`` refuses them by node)
#: ops exported with a stated approximation: onnxruntime's ``Exp`` is not PyTorch's bit for bit
#: (measured on 100,000-element EIF/CLIF membranes: 1.5-3.6 % of the values differ by 1-2 ulp; the
#: spikes were equal, 0 mismatches in 12.2 M spikes of tiny Spikformer/QKFormer models on 64 digits).
#: A spike that such an ulp flips is a threshold tie, which the float parity check attributes.
APPROXIMATE_OPS: dict[str, str] = {
    "EIFNeuron": "membrane within 2 ulp: onnxruntime's Exp; 0 spike mismatches in 12.2 M measured",
    "CLIFNeuron": "membrane within 2 ulp: onnxruntime's Exp in the sigmoids; 0 spike mismatches in 12.2 M measured",
}

REFUSED_OPS: dict[str, str] = {
    "TemporalLinear": ("a linear map across time steps (PSN): Y[t] needs X at every step, also later ones, but the "
                       "ONNX model computes one step with state I/O; run it with the reference interpreter "
                       "(step_deploy.simulators.reference.run), which evaluates sequence ops over all T steps"),
}


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


EMITTERS: dict[str, Emitter] = {
    "Output": emit_output, "Conv2d": emit_conv2d, "Conv1d": emit_conv1d, "Linear": emit_linear,
    "BatchNorm": emit_batchnorm, "Neuron": emit_neuron, "MatMul": emit_matmul, "Mul": emit_mul, "Sum": emit_sum,
    "Mean": emit_mean, "Scale": emit_scale, "Add": emit_add, "Reshape": emit_reshape, "Transpose": emit_transpose,
    "Flatten": emit_flatten, "MaxPool2d": emit_maxpool2d, "AvgPool2d": emit_avgpool2d, "Delay": emit_delay,
    "TemporalMean": emit_temporalmean, "KLIFNeuron": emit_neuron, "EIFNeuron": emit_neuron,
    "CLIFNeuron": emit_clifneuron, "GLIFNeuron": emit_glifneuron, "Heaviside": emit_heaviside,
}
#: the backend's op set: the emitters plus the graph inputs (they become ONNX graph inputs)
ONNX_BACKEND = ir.register_backend("onnx", set(EMITTERS) | {"Input"}, kind="float", where="exporters/onnx_ops.py",
                                   hint="ONNX takes float graphs (quantized graphs go to the golden model or Lava)")
