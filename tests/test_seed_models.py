"""The seed designs' PyTorch models (models/seed_attention.py, models/spikformer_semm.py) against plain
loops written here from their equations (research/seed_models.md §1-§4), STEP's SEMM keys, forward
and checkpoints. Tiny shapes: T = 4, a handful of tokens and channels."""
import argparse
import collections
import math

import pytest
import torch
from torch import nn

from conftest import random_model
from step_deploy import ir, load_checkpoint
from step_deploy.frontend import capture
from step_deploy.frontend.checkpoint import CheckpointError
from step_deploy.models import build_model, make_neuron
from step_deploy.models.blocks import NeuronSpec
from step_deploy.models.seed_attention import (A2OS2ASSA, BipolarSSA, STAttenSDSA, STAttenSSA, TernaryLIFNode,
                                               shiftmax)
from step_deploy.simulators import reference
from step_deploy.simulators.reference_ops import op_shiftmax

T, B, N, C, HEADS = 4, 2, 4, 8, 2
D = C // HEADS


def mismatches(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{int((a != b).sum())} of {a.numel()} values differ"


def exact(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights in quarters, BN the identity (eps 0): every value of the forward is exact in float32,
    so a loop and the module must agree bit for bit."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.data = torch.randint(-4, 5, m.weight.shape, generator=g).float() / 4
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 0.0
            m.running_mean.zero_(), m.running_var.fill_(1.0), m.weight.data.fill_(1.0), m.bias.data.zero_()
    return module.eval()


def tokens(seed=1, shape=(T * B, N, C)) -> torch.Tensor:
    return torch.randint(-3, 4, shape, generator=torch.Generator().manual_seed(seed)).float()


def run_traced(module: nn.Module, x: torch.Tensor, names) -> tuple[torch.Tensor, dict]:
    """Output and ``{name: (input, output)}`` of the named submodules."""
    got = {}
    hooks = [getattr(module, n).register_forward_hook(
        lambda m, i, o, n=n: got.__setitem__(n, (i[0].detach(), o.detach()))) for n in names]
    with torch.no_grad():
        out = module(x)
    for h in hooks:
        h.remove()
    return out, got


def head_mats(z: torch.Tensor, t: int, b: int, h: int) -> torch.Tensor:
    """Head ``h`` of step ``t``, sample ``b`` of a ``(T*B, N, C)`` tensor: ``(N, d)``."""
    return z.unflatten(0, (T, -1))[t, b, :, h * D:(h + 1) * D]


def per_head_loop(q, k, v, fn) -> torch.Tensor:
    """``Y[t, b, :, head h] = fn(t, b, h)`` as a ``(T*B, N, C)`` tensor."""
    y = torch.zeros(T, q.shape[0] // T, N, C)
    for t in range(T):
        for b in range(y.shape[1]):
            for h in range(HEADS):
                y[t, b, :, h * D:(h + 1) * D] = fn(t, b, h)
    return y.flatten(0, 1)


# --------------------------------------------------------------------------- ternary neuron


def ternary_loop(x: torch.Tensor, theta: float, tau: float = 2.0, reset: str = "hard", strict=False) -> torch.Tensor:
    """``H = V + (X - V)/tau; S = [H >= θ] - [H <= -θ]; V = H(1 - |S|)`` (soft: ``V = H - Sθ``)."""
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        up, down = (h > theta, h < -theta) if strict else (h >= theta, h <= -theta)
        s = up.float() - down.float()
        v = h * (1 - s.abs()) if reset == "hard" else h - s * theta
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("reset,compare", [("hard", ">="), ("soft", ">="), ("hard", ">")])
def test_ternary_neuron_against_its_equation_with_ties_at_both_thresholds(reset, compare):
    theta = 0.5
    ties = torch.tensor([2 * theta, -2 * theta, 2 * theta - 1e-3, -2 * theta + 1e-3, 0.0])  # H[0] = X/2
    x = torch.cat([ties.expand(T, -1), torch.randn(T, 40, generator=torch.Generator().manual_seed(0)) * 2], dim=1)
    node = make_neuron("tlif", step=T, threshold=theta, reset=reset, compare=compare)
    assert isinstance(node, TernaryLIFNode)
    with torch.no_grad():
        got = node(x.flatten(0, 1).unsqueeze(-1)).reshape(x.shape)
    want = ternary_loop(x, theta, reset=reset, strict=compare == ">")
    assert torch.equal(got, want), mismatches(got, want)
    first = got[0, :5].tolist()
    assert first == ([1.0, -1.0, 0.0, 0.0, 0.0] if compare == ">=" else [0.0, 0.0, 0.0, 0.0, 0.0])
    assert set(got.unique().tolist()) == {-1.0, 0.0, 1.0}


def test_ternary_neuron_has_a_surrogate_gradient_at_each_threshold():
    node = TernaryLIFNode(step=1, threshold=1.0)
    x = torch.tensor([2.0, -2.0, 0.0, 6.0], requires_grad=True)  # H = +θ, -θ, 0, 3θ
    node(x.unsqueeze(-1)).sum().backward()
    g = x.grad
    assert g[0] > 0 and g[1] > 0, "a surrogate at +θ and at -θ"
    assert g[0] == g[1] and g[2] < g[0] / 4 and g[3] < g[0] / 4


def test_ternary_neuron_captures_as_a_ternary_ir_neuron_and_the_reference_agrees():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), make_neuron("tlif", step=T), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    assert net[1].neuron_params()["output"] == "ternary"
    graph = capture(net, input_shape=(4,))
    neurons = [n for n in graph.nodes.values() if isinstance(n, ir.Neuron)]
    assert len(neurons) == 1 and neurons[0].output == "ternary" and neurons[0].v_threshold == 1.0
    x = torch.randn(T, 5, 4, generator=torch.Generator().manual_seed(2)) * 2
    run = reference.run(graph, x)
    with torch.no_grad():
        want = net(x.flatten(0, 1)).unflatten(0, (T, -1))
    got = next(iter(run.outputs.values()))
    assert torch.equal(got, want), mismatches(got, want)


# --------------------------------------------------------------------------- shiftmax


def shiftmax_loop(row: list[float], frac_bits: int) -> list[float]:
    m = max(row)
    num = [2.0 ** (s - m) if s - m >= -frac_bits else 0.0 for s in row]
    den = 2.0 ** math.ceil(math.log2(sum(num)))
    return [x / den for x in num]


@pytest.mark.parametrize("frac_bits", [0, 3, 16])
def test_shiftmax_equals_the_ir_op_and_its_definition(frac_bits):
    g = torch.Generator().manual_seed(frac_bits)
    s = torch.randint(-8, 9, (64, 12), generator=g).float()
    s[:8, :4] = 8.0  # ties at the row maximum
    s[8:16, 6:] = -40.0  # terms far below 2^-frac_bits: dropped
    s[16] = 5.0  # a constant row
    got = shiftmax(s, dim=-1, frac_bits=frac_bits)
    op = op_shiftmax(ir.Shiftmax("p", ("s",), axis=-1, frac_bits=frac_bits), [s], None, 0)
    assert torch.equal(got, op), mismatches(got, op)
    want = torch.tensor([shiftmax_loop(r, frac_bits) for r in s.tolist()])
    assert torch.equal(got, want), mismatches(got, want)
    sums = got.sum(-1)
    assert (sums > 0.5).all() and (sums <= 1.0).all()
    assert torch.equal(shiftmax(s.T, dim=0, frac_bits=frac_bits), got.T)
    if frac_bits == 3:
        assert (got[8:16, 6:] == 0).all()


def test_shiftmax_passes_gradients_through_its_numerator():
    s = torch.tensor([[2.0, 1.0, -1.0, 0.0]], requires_grad=True)
    shiftmax(s, frac_bits=16)[0, 1].backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 1] > 0


# --------------------------------------------------------------------------- STAtten


def statten_loop(q, k, v, chunk: int, scale: float) -> torch.Tensor:
    def fn(t, b, h):
        c0 = t // chunk * chunk
        m = sum(head_mats(k, tau, b, h).T @ head_mats(v, tau, b, h) for tau in range(c0, c0 + chunk))
        return (head_mats(q, t, b, h) @ m) * scale
    return per_head_loop(q, k, v, fn)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_statten_ssa_against_the_block_equation(chunk):
    attn = exact(STAttenSSA(C, HEADS, NeuronSpec(step=T), scale=0.125, chunk_size=chunk))
    out, tr = run_traced(attn, tokens(), ["q_lif", "k_lif", "v_lif", "attn_lif"])
    q, k, v = (tr[n][1] for n in ("q_lif", "k_lif", "v_lif"))
    assert q.sum() > 0 and k.sum() > 0 and v.sum() > 0
    want = statten_loop(q, k, v, chunk, 0.125)
    got = tr["attn_lif"][0]
    assert torch.equal(got, want), mismatches(got, want)
    with torch.no_grad():  # then attn_lif, proj_linear, proj_bn, proj_lif on the tokens
        tail = attn.proj_lif(attn.proj_bn(attn.proj_linear(attn.attn_lif(want)).transpose(1, 2)).transpose(1, 2))
    assert torch.equal(out, tail)


def sdt_tokens(z: torch.Tensor) -> torch.Tensor:
    """``(T*B, C, H, W)`` -> ``(T*B, N, C)``, token ``n = h*W + w``."""
    return z.flatten(2).transpose(1, 2)


def test_statten_sdsa_against_the_block_equation_with_scale_one_over_h():
    attn = exact(STAttenSDSA(C, HEADS, NeuronSpec(step=T), chunk_size=2))
    x = tokens(shape=(T * B, C, 2, 2))
    out, tr = run_traced(attn, x, ["q_lif", "k_lif", "v_lif", "attn_lif"])
    q, k, v = (sdt_tokens(tr[n][1]) for n in ("q_lif", "k_lif", "v_lif"))
    assert q.sum() > 0 and k.sum() > 0 and v.sum() > 0
    want = statten_loop(q, k, v, 2, 1 / 2)  # H = 2
    got = sdt_tokens(tr["attn_lif"][0])
    assert torch.equal(got, want), mismatches(got, want)
    with torch.no_grad():
        tail = attn.proj_bn(attn.proj_conv(tr["attn_lif"][1])) + x  # membrane shortcut
    assert torch.equal(out, tail)


@pytest.mark.parametrize("sdt", [False, True])
def test_statten_is_non_causal_inside_a_block_and_causal_across_blocks(sdt):
    def attn_input(chunk, x):
        attn = exact(STAttenSDSA(C, HEADS, NeuronSpec(step=T), chunk_size=chunk) if sdt else
                     STAttenSSA(C, HEADS, NeuronSpec(step=T), chunk_size=chunk))
        return run_traced(attn, x, ["attn_lif"])[1]["attn_lif"][0].unflatten(0, (T, -1))

    x = tokens(shape=(T * B, C, 2, 2) if sdt else (T * B, N, C))
    changed = x.clone()
    changed[3 * B:4 * B] += 4.0  # only step 3's input
    a, b = attn_input(2, x), attn_input(2, changed)
    assert torch.equal(a[:2], b[:2]), "steps 0-1 (the block before) must not see step 3"
    assert not torch.equal(a[2], b[2]), "step 2 shares step 3's block: it must see step 3"
    a1, b1 = attn_input(1, x), attn_input(1, changed)
    assert torch.equal(a1[:3], b1[:3]), "with chunk_size=1 every step is causal"


@pytest.mark.parametrize("arch", ["spikformer-statten-2-64-digits", "sdt-statten-1-64-digits"])
def test_statten_refuses_t_not_a_multiple_of_chunk_size(arch):
    with pytest.raises(ValueError, match=r"chunk_size=3.*T=4"):
        build_model(arch, chunk_size=3)
    m = build_model(arch, chunk_size=4, step=8)
    assert m.block[0].attn.chunk_size == 4 and m.block[0].attn.step == 8


# --------------------------------------------------------------------------- A²OS²A and bipolar SA


def test_a2os2a_binary_q_relu_k_ternary_v_against_q_kt_v():
    attn = exact(A2OS2ASSA(C, HEADS, NeuronSpec(step=T)))
    out, tr = run_traced(attn, tokens(), ["q_lif", "k_relu", "v_lif", "attn_lif"])
    q, k, v = (tr[n][1] for n in ("q_lif", "k_relu", "v_lif"))
    assert set(q.unique().tolist()) == {0.0, 1.0} and set(v.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert (k >= 0).all() and (k > 1).any() and (k.frac() != 0).any(), "K is a real ReLU activation"
    want = per_head_loop(q, k, v, lambda t, b, h: (head_mats(q, t, b, h) @ head_mats(k, t, b, h).T)
                         @ head_mats(v, t, b, h))
    got = tr["attn_lif"][0]
    assert torch.equal(got, want), mismatches(got, want)
    assert attn.attn_lif.threshold == 0.5 and isinstance(attn.v_lif, TernaryLIFNode)


def test_bipolar_ssa_ternary_q_k_shiftmax_binary_v():
    attn = exact(BipolarSSA(C, HEADS, NeuronSpec(step=T), shiftmax_bits=3))
    out, tr = run_traced(attn, tokens(), ["q_lif", "k_lif", "v_lif", "attn_lif"])
    q, k, v = (tr[n][1] for n in ("q_lif", "k_lif", "v_lif"))
    assert set(q.unique().tolist()) == {-1.0, 0.0, 1.0} and set(k.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert set(v.unique().tolist()) <= {0.0, 1.0}

    def fn(t, b, h):
        scores = head_mats(q, t, b, h) @ head_mats(k, t, b, h).T
        return torch.tensor([shiftmax_loop(r, 3) for r in scores.tolist()]) @ head_mats(v, t, b, h)
    want = per_head_loop(q, k, v, fn)
    got = tr["attn_lif"][0]
    assert torch.equal(got, want), mismatches(got, want)
    assert attn.frac_bits == 3 and attn.attn_lif.threshold == 0.5


@pytest.mark.parametrize("cls", [STAttenSSA, STAttenSDSA, A2OS2ASSA, BipolarSSA])
def test_gradient_reaches_q_k_and_v_of_each_new_attention(cls):
    torch.manual_seed(0)
    attn = cls(C, HEADS, NeuronSpec(step=T)).train()
    for bn in attn.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.weight.data.fill_(3.0)  # dense spikes: a gradient can only pass where spikes are
    shape = (T * B, C, 2, 2) if cls is STAttenSDSA else (T * B, N, C)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 3
    w = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    (attn(x) * w).sum().backward()
    for t in "qkv":
        layer = getattr(attn, f"{t}_conv" if cls is STAttenSDSA else f"{t}_linear")
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, f"no gradient reaches {t}"


def test_named_configs_build_the_seed_layers():
    m = build_model("spikformer-bsa-2-64-digits", shiftmax_bits=5)
    assert isinstance(m.block[0].attn, BipolarSSA) and m.block[0].attn.frac_bits == 5
    assert isinstance(build_model("spikformer-a2os2a-2-64-digits").block[1].attn, A2OS2ASSA)
    assert isinstance(build_model("sdt-statten-1-64-digits").block[0].attn, STAttenSDSA)
    with pytest.raises(ValueError, match="attn_layer='nope'"):
        build_model("spikformer-2-64-digits", attn_layer="nope")


# --------------------------------------------------------------------------- Spikformer + SEMM


def semm_step_keys(dim=384, depths=4, expert_dim=96, experts=4, classes=10) -> list[tuple[str, tuple]]:
    """STEP's ``spikf_semm_cifar`` state_dict, from the table of research/seed_models.md §2.5."""
    keys = []

    def conv(name, shape):
        keys.append((f"{name}.weight", shape))

    def lin(name, out, inp):
        keys.extend([(f"{name}.weight", (out, inp)), (f"{name}.bias", (out,))])

    def bn(name, c):
        keys.extend([(f"{name}.{s}", (c,)) for s in ("weight", "bias", "running_mean", "running_var")])
        keys.append((f"{name}.num_batches_tracked", ()))

    def node(name):
        keys.extend([(f"{name}.threshold", ()), (f"{name}.act_fun.alpha", ())])

    widths = [3, dim // 8, dim // 4, dim // 2, dim]
    for i, suffix in enumerate(["", "1", "2", "3"]):
        conv(f"patch_embed.proj_conv{suffix}", (widths[i + 1], widths[i], 3, 3))
        bn(f"patch_embed.proj_bn{suffix}", widths[i + 1])
        node(f"patch_embed.proj_lif{suffix}")
    conv("patch_embed.rpe_conv", (dim, dim, 3, 3)), bn("patch_embed.rpe_bn", dim), node("patch_embed.rpe_lif")
    for b in range(depths):
        a, m = f"block.{b}.attn.", f"block.{b}.mlp."
        for name, out in (("k", expert_dim), ("v", dim), ("proj", dim)):
            lin(f"{a}{name}_linear", out, dim), bn(f"{a}{name}_bn", out), node(f"{a}{name}_lif")
        lin(f"{a}router1", experts, dim), bn(f"{a}router2", experts), node(f"{a}router3")
        for i in range(experts):
            lin(f"{a}ff_list.{i}.unit_linear", expert_dim, dim)
            bn(f"{a}ff_list.{i}.unit_bn", expert_dim), node(f"{a}ff_list.{i}.unit_lif")
        for i in range(experts):
            node(f"{a}lif_list.{i}")
        lin(f"{m}fc1_linear", 4 * dim, dim), bn(f"{m}fc1_bn", 4 * dim), node(f"{m}fc1_lif")
        conv(f"{m}dw_conv", (2 * dim, 1, 3, 3)), bn(f"{m}dw_bn", 2 * dim), node(f"{m}dw_lif")
        lin(f"{m}fc2_linear", dim, 2 * dim), bn(f"{m}fc2_bn", dim), node(f"{m}fc2_lif")
    lin("head", classes, dim)
    return keys


def test_semm_4_384_has_steps_state_dict_keys_and_shapes():
    with torch.device("meta"):
        m = build_model("spikformer_semm-4-384")
    got = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    want = semm_step_keys()
    assert len(want) == 466 and got == want, sorted(set(got) ^ set(want))[:6]
    assert sum(p.numel() for p in m.parameters()) == 7_739_372


def step_semm_logits(m, img: torch.Tensor) -> torch.Tensor:
    """STEP's ``spikf_semm_cifar`` forward written as its code reads (T-major reshapes, the router's
    BN output reshaped without a transpose, ``(attn @ v) * scale``), on ``m``'s layers."""
    steps = m.step

    def node(mod, z):  # STEP's layer-by-layer node over (T, B, ...) or (T*B, ...)
        return mod(z.flatten(0, 1)).reshape(z.shape)

    def ssa(a, x):
        tb, n, c = x.shape
        k = node(a.k_lif, a.k_bn(a.k_linear(x).transpose(-1, -2)).transpose(-1, -2).reshape(steps, -1, n, a.expert_dim))
        v = node(a.v_lif, a.v_bn(a.v_linear(x).transpose(-1, -2)).transpose(-1, -2).reshape(steps, -1, n, c))
        w = node(a.router3, a.router2(a.router1(x).transpose(-1, -2)).reshape(steps, -1, n, a.num_expert))
        y = 0
        for i in range(a.num_expert):
            u = a.ff_list[i]
            q = u.unit_bn(u.unit_linear(x).transpose(-1, -2)).transpose(-1, -2).reshape(steps, tb // steps, n, -1)
            q = node(u.unit_lif, q)
            y += w[:, :, :, i].unsqueeze(-1) * node(a.lif_list[i], ((q @ k.transpose(-1, -2)) @ v) * a.scale)
        y = y.flatten(0, 1)
        return a.proj_lif(a.proj_bn(a.proj_linear(y).transpose(-1, -2)).transpose(-1, -2))

    def mlp(p, x):
        tb, n, c = x.shape
        side, hid = int(n ** 0.5), p.fc1_linear.out_features
        h = p.fc1_linear(x.reshape(steps, -1, n, c).flatten(0, 1))
        h = node(p.fc1_lif, p.fc1_bn(h.transpose(-1, -2)).transpose(-1, -2).reshape(steps, -1, n, hid))
        x1, x2 = torch.chunk(h, 2, dim=3)
        x1 = p.dw_bn(p.dw_conv(x1.reshape(tb, side, side, hid // 2).permute(0, 3, 1, 2).contiguous()))
        x1 = p.dw_lif(x1).permute(0, 2, 3, 1).reshape(steps, -1, n, hid // 2)
        z = p.fc2_linear((x1 * x2).flatten(0, 1))
        return p.fc2_lif(p.fc2_bn(z.transpose(-1, -2)).transpose(-1, -2))

    with torch.no_grad():
        x = m.patch_embed(m.encoder(img))
        for blk in m.block:
            x = x + ssa(blk.attn, x)
            x = x + mlp(blk.mlp, x)
        _, n, c = x.shape
        return m.head(x.reshape(steps, -1, n, c).mean(2).mean(0))


def firing_semm(**over):
    """The tiny SEMM with Linear weights at std 0.5 (STEP's init, std 0.02, leaves the blocks silent)."""
    m = random_model("spikformer_semm-2-64-digits", **over)
    with torch.no_grad():
        for lin in m.modules():
            if isinstance(lin, nn.Linear):
                lin.weight.mul_(25.0)
    return m


def test_semm_forward_is_steps_code():
    m = firing_semm()
    img = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 4
    _, tr = run_traced(m.block[0].attn, m.patch_embed(m.encoder(img)), ["router3", "k_lif"])
    assert tr["router3"][1].sum() > 0 and tr["k_lif"][1].sum() > 0, "the test needs routers and keys that fire"
    with torch.no_grad():
        got = m(img)
    want = step_semm_logits(m, img)
    assert torch.equal(got, want), mismatches(got, want)
    for blk in m.block:
        blk.attn.router_layout = "tokens"
    with torch.no_grad():
        assert not torch.equal(m(img), got), "STEP's router reshape matters"


def semm_step_args(**over):
    a = dict(model="spikf_semm_cifar", step=4, img_size=32, in_channels=3, num_classes=10, embed_dim=64,
             num_heads=8, mlp_ratio=4, attn_scale=0.125, depths=1, tau=2.0, threshold=1.0, node_type="LIFNode",
             dataset="torch/cifar10")
    a.update(over)
    return argparse.Namespace(**a)


def test_step_semm_checkpoint_loads_strictly_and_t_other_than_4_is_refused(tmp_path):
    src = random_model("spikformer_semm", embed_dim=64, depths=1)  # STEP: expert_dim 96, num_expert 4 (hard-coded)
    ck = {"epoch": 1, "arch": "spikf_semm_cifar", "state_dict": collections.OrderedDict(src.state_dict()),
          "args": semm_step_args(), "metric": 90.0}
    torch.save(ck, tmp_path / "semm.pth.tar")
    m, info = load_checkpoint(tmp_path / "semm.pth.tar")
    assert info.format == "step" and info.arch == "spikformer_semm"
    sd = m.state_dict()
    assert list(sd) == list(src.state_dict()) and all(torch.equal(sd[k], v) for k, v in src.state_dict().items())
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(m(img), src.eval()(img))
    ck["args"] = semm_step_args(step=8)
    torch.save(ck, tmp_path / "semm8.pth.tar")
    with pytest.raises(CheckpointError, match=r"args\.step=8.*T=4"):
        load_checkpoint(tmp_path / "semm8.pth.tar")
