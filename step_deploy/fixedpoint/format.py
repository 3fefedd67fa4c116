"""A fixed-point format as data: the node types it adds to the IR, its integer op functions, the
events it counts and its constants, registered by name.

The integer golden model (``simulators.golden.run_golden``) runs any registered format: its op
table is the core IR ops on integers (``simulators.integer_ops``) plus ``format.ops``. A quantized
graph names its format in ``graph.metadata["fixed_point_format"]``. Adding a format (an FPGA
``ap_fixed`` design, a toy integrate-and-fire) is one ``FixedPointFormat`` and one
``register_format`` call; nothing in the golden model changes.

Layering: node types are IR-level data (``step_deploy.fixedpoint.<format>``); op functions are
simulator-level (``step_deploy.simulators.golden_<format>``), which builds and registers the
format. This module imports nothing but ``ir``.

Op functions take ``(node, inputs, state, t)`` like the reference interpreter's and return int64
tensors. To count an event an op calls :func:`count_event` with its ``state``; ``observe`` (optional)
is called after every node of the graph (core ops included) when events are counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from step_deploy import ir
from step_deploy.ir.serialize import FORMAT_KEY
#: the key under which an op finds its node's event counters in its ``state`` (events counted only)
EVENTS_STATE_KEY = "_events"

OpFn = Callable[..., Any]


class FormatError(ValueError):
    """An unknown or inconsistent fixed-point format."""


@dataclass(frozen=True)
class FixedPointFormat:
    """One fixed-point number format and how the golden model executes it.

    ``name``: registry key (e.g. ``'loihi-fixed_pt'``), recorded in quantized graphs.
    ``node_types``: the IR node types this format adds (their docstrings state the equations).
    ``ops``: ``{op name: function}`` for exactly those node types.
    ``events``: ``{counter name: meaning}`` of the events the format counts.
    ``observe``: ``f(node, inputs, output, counters)`` called after every node when counting.
    ``spiking_ops``: op names whose outputs are the network's spikes (recorded by default).
    ``constants``: the format's numbers (state bits, compares, rounding modes, ...).
    ``doc``: one paragraph stating the arithmetic."""

    name: str
    node_types: tuple[type[ir.Node], ...]
    ops: Mapping[str, OpFn]
    events: Mapping[str, str] = field(default_factory=dict)
    observe: Optional[Callable[..., None]] = None
    spiking_ops: tuple[str, ...] = ()
    constants: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""

    def __post_init__(self):
        object.__setattr__(self, "ops", MappingProxyType(dict(self.ops)))
        object.__setattr__(self, "events", MappingProxyType(dict(self.events)))
        object.__setattr__(self, "constants", MappingProxyType(dict(self.constants)))
        types = {c.__name__ for c in self.node_types}
        if set(self.ops) != types:
            raise FormatError(f"format {self.name!r}: ops {sorted(self.ops)} must match its node types {sorted(types)} "
                              "(one integer op function per node type)")
        for c in self.node_types:
            if ir.NODE_TYPES.get(c.__name__) is not c:
                raise FormatError(f"format {self.name!r}: node type {c.__name__} is not registered with ir "
                                  "(decorate it with step_deploy.ir.nodes.register)")
        unknown = set(self.spiking_ops) - types
        if unknown:
            raise FormatError(f"format {self.name!r}: spiking_ops {sorted(unknown)} are not its node types")

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.ops))


FORMATS: dict[str, FixedPointFormat] = {}


def register_format(fmt: FixedPointFormat) -> FixedPointFormat:
    """Make ``fmt`` known by name (re-registering the same name replaces it). A node type may
    belong to one format only."""
    for other in FORMATS.values():
        if other.name != fmt.name:
            shared = set(other.ops) & set(fmt.ops)
            if shared:
                raise FormatError(f"format {fmt.name!r}: node types {sorted(shared)} already belong to "
                                  f"format {other.name!r}; give them their own names")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> FixedPointFormat:
    if name not in FORMATS:
        raise FormatError(f"fixed-point format {name!r} is not registered (known: {sorted(FORMATS)}); import the "
                          "module that registers it (built-in formats: step_deploy.simulators.golden)")
    return FORMATS[name]


def format_of(graph: ir.Graph) -> Optional[FixedPointFormat]:
    """The format a graph names in its metadata; for a graph without that entry, the one format
    whose node types it uses (None for a graph of core ops only)."""
    name = graph.metadata.get(FORMAT_KEY)
    if name:
        return get_format(name)
    used = {n.op for n in graph.nodes.values()}
    owners = [f for f in FORMATS.values() if used & set(f.ops)]
    if len(owners) > 1:
        raise FormatError(f"graph mixes node types of formats {sorted(f.name for f in owners)}; set "
                          f"graph.metadata[{FORMAT_KEY!r}]")
    return owners[0] if owners else None


def count_event(state: dict, key: str, mask) -> None:
    """From inside an op: add the number of True elements of ``mask`` to the node's counter
    ``key`` (a no-op unless the golden model counts events)."""
    ev = state.get(EVENTS_STATE_KEY)
    if ev is None:
        return
    c = int(mask.sum())
    if c:
        ev[key] = ev.get(key, 0) + c


__all__ = ["FORMAT_KEY", "EVENTS_STATE_KEY", "FixedPointFormat", "FormatError", "FORMATS", "register_format",
           "get_format", "format_of", "count_event"]
