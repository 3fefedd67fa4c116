"""Spikformer (CIFAR variant) with STEP's module and parameter names.

Structure (``cls/models/static/spikformer_cifar.py`` in STEP; D = embed_dim)::

    patch_embed (SPS): 4 x [conv3x3(no bias) -> BN2d -> LIF], maxpool2 after the 3rd,
                       maxpool3 after the 4th; x_feat = x;
                       x = rpe_lif(rpe_bn(rpe_conv(x))) + x_feat     (spike + spike)
                       -> tokens (T*B, N, D)
    block[i]:          x = x + attn(x);  x = x + mlp(x)            (no LayerNorm)
      attn (SSA):      q/k/v = LIF(BN1d(Linear(x)));  attn = (q @ k^T) * scale;
                       x = attn_lif_{0.5}(attn @ v);  x = proj_lif(proj_bn(proj_linear(x)))
      mlp:             fc1_linear -> fc1_bn -> fc1_lif -> fc2_linear -> fc2_bn -> fc2_lif
    head:              Linear(mean_T(mean_tokens(x)))

STEP's layer swaps (``embed_layer``/``attn_layer``) that are supported: ``conv2_embed``
(:class:`Conv2SPS`, a 2-conv stem), ``random_ssa`` (:class:`RandomSSA`: Q/K projections
frozen during training, SSA at inference) and ``repconv_attn`` (:class:`RepConvSSA`).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import (
    Conv2StemLayers,
    NeuronSpec,
    attn_options,
    SpikingTransformerBase,
    SPSLayers,
    bn_tokens,
    capture_config,
    merge_heads,
    pick_layer,
    repconv,
    split_heads,
)

__all__ = ["SPS", "Conv2SPS", "SSA", "RandomSSA", "RepConvSSA", "MLP", "Block", "Spikformer", "EMBED_LAYERS", "ATTN_LAYERS"]



class SPS(SPSLayers):
    """Spiking Patch Splitting stem: ``(TB, C, H, W)`` -> tokens ``(TB, N, D)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_lif(self.proj_bn(self.proj_conv(x)))
        x = self.proj_lif1(self.proj_bn1(self.proj_conv1(x)))
        x = self.maxpool2(self.proj_lif2(self.proj_bn2(self.proj_conv2(x))))
        x = self.maxpool3(self.proj_lif3(self.proj_bn3(self.proj_conv3(x))))
        x_feat = x
        x = self.rpe_lif(self.rpe_bn(self.rpe_conv(x)))
        x = x + x_feat
        return x.flatten(2).transpose(1, 2)  # (TB, N, D), token n = h*W + w


class Conv2SPS(Conv2StemLayers):
    """STEP's ``conv2_embed`` stem: ``(TB, C, H, W)`` -> tokens ``(TB, N, D)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.proj_lif(self.proj_bn(self.proj_conv(x))))
        x = self.maxpool1(self.proj_lif1(self.proj_bn1(self.proj_conv1(x))))
        x_feat = x
        x = self.rpe_lif(self.rpe_bn(self.rpe_conv(x)))
        x = x + x_feat
        return x.flatten(2).transpose(1, 2)


class SSA(nn.Module):
    """Spiking Self-Attention: ``Y = attn_lif((Q @ K^T) * scale @ V)`` then projection."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float = 0.125):
        super().__init__()
        self.num_heads = int(num_heads)
        self.scale = float(scale)
        self.q_linear = nn.Linear(dim, dim)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = make_node(input_dims=dim)
        self.k_linear = nn.Linear(dim, dim)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_lif = make_node(input_dims=dim)
        self.v_linear = nn.Linear(dim, dim)
        self.v_bn = nn.BatchNorm1d(dim)
        self.v_lif = make_node(input_dims=dim)
        self.attn_lif = make_node(threshold=0.5, input_dims=dim)
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_node(input_dims=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q_lif(bn_tokens(self.q_bn, self.q_linear(x))), self.num_heads)
        k = split_heads(self.k_lif(bn_tokens(self.k_bn, self.k_linear(x))), self.num_heads)
        v = split_heads(self.v_lif(bn_tokens(self.v_bn, self.v_linear(x))), self.num_heads)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = merge_heads(attn @ v)  # (TB, N, C)
        x = self.attn_lif(x)
        return self.proj_lif(bn_tokens(self.proj_bn, self.proj_linear(x)))


class RandomSSA(SSA):
    """STEP's ``random_ssa``: SSA whose ``q_linear``/``k_linear`` stay at their random
    initialisation (``requires_grad=False``); same parameters and forward as :class:`SSA`."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float = 0.125):
        super().__init__(dim, num_heads, make_node, scale)
        for lin in (self.q_linear, self.k_linear):
            lin.weight.requires_grad_(False)
            lin.bias.requires_grad_(False)


class RepConvSSA(nn.Module):
    """STEP's ``repconv_attn`` for Spikformer: SSA whose Q/K/V/proj projections are RepConv stacks
    (:func:`~step_deploy.models.blocks.repconv`) on the ``(C, H, W)`` token map (``N = H*W``
    square), BN2d, LIF. Tokens ``(TB, N, C)`` in and out."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float = 0.125):
        super().__init__()
        self.num_heads = int(num_heads)
        self.scale = float(scale)
        for t in ("q", "k", "v"):
            setattr(self, f"{t}_linear", repconv(dim))
            setattr(self, f"{t}_bn", nn.BatchNorm2d(dim))
            setattr(self, f"{t}_lif", make_node())
        self.attn_lif = make_node(threshold=0.5)
        self.proj_linear = repconv(dim)
        self.proj_bn = nn.BatchNorm2d(dim)
        self.proj_lif = make_node()

    @staticmethod
    def token_map(x: torch.Tensor) -> torch.Tensor:
        """``(TB, N, C)`` -> ``(TB, C, H, W)`` with ``H = W = sqrt(N)``."""
        tb, n, c = x.shape
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"repconv_attn needs a square token map, got N={n}")
        return x.transpose(1, 2).reshape(tb, c, side, side)

    def _project(self, x: torch.Tensor, t: str) -> torch.Tensor:
        y = getattr(self, f"{t}_lif")(getattr(self, f"{t}_bn")(getattr(self, f"{t}_linear")(x)))
        return split_heads(y.flatten(2).transpose(1, 2), self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.token_map(x)
        q, k, v = (self._project(m, t) for t in "qkv")
        y = merge_heads(((q @ k.transpose(-2, -1)) * self.scale) @ v)  # (TB, N, C)
        y = self.attn_lif(self.token_map(y))
        y = self.proj_lif(self.proj_bn(self.proj_linear(y)))
        return y.flatten(2).transpose(1, 2)


EMBED_LAYERS = {"SPS": SPS, "conv2_embed": Conv2SPS}
#: STEP's names; :mod:`.seed_attention` adds ``statten``, ``a2os2a`` and ``bsa``
ATTN_LAYERS = {"SSA": SSA, "random_ssa": RandomSSA, "repconv_attn": RepConvSSA}


class MLP(nn.Module):
    """Token MLP: ``fc1_linear -> fc1_bn -> fc1_lif -> fc2_linear -> fc2_bn -> fc2_lif``."""

    def __init__(self, dim: int, hidden: int, make_node: NeuronSpec):
        super().__init__()
        self.fc1_linear = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = make_node(input_dims=hidden)
        self.fc2_linear = nn.Linear(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = make_node(input_dims=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1_lif(bn_tokens(self.fc1_bn, self.fc1_linear(x)))
        return self.fc2_lif(bn_tokens(self.fc2_bn, self.fc2_linear(x)))


class Block(nn.Module):
    """``x = x + attn(x); x = x + mlp(x)`` (spike maps add: values 0..n)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, make_node: NeuronSpec, scale: float,
                 attn_cls: type = SSA, attn_options: dict | None = None):
        super().__init__()
        self.attn = attn_cls(dim, num_heads, make_node, scale, **(attn_options or {}))
        self.mlp = MLP(dim, int(dim * mlp_ratio), make_node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(SpikingTransformerBase):
    """Spikformer-CIFAR; STEP checkpoints (``spikformer_cifar``) load with ``strict=True``.

    ``embed_layer`` (``SPS`` or ``conv2_embed``) and ``attn_layer`` (``SSA``, ``random_ssa`` or
    ``repconv_attn``) are STEP's layer-swap options, with STEP's names; ``attn_layer`` also takes the
    seed designs (:mod:`.seed_attention`): ``statten`` (blocks of ``chunk_size`` steps), ``a2os2a``
    and ``bsa`` (Shiftmax with ``shiftmax_bits`` fractional bits).
    """

    arch = "spikformer"

    def __init__(self, step=4, img_size=32, patch_size=4, in_channels=3, num_classes=10,
                 embed_dim=384, num_heads=12, mlp_ratio=4, depths=4, tau=2.0, threshold=1.0,
                 attn_scale=0.125, encoding="direct", surrogate="sigmoid", alpha=4.0,
                 node="lif", compare=None, reset="hard", seed=0, embed_layer="SPS", attn_layer="SSA",
                 levels=None, chunk_size=2, shiftmax_bits=16):
        super().__init__(capture_config(locals()))
        self.check_heads(self.arch, embed_dim, num_heads)
        stem = pick_layer(self.arch, "embed_layer", embed_layer, EMBED_LAYERS)
        attn = pick_layer(self.arch, "attn_layer", attn_layer, ATTN_LAYERS)
        options = attn_options(attn, chunk_size=chunk_size, shiftmax_bits=shiftmax_bits)
        self.patch_embed = stem(in_channels, embed_dim, self.make_node, patch_size)
        self.block = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, self.make_node, attn_scale, attn, options) for _ in range(depths)
        )
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_encoded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        x = self.time_mean(x.mean(1))  # mean over tokens, then over T -> (B, D)
        return self.head(x)
