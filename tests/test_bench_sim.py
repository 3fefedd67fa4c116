"""benchmarks/bench_sim.py runs end to end on a tiny setting: every stage of both simulated
architectures in the table and the JSON with finite ratios against the PyTorch forward and the golden
model measured in the same run. Nothing here asserts a speed (the script's doc says how to measure)."""
import json
import math

import pytest
import torch



@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark
    return load_benchmark("bench_sim")


def test_a_tiny_run_prints_and_writes_both_architectures(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        out = tmp_path / "b.json"
        assert bench.main(["--samples", "2", "--repeat", "1", "--no-memory", "--threads", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert {(r["arch"], r["stage"]) for r in rows} == {(a, s) for a in ("loihi2", "fpga")
                                                       for s in ("pytorch", "golden", "simulator")}
    for r in rows:
        assert r["seconds"] > 0 and math.isfinite(r["x_pytorch"]) and math.isfinite(r["x_golden"])
        assert f"{r['arch']:<8} {r['stage']:<10}" in text
    assert all(r["x_pytorch"] == 1.0 for r in rows if r["stage"] == "pytorch")


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit) as e:
        bench.main(["--arch", "tpu"])
    assert e.value.code == 2
