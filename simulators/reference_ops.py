"""Reference semantics of every IR op, float mode: one small function per op.

Each function takes ``(node, inputs, state, t)`` where ``inputs`` are torch tensors with a
leading batch axis, ``state`` is the node's own dict (empty at step 0) and ``t`` the step index,
and returns the node's output at step ``t``. Axes stored in nodes refer to the per-step tensor
(no batch axis); ``_ax`` shifts them past the batch axis. The arithmetic order follows the
PyTorch reference models so spikes agree bit for bit.

Precision follows the activations: weights are cast to the dtype of the tensor they meet, so
``reference.run(..., dtype=torch.float64)`` evaluates the whole graph in float64 (float32, the
default, matches PyTorch). The neuron is split into :func:`neuron_charge`, :func:`neuron_fire`
and :func:`neuron_reset` so that other checks (``float_parity``'s teacher forcing) reuse the one
definition of the equation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from step_deploy import ir


def _ax(axis: int) -> int:
    return axis + 1 if axis >= 0 else axis


def _t(state: dict, key: str, array, like: torch.Tensor) -> torch.Tensor:
    """Weights as torch tensors in the float dtype of the activation ``like`` (float32 when it is
    not floating point), converted once per run and kept in the node's state."""
    if key not in state:
        dtype = like.dtype if like.is_floating_point() else torch.float32
        state[key] = None if array is None else torch.from_numpy(array).to(dtype)
    return state[key]


def op_input(n: ir.Input, xs, state, t):
    return xs[0]


def op_output(n: ir.Output, xs, state, t):
    return xs[0]


def op_conv2d(n: ir.Conv2d, xs, state, t):
    return F.conv2d(xs[0], _t(state, "w", n.weight, xs[0]), _t(state, "b", n.bias, xs[0]), tuple(n.stride),
                    tuple(n.padding), tuple(n.dilation), n.groups)


def op_conv1d(n: ir.Conv1d, xs, state, t):
    return F.conv1d(xs[0], _t(state, "w", n.weight, xs[0]), _t(state, "b", n.bias, xs[0]), n.stride, n.padding,
                    n.dilation, n.groups)


def op_linear(n: ir.Linear, xs, state, t):
    return F.linear(xs[0], _t(state, "w", n.weight, xs[0]), _t(state, "b", n.bias, xs[0]))


def op_batchnorm(n: ir.BatchNorm, xs, state, t):
    x = xs[0]
    ax = _ax(n.axis) % x.dim()
    x = x.movedim(ax, 1)
    y = F.batch_norm(x, _t(state, "m", n.mean, x), _t(state, "v", n.var, x), _t(state, "g", n.gamma, x),
                     _t(state, "b", n.beta, x), False, 0.0, n.eps)
    return y.movedim(1, ax)


def neuron_charge(n: ir.Neuron, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The membrane ``H[t]`` from the input ``X[t]`` and the previous state ``V[t-1]``."""
    if n.kind == "IF":
        return v + x
    if n.kind == "PLIF" and n.decay_input:  # PLIF multiplies by sigmoid(w) = 1/tau, as trained
        return v + (x - (v - n.v_reset)) * (1.0 / n.tau)
    if n.decay_input:
        return v + (x - (v - n.v_reset)) / n.tau
    return v - (v - n.v_reset) / n.tau + x


def neuron_fire(n: ir.Neuron, h: torch.Tensor) -> torch.Tensor:
    """The spike ``S[t]`` for membrane ``H[t]`` (binary, ternary or integer output). Monotone
    non-decreasing in ``h`` for every output kind."""
    thr = n.v_threshold
    if n.output == "binary":
        return (h >= thr if n.compare == ">=" else h > thr).to(h.dtype)
    if n.output == "ternary":
        pos = h >= thr if n.compare == ">=" else h > thr
        neg = h <= -thr if n.compare == ">=" else h < -thr
        return pos.to(h.dtype) - neg.to(h.dtype)
    return torch.clamp(torch.round(h / thr), 0, n.max_level)


def neuron_reset(n: ir.Neuron, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The state ``V[t]`` after spike ``s`` (which need not be ``neuron_fire(n, h)``)."""
    if n.reset == "hard":
        fired = s.abs() if n.output != "integer" else (s > 0).to(h.dtype)
        return h * (1.0 - fired) + n.v_reset * fired if n.v_reset else h * (1.0 - fired)
    return h - s * n.v_threshold


def neuron_state(n: ir.Neuron, x: torch.Tensor, state: dict) -> torch.Tensor:
    """``V[t-1]`` from the node's state (``v_reset`` before the first step)."""
    v = state.get("v")
    return torch.full_like(x, n.v_reset) if v is None else v


def op_neuron(n: ir.Neuron, xs, state, t):
    h = neuron_charge(n, xs[0], neuron_state(n, xs[0], state))
    s = neuron_fire(n, h)
    state["v"] = neuron_reset(n, h, s)
    return s


def op_matmul(n: ir.MatMul, xs, state, t):
    a, b = xs
    if n.transpose_a:
        a = a.transpose(-2, -1)
    if n.transpose_b:
        b = b.transpose(-2, -1)
    y = a @ b
    return y * n.scale if n.scale != 1.0 else y


def _align_ranks(a: torch.Tensor, b: torch.Tensor):
    """Numpy broadcasting of the per-step shapes: pad the lower-rank operand after the batch axis."""
    while a.dim() < b.dim():
        a = a.unsqueeze(1)
    while b.dim() < a.dim():
        b = b.unsqueeze(1)
    return a, b


def op_mul(n: ir.Mul, xs, state, t):
    a, b = _align_ranks(xs[0], xs[1])
    return a * b


def op_sum(n: ir.Sum, xs, state, t):
    return xs[0].sum(dim=_ax(n.axis), keepdim=n.keepdim)


def op_mean(n: ir.Mean, xs, state, t):
    return xs[0].mean(dim=_ax(n.axis), keepdim=n.keepdim)


def op_scale(n: ir.Scale, xs, state, t):
    return xs[0] * n.factor


def op_add(n: ir.Add, xs, state, t):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def op_reshape(n: ir.Reshape, xs, state, t):
    return xs[0].reshape((xs[0].shape[0],) + tuple(n.shape))


def op_transpose(n: ir.Transpose, xs, state, t):
    return xs[0].permute((0,) + tuple(p + 1 for p in n.perm))


def op_flatten(n: ir.Flatten, xs, state, t):
    return xs[0].flatten(_ax(n.start_dim), _ax(n.end_dim))


def op_maxpool2d(n: ir.MaxPool2d, xs, state, t):
    return F.max_pool2d(xs[0], tuple(n.kernel_size), tuple(n.stride), tuple(n.padding))


def op_avgpool2d(n: ir.AvgPool2d, xs, state, t):
    return F.avg_pool2d(xs[0], tuple(n.kernel_size), tuple(n.stride), tuple(n.padding))


def op_delay(n: ir.Delay, xs, state, t):
    if n.steps == 0:
        return xs[0]
    fifo = state.setdefault("fifo", [torch.zeros_like(xs[0]) for _ in range(n.steps)])
    fifo.append(xs[0])
    return fifo.pop(0)


def op_temporalmean(n: ir.TemporalMean, xs, state, t):
    acc = state["acc"] + xs[0] if "acc" in state else xs[0]
    state["acc"] = acc
    return acc / (t + 1)


FLOAT_OPS = {
    "Input": op_input, "Output": op_output, "Conv2d": op_conv2d, "Conv1d": op_conv1d, "Linear": op_linear,
    "BatchNorm": op_batchnorm, "Neuron": op_neuron, "MatMul": op_matmul, "Mul": op_mul, "Sum": op_sum,
    "Mean": op_mean, "Scale": op_scale, "Add": op_add, "Reshape": op_reshape, "Transpose": op_transpose,
    "Flatten": op_flatten, "MaxPool2d": op_maxpool2d, "AvgPool2d": op_avgpool2d, "Delay": op_delay,
    "TemporalMean": op_temporalmean,
}
_CORE_OPS = {k for k, c in ir.NODE_TYPES.items() if c.__module__ == "step_deploy.ir.nodes"}
assert set(FLOAT_OPS) == _CORE_OPS, "every core IR op needs a reference function"
REFERENCE_BACKEND = ir.register_backend(
    "reference", FLOAT_OPS, kind="float", where="simulators/reference_ops.py",
    hint="the reference interpreter runs float graphs; run a quantized graph with simulators.golden.run_golden")
