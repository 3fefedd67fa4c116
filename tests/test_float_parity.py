"""Float-backend parity: teacher forcing separates rounding ties from real faults."""
import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_model
from step_deploy import ir
from step_deploy.frontend import capture, encoded_input, torch_traces
from step_deploy.passes import run_pipeline
from step_deploy.simulators.float_parity import (DEFAULT_TOLERANCE, check_float_backend, firing_boundary_distance,
                                                 is_rounding_tie, markdown_lines)
from step_deploy.simulators.reference import run
from step_deploy.simulators.reference_ops import neuron_fire

FULL_SIZE = ("spikformer-4-384", "sdt-2-512", "qkformer-4-384")


@functools.lru_cache(maxsize=1)
def _torch_side(arch: str, samples: int = 2):
    """(model's captured graph, encoded input, PyTorch logits, PyTorch traces) on torch.rand input."""
    model = random_model(arch)
    c, s = model.config["in_channels"], model.config["img_size"]
    xr = torch.rand(samples, c, s, s, generator=torch.Generator().manual_seed(0))
    logits, traces = torch_traces(model, xr)
    return capture(model), encoded_input(model, xr), logits, traces


def _raw_mismatches(a: dict, b: dict) -> int:
    return sum(int((a[k] != b[k]).sum()) for k in a if k in b)


def _assert_consistent(res: dict, torch_tr: dict, backend_tr: dict):
    assert res["spike_mismatches"] == _raw_mismatches(torch_tr, backend_tr)
    assert res["spikes_compared"] == sum(int(v.numel()) for k, v in torch_tr.items() if k in backend_tr)
    assert 0 <= res["cascade_mismatches"] <= res["spike_mismatches"]
    if res["spike_mismatches"]:  # every divergence has a root: a flip on one side or the other
        assert res["rounding_flips"] + res["torch_rounding_flips"] + res["non_tie_flips"]["count"] \
            + res["torch_non_tie_flips"]["count"] > 0
        assert res["first_divergence"] is not None
    assert res["max_tie_distance"] <= res["tolerance"]  # thresholds here are <= 1: the tolerance is absolute


# --------------------------------------------------------------------------- (a) full-size models


def _report(arch, target, res):
    print(f"\n{arch} -> {target}: " + "\n  ".join(markdown_lines(res)))


def _onnx_run(graph: ir.Graph, x: torch.Tensor):
    """Export ``graph`` to ONNX and run it back in onnxruntime as the export self-check does."""
    from step_deploy.exporters.onnx_export import export_onnx
    from step_deploy.exporters.onnx_runner import run_onnx

    with tempfile.TemporaryDirectory() as d:
        return run_onnx(export_onnx(graph, Path(d) / "model.onnx", expose_spikes=True), x, record=True)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FULL_SIZE)
def test_full_size_onnx_export_passes_with_honest_counts(arch):
    """The report's counts against an independent count of the same traces. ONNX only: the counting
    (``check_float_backend``) is the same code for every backend; the full-size NIR export, run back
    and checked end to end, is test_export_float_parity.py's
    ``test_full_size_float_export_exits_0_with_an_honest_summary[<arch>-nir]``."""
    g, x, logits, traces = _torch_side(arch)
    graph = run_pipeline(g, "onnx")
    back = _onnx_run(graph, x)
    res = check_float_backend(graph, x, logits, traces, back.final(), back.traces)
    _report(arch, "onnx", res)
    assert res["ok"], res["verdict"]
    assert res["neurons_missing"] == [] and res["neurons_compared"] == len(traces)
    _assert_consistent(res, traces, back.traces)
    assert res["teacher_forced_logit_error"] < 1e-5


# --------------------------------------------------------------------------- (b)-(d) tiny model, fast


@pytest.fixture(scope="module")
def tiny():
    g, x, logits, traces = _torch_side("spikformer-2-64-digits")
    return run_pipeline(g, "nir"), x, logits, traces


def _neurons(g: ir.Graph) -> list:
    return [n for n in g.topo_order() if isinstance(n, ir.Neuron)]


def test_identical_traces_give_zero_mismatches(tiny):
    graph, x, logits, traces = tiny
    res = check_float_backend(graph, x, logits, traces, logits.clone(), {k: v.clone() for k, v in traces.items()})
    assert res["ok"] and res["verdict"] == "0 mismatches"
    assert res["spike_mismatches"] == 0 and res["first_divergence"] is None and res["cascade_mismatches"] == 0
    assert res["non_tie_flips"]["count"] == 0 and res["prediction_agreement"] == 1.0
    assert res["max_rel_logit_error"] == 0.0 and res["teacher_forced_logit_error"] < 1e-6
    assert res["spikes_compared"] == sum(int(v.numel()) for v in traces.values()) > 100_000


def test_threshold_off_by_one_percent_fails_at_that_layer(tiny):
    graph, x, logits, traces = tiny
    victim = graph["block.0.mlp.fc1_lif"]  # a mid-network LIF whose membranes are spread (not spike counts)
    wrong = graph.copy()
    wrong.replace(ir.replace(victim, v_threshold=victim.v_threshold * 1.01))
    back = run(wrong, x, record=True)
    res = check_float_backend(graph, x, logits, traces, back.final(), back.traces)
    assert not res["ok"]
    assert res["non_tie_flips"]["count"] > 0
    first = res["non_tie_flips"]["first"][0]
    assert first["layer"] == victim.name and first["distance"] > res["tolerance"]
    assert res["first_divergence"]["layer"] == victim.name
    assert res["torch_non_tie_flips"]["count"] == 0  # PyTorch agrees with the graph
    assert res["verdict"].startswith(f"{res['non_tie_flips']['count']:,} backend spikes differ")
    assert victim.name in res["verdict"]
    _assert_consistent(res, traces, back.traces)


def test_wrong_head_weight_fails_on_logits(tiny):
    graph, x, logits, traces = tiny
    head = [n for n in graph.topo_order() if isinstance(n, ir.Linear)][-1]
    wrong = graph.copy()
    w = head.weight.copy()
    w[0] *= 1.01  # one class row off by 1 %
    wrong.replace(ir.replace(head, weight=w))
    back = run(wrong, x, record=True)
    res = check_float_backend(graph, x, logits, traces, back.final(), back.traces)
    assert res["spike_mismatches"] == 0 and res["non_tie_flips"]["count"] == 0  # the spikes are all right
    assert not res["ok"]
    assert res["teacher_forced_logit_error"] > 1e-3 > res["torch_teacher_forced_logit_error"]
    assert "readout" in res["verdict"]


def test_untraced_neuron_is_not_ok(tiny):
    graph, x, logits, traces = tiny
    name = "block.1.mlp.fc2_lif"
    partial = {k: v for k, v in traces.items() if k != name}
    res = check_float_backend(graph, x, logits, traces, logits, partial)
    assert res["neurons_missing"] == [name] and not res["ok"]
    assert name in res["verdict"] and res["spike_mismatches"] == 0


def test_mismatched_trace_shapes_are_an_error_naming_the_neuron(tiny):
    graph, x, logits, traces = tiny
    name = next(iter(traces))
    bad = dict(traces, **{name: traces[name][:, :1]})
    with pytest.raises(ValueError, match=name):
        check_float_backend(graph, x, logits, traces, logits, bad)


# --------------------------------------------------------------------------- (e) constructed ties


def _two_layer():
    """x -> IF(θ=1) -> Linear(1) -> IF(θ=0.5) -> Linear head (2 classes)."""
    return ir.Graph([
        ir.Input("x", shape=(1,)),
        ir.Neuron("a", ("x",), kind="IF", v_threshold=1.0),
        ir.Linear("w", ("a",), weight=np.ones((1, 1), np.float32), bias=None),
        ir.Neuron("b", ("w",), kind="IF", v_threshold=0.5),
        ir.Linear("head", ("b",), weight=np.array([[2.0], [-1.0]], np.float32), bias=None),
        ir.Output("y", ("head",)),
    ])


@pytest.mark.parametrize("x_value, backend_a, tie", [
    (1.0, 0.0, True),            # H = 1 exactly at θ: exact fires, the backend did not
    (1.0 - 5e-5, 1.0, True),     # 5e-5 below θ, within the tolerance 1e-4: the backend fired anyway
    (1.0 - 1e-3, 1.0, False),    # 1e-3 below θ: no rounding explains a spike there
])
def test_constructed_threshold_flip_is_a_tie_only_within_tolerance(x_value, backend_a, tie):
    g = _two_layer()
    x = torch.tensor([[[x_value]]])  # (T=1, B=1, 1)
    exact = run(g, x, record=True, dtype=torch.float64)  # PyTorch here computes exactly
    torch_tr = {k: v.float() for k, v in exact.traces.items()}
    a = torch.full((1, 1, 1), backend_a)
    back_tr = {"a": a, "b": a.clone()}  # b copies a (weight 1, θ 0.5): a cascade, not a flip
    back_logits = torch.tensor([[2.0, -1.0]]) * backend_a
    res = check_float_backend(g, x, exact.final().float(), torch_tr, back_logits, back_tr)
    assert res["spike_mismatches"] == 2
    assert res["first_divergence"]["layer"] == "a"
    assert res["first_divergence"]["membrane_float64"] == pytest.approx(float(np.float32(x_value)), abs=0)
    assert res["cascade_mismatches"] == 1  # b differs only because a did
    assert res["rounding_flips"] == int(tie) and res["non_tie_flips"]["count"] == int(not tie)
    assert res["ok"] is tie
    if tie:
        assert res["max_tie_distance"] == pytest.approx(1.0 - float(np.float32(x_value)), abs=1e-12)
        assert res["verdict"] == "all 2 mismatches follow from 1 threshold tie under float rounding " \
                                 "(1 in the backend, 0 in PyTorch)"
    else:
        assert res["non_tie_flips"]["first"][0]["layer"] == "a"
    assert res["teacher_forced_logit_error"] == 0.0


def test_torch_side_tie_is_attributed_to_pytorch():
    g = _two_layer()
    x = torch.tensor([[[1.0]]])
    exact = run(g, x, record=True, dtype=torch.float64)
    flipped = {k: torch.zeros_like(v) for k, v in exact.traces.items()}  # "PyTorch" rounded below θ
    res = check_float_backend(g, x, torch.zeros(1, 2), flipped, exact.final().float(),
                              {k: v.float() for k, v in exact.traces.items()})
    assert res["ok"] and res["torch_rounding_flips"] == 1 and res["rounding_flips"] == 0
    assert "0 in the backend, 1 in PyTorch" in res["verdict"]


@pytest.mark.parametrize("output, kw, h, s, tie", [
    ("ternary", {}, -1.0 + 5e-5, -1.0, True),     # near -θ: -1 is a tie
    ("ternary", {}, -1.0 + 5e-5, 1.0, False),     # +1 is nowhere near
    ("integer", {"max_level": 3}, 1.5 - 5e-5, 2.0, True),   # round(1.49995) = 1; 2 is a tie
    ("integer", {"max_level": 3}, 1.5 - 5e-5, 3.0, False),  # 3 crosses two boundaries
])
def test_tie_rule_for_ternary_and_integer_outputs(output, kw, h, s, tie):
    n = ir.Neuron("n", ("x",), kind="IF", output=output, reset="soft", **kw)
    hh = torch.tensor([h], dtype=torch.float64)
    assert bool(neuron_fire(n, hh)[0] != s)  # it is a flip
    assert bool(is_rounding_tie(n, hh, torch.tensor([s], dtype=torch.float64), DEFAULT_TOLERANCE)[0]) is tie
    assert float(firing_boundary_distance(n, hh)[0]) == pytest.approx(5e-5, rel=1e-6)
