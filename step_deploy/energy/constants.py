"""The energy constants as data: ``constants.yaml`` (bundled) or a user's file of the same layout.

Every value carries its unit, source and confidence; the models look each one up by a dotted key
(``'horowitz.int_add.8'``) and a missing or malformed entry is a :class:`ConstantError` that names
the key and the file, never a ``KeyError`` from inside a model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from step_deploy.errors import StepDeployError

BUNDLED = Path(__file__).with_name("constants.yaml")


class ConstantError(StepDeployError, ValueError):
    """An energy constant is missing or malformed (names the key and the file)."""


@dataclass(frozen=True)
class Constant:
    """One number an energy model uses: ``value`` in ``unit``, with its ``source`` and ``confidence``."""

    key: str
    value: float
    unit: str
    source: str
    confidence: str

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source, "confidence": self.confidence}


class Constants:
    """The constants of one file; :meth:`get` records every key used (``used``) for the report."""

    def __init__(self, data: dict, path: str):
        if not isinstance(data, dict):
            raise ConstantError(f"{path}: expected a mapping of models to constants, got {type(data).__name__}")
        self.data, self.path = data, path
        self.used: dict[str, Constant] = {}

    def has(self, key: str) -> bool:
        try:
            self._entry(key)
            return True
        except ConstantError:
            return False

    def _entry(self, key: str):
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict):
                raise ConstantError(f"energy constant {key!r} is missing from {self.path}")
            if part not in node:
                alt = int(part) if part.isdigit() else None
                if alt is None or alt not in node:
                    raise ConstantError(f"energy constant {key!r} is missing from {self.path}: add it "
                                        f"(value, unit, source, confidence) or choose another model")
                part = alt
            node = node[part]
        return node

    def get(self, key: str) -> float:
        """The value of ``key``; raises :class:`ConstantError` when missing, not a number, or unsourced."""
        e = self._entry(key)
        if not isinstance(e, dict) or "value" not in e:
            raise ConstantError(f"energy constant {key!r} in {self.path} has no 'value'")
        v = e["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
            raise ConstantError(f"energy constant {key!r} in {self.path} = {v!r}: give a non-negative number")
        if not e.get("source"):
            raise ConstantError(f"energy constant {key!r} in {self.path} has no 'source': every number needs one")
        self.used[key] = Constant(key, float(v), str(e.get("unit", "")), str(e["source"]),
                                  str(e.get("confidence", "unstated")))
        return float(v)

    def widths(self, key: str) -> list[int]:
        """The tabulated widths (or sizes) under ``key`` (e.g. ``'horowitz.int_add'`` -> [8, 16, 32])."""
        e = self._entry(key)
        if not isinstance(e, dict):
            raise ConstantError(f"energy constant table {key!r} in {self.path} is not a table")
        return sorted(int(k) for k in e if str(k).isdigit())

    def at_least(self, key: str, width: int) -> tuple[float, int]:
        """``(value, tabulated width)``: the entry of table ``key`` at the smallest width >= ``width``
        (conservative). Raises when ``width`` exceeds every entry."""
        ws = self.widths(key)
        fit = [w for w in ws if w >= width]
        if not fit:
            raise ConstantError(f"energy constant table {key!r} in {self.path} stops at {ws[-1] if ws else 'nothing'}; "
                                f"an operation of {width} bits needs an entry >= {width}")
        return self.get(f"{key}.{fit[0]}"), fit[0]

    def description(self, model: str) -> str:
        d = self.data.get(model, {})
        return " ".join(str(d.get("description", "")).split()) if isinstance(d, dict) else ""


def load_constants(path: Optional[Union[str, Path]] = None) -> Constants:
    """The bundled constants, or the user's file ``path`` (a clear error when unreadable)."""
    p = Path(path) if path is not None else BUNDLED
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConstantError(f"cannot read the energy constants file {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConstantError(f"the energy constants file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    return Constants(data, str(p) if path is not None else "the bundled step_deploy/energy/constants.yaml")


__all__ = ["BUNDLED", "Constant", "ConstantError", "Constants", "load_constants"]
