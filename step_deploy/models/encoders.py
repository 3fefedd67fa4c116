"""Input encoders producing STEP's time-major ``(T*B, ...)`` layout.

Row ``t*B + b`` of the output holds time step ``t`` of sample ``b``.

* ``DirectEncoder``: repeat the analog input at every step (STEP/BrainCog ``direct``).
* ``RateEncoder``: Bernoulli spikes with probability ``clamp(x, 0, 1)`` drawn from
  a seeded generator.  In eval mode every call restarts from ``seed`` so that
  inference is deterministic; in train mode the generator runs on.
* ``EventEncoder``: event frames ``(B, T, C, H, W)`` permuted to ``(T*B, C, H, W)``
  (what BrainCog's Encoder does for DVS input).
* ``SequenceEncoder``: an image read row by row, ``(B, T, W)`` with ``T == H`` (``digits-seq``),
  -> ``(T*B, 1, H, W)`` frames in which frame ``t`` holds only row ``t``, at its place, and zeros
  elsewhere. The network sees one row per step, so a classifier must carry what it saw across
  steps (membranes, or attention across steps such as STAtten's blocks).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DirectEncoder", "RateEncoder", "EventEncoder", "SequenceEncoder", "ENCODERS", "make_encoder"]


class DirectEncoder(nn.Module):
    """``(B, ...)`` -> ``(T*B, ...)`` by repeating the input ``step`` times."""

    kind = "direct"

    def __init__(self, step: int):
        super().__init__()
        self.step = int(step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] * self.step, dim=0)

    def extra_repr(self) -> str:
        return f"step={self.step}"


class RateEncoder(nn.Module):
    """``(B, ...)`` -> ``(T*B, ...)`` Bernoulli spikes, ``P(spike) = clamp(x, 0, 1)``."""

    kind = "rate"

    def __init__(self, step: int, seed: int = 0):
        super().__init__()
        self.step = int(step)
        self.seed = int(seed)
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(self.seed)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random stream (from ``seed`` or the constructor's seed)."""
        self._gen.manual_seed(self.seed if seed is None else int(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.clamp(0.0, 1.0)
        if self.training:
            gen = self._gen
        else:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(self.seed)
        u = torch.rand((self.step, *x.shape), generator=gen, dtype=p.dtype)
        return (u.to(x.device) < p.unsqueeze(0)).to(x.dtype).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"step={self.step}, seed={self.seed}"


class EventEncoder(nn.Module):
    """``(B, T, ...)`` event frames -> ``(T*B, ...)`` (time-major); checks ``T == step``."""

    kind = "events"

    def __init__(self, step: int):
        super().__init__()
        self.step = int(step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.step:
            raise ValueError(
                f"EventEncoder expects (B, T={self.step}, ...) input, got {tuple(x.shape)}"
            )
        return x.transpose(0, 1).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"step={self.step}"


class SequenceEncoder(nn.Module):
    """``(B, T, W)`` rows -> ``(T*B, 1, T, W)`` frames: ``frame[t, b, 0, r, :] = x[b, t, :]`` if
    ``r == t``, else 0 (row ``t`` revealed at step ``t``, nothing else)."""

    kind = "sequence"

    def __init__(self, step: int):
        super().__init__()
        self.step = int(step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.step:
            raise ValueError(
                f"SequenceEncoder expects (B, T={self.step}, features) input, got {tuple(x.shape)}"
            )
        B, T, W = x.shape
        frames = x.new_zeros(T, B, 1, T, W)
        idx = torch.arange(T)
        frames[idx, :, 0, idx, :] = x.transpose(0, 1)
        return frames.flatten(0, 1)

    def extra_repr(self) -> str:
        return f"step={self.step}"


ENCODERS = {"direct": DirectEncoder, "rate": RateEncoder, "events": EventEncoder, "sequence": SequenceEncoder}
_ALIASES = {"event": "events", "dvs": "events", "poisson": "rate"}


def make_encoder(name: str, step: int, seed: int = 0) -> nn.Module:
    """Build an encoder by name: ``direct``, ``rate``, ``events`` or ``sequence``."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in ENCODERS:
        raise ValueError(f"unknown encoding {name!r}; known: {sorted(ENCODERS)}")
    if key == "rate":
        return RateEncoder(step, seed)
    return ENCODERS[key](step)
