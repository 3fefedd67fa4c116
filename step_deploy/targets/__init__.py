"""Hardware targets as data, with a schema per device kind: neuromorphic chips (``loihi2.yaml``,
``loihi1.yaml``) and FPGA parts (``zcu102.yaml``, ``zcu104.yaml``, ``vcu118.yaml``,
``pynq-z2.yaml``), plus user files of either kind; and the constraint checker that turns a graph +
mapping onto a neuromorphic chip into a list of diagnostics.

    spec = load_target("loihi2")                 # or a path to a YAML/JSON spec
    mapping = map_to_cores(graph, spec)          # step_deploy.passes.map_to_cores
    diags = check_target(graph, spec, mapping)   # list[Diagnostic], never raises on a violation
    print(diagnostics_table(diags))
"""
from .memory import Geometry, Usage, fit, payload_bits
from .report import MEMORY_MODEL, diagnostics_table, report_dict, report_markdown
from .rules import RULES, Rule, check_target
from .spec import (BUILTIN, CONFIDENCES, FPGA_SCHEMA, KINDS, SCHEMA, SCHEMAS, Limit, TargetSpec, TargetSpecError,
                   load_target)

__all__ = [
    "BUILTIN", "CONFIDENCES", "FPGA_SCHEMA", "KINDS", "SCHEMA", "SCHEMAS", "Limit", "TargetSpec", "TargetSpecError",
    "load_target",
    "RULES", "Rule", "check_target", "diagnostics_table", "report_dict", "report_markdown", "MEMORY_MODEL",
    "Geometry", "Usage", "fit", "payload_bits",
]
