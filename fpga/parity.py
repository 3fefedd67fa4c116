"""C simulation vs the integer golden model: every layer's output at every step compared element
by element (mismatch counts per layer, the first mismatch located), predictions and accuracy;
and the testbench data files (inputs and expected outputs written from the golden model)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from step_deploy import ir
from step_deploy.simulators.golden import run_golden

from .csim import CSimModel
from .hls_writer import HlsProject


def golden_run(proj: HlsProject, x: torch.Tensor, batch: int = 64) -> tuple[np.ndarray, dict, np.ndarray]:
    """Run the golden model on encoded inputs ``x`` (``(T, B, ...)`` or static ``(B, ...)``).
    Returns the top's integer inputs ``(B, T, *in)``, ``{layer: (T, B, *shape)}`` and the final
    output ``(B, *out)``."""
    names = [l.node.name for l in proj.layers]
    xs, traces, outs = [], {k: [] for k in names}, []
    bdim = 1 if x.dim() == len(proj.graph.inputs[0].shape) + 2 else 0
    for s in range(0, x.shape[bdim], batch):
        xb = x[:, s:s + batch] if bdim else x[s:s + batch]
        res = run_golden(proj.graph, xb, steps=proj.steps, record=names + [proj.input_node])
        xs.append(np.moveaxis(res.traces[proj.input_node].numpy(), 0, 1))
        for k in names:
            traces[k].append(res.traces[k].numpy())
        outs.append(res.traces[proj.output_node][-1].numpy())
    return (np.concatenate(xs), {k: np.concatenate(v, axis=1) for k, v in traces.items()},
            np.concatenate(outs))


def write_tb_data(directory: Path, proj: HlsProject, xin: np.ndarray, golden: dict) -> None:
    """``input.dat`` (``n`` then the integers) and ``expected.dat`` (per sample, per layer, T x size)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = xin.shape[0]
    lines = [str(n)] + [" ".join(map(str, xin[s].reshape(-1).tolist())) for s in range(n)]
    (directory / "input.dat").write_text("\n".join(lines) + "\n")
    rows = []
    for s in range(n):
        for l in proj.layers:
            rows.append(" ".join(map(str, golden[l.node.name][:, s].reshape(-1).tolist())))
    (directory / "expected.dat").write_text("\n".join(rows) + "\n")


def compare(proj: HlsProject, csim_traces: dict, golden: dict) -> dict:
    """Element-wise comparison of every traced layer: ``{"layers": [...], "mismatches", "values",
    "first": {...} or None}`` in schedule order."""
    rows, first, total, values = [], None, 0, 0
    for l in proj.layers:
        k = l.node.name
        if k not in csim_traces:
            continue
        a, b = golden[k], csim_traces[k]
        if a.shape != b.shape:
            raise ValueError(f"layer {k}: golden shape {a.shape} != C simulation shape {b.shape}")
        diff = a != b
        mm = int(diff.sum())
        rows.append({"node": k, "op": l.node.op, "type": l.out.ctype, "values": int(a.size), "mismatches": mm})
        total += mm
        values += int(a.size)
        if mm and first is None:
            t, s, *idx = (int(i) for i in np.argwhere(diff)[0])
            first = {"node": k, "step": t, "sample": s, "index": idx, "golden": int(a[(t, s, *idx)]),
                     "csim": int(b[(t, s, *idx)])}
    return {"layers": rows, "mismatches": total, "values": values, "first": first}


def csim_parity(proj: HlsProject, model: CSimModel, x: torch.Tensor, y: Optional[torch.Tensor] = None,
                chunk: int = 64) -> dict:
    """Run ``x`` through the golden model and the compiled C simulation and compare everything,
    ``chunk`` samples at a time (the counts and the first mismatch are over all samples)."""
    bdim = 1 if x.dim() == len(proj.graph.inputs[0].shape) + 2 else 0
    n = x.shape[bdim]
    rows: dict = {}
    first, total, values, seconds = None, 0, 0, 0.0
    pg, pc, equal = [], [], True
    for s in range(0, n, chunk):
        xb = x[:, s:s + chunk] if bdim else x[s:s + chunk]
        xin, golden, gout = golden_run(proj, xb)
        res = model.predict(xin)
        seconds += res.seconds
        cmp = compare(proj, res.traces, golden)
        for r in cmp["layers"]:
            rows.setdefault(r["node"], {**r, "values": 0, "mismatches": 0})
            rows[r["node"]]["values"] += r["values"]
            rows[r["node"]]["mismatches"] += r["mismatches"]
        total, values = total + cmp["mismatches"], values + cmp["values"]
        if first is None and cmp["first"]:
            first = {**cmp["first"], "sample": cmp["first"]["sample"] + s}
        equal = equal and bool(np.array_equal(gout, res.outputs))
        pg.append(gout.reshape(len(gout), -1).argmax(-1))
        pc.append(res.outputs.reshape(len(gout), -1).argmax(-1))
    pg, pc = np.concatenate(pg), np.concatenate(pc)
    out = {"samples": int(n), "steps": proj.steps, "layers_compared": len(rows), "layers": list(rows.values()),
           "mismatches": total, "values": values, "first": first, "outputs_equal": equal,
           "prediction_agreement": float((pg == pc).mean()),
           # wall-clock numbers: printed, never written into the (byte-identical) project files
           "timing": {"csim_seconds": round(seconds, 3),
                      "csim_samples_per_s": round(n / seconds, 2) if seconds else None,
                      "build_seconds": round(model.build_seconds, 2), "build_cached": bool(model.cached)}}
    if y is not None:
        yy = np.asarray(y)[: len(pg)]
        out.update(golden_accuracy=float((pg == yy).mean()), csim_accuracy=float((pc == yy).mean()))
    out["ok"] = out["mismatches"] == 0 and out["outputs_equal"]
    return out


def parity_markdown(p: dict) -> list[str]:
    lines = [f"C simulation (g++, ap_int) vs integer golden model on {p['samples']} samples x {p['steps']} steps: "
             f"**{p['mismatches']} mismatches in {p['values']:,} values** over {p['layers_compared']} layers; "
             f"final outputs {'equal' if p['outputs_equal'] else 'DIFFERENT'}; predictions agree on "
             f"{100 * p['prediction_agreement']:.1f}%"]
    if "csim_accuracy" in p:
        lines[0] += f"; accuracy golden {p['golden_accuracy']:.4f}, C simulation {p['csim_accuracy']:.4f}"
    if p["first"]:
        f = p["first"]
        lines.append(f"First mismatch: layer `{f['node']}` step {f['step']} sample {f['sample']} index {f['index']}: "
                     f"golden {f['golden']}, C simulation {f['csim']}")
    lines += ["", "| layer | op | type | values | mismatches |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['node']} | {r['op']} | `{r['type']}` | {r['values']:,} | {r['mismatches']} |" for r in p["layers"]]
    return lines


__all__ = ["golden_run", "write_tb_data", "compare", "csim_parity", "parity_markdown"]
