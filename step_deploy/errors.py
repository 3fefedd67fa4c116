"""The error types step-deploy raises for problems a user can fix (bad checkpoint, unsupported
layer, output path that is not ours, model too big for the target, ...).

The command-line tools catch exactly these (and ``ir.IRError``, which the IR defines itself
because the IR imports nothing else): any other exception is a bug in step-deploy and is shown
as one, with its traceback, never disguised as a user error. Every message says what is wrong,
where (file, node, option) and what to do."""
from __future__ import annotations


class StepDeployError(Exception):
    """Base class of every user-facing error."""


class UsageError(StepDeployError, ValueError):
    """A command-line argument or API argument that cannot work (``--samples 0``, a flag that
    does not apply to the chosen target, ...)."""


class OutputError(StepDeployError, OSError):
    """An output path step-deploy refuses to write (it would replace something that is not its
    own) or could not write."""


class DataError(StepDeployError):
    """A data set that is missing or unusable (on-disk data not found under ``--root``, ...)."""


def require_counts(**options) -> None:
    """Raise :class:`UsageError` for the first count option below 1 (``None`` means "not given"):
    ``require_counts(samples=o.samples, batch_size=o.batch_size)`` -> ``--samples must be at least 1, got 0``."""
    for name, value in options.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def require_checkpoint_file(ckpt) -> None:
    """Raise :class:`UsageError` unless ``ckpt`` is an existing file (a directory or a missing path
    is named as such), before a command does any work."""
    from pathlib import Path
    p = Path(str(ckpt))
    if not p.is_file():
        raise UsageError(f"checkpoint {ckpt}: " + ("is a directory, expected a checkpoint file" if p.is_dir()
                                                    else "no such file"))


__all__ = ["StepDeployError", "UsageError", "OutputError", "DataError", "require_counts", "require_checkpoint_file"]
