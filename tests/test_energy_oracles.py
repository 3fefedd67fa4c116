"""Our energy counters against the field's libraries as oracles (issue 9, ``docs/energy_oracles.md``):
NeuroBench 2.3 (``SynapticOperations``, ``ActivationSparsity``, ``Footprint``,
``ConnectionSparsity``) and SpikingJelly 2.0's ``op_counter`` (its matrix-product rule), run on
the PyTorch models themselves with random weights and digits samples. Where a library counts by
another convention, the test pins the difference by formula; every comparison is shown to
change when one spike or one input changes."""
import functools
import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import random_model
from step_deploy.energy.counters import count_graph
from step_deploy.energy.neurobench_names import (METRICS, activation_sparsity, connection_sparsity, footprint,
                                                 neurobench_metrics, synaptic_operations_by_layer)
from step_deploy.energy.torch_hooks import hook_traces
from step_deploy.frontend.capture import capture
from step_deploy.models.neurons import BaseNeuron

nb_models = pytest.importorskip("neurobench.models")
from neurobench.metrics.utils.layers import single_layer_MACs  # noqa: E402  (after the importorskip)

ARCHS = ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits"]
B = 2  # a power of two: Benchmark.run scales each batch's sparsity by B / len(dataset), exactly


def digits(n=B):
    from step_deploy.data.digits import digits_arrays

    x, y = digits_arrays("test")[:2]
    return torch.from_numpy(x[:n]), torch.from_numpy(y[:n])


def ours(model, x):
    graph = capture(model)
    traces = hook_traces(model, x, graph)
    return graph, traces, count_graph(graph, traces, model.step)


def neurobench_run(model, x):
    """NeuroBench's own wrapper with its hooks on every Conv/Linear and on our neuron modules
    (registered as activation modules), after one forward pass of the raw ``(B, C, H, W)`` input."""
    nb = nb_models.TorchModel(model)
    nb.add_activation_module(BaseNeuron)
    nb.register_hooks()
    with torch.no_grad():
        preds = model(x)
    return nb, preds


def per_layer_neurobench(model, nb):
    """``{module path: (effective, dense, spiking)}`` from NeuroBench's per-layer function on the
    inputs its hooks recorded (modules the forward never runs record nothing and are left out)."""
    names = {m: n for n, m in model.named_modules()}
    out = {}
    for hook in nb.connection_hooks:
        if not hook.inputs:
            continue
        assert len(hook.inputs) == 1, "every Conv/Linear runs once per forward (STEP's (T*B, ...) layout)"
        x = hook.inputs[0][0]
        eff, spiking = single_layer_MACs(x, hook.layer)
        dense, _ = single_layer_MACs(x, hook.layer, total=True)
        out[names[hook.layer]] = (eff, dense, spiking, x)
    return out


@functools.lru_cache(maxsize=None)
def observed(arch):
    """One forward of a random-weight model on ``B`` digits, seen by our hooks and by NeuroBench's
    (shared by the tests below, which only read it; each call of the model adds to NeuroBench's
    hooks, so the model is not run again)."""
    model = random_model(arch)
    x, y = digits()
    graph, traces, counts = ours(model, x)
    nb, preds = neurobench_run(model, x)
    return SimpleNamespace(model=model, x=x, y=y, graph=graph, traces=traces, counts=counts, nb=nb, preds=preds,
                           layers=per_layer_neurobench(model, nb))


def _valid_taps(n_in, n_out, k, s, p, d):
    """Kernel taps that land inside the input, summed over the output positions of one axis."""
    return sum(1 for o in range(n_out) for j in range(k) if 0 <= o * s + j * d - p < n_in)


# --------------------------------------------------------------------------- 1. synaptic operations


@pytest.mark.parametrize("arch", ARCHS)
def test_neurobench_effective_operations_equal_our_synops_layer_by_layer(arch):
    o = observed(arch)
    graph, traces, counts, theirs = o.graph, o.traces, o.counts, o.layers
    rows = {r.name: r for r in counts.of_kind("synapse")}
    assert set(theirs) == set(rows)  # the same Conv/Linear layers, nothing more, nothing less
    mine = synaptic_operations_by_layer(counts, graph, traces)
    for name, (eff, dense, spiking, inp) in theirs.items():
        row = rows[name]
        assert (mine[name].effective, mine[name].dense, mine[name].spiking) == (eff, dense, spiking), name
        if name == "head":  # run once per sample on the mean over T; we count it per step
            src = traces[graph[graph[name].inputs[0]].inputs[0]]  # (T, B, D): the temporal mean's input
            fan_out = graph[name].weight.shape[0]
            assert eff == int((src.mean(0) != 0).sum()) * fan_out
            assert row.total("synops") == int((src != 0).sum()) * fan_out
            assert not spiking  # a mean of spikes over T is fractional: NeuroBench's MACs
            continue
        assert eff == row.total("synops"), f"{name}: NeuroBench {eff} vs ours {row.total('synops')}"
        # NeuroBench: ACs when every input value is -1, 0 or 1; our rows by the graph's value class
        if row.value_class == "binary":
            assert spiking
        elif row.value_class == "real":
            assert not spiking
        else:  # multilevel: NeuroBench's split follows this batch's values
            assert spiking == bool(inp.max() <= 1), name
    if arch.startswith("spikformer"):  # the spike-map residual sums (0..n) are MACs there
        assert any(not theirs[r.name][2] for r in rows.values() if r.value_class == "multilevel")


def test_one_more_input_spike_changes_our_synops_by_its_fan_out():
    """The layer-by-layer comparison can fail: one extra spike into a 3x3 conv (stride 1,
    padding 1) adds 9 outputs x C_out at an inner position, 6 x C_out on an edge."""
    o = observed("sdt-1-64-digits")
    model, graph, traces = o.model, o.graph, o.traces
    eff = o.layers["patch_embed.proj_conv1"][0]
    src = graph["patch_embed.proj_conv1"].inputs[0]
    flipped = dict(traces)
    t = traces[src].clone()
    zeros = (t[0, 0, 0] == 0).nonzero().tolist()
    inner = next((h, w) for h, w in zeros if 0 < h < t.shape[-2] - 1 and 0 < w < t.shape[-1] - 1)
    t[0, 0, 0, inner[0], inner[1]] = 1
    flipped[src] = t
    c_out = graph["patch_embed.proj_conv1"].weight.shape[0]
    again = count_graph(graph, flipped, model.step).row("patch_embed.proj_conv1").total("synops")
    assert again - eff == 9 * c_out


# --------------------------------------------------------------------------- 2. dense counts


@pytest.mark.parametrize("arch", ARCHS)
def test_neurobench_dense_excludes_padding_where_our_dense_macs_include_it(arch):
    """NeuroBench's ``Dense`` sets every input and weight to 1 and convolves: zero padding adds
    nothing. Ours (``dense_macs``, the paper convention) counts every tap of every output. Per
    layer and batch: NeuroBench = T*B * C_out * C_in/groups * prod over axes of the in-bounds taps;
    ours = T*B * C_out * C_in/groups * k_h*k_w * H_out*W_out; the head once per sample (B*in*out)
    against ours per step (T*B*in*out)."""
    o = observed(arch)
    model, graph, counts, theirs = o.model, o.graph, o.counts, o.layers
    shapes = graph.infer_shapes()
    T = model.step
    padded = 0
    for name, (_, dense, _, _) in theirs.items():
        n, row = graph[name], counts.row(name)
        w = n.weight.shape
        if n.op == "Conv2d":
            (_, h, wd), (_, ho, wo) = shapes[n.inputs[0]], shapes[name]
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = w[2:], n.stride, n.padding, n.dilation
            taps = _valid_taps(h, ho, kh, sh, ph, dh) * _valid_taps(wd, wo, kw, sw, pw, dw)
            assert dense == T * B * w[0] * w[1] * taps, name
            assert row.total("dense_macs") == T * B * w[0] * w[1] * kh * kw * ho * wo, name
            padded += row.total("dense_macs") - dense
        elif name == "head":
            assert dense == B * w[1] * w[0] and row.total("dense_macs") == T * dense
        else:  # Linear on tokens, 1x1 Conv1d: no padding, the same count
            assert dense == row.total("dense_macs") == T * B * math.prod(shapes[name]) * w[1] * (
                w[2] if n.op == "Conv1d" else 1), name
    assert padded > 0  # the 3x3 stem convolutions are padded: the two conventions differ there


# --------------------------------------------------------------------------- 3. attention products


class _PerCall:
    """SpikingJelly's ``SynOpCounter`` (matrix products and convolutions whose operand is binary by
    value), Conv/Linear modules ignored, recording every call with its innermost module scope."""

    def __init__(self):
        from spikingjelly.activation_based.op_counter import SynOpCounter

        class PerCall(SynOpCounter):
            def __init__(self):
                super().__init__(extra_ignore_modules=[nn.Linear, nn.Conv1d, nn.Conv2d])
                self.calls = []

            def count(self, func, args, kwargs, out, active_modules=None, parent_names=None):
                v = super().count(func, args, kwargs, out, active_modules=active_modules,
                                  parent_names=parent_names)
                self.calls.append((max(parent_names, key=len), v))
                return v

        self.counter = PerCall()


@functools.lru_cache(maxsize=None)
def spikingjelly_run(arch):
    """One forward of a fresh random-weight model under SpikingJelly's dispatch mode:
    ``(attention calls [(module path, SynOps)] in call order, {module path: SynOps}`` of a plain
    ``SynOpCounter`` for every scope), with the model, its input and our counts of the same run."""
    op_counter = pytest.importorskip("spikingjelly.activation_based.op_counter")
    model = random_model(arch)
    x, _ = digits()
    attention, plain = _PerCall().counter, op_counter.SynOpCounter()
    with torch.no_grad(), op_counter.DispatchCounterMode([attention, plain]):
        model(x)
    root = type(model).__name__ + "."
    calls = [(scope[len(root):], v) for scope, v in attention.calls]
    scopes = {scope[len(root):]: sum(d.values()) for scope, d in plain.get_counts().items() if scope.startswith(root)}
    graph, traces, counts = ours(model, x)
    return SimpleNamespace(calls=calls, scopes=scopes, model=model, x=x, graph=graph, traces=traces, counts=counts)


def _binary(t):
    return bool(((t == 0) | (t == 1)).all())


@pytest.mark.parametrize("arch", ["spikformer-2-64-digits", "qkformer-3-64-digits", "sdt-1-64-digits",
                                  "qkformer-2-64-digits"])
def test_spikingjelly_matrix_product_rule_on_the_attention_matmuls(arch):
    """Every attention MatMul, call by call. Both operands spikes: SpikingJelly counts the sum of
    the product (the coincidences) -- equal to our coincidences and accumulates. One operand
    multi-level (Spikformer's ``(Q Kᵀ)*s @ V``, QKFormer's ``Q @ (Kᵀ V)``): SpikingJelly counts
    every spike of the binary operand times the other's full row/column length, zeros included;
    we count only the pairs whose other operand is non-zero:
    ours = sum_k nnz(A[:, k]) * nnz(B[k, :]) <= SpikingJelly's. Elementwise products (SDT, QKFormer's
    token attention) have no SpikingJelly rule: they record nothing."""
    sj_run = spikingjelly_run(arch)
    graph, traces, counts, calls = sj_run.graph, sj_run.traces, sj_run.counts, sj_run.calls
    matmuls = [r for r in counts.of_kind("product") if r.op == "MatMul"]
    assert [scope for scope, _ in calls] == [r.name.rsplit(".", 1)[0] for r in matmuls]
    if arch.startswith("sdt") or arch == "qkformer-2-64-digits":
        assert calls == [] and any(r.op == "Mul" for r in counts.of_kind("product"))
        return
    for row, (_, sj) in zip(matmuls, calls):
        n = graph[row.name]
        a, b = (traces[i].flatten(0, 1) for i in n.inputs)  # (T*B, heads, ., .): what the model multiplies
        a = a.transpose(-1, -2) if n.transpose_a else a
        b = b.transpose(-1, -2) if n.transpose_b else b
        pairs = int(((a != 0).double() @ (b != 0).double()).sum())
        assert row.total("coincidences") == row.total("accumulates") == pairs
        if _binary(a) and _binary(b):
            assert sj == pairs, row.name
        elif _binary(b):
            assert sj == int((b != 0).sum()) * a.shape[-2] >= pairs, row.name
        else:
            assert _binary(a) and sj == int((a != 0).sum()) * b.shape[-1] >= pairs, row.name
    assert any(r.value_class == "binary*binary" and r.total("coincidences") > 0 for r in matmuls)


def test_one_more_query_spike_changes_the_coincidences_by_the_keys_it_meets():
    sj_run = spikingjelly_run("spikformer-2-64-digits")
    model, graph, traces, counts = sj_run.model, sj_run.graph, sj_run.traces, sj_run.counts
    sj = dict(sj_run.calls[:1])["block.0.attn"]
    assert counts.row("block.0.attn.qk").total("coincidences") == sj
    q, k = (traces[i] for i in graph["block.0.attn.qk"].inputs)  # (T, B, heads, N, d); qk = q @ kᵀ
    live = (k != 0).sum(-2)  # (T, B, heads, d): key spikes per channel
    t, b, h, n, j = next(idx for idx in (q == 0).nonzero().tolist() if live[idx[0], idx[1], idx[2], idx[4]] > 0)
    q = q.clone()
    q[t, b, h, n, j] = 1
    flipped = dict(traces, **{graph["block.0.attn.qk"].inputs[0]: q})
    again = count_graph(graph, flipped, model.step).row("block.0.attn.qk").total("coincidences")
    assert again - sj == int(live[t, b, h, j]) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_spikingjelly_synops_of_conv_and_linear_count_only_inputs_that_are_spikes_by_value(arch):
    """SpikingJelly's ``SynOpCounter`` on every Conv/Linear: our synops where the input is 0/1 by
    value; 0 where it is not -- the analog first layer, Spikformer's and QKFormer's multi-level
    residual sums, the head on the temporal mean: those operations are not SynOps there at all."""
    sj_run = spikingjelly_run(arch)
    graph, traces, counts = sj_run.graph, sj_run.traces, sj_run.counts
    zero = []
    for row in counts.of_kind("synapse"):
        src = graph[graph[row.name].inputs[0]]
        x = traces[src.inputs[0]].mean(0) if src.op == "TemporalMean" else traces[src.name]
        if _binary(x):
            assert sj_run.scopes[row.name] == row.total("synops"), row.name
        else:
            assert sj_run.scopes[row.name] == 0 and row.total("synops") > 0, row.name
            zero.append(row.value_class)
    assert "real" in zero  # the first layer at least
    assert ("multilevel" in zero) == (not arch.startswith("sdt"))


# --------------------------------------------------------------------------- 4. activation sparsity


@pytest.mark.parametrize("arch", ARCHS)
def test_neurobench_activation_sparsity_is_one_minus_our_firing_rate(arch):
    from neurobench.metrics.workload import ActivationSparsity

    o = observed(arch)
    model, x, y, graph, traces, counts, nb, preds = o.model, o.x, o.y, o.graph, o.traces, o.counts, o.nb, o.preds
    names = {m: n for n, m in model.named_modules()}
    ran = [h for h in nb.activation_hooks if h.activation_outputs]
    neurons = counts.of_kind("neuron")
    assert sorted(names[h.layer] for h in ran) == sorted(r.name for r in neurons)  # the same neuron set
    # NeuroBench's integers, read from its hooks, equal ours
    spikes = sum(int(torch.count_nonzero(o)) for h in ran for o in h.activation_outputs)
    total = sum(o.numel() for h in ran for o in h.activation_outputs)
    assert spikes == sum(r.total("spikes") for r in neurons)
    assert total == sum(r.size for r in neurons) * model.step * B
    # and its float: one spike moves the fraction by 1/total >> one ulp, so equal floats are equal fractions
    sparsity = ActivationSparsity()(nb, preds, (x, y))
    assert sparsity == float(Fraction(total - spikes, total)) == activation_sparsity(counts)
    first = neurons[0].name
    flipped = dict(traces)
    t = traces[first].clone()
    t.view(-1)[(t.view(-1) == 0).nonzero()[0]] = 1
    flipped[first] = t
    assert activation_sparsity(count_graph(graph, flipped, model.step)) == float(Fraction(total - spikes - 1, total))


# --------------------------------------------------------------------------- our NeuroBench-named metrics


def _neurobench_benchmark(model, x, y):
    from torch.utils.data import DataLoader, TensorDataset

    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations

    nb = nb_models.TorchModel(model)
    nb.add_activation_module(BaseNeuron)
    bench = Benchmark(nb, DataLoader(TensorDataset(x, y), batch_size=len(x)), [], [],
                      [[Footprint, ConnectionSparsity], [SynapticOperations, ActivationSparsity]])
    return bench.run(quiet=True)


def _outside_the_graph_bytes(model, graph):
    """Bytes NeuroBench's Footprint counts that no graph array holds: training-only buffers
    (``num_batches_tracked``, surrogate constants), modules the forward never runs, and the neurons'
    scalar parameters (a threshold ``nn.Parameter`` is a field of the ``Neuron`` node, not an array)."""
    assert not any(n.arrays() for n in graph.nodes.values() if n.op == "Neuron")
    total = 0
    for k, v in model.state_dict().items():
        owner = k.rsplit(".", 1)[0]
        if owner not in graph.nodes or k.endswith("num_batches_tracked") or graph[owner].op == "Neuron":
            total += v.numel() * v.element_size()
    return total


@pytest.mark.parametrize("arch", ARCHS)
def test_our_neurobench_metrics_equal_what_neurobench_reports(arch):
    model = random_model(arch)
    x, y = digits()
    graph, traces, counts = ours(model, x)
    theirs = _neurobench_benchmark(model, x, y)
    mine = neurobench_metrics(counts, graph, traces)
    assert set(METRICS) <= set(theirs) and set(METRICS) <= set(mine)
    assert mine["SynapticOperations"] == theirs["SynapticOperations"]
    assert mine["ActivationSparsity"] == theirs["ActivationSparsity"]
    assert mine["ConnectionSparsity"] == theirs["ConnectionSparsity"] == 0.0  # random weights: none is zero
    assert theirs["Footprint"] - mine["Footprint"] == _outside_the_graph_bytes(model, graph) > 0
    assert mine["notes"] == []
    # without traces: the head per step and the split by value class; the rest unchanged
    plain = neurobench_metrics(counts, graph)
    assert plain["SynapticOperations"]["Dense"] == theirs["SynapticOperations"]["Dense"]
    assert plain["ActivationSparsity"] == theirs["ActivationSparsity"] and len(plain["notes"]) == 2
    total = sum(plain["SynapticOperations"][k] for k in ("Effective_MACs", "Effective_ACs"))
    head = synaptic_operations_by_layer(counts, graph, traces)["head"].effective
    assert total - sum(theirs["SynapticOperations"][k] for k in ("Effective_MACs", "Effective_ACs")) == (
        counts.row("head").total("synops") - head) / B


@pytest.mark.parametrize("arch", ["spikformer-2-64-digits", "sdt-1-64-digits"])
def test_connection_sparsity_of_a_pruned_model(arch):
    """Zero a third of three layers' weights: NeuroBench counts every Conv/Linear module's weights,
    also those the forward never runs (SDT's ``talking_heads``), which the graph does not hold."""
    from neurobench.metrics.static import ConnectionSparsity

    model = random_model(arch)
    gen = torch.Generator().manual_seed(1)
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        for m in linears[1:4]:
            m.weight[torch.rand(m.weight.shape, generator=gen) < 1 / 3] = 0
    graph = capture(model)
    theirs = ConnectionSparsity()(nb_models.TorchModel(model))
    mine = connection_sparsity(graph)
    assert mine > 0.01
    unused = [m for n, m in model.named_modules() if m in linears and n not in graph.nodes]
    synapses = [np.asarray(n.weight) for n in graph.nodes.values() if n.op in ("Conv2d", "Conv1d", "Linear")]
    zeros, weights = sum(int((w == 0).sum()) for w in synapses), sum(w.size for w in synapses)
    extra_zeros = sum(int((m.weight == 0).sum()) for m in unused)
    extra = sum(m.weight.numel() for m in unused)
    assert mine == round(zeros / weights, 4)
    assert theirs == round((zeros + extra_zeros) / (weights + extra), 4)
    assert (theirs == mine) == (not unused)


def test_neurobench_skips_zero_weights_where_our_synops_count_the_fan_out():
    """A pruned Linear: NeuroBench's effective operations are the (non-zero input, non-zero weight)
    pairs; our synops (and the energy models' weight reads) count every output a non-zero input
    reaches. The two agree exactly when no weight is zero."""
    from step_deploy import ir

    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # (T*B = 2, 3) spikes
    eff, spiking = single_layer_MACs(x, lin)
    g = ir.Graph([ir.Input("x", (), shape=(3,), kind="spikes"),
                  ir.Linear("fc", ("x",), weight=w.numpy(), bias=None), ir.Output("o", ("fc",))])
    synops = count_graph(g, {"x": x.reshape(2, 1, 3)}, 2).row("fc").total("synops")
    assert spiking and synops == 4 * 2
    assert eff == int(((x != 0).float() @ (w != 0).float().T).sum()) == 3


def test_neurobench_metrics_without_the_traces_the_counts_came_from_is_an_error_naming_the_node():
    from step_deploy.energy.counts import CountError

    o = observed("sdt-1-64-digits")
    partial = {k: v for k, v in o.traces.items() if k != "head_lif"}
    with pytest.raises(CountError, match="no trace of node 'head_lif' \\(the input of 'head'\\)"):
        neurobench_metrics(o.counts, o.graph, partial)
    assert footprint(o.graph) == neurobench_metrics(o.counts, o.graph)["Footprint"]
