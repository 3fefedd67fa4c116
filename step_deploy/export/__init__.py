"""Export orchestration: checkpoint -> IR -> a registered target's artifacts + summary.

Targets are plug-ins (``registry``): ``nir``, ``onnx``, ``loihi`` and ``fpga`` register themselves when this
package is imported; ``get_target(name).run(prepare(ckpt), out, options)`` is what ``step-export``
does. Every export writes into a temporary directory that becomes the output only when complete."""
from .common import (CheckData, MissingPackageError, Prepared, ir_summary, prepare, require_package,
                     self_check_data, write_summary)
from .float_target import FloatTarget, Written
from .registry import (PLANNED, Target, TargetOption, TargetResult, check_options_apply, get_target,
                       register_target, registered_targets)
from . import nir, onnx, loihi, fpga  # noqa: E402,F401  (each module registers its target)

__all__ = ["FloatTarget", "Written", "CheckData", "MissingPackageError", "Prepared", "ir_summary", "prepare", "require_package",
           "self_check_data", "write_summary", "PLANNED", "Target", "TargetOption", "TargetResult",
           "check_options_apply", "get_target", "register_target", "registered_targets"]
