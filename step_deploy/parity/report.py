"""The parity report of ``step-parity``: ``parity.md``, the PNG plots (stage x stage matrix, spike
raster, firing rates, mismatch heat map) and one self-contained HTML page, all made from the merged
result dict (schema: ``step_deploy/parity/merge.py``). Presentation only: nothing here compares
spikes. Every output is deterministic: no dates, PNGs without software metadata, fixed dpi.

Markdown and HTML are rendered from one list of blocks (``_document``) so they say the same thing."""
from __future__ import annotations

import base64
import html as _html
from collections import namedtuple

import numpy as np

DPI = 110
MAX_MISMATCH_PANELS = 6
SEVERITY = ("MISMATCH", "explained", "differs", "exact", "n/a")   # order of the divergence sections
PLOTS = {"matrix.png": "stage x stage verdicts (colour: verdict; text: mismatches or prediction agreement)",
         "raster.png": "spikes of one sample for the chosen layers, side by side across stages "
                       "(red: differs from the first stage of the same domain)",
         "rates.png": "firing rate per layer per stage, layers in causal order",
         "mismatch.png": "mismatches per layer and step for every pair that has any"}

# verdict colours, shared by the PNG matrix and the HTML table
COLORS = {"exact": "#2e7d32", "explained": "#d4e157", "MISMATCH": "#d32f2f", "n/a": "#e0e0e0",
          "diagonal": "#ffffff"}
_DIFFERS_LOW, _DIFFERS_HIGH = (0xcf, 0xd8, 0xdc), (0x1f, 0x5f, 0xa8)   # grey at <= 50 % agreement -> blue at 100 %

Cell = namedtuple("Cell", "content bg title", defaults=(None,))   # a coloured table cell; title: HTML tooltip


# --------------------------------------------------------------------------- small formatters

def _int(n) -> str:
    return f"{int(n):,}"


def _si(n) -> str:
    n = int(n)
    for div, suf in ((10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suf}"
    return str(n)


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _rate(x) -> str:
    return "—" if x is None else f"{x:.2%}"


def _short(name: str, n: int = 30) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


# --------------------------------------------------------------------------- reading the result

def stage_names(result: dict) -> list:
    return list(result.get("stages", {}))


def _pair_map(result: dict) -> dict:
    out = {}
    for p in result.get("pairs", []):
        out[(p["a"], p["b"])] = out[(p["b"], p["a"])] = p
    return out


def _verdict(pair) -> str:
    return (pair or {}).get("verdict") or "n/a"


def _mismatch_pairs(result: dict) -> list:
    """Pairs with mismatches, the most severe first (registry order within a verdict)."""
    pairs = [p for p in result.get("pairs", []) if (p.get("mismatches") or 0) > 0]
    return sorted(pairs, key=lambda p: SEVERITY.index(_verdict(p)) if _verdict(p) in SEVERITY else 0)


def _mean_rate(stage: dict):
    rates = list((stage.get("firing_rate") or {}).values())
    return float(np.mean(rates)) if rates else None


def _status(stage: dict) -> str:
    st = stage.get("status", "?")
    return st if st == "ok" else f"{st}: {stage.get('reason') or 'no reason given'}"


def _ran(stage: dict) -> bool:
    return stage.get("status") == "ok"


def verdict_color(pair) -> str:
    v = _verdict(pair)
    if v != "differs":
        return COLORS.get(v, COLORS["n/a"])
    agree = pair.get("prediction_agreement")
    f = 0.5 if agree is None else min(1.0, max(0.0, (agree - 0.5) / 0.5))
    return "#" + "".join(f"{round(lo + f * (hi - lo)):02x}" for lo, hi in zip(_DIFFERS_LOW, _DIFFERS_HIGH))


def _text_color(bg: str) -> str:
    r, g, b = (int(bg[i:i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def cell_text(pair) -> list:
    """The matrix cell of a pair as inline segments (``("b", text)`` is bold)."""
    v = _verdict(pair)
    m, n = pair.get("mismatches", 0) if pair else 0, pair.get("values", 0) if pair else 0
    if v == "exact":
        return [f"exact ({_int(m)} / {_int(n)})"]
    if v == "explained":
        ties = ((pair.get("float") or {}).get("rounding_flips", 0))
        return [f"explained: {_int(ties)} ties → {_int(m)} mism."]
    if v == "MISMATCH":
        return [("b", f"MISMATCH {_int(m)}")]
    if v == "differs":
        agree = pair.get("prediction_agreement")
        return [f"differs: {agree:.1%} pred. agree" if agree is not None else f"differs: {_int(m)} mism."]
    return ["n/a"]


def _cell_short(pair) -> str:
    """The matrix cell of a pair in the PNG: two short lines."""
    v = _verdict(pair)
    m, n = pair.get("mismatches", 0), pair.get("values", 0)
    if v == "exact":
        return f"exact\n0 / {_si(n)}"
    if v == "explained":
        return f"{_si((pair.get('float') or {}).get('rounding_flips', 0))} ties\n→ {_si(m)} mism."
    if v == "MISMATCH":
        return f"MISMATCH\n{_si(m)}"
    if v == "differs":
        agree = pair.get("prediction_agreement")
        return f"{agree:.1%}\nagree" if agree is not None else f"differs\n{_si(m)}"
    return "n/a"


def _where(first: dict, a: str, b: str) -> list:
    idx = ", ".join(str(i) for i in first.get("index", []))
    return ["layer ", ("code", first.get("layer", "?")), f", step {first.get('step')} (sample {first.get('sample')},"
            f" index [{idx}]): {a} = {_num(first.get('a_value'))}, {b} = {_num(first.get('b_value'))}"]


# --------------------------------------------------------------------------- the document

def _document(result: dict) -> list:
    names = stage_names(result)
    stages, pairs = result.get("stages", {}), _pair_map(result)
    doc = [("h1", [f"Parity of {result.get('checkpoint', '?')} ({result.get('arch', '?')})"])]
    if result.get("data_is_noise"):
        doc.append(("banner", [("b", "NOISE INPUTS:"), " the samples are random noise, not data; agreement on "
                               "noise says little about agreement on real inputs."]))
    doc.append(("ul", [["checkpoint: ", ("code", str(result.get("checkpoint", "?"))), "; architecture: ",
                        ("code", str(result.get("arch", "?")))],
                       [f"data: {result.get('data', '?')}"],
                       [f"T = {result.get('steps', '?')} steps; {result.get('samples', '?')} samples selected"]]))
    doc.append(("p", [("b", f"Verdict: {'PASS' if result.get('ok') else 'FAIL'}"), f" — {result.get('summary', '')}"]))

    doc.append(("h2", ["Stages"]))
    rows = [[n, s.get("title", ""), s.get("kind", ""), s.get("domain", ""), _status(s), _int(s.get("samples") or 0),
             "—" if s.get("accuracy") is None else f"{s['accuracy']:.4f}", _rate(_mean_rate(s))]
            for n, s in stages.items()]
    doc.append(("table", ["stage", "title", "kind", "domain", "status", "samples", "accuracy",
                          "mean firing rate (over layers)"], rows))

    doc.append(("h2", ["Stage × stage matrix"]))
    mrows = [[("b", a)] + [Cell(["·"], COLORS["diagonal"]) if a == b else
                           Cell(cell_text(pairs.get((a, b))), verdict_color(pairs.get((a, b))),
                                (pairs.get((a, b)) or {}).get("reason")) for b in names]
             for a in names]
    doc.append(("table", [""] + names, mrows))
    doc.append(("p", ["exact: integer stages of one domain, every spike of every layer and step equal; explained: "
                      "float pair whose mismatches are all threshold ties or their cascade; MISMATCH: a real fault; "
                      "differs: different arithmetic (float vs integer, Loihi vs FPGA), agreement reported only; "
                      "n/a: one side did not run."]))
    doc.append(("img", "matrix.png"))
    doc.append(("pictures",))   # HTML: the other images, before the details

    bad = _mismatch_pairs(result)
    faults = [p for p in bad if _verdict(p) != "differs"]
    informational = [p for p in bad if _verdict(p) == "differs"]
    if faults:
        doc.append(("h2", ["Divergences"]))
    for p in faults:
        doc += _divergence(result, p)
    if informational:
        doc.append(("h2", ["Differences between arithmetics (informational)"]))
        doc.append(("p", ["Float against integer, or Loihi against FPGA fixed point: these pairs are expected to "
                          "differ; where they first do is shown for orientation."]))
    shown = [p for p in _panel_pairs(result, bad) if _verdict(p) == "differs"]
    for p in shown:
        doc += _divergence(result, p)
    rest = [p for p in informational if p not in shown]
    if rest:
        doc.append(("p", ["The other informational pairs (their stages equal the ones above wherever the exact "
                          "pairs hold):"]))
        doc.append(("table", ["pair", "mismatches", "first divergence", "prediction agreement"],
                    [[f"{p['a']} vs {p['b']}", f"{_int(p.get('mismatches', 0))} of {_int(p.get('values', 0))}",
                      (f"{p['first']['layer']} step {p['first']['step']} sample {p['first']['sample']}"
                       if p.get("first") else "—"),
                      "—" if p.get("prediction_agreement") is None else f"{p['prediction_agreement']:.2%}"]
                     for p in rest]))

    doc.append(("h2", ["Energy counters"]))
    doc.append(("p", ["Spikes per layer and synaptic operations per synapse, as each stage counts them (the PyTorch "
                      "model through forward hooks, the interpreters through the energy module, the cycle-level "
                      "simulators from their own events): equal wherever the spikes are equal. Pairs whose spikes "
                      "differ are left out."]))
    crows = [_counter_row(p) for p in result.get("pairs", [])
             if _verdict(p) != "n/a" and (not (p.get("mismatches") or 0) or _verdict(p) == "MISMATCH")]
    doc.append(("table", ["pair", "keys compared", "equal", "differing keys (a vs b)"], crows) if crows
               else ("p", ["No pair ran on both sides."]))

    doc.append(("plots", [f for f in PLOTS if f != "mismatch.png" or bad]))   # Markdown: the list of plots
    return doc


def _divergence(result: dict, p: dict) -> list:
    a, b = p["a"], p["b"]
    out = [("h3", [f"{a} vs {b}: {_verdict(p)} ({_int(p.get('mismatches', 0))} of {_int(p.get('values', 0))} "
                   f"values differ)"])]
    first = p.get("first")
    lines = [["first divergent ", *_where(first, a, b)] if first else ["no first divergence recorded"]]
    if p.get("prediction_agreement") is not None:
        lines.append([f"prediction agreement: {p['prediction_agreement']:.2%} over {_int(p.get('samples', 0))} samples"])
    fl = p.get("float")
    if fl:
        lines.append([f"rounding attribution (teacher forcing): {_int(fl.get('rounding_flips', 0))} threshold ties "
                      f"flipped, {_int(fl.get('non_tie_flips', 0))} non-tie flips, "
                      f"{_int(fl.get('cascade_mismatches', 0))} cascade mismatches; largest tie distance "
                      f"{_num(float(fl.get('max_tie_distance', 0.0)))}"])
        if fl.get("first_non_tie"):
            lines.append([("b", "first non-tie flip: "), *_where(fl["first_non_tie"], a, b)])
    out.append(("ul", lines))
    rows = []
    for layer in result.get("layers", []):
        d = (p.get("per_layer") or {}).get(layer)
        if d is None:
            continue
        mark = " ← first" if first and first.get("layer") == layer else ""
        rows.append([("code", layer), _int(d.get("values", 0)), _int(d.get("mismatches", 0)) + mark,
                     ", ".join(_int(x) for x in d.get("per_step", []))])
    if rows:
        out.append(("table", ["layer", "values", "mismatches", "per-step mismatches"], rows))
    return out


def _counter_row(p: dict) -> list:
    c = p.get("counters") or {}
    pair = f"{p['a']} vs {p['b']}"
    if not c or not c.get("compared"):
        return [pair, "0", "—", "no common counters"]
    diffs = c.get("differences") or []
    text = "; ".join(f"{d.get('key')}: {_int(d.get('a', 0))} vs {_int(d.get('b', 0))}" for d in diffs[:4])
    if len(diffs) > 4:
        text += f"; +{len(diffs) - 4} more"
    equal = "yes" if c.get("equal") else "no"
    if not c.get("equal") and not p.get("mismatches"):
        equal = [("b", "no, although the spikes are equal")]
    return [pair, _int(c["compared"]), equal, text or "—"]


# --------------------------------------------------------------------------- Markdown

def _md_inline(content, in_table: bool = False) -> str:
    if isinstance(content, Cell):
        content = content.content
    segs = [content] if isinstance(content, (str, tuple)) else content
    out = []
    for s in segs:
        kind, text = s if isinstance(s, tuple) else ("", s)
        text = str(text)
        if kind != "code":
            text = text.replace("<", "\\<")   # no raw HTML from the result in the Markdown
        if in_table:
            text = text.replace("|", "\\|").replace("\n", " ")
        out.append(f"`{text}`" if kind == "code" else f"**{text}**" if kind == "b" else text)
    return "".join(out)


def markdown(result: dict) -> str:
    """``parity.md``."""
    lines = []
    for block in _document(result):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + _md_inline(block[1]), ""]
        elif kind == "banner":
            lines += ["> " + _md_inline(block[1]), ""]
        elif kind == "p":
            lines += [_md_inline(block[1]), ""]
        elif kind == "ul":
            lines += ["- " + _md_inline(item) for item in block[1]] + [""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_inline(h, True) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_inline(c, True) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "plots":
            lines += ["## Plots", ""] + [f"- [`{f}`]({f}): {PLOTS[f]}" for f in block[1]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}
th{background:#f2f2f2}.banner{background:#fff3cd;border:2px solid #e0a800;padding:.5em;font-weight:bold}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}figure{margin:1em 0}figcaption{font-size:13px;color:#555}
code{background:#f4f4f4;padding:0 2px}"""


def _h_inline(content) -> str:
    segs = [content] if isinstance(content, (str, tuple)) else content
    out = []
    for s in segs:
        kind, text = s if isinstance(s, tuple) else ("", s)
        text = _html.escape(str(text))
        out.append(f"<code>{text}</code>" if kind == "code" else f"<b>{text}</b>" if kind == "b" else text)
    return "".join(out)


def _h_cell(c, tag: str = "td") -> str:
    if isinstance(c, Cell):
        tip = f' title="{_html.escape(str(c.title))}"' if c.title else ""
        return (f'<{tag}{tip} style="background:{c.bg};color:{_text_color(c.bg)}">'
                f'{_h_inline(c.content)}</{tag}>')
    return f"<{tag}>{_h_inline(c)}</{tag}>"


def _h_img(name: str, data: bytes) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    cap = _html.escape(f"{name}: {PLOTS.get(name, '')}".rstrip(": "))
    return (f'<figure><img alt="{_html.escape(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{cap}</figcaption></figure>")


def html(result: dict, images: dict) -> str:
    """One self-contained HTML page (no server, nothing external): the document of ``markdown`` with
    the matrix as a coloured table and every image of ``images`` (file name -> PNG bytes) embedded."""
    title = _html.escape(f"Parity of {result.get('checkpoint', '?')} ({result.get('arch', '?')})")
    body, shown = [], set()
    for block in _document(result):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_h_inline(block[1])}</{kind}>")
        elif kind == "banner":
            body.append(f'<div class="banner">{_h_inline(block[1])}</div>')
        elif kind == "p":
            body.append(f"<p>{_h_inline(block[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_h_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(_h_cell(h, "th") for h in block[1])
            rows = "".join("<tr>" + "".join(_h_cell(c) for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "img" and block[1] in images:
            body.append(_h_img(block[1], images[block[1]]))
            shown.add(block[1])
        elif kind == "pictures":
            rest = [n for n in images if n not in shown]
            if rest:
                body.append("<h2>Pictures</h2>")
                body += [_h_img(n, images[n]) for n in rest]
                shown.update(rest)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- CLI summary

def summary_lines(result: dict) -> list:
    """2 to 6 short lines for the terminal: the verdict, each MISMATCH pair with its first divergence
    (at most 3), the count of pairs per verdict, and the stages that did not run."""
    lines = [f"parity {'PASS' if result.get('ok') else 'FAIL'}: {result.get('summary', '')}"]
    bad = [p for p in result.get("pairs", []) if _verdict(p) == "MISMATCH"]
    for p in bad[:3]:
        non_tie = (p.get("float") or {}).get("first_non_tie")   # a float pair's fault is its first non-tie flip
        first = non_tie or p.get("first")
        where = "".join(s[1] if isinstance(s, tuple) else s for s in _where(first, p["a"], p["b"])) if first else \
            "no first divergence recorded"
        lines.append(f"MISMATCH {p['a']} vs {p['b']}: {_int(p.get('mismatches', 0))} of {_int(p.get('values', 0))} "
                     f"values; first {'non-tie flip ' if non_tie else ''}at {where}")
    if len(bad) > 3:
        lines[-1] += f" (+{len(bad) - 3} more MISMATCH pairs: see parity.md)"
    counts = {}
    for p in result.get("pairs", []):
        counts[_verdict(p)] = counts.get(_verdict(p), 0) + 1
    lines.append("pairs: " + ", ".join(f"{counts[v]} {v}" for v in ("exact", "explained", "MISMATCH", "differs", "n/a")
                                       if v in counts) if counts else "pairs: none (fewer than 2 stages)")
    idle = [f"{n} ({s.get('status')})" for n, s in result.get("stages", {}).items() if not _ran(s)]
    if idle:
        lines.append("did not run: " + ", ".join(idle) + " (reasons in parity.md)")
    return lines


# --------------------------------------------------------------------------- plots

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> None:
    """PNG without software/date metadata at a fixed dpi: byte-identical reruns."""
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def _rgb(hexcol: str) -> tuple:
    return tuple(int(hexcol[i:i + 2], 16) / 255 for i in (1, 3, 5))


def plot_matrix(result: dict, path) -> None:
    """Stage x stage heat map coloured by verdict, each cell annotated; symmetric."""
    plt = _plt()
    from matplotlib.patches import Patch, Rectangle
    names, pairs = stage_names(result), _pair_map(result)
    n = len(names)
    side = min(10.0, 2.4 + 0.8 * n)
    fig, ax = plt.subplots(figsize=(side + 1.8, side))
    fs = 8 if n <= 4 else 7 if n <= 8 else 6
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            p = pairs.get((a, b))
            bg = COLORS["diagonal"] if a == b else verdict_color(p)
            hatch = "//" if a != b and _verdict(p) == "n/a" else None
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=_rgb(bg), edgecolor="white", lw=1.5, hatch=hatch))
            if a == b:
                continue
            ax.text(j + 0.5, i + 0.5, _cell_short(p or {}), ha="center", va="center", fontsize=fs, color=_text_color(bg),
                    fontweight="bold" if _verdict(p) == "MISMATCH" else "normal")
    ax.set_xlim(0, max(n, 1))
    ax.set_ylim(max(n, 1), 0)
    ax.set_xticks([k + 0.5 for k in range(n)])
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=fs + 1)
    ax.set_yticks([k + 0.5 for k in range(n)])
    ax.set_yticklabels(names, fontsize=fs + 1)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_aspect("equal")
    legend = [Patch(facecolor=_rgb(COLORS["exact"]), label="exact"),
              Patch(facecolor=_rgb(COLORS["explained"]), label="explained (float ties)"),
              Patch(facecolor=_rgb(COLORS["MISMATCH"]), label="MISMATCH"),
              Patch(facecolor=_rgb(verdict_color({"verdict": "differs", "prediction_agreement": 1.0})),
                    label="differs: 100% agree"),
              Patch(facecolor=_rgb(verdict_color({"verdict": "differs", "prediction_agreement": 0.5})),
                    label="differs: <= 50% agree"),
              Patch(facecolor=_rgb(COLORS["n/a"]), hatch="//", label="n/a (did not run)")]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=fs + 1, frameon=False)
    verdict = "PASS" if result.get("ok") else "FAIL"
    ax.set_title(f"Parity {verdict}: {result.get('arch', '')}, T = {result.get('steps', '?')}, "
                 f"{result.get('samples', '?')} samples" + (" (NOISE inputs)" if result.get("data_is_noise") else ""),
                 fontsize=fs + 3)
    fig.tight_layout()
    _save(fig, path)


def _band_layout(n: int, steps: int) -> tuple:
    """Neurons per row ``w`` and rows per step ``r`` so that the T-stacked picture is about square."""
    w = int(min(n, max(16, np.ceil(np.sqrt(max(n, 1) * steps)))))
    return max(w, 1), max(1, int(np.ceil(n / max(w, 1))))


def _spike_grid(points, steps: int, n: int) -> np.ndarray:
    grid = np.zeros((steps, n), dtype=bool)
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    keep = (pts[:, 0] >= 0) & (pts[:, 0] < steps) & (pts[:, 1] >= 0) & (pts[:, 1] < n)
    grid[pts[keep, 0], pts[keep, 1]] = True
    return grid


_RASTER_COLORS = np.array([[0.93, 0.93, 0.93],   # 0: no neuron (padding of the last row of a band)
                           [1.0, 1.0, 1.0],      # 1: silent
                           [0.0, 0.0, 0.0],      # 2: spike
                           [0.87, 0.08, 0.08],   # 3: differs from the first stage of the domain
                           [0.78, 0.80, 0.84],   # 4: gap between panels
                           [0.97, 0.97, 0.97]])  # 5: layer not recorded by this stage


def _panel_codes(g: np.ndarray, diff: np.ndarray, w: int, r: int) -> np.ndarray:
    """The (steps * r, w) picture of one layer: each step a band of r rows of w neurons."""
    steps, n = g.shape
    codes = np.zeros((steps, r * w), dtype=np.uint8)
    codes[:, :n] = 1
    codes[:, :n][g] = 2
    codes[:, :n][diff] = 3
    return codes.reshape(steps * r, w)


def _resample(codes: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize to (h, w) keeping the most important code of every block (differs > spike > silent), so that
    shrinking never hides a spike or a difference; growing repeats pixels."""
    rows = (np.arange(h) * codes.shape[0]) // h
    cols = (np.arange(w) * codes.shape[1]) // w
    return np.maximum.reduceat(np.maximum.reduceat(codes, rows, axis=0), cols, axis=1)


def plot_raster(result: dict, path) -> None:
    """Spikes of one sample: one row per chosen layer, one column per stage that ran it, drawn as one picture.
    In a panel each step is a band (neurons row-major inside it); black: spike, red: differs from the first
    stage of the same domain (a spike there and not here, or here and not there)."""
    plt = _plt()
    raster = result.get("raster") or {}
    layers, recorded = list(raster.get("layers", [])), raster.get("stages") or {}
    stages = result.get("stages", {})
    shown = [s for s in stage_names(result) if s in recorded] + [s for s in recorded if s not in stages]
    if not layers or not shown:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no spike raster recorded", ha="center", va="center")
        _save(fig, path)
        return
    rows, cols = len(layers), len(shown)
    fw, fh = min(16.0, 1.7 + 1.45 * cols), min(10.0, 1.0 + 1.55 * rows)
    left, right, top, bottom = 1.45, 0.1, 0.62, 0.3   # inches
    aw, ah = int((fw - left - right) * DPI), int((fh - top - bottom) * DPI)   # axes size in pixels
    gap = 3
    cw, ch = (aw - gap) // cols - gap, (ah - gap) // rows - gap
    canvas = np.full((rows * (ch + gap) + gap, cols * (cw + gap) + gap), 4, dtype=np.uint8)
    ref = {}
    for s in shown:
        ref.setdefault(stages.get(s, {}).get("domain", "?"), s)
    fig = plt.figure(figsize=(fw, fh))
    ax = fig.add_axes([left / fw, bottom / fh, 1 - (left + right) / fw, 1 - (top + bottom) / fh])
    seps, rings, labels = [], [], []
    for i, layer in enumerate(layers):
        steps, n = (list(raster.get("shape", {}).get(layer, [result.get("steps", 1), 1])) + [1, 1])[:2]
        w, r = _band_layout(n, steps)
        grids = {s: _spike_grid(recorded[s][layer], steps, n) for s in shown if layer in recorded[s]}
        y0 = gap + i * (ch + gap)
        labels.append(f"{_short(layer, 26)}\n{n:,} neurons" + (f", {w}/row" if r > 1 else ""))
        for j, s in enumerate(shown):
            x0 = gap + j * (cw + gap)
            if s not in grids:
                canvas[y0:y0 + ch, x0:x0 + cw] = 5
                ax.text(x0 + cw / 2, y0 + ch / 2, "not recorded", ha="center", va="center", fontsize=6, color="grey")
                continue
            base = grids.get(ref[stages.get(s, {}).get("domain", "?")], grids[s])
            diff = grids[s] ^ base
            canvas[y0:y0 + ch, x0:x0 + cw] = _resample(_panel_codes(grids[s], diff, w, r), ch, cw)
            seps += [(y0 + t * ch / steps - 0.5, x0 - 0.5, x0 + cw - 0.5) for t in range(1, steps)]
            t_i, n_i = np.nonzero(diff)
            if 0 < t_i.size <= 400:   # rings keep single differing spikes visible
                rings += [(x0 + (k % w + 0.5) * cw / w - 0.5, y0 + (t * r + k // w + 0.5) * ch / (steps * r) - 0.5)
                          for t, k in zip(t_i, n_i)]
            if t_i.size:
                ax.text(x0 + cw - 2, y0 + ch - 2, f"{t_i.size} differ", ha="right", va="bottom", fontsize=5,
                        color="white", bbox=dict(facecolor="#c62828", edgecolor="none", pad=1))
        band = ch / steps
        every = max(1, int(np.ceil(9 / band)))   # step labels at least ~9 px apart
        for t in range(0, steps, every):   # step labels just left of the first panel
            ax.text(-2, y0 + (t + 0.5) * band - 0.5, f"t{t}", fontsize=5, va="center", ha="right", color="#1f5fa8")
    ax.imshow(_RASTER_COLORS[canvas], aspect="auto", interpolation="nearest")
    if seps:
        y, x0s, x1s = zip(*seps)
        ax.hlines(y, x0s, x1s, colors="#4a90d9", linewidth=0.5)
    if rings:
        xs, ys = zip(*rings)
        ax.scatter(xs, ys, s=36, facecolors="none", edgecolors="#d50000", linewidths=0.7)
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.set_xticks([gap + j * (cw + gap) + cw / 2 for j in range(cols)])
    ax.set_xticklabels(shown, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([gap + i * (ch + gap) + ch / 2 for i in range(rows)])
    ax.set_yticklabels(labels, fontsize=6)
    ax.tick_params(length=0)
    ax.tick_params(axis="y", pad=13)   # room for the step labels
    for sp in ax.spines.values():
        sp.set_visible(False)
    refs = ", ".join(f"{s} ({d})" for d, s in ref.items())
    fig.suptitle(f"Spikes of sample {raster.get('sample', 0)}: black spike, red differs from {refs}; "
                 f"each band one step, t0 at the top", fontsize=8, y=1 - 0.12 / fh, va="top")
    absent = [s for s in stage_names(result) if s not in shown]
    if absent:
        fig.text(0.01, 0.08 / fh, "not shown (did not run): " + ", ".join(absent), fontsize=6, color="#555555")
    _save(fig, path)


def plot_rates(result: dict, path) -> None:
    """Firing rate per layer (causal order) with one line per stage that ran; the others are named in the legend."""
    plt = _plt()
    layers = list(result.get("layers", []))
    ran = [(n, s) for n, s in result.get("stages", {}).items() if _ran(s) and s.get("firing_rate")]
    idle = [f"{n} ({s.get('status')})" for n, s in result.get("stages", {}).items() if (n, s) not in ran]
    fig, ax = plt.subplots(figsize=(min(16.0, 5.5 + 0.28 * len(layers)), 4.6))
    markers = "osD^vP*Xh<>"
    x = np.arange(len(layers))
    for k, (name, s) in enumerate(ran):   # later stages smaller on top: equal rates stay distinguishable
        y = np.array([s["firing_rate"].get(l, np.nan) * 100 for l in layers], dtype=float)
        ax.plot(x, y, marker=markers[k % len(markers)], ms=max(2.5, 9 - 0.7 * k), lw=1.0, alpha=0.85,
                label=f"{name} ({_rate(_mean_rate(s))} mean)")
    ax.set_xticks(x)
    ax.set_xticklabels([_short(l, 30) for l in layers], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("firing rate (% of neurons per step)", fontsize=8)
    ax.set_xlabel("spiking layer (causal order)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    title = "not run: " + ", ".join(idle) if idle else None
    if ran or idle:
        leg = ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title, title_fontsize=6,
                        frameon=False)
        leg._legend_box.align = "left"
    ax.set_title(f"Firing rate per layer and stage ({result.get('arch', '')}, T = {result.get('steps', '?')})",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _panel_pairs(result: dict, bad: list) -> list:
    """The pairs the heat map shows: every fault (MISMATCH, explained) first; of the informational
    'differs' pairs only those between the first stage of each domain (e.g. torch vs golden-loihi),
    since the other stages of a domain equal their first stage wherever the exact pairs hold."""
    firsts: dict = {}
    for name, st in result.get("stages", {}).items():
        if _ran(st):
            firsts.setdefault(st.get("domain"), name)
    reps = set(firsts.values())
    faults = [p for p in bad if _verdict(p) != "differs"]
    return faults + [p for p in bad if _verdict(p) == "differs" and p["a"] in reps and p["b"] in reps]


def plot_mismatch(result: dict, path) -> bool:
    """Layer x step heat map of mismatches, one panel per pair with any (most severe first, at most 6).
    Returns False and writes nothing when no pair has a mismatch."""
    bad = _mismatch_pairs(result)
    if not bad:
        return False
    plt = _plt()
    from matplotlib.patches import Rectangle
    shown = _panel_pairs(result, bad)[:MAX_MISMATCH_PANELS]
    layers = [l for l in result.get("layers", []) if any(l in (p.get("per_layer") or {}) for p in shown)]
    steps = int(result.get("steps") or 1)
    ncol = min(3, len(shown))
    nrow = -(-len(shown) // ncol)
    fig, axes = plt.subplots(nrow, ncol, squeeze=False, sharey=True,
                             figsize=(min(16.0, 2.4 + (1.6 + 0.3 * steps) * ncol),
                                      min(11.0, 0.9 + nrow * (1.0 + 0.2 * len(layers)))))
    reds = plt.get_cmap("Reds")
    annotate = len(layers) <= 40 and steps <= 12
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, p in zip(axes.flat, shown):
        m = np.full((len(layers), steps), np.nan)
        for i, l in enumerate(layers):
            d = (p.get("per_layer") or {}).get(l)
            if d is not None:
                m[i, :] = (list(d.get("per_step", [])) + [0] * steps)[:steps]
        top = np.nanmax(m) if np.isfinite(m).any() else 0
        img = np.ones((len(layers), steps, 3))
        img[np.isnan(m)] = 0.85
        hot = np.nan_to_num(m) > 0
        if top > 0:
            img[hot] = reds(0.25 + 0.75 * np.log1p(m[hot]) / np.log1p(top))[:, :3]
        ax.imshow(img, aspect="auto", interpolation="nearest")
        if annotate:
            for (i, t), v in np.ndenumerate(m):
                if np.isfinite(v) and v > 0:
                    ax.text(t, i, _si(v), ha="center", va="center", fontsize=5,
                            color="white" if v > top / 3 else "black")
        first = p.get("first")
        if first and first.get("layer") in layers:
            ax.add_patch(Rectangle((int(first.get("step", 0)) - 0.5, layers.index(first["layer"]) - 0.5), 1, 1,
                                   fill=False, edgecolor="#1f5fa8", lw=1.6))
        ax.set_xticks(range(steps))
        ax.set_xticklabels([str(t) for t in range(steps)], fontsize=6)
        ax.set_xlabel("step", fontsize=7)
        ax.set_title(f"{p['a']} vs {p['b']}\n{_verdict(p)}: {_si(p.get('mismatches', 0))} of "
                     f"{_si(p.get('values', 0))}", fontsize=7, color="#b71c1c" if _verdict(p) == "MISMATCH" else "black")
    for row in axes:
        row[0].set_yticks(range(len(layers)))
        row[0].set_yticklabels([_short(l, 30) for l in layers], fontsize=6)
    more = f"; {len(bad) - len(shown)} more pair(s) in parity.md" if len(bad) > len(shown) else ""
    fig.suptitle(f"Mismatches per layer and step (white: none, grey: layer not compared, blue box: first "
                 f"divergence){more}", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return True


def write_plots(result: dict, directory) -> list:
    """Write matrix.png, raster.png, rates.png and (when any pair mismatches) mismatch.png into ``directory``;
    returns the file names written, in that order."""
    from pathlib import Path
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    plot_matrix(result, d / "matrix.png")
    plot_raster(result, d / "raster.png")
    plot_rates(result, d / "rates.png")
    names = ["matrix.png", "raster.png", "rates.png"]
    if plot_mismatch(result, d / "mismatch.png"):
        names.append("mismatch.png")
    return names
