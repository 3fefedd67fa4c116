"""Reference Spiking Transformers (PyTorch), STEP-compatible.

``build_model(name, **overrides)`` builds a named configuration from
:data:`CONFIGS`; ``build_family(family, **kwargs)`` builds a family directly;
``config_from_step_args`` turns a STEP checkpoint's ``args`` into our kwargs.
Models take ``(B, C, H, W)`` (direct/rate encoding), ``(B, T, C, H, W)``
(``encoding='events'``) or ``(B, T, W)`` image rows (``encoding='sequence'``: row t shown at step t)
and return logits ``(B, num_classes)``.  Inside, every
tensor is STEP's time-major ``(T*B, ...)`` layout.
"""
from __future__ import annotations

import copy
from typing import Any

from .blocks import SpikingTransformerBase
from .encoders import DirectEncoder, EventEncoder, RateEncoder, SequenceEncoder, make_encoder
from .neurons import BaseNeuron, IFNode, LIFNode, PLIFNode, iter_neurons, make_neuron
from .qkformer import QKFormer
from .sdt import SpikeDrivenTransformer
from .spikformer import Spikformer
from . import seed_attention  # noqa: F401  (registers tlif and the statten/a2os2a/bsa attention layers)
from .seed_attention import A2OS2ASSA, BipolarSSA, STAttenSDSA, STAttenSSA, TernaryLIFNode, shiftmax
from .spikformer_semm import SpikformerSEMM
from .step_args import (
    STEP_ARCH_NAMES,
    STEP_NODE_TYPES,
    STEP_PLANNED_NODE_TYPES,
    StepArgsError,
    StepModelPlan,
    config_from_step_args,
    plan_from_step_args,
)
from .surrogates import make_surrogate

__all__ = [
    "CONFIGS",
    "FAMILIES",
    "STEP_ARCH_NAMES",
    "STEP_NODE_TYPES",
    "build_model",
    "build_family",
    "config_from_step_args",
    "plan_from_step_args",
    "StepModelPlan",
    "StepArgsError",
    "STEP_PLANNED_NODE_TYPES",
    "list_configs",
    "Spikformer",
    "SpikeDrivenTransformer",
    "QKFormer",
    "SpikformerSEMM",
    "STAttenSSA",
    "STAttenSDSA",
    "A2OS2ASSA",
    "BipolarSSA",
    "TernaryLIFNode",
    "shiftmax",
    "SpikingTransformerBase",
    "BaseNeuron",
    "LIFNode",
    "IFNode",
    "PLIFNode",
    "make_neuron",
    "iter_neurons",
    "make_surrogate",
    "make_encoder",
    "DirectEncoder",
    "RateEncoder",
    "EventEncoder",
    "SequenceEncoder",
]

FAMILIES: dict[str, type[SpikingTransformerBase]] = {
    "spikformer": Spikformer,
    "sdt": SpikeDrivenTransformer,
    "qkformer": QKFormer,
    "spikformer_semm": SpikformerSEMM,
}

_CIFAR10 = dict(step=4, img_size=32, patch_size=4, in_channels=3, num_classes=10, mlp_ratio=4)
# bundled sklearn digits: 8x8, one channel, 10 classes; patch_size 2 keeps 4x4 = 16 tokens
_DIGITS = dict(step=4, img_size=8, patch_size=2, in_channels=1, num_classes=10, mlp_ratio=4)

#: Named configurations: ``{"family": ..., **constructor kwargs}``.
CONFIGS: dict[str, dict[str, Any]] = {
    # STEP CIFAR-10 defaults (trainable params 9,324,730 / 10,233,546 / 6,706,234)
    "spikformer-4-384": dict(family="spikformer", **_CIFAR10, embed_dim=384, num_heads=12, depths=4),
    "sdt-2-512": dict(family="sdt", **_CIFAR10, embed_dim=512, num_heads=8, depths=2),
    "qkformer-4-384": dict(family="qkformer", **_CIFAR10, embed_dim=384, num_heads=8, depths=4),
    # tiny models for the 8x8 digits (train in minutes on CPU)
    "spikformer-2-64-digits": dict(family="spikformer", **_DIGITS, embed_dim=64, num_heads=4, depths=2),
    "sdt-1-64-digits": dict(family="sdt", **_DIGITS, embed_dim=64, num_heads=4, depths=1),
    # QKFormer's depths counts stage1 + stage2 + stage3 blocks: depths=2 has no SSA block,
    # depths=3 adds one stage-3 SSA block (linear-order attention).
    "qkformer-2-64-digits": dict(family="qkformer", **_DIGITS, embed_dim=64, num_heads=4, depths=2),
    "qkformer-3-64-digits": dict(family="qkformer", **_DIGITS, embed_dim=64, num_heads=4, depths=3),
    # the seed attention designs (research/seed_models.md; models/seed_attention.py, spikformer_semm.py):
    # STEP-sized CIFAR configs and tiny digits configs. STAtten: blocks of chunk_size=2 of the T=4 steps.
    # BSA: Shiftmax keeps frac_bits = 14 - ceil(log2 N) (N = 64 tokens on CIFAR, 16 on digits): its exact output
    # scale 2^(frac_bits + ceil log2 N) = 2^14 leaves the attention neuron's threshold and membrane room in Loihi's
    # 17-bit threshold and 24-bit state (a trained digits BSA at scale 2^16 needs 25 bits: refused there).
    "spikformer-statten-4-384": dict(family="spikformer", **_CIFAR10, embed_dim=384, num_heads=12, depths=4,
                                     attn_layer="statten", chunk_size=2),
    "sdt-statten-2-512": dict(family="sdt", **_CIFAR10, embed_dim=512, num_heads=8, depths=2,
                              attn_layer="statten", chunk_size=2),
    "spikformer-a2os2a-4-384": dict(family="spikformer", **_CIFAR10, embed_dim=384, num_heads=12, depths=4,
                                    attn_layer="a2os2a"),
    "spikformer-bsa-4-384": dict(family="spikformer", **_CIFAR10, embed_dim=384, num_heads=12, depths=4,
                                 attn_layer="bsa", shiftmax_bits=8),
    # STEP's spikf_semm_cifar defaults (7,739,372 parameters; expert_dim/num_expert hard-coded in STEP)
    "spikformer_semm-4-384": dict(family="spikformer_semm", **_CIFAR10, embed_dim=384, num_heads=12, depths=4,
                                  expert_dim=96, num_expert=4),
    "spikformer-statten-2-64-digits": dict(family="spikformer", **_DIGITS, embed_dim=64, num_heads=4, depths=2,
                                           attn_layer="statten", chunk_size=2),
    "sdt-statten-1-64-digits": dict(family="sdt", **_DIGITS, embed_dim=64, num_heads=4, depths=1,
                                    attn_layer="statten", chunk_size=2),
    "spikformer-a2os2a-2-64-digits": dict(family="spikformer", **_DIGITS, embed_dim=64, num_heads=4, depths=2,
                                          attn_layer="a2os2a"),
    "spikformer-bsa-2-64-digits": dict(family="spikformer", **_DIGITS, embed_dim=64, num_heads=4, depths=2,
                                       attn_layer="bsa", shiftmax_bits=10),
    "spikformer_semm-2-64-digits": dict(family="spikformer_semm", **_DIGITS, embed_dim=64, num_heads=4, depths=2,
                                        expert_dim=16, num_expert=4),
}


def list_configs() -> list[str]:
    """Names accepted by :func:`build_model` as named configurations."""
    return sorted(CONFIGS)


def build_family(family: str, **kwargs) -> SpikingTransformerBase:
    """Build ``spikformer``, ``sdt``, ``qkformer`` or ``spikformer_semm`` (STEP timm names accepted too)."""
    key = STEP_ARCH_NAMES.get(family, family)
    if key not in FAMILIES:
        raise ValueError(
            f"unknown model family {family!r}; known: {sorted(FAMILIES)} "
            f"(or STEP names {sorted(STEP_ARCH_NAMES)})"
        )
    return FAMILIES[key](**kwargs)


def build_model(arch: str, **overrides) -> SpikingTransformerBase:
    """Build a named configuration (see :data:`CONFIGS`), a family name or a STEP name.

    ``overrides`` replace constructor kwargs, e.g. ``build_model('sdt-2-512', num_classes=100)``.
    Sets ``model.config_name`` to ``arch``.
    """
    if arch in CONFIGS:
        cfg = copy.deepcopy(CONFIGS[arch])
        family = cfg.pop("family")
        cfg.update(overrides)
        model = build_family(family, **cfg)
    elif arch in FAMILIES or arch in STEP_ARCH_NAMES:
        model = build_family(arch, **overrides)
    else:
        raise ValueError(
            f"unknown arch {arch!r}; known configs: {list_configs()}; "
            f"families: {sorted(FAMILIES)}; STEP names: {sorted(STEP_ARCH_NAMES)}"
        )
    model.config_name = arch
    return model
