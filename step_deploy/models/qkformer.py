"""QKFormer (CIFAR variant) with STEP's module and parameter names.

Structure (``cls/models/static/qkformer_cifar.py`` in STEP; D = embed_dim),
all tensors ``(T*B, C, H, W)``::

    patch_embed1 (PatchInit, D/4):   s = LIF(BN(conv3x3(x)));
                                     x = LIF(BN(proj1_conv(s))) + LIF(BN(proj_res_conv1x1(s)))
    stage1 = [TokenSpikingTransformer(D/4)]      x = x + tssa(x); x = x + mlp(x)
    patch_embed2 (PatchEmbedding, D/2): LIF(BN(proj3_conv(x))) -> proj4_conv -> BN -> maxpool -> LIF
                                     + LIF(BN(proj_res_conv 1x1 stride 2 (x)))
    stage2 = [TokenSpikingTransformer(D/2)]
    patch_embed3 (PatchEmbedding, D)
    stage3 = [SpikingTransformer(D)] * (depths - 2)  x = x + ssa(x); x = x + mlp(x)
    head: Linear(mean_T(mean_HW(x)))

Token attention (tssa): mask = attn_lif_{0.5}(sum over each head's channels of q); y = mask * k.
SSA (ssa), linear order: y = attn_lif_{0.5}((q @ (k^T @ v)) * scale).

Deviations from STEP, both inert for STEP's own configs: ``tssa.q_lif`` runs
with the model's ``step`` (STEP builds it with ``node()``, i.e. the node class's
default step, 4 for LIF, which breaks T != 4: ``plan_from_step_args`` refuses such
checkpoints); it keeps STEP's ``tau=2.0, threshold=1.0`` defaults.
``num_heads`` is a real argument (STEP hard-codes 8; ``config_from_step_args``
restores that).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import NeuronSpec, SpikingTransformerBase, capture_config, maxpool_or_identity, pool_flags

__all__ = [
    "PatchInit",
    "PatchEmbedding",
    "TokenQKAttention",
    "SpikingSelfAttention",
    "ConvMLP",
    "TokenSpikingTransformer",
    "SpikingTransformer",
    "QKFormer",
]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False)


class PatchInit(nn.Module):
    """Stem without downsampling: ``(TB, in, H, W)`` -> spike sum ``(TB, dim, H, W)``."""

    def __init__(self, in_channels: int, dim: int, make_node: NeuronSpec):
        super().__init__()
        self.proj_conv = _conv(in_channels, dim // 2, 3)
        self.proj_bn = nn.BatchNorm2d(dim // 2)
        self.proj_lif = make_node()
        self.proj1_conv = _conv(dim // 2, dim, 3)
        self.proj1_bn = nn.BatchNorm2d(dim)
        self.proj1_lif = make_node()
        self.proj_res_conv = _conv(dim // 2, dim, 1)
        self.proj_res_bn = nn.BatchNorm2d(dim)
        self.proj_res_lif = make_node()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_lif(self.proj_bn(self.proj_conv(x)))
        x_feat = x
        x = self.proj1_lif(self.proj1_bn(self.proj1_conv(x)))
        x_feat = self.proj_res_lif(self.proj_res_bn(self.proj_res_conv(x_feat)))
        return x + x_feat


class PatchEmbedding(nn.Module):
    """Downsampling stage: ``(TB, in, H, W)`` -> ``(TB, dim, H/2, W/2)`` (or same size)."""

    def __init__(self, in_dim: int, dim: int, make_node: NeuronSpec, downsample: bool = True):
        super().__init__()
        self.proj3_conv = _conv(in_dim, dim, 3)
        self.proj3_bn = nn.BatchNorm2d(dim)
        self.proj3_lif = make_node()
        self.proj4_conv = _conv(dim, dim, 3)
        self.proj4_bn = nn.BatchNorm2d(dim)
        self.proj4_maxpool = maxpool_or_identity(downsample)
        self.proj4_lif = make_node()
        self.proj_res_conv = _conv(in_dim, dim, 1, stride=2 if downsample else 1)
        self.proj_res_bn = nn.BatchNorm2d(dim)
        self.proj_res_lif = make_node()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_feat = x
        x = self.proj3_lif(self.proj3_bn(self.proj3_conv(x)))
        x = self.proj4_lif(self.proj4_maxpool(self.proj4_bn(self.proj4_conv(x))))
        x_feat = self.proj_res_lif(self.proj_res_bn(self.proj_res_conv(x_feat)))
        return x + x_feat


class TokenQKAttention(nn.Module):
    """Q-K token attention (``tssa``): per head, a binary token mask from Q gates K."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec):
        super().__init__()
        self.num_heads = int(num_heads)
        self.q_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = make_node(tau=2.0, threshold=1.0)  # STEP: node() defaults
        self.k_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_lif = make_node()
        self.attn_lif = make_node(threshold=0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_node()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x
        x = x.flatten(2)  # (TB, C, N)
        q = self.q_lif(self.q_bn(self.q_conv(x)))
        k = self.k_lif(self.k_bn(self.k_conv(x)))
        q = q.unflatten(1, (self.num_heads, -1)).sum(dim=2, keepdim=True)  # (TB, heads, 1, N)
        attn = self.attn_lif(q)  # binary token mask per head
        y = attn.mul(k.unflatten(1, (self.num_heads, -1))).flatten(1, 2)
        y = self.proj_lif(self.proj_bn(self.proj_conv(y)))
        return y.reshape_as(x_in)


class SpikingSelfAttention(nn.Module):
    """Stage-3 SSA (``ssa``) in linear order ``(q @ (k^T @ v)) * scale``."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float = 0.125):
        super().__init__()
        self.num_heads = int(num_heads)
        self.scale = float(scale)
        self.q_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = make_node()
        self.k_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_lif = make_node()
        self.v_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.v_bn = nn.BatchNorm1d(dim)
        self.v_lif = make_node()
        self.attn_lif = make_node(threshold=0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_node()
        self.qkv_mp = nn.MaxPool1d(4)  # defined but unused, as in STEP

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(TB, C, N)`` -> ``(TB, heads, N, C/heads)``."""
        return x.transpose(1, 2).unflatten(2, (self.num_heads, -1)).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x
        x = x.flatten(2)
        q = self._heads(self.q_lif(self.q_bn(self.q_conv(x))))
        k = self._heads(self.k_lif(self.k_bn(self.k_conv(x))))
        v = self._heads(self.v_lif(self.v_bn(self.v_conv(x))))
        kv = k.transpose(-2, -1) @ v  # (TB, heads, d, d)
        y = (q @ kv) * self.scale  # (TB, heads, N, d)
        y = self.attn_lif(y.transpose(2, 3)).flatten(1, 2)  # (TB, C, N)
        y = self.proj_lif(self.proj_bn(self.proj_conv(y)))
        return y.reshape_as(x_in)


class ConvMLP(nn.Module):
    """``fc_conv1 -> fc_bn1 -> fc_lif1 -> fc_conv2 -> fc_bn2 -> fc_lif2`` (1x1 convs, spikes out)."""

    def __init__(self, dim: int, hidden: int, make_node: NeuronSpec):
        super().__init__()
        self.fc_conv1 = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc_bn1 = nn.BatchNorm2d(hidden)
        self.fc_lif1 = make_node()
        self.fc_conv2 = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc_bn2 = nn.BatchNorm2d(dim)
        self.fc_lif2 = make_node()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc_lif1(self.fc_bn1(self.fc_conv1(x)))
        return self.fc_lif2(self.fc_bn2(self.fc_conv2(x)))


class TokenSpikingTransformer(nn.Module):
    """``x = x + tssa(x); x = x + mlp(x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, make_node: NeuronSpec):
        super().__init__()
        self.tssa = TokenQKAttention(dim, num_heads, make_node)
        self.mlp = ConvMLP(dim, int(dim * mlp_ratio), make_node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tssa(x)
        return x + self.mlp(x)


class SpikingTransformer(nn.Module):
    """``x = x + ssa(x); x = x + mlp(x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, make_node: NeuronSpec, scale: float):
        super().__init__()
        self.ssa = SpikingSelfAttention(dim, num_heads, make_node, scale)
        self.mlp = ConvMLP(dim, int(dim * mlp_ratio), make_node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ssa(x)
        return x + self.mlp(x)


class QKFormer(SpikingTransformerBase):
    """Hierarchical QKFormer-CIFAR; STEP checkpoints (``qkformer_cifar``) load with ``strict=True``.

    ``depths`` counts all blocks: one in stage1, one in stage2, ``depths - 2`` in stage3.
    ``patch_size`` (1, 2 or 4) chooses how many of patch_embed2/3 downsample (STEP: 4).
    """

    arch = "qkformer"

    def __init__(self, step=4, img_size=32, patch_size=4, in_channels=3, num_classes=10,
                 embed_dim=384, num_heads=8, mlp_ratio=4, depths=4, tau=2.0, threshold=1.0,
                 attn_scale=0.125, encoding="direct", surrogate="sigmoid", alpha=4.0,
                 node="lif", compare=None, reset="hard", seed=0, levels=None):
        super().__init__(capture_config(locals()))
        if depths < 2:
            raise ValueError(f"qkformer: depths must be >= 2 (stage1 + stage2), got {depths}")
        d = embed_dim
        for dim in (d // 4, d // 2, d):
            self.check_heads(self.arch, dim, num_heads)
        down = pool_flags(patch_size, 2)
        mk = self.make_node
        self.patch_embed1 = PatchInit(in_channels, d // 4, mk)
        self.stage1 = nn.ModuleList([TokenSpikingTransformer(d // 4, num_heads, mlp_ratio, mk)])
        self.patch_embed2 = PatchEmbedding(d // 4, d // 2, mk, downsample=down[0])
        self.stage2 = nn.ModuleList([TokenSpikingTransformer(d // 2, num_heads, mlp_ratio, mk)])
        self.patch_embed3 = PatchEmbedding(d // 2, d, mk, downsample=down[1])
        self.stage3 = nn.ModuleList(
            SpikingTransformer(d, num_heads, mlp_ratio, mk, attn_scale) for _ in range(depths - 2)
        )
        self.head = nn.Linear(d, num_classes)

    def forward_encoded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed1(x)
        for blk in self.stage1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.stage2:
            x = blk(x)
        x = self.patch_embed3(x)
        for blk in self.stage3:
            x = blk(x)
        return self.head(self.time_mean(x.flatten(2).mean(2)))
