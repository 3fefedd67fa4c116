"""The generated HLS C++ against the integer golden model, element by element: every kernel on
random inputs that hit its saturation edges, the top's per-sample reset, the testbench, the CLI
end to end (``--csim``), clear errors for what cannot work, and (slow) the three trained digits
architectures on the whole test set and the full-size Spikformer."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.fixedpoint import fpga as fx
from step_deploy.fpga.csim import CSimError, CSimModel
from step_deploy.fpga.hls_writer import HlsProject
from step_deploy.fpga.parity import compare, csim_parity, golden_run
from step_deploy.fpga.tensor_types import UnsupportedForFpga
from step_deploy.simulators.golden import run_golden

from conftest import random_model

T = 4
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
pytestmark = needs_gxx


def _w(rng, shape, lo=-128, hi=128):
    w = rng.integers(lo, hi, size=shape)
    w.reshape(-1)[:2] = (-128, 127)  # the int8 extremes, always
    return w.astype(np.int8)


def kernel_graph(seed: int = 0) -> ir.Graph:
    """One graph with every kernel the writer emits, sized so that every saturation the format
    defines happens on random inputs (input clip, accumulator, synapse output, membrane, readout)."""
    r = np.random.default_rng(seed)
    nodes = [
        ir.Input("x", shape=(2, 6, 6), kind="analog"),
        fx.FpgaQuantizeInput("xq", ("x",), scale=64.0, bits=8, signed=False),
        # first layer: multiplies on 8-bit pixels, per-channel shifts of both signs, saturating accumulator
        fx.FpgaConv2d("c1", ("xq",), weight=_w(r, (4, 2, 3, 3)), shift=np.array([0, 3, 7, -1]),
                      bias=r.integers(-5000, 5000, 4), acc_bits=17, out_bits=12, padding=(1, 1)),
        fx.FpgaLIF("l1", ("c1",), threshold=300, membrane_bits=12),
        fx.FpgaLIF("l1b", ("c1",), threshold=900, membrane_bits=12, decay="state"),
        ir.Mul("and1", ("l1", "l1b")),  # spike AND spike
        # gated accumulate on spikes, stride 2, grouped, small widths
        fx.FpgaConv2d("c2", ("and1",), weight=_w(r, (6, 2, 3, 3)), shift=np.array([1, 2, 0, 3, 1, 0]),
                      bias=None, acc_bits=9, out_bits=8, padding=(1, 1), stride=(2, 2), groups=2),
        fx.FpgaLIF("l2", ("c2",), threshold=20, membrane_bits=8, decay="state"),
        ir.MaxPool2d("mp", ("l1",), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
        ir.Flatten("fl", ("mp",), start_dim=1),
        ir.Transpose("tok", ("fl",), perm=(1, 0)),  # (9 tokens, 4 features)
        fx.FpgaLinear("lin", ("tok",), weight=_w(r, (8, 4)), shift=np.array([2]), bias=r.integers(-300, 300, 8),
                      acc_bits=10, out_bits=9),
        fx.FpgaLIF("l3", ("lin",), threshold=5, membrane_bits=9, decay="none", input_shift=1),
        ir.Reshape("split", ("l3",), shape=(9, 2, 4)),
        ir.Transpose("heads", ("split",), perm=(1, 0, 2)),  # (2 heads, 9, 4)
        ir.MatMul("qk", ("heads", "heads"), transpose_b=True),  # AND + popcount
        ir.MatMul("qkv", ("qk", "heads")),  # counts x spikes
        ir.Sum("col", ("qkv",), axis=1, keepdim=True),  # (2, 1, 4)
        ir.Mul("mask", ("heads", "col")),  # broadcast, spikes x counts
        ir.Add("res", ("mask", "qkv")),
        fx.FpgaLIF("l4", ("res",), threshold=40, membrane_bits=7),
        ir.Reshape("seq", ("l4",), shape=(2, 36)),
        fx.FpgaConv1d("c3", ("seq",), weight=_w(r, (3, 2, 3)), shift=np.array([0, 1, 2]), bias=None,
                      acc_bits=12, out_bits=10, padding=1),
        fx.FpgaLIF("l5", ("c3",), threshold=60, membrane_bits=10),
        ir.Sum("count", ("l5",), axis=1),  # (3,) counts 0..36
        fx.FpgaLinear("head", ("count",), weight=_w(r, (5, 3)), shift=np.array([0]), bias=None, acc_bits=16,
                      out_bits=12),
        fx.FpgaTemporalSum("ro", ("head",), bits=9),
        ir.Output("y", ("ro",)),
    ]
    g = ir.Graph(nodes, {ir.FORMAT_KEY: fx.FORMAT_NAME, "time_steps": T})
    ir.check(g)
    return g


def write_files(root, proj):
    for rel, data in proj.files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((T, n, 2, 6, 6), generator=g) * 4.5  # up to 288 > 255: the input clips


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """The kernel graph's project, compiled once with a fresh cache (so the build really runs)."""
    root = tmp_path_factory.mktemp("kernels")
    old = os.environ.get("STEP_DEPLOY_CACHE")
    os.environ["STEP_DEPLOY_CACHE"] = str(root / "cache")
    try:
        proj = HlsProject(kernel_graph())
        write_files(root / "prj", proj)
        model = CSimModel(root / "prj")
        model.compile()
    finally:
        if old is None:
            del os.environ["STEP_DEPLOY_CACHE"]
        else:
            os.environ["STEP_DEPLOY_CACHE"] = old
    return proj, model


def test_every_kernel_is_bit_exact_with_the_golden_op_including_saturation(kernels):
    proj, model = kernels
    x = _inputs(24, 1)
    ev = run_golden(proj.graph, x, events=True, record=()).events
    for node, event in [("xq", "input_clip"), ("c1", "acc_overflow"), ("c1", "out_sat"), ("c2", "acc_overflow"),
                        ("c2", "out_sat"), ("l1b", "membrane_sat"), ("l3", "membrane_sat"), ("l4", "membrane_sat"),
                        ("ro", "readout_sat")]:
        assert ev[node].get(event, 0) > 0, f"the test data must reach {event} in {node}"
    p = csim_parity(proj, model, x)
    kinds = {r["op"] for r in p["layers"]}
    assert kinds >= {"FpgaConv2d", "FpgaConv1d", "FpgaLinear", "FpgaLIF", "FpgaTemporalSum", "MatMul", "Mul", "Add",
                     "Sum", "MaxPool2d", "Transpose"}
    assert p["values"] > 50_000
    bad = [(r["node"], r["mismatches"]) for r in p["layers"] if r["mismatches"]]
    assert bad == [] and p["mismatches"] == 0 and p["outputs_equal"], p["first"]
    _, golden, _ = golden_run(proj, x)
    for name in ("l1", "l1b", "l2", "l3", "l4", "l5"):  # neither silent nor saturated: the spikes carry data
        assert 0.02 < golden[name].mean() < 0.98, name


def test_one_flipped_value_is_counted_and_located(kernels):
    """The comparison itself can fail: flip one spike of the C simulation's trace."""
    proj, model = kernels
    x = _inputs(3, 2)
    xin, golden, _ = golden_run(proj, x)
    res = model.predict(xin)
    res.traces["l3"][2, 1, 4, 5] ^= 1
    cmp = compare(proj, res.traces, golden)
    assert cmp["mismatches"] == 1
    assert cmp["first"] == {"node": "l3", "step": 2, "sample": 1, "index": [4, 5],
                            "golden": int(golden["l3"][2, 1, 4, 5]), "csim": int(res.traces["l3"][2, 1, 4, 5])}


def test_top_resets_all_state_at_every_sample(kernels):
    """Two different samples in a row give what each gives alone (no state leaks between calls)."""
    proj, model = kernels
    xin, _, _ = golden_run(proj, _inputs(2, 3))
    both = model.predict(xin, threads=1)  # one thread: the second call really follows the first
    first, second = model.predict(xin[:1], threads=1), model.predict(xin[1:], threads=1)
    assert not np.array_equal(first.outputs, second.outputs)
    for name, v in both.traces.items():
        assert np.array_equal(v[:, :1], first.traces[name]) and np.array_equal(v[:, 1:], second.traces[name]), name
    again = model.predict(xin[1:], threads=1)  # and the same sample twice in a row
    assert all(np.array_equal(again.traces[k], second.traces[k]) for k in again.traces)
    xs, _, _ = golden_run(proj, _inputs(7, 4))
    one, three = model.predict(xs, threads=1), model.predict(xs, threads=3)  # samples shared out over threads
    assert np.array_equal(one.outputs, three.outputs)
    assert all(np.array_equal(one.traces[k], three.traces[k]) for k in one.traces)


def test_generated_code_compiles_without_warnings_and_is_deterministic(kernels):
    proj, model = kernels
    assert model.warnings == []
    assert HlsProject(kernel_graph()).files() == proj.files()
    other = HlsProject(kernel_graph(seed=1)).files()
    assert other["firmware/weights/n0.h"] != proj.files()["firmware/weights/n0.h"]
    top = proj.files()["firmware/stepd_top.cpp"].decode()
    code = [l for f, v in proj.files().items() if f.startswith("firmware/") and "weights/" not in f
            for l in v.decode().splitlines() if not l.lstrip().startswith("//")]
    assert not [l for l in code if "static" in l and "static const" not in l], "no static state anywhere"
    assert "RESET:" in top and top.index("RESET:") < top.index("STEPS:")
    defines = proj.files()["firmware/defines.h"].decode()
    assert "typedef ap_uint<1> n1_t;  // l1 " in defines  # spikes are one bit
    assert "typedef ap_uint<3> n11_t;  // qk " in defines  # AND-popcount over 4 features: 0..4


def test_a_node_without_fpga_kernel_is_named():
    g = ir.Graph([ir.Input("x", shape=(2, 4, 4), kind="spikes"), ir.AvgPool2d("pool", ("x",)),
                  ir.Output("y", ("pool",))], {ir.FORMAT_KEY: fx.FORMAT_NAME, "time_steps": 2})
    with pytest.raises(UnsupportedForFpga, match="node 'pool': op AvgPool2d is not supported by backend 'fpga-hls'"):
        HlsProject(g)
    with pytest.raises(UnsupportedForFpga, match="not in the 'fpga-int' format"):
        HlsProject(ir.Graph([ir.Input("x", shape=(2,)), ir.Output("y", ("x",))], {"time_steps": 2}))


def test_a_compile_error_is_one_clear_error_with_the_log(kernels, tmp_path, monkeypatch):
    proj, _ = kernels
    monkeypatch.setenv("STEP_DEPLOY_CACHE", str(tmp_path / "cache"))
    write_files(tmp_path, proj)
    top = tmp_path / "firmware" / "stepd_top.cpp"
    top.write_text(top.read_text().replace("stepd::lif<", "stepd::no_such_kernel<", 1))
    with pytest.raises(CSimError, match="g\\+\\+ could not compile the generated project .*no_such_kernel.*"
                                        "full log in .*csim_build.log"):
        CSimModel(tmp_path).compile()
    assert (tmp_path / "csim_build.log").is_file()
    monkeypatch.setenv("CXX", "no-such-g++")
    with pytest.raises(CSimError, match="C\\+\\+ compiler 'no-such-g\\+\\+' not found: install g\\+\\+"):
        CSimModel(tmp_path).compile()


@pytest.mark.slow
def test_the_testbench_reports_zero_mismatches_per_layer_and_catches_a_wrong_expectation(kernels, tmp_path):
    from step_deploy.fpga.parity import write_tb_data

    proj, _ = kernels
    write_files(tmp_path, proj)
    xin, golden, _ = golden_run(proj, _inputs(3, 5))
    write_tb_data(tmp_path / "tb_data", proj, xin, golden)
    import sys
    make = subprocess.run(["make", "-s", "csim", f"PYTHON={sys.executable}"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert make.returncode == 0, make.stdout + make.stderr
    assert "warning" not in make.stderr
    assert "C simulation vs golden: 0 mismatches in" in make.stdout
    golden["l3"][1, 0, 0, 0] ^= 1
    write_tb_data(tmp_path / "tb_data", proj, xin, golden)
    run = subprocess.run(["./tb/stepd_tb", "tb_data"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1 and "C simulation vs golden: 1 mismatches in" in run.stdout
    assert [l.split() for l in run.stdout.splitlines() if l.startswith("l3 ")] == [["l3", "1"]]


# --------------------------------------------------------------------------- step-export --target fpga


@pytest.fixture(scope="module")
def sdt_ckpt(tmp_path_factory):
    from step_deploy.frontend.checkpoint import save_checkpoint

    p = tmp_path_factory.mktemp("ck") / "model.ckpt"
    save_checkpoint(random_model("sdt-1-64-digits"), p, metadata={"dataset": "digits"})
    return p


def test_export_fpga_with_csim_is_bit_exact_and_byte_identical(sdt_ckpt, tmp_path, capsys):
    from step_deploy.cli import export_main

    out = tmp_path / "fpga"
    args = [str(sdt_ckpt), "--target", "fpga", "-o", str(out), "--csim", "3", "--samples", "8", "--calib-samples", "32"]
    assert export_main(args) == 0
    printed = capsys.readouterr().out
    assert "C simulation parity: 0 mismatches in" in printed and "3 samples x" in printed
    for f in ("firmware/stepd_top.cpp", "firmware/defines.h", "firmware/parameters.h", "tb/stepd_tb.cpp",
              "tb_data/input.dat", "tb_data/expected.dat", "build_prj.tcl", "Makefile", "README.md", "report.md",
              "report.json", "estimate.json", "quantization.json", "summary.json", "project.json", "csim_bridge.cpp"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "report.json").read_text())
    assert rep["csim"]["mismatches"] == 0 and rep["csim"]["values"] > 100_000 and rep["csim"]["samples"] == 3
    assert rep["csim"]["csim_accuracy"] == rep["csim"]["golden_accuracy"]
    assert rep["estimate"]["fits"] and rep["part"] == "zcu104"
    md = (out / "report.md").read_text()
    assert "| layer | op | type | values | mismatches |" in md and "estimate" in md.lower()
    assert "xczu7ev-ffvc1156-2-e" in (out / "build_prj.tcl").read_text()
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert export_main(args) == 0  # the second build comes from the cache
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first == again, "same checkpoint and flags must give byte-identical files"


@pytest.mark.slow  # a g++ build and an export (about 20 s); make test runs it
def test_event_count_inputs_run_in_the_c_simulation(tmp_path, capsys):
    """digits-events feeds ON/OFF event counts (0..5 per pixel and step) straight into the first
    synapse: the top's input type holds the calibration range quantize-fpga sized the accumulators
    for (it was ap_uint<1> [0, 0], the analog placeholder, and every event sample was refused)."""
    from step_deploy.cli import export_main
    from step_deploy.frontend.checkpoint import save_checkpoint
    from step_deploy.training import model_overrides_for

    ckpt = tmp_path / "events.ckpt"
    save_checkpoint(random_model("spikformer-2-64-digits", **model_overrides_for("digits-events", None)), ckpt,
                    metadata={"dataset": "digits-events"})
    out = tmp_path / "fpga"
    assert export_main([str(ckpt), "--target", "fpga", "-o", str(out), "--csim", "3", "--samples", "8",
                        "--calib-samples", "32"]) == 0
    assert "C simulation parity: 0 mismatches in" in capsys.readouterr().out
    inp = json.loads((out / "project.json").read_text())["input"]
    assert inp["lo"] == 0 and inp["hi"] >= 2 and inp["ctype"].startswith("ap_uint<")


def test_check_only_prints_the_fit_table_and_fails_on_a_too_small_part(sdt_ckpt, tmp_path, capsys):
    from step_deploy.cli import export_main

    small = tmp_path / "tiny.yaml"
    small.write_text("extends: zcu104\nname: tiny\nlimits:\n  bram36_blocks: 4\n  dsp_slices: 2\n")
    base = [str(sdt_ckpt), "--target", "fpga", "--samples", "8", "--calib-samples", "32"]
    assert export_main(base + ["--check-only"]) == 0
    assert "Fits the part." in capsys.readouterr().out
    assert export_main(base + ["--check-only", "--part", str(small)]) == 1
    assert "bram36" in capsys.readouterr().out.lower()
    out = tmp_path / "out"
    assert export_main(base + ["-o", str(out), "--part", str(small)]) == 1
    err = capsys.readouterr().err
    assert "does not fit tiny" in err and "largest user" in err and "Nothing written" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_missing_compiler_is_a_usage_error_before_any_work(sdt_ckpt, tmp_path, capsys, monkeypatch):
    from step_deploy.cli import export_main

    monkeypatch.setenv("CXX", "no-such-g++")
    out = tmp_path / "out"
    assert export_main([str(sdt_ckpt), "--target", "fpga", "-o", str(out), "--csim", "1"]) == 2
    err = capsys.readouterr().err
    assert "C++ compiler 'no-such-g++' not found" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# --------------------------------------------------------------------------- trained and full-size models


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-2-64-digits"])
def test_trained_digits_models_are_bit_exact_in_c_simulation_on_the_whole_test_set(arch, fpga_digits, tmp_path):
    """Issue criterion: every layer at every step equal, and csim accuracy equal to golden accuracy
    on all 360 digits test samples (the quantized graph is the one test_quantize_fpga's accuracy
    test measures: ``fpga_digits`` in conftest quantizes each architecture once per session)."""
    from step_deploy.data import load_dataset
    from step_deploy.frontend.capture import encoded_input

    model, qgraph, _, _ = fpga_digits(arch)
    x, y = load_dataset("digits", "test").tensors[:2]
    proj = HlsProject(qgraph)
    write_files(tmp_path, proj)
    p = csim_parity(proj, CSimModel(tmp_path), encoded_input(model, x), y)
    assert p["samples"] == 360 and p["layers_compared"] == len(proj.layers)
    assert p["mismatches"] == 0 and p["outputs_equal"], (arch, p["first"])
    assert p["csim_accuracy"] == p["golden_accuracy"] > 0.9



def test_a_layer_the_fpga_cannot_emit_is_a_one_line_error_and_nothing_is_written(sdt_ckpt, tmp_path, capsys,
                                                                               monkeypatch):
    import dataclasses

    from step_deploy.cli import export_main
    from step_deploy.fpga import hls_writer

    without_pool = dataclasses.replace(hls_writer.HLS_BACKEND, ops=hls_writer.HLS_BACKEND.ops - {"MaxPool2d"})
    monkeypatch.setattr(hls_writer, "HLS_BACKEND", without_pool)
    out = tmp_path / "out"
    assert export_main([str(sdt_ckpt), "--target", "fpga", "-o", str(out), "--calib-samples", "16",
                        "--samples", "4"]) == 2
    err = capsys.readouterr().err
    assert "patch_embed.maxpool2" in err and "op MaxPool2d is not supported by backend 'fpga-hls'" in err
    assert "export to nir or onnx" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
