"""The parity report (Markdown, PNGs, one-file HTML) on hand-built results: no model is run.

``parity_result`` makes spikes per stage and compares them here (element-wise, as ``step-parity`` does),
so the report is fed numbers that are consistent with each other."""
import itertools

import numpy as np
import pytest

from step_deploy.parity import plots as parity_plots
from step_deploy.parity import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = ["patch_embed.lif", "blocks.0.attn.q_lif", "blocks.0.attn.attn_lif", "blocks.0.mlp.lif"]
STAGES = {  # name: (title, kind, domain)
    "torch": ("PyTorch (float32)", "float", "float"),
    "reference": ("reference interpreter (float64)", "float", "float"),
    "onnx": ("ONNX Runtime", "float", "float"),
    "golden-loihi": ("golden model (Loihi fixed point)", "integer", "loihi"),
    "cycle-loihi": ("cycle-level simulator (Loihi 2 mesh)", "integer", "loihi"),
    "lava": ("Lava Loihi2SimCfg fixed_pt", "integer", "loihi"),
}
NOT_RUN_REASON = "Loihi 1 carries binary spikes only: <script>alert(1)</script> graded spikes need Loihi 2"


def _flip(spikes, layer, step, neurons):
    out = {k: v.copy() for k, v in spikes.items()}
    out[layer][step, neurons] = ~out[layer][step, neurons]
    return out


def _first(a, b, sa, sb):
    for t in range(a[LAYERS[0]].shape[0]):
        for layer in LAYERS:
            idx = np.nonzero(a[layer][t] != b[layer][t])[0]
            if idx.size:
                i = int(idx[0])
                return {"layer": layer, "step": t, "sample": 0, "index": [i],
                        "a_value": float(a[layer][t, i]) if sa == "float" else int(a[layer][t, i]),
                        "b_value": float(b[layer][t, i]) if sb == "float" else int(b[layer][t, i])}
    return None


def _pair(name_a, name_b, spikes, stages, counters_equal=True):
    sa, sb = stages[name_a], stages[name_b]
    if sa["status"] != "ok" or sb["status"] != "ok":
        return {"a": name_a, "b": name_b, "kind": "not applicable", "verdict": "n/a", "ok": None,
                "reason": f"{name_b if sb['status'] != 'ok' else name_a}: not applicable", "samples": 0, "values": 0,
                "mismatches": 0, "prediction_agreement": None, "per_layer": {}, "first": None, "float": None,
                "counters": {}}
    a, b = spikes[name_a], spikes[name_b]
    per_layer = {l: {"values": int(a[l].size), "mismatches": int((a[l] != b[l]).sum()),
                     "per_step": [int(x) for x in (a[l] != b[l]).sum(axis=1)]} for l in LAYERS}
    mism = sum(d["mismatches"] for d in per_layer.values())
    values = sum(d["values"] for d in per_layer.values())
    if sa["kind"] == sb["kind"] == "float":
        kind, verdict = "float", "exact" if mism == 0 else "explained"
        flt = {"rounding_flips": 2 if mism else 0, "non_tie_flips": 0, "cascade_mismatches": max(0, mism - 2),
               "max_tie_distance": 3.0e-7, "first_non_tie": None}
    elif sa["domain"] == sb["domain"]:
        kind, verdict, flt = "exact", "exact" if mism == 0 else "MISMATCH", None
    else:
        kind, verdict, flt = "quantized", "differs", None
    diffs = [] if counters_equal or mism == 0 else [{"key": f"spikes/{LAYERS[2]}", "a": 120, "b": 117}]
    return {"a": name_a, "b": name_b, "kind": kind, "verdict": verdict,
            "ok": None if kind == "quantized" else mism == 0 or verdict == "explained", "reason": None,
            "samples": 4, "values": values, "mismatches": mism,
            "prediction_agreement": 0.972 if kind == "quantized" else 1.0, "per_layer": per_layer,
            "first": _first(a, b, sa["kind"], sb["kind"]), "float": flt,
            "counters": {"compared": len(LAYERS), "equal": not diffs, "differences": diffs}}


def parity_result(mismatch=True, noise=False):
    """6 stages: torch/reference explained (2 ties), reference/onnx exact, float vs Loihi differs,
    golden-loihi vs cycle-loihi MISMATCH from blocks.0.attn.q_lif step 1 (when ``mismatch``), lava n/a."""
    rng = np.random.default_rng(0)
    steps, n = 4, 96
    ref = {l: rng.random((steps, n)) < 0.15 + 0.05 * i for i, l in enumerate(LAYERS)}
    spikes = {"reference": ref, "onnx": ref, "torch": _flip(ref, LAYERS[2], 2, [5, 6])}
    spikes["golden-loihi"] = _flip(ref, LAYERS[0], 0, list(range(10, 20)))
    spikes["cycle-loihi"] = (_flip(spikes["golden-loihi"], LAYERS[1], 1, [7, 40, 41]) if mismatch
                             else spikes["golden-loihi"])
    stages = {}
    for name, (title, kind, domain) in STAGES.items():
        ok = name != "lava"
        stages[name] = {"title": title, "kind": kind, "domain": domain, "status": "ok" if ok else "not applicable",
                        "reason": None if ok else NOT_RUN_REASON, "samples": 4 if ok else 0,
                        "accuracy": 0.75 if ok else None,
                        "firing_rate": {l: float(s.mean()) for l, s in spikes[name].items()} if ok else {},
                        "firing_rate_per_step": {l: [float(x) for x in s.mean(axis=1)]
                                                 for l, s in spikes[name].items()} if ok else {},
                        "counters": {}, "counter_source": "test"}
    pairs = [_pair(a, b, spikes, stages) for a, b in itertools.combinations(STAGES, 2)]
    ok = all(p["verdict"] != "MISMATCH" for p in pairs)
    return {"checkpoint": "model.ckpt", "arch": "spikformer-2-64-digits", "data": "digits test split (4 samples)",
            "data_is_noise": noise, "steps": steps, "samples": 4, "layers": list(LAYERS), "stages": stages,
            "pairs": pairs,
            "raster": {"sample": 0, "layers": LAYERS, "shape": {l: [steps, n] for l in LAYERS},
                       "stages": {s: {l: [[int(t), int(i)] for t, i in zip(*np.nonzero(v))]
                                      for l, v in spikes[s].items()} for s in spikes}},
            "ok": ok, "summary": "every exact pair is bit-exact" if ok else "golden-loihi vs cycle-loihi: MISMATCH"}


def _pair_of(result, a, b):
    return next(p for p in result["pairs"] if (p["a"], p["b"]) == (a, b))


def test_markdown_names_the_first_divergence_with_both_values():
    res = parity_result()
    first = _pair_of(res, "golden-loihi", "cycle-loihi")["first"]
    assert first["layer"] == LAYERS[1] and first["step"] == 1      # the helper put the flip there
    md = report.markdown(res)
    section = md.split("### golden-loihi vs cycle-loihi: MISMATCH")[1].split("###")[0]
    assert f"first divergent layer `{LAYERS[1]}`, step 1 (sample 0, index [{first['index'][0]}])" in section
    assert f"golden-loihi = {first['a_value']}, cycle-loihi = {first['b_value']}" in section
    # per-layer table: the diverging layer has 3 mismatches, all at step 1, and is marked first
    assert f"| `{LAYERS[1]}` | 384 | 3 ← first | 0, 3, 0, 0 |" in section
    assert f"| `{LAYERS[0]}` | 384 | 0 | 0, 0, 0, 0 |" in section
    assert "**Verdict: FAIL**" in md
    # the fault comes first; float-vs-integer pairs follow as informational
    assert md.index("### golden-loihi vs cycle-loihi") < md.index("### torch vs reference: explained") < \
        md.index("## Differences between arithmetics (informational)") < md.index("### torch vs golden-loihi: differs")


def test_markdown_stage_table_and_matrix():
    res = parity_result()
    md = report.markdown(res)
    assert ("| lava | Lava Loihi2SimCfg fixed_pt | integer | loihi | not applicable: Loihi 1 carries binary spikes "
            "only: \\<script>alert(1)\\</script> graded spikes need Loihi 2 | 0 | — | — |") in md
    assert "<" not in md.replace("\\<", "")   # no raw HTML from the result: every < is escaped
    matrix = md.split("## Stage × stage matrix")[1].split("\n\n")[1].splitlines()
    assert matrix[0] == "|  | " + " | ".join(STAGES) + " |"
    body = matrix[2:]
    assert [row.split(" | ")[0] for row in body] == [f"| **{s}**" for s in STAGES]   # one row per stage
    cells = [row.strip("| ").split(" | ")[1:] for row in body]
    names = list(STAGES)
    assert all(cells[i][j] == cells[j][i] for i in range(6) for j in range(6))          # symmetric
    at = {(a, b): cells[names.index(a)][names.index(b)] for a in names for b in names}
    assert at["golden-loihi", "cycle-loihi"] == "**MISMATCH 3**"
    assert at["reference", "onnx"] == "exact (0 / 1,536)"
    assert at["torch", "reference"] == "explained: 2 ties → 2 mism."
    assert at["torch", "golden-loihi"] == "differs: 97.2% pred. agree"
    assert at["onnx", "lava"] == "n/a"
    # the explained float pair shows its rounding attribution
    torch_ref = md.split("### torch vs reference: explained")[1].split("###")[0]
    assert "2 threshold ties flipped, 0 non-tie flips, 0 cascade mismatches" in torch_ref


def test_markdown_noise_banner_and_plot_list():
    assert "NOISE INPUTS" in report.markdown(parity_result(noise=True))
    clean = report.markdown(parity_result(mismatch=False))
    assert "NOISE" not in clean and "**Verdict: PASS**" in clean
    assert "(mismatch.png)" in report.markdown(parity_result())
    plots = clean.split("## Plots")[1]
    assert "matrix.png" in plots and "raster.png" in plots and "rates.png" in plots


def test_counters_unequal_where_spikes_are_equal_are_flagged():
    res = parity_result()
    p = _pair_of(res, "reference", "onnx")
    p["counters"] = {"compared": 4, "equal": False, "differences": [{"key": "synops/blocks.0.mlp.fc", "a": 10, "b": 9}]}
    md = report.markdown(res)
    assert "| reference vs onnx | 4 | **no, although the spikes are equal** | synops/blocks.0.mlp.fc: 10 vs 9 |" in md
    counters = md.split("## Energy counters", 1)[1].split("\n## ", 1)[0]
    # torch vs reference differ by rounding ties: their counters may differ, so the table leaves them out
    assert "| reference vs onnx |" in counters and "| torch vs reference |" not in counters


def _read_png(path):
    import matplotlib.image as mpimg
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return mpimg.imread(str(path))


@pytest.fixture(scope="module")
def plots(tmp_path_factory):
    """The plots of ``parity_result()``, written once for the tests below: (directory, names)."""
    d = tmp_path_factory.mktemp("parity_plots")
    return d, report.write_plots(parity_result(), d)


def test_write_plots_writes_readable_pngs(plots):
    d, names = plots
    assert names == ["matrix.png", "raster.png", "rates.png", "mismatch.png"]
    assert sorted(p.name for p in d.iterdir()) == sorted(names)
    for name in names:
        img = _read_png(d / name)
        assert 250 <= img.shape[0] <= 1200 and 400 <= img.shape[1] <= 1800, (name, img.shape)
        assert img[..., :3].std() > 0.05, name        # not a blank canvas


def test_no_mismatch_heat_map_without_mismatches(tmp_path):
    res = parity_result(mismatch=False)
    res["pairs"] = [p for p in res["pairs"] if p["mismatches"] == 0]   # only exact and n/a pairs are left
    assert report.plot_mismatch(res, tmp_path / "none.png") is False
    assert list(tmp_path.iterdir()) == []
    assert "mismatch.png" not in report.markdown(res)


def _red_pixels(img):
    img = img[..., :3]
    return int(((img[..., 0] > 0.75) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)).sum())


def test_raster_marks_differing_spikes_in_red(plots, tmp_path):
    same = parity_result()
    # every stage shows the reference's spikes: nothing differs from the first stage of its domain
    same["raster"]["stages"] = {s: same["raster"]["stages"]["reference"] for s in same["raster"]["stages"]}
    report.plot_raster(same, tmp_path / "same.png")
    bad = _read_png(plots[0] / "raster.png")
    assert _red_pixels(bad) > 50
    assert _red_pixels(_read_png(tmp_path / "same.png")) == 0
    # the red is where cycle-loihi differs: its column (the last of five) in the q_lif row (the second of four)
    h, w = bad.shape[:2]
    red = np.argwhere((bad[..., 0] > 0.75) & (bad[..., 1] < 0.3) & (bad[..., 2] < 0.3))
    in_cycle_q = (red[:, 1] > 0.8 * w) & (red[:, 0] > 0.3 * h) & (red[:, 0] < 0.55 * h)
    assert in_cycle_q.sum() > 20


def test_plots_and_html_are_byte_identical_on_rerun(plots, tmp_path):
    d, names = plots
    assert report.write_plots(parity_result(), tmp_path) == names
    for name in names:
        assert (tmp_path / name).read_bytes() == (d / name).read_bytes(), name
    images = {n: (d / n).read_bytes() for n in names}
    assert report.html(parity_result(), images) == report.html(parity_result(), dict(images))
    assert report.markdown(parity_result()) == report.markdown(parity_result())


def test_html_is_self_contained_and_escapes_the_result(plots):
    import base64
    d, names = plots
    images = {n: (d / n).read_bytes() for n in names}
    page = report.html(parity_result(), images)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'src="http' not in page and "<link" not in page and "<script" not in page and "url(" not in page
    for n, data in images.items():
        assert page.count(f'src="data:image/png;base64,{base64.b64encode(data).decode()}"') == 1, n
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the matrix as a coloured table: the MISMATCH cell is red, the exact one green
    assert f'style="background:{report.COLORS["MISMATCH"]};color:#ffffff"><b>MISMATCH 3</b>' in page
    assert f'style="background:{report.COLORS["exact"]};color:#ffffff">exact (0 / 1,536)' in page
    # order: verdict, stages, matrix (table, then its picture), the other pictures, then the divergences
    order = ["<b>Verdict: FAIL</b>", "<h2>Stages</h2>", "<h2>Stage × stage matrix</h2>", 'alt="matrix.png"',
             'alt="raster.png"', 'alt="mismatch.png"', "<h2>Divergences</h2>"]
    assert [page.index(x) for x in order] == sorted(page.index(x) for x in order)


def test_summary_lines_name_the_mismatch_pair():
    res = parity_result()
    lines = report.summary_lines(res)
    assert 2 <= len(lines) <= 6
    assert lines[0].startswith("parity FAIL")
    bad = [l for l in lines if l.startswith("MISMATCH")]
    assert len(bad) == 1 and "golden-loihi vs cycle-loihi: 3 of 1,536 values" in bad[0]
    assert f"layer {LAYERS[1]}, step 1" in bad[0]
    assert "pairs: 1 exact, 2 explained, 1 MISMATCH, 6 differs, 5 n/a" in lines
    assert "did not run: lava (not applicable) (reasons in parity.md)" in lines
    good = report.summary_lines(parity_result(mismatch=False))
    assert good[0].startswith("parity PASS") and not any(l.startswith("MISMATCH") for l in good)


def test_float_mismatch_names_the_first_non_tie_flip():
    res = parity_result(mismatch=False)
    p = _pair_of(res, "torch", "reference")
    non_tie = {"layer": LAYERS[3], "step": 3, "sample": 2, "index": [0, 11], "a_value": 1.0, "b_value": 0.0}
    p.update(verdict="MISMATCH", ok=False)
    p["float"].update(non_tie_flips=1, first_non_tie=non_tie)
    res["ok"] = False
    md = report.markdown(res)
    section = md.split("### torch vs reference: MISMATCH (2 of 1,536 values differ)")[1].split("###")[0]
    assert f"**first non-tie flip: **layer `{LAYERS[3]}`, step 3 (sample 2, index [0, 11]): torch = 1, reference = 0" \
        in section
    assert "2 threshold ties flipped, 1 non-tie flips" in section
    assert "| **torch** | · | **MISMATCH 2** |" in md
    line = [l for l in report.summary_lines(res) if l.startswith("MISMATCH")]
    assert line == [f"MISMATCH torch vs reference: 2 of 1,536 values; first non-tie flip at layer {LAYERS[3]}, "
                    "step 3 (sample 2, index [0, 11]): torch = 1, reference = 0"]


@pytest.mark.parametrize("n_stages", [1, 10])
def test_plots_cope_with_one_and_ten_stages(tmp_path, n_stages):
    res = parity_result()
    names = list(res["stages"])
    if n_stages == 1:   # no pair at all: no mismatch heat map
        res["stages"] = {"torch": res["stages"]["torch"]}
        res["pairs"] = []
        res["raster"]["stages"] = {"torch": res["raster"]["stages"]["torch"]}
        assert report.write_plots(res, tmp_path) == ["matrix.png", "raster.png", "rates.png"]
    else:   # four more Loihi-domain stages that mismatch every other stage
        for k in range(4):
            extra = f"copy-{k}"
            res["stages"][extra] = dict(res["stages"]["golden-loihi"], title=f"copy {k}")
            res["raster"]["stages"][extra] = res["raster"]["stages"]["cycle-loihi"]
            res["pairs"] += [dict(_pair_of(res, "golden-loihi", "cycle-loihi"), a=s, b=extra) for s in names]
            names.append(extra)
        report.plot_matrix(res, tmp_path / "matrix.png")
        report.plot_raster(res, tmp_path / "raster.png")
        for name in ("matrix.png", "raster.png"):   # the size is capped
            h, w = _read_png(tmp_path / name).shape[:2]
            assert h <= 10 * parity_plots.DPI + 1 and w <= 16 * parity_plots.DPI + 1, (name, h, w)
    lines = report.summary_lines(res)
    assert 2 <= len(lines) <= 6
    if n_stages == 10:
        assert "more MISMATCH pairs: see parity.md" in lines[3]
    md = report.markdown(res)
    assert len(md.split("## Stage × stage matrix")[1].split("\n\n")[1].splitlines()) == 2 + n_stages
