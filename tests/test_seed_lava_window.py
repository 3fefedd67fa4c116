"""Lava runs STAtten's window op (``TemporalBlockSum``, non-causal inside a block of B steps) instead of
refusing it: the ``BlockSum`` process sums each block and emits ``Y[t]`` with a latency of ``B - 1``
steps (after the block's last input arrived); ``passes.delay_balance`` counts that latency, so every
branch meeting the block sum downstream is delayed to match and the biases after it start later, and
the Lava runner reads every node's golden step t at its latency: golden = Lava bit for bit, on every
node (hand-built graph: block 2, T = 4, a residual and a biased neuron downstream) and on every layer
of a captured tiny STAtten Spikformer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.passes.delay_balance import schedule
from step_deploy.passes.quantize_loihi import quantize_loihi
from step_deploy.simulators.golden import run_golden

T, N, C = 4, 4, 4
SPIKES = (torch.rand(T, 16, N, C, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.int64)


def _w(seed: int, lo: int, hi: int, shape=(C, C)) -> np.ndarray:
    """Weights k/4 (exact 8-bit mantissas at a power-of-two scale), deterministic."""
    return (np.random.default_rng(seed).integers(lo, hi, shape) / 4).astype(np.float32)


def statten_residual(block: int = 2) -> ir.Graph:
    """STAtten ``M = Σ_block Kᵀ·V``, ``Y = (Q·M)·0.25`` -> attn_lif -> proj (bias) -> proj_lif, then a
    residual ``x + proj_lif`` (x arrives B - 1 steps before the block sum's path would without the
    window latency) into a synapse with a bias and a neuron (``out_lif``)."""
    g = ir.Graph([
        ir.Input("x", shape=(N, C), kind="spikes"),
        ir.Linear("q_linear", ("x",), weight=_w(3, -1, 7), bias=None), ir.Neuron("q_lif", ("q_linear",)),
        ir.Linear("k_linear", ("x",), weight=_w(4, -2, 6), bias=None), ir.Neuron("k_lif", ("k_linear",)),
        ir.Linear("v_linear", ("x",), weight=_w(5, -2, 6), bias=None), ir.Neuron("v_lif", ("v_linear",)),
        ir.MatMul("kv", ("k_lif", "v_lif"), transpose_a=True),
        ir.TemporalBlockSum("kv_block", ("kv",), block=block),
        ir.MatMul("qkv", ("q_lif", "kv_block"), scale=0.25),
        ir.Neuron("attn_lif", ("qkv",), v_threshold=0.5),
        ir.Linear("proj", ("attn_lif",), weight=_w(9, 0, 9), bias=np.full(C, 0.25, np.float32)),
        ir.Neuron("proj_lif", ("proj",)),
        ir.Add("res", ("x", "proj_lif")),
        ir.Linear("fc", ("res",), weight=_w(11, -2, 6), bias=(np.arange(C) / 4 - 0.25).astype(np.float32)),
        ir.Neuron("out_lif", ("fc",)),
        ir.TemporalMean("tm", ("out_lif",)), ir.Output("y", ("tm",))])
    ir.check(g)
    return g


def _all_nodes(q: ir.Graph) -> list[str]:
    return [n for n in q.nodes if q[n].op not in ("Input", "Output")]


def _mismatches(gold: dict, lava: dict, sample: int) -> dict[str, int]:
    return {k: int((gold[k][:, sample:sample + 1].to(torch.int64) != lava[k].to(torch.int64)).sum()) for k in lava}


def test_block_sum_is_delay_balanced_and_lava_equals_golden_on_every_node():
    pytest.importorskip("lava", reason="lava-nc is not installed (make setup installs it)")
    from step_deploy.exporters.lava_runner import run_lava

    q, _ = quantize_loihi(statten_residual(), SPIKES, steps=T)
    sched = schedule(q)
    lat = sched.latency
    # the block sum adds block - 1 = 1 step; Q waits for it, the residual waits for the whole path
    assert lat["kv_block"] == lat["kv"] + 1 and sched.delays[("qkv", 0)] == 1
    assert lat["proj"] == lat["attn_lif"] + 1 == lat["kv_block"] + 1
    assert sched.delays[("res", 0)] == lat["proj_lif"] - lat["x"] == 3 and lat["fc"] == lat["res"] + 1
    names = _all_nodes(q)
    gold = run_golden(q, SPIKES, steps=T, record=names)
    # the window op is live and non-causal here: the block sum differs from the per-step product
    assert not torch.equal(gold.traces["kv_block"], gold.traces["kv"])
    act = gold.traces["attn_lif"].sum((0, 2, 3)) * gold.traces["out_lif"].sum((0, 2, 3))
    i = int(act.argmax())  # a sample where the attention and the neuron after the residual both fire
    assert int(act[i]) > 0
    lv = run_lava(q, SPIKES[:, i], steps=T, record=names)
    assert lv.counts.get("BlockSum") == 1 and lv.schedule["depth"] == max(lat.values())
    bad = _mismatches(gold.traces, lv.traces, i)
    assert set(bad) == set(names) and not any(bad.values()), f"Lava vs golden mismatches per node: {bad}"
    assert torch.equal(lv.outputs["y"], gold.outputs["y"][:, i:i + 1])


def test_lava_refuses_a_run_whose_steps_split_a_block():
    pytest.importorskip("lava", reason="lava-nc is not installed (make setup installs it)")
    from step_deploy.exporters.lava_runner import run_lava

    q, _ = quantize_loihi(statten_residual(), SPIKES, steps=T)
    with pytest.raises(ir.ShapeError, match="not a multiple of the block size 2"):
        run_lava(q, SPIKES[:3, 0], steps=3)


def test_captured_statten_spikformer_golden_equals_lava_on_every_layer():
    """A tiny random ``spikformer-statten-2-64-digits`` (1 block, 16 channels, 2 heads; weights x4 so
    every layer fires): golden = Lava on every LIF layer and the output, 0 mismatches."""
    pytest.importorskip("lava", reason="lava-nc is not installed (make setup installs it)")
    from test_seed_loihi_models import _captured

    from step_deploy.exporters.lava_runner import run_lava

    g = _captured("spikformer-statten-2-64-digits", weight_gain=4)
    x = 4 * torch.rand(2, *g.inputs[0].shape, generator=torch.Generator().manual_seed(0))
    q, _ = quantize_loihi(g, x, steps=T)
    blocks = [n for n in q.nodes.values() if n.op == "TemporalBlockSum"]
    assert blocks and all(int(b.block) == 2 for b in blocks)
    gold = run_golden(q, x, steps=T)
    lv = run_lava(q, x[0], steps=T)  # x: a batch of 2 per-step images (repeated over T)
    assert lv.counts.get("BlockSum") == len(blocks)
    bad = _mismatches(gold.traces, lv.traces, 0)
    assert bad and not any(bad.values()), f"Lava vs golden mismatches per layer: {bad}"
    fired = {k: int(v[:, 0:1].abs().sum()) for k, v in gold.traces.items()}
    attn = {k: v for k, v in fired.items() if "attn" in k}
    assert attn and all(attn.values()), fired  # the layers after the block sum are alive
    (o,) = lv.outputs
    assert torch.equal(lv.outputs[o], gold.outputs[o][:, 0:1])


@pytest.mark.parametrize("block,offset", [(1, 0), (2, 0), (2, 3), (3, 1)])
def test_block_sum_stream_is_the_golden_block_sum_block_minus_1_steps_late(block, offset):
    """The process arithmetic (``lava_kernels.block_sum_step``, no Lava): inputs arriving ``offset``
    steps late (zeros before), out at step ``offset + t + block - 1`` = the golden op's ``Y[t]``."""
    from step_deploy.exporters.lava_kernels import block_sum_step
    from step_deploy.simulators.golden import integer_ops

    steps = 2 * 3 * block
    x = np.random.default_rng(block + offset).integers(-9, 10, (steps, 5))
    node = ir.TemporalBlockSum("b", ("x",), block=block)
    want = integer_ops(None)["TemporalBlockSum"](node, [torch.from_numpy(x).unsqueeze(1)], {}, 0)[:, 0].numpy()
    acc = last = np.zeros(5, np.int64)
    out = []
    for s in range(offset + steps + block - 1):
        live = 0 <= s - offset < steps  # zeros before the data arrives and after the run's last step
        acc, last = block_sum_step(acc, last, x[s - offset] if live else np.zeros(5, np.int64), s - offset, block)
        out.append(last)
    np.testing.assert_array_equal(np.stack(out)[offset + block - 1:], want)


def test_block_sum_process_latency_is_block_minus_1():
    pytest.importorskip("lava", reason="lava-nc is not installed (make setup installs it)")
    from step_deploy.exporters import lava_processes as lp
    from step_deploy.exporters.lava_harness import run_open_loop

    x = np.random.default_rng(3).integers(-5, 6, (T, 3))
    p = lp.BlockSum((3,), block=2, offset=0)
    out = run_open_loop({p.a_in: np.concatenate([x, np.zeros((1, 3), np.int64)])}, {"y": p.s_out})["y"]
    want = x.reshape(T // 2, 2, 3).sum(1).repeat(2, axis=0)
    assert lp.latency(p) == 1 and np.all(out[0] == 0)
    np.testing.assert_array_equal(out[1:], want)
