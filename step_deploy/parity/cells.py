"""What the parity report and its plots share: verdict colours, cell texts, number formatters and
which pairs to show (``step_deploy/parity/report.py``, ``step_deploy/parity/plots.py``)."""
from __future__ import annotations

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
