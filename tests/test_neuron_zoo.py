"""STEP's neuron zoo (issue 12): float semantics against STEP's equations, STEP's state_dict keys,
gradients, selection by name, ``neuron_params()`` and STEP checkpoints with every ``node_type``.

The reference implementations below are written from STEP's code (cls/models/utils/node.py,
surrogate.py at github.com/Fancyssc/STEP) as plain per-step loops in STEP's operation order,
with STEP's initial states (Python floats), and never call the modules' own helpers. Inputs
include exact ties (H == threshold; ILIF H/θ = k + 0.5; NILIF H/θ = D/2) and saturation (H/θ > D);
each comparison is element-wise (``torch.equal``) with the mismatch count in the message.
"""
import argparse
import collections
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_batchnorm
from step_deploy import ir, load_checkpoint
from step_deploy.models import build_family, iter_neurons, make_neuron
from step_deploy.models.neuron_zoo import (ComplementaryLIFNeuron, EIFNode, GLIFTorch, HDLIFNode, ILIFNode,
                                           KLIFNode, NILIFNode, PSNTorch)
from step_deploy.models.neurons import IFNode, LIFNode, PLIFNode, neuron_class

T = 4


def grid(*shape, seed=0, lo=-2.0, hi=4.0, step=0.125):
    """Random values on a dyadic grid (sums in any order are exact)."""
    g = torch.Generator().manual_seed(seed)
    n = int(round((hi - lo) / step))
    return lo + torch.randint(0, n + 1, shape, generator=g).float() * step


def assert_same(got, want, what):
    bad = int((got != want).sum())
    assert got.shape == want.shape and bad == 0, f"{what}: {bad} of {want.numel()} values differ"


def run_tb(neuron, x):
    """Run on a (T, N) input through STEP's (T*B, N) layout (B = 1 row block)."""
    with torch.no_grad():
        return neuron(x.reshape(T, 1, -1).flatten(0, 1)).reshape(x.shape)


# ------------------------------------------------------------------ references from STEP's equations


def ref_ilif(x, thr, tau, D, normalized=False):
    mem, out = 0.0, []
    for t in range(x.shape[0]):
        mem = mem + (x[t] - mem) / tau
        u = mem / thr
        uc = torch.clamp(u, min=0, max=D)
        if normalized:
            uc = uc / D
        s = torch.round(uc)
        out.append(s)
        mem = mem - s * thr
    return torch.stack(out)


def ref_klif(x, thr, tau, k):
    mem, out = 0.0, []
    for t in range(x.shape[0]):
        mem = mem + (x[t] - mem) / tau
        mem = mem * k
        mem = torch.relu(mem)
        s = (mem - thr >= 0).float()
        out.append(s)
        mem = mem * (1 - s)
    return torch.stack(out)


def ref_eif(x, thr, tau, delta_T, theta_rh, v_reset=-0.1):
    mem, out = v_reset, []  # STEP's n_reset leaves mem = v_reset (a Python float)
    for t in range(x.shape[0]):
        mem = mem + (x[t] - mem + delta_T * torch.exp((mem - theta_rh) / delta_T)) / tau
        s = (mem - thr >= 0).float()
        out.append(s)
        mem = mem * (1 - s) + s * v_reset
    return torch.stack(out)


def ref_clif(x, tau):
    v, m, out = 0.0, 0, []
    for t in range(x.shape[0]):
        v = x[t] if type(v) is float else v * (1 - 1. / tau) + x[t]
        m = m * torch.sigmoid(v / tau)
        s = (v - 1.0 >= 0).float()
        m = m + s
        v = v - s * 1.0
        v = v - s * torch.sigmoid(m)
        out.append(s)
    return torch.stack(out)


def ref_glif(x, p, static_gate=True):
    """p: the module's raw parameters (logits) as a dict of tensors."""
    if static_gate:
        al, be, ga = [(p[k] > 0).float() for k in ("alpha", "beta", "gamma")]
    else:
        al, be, ga = [torch.sigmoid(p[k]) for k in ("alpha", "beta", "gamma")]
    u = torch.zeros(x.shape[1:])
    o = torch.zeros(x.shape[1:])
    out = []
    for t in range(x.shape[0]):
        tau, vth, leak = torch.sigmoid(p["tau"][t]), torch.sigmoid(p["Vth"][t]), torch.sigmoid(p["leak"][t])
        conduct, revth = torch.sigmoid(p["conduct"][t]), torch.sigmoid(p["reVth"][t])
        i_t = x[t] * (1 - be * (1 - conduct))
        u = ((1 - al * (1 - tau)) * u * (1 - ga * o) - (1 - al) * leak) + i_t - (1 - ga) * revth * o
        o = (u - vth > 0).float()
        out.append(o)
    return torch.stack(out)


def ref_psn(x, w, b):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        h = torch.full_like(x[0], float(b[t]))
        for tau in range(x.shape[0]):
            h = h + float(w[t, tau]) * x[tau]
        out[t] = (h >= 0).float()
    return out


# ------------------------------------------------------------------ forward semantics


def test_ilif_rounds_half_to_even_saturates_and_matches_step():
    # tau=2, θ=1: H0 = x0/2. x0=1 -> H/θ=0.5 -> 0; x0=3 -> 1.5 -> 2; x0=5 -> 2.5 -> clamp 2; x0=9 -> 4.5 -> 2
    ties = torch.tensor([1.0, 3.0, 5.0, 9.0, -3.0, 2.0])
    x = torch.cat([torch.stack([ties, ties * 0, ties * 0, ties * 0]), grid(T, 200)], dim=1)
    got = run_tb(ILIFNode(step=T), x)
    assert got[0, :6].tolist() == [0.0, 2.0, 2.0, 2.0, 0.0, 1.0]
    # saturation keeps the rest in the membrane: x0=9: V0 = 4.5 - 2 = 2.5, H1 = 1.25 -> 1
    assert got[1, 3].item() == 1.0
    assert_same(got, ref_ilif(x, 1.0, 2.0, 2), "ILIF vs STEP")
    # other threshold, D and tau (D via levels)
    x2 = grid(T, 300, seed=1, hi=6.0)
    n = make_neuron("ilif", threshold=0.5, tau=3.0, step=T, levels=3)
    assert n.D == 3
    assert_same(run_tb(n, x2), ref_ilif(x2, 0.5, 3.0, 3), "ILIF D=3 vs STEP")
    assert int(run_tb(n, x2).max()) == 3


def test_nilif_tie_at_half_range_gives_zero():
    # θ=1, D=2: x0=2 -> H/θ=1 = D/2 -> 0.5 -> round half to even -> 0; x0=2.5 -> 0.625 -> 1; x0=6 -> 3 -> clamp 2 -> 1
    ties = torch.tensor([2.0, 2.5, 6.0, 1.0])
    x = torch.cat([torch.stack([ties, ties * 0, ties * 0, ties * 0]), grid(T, 200, seed=2)], dim=1)
    got = run_tb(NILIFNode(step=T), x)
    assert got[0, :4].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert_same(got, ref_ilif(x, 1.0, 2.0, 2, normalized=True), "NILIF vs STEP")
    assert set(got.unique().tolist()) <= {0.0, 1.0}


def test_klif_gain_rectifier_and_tie():
    n = KLIFNode(step=T)
    with torch.no_grad():
        n.k.fill_(0.5)
    # H0 = relu(0.5 * x0/2): x0 = 4 -> H = 1 = θ -> fires (>=); x0 = -4 -> 0
    x = torch.cat([torch.tensor([[4.0, -4.0], [0, 0], [0, 0], [0, 0]]), grid(T, 200, seed=3, hi=8.0)], dim=1)
    got = run_tb(n, x)
    assert got[0, :2].tolist() == [1.0, 0.0]
    assert_same(got, ref_klif(x, 1.0, 2.0, n.k.detach()), "KLIF vs STEP")


def test_eif_matches_step_from_its_reset_state():
    n = EIFNode(step=T)
    x = grid(T, 300, seed=4, lo=-1.0, hi=3.0)
    got = run_tb(n, x)
    want = ref_eif(x, n.threshold.detach(), n.tau, n.delta_T, n.theta_rh)
    assert_same(got, want, "EIF vs STEP")
    assert 0 < int(got.sum()) < got.numel()


def test_clif_ignores_the_model_threshold_and_matches_step():
    n = make_neuron("ComplementaryLIFNeuron", threshold=0.5, tau=2.0, step=T)
    assert isinstance(n, ComplementaryLIFNeuron) and n.v_threshold == 1.0
    # x0 = 1 -> V = 1 = v_threshold -> fires (>=); x0 = 0.75 would fire at 0.5 but does not
    x = torch.cat([torch.tensor([[1.0, 0.75], [0, 0], [0, 0], [0, 0]]), grid(T, 200, seed=5)], dim=1)
    got = run_tb(n, x)
    assert got[0, :2].tolist() == [1.0, 0.0]
    assert_same(got, ref_clif(x, 2.0), "CLIF vs STEP")
    assert_same(run_tb(make_neuron("clif", tau=3.0, step=T), x), ref_clif(x, 3.0), "CLIF tau=3 vs STEP")


@pytest.mark.parametrize("static_gate", [True, False])
def test_glif_matches_step_with_learned_parameters(static_gate):
    n = GLIFTorch(step=T, static_gate=static_gate)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, p in n.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    x = grid(T, 300, seed=7, lo=-1.0, hi=2.0)
    p = {k: v.detach() for k, v in n.state_dict().items()}
    got = run_tb(n, x)
    assert_same(got, ref_glif(x, p, static_gate), "GLIF vs STEP")
    assert 0 < int(got.sum()) < got.numel()


def test_glif_fires_strictly_above_its_threshold():
    n = GLIFTorch(step=T)  # STEP's init: static gates al = be = ga = 0, so U0 = -leak0 + X0
    leak, vth = torch.sigmoid(n.leak[0].detach()), torch.sigmoid(n.Vth[0].detach())
    tie = vth + leak
    assert float((-leak + tie) - vth) == 0.0, "the test needs an exact tie"
    x = torch.stack([torch.stack([tie, tie + 0.125])] + [torch.zeros(2)] * (T - 1))
    got = run_tb(n, x)
    assert got[0].tolist() == [0.0, 1.0]  # SpikeAct_extended: u - Vth > 0


def test_psn_mixes_the_whole_sequence_and_fires_at_zero():
    n = PSNTorch(step=T)
    with torch.no_grad():
        n.fc.weight.copy_(grid(T, T, seed=8, lo=-1.0, hi=1.0))
        n.fc.bias.copy_(torch.tensor([-1.0, 0.0, 0.5, -0.25]))
    x = grid(T, 300, seed=9)
    x[:, 0] = 0.0  # H[t] = b[t]: step 1 is an exact tie at 0 -> fires (>=)
    got = run_tb(n, x)
    assert got[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert_same(got, ref_psn(x, n.fc.weight.detach(), n.fc.bias.detach()), "PSN vs STEP")
    # non-causal: changing the last step's input changes step 0's spikes
    x2 = x.clone()
    x2[T - 1] += 8.0
    assert not torch.equal(run_tb(n, x2)[0], got[0])


def _ref_hdlif(x_tb, n, training):
    """STEP's HDLIFNode.forward for a (T*B, C, N) input, experts written out from node.py."""
    thr, tau = n.threshold, n.tau
    rows = x_tb.shape[0]
    B = rows // T
    # gate: STEP's x.view(-1, step, C, N): gate row b' concatenates input rows b'*T .. b'*T + T-1
    z = torch.stack([torch.cat([x_tb[bp * T + tp] for tp in range(T)], dim=0) for bp in range(B)])
    logits = F.conv1d(z, n.gate_MoE.weight, n.gate_MoE.bias)
    if training:
        gate = F.softmax(logits, dim=-2)
    else:
        values, top = torch.topk(logits, 2, dim=-2)
        gate = torch.zeros_like(logits).scatter(-2, top, values)
        gate = F.softmax(torch.where(gate == 0, torch.tensor(float("-inf")), gate), dim=-2)  # STEP: 0 -> -inf
    w = torch.sigmoid(n.experts[2].w)
    eif = n.experts[3]  # buffers delta_T = 1, theta_rh = 0.8, tau (STEP's EIFNode)
    x = x_tb.reshape(T, B, *x_tb.shape[1:])
    mems = [[] for _ in range(4)]
    m = [0.0, 0.0, 0.0, -0.1]
    for t in range(T):
        m[0] = m[0] + x[t] * 1.0  # IFNode (Sigmoid_Grad alpha 2: fires on >=)
        m[1] = m[1] + (x[t] - m[1]) / tau
        m[2] = m[2] + ((x[t] - m[2]) * w) * 1.0
        m[3] = m[3] + (x[t] - m[3] + eif.delta_T * torch.exp((m[3] - eif.theta_rh) / eif.delta_T)) / eif.tau
        for e in range(4):
            s = (m[e] - thr >= 0).float()
            m[e] = m[e] * (1 - s) + (s * -0.1 if e == 3 else 0.0)
            mems[e].append(torch.where(m[e] == 0.0, torch.tensor(thr), m[e]))
    out = []
    for t in range(T):
        acc = sum(gate.unsqueeze(2)[:, e] * mems[e][t] for e in range(4)) if not training else \
            torch.sum(torch.stack([gate[:, e].unsqueeze(1) * mems[e][t] for e in range(4)], dim=1), dim=1)
        out.append((acc >= 0.2).float())
    return torch.stack(out).flatten(0, 1)


@pytest.mark.parametrize("training", [False, True])
def test_hdlif_matches_step_including_its_batch_mixing_gate(training):
    C, N, B = 3, 5, 2
    n = HDLIFNode(input_dims=C, threshold=0.5, step=T, tau=2.0)
    with torch.no_grad():
        n.gate_MoE.weight.copy_(grid(*n.gate_MoE.weight.shape, seed=10, lo=-0.5, hi=0.5))
        n.gate_MoE.bias.copy_(grid(4, seed=11, lo=-0.5, hi=0.5))
        n.experts[2].w.fill_(0.25)
    x = grid(T * B, C, N, seed=12, lo=-1.0, hi=2.0)
    x[0, 0, 0] = 0.5  # IF expert: H == threshold at t=0 -> fires -> membrane 0 -> replaced by the threshold
    n.train(training)
    with torch.no_grad():
        got = n(x)
        want = _ref_hdlif(x, n, training)
        # token layout (T*B, N, C) is transposed in and out, as STEP does
        got_tokens = n(x.transpose(1, 2))
    assert_same(got, want, f"HDLIF ({'train' if training else 'eval'}) vs STEP")
    assert_same(got_tokens, want.transpose(1, 2), "HDLIF token layout")
    assert 0 < int(got.sum()) < got.numel()


def test_hdlif_needs_input_dims_and_refuses_lowering():
    with pytest.raises(ValueError, match="HDLIFNode needs input_dims.*only in Spikformer"):
        make_neuron("hdlif", step=T)
    with pytest.raises(ValueError, match=r"HDLIFNode\(input_dims=3\).*got shape \(8, 4, 5\)"):
        HDLIFNode(input_dims=3, step=T)(torch.zeros(8, 4, 5))
    with pytest.raises(NotImplementedError, match="whole-sequence.*PyTorch only"):
        HDLIFNode(input_dims=3, step=T).neuron_params()


# ------------------------------------------------------------------ state_dict keys (STEP's, from node.py)

STEP_KEYS = {
    "LIFNode": {"threshold", "act_fun.alpha"},
    "IFNode": {"threshold", "act_fun.alpha"},
    "PLIFNode": {"threshold", "act_fun.alpha", "w"},
    "ILIFNode": {"threshold", "act_fun.alpha"},
    "NILIFNode": {"threshold", "act_fun.alpha"},
    "KLIFNode": {"threshold", "act_fun.alpha", "k"},
    "EIFNode": {"threshold", "act_fun.alpha", "delta_T", "theta_rh", "tau"},
    "ComplementaryLIFNeuron": set(),
    "GLIFTorch": {"alpha", "beta", "gamma", "tau", "Vth", "leak", "conduct", "reVth"},
    "PSNTorch": {"fc.weight", "fc.bias", "act_func.alpha"},
    "HDLIFNode": {"act_fun.alpha", "gate_MoE.weight", "gate_MoE.bias",
                  "experts.0.threshold", "experts.0.act_fun.alpha",
                  "experts.1.threshold", "experts.1.act_fun.alpha",
                  "experts.2.threshold", "experts.2.act_fun.alpha", "experts.2.w",
                  "experts.3.threshold", "experts.3.act_fun.alpha", "experts.3.delta_T", "experts.3.theta_rh",
                  "experts.3.tau"},
}


@pytest.mark.parametrize("name", sorted(STEP_KEYS))
def test_state_dict_keys_are_steps(name):
    n = make_neuron(name, step=T, threshold=1.0, tau=2.0, input_dims=8)
    assert type(n).__name__ == name
    assert set(n.state_dict()) == STEP_KEYS[name]


def test_state_dict_values_are_steps_initialisation():
    sd = HDLIFNode(input_dims=8, step=T).state_dict()
    assert float(sd["experts.0.act_fun.alpha"]) == 2.0 and float(sd["experts.1.act_fun.alpha"]) == 4.0
    assert tuple(sd["gate_MoE.weight"].shape) == (4, 8 * T, 1) and float(sd["experts.3.tau"]) == 2.0
    sd = PSNTorch(step=T).state_dict()
    assert tuple(sd["fc.weight"].shape) == (T, T) and torch.equal(sd["fc.bias"], -torch.ones(T))
    assert float(sd["act_func.alpha"]) == 2.0
    sd = GLIFTorch(step=T).state_dict()
    assert all(tuple(sd[k].shape) == (T,) for k in ("tau", "Vth", "leak", "conduct", "reVth"))
    assert float(sd["alpha"]) == pytest.approx(math.log(1 / 0.55 - 1))
    assert torch.sigmoid(sd["leak"][0]).item() == pytest.approx(0.5 / (2 * T))  # STEP: Vth / (2T)
    sd = EIFNode().state_dict()
    assert (float(sd["delta_T"]), float(sd["theta_rh"]), float(sd["tau"])) == (1.0, pytest.approx(0.8), 2.0)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["ilif", "psn", "glif", "clif", "hdlif"])
def test_gradients_flow(name):
    n = make_neuron(name, step=T, input_dims=3).train()
    x = (grid(T * 2, 3, 5, seed=13, lo=-1.0, hi=2.0) + 0.01).requires_grad_(True)
    n(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in n.named_parameters():
        if p.requires_grad and pname in ("fc.weight", "Vth", "leak", "gate_MoE.weight"):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


# ------------------------------------------------------------------ selection and neuron_params()

SHORT = {"lif": LIFNode, "if": IFNode, "plif": PLIFNode, "ilif": ILIFNode, "nilif": NILIFNode, "eif": EIFNode,
         "klif": KLIFNode, "hdlif": HDLIFNode, "clif": ComplementaryLIFNeuron, "glif": GLIFTorch, "psn": PSNTorch}


def test_names_select_classes_and_bad_options_are_named():
    for short, cls in SHORT.items():
        assert neuron_class(short) is cls and neuron_class(cls.__name__) is cls
    with pytest.raises(ValueError, match=r"unknown neuron 'hh'.*known: .*psn.*STEP's class names"):
        make_neuron("hh")
    with pytest.raises(ValueError, match=r"neuron 'psn' \(PSNTorch\) has no option reset='soft'"):
        make_neuron("psn", reset="soft")
    assert make_neuron("plif", reset="soft").reset == "soft"
    assert make_neuron("nilif", D=4).D == 4 and ILIFNode().D == 2


@pytest.mark.parametrize("name", sorted(set(SHORT) - {"hdlif"}))
def test_neuron_params_build_the_ir_node(name):
    n = make_neuron(name, step=T, threshold=0.5)
    p = n.neuron_params()
    op = p.pop("op")
    if op == "PSN":
        assert set(p) == {"weight", "bias"} and p["weight"].dtype == np.float32 and p["weight"].shape == (T, T)
        return
    node = getattr(ir, op)(name="n", inputs=("x",), **p)
    expect = {"ilif": ("integer", "round", 2, "soft"), "nilif": ("binary", "round_normalized", 2, "soft")}
    if name in expect:
        assert (node.output, node.fire, node.round_d, node.reset) == expect[name]
        assert node.max_level == (2 if name == "ilif" else 1)
    if name == "clif":
        assert node.v_threshold == 1.0
    elif name == "glif":
        assert node.params_t.shape == (T, 5) and node.gates == (0.0, 0.0, 0.0) and node.compare == ">"
    else:
        assert node.v_threshold == 0.5


# ------------------------------------------------------------------ STEP checkpoints with every node_type

TINY = dict(img_size=8, in_channels=1, num_classes=5, embed_dim=16, num_heads=2, mlp_ratio=2, depths=1)


def _step_args(model, node_type, **over):
    a = dict(model=model, step=T, patch_size=4, tau=2.0, threshold=1.0, node_type=node_type,
             act_function="SigmoidGrad", alpha=4.0, dataset="torch/cifar10", embed_layer="SPS",
             attn_layer="SSA" if model != "sdt_cifar" else "SDSA", seed=42, attn_scale=0.125, **TINY)
    a.update(over)
    return argparse.Namespace(**a)


def _perturb_neurons(model, seed):
    """Move every learned neuron parameter off its initial value, so loading them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in iter_neurons(model):
            for pname, p in mod.named_parameters():
                if pname.endswith(("threshold", "alpha")) and pname != "alpha":
                    continue
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("family, node_type", [("spikformer", n) for n in sorted(STEP_KEYS)] +
                         [("sdt", "ILIFNode"), ("qkformer", "PSNTorch"), ("qkformer", "KLIFNode")])
def test_step_checkpoint_round_trip(tmp_path, family, node_type):
    cfg = dict(TINY, depths=3 if family == "qkformer" else 1)
    if family == "qkformer":
        cfg.update(num_heads=8, embed_dim=32)
    torch.manual_seed(0)
    direct = randomize_batchnorm(build_family(family, node=node_type, **cfg).eval(), 0)
    _perturb_neurons(direct, 1)
    args = _step_args(f"{family}_cifar", node_type, **cfg)
    ck = {"epoch": 9, "arch": args.model, "state_dict": collections.OrderedDict(direct.state_dict()),
          "args": args, "version": 2}
    torch.save(ck, tmp_path / "m.pth.tar")
    loaded, info = load_checkpoint(tmp_path / "m.pth.tar")  # strict=True inside
    assert info.metadata["step_arch"] == f"{family}_cifar"
    assert {type(m).__name__ for _, m in iter_neurons(loaded)} == {node_type}
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2.0
    with torch.no_grad():
        want, got = direct.eval()(x), loaded.eval()(x)
    assert torch.equal(got, want), f"{node_type}: logits differ by {float((got - want).abs().max())}"
    # the checkpoint's neuron values were used (not the constructor's)
    for key, val in direct.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], val), key


def test_named_configs_take_any_node_and_levels():
    from step_deploy.models import build_model

    m = build_model("sdt-1-64-digits", node="ilif", levels=3)
    neurons = [n for _, n in iter_neurons(m)]
    assert neurons and all(isinstance(n, ILIFNode) and n.D == 3 for n in neurons)
    again = build_family(m.arch, **m.config)  # the config rebuilds the same neurons
    assert [type(n) for _, n in iter_neurons(again)] == [type(n) for n in neurons]
    with pytest.raises(ValueError, match="has no option compare='>'"):
        build_model("sdt-1-64-digits", node="ilif", compare=">")
