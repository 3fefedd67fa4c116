"""benchmarks/bench_parity.py: the rates and efficiencies it derives, its table, its argument checks,
and (slow) a tiny end-to-end run: serial, 1 and 2 Dask workers, the same parity.json from each.
Nothing here asserts a speed."""
import json
import math

import pytest


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark
    return load_benchmark("bench_parity")


def _row(workers, run_s, warm_s, start_s=0.0, samples=360):
    return {"name": "serial (this process)" if workers == 0 else "dask LocalCluster", "workers": workers,
            "samples": samples, "shards": 23, "start_s": start_s, "first_s": 1.0, "run_s": run_s, "warm_s": warm_s}


def test_rates_and_scaling_efficiency(bench):
    rows = bench.add_rates([_row(0, 9.0, 3.0), _row(1, 10.0, 4.0, start_s=2.0), _row(2, 6.0, 2.5, start_s=2.0)])
    serial, one, two = rows
    assert serial["rate_total"] == pytest.approx(40.0) and serial["rate_warm"] == pytest.approx(120.0)
    assert one["total_s"] == 12.0 and one["rate_total"] == pytest.approx(30.0) and one["rate_warm"] == 90.0
    assert two["rate_total"] == pytest.approx(45.0) and two["rate_warm"] == pytest.approx(144.0)
    assert one["efficiency_total"] == 1.0 and one["efficiency_warm"] == 1.0
    assert two["efficiency_total"] == pytest.approx(45.0 / 30.0 / 2) and two["efficiency_warm"] == pytest.approx(0.8)
    assert two["x_serial"] == pytest.approx(45.0 / 40.0) and serial["x_serial"] == 1.0
    assert math.isnan(serial["efficiency_total"]) and math.isnan(serial["efficiency_warm"])


def test_the_table_has_one_row_per_run(bench):
    lines = bench.table(bench.add_rates([_row(0, 9.0, 3.0), _row(1, 10.0, 4.0, 2.0), _row(2, 6.0, 2.5, 2.0)]))
    assert len(lines) == 5 and lines[0].startswith("| run | workers |") and "efficiency (warm)" in lines[0]
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert lines[2].startswith("| serial (this process) | 0 |") and "| - | - |" in lines[2]
    assert lines[4].startswith("| dask LocalCluster | 2 |") and lines[4].endswith("| 0.75 | 0.80 |")


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers", "x"], ["--samples", "0"],
                                  ["--shard-size", "0"], ["--stages", "tpu"]])
def test_bad_arguments_are_refused(bench, args, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(args)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow  # two fresh Dask clusters and the machine check: ~45 s on a 2-core machine
def test_a_tiny_run_prints_and_writes_every_row(bench, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--samples", "16", "--shard-size", "8", "--calib-samples", "32", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["identical"] is True and "parity.json identical across all runs" in text
    rows = data["rows"]
    assert [r["workers"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["samples"] == 16 and r["shards"] == 2
        assert r["run_s"] > 0 and r["warm_s"] > 0 and r["first_s"] > 0 and r["rate_total"] > 0 and r["rate_warm"] > 0
        assert f"| {r['name']} | {r['workers']} |" in text
    assert rows[0]["start_s"] == 0 and all(r["start_s"] > 0 for r in rows[1:])
    assert rows[1]["efficiency_total"] == 1.0 and rows[2]["efficiency_total"] > 0
    assert set(data["machine_speedup"]) == {"2"} and data["machine_speedup"]["2"] > 0
    assert "2 plain processes do the same CPU work" in text
