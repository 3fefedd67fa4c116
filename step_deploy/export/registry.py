"""Deployment targets as plug-ins (in the manner of hls4ml's registered backends and flows).

A target is one module with one :class:`Target` subclass, registered by name with
:func:`register_target`. It declares

- ``name`` and ``description`` (shown by ``step-export --help``),
- its pass pipeline (``pipeline``: the name ``step_deploy.passes.run_pipeline`` runs),
- its command-line options (``options``: :class:`TargetOption` entries; the CLI puts each
  target's options in its own argument group and refuses an option given for another target),
- ``validate(options)``: argument checks that run before any work,
- ``run(prep, out, options, force)``: lowering, the artifact writer and the self-check; it returns a
  :class:`TargetResult` whose exit code the CLI returns (0 ok, 1 parity/constraint failure).

The CLI and any other front end talk only to this registry: a new target is one module that
registers itself (and is imported by ``step_deploy/export/__init__.py``); nothing else changes.
Float targets (nir, onnx) share ``float_target.FloatTarget``: they implement only ``write`` (the
artifact) and ``self_check`` (one function returning the check dict). Targets that are announced but not built yet are listed
in ``PLANNED`` with the sentence the CLI prints."""
from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from step_deploy.errors import UsageError

#: targets that are announced but not built yet: name -> what the user is told.
PLANNED: dict[str, str] = {}


@dataclass(frozen=True)
class TargetOption:
    """One command-line option of a target: ``flags`` and the keyword arguments of
    ``argparse.add_argument`` (without ``default``: an option the user did not give is absent,
    which is how the CLI tells "given for the wrong target" apart from "not given")."""

    flags: tuple[str, ...]
    kwargs: dict = field(default_factory=dict, hash=False)
    default: Any = None

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[-1].lstrip("-").replace("-", "_")

    @property
    def flag(self) -> str:
        return self.flags[-1]


@dataclass(frozen=True)
class TargetResult:
    """What a target run produced: the summary written to ``summary.json`` (None for a run that
    writes nothing, e.g. ``--check-only``), the exit code, the lines to print on stdout and the
    error lines for stderr."""

    exit_code: int
    summary: Optional[dict] = None
    lines: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


class Target(ABC):
    """Base class of a deployment target; subclasses set the class attributes and implement
    :meth:`run`. Instances are stateless."""

    name: ClassVar[str]
    description: ClassVar[str]
    pipeline: ClassVar[str]  # a pipeline name for step_deploy.passes.run_pipeline
    options: ClassVar[tuple[TargetOption, ...]] = ()
    writes_output: ClassVar[bool] = True
    default_samples: ClassVar[Optional[int]] = 8  # self-check samples when --samples is not given

    def add_arguments(self, group, taken: set[str]) -> None:
        """Add this target's options to ``group``; a flag another target already added is shared."""
        for opt in self.options:
            if opt.flag in taken:
                continue
            group.add_argument(*opt.flags, default=argparse.SUPPRESS, **opt.kwargs)
            taken.add(opt.flag)

    def options_from_args(self, args: argparse.Namespace) -> dict:
        """This target's options as a dict (the declared default for an option not given)."""
        return {o.dest: getattr(args, o.dest, o.default) for o in self.options}

    def writes_output_with(self, options: dict) -> bool:
        """Whether a run with these options writes an output directory (``--check-only`` does not)."""
        return self.writes_output

    def validate(self, options: dict) -> None:
        """Raise :class:`UsageError` for options that cannot work, before any work starts."""

    @abstractmethod
    def run(self, prep, out, options: dict, force: bool = False) -> TargetResult:
        """Lower ``prep.graph``, write the artifacts into ``out`` (atomically) and self-check."""

    def pass_names(self) -> tuple[str, ...]:
        from step_deploy.passes import PIPELINES

        return tuple(PIPELINES.get(self.pipeline, ()))


_TARGETS: dict[str, Target] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    name = cls.name
    if name in _TARGETS and type(_TARGETS[name]) is not cls:
        raise ValueError(f"target {name!r} is registered twice ({type(_TARGETS[name]).__name__}, {cls.__name__})")
    _TARGETS[name] = cls()
    return cls


def registered_targets() -> dict[str, Target]:
    """Registered targets by name, in registration order."""
    return dict(_TARGETS)


def get_target(name: str) -> Target:
    """The registered target ``name``; a :class:`UsageError` for a planned or unknown one."""
    if name in _TARGETS:
        return _TARGETS[name]
    available = ", ".join(_TARGETS)
    if name in PLANNED:
        raise UsageError(f"{PLANNED[name]}; available now: {available}")
    raise UsageError(f"unknown target {name!r}; available: {available}")


def option_owners() -> dict[str, list[str]]:
    """For every target option's dest: the targets that declare it."""
    owners: dict[str, list[str]] = {}
    for t in _TARGETS.values():
        for o in t.options:
            owners.setdefault(o.dest, []).append(t.name)
    return owners


def option_flags() -> dict[str, str]:
    return {o.dest: o.flag for t in _TARGETS.values() for o in t.options}


def check_options_apply(target: Target, args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` when an option of another target was given (argparse leaves an
    option the user did not give absent from ``args``)."""
    mine = {o.dest for o in target.options}
    flags = option_flags()
    wrong = [(dest, owners) for dest, owners in option_owners().items() if dest not in mine and hasattr(args, dest)]
    if wrong:
        parts = [f"{flags[d]} applies to --target {' / '.join(o)} only" for d, o in wrong]
        raise UsageError(f"{'; '.join(parts)}, not to --target {target.name}: remove "
                         f"{'it' if len(wrong) == 1 else 'them'} or choose that target")
