"""benchmarks/bench_fpga.py: its command line and small helpers (the measurement itself is run by
hand: it takes minutes and asserts nothing about speed)."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fpga.py"


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark
    return load_benchmark("bench_fpga")


def test_help_lists_the_options():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for opt in ("--ckpt", "--samples", "--threads", "--full-size", "--no-demo", "--no-anchor"):
        assert opt in proc.stdout


def test_missing_checkpoint_is_a_one_line_usage_error(bench, tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SystemExit) as e:
        bench.main(["--ckpt", str(missing), "--no-anchor"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "make demo" in err and "Traceback" not in err


def test_bad_sample_count_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--samples", "0", "--no-demo", "--no-anchor"])
    assert e.value.code == 2
    assert "--samples" in capsys.readouterr().err


def test_traced_layers_are_the_lif_layers_and_the_output_once(bench):
    def layer(name, op):
        return SimpleNamespace(node=SimpleNamespace(name=name, op=op))

    layers = [layer("conv", "FpgaConv2d"), layer("lif1", "FpgaLIF"), layer("mm", "MatMul"),
              layer("lif2", "FpgaLIF"), layer("head", "FpgaTemporalSum")]
    proj = SimpleNamespace(layers=layers, by_name={l.node.name: l for l in layers}, output_node="head")
    assert bench.traced_layers(proj) == ["lif1", "lif2", "head"]
    proj.output_node = "lif2"  # an output that is already a LIF layer is not listed twice
    assert bench.traced_layers(proj) == ["lif1", "lif2"]


def test_ratio_and_rate(bench):
    assert bench.fmt_rate(8, 2.0) == 4.0
    assert bench.fmt_rate(8, 0.0) == float("inf")
    assert bench.ratio(3.0, 2.0) == 1.5
    assert bench.ratio(3.0, 0.0) != bench.ratio(3.0, 0.0)  # nan: no peer to compare with


def test_tree_bytes_finds_the_largest_file(bench, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.h").write_bytes(b"x" * 300)
    (tmp_path / "small.h").write_bytes(b"x" * 10)
    assert bench.tree_bytes(tmp_path) == (310, 300, str(Path("a") / "big.h"))
    assert bench.tree_bytes(tmp_path / "a", "*.cpp") == (0, 0, "")
