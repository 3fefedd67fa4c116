"""Lava (``Loihi2SimCfg(select_tag='fixed_pt')``) against the integer golden model: every layer's
spikes and the readout, bit for bit, at every step after the delay alignment.

Each Lava run forks one OS process per Lava process (about 1-3 s for the hand-built graphs);
whole models take 10-30 s per sample and are marked slow."""
import numpy as np
import pytest
import torch
from test_golden import T, build

from step_deploy.exporters import lava_compat
from step_deploy.simulators.golden import run_golden
from step_deploy.passes.quantize_loihi import quantize_loihi

pytestmark = pytest.mark.skipif(not lava_compat.lava_available(), reason="lava-nc is not installed (make setup)")


def assert_parity(qgraph, x, samples=(0,), steps=T):
    from step_deploy.exporters.lava_runner import compare, run_lava

    gold = run_golden(qgraph, x[: max(samples) + 1], steps=steps)
    mats = {}
    for i in samples:
        lv = run_lava(qgraph, x[i], steps=steps, matrices=mats)
        assert set(lv.traces) == set(gold.traces)
        bad = {k: v for k, v in compare(gold.traces, lv.traces, i).items() if v}
        assert not bad, f"sample {i}: spikes differ in {bad}"
        for name, out in lv.outputs.items():
            assert torch.equal(gold.outputs[name][:, i: i + 1], out), name
        assert sum(int(v.sum()) for v in lv.traces.values()) > 0  # something spiked
    return lv


@pytest.mark.parametrize("name", ["mlp", "conv", "residual", "ssa", "sdt"])
def test_hand_built_graphs_match_golden(name):
    g, x = build(name)
    q, _ = quantize_loihi(g, x[:64], steps=T)
    lv = assert_parity(q, x[64:])
    assert lv.num_steps == T + lv.schedule["depth"]


@pytest.mark.slow  # two Lava runs, about 15 s under load; test_lava_processes runs the stock LIF fast
@pytest.mark.parametrize("name", ["mlp", "ssa"])
def test_gap_strategy_runs_on_lavas_stock_lif(name):
    g, x = build(name)
    q, _ = quantize_loihi(g, x[:64], steps=T, target="loihi1")
    lv = assert_parity(q, x[64:])
    assert "LIF" in lv.counts and "FixedLIF" not in lv.counts


@pytest.mark.slow  # one Lava run of 2T steps (the claim is about the run's length, not the sample count)
def test_longer_runs_stay_in_parity():
    g, x = build("mlp")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    lv = assert_parity(q, x[64:], samples=(0,), steps=2 * T)
    assert lv.num_steps == 2 * T + lv.schedule["depth"]


@pytest.mark.slow  # one Lava run; the delay schedule itself is checked fast in test_quantize_loihi.py
def test_without_delay_balancing_the_residual_add_mixes_time_steps(monkeypatch):
    """The residual join needs a one-step Delay on its short branch; without it Lava differs, and
    only after the join (l3): the layers before it (l1, l2) still match. One sample shows it (the
    inputs are seeded: 26 of l3's values differ on it)."""
    from step_deploy.exporters import lava_export
    from step_deploy.exporters.lava_runner import compare, run_lava

    g, x = build("residual")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    real = lava_export.schedule

    def unbalanced(qgraph):
        s = real(qgraph)
        s.delays.clear()
        return s

    monkeypatch.setattr(lava_export, "schedule", unbalanced)
    gold = run_golden(q, x[64:65], steps=T)
    diffs = compare(gold.traces, run_lava(q, x[64], steps=T, isolate=False).traces, 0)  # the patch lives here
    assert diffs["l3"] > 0 and diffs["l1"] == diffs["l2"] == 0, diffs


def _model_graph(arch):
    from conftest import random_model

    from step_deploy.data import load_dataset
    from step_deploy.frontend.capture import capture
    from step_deploy.passes import fold_batchnorm

    x = load_dataset("digits", "train").tensors[0]  # direct coding: the same image every step
    return fold_batchnorm(capture(random_model(arch))), x[:96]


#: (tie, arch) pairs run here. The digits Spikformer with the default tie ("ge") is not repeated here: it runs on
#: Lava in test_cli.py::test_loihi_export_runs_lava_bit_exact (every layer, 0 mismatches), in test_cli_parity's
#: every-stage matrix (golden-loihi vs lava exact, counters equal) and in test_zoo_trained_parity (three neurons)
DIGITS_TIES = [("gap", "spikformer-2-64-digits"), ("ge", "sdt-1-64-digits"), ("gap", "sdt-1-64-digits"),
               ("ge", "qkformer-2-64-digits"), ("gap", "qkformer-2-64-digits")]


@pytest.mark.slow
@pytest.mark.parametrize("tie, arch", DIGITS_TIES, ids=[f"{t}-{a}" for t, a in DIGITS_TIES])
def test_digits_models_match_golden(arch, tie):
    g, x = _model_graph(arch)
    q, rep = quantize_loihi(g, x[:64], steps=T, tie=tie)
    lv = assert_parity(q, x[64:])
    assert lv.schedule["depth"] >= 10 and rep["saturation_total"] == 0


def test_host_inputs_quantize_like_the_golden_model():
    from step_deploy.simulators.golden_loihi import quantize_input
    from step_deploy.exporters.lava_runner import host_inputs

    g, x = build("conv")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    ints = host_inputs(q, x[0], T)["x.q"]
    assert ints.shape == (T, 1, 8, 8) and ints.dtype == np.int64
    assert np.array_equal(ints[0], quantize_input(q["x.q"], x[0].float()).numpy())


@pytest.mark.slow  # three Lava runs, two of them in a fresh worker process: ~12 s
def test_the_isolated_worker_runs_without_torch_gives_the_same_spikes_and_reports_its_errors():
    """run_lava's default runs Lava in a fresh process that has not loaded torch (its ~100 forks are
    cheap there): the spikes equal those of an in-process run, and a failure in the worker is one
    error carrying the worker's own message."""
    import subprocess
    import sys

    from step_deploy.exporters.lava_export import synapse_matrices
    from step_deploy.exporters.lava_record import LavaRunError, record_run_isolated
    from step_deploy.exporters.lava_runner import host_inputs, run_lava

    g, x = build("ssa")
    q, _ = quantize_loihi(g, x[:64], steps=T)
    iso, local = run_lava(q, x[64], steps=T, isolate=True), run_lava(q, x[64], steps=T, isolate=False)
    assert iso.traces.keys() == local.traces.keys() and iso.num_steps == local.num_steps
    for name in iso.traces:
        assert torch.equal(iso.traces[name], local.traces[name]), name
    code = ("import sys; import step_deploy.exporters.lava_record, step_deploy.exporters.lava_export; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    with pytest.raises(LavaRunError, match="KeyError.*no_such_node"):
        record_run_isolated(q, host_inputs(q, x[64], T), T, ["no_such_node"], synapse_matrices(q))
