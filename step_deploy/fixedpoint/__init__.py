"""Fixed-point formats as data (see ``format``). Importing this package registers the node types
of the built-in formats with the IR (``loihi``: Loihi ``fixed_pt``; ``fpga``: FPGA integers); their integer op functions
are registered by ``step_deploy.simulators.golden``.

A quantized network saved with ``ir.save`` loads in a fresh process with :func:`load`."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from step_deploy import ir

from . import fpga, loihi
from .format import (EVENTS_STATE_KEY, FORMAT_KEY, FORMATS, FixedPointFormat, FormatError, count_event, format_of,
                     get_format, register_format)


def load(directory: Union[str, Path]) -> ir.Graph:
    """``ir.load`` for a quantized graph: the node types of every built-in format are registered
    (this package imported them), so ``graph.json`` + ``weights.npz`` written by ``ir.save`` of a
    ``--target loihi`` export load in any process."""
    return ir.load(directory)


__all__ = ["fpga", "loihi", "load", "EVENTS_STATE_KEY", "FORMAT_KEY", "FORMATS", "FixedPointFormat", "FormatError",
           "count_event", "format_of", "get_format", "register_format"]
