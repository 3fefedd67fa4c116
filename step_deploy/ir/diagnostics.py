"""Diagnostics: what a check found, where, against which limit, and what to do about it.

Used by the IR verifier and by the hardware constraint checker. Checks never raise on the first
problem; they return a list of these so a user sees everything at once."""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Any, Optional


@dataclass(frozen=True)
class Diagnostic:
    rule: str
    node: Optional[str]
    message: str
    value: Any = None
    limit: Any = None
    hint: str = ""
    severity: str = "error"  # "error" | "warning" | "info"

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"[{self.node}] " if self.node else ""
        lim = f" (value {self.value}, limit {self.limit})" if self.limit is not None else ""
        hint = f" -> {self.hint}" if self.hint else ""
        return f"{self.severity}: {self.rule}: {where}{self.message}{lim}{hint}"


def errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.severity == "error"]


class IRError(ValueError):
    """Raised when an operation needs a valid graph and the verifier found errors."""

    def __init__(self, diags: list[Diagnostic]):
        self.diagnostics = list(diags)
        super().__init__("invalid IR graph:\n" + "\n".join(f"  {d}" for d in self.diagnostics))
