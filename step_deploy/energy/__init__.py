"""Energy accounting: counts first (``counters``: per layer and time step, from the PyTorch model,
the float IR or the integer golden model, equal for the same spikes), priced later by energy
models whose constants carry their sources."""
from .counters import COUNTERS, bit_widths, count_graph, needed_traces
from .counts import CONVENTIONS, CountError, Counts, LayerCounts, compare_counts
from .torch_hooks import hook_traces
from .value_classes import ValueClass

__all__ = ["COUNTERS", "CONVENTIONS", "CountError", "Counts", "LayerCounts", "bit_widths", "compare_counts",
           "count_graph", "needed_traces", "hook_traces", "ValueClass"]
