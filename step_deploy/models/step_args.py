"""What a STEP checkpoint's ``args`` really built, and how to rebuild it here.

STEP (github.com/Fancyssc/STEP, ``cls/models/static/*_cifar.py``) does not always do what its
options say. Read in its code (snapshot c0b3193), the places that matter for inference:

* **Spikformer** builds its stem (``SPS``) and its blocks without passing ``step`` on, so every
  neuron runs the constructors' default ``step=4`` while the encoder repeats the input
  ``args.step`` times. ``tau`` and ``threshold`` reach every neuron.
* **SDT** does the same with ``step`` (stem and blocks: 4; only ``head_lif`` gets ``args.step``)
  and builds its blocks with ``tau=2.0`` (``head_lif`` too): ``args.tau`` reaches the stem only.
* **QKFormer** passes ``step`` and ``tau`` everywhere except ``stage{1,2}.*.tssa.q_lif =
  node()``: the node class's defaults (STEP ``LIFNode``/``PLIFNode``: step 4, tau 2;
  ``IFNode``, ``GLIFTorch``: step 10; ``HDLIFNode`` cannot be built without ``input_dims``;
  BrainCog's nodes, which ``train_dvs.py`` uses, default to ``layer_by_layer=False``: one
  memoryless step over the whole ``(T*B)`` batch).
* **Spikformer-SEMM** (``spikf_semm_cifar``) builds its stem and blocks without ``step`` and its Q
  experts (``MLP_Unit``) reshape with a literal 4, always as STEP ``LIFNode`` (tau 2, threshold 1);
  its MLP hard-codes an 8 x 8 token grid: only T = 4 and 32 x 32 images are loaded.
* A neuron built with ``step=s`` splits the ``(T*B, ...)`` tensor into ``s`` "steps"
  (``rearrange('(t b) ... -> t b ...', t=s)``). With ``s != T`` its membrane links rows that
  are not consecutive steps of one sample: STEP mixes samples (its result depends on the batch
  size, and einops fails when ``T*B`` is not a multiple of ``s``) or, for ``T = k*s``, it runs
  ``k`` interleaved chains whose state jumps ``k`` steps. Only one case is equivalent to a
  consistent network: Spikformer with direct (repeated) input and ``T = 4k``, where all chains
  see the same input and the ``T``-step run is the 4-step run with every step repeated ``k``
  times (same logits). That one is loaded with ``step=4``; the others are refused.
* Layer swaps (``embed_layer``/``attn_layer``, STEP's "meta transformer" ablations) are looked
  up by name in the model file's ``globals()``; an unknown name leaves the layer undefined.

:func:`plan_from_step_args` turns ``args`` into our constructor kwargs plus the sentences that
say which of these quirks were reproduced (:attr:`StepModelPlan.quirks`), or raises
:class:`StepArgsError` naming the option, its value and what would be needed.
"""
from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "STEP_ARCH_NAMES",
    "STEP_NODE_TYPES",
    "STEP_PLANNED_NODE_TYPES",
    "STEP_LAYER_SWAPS",
    "StepArgsError",
    "StepModelPlan",
    "plan_from_step_args",
    "config_from_step_args",
]

# timm model names registered by STEP (cls/models/static/*_cifar.py) -> our family
STEP_ARCH_NAMES = {"spikformer_cifar": "spikformer", "sdt_cifar": "sdt", "qkformer_cifar": "qkformer",
                   "spikf_semm_cifar": "spikformer_semm"}
_STEP_FILE = {v: k for k, v in STEP_ARCH_NAMES.items()}  # family -> STEP model file stem

# STEP ``node_type`` -> our neuron kind (every class of STEP's cls/models/utils/node.py)
STEP_NODE_TYPES = {"LIFNode": "lif", "IFNode": "if", "PLIFNode": "plif", "ILIFNode": "ilif", "NILIFNode": "nilif",
                   "EIFNode": "eif", "KLIFNode": "klif", "HDLIFNode": "hdlif", "ComplementaryLIFNeuron": "clif",
                   "GLIFTorch": "glif", "PSNTorch": "psn"}

#: kept for callers of the old API: no STEP node_type is planned any more
STEP_PLANNED_NODE_TYPES: dict[str, str] = {}

# what each neuron ablation does that the args do not say (added to the load's quirks)
_NODE_QUIRKS = {
    "ilif": "node_type=ILIFNode: integer spikes 0..D with D=2 (STEP's default; no option sets it), "
            "S = round_half_even(clamp(H/threshold, 0, 2)) (torch.round: H/threshold = 0.5 gives 0, 1.5 gives 2), "
            "soft reset; reproduced.",
    "nilif": "node_type=NILIFNode: S = round_half_even(clamp(H/threshold, 0, 2)/2) (torch.round: H/threshold = 1 "
             "gives 0), soft reset; reproduced.",
    "eif": "node_type=EIFNode: the membrane starts every batch at v_reset=-0.1 (STEP's n_reset; only STEP's very "
           "first batch after construction starts at 0); tau, delta_T and theta_rh are buffers in the checkpoint; "
           "reproduced.",
    "clif": "node_type=ComplementaryLIFNeuron ignores threshold: v_threshold stays 1.0, also in attention (attn_lif, "
            "where the other nodes use 0.5); reproduced.",
    "glif": "node_type=GLIFTorch ignores threshold and tau: its threshold, decay, leak, conductance and reset "
            "threshold are learned per step (Vth, tau, leak, conduct, reVth in the checkpoint) and its static gates "
            "are the signs of alpha/beta/gamma; reproduced.",
    "psn": "node_type=PSNTorch ignores threshold and tau: it fires where its learned T x T mix over the whole "
           "sequence (fc.weight, fc.bias) is >= 0, with no reset; reproduced.",
    "hdlif": "node_type=HDLIFNode: the gate reads the time-major (T*B) rows as (B, T) (x.view(-1, step, ...)), so "
             "for batches of more than one sample each sample's gate mixes rows of other samples and STEP's result "
             "depends on the batch size; reproduced as is (exact for one sample per batch). Evaluation (model.eval()) "
             "uses the top-2 gate, training the full softmax.",
}

#: per family: option -> {STEP layer name: our name or None (refused) , ...}
STEP_LAYER_SWAPS: dict[str, dict[str, dict[str, str | None]]] = {
    "spikformer": {
        "embed_layer": {"SPS": "SPS", "conv2_embed": "conv2_embed", "vit_embed": None, "sequential_embed": None},
        "attn_layer": {"SSA": "SSA", "random_ssa": "random_ssa", "repconv_attn": "repconv_attn"},
    },
    "sdt": {
        "embed_layer": {"SPS": "SPS", "conv2_embed": "conv2_embed", "vit_embed": None, "sequential_embed": None},
        "attn_layer": {"SDSA": "SDSA", "random_sdsa": "random_sdsa", "repconv_attn": "repconv_attn"},
    },
    "spikformer_semm": {
        "embed_layer": {"SPS": "SPS", "conv2_embed": "conv2_embed", "vit_embed": None, "sequential_embed": None},
        "attn_layer": {"SSA": "SSA", "random_attn": "random_attn", "repconv_attn": None},
    },
}

# what a refused layer swap would need
_SWAP_NEEDS = {
    "vit_embed": "a patch-conv stem plus a learned position embedding (pos_embed) added to every token, "
                 "which needs a constant-add IR op",
    "sequential_embed": "sequence input (B, C, L) for sMNIST/psMNIST/sCIFAR and a Conv1d stem with "
                        "AdaptiveAvgPool1d",
    "repconv_attn": "SEMM's RepConv experts attention (RepConv K/V/proj on the token map with the router and "
                    "Q experts of EMSA), which step-deploy does not build",
}

_SWAP_NOTES = {
    "conv2_embed": "args.embed_layer='conv2_embed': STEP's 2-conv stem ablation (conv3x3 to D/4, maxpool, "
                   "conv3x3 to D, maxpool, then the rpe conv), reproduced with STEP's layer names.",
    "random_ssa": "args.attn_layer='random_ssa': STEP froze q_linear/k_linear at their random initialisation "
                  "during training; at inference the layer is Spikformer's SSA, loaded as such.",
    "random_sdsa": "args.attn_layer='random_sdsa': STEP froze q_conv/k_conv at their random initialisation "
                   "during training; at inference the layer is SDT's SDSA, loaded as such.",
    "random_attn": "args.attn_layer='random_attn': STEP froze SEMM's k_linear/v_linear at their random "
                   "initialisation during training; at inference the layer is SEMM's EMSA, loaded as such.",
    "repconv_attn": "args.attn_layer='repconv_attn': STEP's RepConv attention ablation (Q/K/V/proj are 1x1 conv, "
                    "BatchNorm padded with BN(0), depthwise 3x3, 1x1 conv), reproduced with STEP's layer names; "
                    "the padding is exported as BatchNorm of a zero-padded map (equal up to float rounding).",
}

# STEP args keys copied verbatim into our constructor kwargs
_STEP_KEYS = ("step", "img_size", "in_channels", "num_classes", "embed_dim", "num_heads",
              "mlp_ratio", "attn_scale", "depths", "tau", "threshold")

# dataset names of STEP's train_dvs.py (BrainCog LIFNode: fires on '>', event frames in)
_STEP_DVS_DATASETS = {"dvsg", "dvsc10", "ncaltech101", "ncars", "nomni", "esimnet", "nmnist",
                      "ntidigits", "shd", "ucf101dvs", "hmdbdvs"}

_FAMILY_TITLE = {"spikformer": "Spikformer", "sdt": "SDT", "qkformer": "QKFormer",
                 "spikformer_semm": "Spikformer-SEMM"}


class StepArgsError(ValueError):
    """A STEP option this version cannot reproduce; the message names the option and the fix."""


@dataclass(frozen=True)
class StepModelPlan:
    """How to rebuild a STEP model: ``build_family(family, **kwargs)``; ``quirks`` are plain
    sentences about what STEP really computes and how it was reproduced."""

    family: str
    kwargs: dict
    quirks: tuple[str, ...] = ()


def _node_name(a: Mapping[str, Any]) -> str | None:
    node_type = a.get("node_type", a.get("node"))
    return None if node_type is None else getattr(node_type, "__name__", str(node_type))


def _check_node_type(name: str) -> str:
    if name in STEP_NODE_TYPES:
        return STEP_NODE_TYPES[name]
    supported = ", ".join(sorted(STEP_NODE_TYPES))
    raise StepArgsError(f"args.node_type={name!r} is not a neuron step-deploy supports; supported: {supported}. "
                        f"Use a checkpoint trained with one of them.")


def _check_node_family(family: str, node: str, node_name: str, a: Mapping[str, Any], dvs: bool) -> None:
    """Refuse neuron/model pairs STEP itself cannot build or run."""
    title = _FAMILY_TITLE[family]
    if dvs and node not in ("lif", "if", "plif"):
        raise StepArgsError(
            f"args.node_type={node_name!r} with an event data set (args.dataset): STEP's train_dvs.py resolves "
            f"node_type among BrainCog's node classes, not STEP's cls/models/utils/node.py, so the trained neuron is "
            f"not STEP's {node_name}; step-deploy reproduces only LIFNode, IFNode and PLIFNode there. Load the weights "
            f"without STEP's args (pass --arch / arch=...) if they fit our {node} neuron.")
    if node == "hdlif":
        swaps = [f"args.{o}={a.get(o)!r}" for o, ok in (("embed_layer", "SPS"), ("attn_layer", "SSA"))
                 if a.get(o) not in (None, ok)]
        if family != "spikformer" or swaps:
            where = f"{title}'s {_STEP_FILE[family]}.py" if family != "spikformer" else " and ".join(swaps)
            raise StepArgsError(
                f"args.node_type='HDLIFNode' with {where}: HDLIFNode requires input_dims, which STEP passes only "
                f"in Spikformer's SPS stem, SSA and MLP; elsewhere STEP calls node(...) without it (TypeError), so "
                f"STEP cannot have built this model. Use Spikformer with embed_layer=SPS and attn_layer=SSA.")
    if node == "clif" and family == "sdt":
        raise StepArgsError(
            "args.node_type='ComplementaryLIFNeuron' with sdt_cifar: STEP's SDT passes a (T*B, C) tensor to "
            "head_lif, and ComplementaryLIFNeuron.forward_lbl handles only 3-D and 4-D inputs (UnboundLocalError "
            "in STEP), so STEP cannot have evaluated this model. Use another node_type for SDT.")


def _layer_swap(family: str, a: Mapping[str, Any], option: str) -> str | None:
    """Our layer name for ``args.<option>`` (None: the family has no such option)."""
    table = STEP_LAYER_SWAPS.get(family, {}).get(option)
    value = a.get(option)
    if table is None or value is None:
        return None
    value = str(value)
    title = _FAMILY_TITLE[family]
    if value not in table:
        raise StepArgsError(
            f"args.{option}={value!r}: STEP's {title} has no layer of that name (it looks the name up in "
            f"{_STEP_FILE[family]}.py's globals() and, finding nothing, leaves the layer undefined, so "
            f"STEP itself cannot have run this model); known: {', '.join(sorted(table))}. Check the run's args.yaml.")
    ours = table[value]
    if ours is None:
        supported = ", ".join(sorted(k for k, v in table.items() if v))
        raise StepArgsError(
            f"args.{option}={value!r} (a STEP ablation of {title}) is not supported yet: it needs "
            f"{_SWAP_NEEDS[value]}. Supported {option} values: {supported}.")
    return ours



def _qk_q_lif_step(node: str) -> int:
    """Default ``step`` of the STEP node class QKFormer builds ``tssa.q_lif`` with (``node()``)."""
    return 10 if node in ("if", "glif") else 4  # IFNode: BaseNode_Torch's 10; GLIFTorch: 10; the others: 4


def _plan_time_steps(family: str, T: int, node: str, dvs: bool, kwargs: dict, quirks: list[str]) -> None:
    title = _FAMILY_TITLE[family]
    fix = (f"Retrain with step=4 (the only setting in which STEP's {title} is consistent), or load the weights "
           f"without STEP's args (pass --arch / arch=...): our model then runs {T} consistent time steps, which "
           f"is not what STEP computed.")
    if family == "spikformer":
        if T == 4:
            return
        head = (f"args.step={T}: STEP's Spikformer builds its stem and blocks without passing step on, so every "
                f"neuron runs 4 steps while the encoder makes {T}")
        if T % 4 == 0 and not dvs:
            k = T // 4
            kwargs["step"] = 4
            quirks.append(f"{head}; each neuron splits the {T}-step input into {k} interleaved 4-step chains, which "
                          f"see the same repeated image, so STEP's {T}-step run is the 4-step run with every step "
                          f"repeated {k} times and gives the same logits: loaded with step=4.")
            return
        why = ("with event input the chains see different frames and every membrane skips "
               f"{T // 4} steps, which no per-step network expresses" if T % 4 == 0 else
               f"each neuron reshapes the (T*B) batch into 4 'steps', which mixes the samples of a batch (STEP's "
               f"result depends on the batch size, and it fails when {T}*B is not a multiple of 4)")
        raise StepArgsError(f"{head}: {why}. {fix}")
    if family == "sdt":
        if T == 4:
            return
        why = ("its 4-step features are then stretched over the T-step head neuron, which no per-step network "
               "expresses" if T % 4 == 0 and not dvs else
               "each 4-step neuron mixes samples or time steps of the (T*B) batch (STEP's result depends on the "
               "batch size, and it fails when T*B is not a multiple of 4)")
        raise StepArgsError(f"args.step={T}: STEP's SDT builds its stem and blocks without passing step on, so "
                            f"their neurons run 4 steps while the encoder and head_lif run {T}: {why}. {fix}")
    if family == "spikformer_semm":
        if T == 4:
            return
        raise StepArgsError(
            f"args.step={T}: STEP's spikf_semm_cifar runs only T=4: it builds its stem and blocks without passing "
            f"step on (their neurons and reshapes use 4) and its Q experts (MLP_Unit) reshape with a literal 4, "
            f"while the encoder makes {T} steps, so each 4-step neuron mixes samples or time steps of the (T*B) "
            f"batch. {fix}")
    if family == "qkformer":
        if dvs:
            raise StepArgsError(
                "args.dataset is an event data set (STEP's train_dvs.py), whose node classes are BrainCog's: "
                "QKFormer's stage1/stage2 tssa.q_lif = node() is then built with BrainCog's defaults "
                "(layer_by_layer=False), so it runs one memoryless step over the whole (T*B) batch instead of a "
                "T-step LIF. step-deploy does not reproduce that neuron yet; use a QKFormer trained with "
                "STEP's train.py on static data, or load the weights without STEP's args (pass --arch / arch=...).")
        s = _qk_q_lif_step(node)
        if T == s:
            return
        raise StepArgsError(
            f"args.step={T}: STEP's QKFormer builds stage1/stage2 tssa.q_lif with node() (no arguments), so it "
            f"runs the node class's default {s} steps while every other neuron runs {T}: its membrane mixes samples "
            f"or time steps of the (T*B) batch, which no per-step network expresses. Retrain with step={s}, or load "
            f"the weights without STEP's args (pass --arch / arch=...): our model then runs {T} consistent time "
            f"steps, which is not what STEP computed.")


def _plan_tau(family: str, tau: float, threshold: float, node: str, kwargs: dict, quirks: list[str]) -> None:
    if node in ("if", "glif", "psn"):
        return  # no leak (IF) or the model's tau is ignored (GLIF, PSN)
    if family == "sdt" and tau != 2.0:
        kwargs["block_tau"] = 2.0
        quirks.append(f"args.tau={tau:g}: STEP's SDT builds its blocks and head_lif with tau=2.0 (hard-coded); "
                      f"only the stem (patch_embed) uses tau={tau:g}. Reproduced: block neurons run tau=2.0.")
    if family == "spikformer_semm" and (tau != 2.0 or threshold != 1.0 or node != "lif"):
        quirks.append(f"node_type/tau/threshold: STEP's SEMM builds its Q experts (attn.ff_list.*.unit_lif) as "
                      f"LIFNode(tau=2.0, threshold=1.0) whatever args say (here node {node}, tau={tau:g}, "
                      f"threshold={threshold:g} elsewhere); reproduced.")
    if family == "qkformer" and (tau != 2.0 or threshold != 1.0):
        quirks.append(f"args.tau={tau:g}, args.threshold={threshold:g}: STEP's QKFormer builds stage1/stage2 "
                      f"tssa.q_lif with node(), i.e. tau=2.0 and the node's default threshold (stored in the "
                      f"checkpoint); reproduced.")


def plan_from_step_args(step_arch: str, args: Mapping[str, Any] | Namespace) -> StepModelPlan:
    """Map a STEP checkpoint's ``args`` (dict or ``argparse.Namespace``) to a :class:`StepModelPlan`.

    Copies ``step, img_size, in_channels, num_classes, embed_dim, num_heads, mlp_ratio,
    attn_scale, depths, tau, threshold`` (missing keys keep our defaults) and follows what STEP's
    code does with them (module docstring), plus:

    * ``patch_size`` is ignored by STEP's CIFAR stems (always x4): we use 4.
    * QKFormer-CIFAR hard-codes ``num_heads=8``: we use 8.
    * ``node_type`` (every class of STEP's node.py) -> ``node`` (lif, if, plif, ilif, nilif, eif, klif,
      hdlif, clif, glif, psn); pairs STEP itself cannot build or run (HDLIF outside Spikformer's
      SPS/SSA, CLIF in SDT, a zoo neuron with train_dvs.py) are refused; what a neuron ignores or
      does beyond its options (CLIF's fixed threshold, ...) is stated in ``quirks``.
    * ``act_function``/``alpha`` have no effect in STEP (Sigmoid alpha=4 always): ignored.
    * a DVS ``dataset`` (train_dvs.py) -> ``encoding='events'`` and ``compare='>'``
      (BrainCog's LIFNode fires on ``>``).

    Raises:
        StepArgsError: an option STEP itself cannot run consistently or that we do not support,
            named with its value and what to do.
    """
    if step_arch not in STEP_ARCH_NAMES:
        raise StepArgsError(f"unsupported STEP model {step_arch!r}; supported: {sorted(STEP_ARCH_NAMES)}")
    a = dict(vars(args)) if isinstance(args, Namespace) else dict(args)
    family = STEP_ARCH_NAMES[step_arch]
    kwargs: dict[str, Any] = {}
    quirks: list[str] = []
    for key in _STEP_KEYS:
        if a.get(key) is not None:
            val = a[key]
            kwargs[key] = float(val) if key in ("mlp_ratio", "attn_scale", "tau", "threshold") else int(val)
    if float(kwargs.get("mlp_ratio", 4)).is_integer():
        kwargs["mlp_ratio"] = int(kwargs.get("mlp_ratio", 4))
    kwargs["patch_size"] = 4
    if family == "spikformer_semm" and int(kwargs.get("img_size", 32)) != 32:
        raise StepArgsError(
            f"args.img_size={kwargs['img_size']}: STEP's spikf_semm_cifar hard-codes the 8 x 8 token grid of a 32 x 32 "
            f"image (its MLP reshapes the tokens to 8 x 8 for the depthwise conv), so STEP cannot have run this model "
            f"consistently. Use a checkpoint trained on 32 x 32 images, or load the weights without STEP's args "
            f"(pass --arch / arch=...).")
    if family == "qkformer":
        kwargs["num_heads"] = 8

    node_name = _node_name(a)
    node = "lif"
    if node_name is not None:
        node = _check_node_type(node_name)
        kwargs["node"] = node
        _check_node_family(family, node, node_name, a,
                           str(a.get("dataset", "")).lower() in _STEP_DVS_DATASETS)
        if node in _NODE_QUIRKS:
            quirks.append(_NODE_QUIRKS[node])

    for option in ("embed_layer", "attn_layer"):
        ours = _layer_swap(family, a, option)
        if ours is not None:
            kwargs[option] = ours
            if ours in _SWAP_NOTES:
                quirks.append(_SWAP_NOTES[ours])
        elif family == "qkformer" and a.get(option) not in (None, "SPS", "SSA"):
            quirks.append(f"args.{option}={a.get(option)!r} has no effect: STEP's qkformer_cifar factory "
                          f"ignores {option}.")

    dataset = str(a.get("dataset", "")).lower()
    dvs = dataset in _STEP_DVS_DATASETS
    if dvs:
        kwargs["encoding"] = "events"
        kwargs["compare"] = ">"
    _plan_time_steps(family, int(kwargs.get("step", 4)), node, dvs, kwargs, quirks)
    _plan_tau(family, float(kwargs.get("tau", 2.0)), float(kwargs.get("threshold", 1.0)), node, kwargs, quirks)
    return StepModelPlan(family, kwargs, tuple(quirks))


def config_from_step_args(step_arch: str, args: Mapping[str, Any] | Namespace) -> tuple[str, dict]:
    """``(family, kwargs)`` of :func:`plan_from_step_args` (so that ``build_family(family,
    **kwargs)`` rebuilds the model as STEP ran it)."""
    plan = plan_from_step_args(step_arch, args)
    return plan.family, dict(plan.kwargs)
