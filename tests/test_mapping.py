"""Tests of passes.map_to_cores and the per-core resource model (targets.memory)."""
import math

import numpy as np
import pytest

from step_deploy import ir
from step_deploy.passes.map_to_cores import map_to_cores
from step_deploy.targets import check_target, diagnostics_table, load_target, report_markdown
from step_deploy.targets.memory import Geometry, fit, list_bits


def spikes_in(shape):
    return ir.Input("x", shape=shape, kind="spikes")


# --------------------------------------------------------------------------- memory model


def test_list_bits_follows_nengo_loihi_bits_per_axon():
    t = load_target("loihi1")
    assert list_bits(1, 8, t) == 64          # 8 + 10 header bits -> one 64-bit word
    assert list_bits(64, 8, t) == 576        # 64*8 + 10 = 522 -> 9 words
    assert list_bits(65, 8, t) == 576 + 64   # a second block of one synapse
    assert list_bits(0, 8, t) == 0


def test_tiny_linear_on_one_core_hand_computed():
    g = ir.Graph([spikes_in((4,)), ir.Linear("fc", ("x",), weight=np.ones((3, 4))),
                  ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])
    m = map_to_cores(g, "loihi1")
    assert len(m.layers) == 1 and not m.off_core
    L = m.layers[0]
    assert (L.name, L.neurons, L.fan_in, L.synapses, L.cores) == ("lif", 3, 4, 12, 1)
    assert L.per_core["in_axons"] == 4 and L.per_core["out_axons"] == 3
    assert L.per_core["memory_bits"] == 4 * 64  # 4 axons x one list of 3 synapses (3*8+10 bits -> 64)
    assert L.binding.startswith("none") and L.synapse_nodes == ["fc"]
    assert (m.total_cores, m.chips, m.neurons, m.synapses) == (1, 1, 3, 12)
    assert m.nodes["fc"]["placement"] == "synapses" and m.nodes["lif"]["placement"] == "core"


def test_tiny_conv_with_batchnorm():
    c = 4
    g = ir.Graph([spikes_in((2, 5, 5)), ir.Conv2d("conv", ("x",), weight=np.ones((c, 2, 3, 3))),
                  ir.BatchNorm("bn", ("conv",), gamma=np.ones(c), beta=np.zeros(c), mean=np.zeros(c), var=np.ones(c)),
                  ir.Neuron("lif", ("bn",)), ir.Output("y", ("lif",))])
    for name in ("loihi1", "loihi2"):
        m = map_to_cores(g, name)
        L = m.layers[0]
        assert (L.neurons, L.fan_in, L.synapses, L.cores) == (36, 18, 648, 1)  # 4x3x3 outputs, 2*3*3 taps
        assert L.per_core["in_axons"] == 50  # every input pixel of both channels
        assert m.nodes["bn"]["placement"] == "folded" and m.nodes["conv"]["layer"] == "lif"
    assert map_to_cores(g, "loihi1").layers[0].stored == 648       # no sharing on Loihi 1
    assert map_to_cores(g, "loihi2").layers[0].stored == 4 * 2 * 9  # one kernel per core (assumption)


def test_weight_sharing_of_a_token_linear():
    g = ir.Graph([spikes_in((8, 16)), ir.Linear("fc", ("x",), weight=np.ones((4, 16))),
                  ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])
    assert map_to_cores(g, "loihi1").layers[0].stored == 8 * 4 * 16
    assert map_to_cores(g, "loihi2").layers[0].stored == 4 * 16


def test_3000_neurons_split_onto_3_loihi1_cores():
    g = ir.Graph([spikes_in((16,)), ir.Linear("fc", ("x",), weight=np.ones((3000, 16))),
                  ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])
    L = map_to_cores(g, "loihi1").layers[0]
    assert L.cores == math.ceil(3000 / 1024) == 3 and L.binding == "neurons"
    assert L.per_core["neurons"] == 1000
    assert map_to_cores(g, "loihi2").layers[0].cores == 1


def test_fit_never_exceeds_a_feasible_limit():
    t = load_target("loihi1")
    g = Geometry("dense", (64, 1536), 384, 64 * 384, shareable=True, in_features=384)
    f = fit([g], t, 8, dest_per_neuron=3)
    assert f.per_core["neurons"] <= 1024 and f.per_core["memory_bits"] <= 1048576
    assert f.per_core["in_axons"] <= 4096 and f.per_core["out_axons"] <= 4096 and not f.infeasible
    assert f.cores >= math.ceil(64 * 1536 / 1024)


def test_fan_in_above_limit_is_reported_not_hidden():
    g = ir.Graph([spikes_in((5000,)), ir.Linear("fc", ("x",), weight=np.ones((10, 5000))),
                  ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])
    L = map_to_cores(g, "loihi1").layers[0]
    assert L.infeasible == ["in_axons"] and L.per_core["in_axons"] == 5000 and L.binding == "in_axons"


# --------------------------------------------------------------------------- non-synaptic nodes


def test_live_matmul_is_off_core_with_expansion_cost():
    b, n, m, k = 2, 4, 8, 4  # q (b, n, m) @ k^T (b, m, k)
    g = ir.Graph([spikes_in((n, b * m))])
    for t in "qk":
        g.add(ir.Linear(t, ("x",), weight=np.ones((b * m, b * m))))
        g.add(ir.Neuron(t + "_lif", (t,)))
        g.add(ir.Reshape(t + "_r", (t + "_lif",), shape=(n, b, m)))
        g.add(ir.Transpose(t + "_h", (t + "_r",), perm=(1, 0, 2)))
    g.add(ir.MatMul("qk", ("q_h", "k_h"), transpose_b=True, scale=0.125))
    g.add(ir.Neuron("attn", ("qk",), v_threshold=0.5))
    g.add(ir.Output("y", ("attn",)))
    mp = map_to_cores(g, "loihi2")
    (o,) = mp.off_core
    assert (o.node, o.placement, o.ops_per_step, o.cost_unit) == ("qk", "embedded/host", b * n * m * k, "AND-popcount ops")
    e = o.expansion
    assert e["neurons"] == b * n * m * k + b * n * k and e["synapses"] == 3 * b * n * m * k
    assert e["cores"] >= 1 and e["possible"] and "coincidence" in e["how"]
    assert mp.nodes["q_r"]["placement"] == "free" and mp.nodes["attn"]["placement"] == "core"
    d = [x for x in check_target(g, "loihi2", mp) if x.rule == "live-spike-product"]
    assert len(d) == 1 and d[0].node == "qk" and d[0].value == b * n * m * k
    assert f"{e['neurons']} neurons, {e['synapses']} synapses, {e['cores']} core(s)" in d[0].hint
    # on Loihi 1 the count Q.K^T reaches its neuron as a graded value: not possible
    g1 = [x for x in check_target(g, "loihi1") if x.rule == "graded-spikes"]
    assert g1 and g1[0].node == "qk" and g1[0].value == math.ceil(math.log2(m + 1))


def test_sdt_style_mul_sum_and_pools():
    c = 8
    g = ir.Graph([spikes_in((c, 4, 4)),
                  ir.MaxPool2d("mp", ("x",), kernel_size=(2, 2), stride=(2, 2)),          # OR of spikes
                  ir.Conv2d("cv", ("x",), weight=np.ones((c, c, 1, 1))),
                  ir.MaxPool2d("mpc", ("cv",), kernel_size=(2, 2), stride=(2, 2)),        # max of currents
                  ir.Neuron("after", ("mpc",)),
                  ir.Flatten("f", ("mp",), start_dim=1), ir.Transpose("tok", ("f",), perm=(1, 0)),  # (4, c)
                  ir.Mul("kv", ("tok", "tok")), ir.Sum("s", ("kv",), axis=0, keepdim=True),
                  ir.Neuron("kv_lif", ("s",)),                                              # Sum fused into it
                  ir.Sum("s2", ("tok",), axis=1), ir.Linear("lin", ("s2",), weight=np.ones((2, 4))),
                  ir.Neuron("l2", ("lin",)),                                                # Sum -> accumulator
                  ir.Mean("gm", ("tok",), axis=0), ir.TemporalMean("tm", ("gm",)),
                  ir.Output("y1", ("after",)), ir.Output("y2", ("kv_lif",)), ir.Output("y3", ("l2",)),
                  ir.Output("y4", ("tm",))])
    m = map_to_cores(g, "loihi2")
    roles = {L.name: L.role for L in m.layers}
    assert roles["mp"] == "or-pool" and m.layer("mp").fan_in == 4
    assert m.nodes["mpc"]["placement"] == "host" and m.nodes["cv"]["layer"] == "cv"  # conv: readout for the host max
    assert m.nodes["s"]["placement"] == "fused" and m.layer("kv_lif").fan_in == 4  # 4 tokens summed
    assert roles["s2"] == "accumulator" and m.layer("s2").payload_in == 1
    assert m.layer("l2").payload_in == 4  # counts 0..8 (8 channels) need 4 bits
    assert m.nodes["kv"]["placement"] == "embedded/host" and m.nodes["tm"]["placement"] == "host"
    assert m.nodes["f"]["how"] == "index remapping in the connectivity"
    d = check_target(g, "loihi2", m)
    off = {x.node: x.severity for x in d if x.rule == "off-core"}
    assert off["mpc"] == "warning" and off["tm"] == "info"  # mid-network vs readout


# --------------------------------------------------------------------------- Spikformer-like


def spikformer_like(n=16, c=32, heads=2, mlp=2):
    rng = np.random.default_rng(0)
    w = lambda o, i: rng.standard_normal((o, i))  # noqa: E731
    d = c // heads
    g = ir.Graph([ir.Input("x", shape=(n, c), kind="spikes")])

    def lin_lif(name, src, o, i, th=1.0):
        g.add(ir.Linear(name, (src,), weight=w(o, i)))
        g.add(ir.BatchNorm(name + "_bn", (name,), gamma=np.ones(o), beta=np.zeros(o), mean=np.zeros(o),
                           var=np.ones(o), axis=-1))
        g.add(ir.Neuron(name + "_lif", (name + "_bn",), v_threshold=th))
        return name + "_lif"

    for t in "qkv":
        s = lin_lif(t, "x", c, c)
        g.add(ir.Reshape(t + "_split", (s,), shape=(n, heads, d)))
        g.add(ir.Transpose(t + "_heads", (t + "_split",), perm=(1, 0, 2)))
    g.add(ir.MatMul("qk", ("q_heads", "k_heads"), transpose_b=True, scale=0.125))
    g.add(ir.MatMul("av", ("qk", "v_heads")))
    g.add(ir.Neuron("attn_lif", ("av",), v_threshold=0.5))
    g.add(ir.Transpose("merge_t", ("attn_lif",), perm=(1, 0, 2)))
    g.add(ir.Reshape("merge", ("merge_t",), shape=(n, c)))
    p = lin_lif("proj", "merge", c, c)
    g.add(ir.Add("res1", ("x", p)))
    h = lin_lif("fc1", "res1", c * mlp, c)
    h = lin_lif("fc2", h, c, c * mlp)
    g.add(ir.Add("res2", ("res1", h)))
    g.add(ir.Output("y", ("res2",)))
    return g


def test_spikformer_like_graph_gets_a_located_answer():
    g = spikformer_like()
    assert not ir.errors(ir.verify(g))
    for name in ("loihi2", "loihi1"):
        m = map_to_cores(g, name)
        layers = {L.name: L for L in m.layers}
        assert set(layers) == {"q_lif", "k_lif", "v_lif", "attn_lif", "proj_lif", "res1", "fc1_lif", "fc2_lif", "res2"}
        assert layers["res1"].role == "adder" and layers["res1"].fan_in == 2
        assert layers["fc2_lif"].fan_in == 64 and layers["fc1_lif"].neurons == 16 * 64
        assert layers["attn_lif"].fan_in == 1 and layers["attn_lif"].payload_in == 9  # counts 0..256
        assert m.total_cores == sum(L.cores for L in m.layers) and m.chips == 1
        assert [o.node for o in m.off_core] == ["qk", "av"]
        assert set(m.nodes) == set(g.nodes)  # every node is placed and explained
        for node, info in m.nodes.items():
            assert info["placement"] in ("core", "synapses", "folded", "fused", "free", "io", "host", "embedded/host")
            assert info["how"]
        diags = check_target(g, name, m)
        rules = {d.rule for d in diags}
        assert "live-spike-product" in rules and "threshold-compare" in rules
        errors = [d for d in diags if d.severity == "error"]
        if name == "loihi2":
            assert not errors
        else:  # binary spikes only: the residual sums and the attention counts cannot travel
            assert sorted(d.node for d in errors) == ["av", "res1"]
            assert all(d.rule == "graded-spikes" for d in errors)
        text = diagnostics_table(diags)
        assert "qk" in text and "av" in text
        assert "## Not on the neuro-cores" in report_markdown(m, diags)


def test_mapping_is_the_same_with_batchnorm_folded():
    from step_deploy.passes.fold_batchnorm import fold_batchnorm

    g = spikformer_like()
    f = fold_batchnorm(g)
    assert "BatchNorm" not in f.op_counts()
    for name in ("loihi2", "loihi1"):
        a, b = map_to_cores(g, name), map_to_cores(f, name)
        assert [(L.name, L.cores, L.synapses) for L in a.layers] == [(L.name, L.cores, L.synapses) for L in b.layers]


def test_captured_spikformer_4_384():
    """The full-size model the CLI checks: 33 LIF layers, N=64, C=384, MLP 1536, analog 3x32x32 input."""
    from step_deploy.frontend.capture import capture
    from step_deploy.models import build_model

    g = capture(build_model("spikformer-4-384").eval())
    assert g.op_counts()["Neuron"] == 33 and "BatchNorm" in g.op_counts()
    m2 = map_to_cores(g, "loihi2")
    neurons_on_cores = [L for L in m2.layers if isinstance(g[L.name], ir.Neuron)]
    assert len(neurons_on_cores) == 33
    assert sum(o.op == "MatMul" for o in m2.off_core) == 8 and m2.chips == math.ceil(m2.total_cores / 128) > 1
    d2 = check_target(g, "loihi2", m2)
    assert not [d for d in d2 if d.severity == "error"]
    assert any(d.rule == "analog-input" for d in d2) and any(d.rule == "cores-per-chip" for d in d2)
    d1 = check_target(g, "loihi1")
    errs = [d for d in d1 if d.severity == "error"]
    assert errs and all(d.rule == "graded-spikes" for d in errs)
    assert sum(isinstance(g[d.node], ir.Add) for d in errs) == 9 and sum(isinstance(g[d.node], ir.MatMul) for d in errs) == 4


@pytest.mark.parametrize("arch", ["sdt-2-512", "qkformer-4-384"])
def test_other_zoo_models_map_and_check(arch):
    """Properties that follow from the architecture and the chip specs, not from the mapper's code."""
    from step_deploy.frontend.capture import capture
    from step_deploy.models import build_model

    g = capture(build_model(arch).eval())
    nodes = list(g.nodes.values())
    products = {n.name for n in nodes if isinstance(n, (ir.MatMul, ir.Mul))}
    neurons = {n.name for n in nodes if isinstance(n, ir.Neuron)}
    # Loihi 1 has 4096 input axons per core: SDT's 3x3 conv over 512 channels needs 4608
    too_wide = {n.name for n in nodes if isinstance(n, ir.Conv2d) and np.prod(n.weight.shape[1:]) > 4096}
    for name in ("loihi2", "loihi1"):
        m = map_to_cores(g, name)
        d = check_target(g, name, m)
        assert set(m.nodes) == set(g.nodes) and m.chips == math.ceil(m.total_cores / 128) > 1
        # a product of two live tensors is not a synapse: it runs off the neuro-cores and is reported
        assert products and products <= {o.node for o in m.off_core}
        assert {x.node for x in d if x.rule == "live-spike-product"} == products
        errors = [x for x in d if x.severity == "error"]
        if name == "loihi2":  # graded spikes, programmable neurons: every neuron layer fits on the cores
            assert not errors and all(m.nodes[n]["placement"] == "core" for n in neurons)
            continue
        assert {x.node for x in errors if x.rule == "fan-in-axons"} == too_wide
        if arch.startswith("qkformer"):  # residual adds of spike maps carry counts; Loihi 1 spikes are 1 bit
            adds = {n.name for n in nodes if isinstance(n, ir.Add)}
            assert adds and adds <= {x.node for x in errors if x.rule == "graded-spikes"}
        else:
            assert too_wide
