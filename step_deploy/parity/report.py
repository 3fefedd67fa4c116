"""The parity report of ``step-parity``: ``parity.md``, the PNG plots (stage x stage matrix, spike
raster, firing rates, mismatch heat map) and one self-contained HTML page, all made from the merged
result dict (schema: ``step_deploy/parity/merge.py``). Presentation only: nothing here compares
spikes. Every output is deterministic: no dates, PNGs without software metadata, fixed dpi.

Markdown and HTML are rendered from one list of blocks (``_document``) so they say the same thing.
The plots live in ``plots.py`` (re-exported here), what both share in ``cells.py``."""
from __future__ import annotations

import base64
import html as _html

from .cells import (COLORS, PLOTS, Cell, _int, _mean_rate, _mismatch_pairs, _num, _pair_map, _panel_pairs, _ran,
                    _rate, _status, _text_color, _verdict, _where, cell_text, stage_names, verdict_color)
from .plots import plot_matrix, plot_mismatch, plot_rates, plot_raster, write_plots


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


__all__ = ["markdown", "html", "summary_lines", "write_plots", "plot_matrix", "plot_raster", "plot_rates",
           "plot_mismatch"]
