"""Artifacts of ``step-export --target loihi``: the quantized network (portable JSON + ``.npz``),
the quantization report, the accuracy table (float PyTorch vs integer golden model) and, with
``--run-lava N``, the Lava parity table. Written into the caller's temporary directory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from step_deploy import ir
from step_deploy.frontend import encoded_input


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_plain) + "\n")


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _datasets(prep):
    """(calibration x, evaluation x, evaluation y): the checkpoint's bundled data set, else noise."""
    from step_deploy.data import BUNDLED, load_dataset

    data = (prep.info.metadata or {}).get("dataset")
    if data in BUNDLED:
        tr = load_dataset(data, "train", T=prep.model.step)
        te = load_dataset(data, "test", T=prep.model.step)
        return tr.tensors[0][:256], te.tensors[0], te.tensors[1]
    return prep.samples, prep.samples, prep.labels


def layer_table(qgraph: ir.Graph, mapping) -> list[dict]:
    """Per layer: type, shapes, integer weight range and exponent, neuron parameters, placement."""
    shapes = qgraph.infer_shapes()
    rows = []
    for n in qgraph.topo_order():
        row = {"name": n.name, "op": n.op, "inputs": list(n.inputs), "shape": list(shapes[n.name])}
        for k, v in n.params().items():
            if isinstance(v, np.ndarray):
                row[k] = {"shape": list(v.shape), "dtype": str(v.dtype),
                          "min": _plain(v.min()) if v.size else None, "max": _plain(v.max()) if v.size else None}
            else:
                row[k] = v
        placement = mapping.nodes.get(n.name) if mapping is not None else None
        if placement:
            row["placement"] = placement
        rows.append(row)
    return rows


def _accuracy(prep, graph, qgraph, x, y, T, batch=64):
    from step_deploy.simulators.golden import run_golden

    pt, pg = [], []
    with torch.no_grad():
        for i in tqdm(range(0, len(x), batch), desc="float vs golden", unit="batch", leave=False):
            xb = x[i:i + batch]
            pt.append(prep.model(xb).argmax(-1))
            pg.append(run_golden(qgraph, encoded_input(prep.model, xb), record=()).final().argmax(-1))
    pt, pg = torch.cat(pt), torch.cat(pg)
    out = {"samples": len(x), "prediction_agreement": float((pt == pg).float().mean())}
    if y is not None:
        out.update(float_pytorch=float((pt == y).float().mean()), golden_integer=float((pg == y).float().mean()))
        out["drop_points"] = round(100 * (out["float_pytorch"] - out["golden_integer"]), 2)
    return out


def _lava_parity(prep, qgraph, x, y, n: int, T: int) -> dict:
    from step_deploy.simulators.golden import run_golden
    from step_deploy.simulators.lava_compat import import_lava
    from step_deploy.simulators.lava_runner import compare, run_lava

    import_lava()
    xs = x[:n]
    golden = run_golden(qgraph, encoded_input(prep.model, xs), record=True)
    per_layer: dict[str, int] = {}
    compared = 0
    correct = agree = 0
    for i in tqdm(range(len(xs)), desc="Lava samples", unit="sample"):
        xe = encoded_input(prep.model, xs[i:i + 1])[:, 0]
        res = run_lava(qgraph, xe, steps=T)
        for name, mism in compare(golden.traces, res.traces, sample=i).items():
            per_layer[name] = per_layer.get(name, 0) + mism
        compared += sum(int(v.numel()) for v in res.traces.values())
        lava_pred = int(res.final()[0].argmax(-1))
        agree += int(lava_pred == int(golden.final()[i].argmax(-1)))
        if y is not None:
            correct += int(lava_pred == int(y[i]))
    out = {"samples": len(xs), "layers": len(per_layer), "spikes_compared": compared,
           "spike_mismatches": sum(per_layer.values()), "per_layer_mismatches": per_layer,
           "prediction_agreement_with_golden": agree / max(len(xs), 1),
           "alignment": "Lava step t + latency(node) compared with golden step t (see simulators/golden.py)"}
    if y is not None:
        out["lava_accuracy"] = correct / max(len(xs), 1)
    return out


def _markdown(report: dict) -> str:
    acc = report["accuracy"]
    lines = ["# Loihi export", "", f"- checkpoint: `{report['checkpoint']}` ({report['arch']}), target {report['chip']}",
             f"- quantized IR: {report['qgraph']['nodes']} nodes; tie strategy: {report['tie']}", "",
             "## Accuracy", "", "| model | accuracy |", "|---|---|"]
    if "float_pytorch" in acc:
        lines += [f"| float PyTorch | {acc['float_pytorch']:.4f} |", f"| golden integer | {acc['golden_integer']:.4f} |"]
        lines += ["", f"Quantization drop: **{acc['drop_points']} points** on {acc['samples']} test samples; "
                      f"predictions agree on {100 * acc['prediction_agreement']:.1f}%."]
    lava = report.get("lava")
    if lava:
        lines += ["", "## Lava (Loihi2SimCfg fixed_pt) vs golden model", "",
                  f"{lava['samples']} samples, {lava['layers']} spiking layers, {lava['spikes_compared']} spike values "
                  f"compared: **{lava['spike_mismatches']} mismatches**.", "", "| layer | mismatches |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in lava["per_layer_mismatches"].items()]
    return "\n".join(lines) + "\n"


def export_quantized(prep, graph: ir.Graph, spec, mapping, out: Path, run_lava: int = 0) -> dict:
    from step_deploy.passes.quantize_loihi import quantize_loihi

    T = int(prep.model.step)
    xc, x, y = _datasets(prep)
    qgraph, qreport = quantize_loihi(graph, encoded_input(prep.model, xc), steps=T, target=spec)
    ir.save(qgraph, out / "network")
    _dump(out / "network" / "layers.json", layer_table(qgraph, mapping))
    _dump(out / "quantization.json", qreport)
    report = {"checkpoint": str(prep.info.path), "arch": prep.info.arch, "chip": spec.name, "time_steps": T,
              "tie": qreport.get("tie"), "qgraph": {"nodes": len(qgraph), "op_counts": qgraph.op_counts()},
              "accuracy": _accuracy(prep, graph, qgraph, x, y, T)}
    ok = True
    if run_lava:
        report["lava"] = _lava_parity(prep, qgraph, x, y, run_lava, T)
        ok = report["lava"]["spike_mismatches"] == 0
    _dump(out / "report.json", report)
    (out / "report.md").write_text(_markdown(report))
    acc = report["accuracy"]
    msg = ["wrote network/ (quantized IR + layers.json), quantization.json, constraints.{json,md}, report.{json,md}"]
    if "float_pytorch" in acc:
        msg.append(f"accuracy on {acc['samples']} test samples: float PyTorch {acc['float_pytorch']:.4f}, "
                   f"golden integer {acc['golden_integer']:.4f} (drop {acc['drop_points']} points)")
    if run_lava:
        lv = report["lava"]
        msg.append(f"Lava parity: {lv['spike_mismatches']} spike mismatches in {lv['spikes_compared']} values over "
                   f"{lv['samples']} samples x {lv['layers']} layers")
        msg.append(_markdown({**report, "accuracy": {}}).split("## Lava", 1)[1].split("\n", 2)[2])
    return {"ok": ok, "message": "\n".join(msg), "report": report}
