"""What the ONNX emitters share: the ``Context`` that collects nodes, initializers and state
declarations while a graph is emitted, the export error, and small attribute helpers."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from step_deploy import ir
from step_deploy.errors import StepDeployError

F32 = TensorProto.FLOAT
F64 = TensorProto.DOUBLE


class OnnxExportError(StepDeployError, ValueError):
    """A node cannot be expressed in ONNX (the message names the node and its op)."""


def _pair(v) -> tuple[int, int]:
    if v is None:
        raise ValueError("missing value")
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(a) for a in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _single(v) -> int:
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = tuple(v)
    if len(v) != 1:
        raise ValueError(f"expected one value, got {v}")
    return int(v[0])


class Context:
    """Collects ONNX nodes, initializers and state declarations while the graph is emitted."""

    def __init__(self, opset: int, shapes: dict[str, tuple[int, ...]], names: dict[str, str],
                 bn_plans: dict[str, dict]):
        self.opset = opset
        self.shapes = shapes          # IR per-step shapes (no batch axis)
        self.names = names            # IR node name -> sanitized ONNX value name
        self.bn_plans = bn_plans      # BatchNorm node name -> plan from ``batchnorm_plans``
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.states: list[dict] = []  # declared state tensors, in emission order
        self._used: set[str] = set()
        self.node: Optional[ir.Node] = None  # node being emitted (for names)
        self.step_input = "t"  # scalar int64 graph input: the step index t (in a block model: of this step)
        #: block models (``export_onnx`` for graphs with window ops): the model computes ``block``
        #: steps per call; ``block_step`` is the step being emitted and ``step_names[j]`` the value
        #: names of step j (``<name>@j``); ``base_names`` the names without the step suffix
        self.block = 1
        self.block_step = 0
        self.step_names: list[dict[str, str]] = [names]
        self.base_names = names

    # ------------------------------------------------------------------ helpers
    def _fresh(self, suffix: str) -> str:
        base = f"{self.names[self.node.name]}/{suffix}"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def const(self, suffix: str, value, dtype=np.float32) -> str:
        """An initializer owned by the current node (float32 unless told)."""
        arr = np.array(value, dtype=dtype, order="C")  # (ascontiguousarray would make scalars 1-D)
        name = self._fresh(suffix)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], suffix: Optional[str] = None, out: Optional[str] = None,
           **attrs) -> str:
        """Append one ONNX node; returns its (single) output name."""
        out = out or self._fresh(suffix or op_type)
        self._used.add(out)
        idx = len(self.nodes)
        name = f"{self.names[self.node.name]}/{op_type}_{idx}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def state(self, node: ir.Node, key: str, shape: list, init: float, description: str) -> tuple[str, str]:
        """Declare a state tensor of ``node``: returns (input name, output name).

        ``shape`` uses the string ``"B"`` for the batch axis; ``init`` is its value before step 0.
        In a block model the state is declared once: step 0 reads the graph input, the last step
        writes the graph output, and the steps between chain through ``state_next/...@j``."""
        san = self.base_names[node.name]
        spec = {"node": node.name, "key": key, "input": f"state/{san}/{key}", "output": f"state_next/{san}/{key}",
                "shape": list(shape), "init": float(init), "description": description}
        j, last = self.block_step, self.block - 1
        inp = spec["input"] if j == 0 else f"state_next/{san}/{key}@{j - 1}"
        out = spec["output"] if j == last else f"state_next/{san}/{key}@{j}"
        if j == 0:
            self.states.append(spec)
        self._used.update((inp, out))
        return inp, out

    def rank(self, ir_name: str) -> int:
        """Rank of an IR value with the batch axis."""
        return len(self.shapes[ir_name]) + 1
