"""Shared pieces of the reference Spiking Transformers.

Everything here keeps STEP's execution convention: tensors between layers are
time-major flattened ``(T*B, ...)``; Conv/Linear/BN run once over the whole
``T*B`` batch (so BN statistics are shared across time steps) and every neuron
splits the leading axis into ``(T, B)`` internally.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .encoders import make_encoder
from .neurons import SpikingNeuron, make_neuron, neuron_class
from . import neuron_zoo  # noqa: F401  (registers STEP's other neurons with make_neuron)

__all__ = [
    "SPSLayers",
    "Conv2StemLayers",
    "BNAndPadLayer",
    "repconv",
    "pick_layer",
    "attn_options",
    "NeuronSpec",
    "SpikingTransformerBase",
    "bn_tokens",
    "split_heads",
    "merge_heads",
    "pool_flags",
    "maxpool_or_identity",
    "capture_config",
]


class NeuronSpec:
    """Model-wide neuron settings; ``spec(threshold=..., tau=...)`` builds one neuron.

    ``node`` is a short name (``lif``, ``if``, ``plif``, ``ilif``, ``nilif``, ``eif``, ``klif``,
    ``hdlif``, ``clif``, ``glif``, ``psn``) or STEP's class name; ``levels`` is ILIF/NILIF's ``D``.

    Keeps every neuron of a model built from the same recipe (kind, T,
    surrogate, compare, reset) while individual layers override the threshold
    (attention neurons use 0.5) or tau (STEP's hard-coded ``tau=2`` places).
    """

    def __init__(self, node="lif", step=4, tau=2.0, threshold=1.0, surrogate="sigmoid",
                 alpha=4.0, compare=None, reset="hard", levels=None):
        neuron_class(node)  # an unknown name fails here, naming the known ones
        self.node = node
        self.step = int(step)
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.surrogate = surrogate
        self.alpha = float(alpha)
        self.compare = compare
        self.reset = reset
        self.levels = None if levels is None else int(levels)

    def with_tau(self, tau: float) -> "NeuronSpec":
        """The same recipe with another default ``tau`` (STEP's hard-coded ``tau=2.0`` blocks)."""
        return NeuronSpec(node=self.node, step=self.step, tau=tau, threshold=self.threshold,
                          surrogate=self.surrogate, alpha=self.alpha, compare=self.compare, reset=self.reset,
                          levels=self.levels)

    def __call__(self, threshold: float | None = None, tau: float | None = None,
                 input_dims: int | None = None) -> SpikingNeuron:
        """One neuron; ``input_dims`` (the channel count) reaches only neurons that take it (HDLIF),
        and is given where STEP's models pass it."""
        return make_neuron(
            self.node,
            tau=self.tau if tau is None else float(tau),
            threshold=self.threshold if threshold is None else float(threshold),
            step=self.step,
            surrogate=self.surrogate,
            alpha=self.alpha,
            compare=self.compare,
            reset=self.reset,
            levels=self.levels,
            input_dims=input_dims,
        )


def bn_tokens(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Apply ``BatchNorm1d`` to a token tensor ``(TB, N, C)`` (normalises over C)."""
    return bn(x.transpose(-1, -2)).transpose(-1, -2)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(TB, N, C)`` -> ``(TB, heads, N, C/heads)``; channel ``c = head*d + j``."""
    return x.unflatten(2, (num_heads, -1)).permute(0, 2, 1, 3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(TB, heads, N, d)`` -> ``(TB, N, heads*d)`` (inverse of :func:`split_heads`)."""
    return x.transpose(1, 2).flatten(2)


def pool_flags(patch_size: int, n_pools: int = 2) -> list[bool]:
    """Which of the stem's ``n_pools`` stride-2 poolings are active.

    STEP's CIFAR stems always downsample x4 (two poolings, ``patch_size=4``).
    We let ``patch_size`` in ``{1, 2, 4}`` switch off the *last* poolings so
    tiny inputs (8x8 digits) keep more tokens; parameters are unchanged.
    """
    p = int(patch_size)
    k = int(round(math.log2(p))) if p >= 1 else -1
    if p < 1 or 2 ** k != p or k > n_pools:
        raise ValueError(
            f"patch_size must be one of {[2 ** i for i in range(n_pools + 1)]}, got {patch_size}"
        )
    return [i < k for i in range(n_pools)]


def maxpool_or_identity(active: bool) -> nn.Module:
    """STEP's ``MaxPool2d(3, stride=2, padding=1)`` or ``Identity`` when inactive."""
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if active else nn.Identity()


def capture_config(local_vars: dict) -> dict:
    """Constructor arguments from ``locals()`` as a JSON-serialisable dict."""
    out = {}
    for key, val in local_vars.items():
        if key in ("self", "__class__") or key.startswith("_"):
            continue
        if isinstance(val, tuple):
            val = list(val)
        out[key] = val
    return out


class SpikingTransformerBase(nn.Module):
    """Common front and back end: config bookkeeping, input encoder, checks.

    Subclasses build their layers and implement :meth:`forward_encoded`, which
    maps the encoded ``(T*B, C, H, W)`` tensor to logits ``(B, num_classes)``.
    ``forward_encoded`` is ``torch.fx``-traceable when neurons (and encoders)
    are treated as leaf modules; ``torch.export`` works on the whole model.

    Attributes:
        arch: family name (``spikformer``, ``sdt``, ``qkformer``).
        config: constructor kwargs; ``build_family(model.arch, **model.config)``
            rebuilds the same model.
        step: number of time steps ``T``.
        encoder: input encoder producing ``(T*B, ...)``.
    """

    arch = "base"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        for key in ("embed_dim", "num_heads", "depths", "step", "in_channels", "num_classes"):
            if int(c[key]) < 1:
                raise ValueError(f"{self.arch}: {key} must be >= 1, got {c[key]}")
        if c["embed_dim"] % 8:
            raise ValueError(f"{self.arch}: embed_dim must be a multiple of 8, got {c['embed_dim']}")
        self.step = int(c["step"])
        self.num_classes = int(c["num_classes"])
        self.encoding = c["encoding"]
        self.encoder = make_encoder(c["encoding"], self.step, c.get("seed", 0))
        self.make_node = NeuronSpec(
            node=c["node"], step=self.step, tau=c["tau"], threshold=c["threshold"],
            surrogate=c["surrogate"], alpha=c["alpha"], compare=c.get("compare"),
            reset=c.get("reset", "hard"), levels=c.get("levels"),
        )

    @staticmethod
    def check_heads(arch: str, dim: int, num_heads: int) -> None:
        if dim % num_heads:
            raise ValueError(f"{arch}: dim {dim} is not divisible by num_heads={num_heads}")

    def forward_encoded(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` (direct/rate), ``(B, T, C, H, W)`` (events) or ``(B, T, W)`` (sequence)
        -> ``(B, classes)``."""
        return self.forward_encoded(self.encoder(x))

    def time_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over T of a ``(T*B, ...)`` tensor -> ``(B, ...)``."""
        return x.unflatten(0, (self.step, -1)).mean(0)


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False)


class SPSLayers(nn.Module):
    """The layers of STEP's CIFAR Spiking Patch Splitting stem (shared by Spikformer and SDT,
    which differ only in ``forward``): 4 x [conv3x3 (no bias), BN2d, LIF] at widths D/8, D/4,
    D/2, D with ``maxpool2``/``maxpool3`` after the 3rd/4th, then ``rpe_conv``, ``rpe_bn``,
    ``rpe_lif``. Names and shapes are STEP's, so checkpoints load with ``strict=True``."""

    def __init__(self, in_channels: int, embed_dim: int, make_node: "NeuronSpec", patch_size: int = 4):
        super().__init__()
        d = embed_dim
        pools = pool_flags(patch_size, 2)
        self.proj_conv = _conv3x3(in_channels, d // 8)
        self.proj_bn = nn.BatchNorm2d(d // 8)
        self.proj_lif = make_node(input_dims=d // 8)
        self.proj_conv1 = _conv3x3(d // 8, d // 4)
        self.proj_bn1 = nn.BatchNorm2d(d // 4)
        self.proj_lif1 = make_node(input_dims=d // 4)
        self.proj_conv2 = _conv3x3(d // 4, d // 2)
        self.proj_bn2 = nn.BatchNorm2d(d // 2)
        self.proj_lif2 = make_node(input_dims=d // 2)
        self.maxpool2 = maxpool_or_identity(pools[0])
        self.proj_conv3 = _conv3x3(d // 2, d)
        self.proj_bn3 = nn.BatchNorm2d(d)
        self.proj_lif3 = make_node(input_dims=d)
        self.maxpool3 = maxpool_or_identity(pools[1])
        self.rpe_conv = _conv3x3(d, d)
        self.rpe_bn = nn.BatchNorm2d(d)
        self.rpe_lif = make_node(input_dims=d)


class Conv2StemLayers(nn.Module):
    """The layers of STEP's ``conv2_embed`` stem ablation (Spikformer and SDT; they differ only in
    ``forward``): conv3x3 (no bias) to D/4, BN2d, LIF, ``maxpool``; conv3x3 to D, BN2d, LIF,
    ``maxpool1``; then ``rpe_conv``, ``rpe_bn``, ``rpe_lif``. Names and shapes are STEP's."""

    def __init__(self, in_channels: int, embed_dim: int, make_node: "NeuronSpec", patch_size: int = 4):
        super().__init__()
        d = embed_dim
        pools = pool_flags(patch_size, 2)
        self.proj_conv = _conv3x3(in_channels, d // 4)
        self.proj_bn = nn.BatchNorm2d(d // 4)
        self.proj_lif = make_node()
        self.maxpool = maxpool_or_identity(pools[0])
        self.proj_conv1 = _conv3x3(d // 4, d)
        self.proj_bn1 = nn.BatchNorm2d(d)
        self.proj_lif1 = make_node()
        self.maxpool1 = maxpool_or_identity(pools[1])
        self.rpe_conv = _conv3x3(d, d)
        self.rpe_bn = nn.BatchNorm2d(d)
        self.rpe_lif = make_node()


def attn_options(attn_cls: type, **available) -> dict:
    """The model options an attention class takes (its ``options`` tuple, e.g. STAtten's
    ``chunk_size``), picked from ``available``; STEP's layers take none."""
    return {k: available[k] for k in getattr(attn_cls, "options", ())}


def pick_layer(arch: str, option: str, value: str, table: dict) -> type:
    """The class registered under ``value`` in ``table`` (STEP's ``embed_layer``/``attn_layer``)."""
    if value not in table:
        raise ValueError(f"{arch}: {option}={value!r} is not supported; supported: {sorted(table)}")
    return table[value]


class BNAndPadLayer(nn.Module):
    """BatchNorm2d, then ``pad_pixels`` of border filled with the value the BN gives a zero input
    (STEP's / SDT-v2's ``BNAndPadLayer``, key ``bn.*``): the same as BN applied to a zero-padded
    map, which is how it is lowered."""

    def __init__(self, pad_pixels: int, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps)
        self.pad_pixels = int(pad_pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        p = self.pad_pixels
        if p <= 0:
            return out
        bn = self.bn
        if bn.affine:  # STEP's expression, same operation order
            border = bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        else:
            border = -bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
        out = torch.nn.functional.pad(out, [p, p, p, p])
        fill = border.view(1, -1, 1, 1).to(out.dtype)
        out[:, :, :p, :] = fill
        out[:, :, -p:, :] = fill
        out[:, :, :, :p] = fill
        out[:, :, :, -p:] = fill
        return out


def repconv(dim: int) -> nn.Sequential:
    """STEP's RepConv projection (``repconv_attn``): 1x1 conv, :class:`BNAndPadLayer` (pad 1),
    depthwise 3x3 (no padding), 1x1 conv; no biases. Keys ``0.weight``, ``1.bn.*``, ``2.weight``,
    ``3.weight`` as in STEP."""
    return nn.Sequential(
        nn.Conv2d(dim, dim, kernel_size=1, stride=1, padding=0, bias=False),
        BNAndPadLayer(pad_pixels=1, num_features=dim),
        nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, groups=dim, bias=False),
        nn.Conv2d(dim, dim, kernel_size=1, stride=1, padding=0, bias=False),
    )
