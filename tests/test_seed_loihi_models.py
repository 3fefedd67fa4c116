"""The seed attention designs' captured models (tiny random weights) on Loihi: A²OS²A's scales carried
through ReLU and both MatMuls into the attention threshold, bipolar SA's Shiftmax scale against Loihi's
fields (refused by name where it cannot fit, fits at the digits config's frac_bits), and SDT-STAtten's
mesh counters against the energy counters on golden traces (see ``test_seed_loihi.py`` for the
hand-built graphs)."""
from __future__ import annotations

import pytest
import torch

from step_deploy import ir
from step_deploy.passes.quantize_loihi import quantize_loihi
from step_deploy.simulators.golden import run_golden

T = 4


def _mismatches(a: dict, b: dict) -> dict:
    return {k: int((a[k].to(torch.int64) != b[k].to(torch.int64)).sum()) for k in a}


# --------------------------------------------------------------------------- captured seed models (random weights)


def _captured(arch: str, weight_gain: float = 1.0, **over) -> ir.Graph:
    """A tiny random model of a seed design's digits config (1 block, 16 channels, 2 heads), its conv and
    linear weights times ``weight_gain`` (4 makes every layer fire), captured and BN-folded: the lowering
    the Loihi export receives."""
    from conftest import random_model

    from step_deploy.frontend import capture
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    model = random_model(arch, 1, depths=1, embed_dim=16, num_heads=2, **over)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(weight_gain)
    return fold_batchnorm(capture(model))


def test_captured_a2os2a_quantizes_and_its_golden_spikes_are_deterministic():
    g = _captured("spikformer-a2os2a-2-64-digits")
    x = 4 * torch.rand(2, *g.inputs[0].shape, generator=torch.Generator().manual_seed(0))
    q, rep = quantize_loihi(g, x, steps=T)
    relu = [n for n in q.nodes.values() if n.op == "ReLU"]
    ternary = [n for n in q.nodes.values() if n.op == "LoihiLIF" and n.fire == "ternary"]
    assert len(relu) == 1 and len(ternary) == 1 and "v_lif" in ternary[0].name
    attn = next(n for n in q.nodes.values() if n.op == "LoihiLIF" and n.name.endswith("attn_lif"))
    k_scale = rep["layers"][relu[0].inputs[0]]["scale"]  # the K synapse's scale, kept through ReLU and the MatMuls
    assert rep["layers"][attn.name]["input_scale"] == k_scale and attn.vth == 0.5 * 2 * k_scale
    a, b = run_golden(q, x, steps=T), run_golden(q, x, steps=T)
    assert a.traces.keys() == b.traces.keys() and all(torch.equal(a.traces[k], b.traces[k]) for k in a.traces)
    assert torch.equal(a.outputs[q.outputs[0].name], b.outputs[q.outputs[0].name]) and rep["saturation_total"] == 0


def test_captured_bsa_at_shiftmax_bits_16_is_refused_naming_its_shiftmax():
    """frac_bits = 16 gives the attention neuron an exact scale 2^20 whose threshold does not fit Loihi's
    17 bits: refused by name with the frac_bits that would (the digits config uses 10: scale 2^14)."""
    g = _captured("spikformer-bsa-2-64-digits", shiftmax_bits=16)
    x = 4 * torch.rand(2, *g.inputs[0].shape, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ir.IRError) as e:
        quantize_loihi(g, x, steps=T)
    (d,) = e.value.diagnostics
    assert d.node.endswith("shiftmax") and "Shiftmax(frac_bits=16)" in d.message and "frac_bits <= " in d.hint


def test_captured_bsa_digits_config_fits_loihi_at_its_frac_bits():
    """The digits config's frac_bits = 10 (16 tokens: exact scale 2^14) quantizes, and the attention
    neuron's threshold carries exactly that scale."""
    g = _captured("spikformer-bsa-2-64-digits")
    x = 4 * torch.rand(2, *g.inputs[0].shape, generator=torch.Generator().manual_seed(0))
    q, rep = quantize_loihi(g, x, steps=T)
    (sm,) = [n for n in q.nodes.values() if n.op == "Shiftmax"]
    assert sm.frac_bits == 10 and sm.out_frac_bits((16, 16)) == 14
    attn = next(n for n in q.nodes.values() if n.op == "LoihiLIF" and n.name.endswith("attn_lif"))
    assert rep["layers"][attn.name]["input_scale"] == 2 ** 14 and rep["saturation_total"] == 0


def test_mesh_counters_of_a_captured_sdt_statten_equal_the_energy_counters_on_golden_traces():
    """SDT with STAtten runs block-major on the mesh, and its membrane shortcuts put the same synapses
    (``proj_conv3``, ``rpe_conv``, the attention's ``proj_conv``) on the cores of every layer that adds
    them: each replica's work is priced on its layer's cores, but the node's synaptic operations per node
    (what ``step-parity`` sums over layers) are booked once, so they equal ``count_graph`` on the golden
    traces, as do the spikes of every layer. Weights x4: every layer fires."""
    from step_deploy.energy.counters import count_graph, needed_traces
    from step_deploy.simulators.cycle.mesh import _prepare, simulate_mesh

    g = _captured("sdt-statten-1-64-digits", weight_gain=4)
    x = 4 * torch.rand(2, *g.inputs[0].shape, generator=torch.Generator().manual_seed(0))
    q, _ = quantize_loihi(g, x, steps=T)
    assert any(n.op == "TemporalBlockSum" for n in q.nodes.values())
    gold = run_golden(q, x, steps=T, record=needed_traces(q))
    counts = count_graph(q, gold.traces, T)
    res = simulate_mesh(q, g, x, steps=T, hardware="loihi2-assumed")
    assert not any(_mismatches({k: gold.traces[k] for k in res.spikes}, res.spikes).values())
    synops: dict = {}
    for lay in res.layers.values():
        for node, n in lay.get("synops_by_node", {}).items():
            synops[node] = synops.get(node, 0) + n
    rows = {r.name: r for r in counts.rows}
    want = {k: int(r.total("synops")) for k, r in rows.items() if r.kind == "synapse" and k in synops}
    assert want and {k: synops[k] for k in want} == want
    assert all(v > 0 for v in want.values()), want  # every synapse sees spikes: the check compares live layers
    spikes = {k: lay["events"]["spikes_out"] for k, lay in res.layers.items() if k in res.spikes}
    assert spikes == {k: int(rows[k].total("spikes")) for k in spikes} and all(spikes.values()), spikes
    plan = _prepare(q, g, "loihi2-assumed", None)[2]
    shared = {e.member for L in plan.layers.values() for e in L.edges if not e.counted}
    assert {"patch_embed.proj_conv3", "patch_embed.rpe_conv", "block.0.attn.proj_conv"} <= shared
    assert int(res.events["synops"].sum()) > sum(synops.values())  # the replicas' work stays priced
