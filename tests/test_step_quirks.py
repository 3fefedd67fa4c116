"""STEP's own behaviour, quirks included (issue 7 §3).

Checkpoints are written the way STEP's trainer writes them (timm ``CheckpointSaver``: 'arch',
'state_dict', 'args' Namespace, ...). Where STEP's code does something other than its options say
(read in github.com/Fancyssc/STEP, cls/models/static/*_cifar.py), the expected behaviour is
emulated here independently of the loader: a model built with the checkpoint's options whose
neurons are then set to the step/tau STEP's constructors give them."""
import argparse
import collections

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_batchnorm
from step_deploy import load_checkpoint
from step_deploy.frontend import capture, encoded_input, torch_traces
from step_deploy.frontend.checkpoint import CheckpointError, save_checkpoint
from step_deploy.models import build_family, build_model, iter_neurons
from step_deploy.simulators.reference import run

TINY = dict(img_size=8, in_channels=1, num_classes=10, embed_dim=64, num_heads=4, mlp_ratio=4, attn_scale=0.125)
STEP_NAME = {"spikformer": "spikformer_cifar", "sdt": "sdt_cifar", "qkformer": "qkformer_cifar"}
ZOO_NODE_TYPES = ["ILIFNode", "NILIFNode", "EIFNode", "GLIFTorch", "HDLIFNode", "KLIFNode", "ComplementaryLIFNeuron",
                  "PSNTorch"]  # STEP's neuron ablations beyond LIF/IF/PLIF (round trips: tests/test_neuron_zoo.py)


def step_args(family, **over):
    """``args`` as STEP's train.py saves them (argparse dests, yml values)."""
    a = dict(model=STEP_NAME[family], step=4, patch_size=4, depths=2 if family != "qkformer" else 3, tau=2.0,
             threshold=1.0, node_type="LIFNode", act_function="SigmoidGrad", alpha=4.0, dataset="torch/cifar10",
             embed_layer="SPS", attn_layer="SSA" if family != "sdt" else "SDSA", seed=42, **TINY)
    a.update(over)
    return argparse.Namespace(**a)


def write_step_checkpoint(path, args, state_dict):
    ck = {"epoch": 299, "arch": args.model, "state_dict": collections.OrderedDict(state_dict),
          "optimizer": {"state": {}, "param_groups": []}, "version": 2, "args": args, "amp_scaler": {},
          "metric": 95.1}
    torch.save(ck, path)
    return path


def weights(family, seed=0, **kwargs):
    """A state_dict with STEP's keys and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    cfg = {**TINY, "depths": 3 if family == "qkformer" else 2, "num_heads": 8 if family == "qkformer" else 4}
    cfg.update(kwargs)
    return randomize_batchnorm(build_family(family, **cfg).eval(), seed).state_dict()


def images(n=4, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2.0


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def assert_capture_parity(model, x):
    """The exported per-step graph computes the same spikes as the loaded PyTorch model."""
    ref_logits, traces = torch_traces(model, x)
    r = run(capture(model), encoded_input(model, x), record=True)
    mismatches = {n: int((t != r.traces[n]).sum()) for n, t in traces.items()}
    assert sum(mismatches.values()) == 0, {n: c for n, c in mismatches.items() if c}
    assert sum(float(t.sum()) for t in traces.values()) > 0, "the test needs spiking activity"
    assert torch.allclose(r.final(), ref_logits, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ time steps and tau


def test_sdt_blocks_run_tau_2_whatever_args_tau(tmp_path):
    args = step_args("sdt", tau=3.0, depths=1)
    sd = weights("sdt", depths=1, tau=3.0)
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "sdt.pth.tar", args, sd))
    taus = {name: n.tau for name, n in iter_neurons(m)}
    assert taus["patch_embed.proj_lif"] == 3.0 and taus["patch_embed.proj_lif3"] == 3.0
    assert all(t == 2.0 for name, t in taus.items() if name.startswith("block.") or name == "head_lif"), taus
    # STEP emulated: built with tau=3, then SDT_Block_s(..., tau=2.0) as sdt_cifar.py does
    step_model = build_family("sdt", **{**TINY, "depths": 1, "tau": 3.0})
    step_model.load_state_dict(sd)
    for name, n in iter_neurons(step_model):
        if name.startswith("block."):
            n.tau = 2.0
    x = images()
    assert torch.equal(logits(m, x), logits(step_model, x))
    assert any("args.tau=3" in q and "tau=2.0" in q for q in info.metadata["step_quirks"])
    assert_capture_parity(m, x)
    g = capture(m)
    ir_tau = {n.name: n.tau for n in g if type(n).__name__ == "Neuron"}
    assert ir_tau["block.0.attn.q_lif"] == 2.0 and ir_tau["patch_embed.proj_lif"] == 3.0


def test_own_format_keeps_one_tau(tmp_path):
    m = build_model("sdt-1-64-digits", tau=3.0)
    m2, info = load_checkpoint(save_checkpoint(m, tmp_path / "own.ckpt"))
    assert all(n.tau == 3.0 for name, n in iter_neurons(m2) if name != "head_lif")
    assert "step_quirks" not in info.metadata


def test_qkformer_q_lif_keeps_node_defaults(tmp_path):
    args = step_args("qkformer", tau=3.0, num_heads=8)
    sd = weights("qkformer", depths=3, tau=3.0, num_heads=8)
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "qk.pth.tar", args, sd))
    for name, n in iter_neurons(m):
        assert n.tau == (2.0 if name.endswith("tssa.q_lif") else 3.0), name
    assert any("tssa.q_lif" in q for q in info.metadata["step_quirks"])


def _spikformer_as_step_runs_it(sd, T):
    """STEP's Spikformer: encoder and readout use args.step=T, every neuron step=4."""
    model = build_family("spikformer", **{**TINY, "depths": 2, "step": T})
    model.load_state_dict(sd)
    for _, n in iter_neurons(model):
        n.step = 4
    return model.eval()


def test_spikformer_step_8_equals_its_4_step_run(tmp_path):
    sd = weights("spikformer", depths=2)
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "sf8.pth.tar", step_args("spikformer", step=8), sd))
    assert m.step == 4 and info.config["step"] == 4
    x = images(5)
    expected = logits(_spikformer_as_step_runs_it(sd, 8), x)
    got = logits(m, x)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    quirk = " ".join(info.metadata["step_quirks"])
    assert "args.step=8" in quirk and "loaded with step=4" in quirk
    # a model that honestly runs 8 steps computes something else: that is what used to be loaded
    honest = build_family("spikformer", **{**TINY, "depths": 2, "step": 8})
    honest.load_state_dict(sd)
    assert not torch.allclose(logits(honest, x), expected, atol=1e-4)


def test_capture_refuses_neurons_with_another_step():
    from step_deploy.frontend import CaptureError

    step_like = _spikformer_as_step_runs_it(weights("spikformer", depths=2), 8)
    with pytest.raises(CaptureError, match=r"run another number of time steps than the model's T=8: "
                                           r"patch_embed\.proj_lif \(step=4\)"):
        capture(step_like)


def test_spikformer_step_6_is_refused_because_step_mixes_samples(tmp_path):
    sd = weights("spikformer", depths=2)
    # why: with 4-step neurons in a 6-step model, a sample's logits depend on its batch neighbours
    step_model = _spikformer_as_step_runs_it(sd, 6)
    x = images(3)
    with_b = logits(step_model, x[[0, 1]])[0]
    with_c = logits(step_model, x[[0, 2]])[0]
    assert not torch.equal(with_b, with_c)
    with pytest.raises(Exception):  # 6 * 1 rows cannot be split into 4 steps: STEP fails
        logits(step_model, x[:1])
    with pytest.raises(CheckpointError, match=r"args\.step=6.*Spikformer.*4 steps.*batch size.*Retrain with step=4"):
        load_checkpoint(write_step_checkpoint(tmp_path / "sf6.pth.tar", step_args("spikformer", step=6), sd))


def test_spikformer_events_with_step_8_is_refused(tmp_path):
    sd = weights("spikformer", depths=2, encoding="events", in_channels=1)
    args = step_args("spikformer", step=8, dataset="dvsc10")
    with pytest.raises(CheckpointError, match=r"args\.step=8.*event input"):
        load_checkpoint(write_step_checkpoint(tmp_path / "dvs.pth.tar", args, sd))


@pytest.mark.parametrize("family,T", [("sdt", 8), ("sdt", 2), ("qkformer", 8)])
def test_other_families_with_step_not_4_are_refused(tmp_path, family, T):
    depths = 1 if family == "sdt" else 3
    sd = weights(family, depths=depths, **({"num_heads": 8} if family == "qkformer" else {}))
    args = step_args(family, step=T, depths=depths)
    where = "tssa.q_lif" if family == "qkformer" else "stem and blocks"
    with pytest.raises(CheckpointError, match=rf"args\.step={T}: STEP's .*{where}.*Retrain with step=4"):
        load_checkpoint(write_step_checkpoint(tmp_path / "m.pth.tar", args, sd))


def test_qkformer_if_node_q_lif_runs_10_steps(tmp_path):
    sd = weights("qkformer", depths=3, num_heads=8, node="if")
    with pytest.raises(CheckpointError, match=r"args\.step=4.*default 10 steps.*Retrain with step=10"):
        load_checkpoint(write_step_checkpoint(tmp_path / "a.pth.tar", step_args("qkformer", node_type="IFNode"), sd))
    sd10 = weights("qkformer", depths=3, num_heads=8, node="if", step=10)
    m, _ = load_checkpoint(write_step_checkpoint(tmp_path / "b.pth.tar",
                                                 step_args("qkformer", node_type="IFNode", step=10), sd10))
    assert {n.step for _, n in iter_neurons(m)} == {10}


def test_qkformer_from_train_dvs_is_refused(tmp_path):
    sd = weights("qkformer", depths=3, num_heads=8, encoding="events")
    with pytest.raises(CheckpointError, match=r"BrainCog.*tssa\.q_lif.*memoryless"):
        load_checkpoint(write_step_checkpoint(tmp_path / "q.pth.tar", step_args("qkformer", dataset="dvsg"), sd))


def test_consistent_checkpoint_has_no_quirks(tmp_path):
    sd = weights("spikformer", depths=2)
    _, info = load_checkpoint(write_step_checkpoint(tmp_path / "ok.pth.tar", step_args("spikformer"), sd))
    assert info.metadata["step_quirks"] == []


# ------------------------------------------------------------------ layer swaps and neurons


@pytest.mark.parametrize("family,option,value,needs", [
    ("spikformer", "embed_layer", "vit_embed", "position embedding"),
    ("spikformer", "embed_layer", "sequential_embed", "sequence input"),
    ("sdt", "embed_layer", "vit_embed", "position embedding"),
    ("sdt", "embed_layer", "sequential_embed", "sequence input"),
])
def test_unsupported_layer_swaps_name_the_option(tmp_path, family, option, value, needs):
    depths = 1
    sd = dict(weights(family, depths=depths))
    for k in [k for k in sd if k.startswith("patch_embed." if option == "embed_layer" else "block.0.attn.")]:
        del sd[k]  # STEP's ablation layers have other parameters, e.g.:
    sd["patch_embed.pos_embed" if option == "embed_layer" else "block.0.attn.q_linear.0.weight"] = torch.zeros(1)
    args = step_args(family, depths=depths, **{option: value})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(write_step_checkpoint(tmp_path / "swap.pth.tar", args, sd))
    msg = str(err.value)
    assert f"args.{option}={value!r}" in msg and needs in msg and "not supported yet" in msg
    assert "missing keys" not in msg


def test_layer_name_step_itself_cannot_build(tmp_path):
    # STEP's own configs/spikformer/scifar10.yml says embed_layer: 'SP'
    args = step_args("spikformer", embed_layer="SP")
    with pytest.raises(CheckpointError, match=r"args\.embed_layer='SP'.*no layer of that name.*STEP itself"):
        load_checkpoint(write_step_checkpoint(tmp_path / "sp.pth.tar", args, weights("spikformer")))
    args = step_args("sdt", attn_layer="SSA", depths=1)  # train.py's default attn_layer, unknown to sdt_cifar.py
    with pytest.raises(CheckpointError, match=r"args\.attn_layer='SSA'.*SDT.*known: SDSA, random_sdsa, repconv_attn"):
        load_checkpoint(write_step_checkpoint(tmp_path / "ssa.pth.tar", args, weights("sdt", depths=1)))


@pytest.mark.parametrize("node_type", ZOO_NODE_TYPES)
def test_every_neuron_ablation_is_planned_with_its_node(node_type):
    from step_deploy.models import plan_from_step_args
    from step_deploy.models.neurons import neuron_class

    plan = plan_from_step_args("spikformer_cifar", step_args("spikformer", node_type=node_type))
    assert neuron_class(plan.kwargs["node"]).__name__ == node_type


@pytest.mark.parametrize("family, node_type, over, needs", [
    ("sdt", "HDLIFNode", {}, r"HDLIFNode requires input_dims.*only in Spikformer's SPS stem, SSA and MLP"),
    ("qkformer", "HDLIFNode", {}, r"HDLIFNode requires input_dims.*cannot have built"),
    ("spikformer", "HDLIFNode", {"attn_layer": "repconv_attn"}, r"attn_layer='repconv_attn'.*requires input_dims"),
    ("sdt", "ComplementaryLIFNeuron", {}, r"head_lif.*only 3-D and 4-D inputs"),
    ("spikformer", "ILIFNode", {"dataset": "dvsc10"}, r"train_dvs\.py resolves node_type among BrainCog"),
])
def test_neuron_ablations_step_cannot_run_are_refused(tmp_path, family, node_type, over, needs):
    """Pairs STEP itself cannot build or evaluate are refused before any key comparison."""
    args = step_args(family, node_type=node_type, depths=3 if family == "qkformer" else 1, **over)
    with pytest.raises(CheckpointError, match=rf"args\.node_type='{node_type}'.*{needs}") as err:
        load_checkpoint(write_step_checkpoint(tmp_path / "n.pth.tar", args, {"x": torch.zeros(1)}))
    assert "missing keys" not in str(err.value) and "unexpected keys" not in str(err.value)


@pytest.mark.parametrize("node_type, says", [
    ("ComplementaryLIFNeuron", "ignores threshold: v_threshold stays 1.0, also in attention"),
    ("GLIFTorch", "ignores threshold and tau"),
    ("PSNTorch", "ignores threshold and tau"),
    ("ILIFNode", "D=2"),
])
def test_neuron_ablation_quirks_are_stated(tmp_path, node_type, says):
    args = step_args("spikformer", node_type=node_type, depths=1)
    sd = build_family("spikformer", **{**TINY, "depths": 1, "node": node_type}).state_dict()
    model, info = load_checkpoint(write_step_checkpoint(tmp_path / "n.pth.tar", args, sd))
    assert any(says in q for q in info.metadata["step_quirks"]), info.metadata["step_quirks"]
    if node_type == "ComplementaryLIFNeuron":  # STEP's attn_lif gets threshold=0.5, which CLIF ignores
        assert model.block[0].attn.attn_lif.v_threshold == 1.0


def test_qkformer_glif_q_lif_runs_10_steps(tmp_path):
    """``tssa.q_lif = node()``: GLIFTorch's default step is 10, so only T = 10 is consistent."""
    sd = weights("qkformer", node="glif")
    with pytest.raises(CheckpointError, match=r"args\.step=4.*default 10 steps"):
        load_checkpoint(write_step_checkpoint(tmp_path / "a.pth.tar", step_args("qkformer", node_type="GLIFTorch"), sd))
    sd10 = weights("qkformer", node="glif", step=10)
    model, _ = load_checkpoint(write_step_checkpoint(tmp_path / "b.pth.tar",
                                                     step_args("qkformer", node_type="GLIFTorch", step=10), sd10))
    assert model.stage1[0].tssa.q_lif.T == 10 and tuple(sd10["stage1.0.tssa.q_lif.tau"].shape) == (10,)


def _bn_keys(prefix, c):
    return {f"{prefix}.{k}": ((c,) if k != "num_batches_tracked" else ())
            for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def _lif_keys(prefix):
    return {f"{prefix}.threshold": (), f"{prefix}.act_fun.alpha": ()}


def conv2_embed_keys(d=64, cin=1):
    """patch_embed keys of STEP's conv2_embed (spikformer_cifar.py / sdt_cifar.py), written from its code."""
    keys = {"patch_embed.proj_conv.weight": (d // 4, cin, 3, 3), "patch_embed.proj_conv1.weight": (d, d // 4, 3, 3),
            "patch_embed.rpe_conv.weight": (d, d, 3, 3)}
    keys.update(_bn_keys("patch_embed.proj_bn", d // 4))
    keys.update(_bn_keys("patch_embed.proj_bn1", d))
    keys.update(_bn_keys("patch_embed.rpe_bn", d))
    for lif in ("proj_lif", "proj_lif1", "rpe_lif"):
        keys.update(_lif_keys(f"patch_embed.{lif}"))
    return keys


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def _lif(x, T=4, thr=1.0, tau=2.0):
    """STEP LIFNode, layer by layer: '(t b) ... -> t b ...', H = V + (X - V)/tau, S = H >= thr, hard reset."""
    xs, v, out = x.unflatten(0, (T, -1)), torch.zeros_like(x.unflatten(0, (T, -1))[0]), []
    for t in range(T):
        h = v + (xs[t] - v) / tau
        s = (h >= thr).float()
        v = h * (1 - s)
        out.append(s)
    return torch.stack(out).flatten(0, 1)


def _conv2_stem_as_in_step(x, sd, sdt):
    """STEP's conv2_embed.forward (spikformer_cifar.py; sdt_cifar.py when ``sdt``)."""
    p = "patch_embed"
    pool = lambda t: F.max_pool2d(t, 3, 2, 1)  # noqa: E731
    x = pool(_lif(_bn(F.conv2d(x, sd[f"{p}.proj_conv.weight"], padding=1), sd, f"{p}.proj_bn")))
    x = _bn(F.conv2d(x, sd[f"{p}.proj_conv1.weight"], padding=1), sd, f"{p}.proj_bn1")
    if sdt:
        x = pool(x)
        feat = x
        x = _bn(F.conv2d(_lif(x), sd[f"{p}.rpe_conv.weight"], padding=1), sd, f"{p}.rpe_bn")
        return (x + feat).transpose(-1, -2)
    x = pool(_lif(x))
    feat = x
    x = _lif(_bn(F.conv2d(x, sd[f"{p}.rpe_conv.weight"], padding=1), sd, f"{p}.rpe_bn"))
    return (x + feat).flatten(2).transpose(1, 2)


@pytest.mark.parametrize("family", ["spikformer", "sdt"])
def test_conv2_embed_loads_strict_and_matches_step(tmp_path, family):
    sd = weights(family, depths=1, embed_layer="conv2_embed", patch_size=4)
    stem = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("patch_embed.")}
    assert stem == conv2_embed_keys()
    args = step_args(family, depths=1, embed_layer="conv2_embed")
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "c2.pth.tar", args, sd))
    assert type(m.patch_embed).__name__.startswith("Conv2")
    assert any("conv2_embed" in q for q in info.metadata["step_quirks"])
    x = images(3)
    enc = m.encoder(x)
    with torch.no_grad():
        assert torch.equal(m.patch_embed(enc), _conv2_stem_as_in_step(enc, sd, family == "sdt"))
    assert_capture_parity(m, x)


@pytest.mark.parametrize("family,attn", [("spikformer", "random_ssa"), ("sdt", "random_sdsa")])
def test_random_qk_attention_is_plain_attention_at_inference(tmp_path, family, attn):
    sd = weights(family, depths=1)  # random_ssa / random_sdsa have exactly SSA's / SDSA's parameters
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "r.pth.tar", step_args(family, depths=1, attn_layer=attn), sd))
    a = m.block[0].attn
    assert type(a).__name__.startswith("Random")
    frozen = [n for n, p in a.named_parameters() if not p.requires_grad and not n.endswith(("threshold", "alpha"))]
    assert sorted(frozen) == (["k_linear.bias", "k_linear.weight", "q_linear.bias", "q_linear.weight"]
                              if family == "spikformer" else ["k_conv.weight", "q_conv.weight"])
    plain = build_family(family, **{**TINY, "depths": 1})
    plain.load_state_dict(sd)
    x = images()
    assert torch.equal(logits(m, x), logits(plain, x))
    assert any(f"args.attn_layer={attn!r}" in q for q in info.metadata["step_quirks"])
    assert_capture_parity(m, x)


def test_qkformer_ignores_layer_swaps_like_step(tmp_path):
    sd = weights("qkformer", depths=3, num_heads=8)
    args = step_args("qkformer", attn_layer="random_ssa")
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "q.pth.tar", args, sd))
    assert any("args.attn_layer='random_ssa' has no effect" in q for q in info.metadata["step_quirks"])


def repconv_attn_keys(family, c=64, heads=4, prefix="block.0.attn"):
    """Attention keys of STEP's repconv_attn (spikformer_cifar.py / sdt_cifar.py), written from its code."""
    proj = ("q_linear", "k_linear", "v_linear", "proj_linear") if family == "spikformer" else \
        ("q_conv", "k_conv", "v_conv", "proj_conv")
    keys = {}
    for p in proj:
        keys.update({f"{prefix}.{p}.0.weight": (c, c, 1, 1), f"{prefix}.{p}.2.weight": (c, 1, 3, 3),
                     f"{prefix}.{p}.3.weight": (c, c, 1, 1)})
        keys.update(_bn_keys(f"{prefix}.{p}.1.bn", c))
    for bn in ("q_bn", "k_bn", "v_bn", "proj_bn"):
        keys.update(_bn_keys(f"{prefix}.{bn}", c))
    lifs = ["q_lif", "k_lif", "v_lif", "attn_lif"] + (["proj_lif"] if family == "spikformer"
                                                       else ["talking_heads_lif", "shortcut_lif"])
    for lif in lifs:
        keys.update(_lif_keys(f"{prefix}.{lif}"))
    if family == "sdt":
        keys[f"{prefix}.talking_heads.weight"] = (heads, heads, 1)
    return keys


def test_bn_and_pad_equals_batchnorm_of_zero_padded_map():
    from step_deploy.models.blocks import BNAndPadLayer

    layer = randomize_batchnorm(BNAndPadLayer(1, 6).eval(), seed=3)
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        expected = layer.bn(F.pad(x, [1, 1, 1, 1]))
        assert torch.allclose(layer(x), expected, atol=1e-6)
        assert torch.equal(layer(x)[:, :, 1:-1, 1:-1], layer.bn(x))


@pytest.mark.parametrize("family", ["spikformer", "sdt"])
def test_repconv_attn_loads_strict_and_exports(tmp_path, family):
    sd = weights(family, depths=1, attn_layer="repconv_attn")
    attn = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("block.0.attn.")}
    assert attn == repconv_attn_keys(family)
    args = step_args(family, depths=1, attn_layer="repconv_attn")
    m, info = load_checkpoint(write_step_checkpoint(tmp_path / "rep.pth.tar", args, sd))
    assert type(m.block[0].attn).__name__.startswith("RepConv")
    assert any("repconv_attn" in q for q in info.metadata["step_quirks"])
    assert_capture_parity(m, images(4))
