"""Neuromorphic mesh hardware as data: geometry and per-event energy and latency, every number with
its source and confidence.

A hardware file (YAML) has ``name``, ``description``, optional ``extends`` (a bundled name or a path
whose entries it overrides), and three sections:

* ``geometry``: ``mesh_width``, ``mesh_height`` (tiles), ``cores_per_tile``, ``cores_per_chip``,
  ``chips``; each ``{value, unit, source, confidence[, note]}`` with the unit the schema names;
* ``events``: per event kind (``EVENTS``) ``{energy_pj, latency_ns, source, confidence[, note]}``;
  the kinds in ``OPTIONAL_EVENTS`` (``embedded_op``) may be left out (``MeshHardware.extra_events``
  holds those given; a simulator that needs a missing one refuses, naming it);
* ``barrier_sync``: ``{latency_ns: {chip count: ns, ...}, source, confidence[, note]}``.

A value may be ``null`` (not published) only with confidence ``to-verify``; :meth:`MeshHardware.require`
raises :class:`HardwareError` naming the key and file when a value the simulator needs is null.
Loading reports every problem of a file at once, one line each, naming the key."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Union

import yaml

from step_deploy.errors import StepDeployError
from step_deploy.targets.spec import check_provenance

ARCH_DIR = Path(__file__).resolve().parent / "arch"
BUNDLED = ("loihi1", "loihi2", "loihi2-assumed")

#: geometry key -> (unit the file must state, what it is)
GEOMETRY: dict[str, tuple[str, str]] = {
    "mesh_width": ("tiles", "tiles east-west in one chip's mesh"),
    "mesh_height": ("tiles", "tiles north-south in one chip's mesh"),
    "cores_per_tile": ("cores", "neuro-cores per tile (one router)"),
    "cores_per_chip": ("cores", "neuro-cores per chip"),
    "chips": ("chips", "chips in the system"),
}
#: event kind -> what one event is
EVENTS: dict[str, str] = {
    "synop_dense": "one synaptic operation of a dense connection",
    "synop_sparse": "one synaptic operation of a sparse connection",
    "synop_conv": "one synaptic operation of a convolutional (shared-weight) connection",
    "neuron_access": "reading and writing one neuron's state, per neuron per step",
    "neuron_update": "one neuron update, per neuron per step",
    "spike_out": "one spike emitted by a neuron",
    "axon_in": "one spike message arriving at a core",
    "axon_out": "one spike message sent to one destination core",
    "hop_east_west": "one packet crossing one tile east or west",
    "hop_north_south": "one packet crossing one tile north or south",
}
#: event kinds a file may give (a simulator that needs one refuses a file without it, naming it)
OPTIONAL_EVENTS: dict[str, str] = {
    "embedded_op": "one operation (AND-popcount accumulate) of a product of two live tensors on an embedded core",
}
SYNOP_KINDS = ("dense", "sparse", "conv")
_EVENT_FIELDS = ("energy_pj", "latency_ns", "source", "confidence", "note")
_GEOMETRY_FIELDS = ("value", "unit", "source", "confidence", "note")
_SYNC_FIELDS = ("latency_ns", "source", "confidence", "note")
_TOP = ("name", "description", "extends", "geometry", "events", "barrier_sync")


class HardwareError(StepDeployError, ValueError):
    """A hardware file is unreadable or invalid, or a value the simulator needs is null or missing.
    The message names the key and the file."""


@dataclass(frozen=True)
class Quantity:
    """One geometry number: ``value`` in ``unit`` (None: not published), with source and confidence."""

    key: str
    value: Optional[int]
    unit: str
    source: str
    confidence: str
    note: str = ""


@dataclass(frozen=True)
class EventCost:
    """Energy (pJ) and latency (ns) of one event; None where not published."""

    energy_pj: Optional[float]
    latency_ns: Optional[float]
    source: str = ""
    confidence: str = "to-verify"
    note: str = ""


@dataclass(frozen=True)
class SyncTable:
    """Barrier synchronisation latency (ns) by tabulated chip count; ``None`` when not published."""

    latency_ns: Optional[Mapping[int, float]]
    source: str = ""
    confidence: str = "to-verify"
    note: str = ""


@dataclass(frozen=True)
class MeshHardware:
    """A loaded, validated mesh description. Read numbers through :meth:`require` (or the
    properties built on it), which refuse a null value by naming the key and the file."""

    name: str
    description: str
    geometry: Mapping[str, Quantity] = field(hash=False, compare=False)
    events: Mapping[str, EventCost] = field(hash=False, compare=False)
    barrier_sync: SyncTable = field(hash=False, compare=False)
    path: str = ""
    extra_events: Mapping[str, EventCost] = field(default_factory=lambda: MappingProxyType({}), hash=False,
                                                  compare=False)  # the OPTIONAL_EVENTS the file gives

    def require(self, key: str) -> Union[int, float]:
        """The value of ``key``: a geometry key (``'mesh_width'``) or ``'<event>.energy_pj'`` /
        ``'<event>.latency_ns'``. Raises :class:`HardwareError` when it is unknown or null."""
        event, _, fld = key.partition(".")
        if key in self.geometry:
            q = self.geometry[key]
            value, conf, src = q.value, q.confidence, q.source
        elif (event in self.events or event in self.extra_events) and fld in ("energy_pj", "latency_ns"):
            ev = self.events.get(event) or self.extra_events[event]
            value, conf, src = getattr(ev, fld), ev.confidence, ev.source
        else:
            known = list(self.geometry) + [f"{e}.energy_pj|latency_ns" for e in self.events]
            raise HardwareError(f"hardware {self.name!r} ({self.path}) has no key {key!r}; known: {', '.join(known)}")
        if value is None:
            raise HardwareError(f"hardware {self.name!r}: {key!r} is null in {self.path} ({conf}: {src}); "
                                f"give a value in your own file ('extends: {self.name}') to simulate with it")
        return value

    def event(self, kind: str) -> EventCost:
        """The cost of one event of ``kind`` (``EVENTS``), both numbers required (not null)."""
        if kind not in self.events and kind not in self.extra_events:
            raise HardwareError(f"hardware {self.name!r} ({self.path}) has no event {kind!r}; known: "
                                f"{', '.join(list(self.events) + list(self.extra_events))}"
                                + (f" (add '{kind}' under 'events' in your own file)" if kind in OPTIONAL_EVENTS else ""))
        self.require(f"{kind}.energy_pj")
        self.require(f"{kind}.latency_ns")
        return self.events.get(kind) or self.extra_events[kind]

    def synop(self, connection: str) -> EventCost:
        """The synaptic-operation cost of a connection type (``'dense'``, ``'sparse'``, ``'conv'``)."""
        if connection not in SYNOP_KINDS:
            raise HardwareError(f"unknown connection type {connection!r}: use one of {', '.join(SYNOP_KINDS)}")
        return self.event(f"synop_{connection}")

    def sync_latency_ns(self, chips: Optional[int] = None) -> float:
        """Barrier latency for ``chips`` chips (default: the file's ``chips``): the entry of the smallest
        tabulated chip count >= ``chips``."""
        n = self.require("chips") if chips is None else int(chips)
        table = self.barrier_sync.latency_ns
        if table is None:
            raise HardwareError(f"hardware {self.name!r}: 'barrier_sync.latency_ns' is null in {self.path} "
                                f"({self.barrier_sync.confidence}: {self.barrier_sync.source}); give a table in your own file")
        fit = [c for c in sorted(table) if c >= n]
        if not fit:
            raise HardwareError(f"hardware {self.name!r}: 'barrier_sync.latency_ns' in {self.path} stops at "
                                f"{max(table)} chips; {n} chips need an entry >= {n}")
        return table[fit[0]]

    @property
    def mesh_width(self) -> int:
        return int(self.require("mesh_width"))

    @property
    def mesh_height(self) -> int:
        return int(self.require("mesh_height"))

    @property
    def cores_per_tile(self) -> int:
        return int(self.require("cores_per_tile"))

    @property
    def cores_per_chip(self) -> int:
        return int(self.require("cores_per_chip"))

    @property
    def chips(self) -> int:
        return int(self.require("chips"))

    def sources(self) -> dict[str, tuple[str, str]]:
        """Every entry -> (confidence, source), for reports."""
        out = {k: (q.confidence, q.source) for k, q in self.geometry.items()}
        out.update({k: (e.confidence, e.source) for k, e in self.events.items()})
        out.update({k: (e.confidence, e.source) for k, e in self.extra_events.items()})
        out["barrier_sync"] = (self.barrier_sync.confidence, self.barrier_sync.source)
        return out


@dataclass(frozen=True)
class Hops:
    """Router hops a packet makes between two cores (dimension-order routing on the mesh)."""

    east_west: int
    north_south: int

    @property
    def total(self) -> int:
        return self.east_west + self.north_south


def core_xy(core: int, hw: MeshHardware) -> tuple[int, int, int]:
    """``(chip, x, y)`` of core index ``core``: cores fill a chip's tiles in order, ``cores_per_tile``
    per tile, tiles row-major (x east-west first), then the next chip (the placement of
    ``step_deploy.energy.models``' Loihi model)."""
    if isinstance(core, bool) or not isinstance(core, int) or core < 0:
        raise HardwareError(f"core index must be a non-negative integer, got {core!r}")
    cpc, cpt, width = hw.cores_per_chip, hw.cores_per_tile, hw.mesh_width
    total = cpc * hw.chips
    if core >= total:
        raise HardwareError(f"core {core} is outside hardware {hw.name!r}: {hw.chips} chip(s) x {cpc} cores = "
                            f"{total} cores ('chips' in {hw.path}); raise 'chips' in your own file")
    chip, local = divmod(core, cpc)
    tile = local // cpt
    return chip, tile % width, tile // width


def hops(a: int, b: int, hw: MeshHardware) -> Hops:
    """Hops from core ``a`` to core ``b``. Chips sit side by side east-west (an assumption: chip c's
    tile x is at c * mesh_width + x), so a packet between chips crosses the chip boundary as
    east-west hops; within one tile the count is 0."""
    ca, xa, ya = core_xy(a, hw)
    cb, xb, yb = core_xy(b, hw)
    w = hw.mesh_width
    return Hops(abs((ca * w + xa) - (cb * w + xb)), abs(ya - yb))


# ---------------------------------------------------------------- loading


def _resolve(name_or_path: Union[str, Path]) -> Path:
    s = str(name_or_path)
    if s in BUNDLED:
        return ARCH_DIR / f"{s}.yaml"
    p = Path(s)
    if not p.is_file():
        raise HardwareError(f"hardware file {s}: no such file, and not a bundled hardware (bundled: {', '.join(BUNDLED)})")
    return p


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise HardwareError(f"hardware file {path}: cannot read it ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise HardwareError(f"hardware file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise HardwareError(f"hardware file {path} must hold a mapping with 'name', 'geometry', 'events' and 'barrier_sync'")
    return data


def _number(v: Any, integer: bool = False) -> bool:
    if isinstance(v, bool):
        return False
    if integer:
        return isinstance(v, int)
    return isinstance(v, (int, float)) and math.isfinite(v)


def _check_common(key: str, raw: dict, fields: tuple, problems: list[str]) -> bool:
    unknown = [f for f in raw if f not in fields]
    if unknown:
        problems.append(f"{key!r}: unknown field(s) {', '.join(map(str, unknown))} (known: {', '.join(fields)})")
    missing = [f for f in fields if f != "note" and f not in raw]
    if missing:
        problems.append(f"{key!r}: missing field(s) {', '.join(missing)}")
        return False
    check_provenance(repr(key), raw, problems)
    return True


def _null_ok(key: str, raw: dict, problems: list[str]) -> None:
    if raw.get("confidence") != "to-verify":
        problems.append(f"{key!r}: a null value must have confidence 'to-verify', not {raw.get('confidence')!r}")


def _quantity(key: str, raw: Any, problems: list[str]) -> Optional[Quantity]:
    if not isinstance(raw, dict):
        problems.append(f"{key!r}: expected a mapping with value, unit, source, confidence; got {raw!r}")
        return None
    if not _check_common(key, raw, _GEOMETRY_FIELDS, problems):
        return None
    v, unit = raw["value"], GEOMETRY[key][0]
    if v is None:
        _null_ok(key, raw, problems)
    elif not _number(v, integer=True) or v < 1:
        problems.append(f"{key!r}: value must be a positive integer, got {v!r}")
    if raw["unit"] != unit:
        problems.append(f"{key!r}: unit must be {unit!r}, got {raw['unit']!r}")
    return Quantity(key, v, unit, str(raw["source"]), str(raw["confidence"]), str(raw.get("note", "")))


def _event(key: str, raw: Any, problems: list[str]) -> Optional[EventCost]:
    if not isinstance(raw, dict):
        problems.append(f"{key!r}: expected a mapping with energy_pj, latency_ns, source, confidence; got {raw!r}")
        return None
    if not _check_common(key, raw, _EVENT_FIELDS, problems):
        return None
    for f in ("energy_pj", "latency_ns"):
        v = raw[f]
        if v is None:
            _null_ok(f"{key}.{f}", raw, problems)
        elif not _number(v) or v < 0:
            problems.append(f"'{key}.{f}': value must be a finite number >= 0, got {v!r}")
    return EventCost(raw["energy_pj"], raw["latency_ns"], str(raw["source"]), str(raw["confidence"]),
                     str(raw.get("note", "")))


def _sync(raw: Any, problems: list[str]) -> Optional[SyncTable]:
    key = "barrier_sync"
    if not isinstance(raw, dict):
        problems.append(f"{key!r}: expected a mapping with latency_ns, source, confidence; got {raw!r}")
        return None
    if not _check_common(key, raw, _SYNC_FIELDS, problems):
        return None
    table = raw["latency_ns"]
    if table is None:
        _null_ok(f"{key}.latency_ns", raw, problems)
    elif not isinstance(table, dict) or not table:
        problems.append(f"'{key}.latency_ns': expected a mapping chip count -> ns, got {table!r}")
        table = None
    else:
        for c, v in table.items():
            if not _number(c, integer=True) or c < 1:
                problems.append(f"'{key}.latency_ns': chip count {c!r} must be a positive integer")
            if not _number(v) or v < 0:
                problems.append(f"'{key}.latency_ns.{c}': value must be a finite number >= 0, got {v!r}")
        valid = {c: float(v) for c, v in table.items() if _number(c, integer=True) and _number(v)}
        table = MappingProxyType(dict(sorted(valid.items())))
    return SyncTable(table, str(raw["source"]), str(raw["confidence"]), str(raw.get("note", "")))


def _section(data: dict, name: str, problems: list[str]) -> dict:
    sec = data.get(name, {})
    if sec is None:
        sec = {}
    if not isinstance(sec, dict):
        problems.append(f"{name!r}: expected a mapping, got {type(sec).__name__}")
        return {}
    return sec


def load_hardware(name_or_path: Union[str, Path, MeshHardware], _seen: tuple = ()) -> MeshHardware:
    """A bundled hardware (``BUNDLED``) or a user's YAML file. A file with ``extends`` replaces
    whole entries of its base and keeps the rest. Raises :class:`HardwareError` listing every problem."""
    if isinstance(name_or_path, MeshHardware):
        return name_or_path
    path = _resolve(name_or_path)
    where = str(path)
    if where in _seen:
        raise HardwareError(f"hardware file {where}: 'extends' forms a cycle: {' -> '.join(_seen + (where,))}")
    data = _read(path)
    problems: list[str] = [f"{k!r}: unknown top-level key (known: {', '.join(_TOP)})" for k in data if k not in _TOP]
    base = None
    if data.get("extends") is not None:
        ext = str(data["extends"])
        if ext not in BUNDLED and not Path(ext).is_absolute():
            ext = str(path.parent / ext)
        base = load_hardware(ext, _seen + (where,))
    geometry: dict[str, Quantity] = dict(base.geometry) if base else {}
    for key, raw in _section(data, "geometry", problems).items():
        if key not in GEOMETRY:
            problems.append(f"{key!r}: unknown geometry key (known: {', '.join(GEOMETRY)})")
        elif (q := _quantity(key, raw, problems)) is not None:
            geometry[key] = q
    events: dict[str, EventCost] = {**base.events, **base.extra_events} if base else {}
    for key, raw in _section(data, "events", problems).items():
        if key not in EVENTS and key not in OPTIONAL_EVENTS:
            problems.append(f"{key!r}: unknown event (known: {', '.join(list(EVENTS) + list(OPTIONAL_EVENTS))})")
        elif (e := _event(key, raw, problems)) is not None:
            events[key] = e
    sync = base.barrier_sync if base else None
    if "barrier_sync" in data:
        sync = _sync(data["barrier_sync"], problems) or sync
    missing = [k for k in GEOMETRY if k not in geometry] + [k for k in EVENTS if k not in events]
    missing += ["barrier_sync"] if sync is None else []
    if missing:
        problems.append(f"missing key(s): {', '.join(missing)}")
    name = data.get("name", base.name + "-custom" if base else None)
    if not isinstance(name, str) or not name:
        problems.append("'name': top-level key is missing or not a string")
    if not problems:
        _check_mesh(geometry, problems)
    if problems:
        raise HardwareError(f"invalid hardware file {where}: " + "; ".join(problems))
    desc = data.get("description") or (base.description if base else "")
    return MeshHardware(name, str(desc), MappingProxyType({k: geometry[k] for k in GEOMETRY}),
                        MappingProxyType({k: events[k] for k in EVENTS}), sync, where,
                        MappingProxyType({k: events[k] for k in OPTIONAL_EVENTS if k in events}))


def _check_mesh(geometry: dict[str, Quantity], problems: list[str]) -> None:
    w, h, cpt, cpc = (geometry[k].value for k in ("mesh_width", "mesh_height", "cores_per_tile", "cores_per_chip"))
    if None not in (w, h, cpt, cpc) and w * h * cpt != cpc:
        problems.append(f"'cores_per_chip': {cpc} differs from mesh_width x mesh_height x cores_per_tile = "
                        f"{w} x {h} x {cpt} = {w * h * cpt}")


__all__ = ["ARCH_DIR", "BUNDLED", "EVENTS", "GEOMETRY", "OPTIONAL_EVENTS", "SYNOP_KINDS", "EventCost", "HardwareError", "Hops",
           "MeshHardware", "Quantity", "SyncTable", "core_xy", "hops", "load_hardware"]
