"""Reference semantics of every IR op, float mode: one small function per op.

Each function takes ``(node, inputs, state, t)`` where ``inputs`` are torch tensors with a
leading batch axis, ``state`` is the node's own dict (empty at step 0) and ``t`` the step index,
and returns the node's output at step ``t``. Axes stored in nodes refer to the per-step tensor
(no batch axis); ``_ax`` shifts them past the batch axis. The arithmetic order follows the
PyTorch reference models so spikes agree bit for bit.

Precision follows the activations: weights are cast to the dtype of the tensor they meet, so
``reference.run(..., dtype=torch.float64)`` evaluates the whole graph in float64 (float32, the
default, matches PyTorch). The spiking ops live in :mod:`.reference_neurons`, split into
charge / fire / commit so that other checks (``float_parity``'s teacher forcing) reuse the one
definition of each equation.

**Sequence ops** (node classes with ``sequence = True``: ``TemporalLinear``, ``TemporalBlockSum``) need their
input's whole sequence: their function is called once per run as ``fn(node, xs, state, None)``
with ``xs`` the inputs as ``(T, B, ...)`` tensors and returns ``(T, B, ...)``; ``reference.run``
then evaluates the graph node-major."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from step_deploy import ir

from .reference_neurons import (NEURON_RULES, neuron_charge, neuron_fire, neuron_reset,  # noqa: F401 (API)
                                neuron_state, op_spiking)


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


def op_neuron(n: ir.Neuron, xs, state, t):
    """Every spiking op (``Neuron`` and its subclasses, ``Heaviside``): see :mod:`.reference_neurons`."""
    return op_spiking(n, xs, state, t)


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


def op_temporallinear(n: ir.TemporalLinear, xs, state, t):
    """Sequence op: ``Y[t] = Σ_τ W[t, τ] X[τ] + b[t]`` as STEP's ``PSNTorch`` computes it,
    ``addmm(b[:, None], W, X.reshape(T, -1))`` over the whole ``(T, B, ...)`` input."""
    x = xs[0]
    steps = x.shape[0]
    if steps != n.steps:
        raise ValueError(f"TemporalLinear {n.name!r}: weight is ({n.steps}, {n.steps}) for T={n.steps} steps, "
                         f"the run has T={steps}; run the graph for the model's T")
    w, b = _t(state, "w", n.weight, x), _t(state, "b", n.bias, x)
    return torch.addmm(b.unsqueeze(1), w, x.reshape(steps, -1)).reshape(x.shape)


def op_relu(n: ir.ReLU, xs, state, t):
    return torch.clamp_min(xs[0], 0)


def shiftmax_den(row_sum: torch.Tensor) -> torch.Tensor:
    """``2^ceil(log2 s)`` for ``s > 0``, exactly (``frexp``: ``s = m·2^e``, ``m`` in [1/2, 1))."""
    m, e = torch.frexp(row_sum)
    e = torch.where(m == 0.5, e - 1, e)
    return torch.ldexp(torch.ones_like(row_sum), e)


def op_shiftmax(n: ir.Shiftmax, xs, state, t):
    """``num = 2^Δ`` (0 below ``2^-frac_bits``), ``den = 2^ceil(log2 Σ num)``, ``Y = num / den``; every
    step is exact in float32 (powers of two, sums of at most 2^(24 - frac_bits) terms)."""
    x = xs[0]
    ax = _ax(n.axis)
    delta = x - x.amax(dim=ax, keepdim=True)
    num = torch.where(delta >= -n.frac_bits, torch.exp2(delta), torch.zeros_like(delta))
    return num / shiftmax_den(num.sum(dim=ax, keepdim=True))


def op_temporalblocksum(n: ir.TemporalBlockSum, xs, state, t):
    """Window op over the whole ``(T, B, ...)`` input: each block of ``block`` steps gets its sum."""
    x = xs[0]
    steps = x.shape[0]
    n.check_steps(steps)
    b = int(n.block)
    blocks = x.reshape((steps // b, b) + tuple(x.shape[1:])).sum(dim=1, keepdim=True)
    return blocks.expand((steps // b, b) + tuple(x.shape[1:])).reshape(x.shape)


FLOAT_OPS = {
    "Input": op_input, "Output": op_output, "Conv2d": op_conv2d, "Conv1d": op_conv1d, "Linear": op_linear,
    "BatchNorm": op_batchnorm, "Neuron": op_neuron, "MatMul": op_matmul, "Mul": op_mul, "Sum": op_sum,
    "Mean": op_mean, "Scale": op_scale, "Add": op_add, "Reshape": op_reshape, "Transpose": op_transpose,
    "Flatten": op_flatten, "MaxPool2d": op_maxpool2d, "AvgPool2d": op_avgpool2d, "Delay": op_delay,
    "TemporalMean": op_temporalmean, "TemporalLinear": op_temporallinear,
    "ReLU": op_relu, "Shiftmax": op_shiftmax, "TemporalBlockSum": op_temporalblocksum,
    **{op: op_neuron for op in NEURON_RULES},
}
_CORE_OPS = {k for k, c in ir.NODE_TYPES.items() if ir.is_core_op(c)}
assert set(FLOAT_OPS) == _CORE_OPS, "every core IR op needs a reference function"
REFERENCE_BACKEND = ir.register_backend(
    "reference", FLOAT_OPS, kind="float", where="simulators/reference_ops.py",
    hint="the reference interpreter runs float graphs; run a quantized graph with simulators.golden.run_golden")
