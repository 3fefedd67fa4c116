"""Fixed-point formats as data: a new format runs through the golden model without touching its
op table, quantized graphs name their format, and a saved quantized network loads in a fresh
process."""
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from step_deploy import fixedpoint, ir
from step_deploy.fixedpoint import FixedPointFormat, FormatError, count_event, register_format
from step_deploy.simulators import golden
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.integer_ops import CORE_INTEGER_OPS

from test_golden import T, build


# --------------------------------------------------------------------------- a toy format


@dataclass(frozen=True, eq=False)
class ToyDot(ir.Node):
    """Integer synapses: ``Y[t][o] = Σ_i W[o, i] · X[t][i]`` (no exponent, no bias)."""

    weight: np.ndarray = None

    def infer_shape(self, in_shapes):
        return in_shapes[0][:-1] + (int(self.weight.shape[0]),)


@dataclass(frozen=True, eq=False)
class ToyIF(ir.Node):
    """Integrate-and-fire on ``bits``-bit saturating state: ``v' = sat(v[t-1] + X[t])``,
    ``S[t] = v' >= theta``, ``V[t] = v' - theta · S[t]`` (soft reset)."""

    theta: int = 4
    bits: int = 8
    stateful: ClassVar[bool] = True

    def infer_shape(self, in_shapes):
        return in_shapes[0]


def toy_dot(n, xs, state, t):
    w = torch.from_numpy(np.asarray(n.weight, np.int64))
    return xs[0].to(torch.int64) @ w.T


def toy_if(n, xs, state, t):
    hi = (1 << (n.bits - 1)) - 1
    raw = state.get("v", torch.zeros_like(xs[0])) + xs[0]
    v = raw.clamp(-hi - 1, hi)
    count_event(state, "v_sat", v != raw)
    s = (v >= n.theta).to(torch.int64)
    state["v"] = v - n.theta * s
    return s


@pytest.fixture
def toy_format():
    for c in (ToyDot, ToyIF):
        ir.nodes.register(c)
    fmt = register_format(FixedPointFormat(
        name="toy-if", node_types=(ToyDot, ToyIF), ops={"ToyDot": toy_dot, "ToyIF": toy_if},
        events={"v_sat": "state saturated"}, spiking_ops=("ToyIF",), constants={"state_bits": 8}))
    yield fmt
    fixedpoint.FORMATS.pop("toy-if", None)
    for c in (ToyDot, ToyIF):
        ir.NODE_TYPES.pop(c.__name__, None)


def toy_graph():
    w = np.array([[1, 2, 0], [3, -1, 1]], np.int64)
    return ir.Graph([ir.Input("x", shape=(3,), kind="counts"), ToyDot("fc", ("x",), weight=w),
                     ToyIF("if", ("fc",), theta=6, bits=4), ir.Add("sum", ("if", "if")), ir.Output("y", ("sum",))],
                    metadata={ir.FORMAT_KEY: "toy-if"})


def test_a_new_format_runs_through_the_golden_model_unchanged(toy_format):
    ops_before = dict(CORE_INTEGER_OPS)
    x = torch.tensor([[[2, 1, 0]], [[2, 1, 0]], [[9, 0, 0]]])  # (T=3, B=1, 3)
    res = run_golden(toy_graph(), x, events=True)
    # fc = [4, 5], [4, 5], [9, 27]; IF (theta 6, 4-bit state saturating at 7): v' = [4, 5] -> no spike;
    # v' = [8, 10] -> [7, 7] (2 saturations) -> spikes, v = [1, 1]; v' = [10, 28] -> [7, 7] (2 more) -> spikes
    assert res.traces["if"][:, 0].tolist() == [[0, 0], [1, 1], [1, 1]]
    assert res.outputs["y"][:, 0].tolist() == [[0, 0], [2, 2], [2, 2]]
    assert res.events["if"] == {"v_sat": 4}
    assert CORE_INTEGER_OPS == ops_before  # the golden model's op table did not change


def test_the_format_comes_from_the_node_types_when_metadata_is_silent(toy_format):
    g = toy_graph()
    g.metadata.pop(ir.FORMAT_KEY)
    assert fixedpoint.format_of(g) is toy_format
    assert golden.spiking_nodes(g) == ["if"]


def test_format_definitions_are_checked(toy_format):
    with pytest.raises(FormatError, match="must match its node types"):
        FixedPointFormat(name="bad", node_types=(ToyIF,), ops={"ToyDot": toy_dot})
    with pytest.raises(FormatError, match="already belong to format 'toy-if'"):
        register_format(FixedPointFormat(name="other", node_types=(ToyIF,), ops={"ToyIF": toy_if}))
    g = toy_graph()
    g.metadata[ir.FORMAT_KEY] = "no-such-format"
    with pytest.raises(FormatError, match="'no-such-format' is not registered"):
        run_golden(g, torch.zeros(1, 1, 3, dtype=torch.int64))


def test_loihi_is_one_registered_format():
    fmt = fixedpoint.get_format("loihi-fixed_pt")
    assert set(fmt.ops) == {c.__name__ for c in fixedpoint.loihi.FIXED_NODE_TYPES}
    assert fmt.constants["state_bits"] == 24 and "u_wrap" in fmt.events
    assert not set(fmt.ops) & set(CORE_INTEGER_OPS)


# --------------------------------------------------------------------------- quantized graphs on disk


FRESH = """
import json, sys, numpy as np, torch
from step_deploy import fixedpoint
from step_deploy.simulators.golden import run_golden
g = fixedpoint.load(sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]))
res = run_golden(g, x, steps={T})
print(json.dumps({{"format": g.metadata["fixed_point_format"],
                   "traces": {{k: v.tolist() for k, v in res.traces.items()}}}}))
"""


@pytest.fixture(scope="module")
def saved_quantized(tmp_path_factory):
    from step_deploy.passes.quantize_loihi import quantize_loihi

    g, x = build("mlp")
    q, _ = quantize_loihi(g, x[:32], steps=T)
    d = tmp_path_factory.mktemp("qnet")
    ir.save(q, d / "network")
    np.save(d / "x.npy", x[:3].numpy())
    return q, d, x[:3]


def test_quantized_graph_names_its_format(saved_quantized):
    q, d, _ = saved_quantized
    assert q.metadata[ir.FORMAT_KEY] == "loihi-fixed_pt"
    assert json.loads((d / "network" / "graph.json").read_text())["metadata"][ir.FORMAT_KEY] == "loihi-fixed_pt"


@pytest.mark.slow  # a fresh Python process: ~7 s
def test_a_saved_quantized_network_runs_in_a_fresh_process(saved_quantized):
    q, d, x = saved_quantized
    out = subprocess.run([sys.executable, "-c", FRESH.format(T=T), str(d / "network"), str(d / "x.npy")],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    want = run_golden(q, x, steps=T)
    assert got["format"] == "loihi-fixed_pt"
    assert sorted(got["traces"]) == sorted(want.traces) and want.traces
    for k, v in want.traces.items():
        assert torch.equal(torch.tensor(got["traces"][k]), v), k


def test_plain_ir_load_in_a_fresh_process_says_how_to_load(saved_quantized):
    _, d, _ = saved_quantized
    code = "import sys; from step_deploy import ir; ir.load(sys.argv[1])"
    out = subprocess.run([sys.executable, "-c", code, str(d / "network")], capture_output=True, text=True)
    assert out.returncode != 0
    assert "fixed-point format 'loihi-fixed_pt'; load with step_deploy.fixedpoint.load(path)" in out.stderr
