"""step-deploy's graph IR: per-time-step nodes, graph, verifier, serialization.

This package imports nothing else of step_deploy (the IR is the layer everything else meets at)."""
from .backends import BACKENDS, Backend, UnsupportedOpError, register_backend, require_ops
from .diagnostics import Diagnostic, IRError, errors
from .graph import Graph
from .attention_nodes import WINDOW_OPS, ReLU, Shiftmax, TemporalBlockSum
from .neuron_nodes import CLIFNeuron, EIFNeuron, GLIFNeuron, Heaviside, KLIFNeuron, Neuron, TemporalLinear
from .nodes import (NODE_TYPES, Add, AvgPool2d, BatchNorm, Conv1d, Conv2d, Delay, Flatten, Input, Linear,
                    MatMul, MaxPool2d, Mean, Mul, Node, Output, Reshape, Scale, ShapeError, Sum,
                    TemporalMean, Transpose, is_core_op, node_fields, replace)
from .serialize import FORMAT_KEY, SCHEMA_VERSION, load, nodes_equal, save
from .verify import RULES, Rule, check, verify

__all__ = [
    "BACKENDS", "Backend", "UnsupportedOpError", "register_backend", "require_ops",
    "Diagnostic", "IRError", "errors", "Graph", "NODE_TYPES", "Add", "AvgPool2d", "BatchNorm", "Conv1d",
    "Conv2d", "Delay", "Flatten", "Input", "Linear", "MatMul", "MaxPool2d", "Mean", "Mul", "Neuron", "Node",
    "Output", "Reshape", "Scale", "ShapeError", "Sum", "TemporalMean",
    "KLIFNeuron", "EIFNeuron", "CLIFNeuron", "GLIFNeuron", "TemporalLinear", "Heaviside", "ReLU", "Shiftmax", "TemporalBlockSum", "WINDOW_OPS", "Transpose", "is_core_op", "node_fields", "replace",
    "FORMAT_KEY", "SCHEMA_VERSION", "load", "nodes_equal", "save", "RULES", "Rule", "check", "verify",
]
