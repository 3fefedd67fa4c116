"""The seed attention designs as Spikformer / SDT attention layers, and the ternary neuron they use.

Tokens are STEP's time-major ``(T*B, N, C)`` (Spikformer) or ``(T*B, C, H, W)`` (SDT); heads split
channel ``c = head*d + j`` as in :func:`~step_deploy.models.blocks.split_heads`. Per head, with Q, K,
V of one step ``t`` as ``(N, d)`` matrices:

=====================  ==========================================================================
class (``attn_layer``)  per step ``t``
=====================  ==========================================================================
``STAttenSSA``          ``M_c = Σ_{τ in block c} K_τᵀ V_τ`` (blocks of ``chunk_size`` steps),
(``statten``)           ``Y_t = (Q_t @ M_c) * scale``; ``attn_lif`` (θ = 0.5), projection
``STAttenSDSA``         the same on SDT's N = H·W tokens, ``scale = 1/H``; membrane shortcut
(SDT ``statten``)
``A2OS2ASSA``           Q binary, ``K = ReLU(BN(Linear(x)))`` (real), V ternary;
(``a2os2a``)            ``Y_t = (Q_t @ K_tᵀ) @ V_t`` (no scale, no softmax); ``attn_lif`` (θ = 0.5)
``BipolarSSA``          Q, K ternary, V binary; ``Y_t = shiftmax(Q_t @ K_tᵀ) @ V_t``; ``attn_lif``
(``bsa``)               (θ = 0.5)
=====================  ==========================================================================

Importing this module registers the neuron ``tlif`` with :func:`~step_deploy.models.neurons.make_neuron`
and the layers in Spikformer's and SDT's ``ATTN_LAYERS`` (``step_deploy.models`` imports it).
Facts and open questions: ``research/seed_models.md`` §1 (STAtten), §3 (A²OS²A), §4 (BSA).
"""
from __future__ import annotations

import torch
from torch import nn

from . import sdt as _sdt
from . import spikformer as _spikformer
from .blocks import NeuronSpec, bn_tokens, merge_heads, split_heads
from .neurons import NEURONS, LIFNode

__all__ = ["TernaryLIFNode", "shiftmax", "block_sum", "STAttenSSA", "STAttenSDSA", "A2OS2ASSA", "BipolarSSA",
           "ternary_node", "check_chunk_size"]


class TernaryLIFNode(LIFNode):
    """LIF neuron with signed spikes ``{-1, 0, +1}`` (short name ``tlif``)::

        H[t] = V[t-1] + (X[t] - V[t-1]) / tau                   (LIF charge, tau = 2 by default)
        S[t] = [H[t] >= θ] - [H[t] <= -θ]                        (``>``/``<`` with compare='>')
        V[t] = H[t] · (1 - |S[t]|)                               (hard reset on either polarity)
        V[t] = H[t] - S[t] · θ                                   (reset='soft')

    Each threshold has its own surrogate gradient (``act_fun`` at ``H - θ`` and at ``-H - θ``).
    ``neuron_params()`` is the IR ``Neuron`` with ``output='ternary'``. The A²OS²A reimplementation
    uses this LIF form (research/seed_models.md §3.4). The Ternary Spike paper's own neuron is
    ``m ← 0.25·m + x`` with thresholds ±0.5: ``tau = 4/3`` gives its decay, but this charge also scales
    the input by ``1/tau``, so that neuron is this one only up to the input scale (not built)."""

    kind = "tlif"

    def fire(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.act_fun(h - self.threshold) - self.act_fun(-h - self.threshold)
        s_r = s.detach() if self.detach_reset else s
        # the base's hard reset is V = H·(1 - s_r): it needs |S|; its soft reset V = H - s_r·θ needs S
        return s, (s_r.abs() if self.reset_mode == "hard" else s_r)

    def neuron_params(self) -> dict:
        return dict(super().neuron_params(), output="ternary")


NEURONS["tlif"] = TernaryLIFNode


def ternary_node(make_node: NeuronSpec, threshold: float | None = None) -> TernaryLIFNode:
    """A :class:`TernaryLIFNode` with the model's T, tau, threshold, surrogate and compare."""
    return TernaryLIFNode(tau=make_node.tau, threshold=make_node.threshold if threshold is None else threshold,
                          step=make_node.step, surrogate=make_node.surrogate, alpha=make_node.alpha,
                          compare=make_node.compare or ">=")


def shiftmax(x: torch.Tensor, dim: int = -1, frac_bits: int = 16) -> torch.Tensor:
    """Bipolar self-attention's shift-based softmax over ``dim`` (the IR op ``Shiftmax``)::

        Δ   = x - max_dim(x)
        num = 2^Δ  where Δ >= -frac_bits, else 0
        den = 2^ceil(log2 Σ_dim num)
        y   = num / den                    (every row sums to a value in (1/2, 1])

    ``den`` is piecewise constant: the gradient flows through ``num`` only. On integer scores
    every value is exact in float32 (powers of two; row sums of at most 2^(24 - frac_bits) terms)."""
    if not 0 <= int(frac_bits) <= 30:
        raise ValueError(f"shiftmax: frac_bits={frac_bits} must be in 0..30")
    delta = x - x.amax(dim=dim, keepdim=True).detach()
    num = torch.where(delta >= -int(frac_bits), torch.exp2(delta), torch.zeros_like(delta))
    total = num.detach().sum(dim=dim, keepdim=True)
    mant, exp = torch.frexp(total)  # total = mant · 2^exp, mant in [1/2, 1): a power of two has mant == 1/2
    exp = torch.where(mant == 0.5, exp - 1, exp)
    return num / torch.ldexp(torch.ones_like(total), exp)


def check_chunk_size(where: str, steps: int, chunk_size: int) -> int:
    """``chunk_size`` as an int; a ValueError naming both numbers unless it divides T."""
    c = int(chunk_size)
    if c < 1 or steps % c:
        raise ValueError(f"{where}: chunk_size={chunk_size} must be >= 1 and divide the number of time steps "
                         f"T={steps} (STAtten sums K^T V over blocks of chunk_size consecutive steps); "
                         f"choose a chunk_size that divides T, or another T")
    return c


def block_sum(x: torch.Tensor, steps: int, block: int) -> torch.Tensor:
    """``(T*B, ...)`` -> ``(T*B, ...)``: every step gets the sum over its block of ``block``
    consecutive steps (blocks aligned at step 0; the IR op ``TemporalBlockSum``)."""
    xt = x.unflatten(0, (steps // block, block, -1))  # (blocks, block, B, ...)
    return xt.sum(dim=1, keepdim=True).expand_as(xt).flatten(0, 2)


def _statten(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, steps: int, block: int, scale: float) -> torch.Tensor:
    """``(Q_t @ M_c) * scale`` with ``M_c = Σ_{τ in block} K_τᵀ V_τ``; Q, K, V ``(T*B, heads, N, d)``."""
    kv = k.transpose(-2, -1) @ v  # K_tᵀ V_t per step: (TB, heads, d, d)
    return (q @ block_sum(kv, steps, block)) * scale


class STAttenSSA(_spikformer.SSA):
    """STAtten on Spikformer's SSA (the paper's Spikformer variant; same layers and keys as SSA)::

        KV_t = K_tᵀ V_t                      (per head, d × d, integer counts)
        M_t  = Σ_{τ in the block of t} KV_τ  (blocks of chunk_size steps: non-causal inside a block)
        Y_t  = (Q_t @ M_t) * scale           (association Q·(KᵀV), as the official code)
        out  = proj_lif(proj_bn(proj_linear(attn_lif_{0.5}(merge_heads(Y)))))

    ``scale`` is Spikformer's ``attn_scale`` (0.125). T must be a multiple of ``chunk_size``."""

    options = ("chunk_size",)

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float = 0.125, chunk_size: int = 2):
        super().__init__(dim, num_heads, make_node, scale)
        self.step = make_node.step
        self.chunk_size = check_chunk_size("STAttenSSA", self.step, chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q_lif(bn_tokens(self.q_bn, self.q_linear(x))), self.num_heads)
        k = split_heads(self.k_lif(bn_tokens(self.k_bn, self.k_linear(x))), self.num_heads)
        v = split_heads(self.v_lif(bn_tokens(self.v_bn, self.v_linear(x))), self.num_heads)
        x = self.attn_lif(merge_heads(_statten(q, k, v, self.step, self.chunk_size, self.scale)))
        return self.proj_lif(bn_tokens(self.proj_bn, self.proj_linear(x)))


class STAttenSDSA(_sdt.SDSA):
    """STAtten on SDT v1 (the official code's model ``sdt``; SDSA's layers and keys)::

        S = shortcut_lif(X);  Q, K, V = LIF(BN(Conv1x1(S)))           (binary, (T*B, C, H, W))
        Y_t = (Q_t @ Σ_{τ in block} K_τᵀ V_τ) * scale,  scale = 1/H    (official static mode)
        out = proj_bn(proj_conv(attn_lif_{0.5}(merge_heads(Y)))) + X   (membrane shortcut)

    ``scale=None`` (default) takes ``1/H`` of the token map it sees (the official code computes
    ``(KᵀV)·s`` before multiplying by Q; with a power-of-two ``1/H`` both orders are exact). SDSA's
    ``talking_heads``/``talking_heads_lif`` stay (present but unused in STAtten mode, as officially)."""

    options = ("chunk_size",)

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, chunk_size: int = 2,
                 scale: float | None = None):
        super().__init__(dim, num_heads, make_node)
        self.step = make_node.step
        self.chunk_size = check_chunk_size("STAttenSDSA", self.step, chunk_size)
        self.scale = None if scale is None else float(scale)

    def token_scale(self, x: torch.Tensor) -> float:
        """The scale used on a ``(T*B, C, H, W)`` input: ``scale`` or ``1/H``."""
        return 1.0 / x.shape[-2] if self.scale is None else self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        q, k, v = self.qkv_heads(x)
        y = _statten(q, k, v, self.step, self.chunk_size, self.token_scale(x))  # (TB, heads, N, d)
        y = y.transpose(2, 3).flatten(1, 2).reshape_as(identity)  # channel = head*d + j
        y = self.attn_lif(y)
        return self.proj_bn(self.proj_conv(y)) + identity


class A2OS2ASSA(nn.Module):
    """A²OS²A, accurate addition-only spiking self-attention (Guo et al., CVPR 2025)::

        Q = q_lif(BN(Linear(x)))               binary {0, 1}
        K = k_relu(k_bn(k_linear(x)))          real, >= 0 (a ReLU activation, not a spike)
        V = v_lif(BN(Linear(x)))               ternary {-1, 0, 1} (:class:`TernaryLIFNode`)
        Y_t = (Q_t @ K_tᵀ) @ V_t               per head; no scale, no softmax
        out = proj_lif(proj_bn(proj_linear(attn_lif_{0.5}(merge_heads(Y)))))

    Choices where research/seed_models.md §3 says UNVERIFIED (no official code): the Q/K/V roles
    (binary / ReLU / ternary) follow three independent reimplementations; the association order
    ``(Q Kᵀ) V`` is the written ``SN(Q·Kᵀ·V)``; the ternary V neuron is a LIF (tau and threshold of
    the model, ±θ, hard reset); the output neuron is Spikformer's ``attn_lif`` (θ = ``attn_threshold``
    = 0.5). Spikformer's ``attn_scale`` is not applied (the design has no scaling)."""

    options = ()

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float | None = None,
                 attn_threshold: float = 0.5):
        super().__init__()
        self.num_heads = int(num_heads)
        self.q_linear = nn.Linear(dim, dim)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = make_node(input_dims=dim)
        self.k_linear = nn.Linear(dim, dim)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_relu = nn.ReLU()
        self.v_linear = nn.Linear(dim, dim)
        self.v_bn = nn.BatchNorm1d(dim)
        self.v_lif = ternary_node(make_node)
        self.attn_lif = make_node(threshold=attn_threshold, input_dims=dim)
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_node(input_dims=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q_lif(bn_tokens(self.q_bn, self.q_linear(x))), self.num_heads)
        k = split_heads(self.k_relu(bn_tokens(self.k_bn, self.k_linear(x))), self.num_heads)
        v = split_heads(self.v_lif(bn_tokens(self.v_bn, self.v_linear(x))), self.num_heads)
        y = self.attn_lif(merge_heads((q @ k.transpose(-2, -1)) @ v))
        return self.proj_lif(bn_tokens(self.proj_bn, self.proj_linear(y)))


class BipolarSSA(_spikformer.SSA):
    """Bipolar self-attention (Wang et al., NeurIPS 2025) on Spikformer's SSA layers and keys::

        Q = q_lif(BN(Linear(x))),  K = k_lif(BN(Linear(x)))   ternary {-1, 0, 1}
        V = v_lif(BN(Linear(x)))                              binary {0, 1}
        P_t = shiftmax(Q_t @ K_tᵀ, frac_bits)                 per head, over the key axis
        Y_t = P_t @ V_t
        out = proj_lif(proj_bn(proj_linear(attn_lif_{0.5}(merge_heads(Y)))))

    Choices where research/seed_models.md §4 says UNVERIFIED (no code): Shiftmax as the third-party
    reading (:func:`shiftmax`, ``frac_bits`` = ``shiftmax_bits``, default 16, configurable); V binary
    and the output neuron Spikformer's ``attn_lif`` (θ = 0.5) (the paper's value path is unknown);
    the ternary Q/K neurons are LIFs with the model's tau and threshold. Spikformer's ``attn_scale``
    is not applied (Shiftmax normalises)."""

    options = ("shiftmax_bits",)

    def __init__(self, dim: int, num_heads: int, make_node: NeuronSpec, scale: float | None = None,
                 shiftmax_bits: int = 16):
        super().__init__(dim, num_heads, make_node, 1.0)
        if not 0 <= int(shiftmax_bits) <= 30:
            raise ValueError(f"BipolarSSA: shiftmax_bits={shiftmax_bits} must be in 0..30")
        self.frac_bits = int(shiftmax_bits)
        self.q_lif = ternary_node(make_node)
        self.k_lif = ternary_node(make_node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q_lif(bn_tokens(self.q_bn, self.q_linear(x))), self.num_heads)
        k = split_heads(self.k_lif(bn_tokens(self.k_bn, self.k_linear(x))), self.num_heads)
        v = split_heads(self.v_lif(bn_tokens(self.v_bn, self.v_linear(x))), self.num_heads)
        p = shiftmax(q @ k.transpose(-2, -1), dim=-1, frac_bits=self.frac_bits)
        y = self.attn_lif(merge_heads(p @ v))
        return self.proj_lif(bn_tokens(self.proj_bn, self.proj_linear(y)))


_spikformer.ATTN_LAYERS.update({"statten": STAttenSSA, "a2os2a": A2OS2ASSA, "bsa": BipolarSSA})
_sdt.ATTN_LAYERS.update({"statten": STAttenSDSA})
