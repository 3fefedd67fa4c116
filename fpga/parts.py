"""FPGA parts as the resource estimates see them: a flat, frozen view of an ``fpga`` target spec
(``step_deploy/targets/{zcu102,zcu104,vcu118,pynq-z2}.yaml`` or a user YAML/JSON file, which may
``extends`` a built-in part and override a few counts).

    part = load_part("zcu104")              # or load_part("my_board.yaml")
    part.dsp, part.bram36, part.uram, part.lut, part.ff, part.hls_part
    part.sources["dsp"]                     # where the number comes from (value, confidence, source)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from step_deploy.errors import StepDeployError
from step_deploy.targets.spec import BUILTIN, TargetSpec, load_target

#: FpgaPart field -> spec key (the resources the estimates are sized against)
RESOURCE_KEYS = {"dsp": "dsp_slices", "bram36": "bram36_blocks", "uram": "uram_blocks", "lut": "luts",
                 "ff": "flip_flops"}
#: every FpgaPart field read from the spec
SPEC_KEYS = {"board": "board", "part": "part", "hls_part": "hls_part", "family": "family", **RESOURCE_KEYS}
RESOURCES = tuple(RESOURCE_KEYS)
FPGA_BUILTIN = tuple(n for n in BUILTIN if not n.startswith("loihi"))


class PartError(StepDeployError, ValueError):
    """A part name or file that is not an FPGA part (another device kind, an unknown name)."""


@dataclass(frozen=True)
class FpgaPart:
    """One FPGA device: its names and the resource counts of the whole device.

    ``name`` is the spec's name (``zcu104``), ``part`` the device (``XCZU7EV``), ``hls_part`` the
    full part string Vitis HLS takes (``xczu7ev-ffvc1156-2-e``); ``sources`` maps each field to
    ``"value unit (confidence; source)"``."""

    name: str
    part: str
    hls_part: str
    family: str
    dsp: int
    bram36: int
    uram: int
    lut: int
    ff: int
    board: str = ""
    path: str = ""
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def resources(self) -> dict[str, int]:
        """``{resource: count}`` in the order of ``RESOURCES``."""
        return {r: getattr(self, r) for r in RESOURCES}

    def as_dict(self) -> dict:
        return {"name": self.name, "board": self.board, "part": self.part, "hls_part": self.hls_part,
                "family": self.family, **self.resources(), "sources": dict(self.sources)}


def part_from_spec(spec: TargetSpec) -> FpgaPart:
    """The ``FpgaPart`` of an already loaded ``fpga`` target spec."""
    if spec.kind != "fpga":
        raise PartError(f"{spec.path or spec.name}: target {spec.name!r} is of kind {spec.kind!r}, not an FPGA part; "
                        f"use one of {', '.join(FPGA_BUILTIN)} or a YAML file with 'kind: fpga' "
                        "(or 'extends' an FPGA part)")
    values = {f: spec.limit(k) for f, k in SPEC_KEYS.items()}
    sources = MappingProxyType({f: spec.cite(k) for f, k in SPEC_KEYS.items()})
    return FpgaPart(name=spec.name, path=spec.path, sources=sources, **values)


def load_part(name_or_path: "str | Path | FpgaPart") -> FpgaPart:
    """Load a built-in FPGA part (``zcu102``, ``zcu104``, ``vcu118``, ``pynq-z2``) or a user spec
    file of kind ``fpga``. Raises ``PartError`` for a spec of another kind (naming the file and
    its kind) and ``TargetSpecError`` for a missing or invalid file."""
    if isinstance(name_or_path, FpgaPart):
        return name_or_path
    return part_from_spec(load_target(name_or_path))


__all__ = ["FpgaPart", "PartError", "load_part", "part_from_spec", "RESOURCES", "RESOURCE_KEYS", "FPGA_BUILTIN"]
