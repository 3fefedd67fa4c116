"""Spikformer with SEMM, the Spiking Experts Mixture (Zhou et al., NeurIPS 2024), as STEP builds it.

STEP's ``cls/models/static/spikf_semm_cifar.py`` (timm name ``spikf_semm_cifar``), with its module
and parameter names, so STEP checkpoints load with ``strict=True``. D = embed_dim, E = num_expert,
E_d = expert_dim; tokens ``(T*B, N, D)``; every neuron STEP's LIF (the model's ``node``)::

    patch_embed (SPS): Spikformer's stem                                  -> x (spike sums 0..2)
    block[i]:  x = x + attn(x);  x = x + mlp(x)
      attn (EMSA, STEP's ``SSA``; ``num_heads`` is unused):
        K = k_lif(k_bn(k_linear(x)))              (N, E_d)  binary
        V = v_lif(v_bn(v_linear(x)))              (N, D)    binary
        R = router3(reshape(router2(router1(x)ᵀ)))  (N, E)  binary, one spike per token and expert
        for each expert i:  Q_i = ff_list[i](x)   (Linear D->E_d, BN, LIF: always tau 2, θ 1)
                            O_i = lif_list[i]((Q_i @ Kᵀ) @ V * attn_scale)
        y = Σ_i R[:, i] ⊙ O_i                     (integer 0..E)
        out = proj_lif(proj_bn(proj_linear(y)))
      mlp (EMSP, STEP's ``MLP``):
        h = fc1_lif(fc1_bn(fc1_linear(x)))         (N, 4D);  h1, h2 = the two channel halves
        g = dw_lif(dw_bn(dw_conv3x3(h1 on the sqrt(N) x sqrt(N) token grid)))   (depthwise, no bias)
        out = fc2_lif(fc2_bn(fc2_linear(g ⊙ h2)))
    head: Linear(mean_T(mean_tokens(x)))

What differs from STEP's code, on purpose (research/seed_models.md §2.6):

* STEP's ``MLP_Unit`` reshapes with a literal 4 and builds its stem without ``step``: its model is
  consistent only for T = 4. Here every layer uses the model's T; loading a STEP checkpoint whose
  ``args.step`` is not 4 is refused (``step_args.plan_from_step_args``).
* STEP hard-codes the EMSP token grid as 8 x 8 (CIFAR, patch 4); here the grid is ``sqrt(N)`` (the
  same for CIFAR; square token maps only).

Reproduced as STEP computes it: the router's BatchNorm output ``(E, N)`` is *reshaped*, not
transposed, to ``(N, E)`` (``router_layout='step'``, the default; ``'tokens'`` transposes it back,
which STEP checkpoints do not match); the Q-expert neurons are STEP ``LIFNode`` (tau 2, θ 1,
``>=``, hard reset) whatever ``node``/``tau``/``threshold`` say; ``(Q Kᵀ) V`` is scaled after the
second product.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import NeuronSpec, SpikingTransformerBase, bn_tokens, capture_config, pick_layer, pool_flags
from .neurons import make_neuron
from .spikformer import SPS, Conv2SPS, Spikformer

__all__ = ["SEMMExpertUnit", "EMSA", "RandomEMSA", "EMSP", "SEMMBlock", "SpikformerSEMM", "EMBED_LAYERS",
           "ATTN_LAYERS", "ROUTER_LAYOUTS"]

ROUTER_LAYOUTS = ("step", "tokens")


def _step_lif(step: int) -> nn.Module:
    """STEP's ``LIFNode()`` as ``MLP_Unit`` builds it: tau 2, threshold 1, sigmoid surrogate (alpha 4)."""
    return make_neuron("lif", tau=2.0, threshold=1.0, step=step, surrogate="sigmoid", alpha=4.0, compare=">=")


class SEMMExpertUnit(nn.Module):
    """One head-wise expert's query (STEP's ``MLP_Unit``): ``unit_lif(unit_bn(unit_linear(x)))``,
    ``(T*B, N, D)`` -> ``(T*B, N, E_d)`` binary."""

    def __init__(self, dim: int, expert_dim: int, step: int):
        super().__init__()
        self.unit_linear = nn.Linear(dim, expert_dim)
        self.unit_bn = nn.BatchNorm1d(expert_dim)
        self.unit_lif = _step_lif(step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit_lif(bn_tokens(self.unit_bn, self.unit_linear(x)))


class EMSA(nn.Module):
    """Experts-mixture spiking attention (STEP's SEMM ``SSA``); see the module docstring."""

    def __init__(self, dim: int, make_node: NeuronSpec, scale: float = 0.125, expert_dim: int = 96,
                 num_expert: int = 4, router_layout: str = "step", tokens: int = 64):
        super().__init__()
        if router_layout not in ROUTER_LAYOUTS:
            raise ValueError(f"spikformer_semm: router_layout={router_layout!r}, expected one of {ROUTER_LAYOUTS}")
        self.tokens = int(tokens)
        self.scale = float(scale)
        self.num_expert = int(num_expert)
        self.expert_dim = int(expert_dim)
        self.router_layout = router_layout
        self.k_linear = nn.Linear(dim, expert_dim)
        self.k_bn = nn.BatchNorm1d(expert_dim)
        self.k_lif = make_node()
        self.v_linear = nn.Linear(dim, dim)
        self.v_bn = nn.BatchNorm1d(dim)
        self.v_lif = make_node()
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_node()
        self.router1 = nn.Linear(dim, num_expert)
        self.router2 = nn.BatchNorm1d(num_expert)
        self.router3 = make_node()
        self.ff_list = nn.ModuleList(SEMMExpertUnit(dim, expert_dim, make_node.step) for _ in range(num_expert))
        self.lif_list = nn.ModuleList(make_node() for _ in range(num_expert))

    def router(self, x: torch.Tensor) -> torch.Tensor:
        """Router spikes ``(T*B, N, E)``; with ``router_layout='step'`` the BN output ``(E, N)`` of each
        row is read as ``(N, E)`` (STEP's reshape)."""
        r = self.router2(self.router1(x).transpose(-1, -2))  # (TB, E, N)
        r = r.reshape(-1, self.tokens, self.num_expert) if self.router_layout == "step" else r.transpose(-1, -2)
        return self.router3(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k_lif(bn_tokens(self.k_bn, self.k_linear(x)))
        v = self.v_lif(bn_tokens(self.v_bn, self.v_linear(x)))
        r = self.router(x)
        y = None
        for i, (unit, lif) in enumerate(zip(self.ff_list, self.lif_list)):
            out = lif(((unit(x) @ k.transpose(-1, -2)) @ v) * self.scale)
            out = r[..., i:i + 1] * out
            y = out if y is None else y + out
        return self.proj_lif(bn_tokens(self.proj_bn, self.proj_linear(y)))


class RandomEMSA(EMSA):
    """STEP's SEMM ``random_attn``: :class:`EMSA` whose ``k_linear``/``v_linear`` stay at their random
    initialisation during training (``requires_grad=False``); the same forward at inference."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for lin in (self.k_linear, self.v_linear):
            lin.weight.requires_grad_(False)
            lin.bias.requires_grad_(False)


class EMSP(nn.Module):
    """Experts-mixture spiking perceptron (STEP's SEMM ``MLP``); see the module docstring."""

    def __init__(self, dim: int, hidden: int, make_node: NeuronSpec, tokens: int = 64):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"spikformer_semm: the MLP hidden width {hidden} must be even (it is split in halves)")
        self.tokens, self.side = int(tokens), self.grid_side(int(tokens))
        half = hidden // 2
        self.fc1_linear = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = make_node()
        self.dw_conv = nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1, groups=half, bias=False)
        self.dw_bn = nn.BatchNorm2d(half)
        self.dw_lif = make_node()
        self.fc2_linear = nn.Linear(half, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = make_node()

    @staticmethod
    def grid_side(n: int) -> int:
        """Side of the square token grid of ``n`` tokens (STEP: always 8)."""
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"spikformer_semm: the MLP's depthwise conv needs a square token grid, got N={n} tokens")
        return side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1_lif(bn_tokens(self.fc1_bn, self.fc1_linear(x)))
        h1, h2 = torch.chunk(h, 2, dim=-1)
        half = self.dw_conv.in_channels
        g = h1.reshape(-1, self.side, self.side, half).permute(0, 3, 1, 2).contiguous()  # token n = row*side + col
        g = self.dw_lif(self.dw_bn(self.dw_conv(g))).permute(0, 2, 3, 1).reshape(-1, self.tokens, half)
        return self.fc2_lif(bn_tokens(self.fc2_bn, self.fc2_linear(g * h2)))


EMBED_LAYERS = {"SPS": SPS, "conv2_embed": Conv2SPS}
ATTN_LAYERS = {"SSA": EMSA, "random_attn": RandomEMSA}


class SEMMBlock(nn.Module):
    """``x = x + attn(x); x = x + mlp(x)`` (spike sums add, as in Spikformer)."""

    def __init__(self, dim: int, mlp_ratio: float, make_node: NeuronSpec, scale: float, expert_dim: int,
                 num_expert: int, router_layout: str, tokens: int, attn_cls: type = EMSA):
        super().__init__()
        self.attn = attn_cls(dim, make_node, scale, expert_dim, num_expert, router_layout, tokens)
        self.mlp = EMSP(dim, int(dim * mlp_ratio), make_node, tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SpikformerSEMM(SpikingTransformerBase):
    """Spikformer + SEMM (family ``spikformer_semm``, STEP's ``spikf_semm_cifar``); STEP checkpoints
    load with ``strict=True``. ``num_heads`` is accepted and unused (as in STEP); ``expert_dim``
    (96) and ``num_expert`` (4) are STEP's hard-coded defaults; only ``expert_mode='base'`` (V and
    the projection at D channels) is supported (STEP's ``'small'`` cannot run its own reshape)."""

    arch = "spikformer_semm"

    def __init__(self, step=4, img_size=32, patch_size=4, in_channels=3, num_classes=10,
                 embed_dim=384, num_heads=12, mlp_ratio=4, depths=4, tau=2.0, threshold=1.0,
                 attn_scale=0.125, encoding="direct", surrogate="sigmoid", alpha=4.0,
                 node="lif", compare=None, reset="hard", seed=0, embed_layer="SPS", attn_layer="SSA",
                 levels=None, expert_dim=96, num_expert=4, expert_mode="base", router_layout="step"):
        super().__init__(capture_config(locals()))
        if expert_mode != "base":
            raise ValueError(f"spikformer_semm: expert_mode={expert_mode!r} is not supported; use 'base' (STEP's "
                             f"'small' reshapes V with D channels after projecting it to expert_dim, which fails)")
        for key, val in (("expert_dim", expert_dim), ("num_expert", num_expert)):
            if int(val) < 1:
                raise ValueError(f"spikformer_semm: {key} must be >= 1, got {val}")
        stem = pick_layer(self.arch, "embed_layer", embed_layer, EMBED_LAYERS)
        attn = pick_layer(self.arch, "attn_layer", attn_layer, ATTN_LAYERS)
        self.patch_embed = stem(in_channels, embed_dim, self.make_node, patch_size)
        side = int(img_size)
        for active in pool_flags(patch_size, 2):  # the stem's MaxPool2d(3, 2, 1): ceil(side / 2)
            side = (side - 1) // 2 + 1 if active else side
        self.block = nn.ModuleList(
            SEMMBlock(embed_dim, mlp_ratio, self.make_node, attn_scale, int(expert_dim), int(num_expert),
                      router_layout, side * side, attn) for _ in range(depths)
        )
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """STEP's initialisation: Linear weights truncated normal (std 0.02), biases 0."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)

    #: Spikformer's: stem, blocks, mean over tokens, then over T, head
    forward_encoded = Spikformer.forward_encoded
