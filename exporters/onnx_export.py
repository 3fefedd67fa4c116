"""ONNX exporter: one IR graph -> one **per-time-step** ONNX model (built with ``onnx.helper``).

The model computes one step of the network. Its interface:

* inputs: every IR ``Input`` (float32, ``["B", *shape]``, named after the node), then one state
  input per state tensor (``state/<node>/<key>``), then ``t`` (int64 scalar, the step index;
  used by ``TemporalMean``'s ``acc / (t + 1)``, ignored by graphs without one);
* outputs: every IR ``Output`` (named after the node), then the next value of every state tensor
  (``state_next/<node>/<key>``), then optional traces: ``spikes/<node>`` for Neurons
  (``expose_spikes=True``) and ``trace/<node>`` for any other node listed in ``expose``.

State tensors: ``Neuron`` -> ``v`` (membrane, ``["B", *shape]``, starts at ``v_reset``);
``Delay`` (steps k > 0) -> ``fifo`` (``[k, "B", *shape]``, oldest first, starts at 0);
``TemporalMean`` -> ``acc`` (``["B", *shape]``, starts at 0). A run feeds the initial states at
step 0 and each step's ``state_next/...`` outputs back as the next step's ``state/...`` inputs
(``step_deploy.simulators.onnx_runner.run_onnx`` does this).

``<node>`` is the IR node name sanitized to ``[A-Za-z0-9_.]`` (other characters become ``_``, a
leading digit or dot gets an ``n_`` prefix, collisions get ``_1``, ``_2``... in graph order).
The mapping IR name -> ONNX name, the state table and the BatchNorm formulas chosen are stored as
JSON in the model's ``metadata_props`` under ``step_deploy`` (see ``read_metadata``).

Only standard ONNX ops (opset >= 17), float32 weights; the same graph gives the same bytes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import onnx
from onnx import TensorProto, helper

from step_deploy import ir

from .onnx_ops import EMITTERS, Context, OnnxExportError, batchnorm_plans

MIN_OPSET = 17
METADATA_KEY = "step_deploy"
METADATA_FORMAT = 1
STEP_INPUT = "t"
_RESERVED = {STEP_INPUT}

__all__ = ["export_onnx", "read_metadata", "sanitize_names", "OnnxExportError", "MIN_OPSET", "METADATA_KEY"]


def sanitize_names(graph: ir.Graph) -> dict[str, str]:
    """IR node name -> ONNX value name: ``[A-Za-z0-9_.]`` only, unique, deterministic (graph order)."""
    out: dict[str, str] = {}
    taken = set(_RESERVED)
    for name in graph.nodes:  # insertion order
        s = re.sub(r"[^A-Za-z0-9_.]", "_", name) or "node"
        if not re.match(r"[A-Za-z_]", s[0]):
            s = "n_" + s
        cand, i = s, 1
        while cand in taken:
            cand, i = f"{s}_{i}", i + 1
        taken.add(cand)
        out[name] = cand
    return out


def _value_info(name: str, shape: Iterable, elem=TensorProto.FLOAT, doc: str = "") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [d if isinstance(d, str) else int(d) for d in shape], doc)


def _producer_version() -> str:
    try:
        import step_deploy

        return str(step_deploy.__version__)
    except Exception:  # pragma: no cover
        return "0"


def export_onnx(graph: ir.Graph, path: Union[str, Path, None] = None, opset: int = MIN_OPSET,
                expose_spikes: bool = False, expose: Iterable[str] = (), bn_mode: str = "auto",
                check: bool = True) -> onnx.ModelProto:
    """Export ``graph`` as a per-time-step ONNX model (see the module docstring for its interface).

    ``expose_spikes``: add every Neuron's spikes as an output ``spikes/<node>``.
    ``expose``: IR node names whose per-step values become extra outputs (``trace/<node>``, or
    ``spikes/<node>`` for a Neuron), for parity debugging.
    ``bn_mode``: how BatchNorm reproduces PyTorch's float arithmetic (``'auto'`` calibrates each
    node against ``F.batch_norm`` in the layout the reference uses; see ``onnx_ops.batchnorm_plans``).
    ``check``: run ``onnx.checker.check_model(full_check=True)`` before returning.
    ``path``: also write the model there. Raises ``OnnxExportError`` naming the first node whose op
    has no ONNX emitter, and ``IRError`` for an invalid graph."""
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= max_opset:
        raise ValueError(f"opset {opset} not supported: use {MIN_OPSET}..{max_opset}")
    opset = int(opset)
    order = graph.topo_order()
    unsupported = [n for n in order if not isinstance(n, ir.Input) and n.op not in EMITTERS]
    if unsupported:
        n = unsupported[0]
        raise OnnxExportError(
            f"node {n.name!r}: op {n.op!r} has no ONNX emitter"
            + (f" (also unsupported: {', '.join(repr(u.name) for u in unsupported[1:])})" if len(unsupported) > 1 else "")
            + f"; supported ops: {', '.join(sorted(EMITTERS))}")
    shapes = graph.infer_shapes()
    names = sanitize_names(graph)
    expose = list(dict.fromkeys(expose))
    for e in expose:
        if e not in graph:
            raise KeyError(f"expose: no node named {e!r} in the graph")

    cx = Context(opset, shapes, names, batchnorm_plans(graph, shapes, bn_mode))
    cx.step_input = STEP_INPUT
    for n in order:
        if isinstance(n, ir.Input):
            continue
        cx.node = n
        ins = [names[i] for i in n.inputs]
        try:
            EMITTERS[n.op](cx, n, ins, names[n.name])
        except OnnxExportError:
            raise
        except Exception as e:  # name the node in any emitter failure
            raise OnnxExportError(f"node {n.name!r} ({n.op}): cannot export to ONNX: {e}") from e

    # extra outputs: traces
    traces: dict[str, str] = {}
    wanted = [n.name for n in order if isinstance(n, ir.Neuron)] if expose_spikes else []
    wanted += [e for e in expose if e not in wanted]
    for name in wanted:
        n = graph[name]
        if isinstance(n, ir.Output):
            traces[name] = names[name]
            continue
        cx.node = n
        prefix = "spikes" if isinstance(n, ir.Neuron) else "trace"
        traces[name] = cx.op("Identity", [names[name]], out=f"{prefix}/{names[name]}")

    g_inputs = [_value_info(names[n.name], ["B", *shapes[n.name]], doc=f"IR Input {n.name!r} ({n.kind}) at step t")
                for n in graph.inputs]
    g_inputs += [_value_info(s["input"], s["shape"], doc=f"{s['node']}: {s['description']}") for s in cx.states]
    g_inputs.append(_value_info(STEP_INPUT, [], TensorProto.INT64, "step index t (0 for the first step)"))
    g_outputs = [_value_info(names[n.name], ["B", *shapes[n.name]], doc=f"IR Output {n.name!r} at step t")
                 for n in graph.outputs]
    g_outputs += [_value_info(s["output"], s["shape"], doc=f"{s['node']}: next {s['key']}") for s in cx.states]
    g_outputs += [_value_info(v, ["B", *shapes[k]], doc=f"value of IR node {k!r} at step t")
                  for k, v in traces.items() if not isinstance(graph[k], ir.Output)]

    gp = helper.make_graph(cx.nodes, "step_deploy_step", g_inputs, g_outputs, initializer=cx.initializers,
                           doc_string="One time step of a step-deploy IR graph; feed state_next/* back as state/*.")
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(gp, opset_imports=opset_ids, producer_name="step-deploy",
                              producer_version=_producer_version(),
                              ir_version=helper.find_min_ir_version_for(opset_ids, ignore_unknown=True))
    meta = {
        "format": METADATA_FORMAT,
        "inputs": {n.name: names[n.name] for n in graph.inputs},
        "outputs": {n.name: names[n.name] for n in graph.outputs},
        "states": [{k: v for k, v in s.items() if k != "description"} for s in cx.states],
        "step_input": STEP_INPUT,
        "traces": traces,
        "neurons": [n.name for n in order if isinstance(n, ir.Neuron)],
        "batchnorm": {k: p["formula"] for k, p in sorted(cx.bn_plans.items())},
    }
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta, sort_keys=True)})
    if check:
        onnx.checker.check_model(model, full_check=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(model.SerializeToString(deterministic=True))
    return model


def read_metadata(model: Union[onnx.ModelProto, str, Path]) -> dict:
    """The ``step_deploy`` metadata of an exported model (names, states, traces, BatchNorm formulas)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    raise ValueError("not a step-deploy ONNX model (no 'step_deploy' metadata); export it with export_onnx")
