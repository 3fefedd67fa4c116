"""Every example in README.md and examples/ runs (and says what it should)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd, cwd, timeout=900):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_python_api_example(tmp_path):
    """The example runs end to end and its three parity lines say 0 mismatches. One epoch of training:
    the parity claims hold for any weights (the accuracy is the training tests' business)."""
    r = _run([sys.executable, str(ROOT / "examples" / "python_api.py"), "--epochs", "1", "--out", str(tmp_path)],
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reference interpreter vs PyTorch: 0 spike mismatches" in r.stdout
    assert "NIR file read back: 0 spike mismatches" in r.stdout
    assert "onnxruntime: 0 spike mismatches" in r.stdout


def readme_tour_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## A short tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [re.sub(r"^\.venv/bin/", "", line.split("  #")[0].strip()) for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow
def test_readme_tour_commands_run(tmp_path):
    """Every tour command runs as written, except that the training runs 1 epoch instead of the
    tour's 10 and ``step-parity`` compares 8 samples instead of the tour's 32: what is tested here is
    that each command works on the checkpoint it is given, not the accuracy or the throughput (``make
    demo`` and the accuracy tests train fully; the Lava and float self-checks hold for any weights;
    8 samples are one shard through every stage and pair, as 32 are, for about 30 s less CPU time)."""
    cmds = readme_tour_commands()
    assert len(cmds) >= 4 and cmds[0].startswith("step-train") and "--epochs 10" in cmds[0]
    cmds[0] = cmds[0].replace("--epochs 10", "--epochs 1")
    cmds = [re.sub(r"--samples \d+", "--samples 8", c) if c.startswith("step-parity") else c for c in cmds]
    out = {}
    for cmd in cmds:
        r = _run(cmd, cwd=tmp_path)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        out[cmd.split()[0]] = r.stdout
    assert (tmp_path / "runs/demo/nir/model.nir").exists() and (tmp_path / "runs/demo/onnx/model.onnx").exists()
    _check_every_stage_on_the_embedded_cluster(tmp_path / "runs/parity/parity.json", out["step-parity"])


def _check_every_stage_on_the_embedded_cluster(path, stdout: str) -> None:
    """The tour's ``step-parity``: all ten stages on 8 digits (Lava on 1), one shard on step-parity's own
    local Dask cluster (non-daemonic workers, so that Lava may start its processes); every pair
    compared on the samples both stages ran, the six integer pairs exact with equal counters, the six
    float pairs exact or explained."""
    result = json.loads(path.read_text())
    bad = {s: e["reason"] for s, e in result["stages"].items() if e["status"] != "ok"}
    assert not bad, bad
    assert len(result["stages"]) == 10 and len(result["pairs"]) == 45
    expected = {"lava": 1}
    assert {s: e["samples"] for s, e in result["stages"].items()} == {s: expected.get(s, 8) for s in result["stages"]}
    for p in result["pairs"]:
        assert p["samples"] == min(expected.get(p["a"], 8), expected.get(p["b"], 8)) and p["values"] > 0
        if p["kind"] == "exact":
            assert p["verdict"] == "exact" and p["mismatches"] == 0 and p["counters"]["equal"], p
        elif p["kind"] == "float":
            assert p["ok"] is True and p["verdict"] in ("exact", "explained"), p
    kinds = [p["kind"] for p in result["pairs"]]
    assert kinds.count("exact") == 6 and kinds.count("float") == 6 and result["ok"] is True
    assert re.search(r"local Dask cluster \(\d+ worker process(es)?\)", stdout), stdout[-2000:]
