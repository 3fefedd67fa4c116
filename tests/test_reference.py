"""Reference interpreter semantics against hand-computed values."""
import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.simulators.reference import run
from step_deploy.simulators.reference_ops import FLOAT_OPS, neuron_charge, neuron_state, op_neuron


def _chain(*nodes, shape=(3,)):
    g = ir.Graph([ir.Input("x", shape=shape)])
    prev = "x"
    for n in nodes:
        g.add(ir.replace(n, inputs=(prev,) + tuple(n.inputs)))
        prev = n.name
    g.add(ir.Output("y", (prev,)))
    return g


def test_lif_sequence_by_hand():
    g = _chain(ir.Neuron("lif", (), tau=2.0, v_threshold=1.0), shape=(1,))
    x = torch.tensor([1.0, 1.0, 1.0, 2.0, 0.5]).reshape(5, 1, 1)
    membranes = []

    def neuron(n, xs, state, t):
        membranes.append(float(neuron_charge(n, xs[0], neuron_state(n, xs[0], state))))
        return op_neuron(n, xs, state, t)

    r = run(g, x, record=True, ops=dict(FLOAT_OPS, Neuron=neuron))
    assert membranes == [0.5, 0.75, 0.875, 1.4375, 0.25]  # fires at 1.4375, V resets to 0
    assert r.traces["lif"].flatten().tolist() == [0, 0, 0, 1, 0]
    assert r.final().flatten().tolist() == [0]


def test_threshold_tie_and_compare():
    x = torch.full((1, 1, 1), 2.0)  # H = 1.0 == threshold
    assert run(_chain(ir.Neuron("n", ()), shape=(1,)), x, record=True).traces["n"].item() == 1
    assert run(_chain(ir.Neuron("n", (), compare=">"), shape=(1,)), x, record=True).traces["n"].item() == 0


def test_soft_reset_if_and_ternary_and_integer():
    x = torch.tensor([2.5, 0.0, 0.0]).reshape(3, 1, 1)
    r = run(_chain(ir.Neuron("n", (), kind="IF", reset="soft"), shape=(1,)), x, record=True)
    assert r.traces["n"].flatten().tolist() == [1, 1, 0]  # 2.5 -> 1.5 -> 0.5
    x = torch.tensor([-3.0]).reshape(1, 1, 1)
    r = run(_chain(ir.Neuron("n", (), kind="IF", output="ternary"), shape=(1,)), x, record=True)
    assert r.traces["n"].item() == -1
    x = torch.tensor([2.6, 0.0]).reshape(2, 1, 1)
    r = run(_chain(ir.Neuron("n", (), kind="IF", reset="soft", output="integer", max_level=2), shape=(1,)), x,
            record=True)
    assert r.traces["n"].flatten().tolist() == [2, 1]  # round(2.6)=3 -> clamp 2, V=0.6 -> round(0.6)=1


def test_delay_and_temporal_mean():
    x = torch.arange(1.0, 6.0).reshape(5, 1, 1)
    r = run(_chain(ir.Delay("d", (), steps=2), ir.TemporalMean("m", ()), shape=(1,)), x, record=["d", "m"])
    assert r.traces["d"].flatten().tolist() == [0, 0, 1, 2, 3]
    assert np.allclose(r.traces["m"].flatten().numpy(), [0, 0, 1 / 3, 3 / 4, 6 / 5])


def test_mul_broadcasts_per_step_shapes():
    g = ir.Graph([ir.Input("a", shape=(2, 3)), ir.Input("b", shape=(3,)), ir.Mul("m", ("a", "b")),
                  ir.Output("y", ("m",))])
    a, b = torch.rand(1, 4, 2, 3), torch.rand(1, 4, 3)
    r = run(g, {"a": a, "b": b})
    assert torch.allclose(r.final(), a[0] * b[0].unsqueeze(1))


def test_matmul_scale_and_transposes():
    g = ir.Graph([ir.Input("a", shape=(2, 3, 4)), ir.Input("b", shape=(2, 3, 4)),
                  ir.MatMul("m", ("a", "b"), transpose_b=True, scale=0.125), ir.Output("y", ("m",))])
    a, b = (torch.rand(1, 2, 2, 3, 4) > 0.5).float(), (torch.rand(1, 2, 2, 3, 4) > 0.5).float()
    r = run(g, {"a": a, "b": b})
    assert torch.equal(r.final(), (a[0] @ b[0].transpose(-1, -2)) * 0.125)


def test_float64_mode_computes_in_float64():
    # 0.1f + 0.2f = 0.30000000447 exactly; float32 rounds the sum up to 0.30000001192 >= θ
    g = ir.Graph([ir.Input("a", shape=(1,)), ir.Input("b", shape=(1,)), ir.Add("s", ("a", "b")),
                  ir.Neuron("n", ("s",), kind="IF", v_threshold=0.3000000075), ir.Output("y", ("n",))])
    feeds = {"a": torch.tensor([[[0.1]]]), "b": torch.tensor([[[0.2]]])}
    r32 = run(g, feeds, record=True)
    r64 = run(g, feeds, record=True, dtype=torch.float64)
    assert r32.traces["n"].dtype == torch.float32 and r32.traces["n"].item() == 1
    assert r64.traces["n"].dtype == torch.float64 and r64.traces["n"].item() == 0


def test_float64_mode_casts_weights_to_the_activation_dtype():
    w = np.array([[1.0 + 2.0 ** -20, 1.0]], np.float32)  # float32-exact weights; the sum needs float64
    g = ir.Graph([ir.Input("x", shape=(2,)), ir.Linear("l", ("x",), weight=w, bias=None), ir.Output("y", ("l",))])
    x = torch.tensor([[[1.0, 2.0 ** -30]]])
    y64 = run(g, x, dtype=torch.float64).final()
    assert y64.dtype == torch.float64 and y64.item() == 1.0 + 2.0 ** -20 + 2.0 ** -30
    assert run(g, x).final().item() == np.float32(1.0 + 2.0 ** -20)  # float32 loses 2^-30


def test_bad_dtype_and_missing_input_are_clear_errors():
    g = _chain(ir.Neuron("n", ()), shape=(1,))
    with pytest.raises(ValueError, match="dtype"):
        run(g, torch.zeros(1, 1, 1), dtype=torch.int32)
    two = ir.Graph([ir.Input("a", shape=(1,)), ir.Input("b", shape=(1,)), ir.Add("s", ("a", "b")),
                    ir.Output("y", ("s",))])
    with pytest.raises(ValueError, match="missing inputs \\['b'\\]"):
        run(two, {"a": torch.zeros(1, 1, 1)})
