"""benchmarks/statten_temporal.py: the paired, per-seed comparison of STAtten with per-step attention.
Training is what the script spends its time on; here its accounting runs on given accuracies (one
training of the real pair would take minutes), and a run on cached checkpoints reuses them."""
import json

import pytest


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark
    return load_benchmark("statten_temporal")


PAIR = ("Spikformer", "a", "b")


def test_differences_are_paired_by_seed_and_a_spread_larger_than_the_mean_is_no_verdict(bench):
    acc = {("a", "d", 0, None): 0.90, ("a", "d", 1, None): 0.80, ("a", "d", 2, None): 0.85,
           ("b", "d", 0, None): 0.91, ("b", "d", 1, None): 0.81, ("b", "d", 2, None): 0.86}  # b always 1 point ahead
    (row,) = bench.summarize([PAIR], ["d"], [0, 1, 2], acc)
    assert row["difference"] == pytest.approx([0.01, 0.01, 0.01]) and row["statten_wins"] == 3
    assert row["difference_sd"] == pytest.approx(0.0, abs=1e-12)
    assert bench.verdict(row) == "STAtten ahead on 3 of 3 seeds"  # unpaired, the spread (5 points) would hide it
    acc[("b", "d", 1, None)] = 0.70  # one seed far behind: the mean difference is within its spread
    (row,) = bench.summarize([PAIR], ["d"], [0, 1, 2], acc)
    assert row["statten_wins"] == 2 and bench.verdict(row).startswith("no clear difference")
    (row,) = bench.summarize([PAIR], ["d"], [0], acc)
    assert bench.verdict(row) == "one seed: no conclusion"


def test_the_table_has_one_row_per_pair_and_data_set_and_no_stray_cell_separator(bench, tmp_path):
    acc = {(arch, d, s, None): 0.5 + 0.1 * s + (0.01 if arch == "b" else 0) for arch in "ab" for d in ("x", "y")
           for s in (0, 1)}
    rows = bench.summarize([PAIR], ["x", "y"], [0, 1], acc)
    md = bench.markdown(rows, 3)
    lines = [line for line in md.splitlines() if line.startswith("| Spikformer")]
    assert len(lines) == 2 and all(line.count("|") == 10 for line in lines)
    png = bench.plot(rows, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(rows)  # the JSON the script writes


def test_block_sizes_that_do_not_tile_t_are_skipped_per_data_set(bench):
    """digits-events has T = 4, digits-seq T = 8: blocks of 8 are compared on the sequence only; the
    per-step model is shared by every block size, the configs' own 2 keeps its cached checkpoints."""
    acc = {("a", d, s, None): 0.8 for d in ("digits-events", "digits-seq") for s in (0, 1)}
    acc.update({("b", d, s, c): 0.81 for d in ("digits-events", "digits-seq") for s in (0, 1) for c in (None, 4, 8)})
    rows = bench.summarize([PAIR], ["digits-events", "digits-seq"], [0, 1], acc, chunks=(2, 4, 8))
    assert [(r["data"], r["chunk_size"]) for r in rows] == [
        ("digits-events", 2), ("digits-events", 4), ("digits-seq", 2), ("digits-seq", 4), ("digits-seq", 8)]
    assert bench._chunk(2) is None and bench._chunk(8) == 8


def test_bad_options_are_refused(bench, capsys):
    for argv in (["--models", "nope"], ["--seeds", "x"], ["--data", "mnist"], ["--epochs", "0"],
                 ["--chunk-sizes", "0"], ["--chunk-sizes", "x"]):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
