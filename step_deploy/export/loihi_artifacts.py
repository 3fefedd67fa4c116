"""Artifacts of ``step-export --target loihi``: the quantized network (portable JSON + ``.npz``),
the quantization report, the float-vs-golden evaluation, the Lava parity run, the chip features
the mapping needs and ``report.{json,md}``. Written into the caller's temporary directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from step_deploy import ir
from step_deploy.frontend import encoded_input
from step_deploy.targets.memory import payload_bits

from .common import _plain, noise_banner, qat_lines, write_json

#: golden-model event kinds that mean a value did not fit (counted, never silently clipped).
SATURATION_EVENTS = ("u_wrap", "v_sat", "input_clip", "int32_overflow", "over_24bit")


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


def write_network(out: Path, qgraph: ir.Graph, qreport: dict, mapping) -> None:
    ir.save(qgraph, out / "network")
    write_json(out / "network" / "layers.json", layer_table(qgraph, mapping))
    write_json(out / "quantization.json", qreport)


def saturation_total(events: dict) -> int:
    return int(sum(v for ev in events.values() for k, v in ev.items() if k in SATURATION_EVENTS))


def float_vs_golden(prep, qgraph, x, y, batch: int = 64) -> dict:
    """Float PyTorch vs integer golden model on ``x``: prediction agreement, accuracies (with
    labels) and the golden model's saturation events on this data."""
    from step_deploy.simulators.golden import merge_events, run_golden

    pt, pg, events = [], [], {}
    with torch.no_grad():
        for i in tqdm(range(0, len(x), batch), desc="float vs golden", unit="batch", leave=False):
            xb = x[i:i + batch]
            pt.append(prep.model(xb).argmax(-1))
            res = run_golden(qgraph, encoded_input(prep.model, xb), record=(), events=True)
            merge_events(events, res.events)
            pg.append(res.final().argmax(-1))
    pt, pg = torch.cat(pt), torch.cat(pg)
    out = {"samples": len(x), "prediction_agreement": float((pt == pg).float().mean()),
           "saturation_events": saturation_total(events)}
    if y is not None:
        out.update(float_pytorch=float((pt == y).float().mean()), golden_integer=float((pg == y).float().mean()))
        out["drop_points"] = round(100 * (out["float_pytorch"] - out["golden_integer"]), 2)
    return out


def lava_parity(prep, qgraph, x, y, n: int, T: int) -> dict:
    """Run ``n`` samples in Lava and compare every spike with the golden model (after alignment)."""
    from step_deploy.simulators.golden import run_golden
    from step_deploy.exporters.lava_compat import import_lava
    from step_deploy.exporters.lava_runner import compare, run_lava

    import_lava()
    xs = x[:n]
    golden = run_golden(qgraph, encoded_input(prep.model, xs), record=True)
    per_layer: dict[str, int] = {}
    compared = correct = agree = 0
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


def chip_features(qreport: dict, mapping, spec) -> list[str]:
    """Plain sentences: which chip features the quantized, mapped network needs."""
    T = qreport["steps"]
    neurons = [i for i in qreport["layers"].values() if i["op"] == "LoihiLIF"]
    ties = {t: sum(i["tie"] == t for i in neurons) for t in ("ge", "gap", "native", "exact")}
    out = []
    if ties["exact"]:
        models = sorted({i["neuron_model"] for i in neurons if i["tie"] == "exact"})
        out.append(f"programmable neurons for {ties['exact']} of {len(neurons)} neuron layers ({'; '.join(models)}: "
                   f"Loihi 2 neuron microcode; Lava process FixedLIF). Loihi 1 cannot run them (see constraints.md)")
    if ties["ge"]:
        out.append(f"programmable `>=` neurons for {ties['ge']} of {len(neurons)} neuron layers (tie strategy 'ge': "
                   f"Loihi 2 neuron microcode; Lava process FixedLIF). Loihi 1's neurons are not programmable: "
                   f"export with `--chip loihi1`, which uses the 'gap' strategy (stock `>` LIF, exact for up to "
                   f"T = {T} steps, costs {T - 1} state bits)")
    if ties["gap"]:
        out.append(f"stock LIF neurons firing on `>` for {ties['gap']} of {len(neurons)} neuron layers (tie "
                   f"strategy 'gap': every input is a multiple of 2^{T - 1}, so `v > vth - 1` equals the model's "
                   f"`v >= vth` exactly for up to T = {T} steps; Loihi 1 or 2, Lava process LIF)")
    if ties["native"]:
        out.append(f"stock LIF neurons for {ties['native']} neuron layers that already fire on `>`")
    graded = {}
    for L in mapping.layers:
        for s in L.sources:
            v = mapping.values[s]
            if v["kind"] in ("graded", "analog", "host"):
                graded[mapping.origin.get(s, s)] = payload_bits(v)
    if graded:
        names = sorted(graded)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        out.append(f"graded spikes of up to {max(graded.values())} bits into on-chip layers for {len(names)} "
                   f"value(s) ({shown}); {spec.name} carries {spec.limit('spike_payload_bits')}-bit spikes"
                   + ("" if spec.limit("graded_spikes") else " (binary only: see constraints.md)"))
    if mapping.off_core:
        out.append(f"host or embedded cores for {len(mapping.off_core)} node(s), {mapping.off_core_ops} ops per "
                   f"step (live spike products, readout, input quantization: see constraints.md)")
    return out


def report_markdown(report: dict) -> str:
    acc = report["accuracy"]
    lines = [noise_banner(report["data"]), ""] if report["data_is_noise"] else []
    lines += ["# Loihi export", "",
              f"- checkpoint: `{report['checkpoint']}` ({report['arch']}), target {report['chip']}",
              f"- time steps: T = {report['time_steps']}",
              f"- data: {report['data']}",
              f"- quantized IR: {report['qgraph']['nodes']} nodes; tie strategy: {report['tie']}; load it with "
              f"`step_deploy.fixedpoint.load('network')`, run it with `step_deploy.simulators.golden.run_golden`",
              f"- saturation events (values that did not fit and were clipped or wrapped by the integer model): "
              f"{report['saturation']['calibration']} on the calibration data, "
              f"{report['saturation']['evaluation']} on the evaluation data (per layer: quantization.json)",
              f"- Lava alignment: every Dense/Conv adds one step, so a T-step run takes T + "
              f"{report['lava_schedule']['depth']} Lava steps; branches are delay-balanced "
              f"({len(report['lava_schedule']['delays'])} delayed edges, report.json `lava_schedule`)",
              "", "## Chip features this mapping needs", ""]
    lines += [f"- {f}" for f in report["chip_features"]]
    lines += ["", "## Accuracy", ""]
    if "float_pytorch" in acc:
        lines += ["| model | accuracy |", "|---|---|", f"| float PyTorch | {acc['float_pytorch']:.4f} |",
                  f"| golden integer | {acc['golden_integer']:.4f} |"]
        lava = report.get("lava")
        if lava and "lava_accuracy" in lava:
            lines.append(f"| Lava (first {lava['samples']} samples only) | {lava['lava_accuracy']:.4f} |")
        lines += ["", f"Quantization drop: **{acc['drop_points']} points** on {acc['samples']} samples; "
                      f"predictions agree on {100 * acc['prediction_agreement']:.1f}%."]
        qat = qat_lines(report.get("qat"), acc)
        lines += [""] + qat if qat else []
    else:
        lines.append(f"No labels: float PyTorch and golden integer predictions agree on "
                     f"{100 * acc['prediction_agreement']:.1f}% of {acc['samples']} samples.")
    lava = report.get("lava")
    if lava:
        lines += ["", "## Lava (Loihi2SimCfg fixed_pt) vs golden model", "",
                  f"{lava['samples']} samples, {lava['layers']} spiking layers, {lava['spikes_compared']} spike values "
                  f"compared: **{lava['spike_mismatches']} mismatches**.", "", "| layer | mismatches |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in lava["per_layer_mismatches"].items()]
    return "\n".join(lines) + "\n"


def lava_table(lava: dict) -> str:
    return "\n".join(["| layer | mismatches |", "|---|---|"]
                     + [f"| {k} | {v} |" for k, v in lava["per_layer_mismatches"].items()])
