"""IR node types: one frozen dataclass per op, the per-time-step equation in each docstring.

Conventions shared by every node (and tested against every backend):

* The IR describes **one time step**. A run is ``for t in range(T): evaluate graph``.
  Stateful nodes (``Neuron``, ``Delay``, ``TemporalMean``) carry state from step to step;
  the state starts at zero before step 0.
* Tensors inside the IR have **no batch axis**: a per-step image is ``(C, H, W)``, a token map
  ``(N, C)``, a head-split token map ``(heads, N, d)``. Executors add a leading batch axis.
* Every node names its producers in ``inputs`` (names of other nodes, in order).
* Array-valued fields are ``numpy.ndarray``; all other fields are plain JSON values. The
  serializer is derived from the fields, so a new node type needs no serialization code.

Shape inference lives on the node (``infer_shape``); the numerical definition of each op lives
in ``step_deploy.simulators.reference_ops`` (one small function per op). The neuron node types are
in ``neuron_nodes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Optional

import numpy as np

Shape = tuple[int, ...]

NODE_TYPES: dict[str, type["Node"]] = {}


def register(cls):
    """Class decorator: make a node type known to the serializer and verifier."""
    NODE_TYPES[cls.__name__] = cls
    return cls


class ShapeError(ValueError):
    """Raised by ``infer_shape`` when a node's input shapes do not fit its parameters."""


@dataclass(frozen=True, eq=False)
class Node:
    """Base of all IR nodes. ``name`` is unique in a graph; ``inputs`` are producer names."""

    name: str
    inputs: tuple[str, ...] = ()

    #: number of inputs the node takes (None: any number >= 1)
    arity: ClassVar[Optional[int]] = 1
    #: True when the node keeps state across time steps
    stateful: ClassVar[bool] = False

    @property
    def op(self) -> str:
        return type(self).__name__

    def params(self) -> dict:
        """The op-specific fields (everything except name and inputs)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "inputs")}

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.params().items() if isinstance(v, np.ndarray)}

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:  # pragma: no cover - overridden
        raise NotImplementedError(self.op)

    def describe(self) -> str:
        parts = []
        for k, v in self.params().items():
            parts.append(f"{k}={tuple(v.shape)}" if isinstance(v, np.ndarray) else f"{k}={v}")
        return f"{self.op}({', '.join(parts)})"


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _norm_axis(axis: int, rank: int, node: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{node}: axis {axis} out of range for a rank-{rank} tensor")
    return axis % rank


# --------------------------------------------------------------------------- boundary


@register
@dataclass(frozen=True, eq=False)
class Input(Node):
    """Graph input at step t: ``Y[t] = X_in[t]``.

    ``kind`` says what arrives: ``'analog'`` (real-valued, e.g. direct-coded pixels, the same
    every step), ``'spikes'`` (binary events) or ``'counts'`` (event counts per bin)."""

    shape: Shape = ()
    kind: str = "analog"
    arity: ClassVar[Optional[int]] = 0

    def infer_shape(self, in_shapes):
        return tuple(int(s) for s in self.shape)


@register
@dataclass(frozen=True, eq=False)
class Output(Node):
    """Graph output at step t: ``Y[t] = X[t]``. The value after the last step is the result."""

    def infer_shape(self, in_shapes):
        return in_shapes[0]


# --------------------------------------------------------------------------- synapses


@register
@dataclass(frozen=True, eq=False)
class Conv2d(Node):
    """2-D convolution of a ``(C_in, H, W)`` map, no state:

    ``Y[t][o, y, x] = b[o] + Σ_{i,ky,kx} W[o, i, ky, kx] · X[t][i, y·s + ky·d - p, x·s + kx·d - p]``
    (zero padding; grouped when ``groups > 1``). ``weight`` is ``(C_out, C_in/groups, kH, kW)``."""

    weight: np.ndarray = None
    bias: Optional[np.ndarray] = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def infer_shape(self, in_shapes):
        (c, h, w), (co, ci, kh, kw) = in_shapes[0], self.weight.shape
        if c != ci * self.groups:
            raise ShapeError(f"{self.name}: input has {c} channels, weight expects {ci * self.groups}")
        s, p, d = _pair(self.stride), _pair(self.padding), _pair(self.dilation)
        return (co, _conv_out(h, kh, s[0], p[0], d[0]), _conv_out(w, kw, s[1], p[1], d[1]))


@register
@dataclass(frozen=True, eq=False)
class Conv1d(Node):
    """1-D convolution of a ``(C_in, L)`` map, no state:

    ``Y[t][o, l] = b[o] + Σ_{i,k} W[o, i, k] · X[t][i, l·s + k·d - p]``. ``weight`` is
    ``(C_out, C_in/groups, K)``."""

    weight: np.ndarray = None
    bias: Optional[np.ndarray] = None
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def infer_shape(self, in_shapes):
        (c, length), (co, ci, k) = in_shapes[0], self.weight.shape
        if c != ci * self.groups:
            raise ShapeError(f"{self.name}: input has {c} channels, weight expects {ci * self.groups}")
        return (co, _conv_out(length, k, self.stride, self.padding, self.dilation))


@register
@dataclass(frozen=True, eq=False)
class Linear(Node):
    """Dense synapses on the last axis, no state:
    ``Y[t][..., o] = b[o] + Σ_i W[o, i] · X[t][..., i]``. ``weight`` is ``(out, in)``."""

    weight: np.ndarray = None
    bias: Optional[np.ndarray] = None

    def infer_shape(self, in_shapes):
        shape = in_shapes[0]
        if not shape or shape[-1] != self.weight.shape[1]:
            raise ShapeError(f"{self.name}: last input axis {shape} does not match weight in={self.weight.shape[1]}")
        return shape[:-1] + (self.weight.shape[0],)


@register
@dataclass(frozen=True, eq=False)
class BatchNorm(Node):
    """Inference batch norm along channel ``axis`` (statistics shared over time), no state:
    ``Y[t][c] = (X[t][c] - mean[c]) / sqrt(var[c] + eps) · gamma[c] + beta[c]``.
    Exists only before the ``fold-batchnorm`` pass."""

    gamma: np.ndarray = None
    beta: np.ndarray = None
    mean: np.ndarray = None
    var: np.ndarray = None
    eps: float = 1e-5
    axis: int = 0

    def infer_shape(self, in_shapes):
        shape = in_shapes[0]
        ax = _norm_axis(self.axis, len(shape), self.name)
        if shape[ax] != self.gamma.shape[0]:
            raise ShapeError(f"{self.name}: axis {ax} has {shape[ax]} channels, parameters have {self.gamma.shape[0]}")
        return shape


# --------------------------------------------------------------------------- attention primitives


@register
@dataclass(frozen=True, eq=False)
class MatMul(Node):
    """Product of two live tensors (neither is a constant weight), batched over leading axes:
    ``Y[t] = scale · op(A[t]) @ op(B[t])`` with ``op`` an optional transpose of the last two axes.

    When both operands are binary spikes this is AND + popcount (Spikformer's ``Q @ Kᵀ``). It is
    **not a synapse**: on neuromorphic cores it needs a host/embedded core or coincidence neurons."""

    transpose_a: bool = False
    transpose_b: bool = False
    scale: float = 1.0
    arity: ClassVar[Optional[int]] = 2

    def infer_shape(self, in_shapes):
        a, b = (list(s) for s in in_shapes)
        if self.transpose_a:
            a[-1], a[-2] = a[-2], a[-1]
        if self.transpose_b:
            b[-1], b[-2] = b[-2], b[-1]
        if a[:-2] != b[:-2] or a[-1] != b[-2]:
            raise ShapeError(f"{self.name}: cannot multiply {tuple(a)} by {tuple(b)}")
        return tuple(a[:-1] + [b[-1]])


@register
@dataclass(frozen=True, eq=False)
class Mul(Node):
    """Elementwise product of two live tensors with numpy broadcasting: ``Y[t] = A[t] ⊙ B[t]``.
    On binary spikes this is an AND (SDT's ``Q ⊙ kv``, QKFormer's token mask ``mask ⊙ K``)."""

    arity: ClassVar[Optional[int]] = 2

    def infer_shape(self, in_shapes):
        try:
            return tuple(np.broadcast_shapes(in_shapes[0], in_shapes[1]))
        except ValueError as e:
            raise ShapeError(f"{self.name}: {e}") from None


@register
@dataclass(frozen=True, eq=False)
class Sum(Node):
    """Sum over one axis: ``Y[t] = Σ_axis X[t]`` (keepdim keeps the axis with size 1).
    On spikes the result is an integer count (SDT's column sum, QKFormer's per-head channel sum)."""

    axis: int = 0
    keepdim: bool = False

    def infer_shape(self, in_shapes):
        shape = list(in_shapes[0])
        ax = _norm_axis(self.axis, len(shape), self.name)
        if self.keepdim:
            shape[ax] = 1
        else:
            del shape[ax]
        return tuple(shape)


@register
@dataclass(frozen=True, eq=False)
class Mean(Sum):
    """Mean over one axis: ``Y[t] = (1/n) Σ_axis X[t]`` (token mean before the head)."""


@register
@dataclass(frozen=True, eq=False)
class Scale(Node):
    """Multiplication by a constant: ``Y[t] = factor · X[t]``."""

    factor: float = 1.0

    def infer_shape(self, in_shapes):
        return in_shapes[0]


@register
@dataclass(frozen=True, eq=False)
class Add(Node):
    """Sum of its inputs: ``Y[t] = Σ_k X_k[t]``. Residual adds of spike maps give integers 0..n
    (Spikformer/QKFormer); SDT adds membrane (pre-spike) values."""

    arity: ClassVar[Optional[int]] = None

    def infer_shape(self, in_shapes):
        if any(s != in_shapes[0] for s in in_shapes):
            raise ShapeError(f"{self.name}: inputs have different shapes {in_shapes}")
        return in_shapes[0]


# --------------------------------------------------------------------------- layout


@register
@dataclass(frozen=True, eq=False)
class Reshape(Node):
    """Row-major reshape, no state: ``Y[t] = reshape(X[t], shape)``."""

    shape: Shape = ()

    def infer_shape(self, in_shapes):
        if math.prod(in_shapes[0]) != math.prod(self.shape):
            raise ShapeError(f"{self.name}: cannot reshape {in_shapes[0]} to {self.shape}")
        return tuple(self.shape)


@register
@dataclass(frozen=True, eq=False)
class Transpose(Node):
    """Axis permutation, no state: ``Y[t] = permute(X[t], perm)``."""

    perm: tuple[int, ...] = ()

    def infer_shape(self, in_shapes):
        shape = in_shapes[0]
        if sorted(self.perm) != list(range(len(shape))):
            raise ShapeError(f"{self.name}: perm {self.perm} does not fit rank {len(shape)}")
        return tuple(shape[p] for p in self.perm)


@register
@dataclass(frozen=True, eq=False)
class Flatten(Node):
    """Merge axes ``start_dim..end_dim`` (inclusive, per-step axes), no state:
    ``Y[t] = reshape(X[t], shape[:s] + (prod(shape[s..e]),) + shape[e+1:])``."""

    start_dim: int = 0
    end_dim: int = -1

    def infer_shape(self, in_shapes):
        shape = list(in_shapes[0])
        s = _norm_axis(self.start_dim, len(shape), self.name)
        e = _norm_axis(self.end_dim, len(shape), self.name)
        return tuple(shape[:s] + [math.prod(shape[s:e + 1])] + shape[e + 1:])


# --------------------------------------------------------------------------- pooling


@register
@dataclass(frozen=True, eq=False)
class MaxPool2d(Node):
    """Max over windows of a ``(C, H, W)`` map (padding with -inf), no state:
    ``Y[t][c, y, x] = max_{ky,kx} X[t][c, y·s + ky - p, x·s + kx - p]``. On binary spikes: OR."""

    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)

    def infer_shape(self, in_shapes):
        c, h, w = in_shapes[0]
        k, s, p = _pair(self.kernel_size), _pair(self.stride), _pair(self.padding)
        return (c, _conv_out(h, k[0], s[0], p[0], 1), _conv_out(w, k[1], s[1], p[1], 1))


@register
@dataclass(frozen=True, eq=False)
class AvgPool2d(MaxPool2d):
    """Mean over windows (zero padding counted, as PyTorch's default), no state:
    ``Y[t][c, y, x] = (1/(kH·kW)) Σ_{ky,kx} X[t][c, y·s + ky - p, x·s + kx - p]``."""


# --------------------------------------------------------------------------- time


@register
@dataclass(frozen=True, eq=False)
class Delay(Node):
    """Reads its input from ``steps`` steps back (stateful FIFO): ``Y[t] = X[t - steps]``, and 0 for
    ``t < steps``. Models Lava's per-synapse delay and delay balancing; room for temporal attention."""

    steps: int = 1
    stateful: ClassVar[bool] = True

    def infer_shape(self, in_shapes):
        if self.steps < 0:
            raise ShapeError(f"{self.name}: negative delay {self.steps}")
        return in_shapes[0]


@register
@dataclass(frozen=True, eq=False)
class TemporalMean(Node):
    """Temporal readout (stateful running mean): ``A[t] = A[t-1] + X[t]``, ``Y[t] = A[t] / (t+1)``.
    After the last step ``Y = (1/T) Σ_t X[t]``: STEP's ``x.mean(0)`` before (or after) the head."""

    stateful: ClassVar[bool] = True

    def infer_shape(self, in_shapes):
        return in_shapes[0]


def is_core_op(cls: type[Node]) -> bool:
    """True for the float IR's own node types (``ir.nodes``, ``ir.neuron_nodes``), False for those a
    fixed-point format registers (``step_deploy.fixedpoint``)."""
    return cls.__module__.startswith(__name__.rsplit(".", 1)[0] + ".")


def node_fields(cls: type[Node]) -> list[str]:
    """Names of the op-specific fields of a node type, in declaration order."""
    return [f.name for f in fields(cls) if f.name not in ("name", "inputs")]


def replace(node: Node, **changes) -> Node:
    """A copy of ``node`` with some fields changed (dataclasses.replace for frozen nodes)."""
    import dataclasses

    return dataclasses.replace(node, **changes)


__all__ = [name for name in NODE_TYPES] + ["Node", "NODE_TYPES", "ShapeError", "node_fields", "replace", "register"]
