"""Capture + reference interpreter parity with the PyTorch models (spikes exact, logits 1e-5)."""
import pytest
import torch
from torch import nn

from conftest import random_model
from step_deploy import ir
from step_deploy.frontend import CaptureError, capture, encoded_input, torch_traces
from step_deploy.models import build_model
from step_deploy.passes import fold_batchnorm, run_pipeline
from step_deploy.simulators.reference import run

TINY = ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits", "qkformer-3-64-digits"]
FULL = ["spikformer-4-384", "sdt-2-512", "qkformer-4-384"]


def _parity(model, x, graph):
    logits, traces = torch_traces(model, x)
    r = run(graph, encoded_input(model, x), record=True)
    assert set(r.traces) == set(traces), "every neuron that runs in PyTorch must be in the IR, and no other"
    for name, spikes in traces.items():
        assert torch.equal(spikes, r.traces[name]), f"spikes differ at {name}"
    rel = (r.final() - logits).abs().max() / logits.abs().max()
    assert rel <= 1e-5
    return traces


@pytest.mark.parametrize("arch", TINY)
def test_tiny_parity_unfolded_and_folded(arch):
    m = random_model(arch)
    x = torch.rand(6, 1, 8, 8)
    g = capture(m)
    traces = _parity(m, x, g)
    assert sum(float(t.sum()) for t in traces.values()) > 0, "the test needs spiking activity"
    f = fold_batchnorm(g)
    assert "BatchNorm" not in f.op_counts()
    _parity(m, x, f)


@pytest.mark.parametrize("arch", FULL)
def test_full_size_parity(arch):
    m = random_model(arch)
    x = torch.rand(2, 3, 32, 32)
    _parity(m, x, run_pipeline(capture(m), "fold-batchnorm"))


def test_rate_and_event_encodings_capture():
    m = random_model("spikformer-2-64-digits", encoding="rate")
    g = capture(m)
    assert g.inputs[0].kind == "spikes"
    _parity(m, torch.rand(3, 1, 8, 8), g)
    m = random_model("sdt-1-64-digits", encoding="events", in_channels=2)
    g = capture(m)
    assert g.inputs[0].kind == "counts"
    _parity(m, torch.randint(0, 3, (3, 4, 2, 8, 8)).float(), g)


def test_step_layout_becomes_per_step_graph_with_explicit_readout():
    g = capture(build_model("spikformer-2-64-digits"))
    ops = g.op_counts()
    assert ops["TemporalMean"] == 1 and ops["MatMul"] == 4 and ops["Neuron"] == 19
    shapes = g.infer_shapes()
    assert shapes["input"] == (1, 8, 8) and shapes["block.0.attn.q_lif"] == (16, 64)  # (tokens, channels)
    assert g.metadata["time_steps"] == 4


class _Custom(nn.Module):
    def forward(self, x):
        return x * 2


def test_unsupported_module_names_path_and_type():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU()))
    with pytest.raises(CaptureError, match=r"'0.1'.*GELU"):
        capture(net, input_shape=(1, 8, 8))
    with pytest.raises(CaptureError, match=r"'<root>'.*_Custom.*lowers"):
        capture(_Custom(), input_shape=(3,))


def test_sequential_with_spikingjelly_style_and_snntorch_neurons():
    snn = pytest.importorskip("snntorch")

    class SJ(nn.Module):  # SpikingJelly's attribute names: tau, v_threshold, v_reset, decay_input
        tau, v_threshold, v_reset, decay_input = 2.0, 1.0, None, True

    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), SJ(), nn.Linear(3, 2),
                        snn.Leaky(beta=0.75, reset_mechanism="zero", reset_delay=False))
    g = capture(net, input_shape=(2, 2))
    neurons = [n for n in g.nodes.values() if isinstance(n, ir.Neuron)]
    assert neurons[0].reset == "soft" and neurons[0].compare == ">="
    assert neurons[1].tau == pytest.approx(4.0) and neurons[1].compare == ">" and not neurons[1].decay_input
    with pytest.raises(CaptureError, match="reset_delay"):
        capture(nn.Sequential(nn.Linear(2, 2), snn.Leaky(beta=0.5)), input_shape=(2,))
    with pytest.raises(CaptureError, match="subtract"):
        capture(nn.Sequential(nn.Linear(2, 2), snn.Leaky(beta=0.5, reset_delay=False)), input_shape=(2,))


def test_snntorch_leaky_parity():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    leaky = snn.Leaky(beta=0.8, threshold=0.7, reset_mechanism="zero", reset_delay=False)
    g = capture(nn.Sequential(lin, leaky), input_shape=(5,))
    x = torch.rand(12, 3, 5) * 1.5
    mem = leaky.init_leaky()
    spikes = []
    for t in range(12):
        s, mem = leaky(lin(x[t]), mem)
        spikes.append(s)
    r = run(g, x, record=True)
    name = next(n.name for n in g.nodes.values() if isinstance(n, ir.Neuron))
    assert torch.equal(torch.stack(spikes).detach(), r.traces[name])
    assert r.traces[name].sum() > 0
