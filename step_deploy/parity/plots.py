"""The PNG plots of the parity report: the stage x stage matrix, the spike raster of one sample
across stages, the firing rate per layer and stage, the mismatch heat map. Deterministic: fixed
dpi, no software metadata."""
from __future__ import annotations

import numpy as np

from .cells import (COLORS, DPI, MAX_MISMATCH_PANELS, _cell_short, _mean_rate, _mismatch_pairs, _pair_map,
                    _panel_pairs, _ran, _rate, _short, _si, _text_color, _verdict, stage_names, verdict_color)

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
