"""Neuron and surrogate semantics against hand-computed sequences (DESIGN.md §2)."""
import math

import pytest
import torch

from step_deploy.models.neurons import IFNode, LIFNode, PLIFNode, iter_neurons, make_neuron
from step_deploy.models.surrogates import make_surrogate


def run(neuron, xs, record=True):
    """Feed a 1-D sequence (one sample, one feature) through ``forward_steps``."""
    neuron.record_state = record
    x = torch.tensor(xs, dtype=torch.float32).reshape(len(xs), 1, 1)
    s = neuron.forward_steps(x)
    return s.flatten().tolist(), neuron.h_seq.flatten().tolist(), neuron.v_seq.flatten().tolist()


def test_lif_hand_computed_hard_reset():
    # tau=2, thr=1: H = V + (X - V)/2 ; S = H >= 1 ; V = H * (1 - S)
    # t0: H = 0 + 1.5/2              = 0.75    S=0  V=0.75
    # t1: H = .75 + (1.0 - .75)/2    = 0.875   S=0  V=0.875
    # t2: H = .875 + (2.0 - .875)/2  = 1.4375  S=1  V=0
    # t3: H = 0 + 0.4/2              = 0.2     S=0  V=0.2
    # t4: H = .2 + (2.0 - .2)/2      = 1.1     S=1  V=0
    s, h, v = run(LIFNode(tau=2.0, threshold=1.0, step=5), [1.5, 1.0, 2.0, 0.4, 2.0])
    assert s == [0, 0, 1, 0, 1]
    assert h == pytest.approx([0.75, 0.875, 1.4375, 0.2, 1.1])
    assert v == pytest.approx([0.75, 0.875, 0.0, 0.2, 0.0])


def test_lif_soft_reset_differs_from_hard():
    # X = [3.0, 1.6], tau=2, thr=1
    # hard: t0 H=1.5 S=1 V=0 ;   t1 H = 0 + 1.6/2 = 0.8            S=0
    # soft: t0 H=1.5 S=1 V=0.5 ; t1 H = .5 + (1.6 - .5)/2 = 1.05   S=1 V=0.05
    s_h, h_h, v_h = run(LIFNode(step=2, reset="hard"), [3.0, 1.6])
    s_s, h_s, v_s = run(LIFNode(step=2, reset="soft"), [3.0, 1.6])
    assert s_h == [1, 0] and h_h == pytest.approx([1.5, 0.8]) and v_h == pytest.approx([0.0, 0.8])
    assert s_s == [1, 1] and h_s == pytest.approx([1.5, 1.05]) and v_s == pytest.approx([0.5, 0.05])


def test_lif_threshold_tie_fires_with_ge_not_with_gt():
    # H = 0 + 2.0/2 = 1.0 == V_th exactly (binary-exact values)
    assert run(LIFNode(step=1, compare=">="), [2.0])[0] == [1]
    assert run(LIFNode(step=1, compare=">"), [2.0])[0] == [0]
    # attention neuron, thr 0.5: H = 1.0/2 = 0.5
    assert run(LIFNode(step=1, threshold=0.5), [1.0])[0] == [1]
    assert run(LIFNode(step=1, threshold=0.5, compare=">"), [1.0])[0] == [0]
    # compare is switchable after construction and lives on the surrogate
    n = LIFNode(step=1)
    n.compare = ">"
    assert n.act_fun.strict and run(n, [2.0])[0] == [0]


def test_lif_nonzero_v_reset():
    # v_reset = -0.5: V0 = -0.5 ; H = V + (X - (V - v_reset))/2
    # t0: H = -0.5 + (3.0 - 0)/2 = 1.0  S=1 (tie, >=)  V = -0.5
    # t1: H = -0.5 + (0.0 - 0)/2 = -0.5 S=0            V = -0.5
    s, h, v = run(LIFNode(step=2, v_reset=-0.5), [3.0, 0.0])
    assert s == [1, 0] and h == pytest.approx([1.0, -0.5]) and v == pytest.approx([-0.5, -0.5])


def test_if_node():
    # H = V + X, thr=1. STEP's IFNode fires on '>' (its ATan forward is x > 0)
    # t0 .25 ; t1 .75 ; t2 1.25 -> S=1 V=0 ; t3 H=1.0 tie: '>' no spike, '>=' spike
    s, h, v = run(IFNode(step=4), [0.25, 0.5, 0.5, 1.0])
    assert s == [0, 0, 1, 0]
    assert h == pytest.approx([0.25, 0.75, 1.25, 1.0])
    assert v == pytest.approx([0.25, 0.75, 0.0, 1.0])
    assert run(IFNode(step=4, compare=">="), [0.25, 0.5, 0.5, 1.0])[0] == [0, 0, 1, 1]
    p = IFNode().neuron_params()
    assert p["op"] == "Neuron" and p["kind"] == "IF" and p["compare"] == ">" and p["decay_input"] is False


def test_plif_w0_equals_lif_tau2():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 7) * 2.5
    plif, lif = PLIFNode(tau=2.0, step=6), LIFNode(tau=2.0, step=6)
    assert float(plif.w.detach()) == 0.0
    assert torch.equal(plif.forward_steps(x), lif.forward_steps(x))
    assert PLIFNode(tau=3.0).effective_tau() == pytest.approx(3.0)
    assert set(plif.state_dict()) == {"threshold", "act_fun.alpha", "w"}
    # w is learnable: gradient reaches it through the surrogate
    plif(x.flatten(0, 1)).sum().backward()
    assert plif.w.grad is not None and plif.w.grad.abs() > 0


def test_state_dict_and_params_of_neuron():
    n = LIFNode(tau=2.0, threshold=0.5, step=4)
    sd = n.state_dict()
    assert set(sd) == {"threshold", "act_fun.alpha"}
    assert float(sd["threshold"]) == 0.5 and float(sd["act_fun.alpha"]) == 4.0
    assert sd["threshold"].shape == () and not n.threshold.requires_grad
    assert not n.act_fun.alpha.requires_grad
    assert n.neuron_params() == {
        "op": "Neuron", "kind": "LIF", "tau": 2.0, "v_threshold": 0.5, "v_reset": 0.0, "reset": "hard",
        "compare": ">=", "decay_input": True, "output": "binary", "max_level": 1, "fire": "threshold", "round_d": 0,
    }
    assert n.reset == "hard" and n.detach_reset
    with pytest.raises(ValueError):
        LIFNode(reset="subtract")
    with pytest.raises(ValueError):
        LIFNode(compare="<")
    with pytest.raises(ValueError):
        make_neuron("hh")


def test_tb_layout_equals_loop():
    torch.manual_seed(1)
    T, B = 4, 3
    x_tb = torch.randn(T, B, 5, 2) * 2
    n = LIFNode(step=T)
    out_flat = n(x_tb.flatten(0, 1))  # STEP layout: row t*B + b
    assert out_flat.shape == (T * B, 5, 2)
    assert torch.equal(out_flat.reshape(T, B, 5, 2), n.forward_steps(x_tb))
    # plain Python reference, one sample at a time
    for b in range(B):
        v = torch.zeros(5, 2)
        for t in range(T):
            h = v + (x_tb[t, b] - v) / 2.0
            s = (h >= 1.0).float()
            v = h * (1 - s)
            assert torch.equal(out_flat[t * B + b], s)
    with pytest.raises(ValueError):
        n(torch.zeros(6, 2))  # 6 is not a multiple of step=4


def test_sigmoid_surrogate_gradient_matches_formula():
    sg = make_surrogate("sigmoid", 4.0)
    x = torch.linspace(-1, 1, 21, requires_grad=True)
    s = sg(x)
    assert torch.equal(s, (x >= 0).float())
    s.sum().backward()
    sig = torch.sigmoid(4.0 * x.detach())
    assert torch.allclose(x.grad, 4.0 * sig * (1 - sig))
    assert x.grad[10] == pytest.approx(1.0)  # alpha/4 at x=0


def test_other_surrogates():
    x = torch.tensor([-0.5, -0.1, 0.0, 0.1, 0.5], requires_grad=True)
    make_surrogate("atan", 2.0)(x).sum().backward()
    expected = 1.0 / (1 + (math.pi * x.detach()) ** 2)  # (alpha/2) / (1 + (pi/2 alpha x)^2)
    assert torch.allclose(x.grad, expected)
    x.grad = None
    out = make_surrogate("rectangle", 2.0, strict=True)(x)
    assert out.tolist() == [0, 0, 0, 1, 1]  # strict: x > 0
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]  # |x| < 1/(2 alpha) = 0.25
    with pytest.raises(ValueError):
        make_surrogate("nope")


def test_lif_surrogate_gradient_through_neuron():
    # one step: H = X/2, dS/dX = sg'(H - thr) / tau
    n = LIFNode(step=1)
    x = torch.tensor([0.6, 2.0, 3.0], requires_grad=True)
    n(x.reshape(1, 3)).sum().backward()
    u = x.detach() / 2 - 1.0
    sig = torch.sigmoid(4 * u)
    assert torch.allclose(x.grad, 4 * sig * (1 - sig) / 2)
    assert (x.grad > 0).all()


def test_detach_reset_controls_gradient_through_reset():
    x0 = torch.tensor([[3.0], [1.8]])
    grads = {}
    for detach in (True, False):
        x = x0.clone().requires_grad_(True)
        n = LIFNode(step=2, detach_reset=detach)
        s = n(x)
        s[1].sum().backward()  # spike at t=1 depends on x[0] via V (and via the reset)
        grads[detach] = x.grad[0].item()
    assert grads[True] != grads[False]


def test_iter_neurons_and_factory():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), make_neuron("lif"), make_neuron("plif", tau=3.0))
    names = [n for n, _ in iter_neurons(net)]
    assert names == ["1", "2"]
    assert isinstance(make_neuron("if", compare=None), IFNode)  # None keeps class default '>'
    assert make_neuron("if", compare=None).compare == ">"
