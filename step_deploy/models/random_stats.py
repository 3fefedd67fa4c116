"""Random-weight models that behave like trained ones for parity tests and size estimates: a freshly
built model has BatchNorm mean 0 / var 1 and barely spikes, so give every BatchNorm non-trivial
statistics (deterministic per seed)."""
from __future__ import annotations

import torch


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Set every BatchNorm's running mean/var and affine parameters to seeded random values; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.2)
    return model


__all__ = ["randomize_batchnorm"]
