"""Energy accounting: counts first (``counters``: per layer and time step, from the PyTorch model,
the float IR or the integer golden model, equal for the same spikes), priced second by energy
models whose constants carry their sources (``constants.yaml``, ``models``), beside the
quantized-ANN baseline at an equal bit budget (``baseline``). ``step-energy`` is ``command``."""
from .baseline import BreakEven, activation_bits, break_even, overall_firing_rate, price_qann, qann_counts
from .constants import Constant, ConstantError, Constants, load_constants
from .counters import COUNTERS, bit_widths, count_graph, needed_traces
from .counts import CONVENTIONS, CountError, Counts, LayerCounts, compare_counts, rebit
from .models import MODELS, EnergyModelError, EnergyReport, LayerEnergy, price, resolve_models
from .torch_hooks import hook_traces
from .value_classes import ValueClass

__all__ = ["BreakEven", "COUNTERS", "CONVENTIONS", "Constant", "ConstantError", "Constants", "CountError", "Counts",
           "EnergyModelError", "EnergyReport", "LayerCounts", "LayerEnergy", "MODELS", "ValueClass", "activation_bits",
           "bit_widths", "break_even", "compare_counts", "count_graph", "hook_traces", "load_constants",
           "needed_traces", "overall_firing_rate", "price", "price_qann", "qann_counts", "rebit", "resolve_models"]
