"""step-export / step-train end to end: artifacts, atomic output, determinism, clear errors."""
import importlib.util
import json

import pytest

from conftest import random_model
from step_deploy.cli import export_main, train_main
from step_deploy.frontend.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("ck") / "model.ckpt"
    save_checkpoint(random_model("sdt-1-64-digits"), p, metadata={"dataset": "digits"})
    return p


@pytest.mark.parametrize("target,artifact", [("nir", "model.nir"), ("onnx", "model.onnx")])
def test_export_writes_artifacts_and_deterministic_summary(ckpt, tmp_path, target, artifact, capsys):
    out = tmp_path / target
    assert export_main([str(ckpt), "--target", target, "-o", str(out), "--samples", "4"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert artifact in files and "summary.json" in files and "summary.md" in files and "ir" in files
    s = json.loads((out / "summary.json").read_text())
    assert s["self_check"]["spike_mismatches"] == 0 and s["self_check"]["neurons_compared"] == 12
    assert s["self_check"]["samples"] == 4
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert export_main([str(ckpt), "--target", target, "-o", str(out), "--samples", "4"]) == 0
    again = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first == again, "same checkpoint and flags must give byte-identical files"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directory left"


def test_bad_checkpoint_gives_clear_error_and_no_output(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "out"
    assert export_main([str(bad), "--target", "onnx", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.ckpt" in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_fpga_says_not_yet(ckpt, capsys):
    assert export_main([str(ckpt), "--target", "fpga"]) == 2
    assert "not built yet" in capsys.readouterr().err


def test_loihi_check_only_exit_codes(tmp_path, capsys):
    ckpt = save_checkpoint(random_model("spikformer-2-64-digits"), tmp_path / "sf.ckpt")
    assert export_main([str(ckpt), "--target", "loihi", "--check-only"]) == 0
    table = capsys.readouterr().out
    assert "neuro-cores" in table and "live-spike-product" in table
    # Loihi 1 has no graded spikes: Spikformer's spike-map residual sums cannot travel between cores
    assert export_main([str(ckpt), "--target", "loihi", "--check-only", "--chip", "loihi1"]) == 1
    assert "graded-spikes" in capsys.readouterr().out


def test_train_short_run_learns_and_reuses(tmp_path, capsys):
    out = tmp_path / "m.ckpt"
    args = ["--arch", "sdt-1-64-digits", "--epochs", "3", "-o", str(out)]
    assert train_main(args) == 0
    line = capsys.readouterr().out
    acc = float(line.split("test accuracy ")[1].split()[0])
    assert acc > 0.5, f"3 epochs should be far above chance (0.1), got {acc}"
    assert train_main(args + ["--reuse"]) == 0
    assert "reusing" in capsys.readouterr().out


def test_unknown_arch_for_training(tmp_path, capsys):
    assert train_main(["--arch", "nope", "-o", str(tmp_path / "x.ckpt")]) == 2
    assert "unknown arch" in capsys.readouterr().err


def test_loihi_export_artifacts_deterministic(tmp_path):
    ckpt = save_checkpoint(random_model("sdt-1-64-digits"), tmp_path / "sdt.ckpt")
    out = tmp_path / "loihi"
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "4"]) == 0
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"network/graph.json", "network/weights.npz", "network/layers.json", "quantization.json",
            "constraints.json", "constraints.md", "report.json", "report.md"} <= names
    layers = json.loads((out / "network" / "layers.json").read_text())
    lif = [r for r in layers if r["op"] == "LoihiLIF"]
    assert lif and all("placement" in r for r in lif)
    first = {n: (out / n).read_bytes() for n in names}
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "4"]) == 0
    assert first == {n: (out / n).read_bytes() for n in names}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc not installed (make setup installs it)")
def test_loihi_export_runs_lava_bit_exact(tmp_path):
    ckpt = save_checkpoint(random_model("spikformer-2-64-digits"), tmp_path / "sf.ckpt")
    out = tmp_path / "loihi"
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "2", "--run-lava", "1"]) == 0
    lava = json.loads((out / "report.json").read_text())["lava"]
    assert lava["layers"] == 19 and lava["spikes_compared"] > 0 and lava["spike_mismatches"] == 0
