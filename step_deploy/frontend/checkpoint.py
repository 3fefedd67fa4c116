"""Checkpoint loading and saving, safely.

Three formats are read, always with ``torch.load(weights_only=True)``:

* **own**: ``{'format': 'step-deploy-checkpoint', 'format_version': 1, 'arch', 'config',
  'state_dict', 'metadata'}`` (plain containers and tensors only);
* **STEP / timm** (``CheckpointSaver``): ``{'arch': 'spikformer_cifar', 'state_dict', 'args':
  argparse.Namespace, 'epoch', 'optimizer', 'version', 'amp_scaler', 'metric'}``; the Namespace
  is the one non-tensor type on the allow-list;
* **bare state_dict**, with the architecture given explicitly (``arch=`` / ``--arch``).

A file that would need any other class (i.e. code execution) is refused with a message naming
the class; a file that is no checkpoint at all (an image, a text file, a zip without torch's
``data.pkl``, a plain pickle) is called that, decided from its bytes (:func:`sniff_checkpoint_file`,
:func:`pickle_globals`; nothing is unpickled). Every failure is a :class:`CheckpointError` whose
message says what is wrong and what to do; nothing deep inside torch leaks out.

For STEP checkpoints the model is rebuilt as STEP's code really builds it
(``models.plan_from_step_args``: per-neuron tau, T, layer swaps); what differs from the options is
listed in ``CheckpointInfo.metadata['step_quirks']`` as plain sentences, and options STEP itself
cannot run consistently, or that are not supported yet, are refused naming the option.
"""
from __future__ import annotations

from step_deploy.errors import StepDeployError

import argparse
import math
import os
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
    except Exception as e:  # garbage bytes make the unpickler fail in arbitrary ways (KeyError, ValueError...)
        raise _load_failure(path, e) from None


def _load_failure(path: Path, exc: Exception) -> CheckpointError:
    """Why ``torch.load`` failed, decided from the file itself (never by running its pickle)."""
    if isinstance(exc, OSError) and exc.errno is not None:  # permission denied, I/O error, ...
        return CheckpointError(f"{path}: cannot be read ({exc.strerror}); check the file's permissions")
    kind, pickles = sniff_checkpoint_file(path)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if kind == "truncated":
        return CheckpointError(f"{path}: cannot be read ({first}): the file is truncated or corrupt; copy it again")
    if kind not in ("torch", "pickle"):
        return CheckpointError(f"{path}: not a PyTorch checkpoint: it is {kind}. Pass the .ckpt / .pth.tar file "
                               f"that training wrote (torch.save).")
    culprit = _unsafe_global(str(exc), [g for p in pickles for g in pickle_globals(p)])
    if culprit:
        return CheckpointError(
            f"{path}: refused: loading it would execute code (it references {culprit}). step-deploy only "
            f"loads tensors, plain containers and argparse.Namespace. Re-save the checkpoint as a plain "
            f"state_dict (torch.save(model.state_dict(), ...)) and pass --arch.")
    if kind == "pickle":
        return CheckpointError(f"{path}: not a PyTorch checkpoint: a plain pickle file, not one written by "
                               f"torch.save. Save it with torch.save(...).")
    return CheckpointError(f"{path}: cannot be read ({first}): the file is truncated or corrupt; copy it again")


#: file signatures of things people pass by mistake
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"BZh", "a bzip2 archive"),
               (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"), (b"\x7fELF", "an executable"))


def sniff_checkpoint_file(path: Path) -> tuple[str, list[bytes]]:
    """``(kind, pickle streams)``: kind is ``'torch'`` (torch.save zip or legacy file),
    ``'pickle'`` (a plain pickle), ``'truncated'``, or a description (``'a PNG image'``, ``'a text
    file'``, ...). Reads bytes only; nothing is unpickled."""
    import zipfile

    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not names:
                    return "a zip archive without torch's data.pkl (not written by torch.save)", []
                return "torch", [z.read(names[0])]
        except (zipfile.BadZipFile, OSError, KeyError, EOFError):
            return "truncated", []
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return what, []
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:  # pickle PROTO opcode
        streams, rest = [], data
        for _ in range(4):  # legacy torch.save: magic number, protocol, sys info, then the object
            end = _pickle_end(rest)
            if end is None:
                streams.append(rest)
                break
            streams.append(rest[:end])
            rest = rest[end:]
            if not rest or rest[0] != 0x80:
                break
        legacy = len(streams) > 1 and streams[0].startswith(b"\x80\x02\x8a\x0a")  # torch's magic long
        return ("torch" if legacy else "pickle"), streams
    try:
        text = data[:4096].decode("utf-8")
        if all(c.isprintable() or c in "\r\n\t" for c in text):
            return "a text file", []
    except UnicodeDecodeError:
        pass
    return "binary data of an unknown format", []


def _pickle_end(data: bytes) -> int | None:
    import io
    import pickletools

    try:
        for op, _, pos in pickletools.genops(io.BytesIO(data)):
            if op.name == "STOP":
                return pos + 1
    except Exception:
        return None
    return None


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def pickle_globals(stream: bytes) -> list[str]:
    """``module.name`` of every class/function a pickle stream references (GLOBAL and
    STACK_GLOBAL opcodes), read with :mod:`pickletools` without executing anything."""
    import io
    import pickletools

    found, recent, memo = [], [], {}
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(stream)):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name in _STRING_OPS:
                recent.append(arg)
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = recent[-1] if recent else None
            elif op.name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(arg))
            elif op.name == "STACK_GLOBAL" and len(recent) >= 2:
                found.append(f"{recent[-2]}.{recent[-1]}")
    except Exception:  # a damaged stream: what was read so far
        pass
    return found


# what torch's weights_only loader (plus argparse.Namespace) accepts: never reported as the culprit
_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "argparse.Namespace", "_codecs.encode", "builtins.set",
                  "builtins.frozenset", "builtins.bytearray", "builtins.slice", "builtins.complex")


def _unsafe_global(message: str, found: list[str]) -> Optional[str]:
    """The referenced global torch refused: named in its message, else the first one found in the
    pickle that is not on the allow-list."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return m.group(1)
    return next((g for g in found if not g.startswith(_SAFE_PREFIXES)), None)


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
        # the stored config belongs to the stored arch; an --arch naming another one starts from its own config
        config = dict(obj.get("config") or {}) if arch_name == obj.get("arch") else {}
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
            try:
                plan = models.plan_from_step_args(step_arch, args)
            except models.StepArgsError as e:
                raise CheckpointError(f"{path}: {e}") from None
            family, config = plan.family, dict(plan.kwargs)
            metadata["step_quirks"] = list(plan.quirks)
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
    except (ValueError, TypeError) as e:  # a config key the architecture does not take, or a bad value
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
        from step_deploy.atomic import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600; a checkpoint is an ordinary file
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
