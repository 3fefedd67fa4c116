"""The reference interpreter: runs an IR graph over T steps for a batch. It defines the IR's
semantics; every other backend (PyTorch capture, ONNX, NIR importers, Lava, HLS) is tested
against it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

import numpy as np
import torch

from step_deploy import ir

from .reference_neurons import spiking_ops
from .reference_ops import FLOAT_OPS, REFERENCE_BACKEND


@dataclass
class RunResult:
    """``outputs[name]`` and ``traces[name]`` are tensors shaped ``(T, B, *node_shape)``."""

    outputs: dict[str, torch.Tensor]
    traces: dict[str, torch.Tensor] = field(default_factory=dict)

    def final(self, name: Optional[str] = None) -> torch.Tensor:
        """The value of an Output after the last step (the logits for a classifier)."""
        name = name or next(iter(self.outputs))
        return self.outputs[name][-1]


def as_time_major(x, node: ir.Input, steps: Optional[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Input ``x`` for ``node`` as ``(T, B, *shape)``; floating inputs cast to ``dtype`` (integer
    inputs stay integer)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if x.is_floating_point():
        x = x.to(dtype)  # float32 by default, like the PyTorch models
    per_step = len(node.shape)
    if x.dim() == per_step + 1:  # (B, ...) static input, repeated every step (direct coding)
        if steps is None:
            raise ValueError(f"input {node.name!r} has no time axis; pass steps=T")
        return x.unsqueeze(0).expand(steps, *x.shape)
    if x.dim() != per_step + 2:
        raise ValueError(f"input {node.name!r}: expected (T, B, {node.shape}) or (B, {node.shape}), got {tuple(x.shape)}")
    return x


def run(graph: ir.Graph, inputs: Union[dict, torch.Tensor, np.ndarray], steps: Optional[int] = None,
        record: Union[bool, Iterable[str]] = False, ops: Optional[dict] = None,
        dtype: torch.dtype = torch.float32) -> RunResult:
    """Evaluate ``graph`` for ``T`` steps.

    ``inputs``: one array (graphs with a single Input) or ``{input_name: array}``; each array is
    ``(T, B, *shape)``, or ``(B, *shape)`` together with ``steps=T`` for static direct-coded input.
    ``record``: True records every spiking node's output (``Neuron`` and its subclasses,
    ``Heaviside``); an iterable records the named nodes.
    ``ops``: the op table (default :data:`FLOAT_OPS`). ``dtype``: the float precision of the run:
    float inputs are cast to it and every weight follows its activation's dtype, so
    ``torch.float64`` evaluates the graph in float64; the default float32 reproduces PyTorch's
    arithmetic bit for bit.

    Order of evaluation: step-major (every node at step 0, then every node at step 1, ...), or,
    when the graph holds a sequence op (``TemporalLinear``, which needs all T steps of its input
    before its first output), node-major (each node over all T steps, in topological order). For a
    causal graph both orders give identical results, since each op sees the same inputs in the
    same step order; node-major keeps every node's whole sequence until its consumers ran."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r}: expected a torch float dtype such as torch.float64")
    if ops is None:
        ir.require_ops(graph, REFERENCE_BACKEND)
    ops = ops or FLOAT_OPS
    order = graph.topo_order()
    in_nodes = graph.inputs
    if not isinstance(inputs, dict):
        if len(in_nodes) != 1:
            raise ValueError(f"graph has {len(in_nodes)} inputs; pass a dict")
        inputs = {in_nodes[0].name: inputs}
    missing = [n.name for n in in_nodes if n.name not in inputs]
    if missing:
        raise ValueError(f"missing inputs {missing}; the graph's inputs are {[n.name for n in in_nodes]}")
    feeds = {n.name: as_time_major(inputs[n.name], n, steps, dtype) for n in in_nodes}
    T = next(iter(feeds.values())).shape[0]
    if record is True:
        wanted = {n.name for n in order if n.op in spiking_ops()}
    else:
        wanted = set(record or ())
    states: dict[str, dict] = {n.name: {} for n in order}
    with torch.no_grad():
        if any(is_sequence_op(n) for n in order):
            values = _node_major(order, feeds, ops, states, T, keep=set(wanted) | {n.name for n in graph.outputs})
            return RunResult({n.name: values[n.name] for n in graph.outputs}, {k: values[k] for k in wanted})
        outs = {n.name: [] for n in graph.outputs}
        traces = {name: [] for name in wanted}
        for t in range(T):
            step: dict[str, torch.Tensor] = {}
            for n in order:
                xs = [feeds[n.name][t]] if isinstance(n, ir.Input) else [step[i] for i in n.inputs]
                step[n.name] = ops[n.op](n, xs, states[n.name], t)
            for name in outs:
                outs[name].append(step[name])
            for name in wanted:
                traces[name].append(step[name])
    stack = lambda d: {k: torch.stack(v) for k, v in d.items()}  # noqa: E731
    return RunResult(stack(outs), stack(traces))


def is_sequence_op(n: ir.Node) -> bool:
    """A node that needs its input's whole sequence (``TemporalLinear``): class attribute ``sequence``."""
    return bool(getattr(type(n), "sequence", False))


def _node_major(order, feeds, ops, states, T: int, keep: set) -> dict[str, torch.Tensor]:
    """Each node over all T steps, in topological order: sequence ops get ``(T, B, ...)`` inputs in
    one call, every other op runs step by step on the stored sequences of its inputs. A value is
    dropped once all its consumers are done, unless it is in ``keep``."""
    left = {n.name: 0 for n in order}
    for n in order:
        for i in n.inputs:
            left[i] += 1
    values: dict[str, torch.Tensor] = {}
    for n in order:
        if isinstance(n, ir.Input):
            values[n.name] = feeds[n.name]
        elif is_sequence_op(n):
            values[n.name] = ops[n.op](n, [values[i] for i in n.inputs], states[n.name], None)
        else:
            ins = [values[i] for i in n.inputs]
            values[n.name] = torch.stack([ops[n.op](n, [x[t] for x in ins], states[n.name], t) for t in range(T)])
        for i in n.inputs:
            left[i] -= 1
            if left[i] == 0 and i not in keep:
                del values[i]
    return values
