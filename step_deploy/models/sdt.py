"""Spike-driven Transformer v1 (CIFAR variant) with STEP's names.

Structure (``cls/models/static/sdt_cifar.py`` in STEP; D = embed_dim)::

    patch_embed (membrane-shortcut SPS):
        3 x [conv3x3 -> BN2d -> LIF] (maxpool2 after the 3rd);
        x = maxpool3(proj_bn3(proj_conv3(x)));  x_feat = x  (float, pre-spike)
        x = rpe_bn(rpe_conv(proj_lif3(x))) + x_feat;  x = x.transpose(-1, -2)  (H <-> W)
        (rpe_lif exists, as in STEP, but is not used)
    block[i]:  x = attn(x); x = mlp(x)          (each adds its own identity)
      attn (SDSA): s = shortcut_lif(x); q/k/v = LIF(BN2d(Conv1x1(s)));
                   kv = talking_heads_lif(sum_tokens(k * v)); y = q * kv;
                   x = proj_bn(proj_conv(y)) + x     (membrane shortcut)
                   (talking_heads Conv1d and attn_lif exist but are unused, as in STEP)
      mlp:         x = fc_bn2(fc_conv2(fc_lif2(fc_bn1(fc_conv1(fc_lif1(x)))))) + x
    head:  head_lif(mean_tokens(x)) -> mean_T -> Linear      (head_lif: tau fixed at 2.0)

STEP builds the blocks with ``tau=2.0`` whatever ``args.tau`` says; ``block_tau=2.0``
reproduces that for STEP checkpoints (our own default, ``None``, uses ``tau`` everywhere).
Supported STEP layer swaps: ``conv2_embed`` (:class:`Conv2MembraneSPS`), ``random_sdsa``
(:class:`RandomSDSA`: Q/K convs frozen during training, SDSA at inference) and
``repconv_attn`` (:class:`RepConvSDSA`).
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
    capture_config,
    pick_layer,
    repconv,
)

__all__ = ["MembraneSPS", "Conv2MembraneSPS", "SDSA", "RandomSDSA", "RepConvSDSA", "MSMLP", "SDTBlock", "SpikeDrivenTransformer",
           "EMBED_LAYERS", "ATTN_LAYERS"]



class MembraneSPS(SPSLayers):
    """SDT stem: ``(TB, C, H, W)`` -> float feature map ``(TB, D, W', H')`` (H/W swapped)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_lif(self.proj_bn(self.proj_conv(x)))
        x = self.proj_lif1(self.proj_bn1(self.proj_conv1(x)))
        x = self.maxpool2(self.proj_lif2(self.proj_bn2(self.proj_conv2(x))))
        x = self.maxpool3(self.proj_bn3(self.proj_conv3(x)))
        x_feat = x
        x = self.rpe_bn(self.rpe_conv(self.proj_lif3(x)))
        x = x + x_feat
        return x.transpose(-1, -2)  # STEP swaps H and W here; kept for parity


class Conv2MembraneSPS(Conv2StemLayers):
    """STEP-SDT's ``conv2_embed`` stem: float feature map ``(TB, D, W', H')`` (H/W swapped);
    ``rpe_lif`` exists, as in STEP, but is not used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.proj_lif(self.proj_bn(self.proj_conv(x))))
        x = self.maxpool1(self.proj_bn1(self.proj_conv1(x)))
        x_feat = x  # float, pre-spike
        x = self.rpe_bn(self.rpe_conv(self.proj_lif1(x)))
        x = x + x_feat
        return x.transpose(-1, -2)


class SDSA(nn.Module):
    """Spike-Driven Self-Attention with membrane shortcut, ``(TB, C, H, W)`` in and out."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec):
        super().__init__()
        self.num_heads = int(num_heads)
        self.shortcut_lif = make_node()
        self.q_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.q_bn = nn.BatchNorm2d(dim)
        self.q_lif = make_node()
        self.k_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.k_bn = nn.BatchNorm2d(dim)
        self.k_lif = make_node()
        self.v_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.v_bn = nn.BatchNorm2d(dim)
        self.v_lif = make_node()
        self.attn_lif = make_node(threshold=0.5)  # unused (as in STEP / BICLab)
        self.talking_heads = nn.Conv1d(num_heads, num_heads, kernel_size=1, stride=1, bias=False)  # unused
        self.talking_heads_lif = make_node()  # STEP: model threshold (1.0); BICLab used 0.5
        self.proj_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm2d(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(TB, C, H, W)`` -> ``(TB, heads, N, C/heads)``."""
        return x.flatten(2).transpose(1, 2).unflatten(2, (self.num_heads, -1)).permute(0, 2, 1, 3)

    def qkv_heads(self, x: torch.Tensor):
        """``s = shortcut_lif(x)``; Q, K, V = LIF(BN(Conv1x1(s))) as heads ``(TB, heads, N, d)``."""
        s = self.shortcut_lif(x)
        return tuple(self._heads(getattr(self, f"{t}_lif")(getattr(self, f"{t}_bn")(getattr(self, f"{t}_conv")(s))))
                     for t in "qkv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        q, k, v = self.qkv_heads(x)
        kv = k.mul(v).sum(dim=-2, keepdim=True)  # (TB, heads, 1, d): per-channel token count
        kv = self.talking_heads_lif(kv)
        y = q.mul(kv)  # (TB, heads, N, d)
        y = y.transpose(2, 3).flatten(1, 2).reshape_as(identity)  # channel = head*d + j
        return self.proj_bn(self.proj_conv(y)) + identity


class RandomSDSA(SDSA):
    """STEP's ``random_sdsa``: SDSA whose ``q_conv``/``k_conv`` stay at their random
    initialisation (``requires_grad=False``); same parameters and forward as :class:`SDSA`."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec):
        super().__init__(dim, num_heads, make_node)
        self.q_conv.weight.requires_grad_(False)
        self.k_conv.weight.requires_grad_(False)


class RepConvSDSA(SDSA):
    """STEP's ``repconv_attn`` for SDT: SDSA whose ``q_conv``/``k_conv``/``v_conv``/``proj_conv``
    are RepConv stacks (:func:`~step_deploy.models.blocks.repconv`; ``proj_conv`` has no bias)."""

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec):
        super().__init__(dim, num_heads, make_node)
        for name in ("q_conv", "k_conv", "v_conv", "proj_conv"):
            setattr(self, name, repconv(dim))


EMBED_LAYERS = {"SPS": MembraneSPS, "conv2_embed": Conv2MembraneSPS}
#: STEP's names; :mod:`.seed_attention` adds ``statten``
ATTN_LAYERS = {"SDSA": SDSA, "random_sdsa": RandomSDSA, "repconv_attn": RepConvSDSA}


class MSMLP(nn.Module):
    """Spike-before-weight MLP with membrane shortcut, ``(TB, C, H, W)`` in and out."""

    def __init__(self, dim: int, hidden: int, make_node: NeuronSpec):
        super().__init__()
        self.fc_lif1 = make_node()
        self.fc_conv1 = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc_bn1 = nn.BatchNorm2d(hidden)
        self.fc_lif2 = make_node()
        self.fc_conv2 = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc_bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.fc_bn1(self.fc_conv1(self.fc_lif1(x)))
        x = self.fc_bn2(self.fc_conv2(self.fc_lif2(x)))
        return x + identity


class SDTBlock(nn.Module):
    """``x = attn(x); x = mlp(x)`` (residuals inside)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, make_node: NeuronSpec,
                 attn_cls: type = SDSA, attn_options: dict | None = None):
        super().__init__()
        self.attn = attn_cls(dim, num_heads, make_node, **(attn_options or {}))
        self.mlp = MSMLP(dim, int(dim * mlp_ratio), make_node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


class SpikeDrivenTransformer(SpikingTransformerBase):
    """SDT v1 CIFAR; STEP checkpoints (``sdt_cifar``) load with ``strict=True``.

    ``attn_scale`` is accepted (STEP passes it) but SDSA has no scaling. ``embed_layer``
    (``SPS``/``conv2_embed``) and ``attn_layer`` (``SDSA``/``random_sdsa``/``repconv_attn``) are STEP's layer
    swaps; ``block_tau`` (default: ``tau``) is the tau of the blocks' neurons. ``attn_layer='statten'``
    is STAtten's attention (:class:`~.seed_attention.STAttenSDSA`, blocks of ``chunk_size`` steps);
    ``shiftmax_bits`` is accepted for symmetry with Spikformer (no SDT layer uses it).
    """

    arch = "sdt"

    def __init__(self, step=4, img_size=32, patch_size=4, in_channels=3, num_classes=10,
                 embed_dim=512, num_heads=8, mlp_ratio=4, depths=2, tau=2.0, threshold=1.0,
                 attn_scale=0.125, encoding="direct", surrogate="sigmoid", alpha=4.0,
                 node="lif", compare=None, reset="hard", seed=0, embed_layer="SPS", attn_layer="SDSA",
                 block_tau=None, levels=None, chunk_size=2, shiftmax_bits=16):
        super().__init__(capture_config(locals()))
        self.check_heads(self.arch, embed_dim, num_heads)
        stem = pick_layer(self.arch, "embed_layer", embed_layer, EMBED_LAYERS)
        attn = pick_layer(self.arch, "attn_layer", attn_layer, ATTN_LAYERS)
        options = attn_options(attn, chunk_size=chunk_size, shiftmax_bits=shiftmax_bits)
        block_node = self.make_node if block_tau is None else self.make_node.with_tau(block_tau)
        self.patch_embed = stem(in_channels, embed_dim, self.make_node, patch_size)
        self.block = nn.ModuleList(
            SDTBlock(embed_dim, num_heads, mlp_ratio, block_node, attn, options) for _ in range(depths)
        )
        self.head_lif = self.make_node(tau=2.0)  # STEP hard-codes tau=2.0 here
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_encoded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        x = self.head_lif(x.flatten(2).mean(2))  # (TB, D) spikes
        return self.head(self.time_mean(x))
