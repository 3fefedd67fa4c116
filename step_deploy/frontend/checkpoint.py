"""Checkpoint loading and saving, safely.

Three formats are read, always with ``torch.load(weights_only=True)``:

* **own**: ``{'format': 'step-deploy-checkpoint', 'format_version': 1, 'arch', 'config',
  'state_dict', 'metadata'}`` (plain containers and tensors only);
* **STEP / timm** (``CheckpointSaver``): ``{'arch': 'spikformer_cifar', 'state_dict', 'args':
  argparse.Namespace, 'epoch', 'optimizer', 'version', 'amp_scaler', 'metric'}``; the Namespace
  is the one non-tensor type on the allow-list;
* **bare state_dict**, with the architecture given explicitly (``arch=`` / ``--arch``).

A file that would need any other class (i.e. code execution) is refused with a message naming
the class. Every failure is a :class:`CheckpointError` whose message says what is wrong and what
to do; nothing deep inside torch leaks out.
"""
from __future__ import annotations

from step_deploy.errors import StepDeployError

import argparse
import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

FORMAT_NAME = "step-deploy-checkpoint"
FORMAT_VERSION = 1
#: the only non-tensor, non-container types a checkpoint may hold
SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(StepDeployError, ValueError):
    """A checkpoint could not be used; the message says why and what to do."""


@dataclass
class CheckpointInfo:
    path: str
    format: str  # "step-deploy" | "step" | "state_dict"
    arch: str
    config: dict
    metadata: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "arch": self.arch, "config": self.config,
                "metadata": self.metadata}


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file (.ckpt / .pth.tar)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            culprit = msg.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in msg else "a non-allow-listed class"
            raise CheckpointError(
                f"{path}: refused: loading it would execute code (it references {culprit}). step-deploy only "
                f"loads tensors, plain containers and argparse.Namespace. Re-save the checkpoint as a plain "
                f"state_dict (torch.save(model.state_dict(), ...)) and pass --arch.") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({msg.splitlines()[0]})") from None
    except Exception as e:  # garbage bytes make the unpickler fail in arbitrary ways (KeyError, ValueError...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = "the file is truncated or corrupt; copy it again" if any(
            k in first for k in ("central directory", "EOF", "truncated", "failed finding", "zip")) else \
            "it is not a PyTorch checkpoint"
        raise CheckpointError(f"{path}: cannot be read ({first}): {hint}") from None


def _namespace_to_dict(args: Any) -> dict:
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, dict):
        return dict(args)
    return {}


def _check_finite(state_dict: dict, path: Path) -> None:
    bad = [k for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN/Inf values ({shown}); the training run "
                              f"diverged or the file is corrupt. Use an earlier checkpoint.")


def _load_state(model: torch.nn.Module, state_dict: dict, path: Path, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and torch.is_tensor(state_dict[k])
                  and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:4])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
    if problems:
        raise CheckpointError(f"{path}: does not fit architecture {arch!r}: " + "; ".join(problems)
                              + ". Check --arch and the config (embed dim, depth, heads, image size, classes).")
    model.load_state_dict(state_dict, strict=True)


def _strip_prefix(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_checkpoint(path, arch: Optional[str] = None, **overrides):
    """Load ``path`` into a reference model in eval mode -> ``(model, CheckpointInfo)``."""
    from step_deploy import models

    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict or state_dict")

    if obj.get("format") == FORMAT_NAME:
        if obj.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: step-deploy checkpoint format_version {obj.get('format_version')!r}; "
                                  f"this version reads {FORMAT_VERSION}. Upgrade step-deploy.")
        fmt, arch_name = "step-deploy", arch or obj["arch"]
        config = dict(obj.get("config") or {})
        config.update(overrides)
        state, metadata = obj["state_dict"], dict(obj.get("metadata") or {})
        build = lambda: models.build_model(arch_name, **config)  # noqa: E731
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        fmt, state = "step", obj["state_dict"]
        args = _namespace_to_dict(obj.get("args"))
        step_arch = obj.get("arch") or args.get("model")
        metadata = {"epoch": obj.get("epoch"), "metric": obj.get("metric"), "step_arch": step_arch,
                    "args": {k: v for k, v in args.items() if isinstance(v, (int, float, str, bool, type(None)))}}
        if arch is not None:
            arch_name, config = arch, dict(overrides)
            build = lambda: models.build_model(arch_name, **config)  # noqa: E731
        else:
            if step_arch not in models.STEP_ARCH_NAMES:
                raise CheckpointError(f"{path}: unknown STEP architecture {step_arch!r}; supported: "
                                      f"{sorted(models.STEP_ARCH_NAMES)}. Pass --arch with one of {sorted(models.CONFIGS)}.")
            family, config = models.config_from_step_args(step_arch, args)
            config.update(overrides)
            arch_name = family
            build = lambda: models.build_family(family, **config)  # noqa: E731
    elif all(isinstance(k, str) for k in obj) and any(torch.is_tensor(v) for v in obj.values()):
        fmt, state, metadata = "state_dict", obj, {}
        if arch is None:
            raise CheckpointError(f"{path}: is a bare state_dict with no architecture; pass --arch "
                                  f"(one of {sorted(models.CONFIGS)})")
        arch_name, config = arch, dict(overrides)
        build = lambda: models.build_model(arch_name, **config)  # noqa: E731
    else:
        raise CheckpointError(f"{path}: not a checkpoint: expected a step-deploy checkpoint, a STEP/timm checkpoint "
                              f"with 'state_dict', or a state_dict; found keys {sorted(map(str, obj))[:6]}")

    state = _strip_prefix(dict(state))
    _check_finite(state, path)
    try:
        model = build()
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _load_state(model, state, path, arch_name)
    model.eval()
    info = CheckpointInfo(str(path), fmt, getattr(model, "arch", arch_name), dict(getattr(model, "config", config)),
                          metadata)
    return model, info


def save_checkpoint(model: torch.nn.Module, path, metadata: Optional[dict] = None) -> Path:
    """Write an own-format checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "arch": model.arch,
           "config": dict(model.config), "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
           "metadata": _plain(metadata or {})}
    fd, tmp = tempfile.mkstemp(prefix=f"{path.stem}_partial_", suffix=".ckpt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _plain(obj):
    """Metadata restricted to what weights_only loading accepts (JSON-like values)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)
