"""``step-parity`` end to end: exit codes, one-line errors, the output directory (refusal of a foreign
one, atomic replacement of our own, byte-identical reruns), ``--resume`` and its printed line, a
stage that cannot run reported as "not applicable", and every stage of the pipeline in one matrix
(slow). The model is a random-weight digits Spikformer (``parity_ckpt`` in conftest)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from step_deploy.cli import parity_main

QUICK = ["--calib-samples", "32", "--workers", "0"]
OUTPUT_FILES = {".step-deploy-output", "parity.json", "parity.md", "parity.html", "matrix.png", "raster.png",
                "rates.png"}


def files_of(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args,names", [
    (["--stages", "torch,tpu"], ["--stages", "tpu"]),
    (["--stages", "torch,golden-loihi", "--limit", "foo=3"], ["--limit", "foo=3"]),
    (["--stages", "torch,golden-loihi", "--limit", "lava=2"], ["--limit", "lava"]),  # lava not chosen
    (["--samples", "0"], ["--samples"]),
    (["--samples", "many"], ["--samples", "many"]),
    (["--shard-size", "0"], ["--shard-size"]),
    (["--workers", "0", "--scheduler", "tcp://127.0.0.1:8786"], ["--workers 0", "--scheduler"]),
    (["--scheduler", "tcp://127.0.0.1:8786", "--scheduler-timeout", "0"], ["--scheduler-timeout", "0"]),
    (["--raster-layers", "no.such.layer", "--stages", "golden-loihi", "--samples", "1", "--workers", "0"],
     ["--raster-layers", "no.such.layer"]),
])
def test_usage_errors_exit_2_with_one_line_and_write_nothing(parity_ckpt, tmp_path, capsys, args, names):
    out = tmp_path / "out"
    assert parity_main([str(parity_ckpt), *args, "-o", str(out), "--work", str(tmp_path / "work")]) == 2
    cap = capsys.readouterr()
    line = one_error_line(cap.err)
    assert all(n in line for n in names), line
    assert cap.out == "" and not out.exists() and not (tmp_path / "work").exists()


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert parity_main([str(tmp_path / "nope.ckpt"), "--workers", "0", "-o", str(tmp_path / "out")]) == 2
    assert "nope.ckpt" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a CLI process that tries the scheduler for 2 s: ~11 s
def test_an_unreachable_scheduler_is_one_line_naming_the_address(parity_ckpt, tmp_path):
    """A real process (what a user sees on the terminal: Dask's own log lines included)."""
    exe = Path(sys.executable).with_name("step-parity")
    address = "tcp://127.0.0.1:1"
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run([str(exe), str(parity_ckpt), "--stages", "golden-loihi", "--samples", "4",
                           "--calib-samples", "32", "--scheduler", address, "--scheduler-timeout", "2", "-o", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert address in line and "scheduler" in line
    assert proc.stdout == "" and not out.exists()
    assert took < 40, f"took {took:.0f} s to give up"  # tried for 2 s (default 10); the rest is start-up


# ---------------------------------------------------------------------------- output directory


def test_a_foreign_output_directory_is_refused_and_left_untouched(parity_ckpt, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    before = files_of(out)
    assert parity_main([str(parity_ckpt), "--stages", "golden-loihi", "--samples", "4", *QUICK, "-o", str(out),
                        "--work", str(tmp_path / "work")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--force" in line
    assert files_of(out) == before
    assert not (tmp_path / "work").exists(), "refused before any work"


def test_resume_and_reruns_give_byte_identical_outputs(parity_ckpt, tmp_path, capsys):
    """Fresh run, then --resume with 2 of the 4 shard files deleted, then a run without --resume:
    each replaces our own previous output, prints what it computed, and writes the same bytes."""
    out, work = tmp_path / "out", tmp_path / "work"
    args = [str(parity_ckpt), "--stages", "golden-loihi,cycle-loihi", "--samples", "16", "--shard-size", "4",
            *QUICK, "-o", str(out), "--work", str(work)]
    assert parity_main(args) == 0
    text = capsys.readouterr().out
    assert "parity PASS" in text and "4 shard(s) computed on this process" in text and "; 0 reused" in text
    first = files_of(out)
    assert set(first) == OUTPUT_FILES  # golden vs cycle agree: no mismatch heat map
    assert all(first[p].startswith(b"\x89PNG\r\n\x1a\n") for p in first if p.endswith(".png"))
    assert b"data:image/png;base64," in first["parity.html"]
    result = json.loads(first["parity.json"])
    assert result["samples"] == 16 and result["ok"] is True
    assert [(p["a"], p["b"], p["verdict"]) for p in result["pairs"]] == [("golden-loihi", "cycle-loihi", "exact")]

    shards = sorted(work.glob("*/shard-*.json"))
    assert len(shards) == 4
    for p in shards[:2]:
        p.unlink()
    inode = out.stat().st_ino
    assert parity_main([*args, "--resume"]) == 0
    text = capsys.readouterr().out
    assert "2 shard(s) computed on this process" in text and "; 2 reused (--resume)" in text
    assert files_of(out) == first
    assert out.stat().st_ino != inode, "the output directory is replaced, not edited in place"

    assert parity_main(args) == 0  # without --resume: everything again
    text = capsys.readouterr().out
    assert "4 shard(s) computed on this process" in text and "; 0 reused" in text
    assert files_of(out) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directory left"


# ---------------------------------------------------------------------------- not applicable


def test_loihi1_stages_are_not_applicable_and_the_rest_passes(parity_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert parity_main([str(parity_ckpt), "--chip", "loihi1", "--stages", "torch,golden-loihi,lava,cycle-loihi",
                        "--samples", "4", *QUICK, "-o", str(out), "--work", str(tmp_path / "work")]) == 0
    assert "parity PASS" in capsys.readouterr().out
    result = json.loads((out / "parity.json").read_text())
    assert list(result["stages"]) == ["torch", "golden-loihi", "lava", "cycle-loihi"]
    for s in ("golden-loihi", "lava", "cycle-loihi"):
        assert result["stages"][s]["status"] == "not applicable"
        assert "graded" in result["stages"][s]["reason"] and "loihi1" in result["stages"][s]["reason"]
    assert len(result["pairs"]) == 6 and all(p["verdict"] == "n/a" for p in result["pairs"])
    md = (out / "parity.md").read_text()
    assert "not applicable" in md and "graded" in md
    assert "not applicable" in (out / "parity.html").read_text()
