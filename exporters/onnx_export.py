"""ONNX exporter: one IR graph -> one **per-time-step** ONNX model (built with ``onnx.helper``).

The model computes one step of the network. Its interface:

* inputs: every IR ``Input`` (float32, ``["B", *shape]``, named after the node), then one state
  input per state tensor (``state/<node>/<key>``), then ``t`` (int64 scalar, the step index;
  used by ``TemporalMean``'s ``acc / (t + 1)``, ignored by graphs without one);
* outputs: every IR ``Output`` (named after the node), then the next value of every state tensor
  (``state_next/<node>/<key>``), then optional traces: ``spikes/<node>`` for spiking nodes
  (Neurons and Heaviside; ``expose_spikes=True``) and ``trace/<node>`` for any other node listed
  in ``expose``.

State tensors: ``Neuron`` (and KLIF, EIF) -> ``v`` (membrane, ``["B", *shape]``, starts at
``v_reset``); ``CLIFNeuron`` -> ``v`` and ``m`` (start at 0); ``GLIFNeuron`` -> ``u`` and ``o``
(start at 0; its per-step parameters are a constant table gathered by ``t``);
``Delay`` (steps k > 0) -> ``fifo`` (``[k, "B", *shape]``, oldest first, starts at 0);
``TemporalMean`` -> ``acc`` (``["B", *shape]``, starts at 0). A run feeds the initial states at
step 0 and each step's ``state_next/...`` outputs back as the next step's ``state/...`` inputs
(``step_deploy.exporters.onnx_runner.run_onnx`` does this).

``<node>`` is the IR node name sanitized to ``[A-Za-z0-9_.]`` (other characters become ``_``, a
leading digit or dot gets an ``n_`` prefix, collisions -- also with the reserved names ``t``,
``state``, ``state_next``, ``spikes``, ``trace`` -- get ``_1``, ``_2``... in graph order). Values
made inside a node's emitter are named ``<node>/<what>``.
The mapping IR name -> ONNX name, the state table and the BatchNorm formulas chosen are stored as
JSON in the model's ``metadata_props`` under ``step_deploy`` (see ``read_metadata``).

Only standard ONNX ops (opset >= 17), float32 weights; the same graph gives the same bytes.

Numerics (parity with ``simulators.reference``, which runs PyTorch on CPU): every elementwise op
repeats the reference's float32 operations in the same order (LIF ``v + (x - v) / tau`` with a
true division, ``h * (1 - s)`` reset, ``Mean`` = sum then divide, ``TemporalMean`` = ``acc /
(t+1)``), so spikes agree bit for bit when the synaptic sums agree. BatchNorm is calibrated per
node against this CPU's ``F.batch_norm`` (``batchnorm_plans``); AvgPool2d sums its window taps
in PyTorch's order. What cannot be reproduced with standard ops is the accumulation order of
Conv / Linear / MatMul / ReduceSum on float (non-integer) operands: onnxruntime's kernels differ
from oneDNN/MKL's in the last bit, so a membrane that lands within an ulp of a threshold can flip
a spike (rare: none in 10^7 spikes of the zoo models). Sums of spikes (integer counts, as in
Q·Kᵀ·V, SDT's column sums, QKFormer's token masks) are exact. The same holds for ``exp`` (EIF,
and CLIF's sigmoid, written as ``1 / (1 + exp(-z))`` as PyTorch evaluates it): onnxruntime's
``Exp`` is not PyTorch's, so a membrane may differ in the last bit; the float parity check
(``simulators/float_parity.py``) attributes any resulting spike flip to a rounding tie.

The seed designs' ops: ``ReLU`` is ``Relu``; ``Shiftmax`` is ReduceMax, Sub, Pow(2, Δ), Where,
ReduceSum and an exact power-of-two denominator (a ``Log`` estimate corrected by comparisons; see
``onnx_ops.emit_shiftmax``), bit-exact on integer scores (``onnx_ops.APPROXIMATE_OPS`` states the
fractional case).

**Block models** (graphs with a window op: STAtten's ``TemporalBlockSum``, non-causal inside a
block of B steps): the model computes B steps per call (:func:`model_block`: the least common
multiple of the blocks), since step t's block sum needs the later steps of its block. Every
per-step value ``v`` of the interface becomes ``v@0`` .. ``v@{B-1}`` (inputs, outputs, traces),
``t`` is the index of the call's first step, and the states are carried between calls as in a
per-step model (they chain through ``state_next/...@j`` inside the call). ``run_onnx`` runs
either kind (T must be a multiple of B). Inside, the B steps are the per-step network emitted B
times, and the block sum is an elementwise ``Sum`` of its input at the block's steps.

Refused with the reason (``onnx_ops.REFUSED_OPS``): ``TemporalLinear`` (PSN's map across all time
steps): it would need a model of all T steps.
"""
from __future__ import annotations

import heapq
import json
import math
import re
import warnings
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import onnx
from onnx import TensorProto, helper

from step_deploy import ir

from .onnx_ops import EMITTERS, ONNX_BACKEND, REFUSED_OPS, Context, OnnxExportError

MIN_OPSET = 17
METADATA_KEY = "step_deploy"
METADATA_FORMAT = 1
STEP_INPUT = "t"
# value-name prefixes of the interface: no node may be sanitized to one of them
_RESERVED = {STEP_INPUT, "state", "state_next", "spikes", "trace"}

__all__ = ["export_onnx", "model_block", "read_metadata", "sanitize_names", "batchnorm_plans", "OnnxExportError",
           "MIN_OPSET", "METADATA_KEY"]


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


def _spiking(n: ir.Node) -> bool:
    """Nodes whose output is a spike train: every Neuron (subclasses too) and Heaviside."""
    return isinstance(n, (ir.Neuron, ir.Heaviside))


def _value_info(name: str, shape: Iterable, elem=TensorProto.FLOAT, doc: str = "") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [d if isinstance(d, str) else int(d) for d in shape], doc)


def _producer_version() -> str:
    try:
        import step_deploy

        return str(step_deploy.__version__)
    except Exception:  # pragma: no cover
        return "0"


def model_block(graph: ir.Graph) -> int:
    """Steps one ONNX call computes: 1 (a per-step model), or the least common multiple of the
    graph's window-op blocks (STAtten's ``TemporalBlockSum``), so every block lies in one call."""
    k = 1
    for n in graph.nodes.values():
        if isinstance(n, ir.TemporalBlockSum):
            k = math.lcm(k, int(n.block))
    return k


def _topological(nodes: list, available: set) -> list:
    """The ONNX nodes in an order where each reads only values made before it (a block model
    emits step j's window op before the later steps it reads)."""
    made = {o: i for i, nd in enumerate(nodes) for o in nd.output}
    waiting = {i: {x for x in nd.input if x and x not in available} for i, nd in enumerate(nodes)}
    readers: dict[str, list] = {}
    for i, need in waiting.items():
        for x in need:
            if x not in made:
                raise OnnxExportError(f"ONNX value {x!r} is read but never made (exporter bug)")
            readers.setdefault(x, []).append(i)
    ready = sorted(i for i, need in waiting.items() if not need)
    out = []
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        out.append(nodes[i])
        for o in nodes[i].output:
            for r in readers.get(o, ()):
                waiting[r].discard(o)
                if not waiting[r]:
                    heapq.heappush(ready, r)
    if len(out) != len(nodes):
        raise OnnxExportError("the block model has a cycle (exporter bug)")
    return out


def export_onnx(graph: ir.Graph, path: Union[str, Path, None] = None, opset: int = MIN_OPSET,
                expose_spikes: bool = False, expose: Iterable[str] = (), bn_mode: str = "auto",
                check: bool = True, block: Union[int, None] = None) -> onnx.ModelProto:
    """Export ``graph`` as a per-time-step ONNX model (see the module docstring for its interface).

    ``expose_spikes``: add every Neuron's spikes as an output ``spikes/<node>``.
    ``expose``: IR node names whose per-step values become extra outputs (``trace/<node>``, or
    ``spikes/<node>`` for a Neuron), for parity debugging.
    ``bn_mode``: how BatchNorm reproduces PyTorch's float arithmetic (``'auto'`` calibrates each
    node against ``F.batch_norm`` in the layout the reference uses; see ``onnx_ops.batchnorm_plans``).
    ``check``: run ``onnx.checker.check_model(full_check=True)`` before returning.
    ``block``: steps per call (default :func:`model_block`: 1, or the window ops' block); with
    more than 1 every per-step value ``v`` becomes ``v@0`` .. ``v@{block-1}`` (module docstring).
    ``path``: also write the model there. Raises ``ir.UnsupportedOpError`` naming every op that has
    no ONNX emitter (and a node of each), before any work, and ``IRError`` for an invalid graph."""
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= max_opset:
        raise ValueError(f"opset {opset} not supported: use {MIN_OPSET}..{max_opset}")
    opset = int(opset)
    refused = [(n, REFUSED_OPS[n.op]) for n in graph.topo_order() if n.op in REFUSED_OPS]
    if refused:
        n, why = refused[0]
        more = f" (and {len(refused) - 1} more such node(s))" if len(refused) > 1 else ""
        raise OnnxExportError(f"node {n.name!r} ({n.op}): not exported to ONNX{more}: {why}")
    ir.require_ops(graph, ONNX_BACKEND)
    block = model_block(graph) if block is None else int(block)
    if block < 1:
        raise ValueError(f"block={block}: a model computes at least one step per call")
    order = graph.topo_order()
    shapes = graph.infer_shapes()
    names = sanitize_names(graph)
    expose = list(dict.fromkeys(expose))
    for e in expose:
        if e not in graph:
            raise KeyError(f"expose: no node named {e!r} in the graph")

    step_names = [names] if block == 1 else [{k: f"{v}@{j}" for k, v in names.items()} for j in range(block)]
    cx = Context(opset, shapes, names, batchnorm_plans(graph, shapes, bn_mode))
    cx.block, cx.step_names, cx.base_names = block, step_names, names
    traces: dict[str, str] = {}
    wanted = [n.name for n in order if _spiking(n)] if expose_spikes else []
    wanted += [e for e in expose if e not in wanted]
    for j in range(block):
        cx.block_step, cx.names = j, step_names[j]
        cx.step_input = STEP_INPUT
        if j:  # this step's index: t + j
            cx.step_input = f"{STEP_INPUT}@{j}"
            offset = f"{STEP_INPUT}@{j}/offset"
            cx.initializers.append(onnx.numpy_helper.from_array(np.array(j, np.int64), offset))
            cx.nodes.append(helper.make_node("Add", [STEP_INPUT, offset], [cx.step_input], name=f"t_plus_{j}"))
        for n in order:
            if isinstance(n, ir.Input):
                continue
            cx.node = n
            ins = [cx.names[i] for i in n.inputs]
            try:
                EMITTERS[n.op](cx, n, ins, cx.names[n.name])
            except OnnxExportError:
                raise
            except Exception as e:  # name the node in any emitter failure
                raise OnnxExportError(f"node {n.name!r} ({n.op}): cannot export to ONNX: {e}") from e
        # extra outputs: traces
        for name in wanted:
            n = graph[name]
            if isinstance(n, ir.Output):
                traces[name] = names[name]
                continue
            cx.node = n
            prefix = "spikes" if _spiking(n) else "trace"
            made = cx.op("Identity", [cx.names[name]], out=f"{prefix}/{names[name]}" + (f"@{j}" if block > 1 else ""))
            traces[name] = made if block == 1 else made.rsplit("@", 1)[0]

    at = (lambda v, j: v) if block == 1 else (lambda v, j: f"{v}@{j}")  # noqa: E731
    when = "at step t" if block == 1 else "at step t + {j}"
    g_inputs = [_value_info(at(names[n.name], j), ["B", *shapes[n.name]],
                            doc=f"IR Input {n.name!r} ({n.kind}) " + when.format(j=j))
                for j in range(block) for n in graph.inputs]
    g_inputs += [_value_info(s["input"], s["shape"], doc=f"{s['node']}: {s['description']}") for s in cx.states]
    g_inputs.append(_value_info(STEP_INPUT, [], TensorProto.INT64,
                                "step index t (0 for the first step)" if block == 1 else
                                f"index t of the first of the {block} steps of this call (0, {block}, ...)"))
    g_outputs = [_value_info(at(names[n.name], j), ["B", *shapes[n.name]], doc=f"IR Output {n.name!r} " + when.format(j=j))
                 for j in range(block) for n in graph.outputs]
    g_outputs += [_value_info(s["output"], s["shape"], doc=f"{s['node']}: next {s['key']}") for s in cx.states]
    g_outputs += [_value_info(at(v, j), ["B", *shapes[k]], doc=f"value of IR node {k!r} " + when.format(j=j))
                  for j in range(block) for k, v in traces.items() if not isinstance(graph[k], ir.Output)]

    nodes = cx.nodes
    if block > 1:
        available = {i.name for i in g_inputs} | {t.name for t in cx.initializers}
        nodes = _topological(nodes, available)
    gp = helper.make_graph(nodes, "step_deploy_step" if block == 1 else "step_deploy_block", g_inputs, g_outputs,
                           initializer=cx.initializers,
                           doc_string="One time step of a step-deploy IR graph; feed state_next/* back as state/*."
                           if block == 1 else f"{block} time steps of a step-deploy IR graph (values of step j are "
                           f"named <value>@j); feed state_next/* back as state/* and t + {block} as t.")
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
        "neurons": [n.name for n in order if _spiking(n)],
        "batchnorm": {k: p["formula"] for k, p in sorted(cx.bn_plans.items())},
    }
    if block > 1:
        meta["block"] = block
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta, sort_keys=True)})
    if model.ByteSize() >= 2**31:
        raise OnnxExportError(f"the model is {model.ByteSize() / 2**30:.1f} GiB; a single ONNX protobuf is limited to 2 GiB")
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


# --------------------------------------------------------------------------- BatchNorm calibration


def _bn_params(n: ir.BatchNorm):
    c = int(np.asarray(n.mean).shape[0])
    g = np.ones(c, np.float32) if n.gamma is None else np.asarray(n.gamma, np.float32)
    b = np.zeros(c, np.float32) if n.beta is None else np.asarray(n.beta, np.float32)
    return np.asarray(n.mean, np.float32), np.asarray(n.var, np.float32), g, b


def _bn_candidates(n: ir.BatchNorm) -> dict[str, dict]:
    """The ways PyTorch's CPU batch_norm (inference) can compute its output, as constants."""
    import torch

    m, v, g, b = _bn_params(n)
    f32, eps = np.float32, np.float32(n.eps)
    # contiguous kernel: per-channel scalar code, std::sqrt (correctly rounded)
    invstd_s = (f32(1) / np.sqrt(v + eps)).astype(f32)
    alpha = (invstd_s * g).astype(f32)
    beta_fma = (b.astype(np.float64) - m.astype(np.float64) * alpha.astype(np.float64)).astype(f32)
    beta_mul = (b - (m * alpha).astype(f32)).astype(f32)
    # generic (strided) kernel: invstd from torch's own vectorized sqrt, as the reference gets it
    with torch.no_grad():
        invstd_t = (1 / torch.sqrt(torch.from_numpy(v.copy()) + n.eps)).numpy().astype(f32)
    return {
        "fma": {"formula": "fma", "alpha": alpha, "beta": beta_fma},
        "muladd": {"formula": "muladd", "alpha": alpha, "beta": beta_mul},
        "generic": {"formula": "generic", "mean": m, "invstd": invstd_t, "gamma": g, "beta": b},
    }


def _bn_apply(plan: dict, x: np.ndarray, ax: int) -> np.ndarray:
    shape = (-1,) + (1,) * (x.ndim - 1 - ax)
    r = lambda a: a.reshape(shape)  # noqa: E731
    if plan["formula"] == "generic":
        y = ((x - r(plan["mean"])).astype(np.float32) * r(plan["invstd"])).astype(np.float32)
        return ((y * r(plan["gamma"])).astype(np.float32) + r(plan["beta"])).astype(np.float32)
    if plan["formula"] == "fma":
        return (x.astype(np.float64) * r(plan["alpha"]).astype(np.float64) + r(plan["beta"])).astype(np.float32)
    return ((x * r(plan["alpha"])).astype(np.float32) + r(plan["beta"])).astype(np.float32)


def batchnorm_plans(graph: ir.Graph, shapes: dict, mode: str = "auto") -> dict[str, dict]:
    """Choose, for every BatchNorm node, the float formula that reproduces the reference.

    The reference calls ``F.batch_norm`` on ``x.movedim(axis, 1)``. PyTorch's CPU kernel then takes
    one of two paths, chosen by the memory layout of that tensor (which depends on the upstream
    ops: a token map ``(B, N, C)`` normalized over ``C`` is strided, a conv output is contiguous):

    * contiguous / channels-last: ``y = x * alpha + beta`` with ``alpha = gamma / sqrt(var + eps)``
      (``std::sqrt``), ``beta = bias - mean * alpha`` -- fused multiply-adds on an FMA CPU
      (formula ``fma``), separate roundings otherwise (``muladd``);
    * strided: ``y = ((x - mean) * invstd) * gamma + beta`` in four float32 steps, with
      ``invstd = 1 / torch.sqrt(var + eps)`` from torch's vectorized sqrt (which is not always
      correctly rounded; formula ``generic``).

    ``mode='auto'`` runs the reference for one step on a batch of two (zeros) to get the layout of
    each BatchNorm input, then calls ``F.batch_norm`` on random data laid out the same way and keeps
    the formula that matches it bit for bit. ``mode`` may also name a formula for every node."""
    bns = [n for n in graph.topo_order() if isinstance(n, ir.BatchNorm)]
    if not bns:
        return {}
    cands = {n.name: _bn_candidates(n) for n in bns}
    if mode != "auto":
        if mode not in ("fma", "muladd", "generic"):
            raise ValueError(f"bn_mode={mode!r}: expected 'auto', 'fma', 'muladd' or 'generic'")
        return {k: dict(c[mode], matched=None) for k, c in cands.items()}

    import torch
    import torch.nn.functional as F

    from step_deploy.simulators.reference import run as ref_run
    from step_deploy.simulators.reference_ops import FLOAT_OPS

    layouts: dict[str, tuple] = {}

    def probe_bn(node, xs, state, t):
        x = xs[0]
        xm = x.movedim(node.axis + 1 if node.axis >= 0 else node.axis, 1)
        layouts[node.name] = (tuple(xm.shape), tuple(xm.stride()), node.axis % (x.dim() - 1) + 1)
        return FLOAT_OPS["BatchNorm"](node, xs, state, t)

    ops = dict(FLOAT_OPS, BatchNorm=probe_bn)
    feeds = {i.name: np.zeros((2, *i.shape), np.float32) for i in graph.inputs}
    ref_run(graph, feeds, steps=model_block(graph), ops=ops)  # a window op needs its whole block

    gen = torch.Generator().manual_seed(0)
    plans = {}
    for n in bns:
        shape, stride, ax = layouts[n.name]
        span = 1 + sum((s - 1) * st for s, st in zip(shape, stride))
        buf = torch.randn(span, generator=gen) * 3
        xm = torch.as_strided(buf, shape, stride)
        m, v, g, b = (torch.from_numpy(a.copy()) for a in _bn_params(n))
        with torch.no_grad():
            want = F.batch_norm(xm, m, v, g, b, False, 0.0, n.eps).contiguous().numpy()
        x = xm.contiguous().numpy()
        scores = {k: int((_bn_apply(p, x, 1) != want).sum()) for k, p in cands[n.name].items()}
        best = min(scores, key=lambda k: (scores[k], ("fma", "generic", "muladd").index(k)))
        plans[n.name] = dict(cands[n.name][best], matched=scores[best] == 0, mismatches=scores)
        if scores[best]:
            warnings.warn(f"BatchNorm {n.name!r}: no ONNX formula reproduces this CPU's F.batch_norm bit for bit "
                          f"(mismatching elements per formula on a probe: {scores}); using {best!r}", stacklevel=3)
    return plans
