"""benchmarks/bench_energy.py: runs end to end on a tiny setting (every architecture in the table
and the JSON, finite ratios, spiking networks), its argument errors, and the interleaved timing
helper. Nothing here asserts a speed: the ratios are measured by hand (see the script's doc)."""
import json
import math

import pytest
import torch



@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark
    return load_benchmark("bench_energy")


def test_help_lists_the_options(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--archs", "--batch", "--repeat", "--warmup", "--threads", "--clock", "--full-size", "--json"):
        assert opt in out


@pytest.fixture
def keep_torch_threads():
    """``--threads`` sets torch's thread count for the whole process: put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_tiny_run_prints_and_writes_every_architecture(bench, tmp_path, capsys, keep_torch_threads):
    out = tmp_path / "energy_bench.json"
    argv = ["--batch", "2", "--repeat", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert [(r["arch"], r["batch"]) for r in rows] == [(a, b) for a in bench.ARCHS for b in (2,)]
    table = [line for line in printed.splitlines() if line.split() and line.split()[0] in bench.ARCHS]
    assert len(table) == len(rows)
    for r, line in zip(rows, table):
        assert line.split()[:2] == [r["arch"], str(r["batch"])]
        assert r["plain_ms"] > 0 and r["counted_ms"] > 0
        assert math.isfinite(r["ratio"]) and r["ratio"] == pytest.approx(r["counted_ms"] / r["plain_ms"])
        assert r["within_target"] == (r["ratio"] <= doc["target"])
        assert f"{r['ratio']:.2f}x" in line and ("yes" if r["within_target"] else "NO") in line.split()
        assert 0 < r["firing_rate"] < 1 and r["synops"] > 0  # the randomized networks spike
    assert doc["target"] == 1.5 and doc["repeat"] == 1 and doc["clock"] == "wall" and doc["threads"] == 1
    assert "worst ratio" in printed


@pytest.mark.parametrize("argv,needle", [
    (["--archs", "spikformer-9-9"], "--archs: unknown config"),
    (["--batch", "0"], "--batch"),
    (["--repeat", "0"], "--repeat"),
    (["--clock", "sundial"], "--clock"),
])
def test_bad_arguments_are_one_line_usage_errors(bench, argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_json_into_a_missing_directory_is_refused_before_measuring(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--json", str(tmp_path / "nope" / "x.json")])
    assert e.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_interleaved_medians_alternate_the_order_and_take_medians(bench):
    calls, now = [], [0.0]

    def clock():
        return now[0]

    def run(name, seconds):
        def fn():
            calls.append(name)
            now[0] += seconds.pop(0)
        return fn

    plain = run("plain", [9.0, 1.0, 2.0, 3.0])  # the first is the warm-up
    counted = run("counted", [9.0, 4.0, 6.0, 5.0])
    tp, tc = bench.interleaved_medians(plain, counted, repeat=3, warmup=1, clock=clock)
    assert (tp, tc) == (2.0, 5.0)
    assert calls == ["plain", "counted", "plain", "counted", "counted", "plain", "plain", "counted"]


def test_small_helpers(bench):
    assert bench.positive_ints("32,128") == [32, 128]
    with pytest.raises(ValueError):
        bench.positive_ints("0")
    assert bench.ratio(3.0, 2.0) == 1.5
    assert math.isnan(bench.ratio(1.0, 0.0))
