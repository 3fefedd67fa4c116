"""IR node types of the seed attention designs (STAtten, A²OS²A, bipolar self-attention): one frozen
dataclass per op, the equation in each docstring (the numerical definition is
``step_deploy.simulators.reference_ops``).

* ``ReLU``: A²OS²A's key path (a real, non-negative activation that is not a spike).
* ``Shiftmax``: bipolar self-attention's replacement for softmax (powers of two and one row-wise
  power-of-two normaliser; shifts and adds on integer scores).
* ``TemporalBlockSum``: STAtten's sum over a block of consecutive time steps (``Σ_τ K_τᵀ V_τ``), a
  **window op**: non-causal inside its block, so executors run the graph node-major (or block by
  block) and a streaming target pays a latency of ``block - 1`` steps and a buffer."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .nodes import Node, Shape, ShapeError, _norm_axis, register


@register
@dataclass(frozen=True, eq=False)
class ReLU(Node):
    """Rectifier, no state: ``Y[t] = max(X[t], 0)``. A²OS²A's K (``K = ReLU(BN(Linear(x)))``): a real,
    non-negative activation, not a spike; on an integer target it stays at the scale of its input."""

    def infer_shape(self, in_shapes):
        return in_shapes[0]


@register
@dataclass(frozen=True, eq=False)
class Shiftmax(Node):
    """Bipolar self-attention's shift-based softmax over ``axis`` (a score row), no state. With
    ``Δ = X[t] - max_axis X[t]`` (integer scores: ``Q·Kᵀ`` of ternary spikes)::

        num = 2^Δ  where Δ >= -frac_bits, else 0          (terms below 2^-frac_bits are dropped)
        den = 2^ceil(log2 Σ_axis num)                      (the next power of two >= the row sum)
        Y[t] = num / den                                   (each row sums to a value in (1/2, 1])

    Every value is a power of two (or 0), so on integer scores it is shifts and adds; with ``L``
    = ``ceil(log2 n)`` for a row of n entries, ``Y · 2^(frac_bits + L)`` is an exact integer
    (:meth:`out_frac_bits`). ``frac_bits`` bounds the dynamic range (the float model drops the
    same terms, so float and integer stages compute the same function)."""

    axis: int = -1
    frac_bits: int = 16

    def __post_init__(self):
        if not 0 <= int(self.frac_bits) <= 30:
            raise ValueError(f"{self.name}: frac_bits={self.frac_bits} must be in 0..30")

    def infer_shape(self, in_shapes):
        _norm_axis(self.axis, len(in_shapes[0]), self.name)
        return in_shapes[0]

    def out_frac_bits(self, in_shape: Shape) -> int:
        """Fractional bits that represent every output exactly: ``frac_bits + ceil(log2 n)``."""
        n = int(in_shape[_norm_axis(self.axis, len(in_shape), self.name)])
        return int(self.frac_bits) + max(0, math.ceil(math.log2(n)))


@register
@dataclass(frozen=True, eq=False)
class TemporalBlockSum(Node):
    """Sum over a block of ``block`` consecutive time steps (STAtten's ``M_c = Σ_{τ∈c} K_τᵀ V_τ``),
    blocks non-overlapping and aligned at step 0::

        Y[t] = Σ_{τ = b·⌊t/b⌋}^{b·⌊t/b⌋ + b - 1} X[τ]          (b = block; T must be a multiple of b)

    Every step of a block gets the same sum, so ``Y[t]`` needs inputs up to the block's last step:
    a **window op** (non-causal inside a block, ``sequence = True``). Executors evaluate the graph
    node-major; a streaming target accumulates the block (``numel(X)`` counters, :meth:`buffer_elements`)
    and emits at the block's end, a latency of ``block - 1`` steps during which the other operands
    of the consumers wait in buffers (``block - 1`` steps of each). With ``block = 1`` it is the
    identity."""

    block: int = 2
    sequence: ClassVar[bool] = True
    stateful: ClassVar[bool] = True

    def __post_init__(self):
        if int(self.block) < 1:
            raise ValueError(f"{self.name}: block={self.block} must be >= 1")

    def infer_shape(self, in_shapes):
        return in_shapes[0]

    @property
    def latency(self) -> int:
        """Steps a streaming implementation waits before it can emit a block's first output."""
        return int(self.block) - 1

    def buffer_elements(self, in_shape: Shape) -> int:
        """Counters of the block accumulator: ``numel(X)``."""
        return int(np.prod(in_shape))

    def check_steps(self, steps: int) -> None:
        if steps % int(self.block):
            raise ShapeError(f"{self.name}: T={steps} is not a multiple of the block size {self.block} "
                             f"(STAtten's chunk_size); run the model's T or choose a block that divides it")


WINDOW_OPS = ("TemporalBlockSum",)

__all__ = ["ReLU", "Shiftmax", "TemporalBlockSum", "WINDOW_OPS"]
