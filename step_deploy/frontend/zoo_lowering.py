"""Lowerings of the model zoo's blocks (Spikformer, SDT, QKFormer) to per-step IR.

STEP's models work on ``(T·B, ...)`` tensors; here every tensor is one sample at one step:
images ``(C, H, W)``, token maps ``(N, C)`` (Spikformer) or ``(C, N)`` (QKFormer), heads
``(h, N, d)``. Each function mirrors the block's ``forward`` line by line, so the comments
name the PyTorch expression each group of nodes stands for."""
from __future__ import annotations

import numpy as np

from step_deploy import ir
from step_deploy.models import blocks as zoo_blocks
from step_deploy.models import qkformer as qk
from step_deploy.models import sdt, spikformer

from .builder import Builder, CaptureError, child, lower, lowers
from .torch_lowering import batchnorm


def _check_neuron_steps(m) -> None:
    """Every neuron must run the model's T steps: a per-step graph cannot express a neuron that
    splits the ``(T*B)`` batch into another number of steps (what STEP's stems do for T != 4)."""
    from step_deploy.models import iter_neurons

    odd = [(name, n.step) for name, n in iter_neurons(m) if n.step != m.step]
    if odd:
        shown = ", ".join(f"{name} (step={s})" for name, s in odd[:4]) + (f" and {len(odd) - 4} more" if len(odd) > 4
                                                                           else "")
        raise CaptureError(f"{len(odd)} neurons run another number of time steps than the model's T={m.step}: {shown}; "
                           f"their membrane would link rows that are not consecutive steps of one sample, which the "
                           f"per-step IR cannot express. Build every neuron with step={m.step}.")


def _seq(b: Builder, m, path: str, x: str, *names: str) -> str:
    for n in names:
        x = lower(b, getattr(m, n), child(path, n), x)
    return x


def _bn_on(b, m, path, name, x, axis):
    return batchnorm(b, getattr(m, name), child(path, name), x, axis=axis)


def _heads_from_tokens(b: Builder, path: str, tag: str, x: str, heads: int) -> str:
    """``(N, C) -> (h, N, d)``: reshape(N, h, d).permute(1, 0, 2)."""
    n, c = b.shape(x)
    r = b.add(ir.Reshape, child(path, f"{tag}_split"), (x,), shape=(n, heads, c // heads))
    return b.add(ir.Transpose, child(path, f"{tag}_heads"), (r,), perm=(1, 0, 2))


def _tokens_from_map(b: Builder, path: str, tag: str, x: str) -> str:
    """``(C, H, W) -> (N, C)``: flatten(2).transpose(1, 2)."""
    f = b.add(ir.Flatten, child(path, f"{tag}_flat"), (x,), start_dim=1, end_dim=2)
    return b.add(ir.Transpose, child(path, f"{tag}_tokens"), (f,), perm=(1, 0))


# ----------------------------------------------------------------------------- Spikformer


def _spike_stem(b: Builder, m, path: str, x: str, *proj: str) -> str:
    """Spikformer's stems: the ``proj`` layers, then ``x + rpe_lif(rpe_bn(rpe_conv(x)))`` as tokens."""
    feat = _seq(b, m, path, x, *proj)
    x = _seq(b, m, path, feat, "rpe_conv", "rpe_bn", "rpe_lif")
    x = b.add(ir.Add, child(path, "rpe_add"), (x, feat))  # x + x_feat
    return _tokens_from_map(b, path, "out", x)


@lowers(spikformer.SPS)
def _sps(b: Builder, m: spikformer.SPS, path: str, x: str) -> str:
    return _spike_stem(b, m, path, x, "proj_conv", "proj_bn", "proj_lif", "proj_conv1", "proj_bn1", "proj_lif1",
                       "proj_conv2", "proj_bn2", "proj_lif2", "maxpool2", "proj_conv3", "proj_bn3", "proj_lif3",
                       "maxpool3")


@lowers(spikformer.Conv2SPS)
def _conv2_sps(b: Builder, m: spikformer.Conv2SPS, path: str, x: str) -> str:
    return _spike_stem(b, m, path, x, "proj_conv", "proj_bn", "proj_lif", "maxpool",
                       "proj_conv1", "proj_bn1", "proj_lif1", "maxpool1")


@lowers(zoo_blocks.BNAndPadLayer)
def _bn_and_pad(b: Builder, m: zoo_blocks.BNAndPadLayer, path: str, x: str) -> str:
    """BN, border filled with BN(0)  ==  BN of the zero-padded map: pad with an identity
    depthwise 1x1 conv (padding=p), then the BN."""
    c = m.bn.num_features
    if m.pad_pixels > 0:
        x = b.add(ir.Conv2d, child(path, "pad"), (x,), weight=np.ones((c, 1, 1, 1), np.float32), bias=None,
                  padding=(m.pad_pixels, m.pad_pixels), groups=c)
    return batchnorm(b, m.bn, child(path, "bn"), x, axis=0)


def _map_from_tokens(b: Builder, path: str, tag: str, x: str) -> str:
    """``(N, C) -> (C, H, W)`` with ``H = W = sqrt(N)``: permute(0, 2, 1).reshape(C, H, W)."""
    n, c = b.shape(x)
    side = int(round(n ** 0.5))
    t = b.add(ir.Transpose, child(path, f"{tag}_t"), (x,), perm=(1, 0))
    return b.add(ir.Reshape, child(path, f"{tag}_map"), (t,), shape=(c, side, side))


@lowers(spikformer.RepConvSSA)
def _repconv_ssa(b: Builder, m: spikformer.RepConvSSA, path: str, x: str) -> str:
    xm = _map_from_tokens(b, path, "in", x)
    heads = {}
    for t in "qkv":
        y = _seq(b, m, path, xm, f"{t}_linear", f"{t}_bn", f"{t}_lif")
        heads[t] = _heads_from_tokens(b, path, t, _tokens_from_map(b, path, t, y), m.num_heads)
    attn = b.add(ir.MatMul, child(path, "qk"), (heads["q"], heads["k"]), transpose_b=True, scale=m.scale)
    y = b.add(ir.MatMul, child(path, "attn_v"), (attn, heads["v"]))
    h, n, d = b.shape(y)
    y = b.add(ir.Transpose, child(path, "merge_t"), (y,), perm=(1, 0, 2))
    y = b.add(ir.Reshape, child(path, "merge_heads"), (y,), shape=(n, h * d))
    y = _map_from_tokens(b, path, "attn", y)
    y = _seq(b, m, path, y, "attn_lif", "proj_linear", "proj_bn", "proj_lif")
    return _tokens_from_map(b, path, "out", y)


def _token_unit(b, m, path, x, lin, bn, lif):
    """lif(bn_tokens(bn, linear(x))) on an (N, C) token map."""
    x = lower(b, getattr(m, lin), child(path, lin), x)
    x = _bn_on(b, m, path, bn, x, axis=1)
    return lower(b, getattr(m, lif), child(path, lif), x)


@lowers(spikformer.SSA)
def _ssa(b: Builder, m: spikformer.SSA, path: str, x: str) -> str:
    q = _heads_from_tokens(b, path, "q", _token_unit(b, m, path, x, "q_linear", "q_bn", "q_lif"), m.num_heads)
    k = _heads_from_tokens(b, path, "k", _token_unit(b, m, path, x, "k_linear", "k_bn", "k_lif"), m.num_heads)
    v = _heads_from_tokens(b, path, "v", _token_unit(b, m, path, x, "v_linear", "v_bn", "v_lif"), m.num_heads)
    attn = b.add(ir.MatMul, child(path, "qk"), (q, k), transpose_b=True, scale=m.scale)  # (q @ k^T) * scale
    y = b.add(ir.MatMul, child(path, "attn_v"), (attn, v))  # attn @ v
    h, n, d = b.shape(y)
    y = b.add(ir.Transpose, child(path, "merge_t"), (y,), perm=(1, 0, 2))
    y = b.add(ir.Reshape, child(path, "merge_heads"), (y,), shape=(n, h * d))
    y = lower(b, m.attn_lif, child(path, "attn_lif"), y)
    return _token_unit(b, m, path, y, "proj_linear", "proj_bn", "proj_lif")


@lowers(spikformer.MLP)
def _mlp(b: Builder, m: spikformer.MLP, path: str, x: str) -> str:
    x = _token_unit(b, m, path, x, "fc1_linear", "fc1_bn", "fc1_lif")
    return _token_unit(b, m, path, x, "fc2_linear", "fc2_bn", "fc2_lif")


def _residual_pair(b: Builder, m, path: str, x: str, first: str) -> str:
    """x = x + first(x); x = x + mlp(x)."""
    a = lower(b, getattr(m, first), child(path, first), x)
    x = b.add(ir.Add, child(path, f"{first}_res"), (x, a))
    y = lower(b, m.mlp, child(path, "mlp"), x)
    return b.add(ir.Add, child(path, "mlp_res"), (x, y))


@lowers(spikformer.Block)
def _block(b, m, path, x):
    return _residual_pair(b, m, path, x, "attn")


@lowers(spikformer.Spikformer)
def _spikformer(b: Builder, m: spikformer.Spikformer, path: str, x: str) -> str:
    _check_neuron_steps(m)
    x = lower(b, m.patch_embed, child(path, "patch_embed"), x)
    for i, blk in enumerate(m.block):
        x = lower(b, blk, child(path, f"block.{i}"), x)
    x = b.add(ir.Mean, "token_mean", (x,), axis=0)  # x.mean(1) over tokens
    return _readout_head(b, m, path, x)


def _readout_head(b, m, path, x):
    x = b.add(ir.TemporalMean, "time_mean", (x,))  # mean over T
    return lower(b, m.head, child(path, "head"), x)


# ----------------------------------------------------------------------------- SDT


@lowers(sdt.MembraneSPS)
def _msps(b: Builder, m: sdt.MembraneSPS, path: str, x: str) -> str:
    x = _seq(b, m, path, x, "proj_conv", "proj_bn", "proj_lif", "proj_conv1", "proj_bn1", "proj_lif1",
             "proj_conv2", "proj_bn2", "proj_lif2", "maxpool2", "proj_conv3", "proj_bn3", "maxpool3")
    feat = x  # float, pre-spike
    x = _seq(b, m, path, x, "proj_lif3", "rpe_conv", "rpe_bn")
    x = b.add(ir.Add, child(path, "rpe_add"), (x, feat))
    return b.add(ir.Transpose, child(path, "swap_hw"), (x,), perm=(0, 2, 1))  # x.transpose(-1, -2)


@lowers(sdt.Conv2MembraneSPS)
def _conv2_msps(b: Builder, m: sdt.Conv2MembraneSPS, path: str, x: str) -> str:
    x = _seq(b, m, path, x, "proj_conv", "proj_bn", "proj_lif", "maxpool", "proj_conv1", "proj_bn1", "maxpool1")
    feat = x  # float, pre-spike
    x = _seq(b, m, path, x, "proj_lif1", "rpe_conv", "rpe_bn")
    x = b.add(ir.Add, child(path, "rpe_add"), (x, feat))
    return b.add(ir.Transpose, child(path, "swap_hw"), (x,), perm=(0, 2, 1))  # x.transpose(-1, -2)


def _conv_unit(b, m, path, x, conv, bn, lif=None):
    x = lower(b, getattr(m, conv), child(path, conv), x)
    x = lower(b, getattr(m, bn), child(path, bn), x)
    return lower(b, getattr(m, lif), child(path, lif), x) if lif else x


def sdsa_heads(b: Builder, m, path: str, x: str) -> dict:
    """SDT attention's front: ``s = shortcut_lif(x)``, then Q/K/V = LIF(BN(Conv1x1(s))) as heads ``(h, N, d)``."""
    s = lower(b, m.shortcut_lif, child(path, "shortcut_lif"), x)
    heads = {}
    for t in "qkv":
        y = _conv_unit(b, m, path, s, f"{t}_conv", f"{t}_bn", f"{t}_lif")
        heads[t] = _heads_from_tokens(b, path, t, _tokens_from_map(b, path, t, y), m.num_heads)
    return heads


def sdsa_out(b: Builder, m, path: str, y: str, x: str, attn_lif: bool = False) -> str:
    """SDT attention's back: heads ``(h, N, d)`` to the ``(C, H, W)`` map of ``x``, [``attn_lif``],
    ``proj_bn(proj_conv(.))`` plus the membrane shortcut ``x``."""
    c, h, w = b.shape(x)
    y = b.add(ir.Transpose, child(path, "y_t"), (y,), perm=(0, 2, 1))  # transpose(2, 3)
    y = b.add(ir.Reshape, child(path, "y_map"), (y,), shape=(c, h, w))
    if attn_lif:
        y = lower(b, m.attn_lif, child(path, "attn_lif"), y)
    y = _conv_unit(b, m, path, y, "proj_conv", "proj_bn")
    return b.add(ir.Add, child(path, "shortcut_add"), (y, x))


@lowers(sdt.SDSA)
def _sdsa(b: Builder, m: sdt.SDSA, path: str, x: str) -> str:
    heads = sdsa_heads(b, m, path, x)
    kv = b.add(ir.Mul, child(path, "k_mul_v"), (heads["k"], heads["v"]))
    kv = b.add(ir.Sum, child(path, "kv_sum"), (kv,), axis=1, keepdim=True)  # sum over tokens
    kv = lower(b, m.talking_heads_lif, child(path, "talking_heads_lif"), kv)
    y = b.add(ir.Mul, child(path, "q_mul_kv"), (heads["q"], kv))  # (h, N, d)
    return sdsa_out(b, m, path, y, x)


@lowers(sdt.MSMLP)
def _msmlp(b: Builder, m: sdt.MSMLP, path: str, x: str) -> str:
    y = _seq(b, m, path, x, "fc_lif1", "fc_conv1", "fc_bn1", "fc_lif2", "fc_conv2", "fc_bn2")
    return b.add(ir.Add, child(path, "shortcut_add"), (y, x))


@lowers(sdt.SDTBlock)
def _sdt_block(b, m, path, x):
    return _seq(b, m, path, x, "attn", "mlp")


@lowers(sdt.SpikeDrivenTransformer)
def _sdt(b: Builder, m: sdt.SpikeDrivenTransformer, path: str, x: str) -> str:
    _check_neuron_steps(m)
    x = lower(b, m.patch_embed, child(path, "patch_embed"), x)
    for i, blk in enumerate(m.block):
        x = lower(b, blk, child(path, f"block.{i}"), x)
    x = b.add(ir.Flatten, "flat", (x,), start_dim=1, end_dim=2)
    x = b.add(ir.Mean, "token_mean", (x,), axis=1)  # x.flatten(-2).mean(2)
    x = lower(b, m.head_lif, child(path, "head_lif"), x)
    return _readout_head(b, m, path, x)


# ----------------------------------------------------------------------------- QKFormer


@lowers(qk.PatchInit)
def _patch_init(b: Builder, m: qk.PatchInit, path: str, x: str) -> str:
    s = _conv_unit(b, m, path, x, "proj_conv", "proj_bn", "proj_lif")
    a = _conv_unit(b, m, path, s, "proj1_conv", "proj1_bn", "proj1_lif")
    r = _conv_unit(b, m, path, s, "proj_res_conv", "proj_res_bn", "proj_res_lif")
    return b.add(ir.Add, child(path, "res_add"), (a, r))


@lowers(qk.PatchEmbedding)
def _patch_embed(b: Builder, m: qk.PatchEmbedding, path: str, x: str) -> str:
    a = _conv_unit(b, m, path, x, "proj3_conv", "proj3_bn", "proj3_lif")
    a = _seq(b, m, path, a, "proj4_conv", "proj4_bn", "proj4_maxpool", "proj4_lif")
    r = _conv_unit(b, m, path, x, "proj_res_conv", "proj_res_bn", "proj_res_lif")
    return b.add(ir.Add, child(path, "res_add"), (a, r))


def _channel_unit(b, m, path, x, conv, bn, lif):
    """lif(bn(conv1d(x))) on a (C, N) map."""
    return _seq(b, m, path, x, conv, bn, lif)


@lowers(qk.TokenQKAttention)
def _tssa(b: Builder, m: qk.TokenQKAttention, path: str, x: str) -> str:
    c, h, w = b.shape(x)
    heads, d = m.num_heads, c // m.num_heads
    x = b.add(ir.Flatten, child(path, "flat"), (x,), start_dim=1, end_dim=2)  # (C, N)
    q = _channel_unit(b, m, path, x, "q_conv", "q_bn", "q_lif")
    k = _channel_unit(b, m, path, x, "k_conv", "k_bn", "k_lif")
    q = b.add(ir.Reshape, child(path, "q_heads"), (q,), shape=(heads, d, h * w))
    q = b.add(ir.Sum, child(path, "q_sum"), (q,), axis=1, keepdim=True)  # per-head channel sum
    mask = lower(b, m.attn_lif, child(path, "attn_lif"), q)
    k = b.add(ir.Reshape, child(path, "k_heads"), (k,), shape=(heads, d, h * w))
    y = b.add(ir.Mul, child(path, "mask_mul_k"), (mask, k))
    y = b.add(ir.Flatten, child(path, "y_flat"), (y,), start_dim=0, end_dim=1)
    y = _channel_unit(b, m, path, y, "proj_conv", "proj_bn", "proj_lif")
    return b.add(ir.Reshape, child(path, "y_map"), (y,), shape=(c, h, w))


@lowers(qk.SpikingSelfAttention)
def _qk_ssa(b: Builder, m: qk.SpikingSelfAttention, path: str, x: str) -> str:
    c, h, w = b.shape(x)
    x = b.add(ir.Flatten, child(path, "flat"), (x,), start_dim=1, end_dim=2)  # (C, N)
    hs = {}
    for t in "qkv":
        y = _channel_unit(b, m, path, x, f"{t}_conv", f"{t}_bn", f"{t}_lif")
        y = b.add(ir.Transpose, child(path, f"{t}_tokens"), (y,), perm=(1, 0))  # (N, C)
        hs[t] = _heads_from_tokens(b, path, t, y, m.num_heads)
    kv = b.add(ir.MatMul, child(path, "kt_v"), (hs["k"], hs["v"]), transpose_a=True)  # k^T @ v
    y = b.add(ir.MatMul, child(path, "q_kv"), (hs["q"], kv), scale=m.scale)  # (q @ kv) * scale
    y = b.add(ir.Transpose, child(path, "y_t"), (y,), perm=(0, 2, 1))
    y = lower(b, m.attn_lif, child(path, "attn_lif"), y)
    y = b.add(ir.Reshape, child(path, "y_cn"), (y,), shape=(c, h * w))
    y = _channel_unit(b, m, path, y, "proj_conv", "proj_bn", "proj_lif")
    return b.add(ir.Reshape, child(path, "y_map"), (y,), shape=(c, h, w))


@lowers(qk.ConvMLP)
def _conv_mlp(b, m, path, x):
    return _seq(b, m, path, x, "fc_conv1", "fc_bn1", "fc_lif1", "fc_conv2", "fc_bn2", "fc_lif2")


@lowers(qk.TokenSpikingTransformer)
def _tst(b, m, path, x):
    return _residual_pair(b, m, path, x, "tssa")


@lowers(qk.SpikingTransformer)
def _st(b, m, path, x):
    return _residual_pair(b, m, path, x, "ssa")


@lowers(qk.QKFormer)
def _qkformer(b: Builder, m: qk.QKFormer, path: str, x: str) -> str:
    _check_neuron_steps(m)
    x = lower(b, m.patch_embed1, "patch_embed1", x)
    for stage, pe in (("stage1", "patch_embed2"), ("stage2", "patch_embed3"), ("stage3", None)):
        for i, blk in enumerate(getattr(m, stage)):
            x = lower(b, blk, f"{stage}.{i}", x)
        if pe:
            x = lower(b, getattr(m, pe), pe, x)
    x = b.add(ir.Flatten, "flat", (x,), start_dim=1, end_dim=2)
    x = b.add(ir.Mean, "token_mean", (x,), axis=1)
    return _readout_head(b, m, path, x)
