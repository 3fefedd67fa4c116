"""One training epoch, shared by the float training (``training``) and the on-grid fine-tuning (``qat``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def one_epoch(model: torch.nn.Module, loader, opt, sched, label_smoothing: float = 0.0) -> float:
    """One pass over ``loader`` (cross-entropy, one optimizer and scheduler step per batch) in the
    model's current mode; returns the mean training loss."""
    total, n = 0.0, 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(y)
        n += len(y)
    return total / max(n, 1)
