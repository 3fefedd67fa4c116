"""The seed attention designs on the FPGA (issue 13, contract §2): ternary LIF (2-bit signed spikes,
synapses after it add or subtract), ReLU (A²OS²A's real K), Shiftmax (bipolar self-attention: shifts,
adds and a leading-zero count) and the window op TemporalBlockSum (STAtten: the generated top runs
block-major) through quantize-fpga, the integer golden model, the generated HLS C++ (one g++ build,
cached by content hash), the resource model and the cycle-level simulator, all bit for bit.

Two hand-built graphs carry every new path: ``float_seed_graph`` (float IR, weights on a 1/4 grid so
that quantization is lossless and IF membranes are exact: golden spikes = float spikes) and
``integer_seed_graph`` (FPGA integer IR with saturating widths and signed 6-bit inputs: the C++
kernels on every branch). The integer model below is written from contract §2 with Python ints."""
import shutil

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.fixedpoint import fpga as fx
from step_deploy.fpga.hls_writer import HlsProject
from step_deploy.fpga.resource_model import DesignModel
from step_deploy.fpga.parts import load_part
from step_deploy.fpga.tensor_types import UnsupportedForFpga, tensor_types
from step_deploy.passes.quantize_fpga import quantize_fpga
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run

T = 4
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
SEED_OPS = ("ReLU", "Shiftmax", "TemporalBlockSum")


# --------------------------------------------------------------------------- graphs


def _grid(r, o, i):
    """Weights in [-1, 1.5] on a 1/4 grid: exact at any synapse scale >= 4."""
    return (r.integers(-4, 7, size=(o, i)) / 4).astype(np.float32)


def float_seed_graph(seed: int = 0, block: int = 2) -> ir.Graph:
    """A²OS²A (binary Q, ReLU'd K, ternary V), BSA (ternary Q/K -> Shiftmax -> · binary V) and
    STAtten (Kᵀ·V summed over blocks of ``block`` steps) side by side on 4 tokens x 6 features."""
    r = np.random.default_rng(seed)
    lin = lambda name, src, o=6, i=6: ir.Linear(name, (src,), weight=_grid(r, o, i), bias=None)  # noqa: E731
    nodes = [
        ir.Input("x", shape=(4, 6), kind="spikes"),
        lin("q_linear", "x"), ir.Neuron("q_lif", ("q_linear",)),
        lin("k_linear", "x"), ir.ReLU("k_relu", ("k_linear",)),
        lin("v_linear", "x"), ir.Neuron("v_lif", ("v_linear",), kind="IF", output="ternary"),
        lin("t_linear", "v_lif"), ir.Neuron("t_lif", ("t_linear",), kind="IF", output="ternary", reset="soft"),
        ir.MatMul("qk", ("q_lif", "k_relu"), transpose_b=True), ir.MatMul("qkv", ("qk", "v_lif")),
        ir.Neuron("a2_lif", ("qkv",), v_threshold=0.5),
        ir.MatMul("score", ("v_lif", "t_lif"), transpose_b=True), ir.Shiftmax("shiftmax", ("score",), frac_bits=4),
        ir.MatMul("pv", ("shiftmax", "q_lif")), ir.Neuron("bsa_lif", ("pv",), v_threshold=0.25),
        ir.MatMul("kv", ("q_lif", "a2_lif"), transpose_a=True),
        ir.TemporalBlockSum("kv_block", ("kv",), block=block),
        ir.MatMul("qkv_st", ("q_lif", "kv_block"), scale=0.25), ir.Neuron("st_lif", ("qkv_st",), v_threshold=0.5),
        ir.Add("r1", ("a2_lif", "bsa_lif")), ir.Add("r2", ("r1", "st_lif")), ir.Flatten("flat", ("r2",), start_dim=0),
        lin("head", "flat", 3, 24), ir.TemporalMean("tm", ("head",)), ir.Output("y", ("tm",)),
    ]
    g = ir.Graph(nodes, {"time_steps": T})
    ir.check(g)
    return g


def _spikes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, n, 4, 6), generator=g) < 0.5).float()


def _w8(r, shape):
    return r.integers(-128, 128, size=shape).astype(np.int8)


def integer_seed_graph(seed: int = 0, block: int = 2) -> ir.Graph:
    """The same three attentions as FPGA integer nodes on signed 6-bit inputs, with widths that
    make every branch of the new kernels happen (ternary hard and soft reset, -1 and +1 spikes,
    Shiftmax terms dropped below -frac_bits, ReLU zeros, ternary x ternary scores)."""
    r = np.random.default_rng(seed)

    def lin(name, src, o=6, i=6):
        return fx.FpgaLinear(name, (src,), weight=_w8(r, (o, i)), shift=np.array([3]), bias=None, acc_bits=18,
                             out_bits=12)

    nodes = [
        ir.Input("x", shape=(4, 6), kind="analog"),
        fx.FpgaQuantizeInput("xq", ("x",), scale=16.0, bits=6, signed=True),
        lin("ql", "xq"), fx.FpgaLIF("q", ("ql",), threshold=40, membrane_bits=12),
        ir.ReLU("k", ("ql",)),  # Q, K and V share one synapse: fewer kernels to compile
        fx.FpgaLIF("v", ("ql",), threshold=30, membrane_bits=12, fire="ternary"),
        lin("tl", "v"), fx.FpgaLIF("v2", ("tl",), threshold=12, membrane_bits=10, fire="ternary", reset="soft",
                                   decay="none"),
        ir.MatMul("qk", ("q", "k"), transpose_b=True), ir.MatMul("qkv", ("qk", "v")),
        fx.FpgaLIF("attn", ("qkv",), threshold=200, membrane_bits=16),
        ir.MatMul("s", ("v", "v2"), transpose_b=True), ir.Shiftmax("p", ("s",), frac_bits=4),
        ir.MatMul("pv", ("p", "q")), fx.FpgaLIF("battn", ("pv",), threshold=24, membrane_bits=12),
        ir.MatMul("kv", ("q", "attn"), transpose_a=True), ir.TemporalBlockSum("m", ("kv",), block=block),
        ir.MatMul("qm", ("q", "m")), fx.FpgaLIF("sattn", ("qm",), threshold=3, membrane_bits=10),
        ir.Output("y", ("sattn",)),  # the other attentions' neurons are traced, not read: a smaller C++ build
    ]
    g = ir.Graph(nodes, {ir.FORMAT_KEY: fx.FORMAT_NAME, "time_steps": T})
    ir.check(g)
    return g


def _analog(n: int, seed: int) -> torch.Tensor:
    return torch.randn((T, n, 4, 6), generator=torch.Generator().manual_seed(seed)) * 1.2


# --------------------------------------------------------------------------- an integer model from contract §2


def ceil_log2(s: int) -> int:
    """The smallest E with 2^E >= s (s >= 1), by doubling."""
    e = 0
    while (1 << e) < s:
        e += 1
    return e


def shiftmax_row(row: list, frac_bits: int) -> list:
    """``a_j = 2^(F + Δ_j)`` (0 below Δ = -F), ``E = ceil(log2 Σ a)``, ``Y_j = a_j << (F + L - E)``."""
    m = max(row)
    a = [1 << (frac_bits + x - m) if x - m >= -frac_bits else 0 for x in row]
    shift = frac_bits + ceil_log2(len(row)) - ceil_log2(sum(a))
    assert shift >= 0
    return [x << shift for x in a]


def ternary_lif(a: np.ndarray, n: fx.FpgaLIF) -> np.ndarray:
    """``FpgaLIF(fire='ternary')`` on the input stream ``a`` (T, ...) with Python ints."""
    lo, hi = fx.signed_bounds(n.membrane_bits)
    theta = int(n.threshold)
    out = np.zeros(a.shape, np.int64)
    flat_in, flat_out = a.reshape(a.shape[0], -1), out.reshape(a.shape[0], -1)
    for i in range(flat_in.shape[1]):
        m = 0
        for t in range(a.shape[0]):
            x = int(flat_in[t, i]) << int(n.input_shift)
            h = (m + x) // 2 if n.decay == "input" else (m // 2 + x) if n.decay == "state" else m + x
            h = min(max(h, lo), hi)
            s = 1 if h >= theta else -1 if h <= -theta else 0
            m = h - s * theta if n.reset == "soft" else (0 if s else h)
            flat_out[t, i] = s
    return out


def block_sum(x: np.ndarray, block: int) -> np.ndarray:
    out = np.zeros_like(x)
    for t0 in range(0, x.shape[0], block):
        out[t0:t0 + block] = x[t0:t0 + block].sum(axis=0, dtype=np.int64)
    return out


def int_matmul(a: np.ndarray, b: np.ndarray, ta=False, tb=False) -> np.ndarray:
    a = np.swapaxes(a, -1, -2) if ta else a
    b = np.swapaxes(b, -1, -2) if tb else b
    return np.einsum("...ik,...kj->...ij", a.astype(object), b.astype(object)).astype(np.int64)


# --------------------------------------------------------------------------- quantize + golden


@pytest.fixture(scope="module")
def quantized():
    g = float_seed_graph()
    x = _spikes(24, 0)
    q, report = quantize_fpga(g, x[:, :16], steps=T)
    return g, q, report, x[:, 16:]


def test_quantize_keeps_the_seed_ops_and_makes_ternary_lifs(quantized):
    g, q, report, _ = quantized
    ops = {n.name: n.op for n in q.nodes.values()}
    assert {ops[k] for k in ("k_relu", "shiftmax", "kv_block")} == set(SEED_OPS)
    for name in ("v_lif", "t_lif"):
        assert q[name].op == "FpgaLIF" and q[name].fire == "ternary" and q[name].spike_bits == 2
        assert report["layers"][name]["negative_side_exact"] is True  # IF: the floor is exact on both sides
    assert q["t_lif"].reset == "soft" and q["q_lif"].fire == "threshold"
    lay = report["layers"]
    assert lay["shiftmax"]["scale"] == 2.0 ** 6 and lay["shiftmax"]["out_frac_bits"] == 6  # F = 4, L = ceil(log2 4)
    assert lay["kv_block"]["latency_steps"] == 1 and lay["kv_block"]["buffer_elements"] == 36
    # the attention thresholds carry the scales: K's synapse scale s_K through ReLU and both MatMuls,
    # the Shiftmax's 2^(F+L), STAtten's 0.25 folded into a count scale of 4
    s_k = lay["k_linear"]["scale"]
    assert lay["k_relu"]["scale"] == s_k and lay["qkv"]["scale"] == s_k
    assert q["a2_lif"].threshold == 0.5 * s_k and q["bsa_lif"].threshold == 0.25 * 2 ** 6
    assert q["st_lif"].threshold == 2 and report["saturation_total"] == 0


def test_golden_spikes_equal_the_float_reference_on_a_lossless_graph(quantized):
    """Weights on a 1/4 grid, IF ternary membranes, integer scores: the only place integer and
    float could differ (weight rounding) is absent, so every spike agrees, including the -1s."""
    g, q, _, x = quantized
    ref = run(g, x, steps=T, record=True)
    gold = run_golden(q, x, steps=T, record=True)
    assert set(gold.traces) == set(ref.traces) and len(gold.traces) == 6
    bad = {k: int((ref.traces[k].to(torch.int64) != v).sum()) for k, v in gold.traces.items()}
    assert all(v == 0 for v in bad.values()), bad
    for k in ("v_lif", "t_lif"):  # both signs occur
        assert (gold.traces[k] == 1).any() and (gold.traces[k] == -1).any(), k
    for k in ("a2_lif", "bsa_lif", "st_lif"):  # the attention neurons carry data
        assert 0.02 < float(gold.traces[k].float().mean()) < 0.98, k


def test_golden_equals_an_integer_model_written_from_the_contract():
    g = integer_seed_graph()
    names = ["ql", "v", "tl", "v2", "k", "q", "qk", "qkv", "s", "p", "kv", "m"]
    tr = {k: v.numpy() for k, v in run_golden(g, _analog(8, 1), record=names).traces.items()}
    want = {
        "v": ternary_lif(tr["ql"], g["v"]), "v2": ternary_lif(tr["tl"], g["v2"]),
        "k": np.maximum(tr["ql"], 0),
        "qk": int_matmul(tr["q"], tr["k"], tb=True), "qkv": int_matmul(tr["qk"], tr["v"]),
        "s": int_matmul(tr["v"], tr["v2"], tb=True),
        "p": np.apply_along_axis(lambda row: np.array(shiftmax_row([int(v) for v in row], 4)), -1, tr["s"]),
        "m": block_sum(tr["kv"], 2),
    }
    mismatches = {k: int((tr[k] != v).sum()) for k, v in want.items()}
    assert mismatches == dict.fromkeys(want, 0), mismatches
    # the data reaches the cases the rules distinguish
    assert (tr["v"] == -1).any() and (tr["v"] == 1).any() and (tr["v2"] == -1).any() and (tr["v2"] == 1).any()
    assert (tr["ql"] < 0).any() and (tr["k"] > 0).any()
    dropped = (tr["s"] - tr["s"].max(axis=-1, keepdims=True)) < -4
    assert dropped.any() and (tr["p"][dropped] == 0).all()
    assert not np.array_equal(tr["m"][0], tr["kv"][0])  # the block sum really sums two steps


# --------------------------------------------------------------------------- HLS C++ and C simulation


def _write(root, proj):
    for rel, data in proj.files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


@pytest.fixture(scope="module")
def csim(tmp_path_factory):
    """The integer seed graph's project, compiled once (the C-simulation cache, keyed by the hash of
    every source byte, makes reruns free)."""
    from step_deploy.fpga.csim import CSimModel

    root = tmp_path_factory.mktemp("seed_prj")
    proj = HlsProject(integer_seed_graph())
    _write(root, proj)
    model = CSimModel(root)
    model.compile()
    return proj, model, root


@needs_gxx
def test_csim_is_bit_exact_with_the_golden_model_on_every_new_kernel(csim):
    from step_deploy.fpga.parity import csim_parity

    proj, model, _ = csim
    p = csim_parity(proj, model, _analog(16, 2))
    ops = {r["op"] for r in p["layers"]}
    assert ops >= {"FpgaLIF", "FpgaLinear", "MatMul", *SEED_OPS}
    bad = [(r["node"], r["mismatches"]) for r in p["layers"] if r["mismatches"]]
    assert bad == [] and p["mismatches"] == 0 and p["outputs_equal"], p["first"]
    assert p["values"] > 20_000 and not getattr(model, "warnings", [])


@needs_gxx
def test_generated_code_uses_2_bit_ternary_streams_signed_adds_and_runs_block_major(csim):
    proj, _, root = csim
    defines = (root / "firmware/defines.h").read_text()
    params = (root / "firmware/parameters.h").read_text()
    top = (root / "firmware/stepd_top.cpp").read_text()
    assert "typedef ap_int<2> n3_t;  // v (FpgaLIF)" in defines and "typedef ap_int<2> n5_t;  // v2 " in defines
    assert "ternary_in = true" in params and "a_ternary = true, b_ternary = true" in params  # tl; v·v2ᵀ
    assert "fire = 3" in params and "frac_bits = 4, log_len = 2, sum_bits = 7" in params
    assert proj.block == 2 and "#define STEPD_B 2" in top and "BLOCKS:" in top and "STEPS:" not in top
    assert "int8_t" in (root / "firmware/weights/n4.h").read_text()  # ternary synapse: int8 weights, no multiplier
    assert "b_n13[STEPD_B * 36]" in top and "stepd::block_sum<cfg_n14>(b_n13 + s * 36, b_n14 + s * 36);" in top
    assert proj.manifest()["block"] == 2


def test_a_graph_without_a_window_op_keeps_the_step_major_top():
    g = integer_seed_graph(block=1)
    proj = HlsProject(g)
    top = proj.files()["firmware/stepd_top.cpp"].decode()
    assert proj.block == 1 and "STEPS:" in top and "STEPD_B" not in top and "block" not in proj.manifest()


def test_a_block_that_does_not_divide_t_is_one_clear_error():
    g = integer_seed_graph(block=3)
    with pytest.raises(UnsupportedForFpga, match=r"node 'm' \(TemporalBlockSum\) sums blocks of 3 steps but the "
                                                 r"design runs T=4: run a T that is a multiple of 3"):
        HlsProject(g)


# --------------------------------------------------------------------------- resources and cycle simulator


def _layers(g):
    m = DesignModel(g, load_part("zcu104"))
    return m, {k: m.layer(k, 1) for k in m.nodes}


def test_resources_count_the_new_kernels_and_the_block_buffers():
    g = integer_seed_graph()
    model, est = _layers(g)
    assert model.block == 2
    assert {est[k].op for k in ("k", "p", "m")} == set(SEED_OPS)
    assert all(est[k].dsp == 0 and est[k].lut > 0 for k in ("k", "p", "m", "tl", "qkv", "s"))
    assert "leading-zero count" in est["p"].model and "latency 1" in est["m"].model
    # a ternary neuron pays its -θ comparator; a synapse after it adder-subtractors instead of a DSP
    binary = ir.Graph([ir.replace(n, fire="threshold") if n.name in ("v", "v2") else n for n in g.topo_order()],
                      g.metadata)
    _, est_b = _layers(binary)
    assert est["v"].lut > est_b["v"].lut and est["v2"].lut > est_b["v2"].lut
    assert est["tl"].dsp == 0 and est_b["tl"].dsp == 0 and est["tl"].lut > est_b["tl"].lut
    # block-major: every buffer holds the block's 2 steps
    tt = tensor_types(g)
    assert all(est[k].buffer_bits == 2 * tt[k].storage_bits for k in est)
    # a finer Shiftmax is a wider datapath
    fine = ir.Graph([ir.replace(n, frac_bits=12) if n.name == "p" else n for n in g.topo_order()], g.metadata)
    assert _layers(fine)[1]["p"].lut > est["p"].lut


@pytest.mark.parametrize("schedule", ["step", "batched"])
def test_cycle_simulator_equals_golden_and_reports_the_window(schedule):
    from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga

    g = integer_seed_graph()
    x = _analog(4, 3)
    gold = run_golden(g, x, record=True)
    res = simulate_fpga(g, x, schedule=schedule, record=True)
    bad = {k: int((res.spikes[k] != v).sum()) for k, v in gold.traces.items()}
    assert len(bad) == 6 and all(v == 0 for v in bad.values()), bad
    assert torch.equal(res.outputs["y"], gold.outputs["y"])
    assert res.hardware["window_block"] == 2 and res.hardware["window_latency_steps"] == 1
    assert any("TemporalBlockSum" in n and "1 step(s)" in n for n in res.notes)
    if schedule == "step":  # the plan's time is the estimate's, its buffers the block-major ones
        from step_deploy.fpga.estimate import estimate

        est = estimate(g, part="zcu104")
        assert res.hardware["latency_cycles"] == est.cycles_per_sample
        assert res.hardware["memory_bits"]["buffers"] == sum(l.buffer_bits for l in est.layers)


def test_cycle_simulator_refuses_a_t_the_block_does_not_divide():
    from step_deploy.errors import UsageError
    from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga

    g = integer_seed_graph()
    x = torch.randn((3, 2, 4, 6))
    with pytest.raises(UsageError, match=r"node 'm' \(TemporalBlockSum\) sums blocks of 2 steps but the inputs "
                                         r"have T=3 steps"):
        simulate_fpga(g, x, schedule="step")


# --------------------------------------------------------------------------- captured tiny random models

#: design -> (the seed op its graph must hold, whether it has ternary neurons). A²OS²A's path (ReLU'd K
#: through both MatMuls, ternary V) is ``float_seed_graph``'s; its captured model is left out for time.
CAPTURED = {"spikformer-statten-2-64-digits": ("TemporalBlockSum", False),
            "spikformer-bsa-2-64-digits": ("Shiftmax", True)}


@pytest.mark.parametrize("arch", sorted(CAPTURED))
def test_captured_seed_model_runs_the_fpga_stages_bit_exact(arch):
    """A random tiny model of each design (H1's digits configs) captured, quantized, run by the golden
    model and the cycle simulator (equal at every spiking node and step) and written as HLS C++ (the
    C simulation of these models is measured outside the suite: 0 mismatches, see the issue notes)."""
    from conftest import random_model

    from step_deploy.data import load_dataset
    from step_deploy.frontend.capture import capture, encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga

    model = random_model(arch)
    data = load_dataset("digits", "train")
    x = torch.stack([data[i][0] for i in range(6)])
    q, report = quantize_fpga(fold_batchnorm(capture(model)), encoded_input(model, x[:4]), steps=model.step,
                              bias_correction=False)
    op, ternary = CAPTURED[arch]
    assert op in {n.op for n in q.nodes.values()}
    assert any(n.op == "FpgaLIF" and n.fire == "ternary" for n in q.nodes.values()) == ternary
    xs = encoded_input(model, x[4:])
    gold = run_golden(q, xs, steps=model.step, record=True)
    sim = simulate_fpga(q, xs, steps=model.step, record=True)
    bad = {k: int((sim.spikes[k] != v).sum()) for k, v in gold.traces.items()}
    assert len(bad) > 10 and all(v == 0 for v in bad.values()), bad
    proj = HlsProject(q)
    assert proj.block == (2 if op == "TemporalBlockSum" else 1)
    assert op in {l.node.op for l in proj.layers}
