"""The core IR ops on integers, shared by every fixed-point format the golden model runs.

One small function per op, ``(node, inputs, state, t) -> int64 tensor``, like
``reference_ops``. Layout and elementwise ops reuse the float definitions unchanged (they are
exact on integers); ``MatMul`` (``scale`` must be 1) and ``MaxPool2d`` are evaluated in float64,
exact below 2^53. Float-only ops (convolutions with float weights, float neurons, means, scales)
are not here: a quantization pass replaces them with its format's node types, and the golden
model refuses a graph that still has them before it runs (``ir.require_ops``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from step_deploy import ir
from step_deploy.errors import StepDeployError

from .reference_ops import FLOAT_OPS


class GoldenError(StepDeployError, ValueError):
    """A node the integer model cannot run (a float op left in a quantized graph)."""


def f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def i64(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).to(torch.int64)


def weight(state: dict, key: str, array) -> Optional[torch.Tensor]:
    """An integer weight array as a float64 tensor, converted once per run into the node's state."""
    if key not in state:
        state[key] = None if array is None else torch.from_numpy(np.asarray(array, np.float64))
    return state[key]


def shift(acc: torch.Tensor, exp: int) -> torch.Tensor:
    """``acc << exp``, or ``acc >> -exp`` (a floor, as numpy's) for a negative ``exp``."""
    return acc << exp if exp >= 0 else acc >> (-exp)


def op_matmul(n: ir.MatMul, xs, state, t):
    if n.scale != 1.0:
        raise GoldenError(f"{n.name}: MatMul scale {n.scale} in an integer graph (the quantization pass folds it)")
    a, b = (f64(x) for x in xs)
    if n.transpose_a:
        a = a.transpose(-2, -1)
    if n.transpose_b:
        b = b.transpose(-2, -1)
    return i64(a @ b)


def op_maxpool2d(n: ir.MaxPool2d, xs, state, t):
    return i64(F.max_pool2d(f64(xs[0]), tuple(n.kernel_size), tuple(n.stride), tuple(n.padding)))


#: core ops whose float definition is exact on integers
EXACT_ON_INTEGERS = ("Input", "Output", "Mul", "Sum", "Add", "Reshape", "Transpose", "Flatten", "Delay")

#: the core IR ops every fixed-point format runs (the others only exist in float graphs)
CORE_INTEGER_OPS = {k: FLOAT_OPS[k] for k in EXACT_ON_INTEGERS}
CORE_INTEGER_OPS.update({"MatMul": op_matmul, "MaxPool2d": op_maxpool2d})

__all__ = ["GoldenError", "CORE_INTEGER_OPS", "EXACT_ON_INTEGERS", "f64", "i64", "weight", "shift", "op_matmul",
           "op_maxpool2d"]
