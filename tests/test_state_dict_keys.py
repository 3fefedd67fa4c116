"""state_dicts match STEP's (fixtures written from research/step.md §2, not from our code)."""
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from step_deploy.models import build_family, build_model, config_from_step_args, iter_neurons

FIXTURES = Path(__file__).parent / "fixtures"

# config name -> (STEP timm name, state_dict entries, trainable params, neurons)
FULL = {
    "spikformer-4-384": ("spikformer_cifar", 266, 9_324_730, 33),
    "sdt-2-512": ("sdt_cifar", 156, 10_233_546, 22),
    "qkformer-4-384": ("qkformer_cifar", 270, 6_706_234, 35),
}


def load_fixture(step_name):
    """``{key: (shape, value-or-None)}`` from ``step_keys_<step_name>.txt``."""
    out = {}
    for line in (FIXTURES / f"step_keys_{step_name}.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        inner = parts[1].strip("()")
        shape = tuple(int(v) for v in inner.split(",")) if inner else ()
        out[parts[0]] = (shape, float(parts[2]) if len(parts) > 2 else None)
    return out


@pytest.fixture(scope="module")
def models():
    return {name: build_model(name) for name in FULL}


@pytest.mark.parametrize("name", list(FULL))
def test_keys_and_shapes_match_step(models, name):
    step_name, n_entries, _, _ = FULL[name]
    expected = load_fixture(step_name)
    sd = models[name].state_dict()
    assert len(expected) == n_entries
    assert len(sd) == n_entries
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    assert not missing and not extra, f"missing={missing[:5]} extra={extra[:5]}"
    for key, (shape, value) in expected.items():
        assert tuple(sd[key].shape) == shape, key
        if value is not None:  # neuron threshold / surrogate alpha
            assert float(sd[key]) == value, key


@pytest.mark.parametrize("name", list(FULL))
def test_trainable_param_count_and_frozen_neuron_params(models, name):
    _, _, n_params, n_neurons = FULL[name]
    m = models[name]
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == n_params
    for key, p in m.named_parameters():
        if key.endswith(".threshold") or key.endswith(".act_fun.alpha"):
            assert not p.requires_grad, key
    assert len(iter_neurons(m)) == n_neurons
    assert all(n.step == 4 for _, n in iter_neurons(m))


def fake_step_checkpoint(step_name, seed=0):
    """A STEP-like state_dict built from the fixture: random weights, fixture scalars."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (shape, value) in load_fixture(step_name).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7, dtype=torch.long)
        elif value is not None:
            sd[key] = torch.tensor(value)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    return sd


# STEP args as train.py saves them (extra keys and STEP quirks included)
STEP_ARGS = {
    "spikformer_cifar": dict(model="spikformer_cifar", step=4, img_size=32, patch_size=4, in_channels=3,
                             num_classes=10, embed_dim=384, num_heads=12, mlp_ratio=4, attn_scale=0.125,
                             depths=4, tau=2.0, threshold=1.0, node_type="LIFNode", dataset="torch/cifar10",
                             act_function="SigmoidGrad", alpha=4.0, embed_layer="SPS"),
    "sdt_cifar": dict(model="sdt_cifar", step=4, img_size=32, patch_size=4, in_channels=3, num_classes=10,
                      embed_dim=512, num_heads=8, mlp_ratio=4, attn_scale=0.125, depths=2, tau=2.0,
                      threshold=1.0, node_type="LIFNode", dataset="torch/cifar10"),
    # QKFormer ignores num_heads (hard-coded 8) and every CIFAR stem ignores patch_size
    "qkformer_cifar": dict(model="qkformer_cifar", step=4, img_size=32, patch_size=16, in_channels=3,
                           num_classes=10, embed_dim=384, num_heads=6, mlp_ratio=4, attn_scale=0.125,
                           depths=4, tau=2.0, threshold=1.0, node_type="LIFNode", dataset="torch/cifar10"),
}


@pytest.mark.parametrize("step_name", list(STEP_ARGS))
def test_step_checkpoint_loads_strict_via_step_args(step_name):
    family, kwargs = config_from_step_args(step_name, Namespace(**STEP_ARGS[step_name]))
    assert kwargs["patch_size"] == 4
    model = build_family(family, **kwargs)
    ck = fake_step_checkpoint(step_name)
    result = model.load_state_dict(ck, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in ck.items())
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 10) and torch.isfinite(y).all()


def test_config_from_step_args_quirks():
    fam, kw = config_from_step_args("qkformer_cifar", STEP_ARGS["qkformer_cifar"])
    assert fam == "qkformer" and kw["num_heads"] == 8
    assert kw["node"] == "lif" and "encoding" not in kw
    fam, kw = config_from_step_args("sdt_cifar", dict(step=4, in_channels=2, img_size=48, num_classes=10,
                                                      node_type="PLIFNode", dataset="dvsc10"))
    assert fam == "sdt" and kw["step"] == 4 and kw["node"] == "plif"
    assert kw["encoding"] == "events" and kw["compare"] == ">"
    # STEP's SDT stem and blocks always run 4 steps: a 10-step DVS run is not reproducible (tests/test_step_quirks.py)
    with pytest.raises(ValueError, match="args.step=10"):
        config_from_step_args("sdt_cifar", dict(step=10, node_type="PLIFNode", dataset="dvsc10"))
    with pytest.raises(ValueError, match="HDLIFNode"):
        config_from_step_args("sdt_cifar", dict(node_type="HDLIFNode"))
    with pytest.raises(ValueError):
        config_from_step_args("std_imagenet", {})
