"""The fast paths of the energy counters (issue 9's overhead target) keep every count exact:
hooked traces are views unless the model changes one in place, the per-graph plan is rebuilt when
a node changes, non-zeros are summed in narrow accumulators without overflowing, 1x1 and strided
convolutions take the right fan-out path, and hooking leaves the model's modes as they were."""
import numpy as np
import pytest
import torch
from torch import nn

from step_deploy import ir
from step_deploy.energy.counters import _count_true, count_graph, graph_plan
from step_deploy.energy.torch_hooks import hook_traces
from step_deploy.models.neurons import LIFNode


class TinySNN(nn.Module):
    """Linear 4 -> 3 then LIF over T=2 steps; ``spoil`` zeroes the spikes in place after the LIF
    returned them (what a careless model could do), after the hook saw them."""

    step = 2

    def __init__(self, spoil: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0.1, 0]]))
            self.fc.bias.zero_()
        self.lif = LIFNode(step=2)
        self.spoil = spoil

    def forward(self, x):
        s = self.lif(self.fc(x.repeat(self.step, 1)))
        out = s.unflatten(0, (self.step, -1)).sum(0)
        if self.spoil:
            s.zero_()
        return out


def tiny_graph():
    return ir.Graph([ir.Input("input", (), shape=(4,), kind="analog"),
                     ir.Linear("fc", ("input",), weight=np.zeros((3, 4), np.float32), bias=None),
                     ir.Neuron("lif", ("fc",), tau=2.0, v_threshold=1.0),
                     ir.Output("out", ("lif",))])


X = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
#: LIF (tau 2, V_th 1, hard reset) on inputs 2, 2, 0.1 / 2, 0, 0: H = 1 where the input is 2, at
#: both steps (reset to 0 in between); 0.1 never reaches the threshold
SPIKES = torch.tensor([[[1.0, 1, 0], [1, 0, 0]], [[1, 1, 0], [1, 0, 0]]])


@pytest.mark.parametrize("inference", [False, True])
def test_a_hooked_tensor_changed_in_place_later_keeps_the_values_the_hook_saw(inference):
    graph = tiny_graph()
    ctx = torch.inference_mode() if inference else torch.no_grad()
    with ctx:
        plain = hook_traces(TinySNN(spoil=False), X, graph)
        spoiled = hook_traces(TinySNN(spoil=True), X, graph)
    assert torch.equal(plain["lif"], SPIKES)
    assert torch.equal(spoiled["lif"], SPIKES)  # a view would read all zeros here
    c = count_graph(graph, spoiled, 2)
    assert c.row("lif").per_step("spikes").tolist() == [3, 3]
    assert c.row("fc").per_step("nonzero_inputs").tolist() == [4, 4]


def test_hooking_runs_in_eval_mode_and_restores_every_module_flag():
    model = TinySNN()
    model.train()
    model.lif.eval()  # a mixed state must come back as it was
    seen = []
    h = model.fc.register_forward_hook(lambda mod, inp, out: seen.append((model.training, mod.training)))
    hook_traces(model, X, tiny_graph())
    h.remove()
    assert seen == [(False, False)]
    assert (model.training, model.fc.training, model.lif.training) == (True, True, False)


def conv_graph(**conv):
    cin, cout = 3, 4
    return ir.Graph([ir.Input("x", (), shape=(cin, 5, 6), kind="spikes"),
                     ir.Conv2d("conv", ("x",), weight=np.ones((cout, cin, *conv.pop("k", (1, 1))), np.float32),
                               bias=None, **conv),
                     ir.Output("out", ("conv",))])


@pytest.mark.parametrize("conv", [dict(), dict(stride=(2, 2)), dict(k=(1, 3), padding=(0, 1)),
                                  dict(k=(3, 3), padding=(1, 1), dilation=(2, 2))])
def test_one_by_one_strided_and_padded_convolutions_count_like_a_unit_weight_convolution(conv):
    g = conv_graph(**dict(conv))
    x = (torch.rand(2, 3, 3, 5, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    plan = graph_plan(g, 2)
    fan, same = plan.fans["conv"]
    assert (same is not None) == (conv == {})  # only the stride-1 1x1 convolution reaches one output everywhere
    c = count_graph(g, {"x": x}, 2)
    w = torch.ones(g["conv"].weight.shape)
    kw = {k: v for k, v in conv.items() if k != "k"}
    ref = torch.nn.functional.conv2d(x.flatten(0, 1), w, None, **kw).reshape(2, 3, -1).sum(-1)
    assert np.array_equal(c.row("conv").counters["synops"], ref.T.to(torch.int64).numpy())
    assert np.array_equal(c.row("conv").counters["nonzero_inputs"], x.flatten(2).sum(2).T.to(torch.int64).numpy())


def test_the_plan_is_reused_and_rebuilt_when_a_node_is_replaced():
    g = conv_graph()
    p = graph_plan(g, 2)
    assert graph_plan(g, 2) is p and graph_plan(g, 3) is not p
    x = torch.ones(1, 1, 3, 5, 6)
    before = count_graph(g, {"x": x}, 1).row("conv").total("synops")
    g.replace(ir.Conv2d("conv", ("x",), weight=np.ones((4, 3, 1, 1), np.float32), bias=None, stride=(2, 2)))
    assert graph_plan(g, 2) is not p
    after = count_graph(g, {"x": x}, 1).row("conv").total("synops")
    assert (before, after) == (3 * 5 * 6 * 4, 3 * 3 * 3 * 4)


@pytest.mark.parametrize("n", [7, 32767, 40000, 40009])  # int16; int16 at its limit; int16 chunks; int32
def test_non_zero_counts_are_exact_in_every_accumulator(n):
    g = torch.Generator().manual_seed(n)
    mask = torch.rand(2, 3, n, generator=g) < 0.5
    mask[0, 0] = True  # the largest count an accumulator must hold
    got = _count_true(mask, (2,))
    assert got.dtype == torch.int64
    assert torch.equal(got, mask.sum(2, dtype=torch.int64))
    assert int(got[0, 0]) == n
    wide = mask.reshape(2, 3, 1, n)
    assert torch.equal(_count_true(wide, (2, 3)), mask.sum(2, dtype=torch.int64))
