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


def test_loihi_check_only_exit_codes(tmp_path, capsys):
    ckpt = save_checkpoint(random_model("spikformer-2-64-digits"), tmp_path / "sf.ckpt")
    assert export_main([str(ckpt), "--target", "loihi", "--check-only"]) == 0
    table = capsys.readouterr().out
    assert "neuro-cores" in table and "live-spike-product" in table
    # Loihi 1 has no graded spikes: Spikformer's spike-map residual sums cannot travel between cores
    assert export_main([str(ckpt), "--target", "loihi", "--check-only", "--chip", "loihi1"]) == 1
    assert "graded-spikes" in capsys.readouterr().out


@pytest.mark.slow
def test_train_short_run_learns_and_reuses(tmp_path, capsys):
    out = tmp_path / "m.ckpt"
    # one epoch in batches of 16 (90 optimizer steps, a third of the compute of 3 epochs of 64): 74.7 % here
    args = ["--arch", "sdt-1-64-digits", "--epochs", "1", "--batch-size", "16", "-o", str(out)]
    assert train_main(args) == 0
    line = capsys.readouterr().out
    acc = float(line.split("test accuracy ")[1].split()[0])
    assert acc > 0.5, f"90 steps of training should be far above chance (0.1), got {acc}"
    assert train_main(args + ["--reuse"]) == 0
    assert "reusing" in capsys.readouterr().out


def test_unknown_arch_for_training(tmp_path, capsys):
    assert train_main(["--arch", "nope", "-o", str(tmp_path / "x.ckpt")]) == 2
    assert "unknown arch" in capsys.readouterr().err


def test_loihi_export_artifacts_deterministic(tmp_path):
    ckpt = save_checkpoint(random_model("sdt-1-64-digits"), tmp_path / "sdt.ckpt", metadata={"dataset": "digits"})
    out = tmp_path / "loihi"
    args = [str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "4", "--calib-samples", "16"]
    assert export_main(args) == 0
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"network/graph.json", "network/weights.npz", "network/layers.json", "quantization.json",
            "constraints.json", "constraints.md", "report.json", "report.md", "summary.json", "summary.md"} <= names
    layers = json.loads((out / "network" / "layers.json").read_text())
    lif = [r for r in layers if r["op"] == "LoihiLIF"]
    assert lif and all("placement" in r for r in lif)
    first = {n: (out / n).read_bytes() for n in names}
    assert export_main(args) == 0
    assert first == {n: (out / n).read_bytes() for n in names}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc not installed (make setup installs it)")
def test_loihi_export_runs_lava_bit_exact(tmp_path):
    ckpt = save_checkpoint(random_model("spikformer-2-64-digits"), tmp_path / "sf.ckpt")
    out = tmp_path / "loihi"
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "2", "--run-lava", "1",
                        "--calib", "noise"]) == 0
    lava = json.loads((out / "report.json").read_text())["lava"]
    assert lava["layers"] == 19 and lava["spikes_compared"] > 0 and lava["spike_mismatches"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["self_check"]["lava"]["spike_mismatches"] == 0 and summary["self_check"]["ok"]
    assert "Lava vs golden: **0 spike mismatches**" in (out / "summary.md").read_text()


# --------------------------------------------------------------------------- arguments checked before any work


def _no_output(tmp_path, *keep):
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in keep) == []


@pytest.mark.parametrize("n", ["0", "-3"])
def test_samples_must_be_positive(ckpt, tmp_path, capsys, n):
    out = tmp_path / "out"
    assert export_main([str(ckpt), "--target", "onnx", "-o", str(out), "--samples", n]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --samples must be at least 1") and f"got {n}" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    assert export_main([str(tmp_path / "nope.ckpt"), "--target", "nir", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope.ckpt" in err and "no such file" in err
    assert export_main([str(tmp_path), "--target", "nir", "-o", str(tmp_path / "o")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target,flags,named,owners", [
    ("onnx", ["--chip", "loihi1"], "--chip", "loihi"),
    ("nir", ["--run-lava", "2"], "--run-lava", "loihi"),
    ("onnx", ["--check-only"], "--check-only", "loihi / fpga"),
    ("nir", ["--calib", "noise", "--allow-errors"], "--calib", "loihi / fpga"),
    ("loihi", ["--csim", "2"], "--csim", "fpga"),
    ("onnx", ["--part", "zcu104"], "--part", "fpga"),
])
def test_flags_of_another_target_are_errors(ckpt, tmp_path, capsys, target, flags, named, owners):
    out = tmp_path / "out"
    assert export_main([str(ckpt), "--target", target, "-o", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"{named} applies to --target {owners} only" in err and f"not to --target {target}" in err
    assert not out.exists()


def test_loihi_flag_combinations_that_cannot_work(ckpt, tmp_path, capsys):
    base = [str(ckpt), "--target", "loihi"]
    assert export_main(base + ["--run-lava", "-1"]) == 2
    assert "--run-lava must be >= 0" in capsys.readouterr().err
    assert export_main(base + ["--check-only", "-o", str(tmp_path / "o")]) == 2
    assert "writes nothing (--check-only)" in capsys.readouterr().err
    assert export_main(base + ["--check-only", "--calib", "noise"]) == 2
    assert "--calib does not apply" in capsys.readouterr().err
    assert export_main(base + ["--chip", "zcu104", "--check-only"]) == 2  # an FPGA part is not a chip spec
    assert "is an fpga part" in capsys.readouterr().err
    assert _no_output(tmp_path)


def test_a_planned_target_is_listed_but_refused_with_what_is_available(ckpt, capsys, monkeypatch):
    from step_deploy.export import registry

    monkeypatch.setitem(registry.PLANNED, "sim", "--target sim is not built yet (the cycle-level simulator)")
    with pytest.raises(SystemExit):
        export_main(["--help"])
    assert "{nir,onnx,loihi,fpga,sim}" in capsys.readouterr().out
    assert export_main([str(ckpt), "--target", "sim"]) == 2
    err = capsys.readouterr().err
    assert "not built yet" in err and "available now: nir, onnx, loihi, fpga" in err


def test_targets_come_from_the_registry():
    from step_deploy.export import get_target, registered_targets

    targets = registered_targets()
    assert list(targets) == ["nir", "onnx", "loihi", "fpga"]
    for name, t in targets.items():
        assert get_target(name) is t and t.description and t.pipeline == name
    assert [o.flag for o in targets["loihi"].options] == ["--chip", "--check-only", "--allow-errors", "--run-lava",
                                                          "--calib", "--calib-samples", "--root"]


# --------------------------------------------------------------------------- only our errors are user errors


@pytest.mark.parametrize("exc", [RuntimeError, KeyError, ValueError, FileNotFoundError])
def test_a_bug_is_not_disguised_as_a_user_error(ckpt, tmp_path, monkeypatch, exc):
    import step_deploy.export.common as common

    def broken(model):
        raise exc("a bug inside step-deploy")

    monkeypatch.setattr(common, "capture", broken)
    with pytest.raises(exc, match="a bug inside step-deploy"):
        export_main([str(ckpt), "--target", "nir", "-o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_missing_optional_package_names_it_and_make_setup(ckpt, tmp_path, monkeypatch, capsys):
    import importlib.util as iu

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert export_main([str(ckpt), "--target", "onnx", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'onnxruntime'" in err and "make setup" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_force_replaces_a_foreign_output_directory(ckpt, tmp_path, capsys):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export_main([str(ckpt), "--target", "nir", "-o", str(out), "--samples", "2"]) == 2
    assert "--force" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert export_main([str(ckpt), "--target", "nir", "-o", str(out), "--samples", "2", "--force"]) == 0
    assert (out / "model.nir").exists() and not (out / "notes.txt").exists()


# --------------------------------------------------------------------------- loihi: exit codes and reports


def test_loihi_constraint_errors_exit_1_unless_allow_errors(tmp_path, capsys):
    # Loihi 1 has no graded spikes: Spikformer's spike-map residual sums cannot travel between cores
    ckpt = save_checkpoint(random_model("spikformer-2-64-digits"), tmp_path / "sf.ckpt",
                           metadata={"dataset": "digits"})
    out = tmp_path / "l1"
    args = [str(ckpt), "--target", "loihi", "--chip", "loihi1", "-o", str(out), "--samples", "4",
            "--calib-samples", "16"]
    assert export_main(args) == 1
    cap = capsys.readouterr()
    assert "graded-spikes" in cap.out and "nothing written" in cap.err and "--allow-errors" in cap.err
    assert not out.exists()
    assert export_main(args + ["--allow-errors"]) == 0
    assert "written despite" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["constraints"]["errors"] > 0 and summary["chip"] == "loihi1"
    report = (out / "report.md").read_text()
    assert "stock LIF neurons firing on `>`" in report and "'gap'" in report  # no programmable neurons on Loihi 1


def test_loihi_summary_and_report_contents(tmp_path):
    ckpt = save_checkpoint(random_model("spikformer-2-64-digits"), tmp_path / "sf.ckpt",
                           metadata={"dataset": "digits"})
    out = tmp_path / "loihi"
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "8", "--calib-samples", "32"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["target"] == "loihi" and s["checkpoint"] == str(ckpt) and s["arch"] == "spikformer"
    assert s["ir"]["nodes"] > 0 and s["quantized_ir"]["nodes"] > 0 and not s["data_is_noise"]
    fg = s["self_check"]["float_vs_golden"]
    assert fg["samples"] == 8 and 0 <= fg["prediction_agreement"] <= 1 and "golden_integer" in fg
    assert s["self_check"]["ok"] and "lava" not in s["self_check"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Loihi export")  # real data: no noise banner
    assert "- time steps: T = 4" in report
    assert "programmable `>=` neurons for 19 of 19 neuron layers" in report and "Loihi 1" in report
    q = json.loads((out / "quantization.json").read_text())
    assert f"{q['saturation_total']} on the calibration data" in report
    rj = json.loads((out / "report.json").read_text())
    assert rj["saturation"] == {"calibration": q["saturation_total"], "evaluation": fg["saturation_events"]}
    summary_md = (out / "summary.md").read_text()
    assert "## Self-check" in summary_md and "8 samples" in summary_md
    constraints = (out / "constraints.md").read_text()
    assert "18 more layers (19 layers in all)" in constraints and "[18 more]" not in constraints


def test_loihi_noise_calibration_is_flagged_on_the_first_line(tmp_path):
    ckpt = save_checkpoint(random_model("sdt-1-64-digits"), tmp_path / "sdt.ckpt")  # no data set recorded
    out = tmp_path / "loihi"
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out)]) == 2  # refuses to calibrate on nothing
    assert not out.exists()
    assert export_main([str(ckpt), "--target", "loihi", "-o", str(out), "--samples", "4", "--calib", "noise",
                        "--calib-samples", "16"]) == 0
    for name in ("report.md", "summary.md"):
        first = (out / name).read_text().splitlines()[0]
        assert "NOISE" in first and "--calib" in first, name
    assert json.loads((out / "summary.json").read_text())["data_is_noise"] is True


def test_float_self_check_on_noise_says_so_first(tmp_path):
    ckpt = save_checkpoint(random_model("sdt-1-64-digits"), tmp_path / "sdt.ckpt")  # no data set recorded
    out = tmp_path / "onnx"
    assert export_main([str(ckpt), "--target", "onnx", "-o", str(out), "--samples", "2"]) == 0
    assert "NOISE" in (out / "summary.md").read_text().splitlines()[0]
    s = json.loads((out / "summary.json").read_text())
    assert s["data_is_noise"] is True and s["self_check"]["samples"] == 2
