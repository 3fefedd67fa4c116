"""The step-deploy schema inside NIR files: metadata records, extension ops, IR reconstruction.

NIR 1.0.8 can only read its 19 node types (``nir.dict2NIRNode``), every node has one input port,
and ``nir.read`` type-checks that every edge joins equal shapes. An op NIR lacks (MatMul, Mul,
Sum, Mean, Reshape, Transpose, MaxPool2d, TemporalMean, BatchNorm, non-absorbable Add, soft-reset
or multi-level neurons, the STEP zoo's KLIF/EIF/CLIF/GLIF neurons, PSN's TemporalLinear and
Heaviside, Linear over token maps, the seed designs' ReLU, Shiftmax and TemporalBlockSum) is
therefore written as a **cut**:

* each operand ``k`` of the op ``X`` flows into a standard ``nir.Output`` node ``X.in<k>``
  (an operand port, typed with the operand's shape), and
* the op's result leaves a standard ``nir.Input`` node named ``X`` (typed with the result's
  shape) that feeds X's consumers.

The op itself (type, scalar parameters, operand order, arrays) is carried in the metadata of
the ``X`` Input node. Every NIR node written by step-deploy carries one record under the
metadata key ``step_deploy`` (a JSON string, so floats round-trip exactly) and, where needed,
arrays under ``step_deploy_arrays``. See docs/nir.md for the table of extensions.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

from step_deploy import ir

FORMAT = "step-deploy-nir"
FORMAT_VERSION = 1
META_KEY = "step_deploy"
ARRAYS_KEY = "step_deploy_arrays"

# Roles of NIR nodes written by step-deploy.
ROLE_INPUT = "input"          # a graph input of the IR
ROLE_OUTPUT = "output"        # a graph output of the IR
ROLE_STANDARD = "standard"    # an IR node expressed by a standard NIR node
ROLE_EXTENSION = "extension"  # the result of an extension op (a nir.Input node)
ROLE_OPERAND = "operand"      # an operand port of an extension op (a nir.Output node)
ROLE_SINK = "sink"            # closes an IR node whose value nobody reads (keeps nir.read from adding nodes)

#: extension ops: ports (operand order) and the per-step equation (see the IR docstrings).
EXTENSION_OPS: dict[str, tuple[str, str]] = {
    "MatMul": ("A, B", "Y = scale · op(A) @ op(B), op = optional transpose of the last two axes"),
    "Mul": ("A, B", "Y = A ⊙ B (numpy broadcasting)"),
    "Add": ("X0, X1, ...", "Y = Σ_k X_k (only where NIR's implicit in-edge sum cannot carry it)"),
    "Sum": ("X", "Y = Σ_axis X (keepdim optional)"),
    "Mean": ("X", "Y = (1/n) Σ_axis X (keepdim optional)"),
    "Reshape": ("X", "Y = reshape(X, shape), row-major"),
    "Transpose": ("X", "Y = permute(X, perm)"),
    "MaxPool2d": ("X", "Y[c,y,x] = max over the window (padding -inf)"),
    "TemporalMean": ("X", "A[t] = A[t-1] + X[t], Y[t] = A[t]/(t+1) (stateful)"),
    "BatchNorm": ("X", "Y = (X - mean)/sqrt(var + eps)·gamma + beta along axis (arrays in metadata)"),
    "Neuron": ("X", "the IR neuron equation (soft reset, ternary or integer spikes, fire='round'/'round_normalized')"),
    "KLIFNeuron": ("X", "H = relu(k · LIF charge); S = H >= θ; hard reset to 0 (STEP KLIF)"),
    "EIFNeuron": ("X", "H = V + (X - V + ΔT·exp((V - θ_rh)/ΔT))/tau; S = H >= θ; V = v_reset on a spike, V[-1] = v_reset"),
    "CLIFNeuron": ("X", "H = V·(1 - 1/tau) + X; S = H >= θ; M = M·sigmoid(H/tau) + S; V = H - S·θ - S·sigmoid(M)"),
    "GLIFNeuron": ("X", "gated LIF with per-step (tau, vth, leak, conduct, revth) = params_t[t] and gates (al, be, ga)"),
    "TemporalLinear": ("X", "Y[t] = Σ_τ W[t, τ] X[τ] + b[t] over the T steps (sequence op: buffers all T inputs)"),
    "Heaviside": ("X", "S = X >= threshold (or >), stateless"),
    "Linear": ("X", "Y[..., o] = b[o] + Σ_i W[o, i] X[..., i] on a rank>1 input (W, b in metadata)"),
    "ReLU": ("X", "Y = max(X, 0), stateless (A²OS²A's real-valued K)"),
    "Shiftmax": ("X", "Δ = X - max_axis X; num = 2^Δ where Δ >= -frac_bits else 0; Y = num / 2^ceil(log2 Σ_axis num)"),
    "TemporalBlockSum": ("X", "Y[t] = Σ of X over the block of `block` steps holding t (blocks aligned at step 0; "
                              "window op: non-causal inside a block, latency block-1 steps)"),
}


def port_name(op_name: str, k: int) -> str:
    return f"{op_name}.in{k}"


# --------------------------------------------------------------------------- JSON helpers


def to_json(v: Any) -> Any:
    """Plain JSON values for IR scalar fields and metadata (tuples become lists)."""
    if isinstance(v, (tuple, list)):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return to_json(v.tolist())
    return v


def from_json(v: Any) -> Any:
    """Inverse of :func:`to_json` for IR fields (lists become tuples, as the IR serializer does)."""
    return tuple(from_json(x) for x in v) if isinstance(v, list) else v


def dumps(record: dict) -> str:
    return json.dumps(to_json(record), sort_keys=True, allow_nan=True, default=repr)


# --------------------------------------------------------------------------- records


def scalar_params(node: ir.Node) -> dict:
    """The node's non-array fields (arrays travel as NIR parameters or metadata arrays)."""
    return {k: v for k, v in node.params().items() if not isinstance(v, np.ndarray)}


def array_params(node: ir.Node) -> dict[str, np.ndarray]:
    return {k: v for k, v in node.params().items() if isinstance(v, np.ndarray)}


def node_record(node: ir.Node, role: str, **extra) -> dict:
    rec = {"role": role, "name": node.name, "op": node.op, "inputs": list(node.inputs),
           "params": scalar_params(node)}
    rec.update(extra)
    return rec


def encode(record: dict, arrays: Optional[dict[str, np.ndarray]] = None) -> dict:
    """NIR node metadata for a record (and optional arrays stored as HDF5 datasets)."""
    meta: dict = {META_KEY: dumps(record)}
    if arrays:
        meta[ARRAYS_KEY] = {k: np.ascontiguousarray(arrays[k]) for k in sorted(arrays)}
    return meta


def decode(metadata: Optional[dict]) -> tuple[Optional[dict], dict[str, np.ndarray]]:
    """``(record, arrays)`` from a NIR node's metadata; ``(None, {})`` for foreign nodes."""
    if not isinstance(metadata, dict) or META_KEY not in metadata:
        return None, {}
    raw = metadata[META_KEY]
    if isinstance(raw, bytes):
        raw = raw.decode("utf8")
    arrays = metadata.get(ARRAYS_KEY) or {}
    return json.loads(raw), {k: np.asarray(v) for k, v in arrays.items()}


def build_ir_node(record: dict, arrays: dict[str, np.ndarray], inputs: tuple[str, ...],
                  overrides: Optional[dict] = None) -> ir.Node:
    """An IR node from a record: scalar fields from the record, arrays given separately."""
    cls = ir.NODE_TYPES.get(record["op"])
    if cls is None:
        raise ValueError(f"NIR node {record['name']!r}: unknown step-deploy op {record['op']!r}")
    fields = set(ir.node_fields(cls))
    params = {k: from_json(v) for k, v in record["params"].items()}
    params.update(arrays)
    params.update(overrides or {})
    unknown = set(params) - fields
    if unknown:
        raise ValueError(f"NIR node {record['name']!r}: {record['op']} has no field(s) {sorted(unknown)}")
    return cls(name=record["name"], inputs=tuple(inputs), **params)
