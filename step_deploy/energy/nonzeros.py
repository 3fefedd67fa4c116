"""Which values of the recorded traces are non-zero, counted once per trace and count
(``energy.counters``' input): masks, counts per (step, sample) and per spatial position."""
from __future__ import annotations

import functools
import math
from typing import Mapping, Optional, Union

import numpy as np
import torch

from .counts import CountError

Trace = Union[torch.Tensor, np.ndarray]


_INT16_MAX = 2 ** 15 - 1


@functools.lru_cache(maxsize=256)
def _int16_chunk(n: int) -> Optional[int]:
    """The largest divisor of ``n`` that an int16 sum of bytes cannot overflow (None below 1024:
    too many small chunks to be worth it)."""
    k = -(-n // _INT16_MAX)
    while n % k:
        k += 1
    return n // k if n // k >= 1024 else None


def _count_true(mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """int64 number of True values of a bool tensor over ``dims``. Summed as bytes into the
    narrowest accumulator that cannot overflow (int16 up to 32767 values, trailing axes in int16
    chunks beyond): exact, and several times faster than summing bools into int64."""
    if not dims:
        return mask.to(torch.int64)
    u = mask.view(torch.uint8)
    n = math.prod(mask.shape[d] for d in dims)
    if n <= _INT16_MAX:
        return u.sum(dims, dtype=torch.int16).to(torch.int64)
    first = min(dims)
    chunk = _int16_chunk(n)
    if chunk is not None and tuple(dims) == tuple(range(first, mask.dim())):
        lead = tuple(mask.shape[:first])
        return u.reshape(lead + (n // chunk, chunk)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int64)
    return u.sum(dims, dtype=torch.int32 if n < 2 ** 31 else torch.int64).to(torch.int64)


class _NonZeros:
    """Which values of each trace are non-zero (``x.bool()``: exactly ``x != 0``, NaN included),
    and how many per (step, sample): every trace is checked and read once per count, however many
    rows use it (Q, K and V read the same spikes; a neuron's spikes feed the next synapse)."""

    def __init__(self, traces: Mapping[str, Trace], steps: int, shapes: Mapping[str, tuple], positional):
        """``shapes``: every node's per-step shape; ``positional``: the traces convolutions need per
        spatial position (``counters.GraphPlan``)."""
        self.traces, self.steps, self.shapes, self.positional = traces, steps, shapes, positional
        self.samples: Optional[int] = None
        self._masks: dict = {}
        self._counts: dict = {}
        self._per_position: dict = {}

    def mask(self, name: str, user: str) -> torch.Tensor:
        """``(T, B, *shape)`` bool: where ``traces[name]`` is non-zero."""
        m = self._masks.get(name)
        if m is None:
            m = self._masks[name] = _nonzero(self.traces, name, self.shapes[name], self.steps, self.samples, user)
            self.samples = m.shape[1]
        return m

    def count(self, name: str, user: str) -> torch.Tensor:
        """``(T, B)`` int64: non-zero values of ``traces[name]`` per step and sample."""
        c = self._counts.get(name)
        if c is None:
            if name in self.positional:  # a convolution needs it per position: one pass for both
                p = self.per_position(name, user)
                c = p.sum(tuple(range(2, p.dim())))
            else:
                m = self.mask(name, user)
                c = _count_true(m, tuple(range(2, m.dim())))
            self._counts[name] = c
        return c

    def per_position(self, name: str, user: str) -> torch.Tensor:
        """``(T, B, *spatial)`` int64: non-zero values over the channel axis (axis 0 of a node's
        ``(C, *spatial)`` shape) at every position."""
        c = self._per_position.get(name)
        if c is None:
            c = self._per_position[name] = _count_true(self.mask(name, user), (2,))
        return c


def _nonzero(traces: Mapping[str, Trace], name: str, shape: tuple, steps: int, samples: Optional[int],
             user: str) -> torch.Tensor:
    if name not in traces:
        raise CountError(f"no trace of node {name!r} (needed to count {user!r}); record every node of "
                         f"energy.counters.needed_traces(graph)")
    x = traces[name]
    x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    want = (steps, samples if samples is not None else (x.shape[1] if x.dim() > 1 else -1)) + tuple(shape)
    if tuple(x.shape) != want:
        raise CountError(f"trace of node {name!r} has shape {tuple(x.shape)}, expected (T, B, *shape) = {want}")
    return x if x.dtype == torch.bool else x.bool()
