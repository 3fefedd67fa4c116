"""Lowerings of the seed attention designs (``step_deploy.models.seed_attention``, and SEMM in
``step_deploy.models.spikformer_semm``) to per-step IR.

Each function mirrors the module's ``forward`` (comments name the PyTorch expression), with the
per-step layouts of :mod:`.zoo_lowering`: token maps ``(N, C)``, heads ``(h, N, d)``, SDT maps
``(C, H, W)``. The seed designs add three IR ops (``step_deploy/ir/attention_nodes.py``):

* STAtten: ``MatMul(K, V, transpose_a)`` (``K_tᵀ V_t``) → ``TemporalBlockSum(block=chunk_size)``
  (the window op: the graph runs node-major) → ``MatMul(Q, M, scale)``;
* A²OS²A: ``Linear → BatchNorm → ReLU`` for the real-valued K, then ``(Q @ Kᵀ) @ V``;
* bipolar self-attention: ``MatMul(Q, K, transpose_b)`` → ``Shiftmax(frac_bits)`` → ``MatMul(·, V)``.

The ternary neurons lower through their ``neuron_params()`` (``Neuron(output="ternary")``)."""
from __future__ import annotations

import numpy as np
from torch import nn

from step_deploy import ir
from step_deploy.models import seed_attention as seed
from step_deploy.models import spikformer_semm as semm

from .builder import Builder, CaptureError, array, child, lower, lowers
from .neuron_groups import NEURON_GROUPS_KEY
from .torch_lowering import batchnorm
from .zoo_lowering import _block, _conv_unit, _heads_from_tokens, _spikformer, _token_unit, sdsa_heads, sdsa_out


@lowers(nn.ReLU)
def _relu(b: Builder, m: nn.ReLU, path: str, x: str) -> str:
    return b.add(ir.ReLU, path, (x,))  # max(x, 0)


def _merge_heads(b: Builder, path: str, y: str) -> str:
    """``(h, N, d) -> (N, h·d)``: ``transpose(1, 2).flatten(2)`` (merge_heads)."""
    h, n, d = b.shape(y)
    y = b.add(ir.Transpose, child(path, "merge_t"), (y,), perm=(1, 0, 2))
    return b.add(ir.Reshape, child(path, "merge_heads"), (y,), shape=(n, h * d))


def _statten_core(b: Builder, path: str, q: str, k: str, v: str, block: int, scale: float) -> str:
    """``(Q_t @ Σ_{τ in block} K_τᵀ V_τ) * scale`` per head."""
    kv = b.add(ir.MatMul, child(path, "kt_v"), (k, v), transpose_a=True)  # K_tᵀ V_t, (h, d, d)
    m = b.add(ir.TemporalBlockSum, child(path, "kv_block_sum"), (kv,), block=int(block))  # block_sum(kv)
    return b.add(ir.MatMul, child(path, "q_m"), (q, m), scale=float(scale))  # (q @ M) * scale


def _qkv_tokens(b: Builder, m, path: str, x: str) -> dict[str, str]:
    return {t: _heads_from_tokens(b, path, t, _token_unit(b, m, path, x, f"{t}_linear", f"{t}_bn", f"{t}_lif"),
                                  m.num_heads) for t in "qkv"}


def _attn_out(b: Builder, m, path: str, y: str) -> str:
    """``proj_lif(proj_bn(proj_linear(attn_lif(merge_heads(y)))))``."""
    y = lower(b, m.attn_lif, child(path, "attn_lif"), _merge_heads(b, path, y))
    return _token_unit(b, m, path, y, "proj_linear", "proj_bn", "proj_lif")


@lowers(seed.STAttenSSA)
def _statten_ssa(b: Builder, m: seed.STAttenSSA, path: str, x: str) -> str:
    h = _qkv_tokens(b, m, path, x)
    y = _statten_core(b, path, h["q"], h["k"], h["v"], m.chunk_size, m.scale)
    return _attn_out(b, m, path, y)


@lowers(seed.STAttenSDSA)
def _statten_sdsa(b: Builder, m: seed.STAttenSDSA, path: str, x: str) -> str:
    heads = sdsa_heads(b, m, path, x)
    scale = 1.0 / b.shape(x)[1] if m.scale is None else float(m.scale)  # token_scale: 1/H of the map
    y = _statten_core(b, path, heads["q"], heads["k"], heads["v"], m.chunk_size, scale)  # (h, N, d)
    return sdsa_out(b, m, path, y, x, attn_lif=True)


@lowers(seed.A2OS2ASSA)
def _a2os2a(b: Builder, m: seed.A2OS2ASSA, path: str, x: str) -> str:
    q = _heads_from_tokens(b, path, "q", _token_unit(b, m, path, x, "q_linear", "q_bn", "q_lif"), m.num_heads)
    k = _token_unit(b, m, path, x, "k_linear", "k_bn", "k_relu")  # k_relu(bn_tokens(k_bn, k_linear(x)))
    k = _heads_from_tokens(b, path, "k", k, m.num_heads)
    v = _heads_from_tokens(b, path, "v", _token_unit(b, m, path, x, "v_linear", "v_bn", "v_lif"), m.num_heads)
    qk = b.add(ir.MatMul, child(path, "qk"), (q, k), transpose_b=True)  # q @ k^T (no scale)
    y = b.add(ir.MatMul, child(path, "attn_v"), (qk, v))  # (q @ k^T) @ v
    return _attn_out(b, m, path, y)


@lowers(seed.BipolarSSA)
def _bipolar_ssa(b: Builder, m: seed.BipolarSSA, path: str, x: str) -> str:
    h = _qkv_tokens(b, m, path, x)
    qk = b.add(ir.MatMul, child(path, "qk"), (h["q"], h["k"]), transpose_b=True)  # q @ k^T
    p = b.add(ir.Shiftmax, child(path, "shiftmax"), (qk,), axis=-1, frac_bits=int(m.frac_bits))
    y = b.add(ir.MatMul, child(path, "attn_v"), (p, h["v"]))  # p @ v
    return _attn_out(b, m, path, y)


# ----------------------------------------------------------------------------- SEMM (Spikformer + experts mixture)
#
# The IR has no slice op, so SEMM's two channel selections are expressed with existing ops:
# * EMSA's per-expert router gate ``R[:, i:i+1]``: the E experts run stacked (their ``unit_linear`` /
#   ``unit_bn`` concatenated, one ``Neuron`` for all ``unit_lif`` and one for all ``lif_list``), and the
#   router spikes gate the stack with a broadcast ``Mul`` followed by a ``Sum`` over experts;
# * EMSP's ``torch.chunk(h, 2, dim=-1)``: ``fc1_linear`` / ``fc1_bn`` / ``fc1_lif`` are split into the
#   two channel halves (``.half0`` feeds the depthwise branch, ``.half1`` the product).
# The IR neurons that stand for several PyTorch neurons (or a part of one) are listed in the graph's
# metadata ``neuron_groups``; ``simulators.float_parity.group_traces`` derives their traces from
# PyTorch's (the float parity check does it itself), so every IR neuron is compared with PyTorch at
# every element.



def _record_group(b: Builder, ir_name: str, modules: list[str], how: str, axis: int, **extra) -> None:
    """``how``: ``concat`` (the IR neuron is the PyTorch neurons' outputs concatenated along per-step
    ``axis``), ``stack`` (stacked on a new per-step ``axis``) or ``slice`` (channels ``start:stop`` of
    per-step ``axis`` of one PyTorch neuron)."""
    b.graph.metadata.setdefault(NEURON_GROUPS_KEY, {})[ir_name] = dict(modules=list(modules), how=how, axis=axis,
                                                                     **extra)


#: graph metadata: ``{IR synapse: [{"synapse": module path, "batchnorm": module path, "start": row, "stop": row}, ...]}``
#: for the IR synapses made of several modules or of a row range of one (their rows, in order), so
#: that ``step_deploy.qat`` can put the right PyTorch rows on the IR synapse's grid
SYNAPSE_GROUPS_KEY = "synapse_groups"


def _record_synapse(b: Builder, ir_name: str, parts: list[tuple[str, str, int, int]]) -> None:
    b.graph.metadata.setdefault(SYNAPSE_GROUPS_KEY, {})[ir_name] = [
        dict(synapse=syn, batchnorm=bn, start=int(start), stop=int(stop)) for syn, bn, start, stop in parts]


def _same_neurons(path: str, mods: list) -> None:
    params = [m.neuron_params() for m in mods]
    if any(p != params[0] for p in params[1:]):
        raise CaptureError(f"module {path!r}: the {len(mods)} experts' neurons have different parameters; the SEMM "
                           f"lowering runs the experts stacked as one neuron layer, which needs equal neurons "
                           f"(e.g. fix a learned tau to one value)")


def _bn_params(bns: list, rows: slice | None = None) -> dict:
    """One BatchNorm's arrays from several BatchNorm1d (concatenated) or a channel range of one."""
    def cat(attr, default):
        parts = []
        for m in bns:
            v = getattr(m, attr)
            parts.append(array(v) if v is not None else np.full(m.num_features, default, np.float32))
        a = np.concatenate(parts)
        return np.ascontiguousarray(a[rows] if rows is not None else a)

    eps = {float(m.eps) for m in bns}
    if len(eps) != 1:
        raise CaptureError(f"SEMM: the BatchNorms to merge have different eps {sorted(eps)}")
    for m in bns:
        if not m.track_running_stats or m.running_mean is None:
            raise CaptureError("SEMM: a BatchNorm has no running statistics; inference capture needs them")
    return dict(gamma=cat("weight", 1.0), beta=cat("bias", 0.0), mean=cat("running_mean", 0.0),
                var=cat("running_var", 1.0), eps=eps.pop())


def _linear_params(lins: list, rows: slice | None = None) -> dict:
    """One Linear's arrays from several (rows concatenated) or a range of output rows of one."""
    w = np.concatenate([array(m.weight) for m in lins])
    bias = None if any(m.bias is None for m in lins) else np.concatenate([array(m.bias) for m in lins])
    if rows is not None:
        w, bias = w[rows], (bias[rows] if bias is not None else None)
    return dict(weight=np.ascontiguousarray(w), bias=None if bias is None else np.ascontiguousarray(bias))


def _neuron_like(b: Builder, mod, name: str, x: str) -> str:
    """Lower the neuron ``mod`` as one ``Neuron`` node named ``name`` (a merged or split neuron)."""
    out = lower(b, mod, name, x)
    if not isinstance(b.graph[out], ir.Neuron) or b.graph[out].inputs != (x,):
        raise CaptureError(f"module {name!r} ({type(mod).__name__}): SEMM merges or splits only neurons that lower to "
                           f"one Neuron node, got {b.graph[out].op}")
    return out


@lowers(semm.EMSA)
def _emsa(b: Builder, m: semm.EMSA, path: str, x: str) -> str:
    n, d = b.shape(x)
    e, ed = m.num_expert, m.expert_dim
    k = _token_unit(b, m, path, x, "k_linear", "k_bn", "k_lif")  # (N, E_d)
    v = _token_unit(b, m, path, x, "v_linear", "v_bn", "v_lif")  # (N, D)
    # router: router3(reshape-or-transpose(router2(router1(x)^T)))  (STEP: BN on the transposed (E, N) map)
    # BN(E) is elementwise per expert channel, so it runs on the (N, E) Linear output, before the transpose
    # (the same values as STEP's BN on (E, N)); right after the Linear, fold-batchnorm folds it into the weights
    r = lower(b, m.router1, child(path, "router1"), x)  # (N, E)
    r = batchnorm(b, m.router2, child(path, "router2"), r, axis=-1)
    r = b.add(ir.Transpose, child(path, "router_t"), (r,), perm=(1, 0))  # (E, N)
    if m.router_layout == "step":  # STEP reads the (E, N) BN output as (N, E)
        r = b.add(ir.Reshape, child(path, "router_reshape"), (r,), shape=(n, e))
    else:
        r = b.add(ir.Transpose, child(path, "router_tokens"), (r,), perm=(1, 0))
    r = lower(b, m.router3, child(path, "router3"), r)  # (N, E) binary
    gate = b.add(ir.Transpose, child(path, "gate_t"), (r,), perm=(1, 0))  # (E, N)
    gate = b.add(ir.Reshape, child(path, "gate"), (gate,), shape=(e, n, 1))  # R[:, i:i+1] for every i
    # the E experts' queries, stacked: unit_lif(unit_bn(unit_linear(x))) for all i at once
    units = list(m.ff_list)
    _same_neurons(child(path, "ff_list"), [u.unit_lif for u in units])
    _same_neurons(child(path, "lif_list"), list(m.lif_list))
    base = child(path, "ff_list")
    q = b.add(ir.Linear, child(base, "unit_linear"), (x,), **_linear_params([u.unit_linear for u in units]))
    _record_synapse(b, q, [(child(base, f"{i}.unit_linear"), child(base, f"{i}.unit_bn"), 0, u.unit_linear.out_features)
                           for i, u in enumerate(units)])
    q = b.add(ir.BatchNorm, child(base, "unit_bn"), (q,), axis=1, **_bn_params([u.unit_bn for u in units]))
    q_name = child(base, "unit_lif")
    q = _neuron_like(b, units[0].unit_lif, q_name, q)  # (N, E·E_d)
    _record_group(b, q, [child(base, f"{i}.unit_lif") for i in range(e)], "concat", axis=-1)
    q = b.add(ir.Reshape, child(base, "q_split"), (q,), shape=(n, e, ed))
    q = b.add(ir.Transpose, child(base, "q_experts"), (q,), perm=(1, 0, 2))  # (E, N, E_d)
    q = b.add(ir.Reshape, child(base, "q_rows"), (q,), shape=(e * n, ed))  # rows (expert, token)
    a = b.add(ir.MatMul, child(path, "qk"), (q, k), transpose_b=True)  # q_i @ k^T, (E·N, N)
    y = b.add(ir.MatMul, child(path, "attn_v"), (a, v), scale=m.scale)  # (attn @ v) * scale, (E·N, D)
    y = b.add(ir.Reshape, child(path, "experts"), (y,), shape=(e, n, d))
    o = _neuron_like(b, m.lif_list[0], child(path, "lif_list"), y)  # lif_list[i], stacked (E, N, D)
    _record_group(b, o, [child(path, f"lif_list.{i}") for i in range(e)], "stack", axis=0)
    y = b.add(ir.Mul, child(path, "gate_mul"), (gate, o))  # R[..., i:i+1] * out_i
    y = b.add(ir.Sum, child(path, "expert_sum"), (y,), axis=0)  # y = Σ_i
    return _token_unit(b, m, path, y, "proj_linear", "proj_bn", "proj_lif")


@lowers(semm.EMSP)
def _emsp(b: Builder, m: semm.EMSP, path: str, x: str) -> str:
    n, _ = b.shape(x)
    side = m.grid_side(n)
    hidden = m.fc1_linear.out_features
    half = hidden // 2
    halves = []
    for j, rows in enumerate((slice(0, half), slice(half, hidden))):  # torch.chunk(h, 2, dim=-1)
        tag = f"half{j}"
        h = b.add(ir.Linear, child(path, f"fc1_linear.{tag}"), (x,), **_linear_params([m.fc1_linear], rows))
        _record_synapse(b, h, [(child(path, "fc1_linear"), child(path, "fc1_bn"), rows.start, rows.stop)])
        h = b.add(ir.BatchNorm, child(path, f"fc1_bn.{tag}"), (h,), axis=1, **_bn_params([m.fc1_bn], rows))
        h = _neuron_like(b, m.fc1_lif, child(path, f"fc1_lif.{tag}"), h)
        _record_group(b, h, [child(path, "fc1_lif")], "slice", axis=-1, start=rows.start, stop=rows.stop)
        halves.append(h)
    h1, h2 = halves
    g = b.add(ir.Reshape, child(path, "h1_grid"), (h1,), shape=(side, side, half))  # reshape(tb, side, side, c)
    g = b.add(ir.Transpose, child(path, "h1_map"), (g,), perm=(2, 0, 1))  # permute(0, 3, 1, 2)
    g = _conv_unit(b, m, path, g, "dw_conv", "dw_bn", "dw_lif")
    g = b.add(ir.Transpose, child(path, "g_grid"), (g,), perm=(1, 2, 0))  # permute(0, 2, 3, 1)
    g = b.add(ir.Reshape, child(path, "g_tokens"), (g,), shape=(n, half))
    y = b.add(ir.Mul, child(path, "g_mul_h2"), (g, h2))  # g * h2
    return _token_unit(b, m, path, y, "fc2_linear", "fc2_bn", "fc2_lif")


# SEMM's block and model are Spikformer's: x = x + attn(x); x = x + mlp(x), then token mean, time mean, head
lowers(semm.SEMMBlock)(_block)
lowers(semm.SpikformerSEMM)(_spikformer)
