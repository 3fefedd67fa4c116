"""``step-sim``: the files it writes (deterministic, atomic), its parity check against the golden
model, its one-line errors, and ``step-export`` reporting the simulated latency and energy."""
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory):
    """A random-weight Spikformer checkpoint (BN statistics randomized so that neurons fire)."""
    from conftest import random_model

    from step_deploy.frontend.checkpoint import save_checkpoint
    p = tmp_path_factory.mktemp("ck") / "spikformer.ckpt"
    save_checkpoint(random_model("spikformer-2-64-digits"), p, metadata={"dataset": "digits"})
    return p


FILES = ("sim.json", "sim.md", "units.csv", "timeline.png", "layers.png")


@pytest.mark.parametrize("arch", ["loihi2", "fpga"])
def test_step_sim_writes_a_deterministic_report_whose_spikes_equal_the_golden_model(demo_ckpt, tmp_path, arch):
    from step_deploy.cli import sim_main
    out1, out2 = tmp_path / "s1", tmp_path / "s2"
    args = ["--arch", arch, "--samples", "4", "--calib-samples", "16"]
    assert sim_main([str(demo_ckpt), "-o", str(out1)] + args) == 0
    assert sim_main([str(demo_ckpt), "-o", str(out2)] + args) == 0
    for f in FILES:
        assert (out1 / f).read_bytes() == (out2 / f).read_bytes(), f
    rep = json.loads((out1 / "sim.json").read_text())
    assert rep["samples"] == 4 and rep["steps"] == 4 and rep["header"]["samples"] == 4
    assert rep["parity"] and all(v["mismatches"] == 0 and v["elements"] > 0 for v in rep["parity"].values())
    assert rep["latency_ns"]["mean"] > 0 and rep["energy_pj"]["per_sample"] > 0
    assert rep["sources"], "every constant the simulation used is listed with its source"
    rows = (out1 / "units.csv").read_text().splitlines()
    assert rows[0].startswith("unit,kind,layer,hw_step,busy_ns,stall_ns")
    assert len(rows) - 1 == rep["units"] * rep["hw_steps"]
    md = (out1 / "sim.md").read_text()
    assert "equal the golden model's element by element" in md
    if arch == "loihi2":
        assert any("assum" in n.lower() for n in rep["notes"]) or any("assumption" in v for v in rep["sources"].values())


def test_step_sim_trace_writes_the_simulated_spikes(demo_ckpt, tmp_path):
    from step_deploy.cli import sim_main
    out = tmp_path / "t"
    assert sim_main([str(demo_ckpt), "-o", str(out), "--arch", "loihi1", "--samples", "2", "--calib-samples", "16",
                     "--trace"]) == 0
    spikes = np.load(out / "spikes.npz")
    assert spikes.files and all(spikes[k].shape[:2] == (4, 2) for k in spikes.files)
    lines = (out / "steps.csv").read_text().splitlines()
    rep = json.loads((out / "sim.json").read_text())
    assert lines[0] == "sample,hw_step,step_ns" and len(lines) - 1 == 2 * rep["hw_steps"]


def test_step_sim_refuses_bad_input_with_one_line(demo_ckpt, tmp_path, capsys):
    from step_deploy.cli import sim_main
    assert sim_main([str(demo_ckpt), "-o", str(tmp_path / "a"), "--arch", "loihi1", "--explore"]) == 2
    assert "--explore applies to --arch fpga only" in capsys.readouterr().err
    assert sim_main([str(demo_ckpt), "-o", str(tmp_path / "b"), "--arch", "loihi2", "--hardware", "loihi2"]) == 2
    err = capsys.readouterr().err
    assert "null" in err and "loihi2" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "hw.yaml"
    bad.write_text("name: [1, 2")
    assert sim_main([str(demo_ckpt), "-o", str(tmp_path / "c"), "--hardware", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert sim_main([str(demo_ckpt), "-o", str(tmp_path / "d"), "--arch", "fpga", "--part", "nopart"]) == 2
    capsys.readouterr()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert sim_main([str(demo_ckpt), "-o", str(foreign), "--samples", "1"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"
    assert sim_main([str(tmp_path / "none.ckpt"), "-o", str(tmp_path / "e")]) == 2
    assert "no such file" in capsys.readouterr().err
    for d in "abcde":
        assert not (tmp_path / d).exists()


@pytest.mark.slow
def test_step_sim_explore_and_batched_auto_fit_the_part(demo_ckpt, tmp_path):
    """``--explore`` writes the design space with its Pareto front; ``--schedule batched`` with ``auto``
    picks a parallelism whose batched design fits the part (the step design's auto does not)."""
    from step_deploy.cli import sim_main
    out = tmp_path / "x"
    assert sim_main([str(demo_ckpt), "-o", str(out), "--arch", "fpga", "--schedule", "batched", "--samples", "2",
                     "--calib-samples", "16", "--explore"]) == 0
    ex = json.loads((out / "explore.json").read_text())
    pts = ex["points"]
    assert {p["schedule"] for p in pts} == {"step", "batched"} and ex["front"]
    assert all(pts[i]["fits"] for i in ex["front"])
    assert (out / "explore.png").stat().st_size > 0 and "**front**" in (out / "explore.md").read_text()
    rep = json.loads((out / "sim.json").read_text())
    assert rep["schedule"] == "batched"
    note = next(n for n in rep["notes"] if n.startswith("parallelism:"))
    assert "fits on chip" in note and not any("read from DRAM" in n for n in rep["notes"])
