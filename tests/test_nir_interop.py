"""Interop proof: NIR files written by step-deploy, imported by snnTorch 1.0.0 and Norse 1.1.0,
reproduce the reference interpreter's spikes exactly, with the settings in IMPORTER_SETTINGS.
The quirks that make other settings fail are asserted too (docs/nir.md)."""
import contextlib
import io

import nir
import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.exporters.nir_export import settings_for, write_nir
from step_deploy.exporters.nir_interop import fixup_snntorch, run_norse, run_snntorch
from step_deploy.simulators.reference import run

F = np.float32
T = 8


def conv_net(seed=0) -> ir.Graph:
    """Conv2d(1->8, 3x3, pad 1) -> LIF -> AvgPool2d(2) -> Flatten -> Linear(128->10) -> LIF (8x8 input)."""
    rng = np.random.default_rng(seed)
    return ir.Graph([
        ir.Input("x", shape=(1, 8, 8)),
        ir.Conv2d("conv", ("x",), weight=rng.normal(0, 0.6, (8, 1, 3, 3)).astype(F),
                  bias=rng.normal(0, 0.1, 8).astype(F), padding=(1, 1)),
        ir.Neuron("lif1", ("conv",)),
        ir.AvgPool2d("pool", ("lif1",)),
        ir.Flatten("flat", ("pool",)),
        ir.Linear("fc", ("flat",), weight=rng.normal(0, 0.3, (10, 128)).astype(F),
                  bias=rng.normal(0, 0.1, 10).astype(F)),
        ir.Neuron("lif2", ("fc",)),
        ir.Output("y", ("lif2",)),
    ])


def if_net(seed=1) -> ir.Graph:
    """Linear(64->32) -> IF -> Linear(32->10, no bias) -> LIF(θ=0.5)."""
    rng = np.random.default_rng(seed)
    return ir.Graph([
        ir.Input("x", shape=(64,)),
        ir.Linear("fc1", ("x",), weight=rng.normal(0, 0.3, (32, 64)).astype(F), bias=np.zeros(32, F)),
        ir.Neuron("if1", ("fc1",), kind="IF"),
        ir.Linear("fc2", ("if1",), weight=rng.normal(0, 0.5, (10, 32)).astype(F), bias=None),
        ir.Neuron("lif2", ("fc2",), v_threshold=0.5),
        ir.Output("y", ("lif2",)),
    ])


def tie_net() -> ir.Graph:
    """Identity synapses into an attention-style neuron (θ = 0.5): input 1.0 gives H = 0.5 = θ exactly."""
    return ir.Graph([ir.Input("x", shape=(4,)),
                     ir.Linear("eye", ("x",), weight=np.eye(4, dtype=F), bias=np.zeros(4, F)),
                     ir.Neuron("attn", ("eye",), v_threshold=0.5), ir.Output("y", ("attn",))])


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    images = load_digits().images[:16].astype(F) / 16.0 * 1.5  # real data, direct-coded every step
    return torch.from_numpy(images).unsqueeze(0).expand(T, -1, -1, -1).contiguous()


def snntorch_import(path):
    from snntorch.import_nir import import_from_nir

    graph = nir.read(path)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints warnings about its threshold folding
        return import_from_nir(graph), graph


def norse_import(path, **kw):
    import norse.torch

    graph = nir.read(path)
    return norse.torch.from_nir(graph, **kw), graph


def assert_same_spikes(reference, traces):
    assert set(traces) == set(reference.traces)
    for name, spikes in reference.traces.items():
        assert spikes.sum() > 0, name
        assert torch.equal(traces[name], spikes), f"{name}: {int((traces[name] != spikes).sum())} spikes differ"


def mismatches(reference, traces) -> int:
    return sum(int((traces[k] != s).sum()) for k, s in reference.traces.items())


# --------------------------------------------------------------------------- snnTorch


def test_snntorch_reproduces_conv_net_with_dt_1e4(digits, tmp_path):
    g, x = conv_net(), digits[:, :, None]
    reference = run(g, x, record=True)
    write_nir(g, tmp_path / "net.nir", **settings_for("snntorch"))  # dt = 1e-4, what snnTorch hard-codes
    module, _ = snntorch_import(tmp_path / "net.nir")
    assert module.lif1.reset_mechanism == "zero" and not module.lif1.reset_delay
    _, traces = run_snntorch(module, x)
    assert_same_spikes(reference, traces)
    _, again = run_snntorch(module, x)  # run_snntorch resets the hidden state between sequences
    assert_same_spikes(reference, again)


def test_snntorch_with_dt_1_needs_the_fixup(digits, tmp_path):
    g, x = conv_net(), digits[:, :, None]
    reference = run(g, x, record=True)
    write_nir(g, tmp_path / "net.nir", dt=1.0)
    module, graph = snntorch_import(tmp_path / "net.nir")
    assert module.lif1.beta.unique().tolist() == pytest.approx([1 - 1e-4 / 2])  # its dt=1e-4 against our tau=2·1
    assert mismatches(reference, run_snntorch(module, x)[1]) > 0
    fixup_snntorch(module, graph)
    assert_same_spikes(reference, run_snntorch(module, x)[1])


def test_snntorch_if_import_is_broken_and_fixed_up(digits, tmp_path):
    g, x = if_net(), digits.reshape(T, 16, 64)
    reference = run(g, x, record=True)
    write_nir(g, tmp_path / "if.nir", **settings_for("snntorch-if"))
    module, graph = snntorch_import(tmp_path / "if.nir")
    # snnTorch maps NIR IF to a *leaky* neuron with subtract reset and no hidden state ...
    assert module.if1.beta.unique().tolist() == pytest.approx([0.9]) and module.if1.reset_mechanism == "subtract"
    with pytest.raises(TypeError):  # ... whose (spk, mem) tuple the next Linear cannot take
        run_snntorch(module, x)
    fixup_snntorch(module, graph)
    assert_same_spikes(reference, run_snntorch(module, x)[1])


# --------------------------------------------------------------------------- Norse


def test_norse_reproduces_conv_net(digits, tmp_path):
    g, x = conv_net(), digits[:, :, None]
    reference = run(g, x, record=True)
    write_nir(g, tmp_path / "net.nir", **settings_for("norse"))  # dt=1, AvgPool2d as a Conv2d
    module, _ = norse_import(tmp_path / "net.nir", dt=1.0)
    _, traces = run_norse(module, x)
    assert_same_spikes(reference, traces)


def test_norse_reproduces_if_net(digits, tmp_path):
    g, x = if_net(), digits.reshape(T, 16, 64)
    reference = run(g, x, record=True)
    write_nir(g, tmp_path / "if.nir", **settings_for("norse"))
    module, _ = norse_import(tmp_path / "if.nir", dt=1.0)
    assert_same_spikes(reference, run_norse(module, x)[1])


def test_norse_quirks(digits, tmp_path):
    g, x = conv_net(), digits[:, :, None]
    reference = run(g, x, record=True)
    # NIR AvgPool2d: Norse has no module for it and drops the node, leaving a broken executor
    write_nir(g, tmp_path / "avg.nir", dt=1.0)
    module, _ = norse_import(tmp_path / "avg.nir", dt=1.0)
    assert not any(isinstance(m, torch.nn.AvgPool2d) for m in module.modules())
    with pytest.raises(RuntimeError):
        run_norse(module, x)
    # Norse's default dt=1e-3 against a dt=1 file: every tau is 1000x too short
    write_nir(g, tmp_path / "net.nir", **settings_for("norse"))
    module, _ = norse_import(tmp_path / "net.nir")
    assert mismatches(reference, run_norse(module, x)[1]) > 0


# --------------------------------------------------------------------------- threshold ties


@pytest.mark.parametrize("importer", ["snntorch", "norse"])
def test_ties_need_the_nudged_threshold(importer, tmp_path):
    g = tie_net()
    x = torch.ones(T, 1, 4)
    reference = run(g, x, record=True)
    assert reference.traces["attn"][0].sum() == 4  # H = 0.5 >= 0.5 at t = 0
    results = {}
    for mode in ("nudge", "keep"):
        path = tmp_path / f"{mode}.nir"
        write_nir(g, path, threshold=mode, **settings_for(importer))
        if importer == "snntorch":
            traces = run_snntorch(snntorch_import(path)[0], x)[1]
        else:
            traces = run_norse(norse_import(path, dt=1.0)[0], x)[1]
        results[mode] = traces
    assert_same_spikes(reference, results["nudge"])
    assert results["keep"]["attn"][0].sum() == 0  # '>' at the unchanged threshold misses every tie
