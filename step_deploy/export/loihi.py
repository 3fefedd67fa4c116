"""``--target loihi``: map and check the network against a Loihi spec, quantize it to Loihi fixed
point on real calibration data, write the portable description and reports, and self-check it
(float PyTorch vs integer golden model; with ``--run-lava N``, Lava vs golden spike for spike).

The check uses the float IR (shapes and structure decide the mapping); the quantized IR adds
weight precision and the fixed-point neuron parameters. Exit codes: 0 ok; 1 when the constraint
check has errors (unless ``--allow-errors``) or Lava differs from the golden model."""
from __future__ import annotations

from pathlib import Path

from step_deploy import ir
from step_deploy.atomic import atomic_output_dir
from step_deploy.errors import UsageError
from step_deploy.frontend import encoded_input
from step_deploy.passes import PIPELINES, PassContext, run_pipeline
from step_deploy.targets import check_target, diagnostics_table, load_target, report_dict, report_markdown

from . import loihi_artifacts as art
from .common import Prepared, base_summary, noise_banner, qat_metadata, require_package, write_json, write_summary
from .registry import Target, TargetOption, TargetResult, register_target
from .shared_options import ALLOW_ERRORS, CALIB, CALIB_SAMPLES, CHECK_ONLY, N_CALIB, ROOT



def split_pipeline(names: list[str]) -> tuple[list[str], list[str]]:
    """The Loihi pipeline in two stages: the float graph as the chip sees it (folded, mapped; the
    constraint check runs on it) and the fixed-point stage (quantize, delay-balance), which needs
    calibration data and runs only when the check lets the export go on."""
    k = names.index("quantize-loihi")
    return names[:k], names[k:]


def self_check(prep: Prepared, qgraph: ir.Graph, calib, run_lava: int) -> dict:
    """Float PyTorch vs golden integer model on the evaluation data (accuracy, agreement,
    saturation) and, with ``run_lava``, Lava vs golden spike parity. ``ok``: Lava (when run)
    equals the golden model on every spike."""
    x, y = calib.x_eval, calib.y_eval
    check = {"data": calib.source, "data_is_noise": bool(calib.is_noise),
             "float_vs_golden": art.float_vs_golden(prep, qgraph, x, y), "ok": True}
    if run_lava:
        check["lava"] = art.lava_parity(prep, qgraph, x, y, run_lava, int(prep.model.step))
        check["ok"] = check["lava"]["spike_mismatches"] == 0
    return check


def _summary_md(summary: dict, report: dict) -> str:
    chk, c = summary["self_check"], summary["constraints"]
    acc = chk["float_vs_golden"]
    lines = [noise_banner(chk["data"]), ""] if chk["data_is_noise"] else []
    lines += ["# Loihi export", "", f"- checkpoint: `{summary['checkpoint']}` ({summary['arch']})",
              f"- chip: {summary['chip']}; T = {report['time_steps']}; tie strategy: {report['tie']}",
              f"- pipeline: {', '.join(summary['pipeline'])} (quantize-loihi calibrated on the data below)",
              f"- float IR: {summary['ir']['nodes']} nodes, {summary['ir']['parameters']:,} parameters; quantized IR: "
              f"{summary['quantized_ir']['nodes']} nodes",
              f"- mapping: {c['cores']} neuro-cores on {c['chips']} chip(s); constraint check: {c['errors']} error(s), "
              f"{c['warnings']} warning(s), {c['info']} info (constraints.md)", "",
              "## Self-check", "", f"- data: {chk['data']}",
              f"- float PyTorch vs golden integer predictions agree on {100 * acc['prediction_agreement']:.1f}% of "
              f"{acc['samples']} samples"]
    if "float_pytorch" in acc:
        lines.append(f"- accuracy: float PyTorch {acc['float_pytorch']:.4f}, "
                     f"golden integer {acc['golden_integer']:.4f} "
                     f"(drop {acc['drop_points']} points)")
    lines.append(f"- saturation events on this data: {acc['saturation_events']}")
    if "lava" in chk:
        lv = chk["lava"]
        lines.append(f"- Lava vs golden: **{lv['spike_mismatches']} spike mismatches** in {lv['spikes_compared']} "
                     f"values ({lv['samples']} samples x {lv['layers']} layers)"
                     + (f"; Lava accuracy {lv['lava_accuracy']:.4f}" if "lava_accuracy" in lv else ""))
    lines += ["", "Details: report.md (accuracy, chip features, Lava), quantization.json, constraints.md."]
    return "\n".join(lines) + "\n"


@register_target
class LoihiTarget(Target):
    name = "loihi"
    description = ("Intel Loihi: core mapping + constraint check, Loihi fixed-point network (network/), "
                   "reports; --run-lava N runs it in Lava")
    pipeline = "loihi"
    default_samples = None  # the whole evaluation split
    options = (
        TargetOption(("--chip",), {"metavar": "SPEC", "help": "loihi2 (default), loihi1 or a spec file (YAML/JSON)"},
                     "loihi2"),
        CHECK_ONLY,
        ALLOW_ERRORS,
        TargetOption(("--run-lava",), {"type": int, "metavar": "N",
                                       "help": "also run N evaluation samples in Lava and compare every spike"}, 0),
        CALIB,
        CALIB_SAMPLES,
        ROOT,
    )

    def writes_output_with(self, options: dict) -> bool:
        return not options["check_only"]

    def validate(self, options: dict) -> None:
        if options["calib_samples"] < 1:
            raise UsageError(f"--calib-samples must be at least 1, got {options['calib_samples']}")
        if options["run_lava"] < 0:
            raise UsageError(f"--run-lava must be >= 0 (number of samples to run in Lava), got {options['run_lava']}")
        if options["check_only"]:
            given = [f for f, v in (("--run-lava", options["run_lava"]), ("--allow-errors", options["allow_errors"]),
                                    ("--calib", options["calib"]), ("--root", options["root"]),
                                    ("--calib-samples", options["calib_samples"] != N_CALIB)) if v]
            if given:
                raise UsageError(f"--check-only only maps and checks; {', '.join(given)} "
                                 f"{'does' if len(given) == 1 else 'do'} not apply: remove "
                                 f"{'it' if len(given) == 1 else 'them'} or drop --check-only")
        if options["run_lava"]:
            require_package("lava", "--run-lava", "lava-nc")
        spec = load_target(options["chip"])  # a bad spec file fails here, before any work
        if spec.kind != "neuromorphic":
            raise UsageError(f"--chip {options['chip']}: {spec.name} is an {spec.kind} part, not a neuromorphic chip; "
                             f"--target loihi needs a chip spec (loihi2, loihi1 or your own YAML of kind "
                             f"neuromorphic)")

    def run(self, prep: Prepared, out, options: dict, force: bool = False) -> TargetResult:
        from step_deploy.data.calibration import resolve_calibration
        from step_deploy.energy_eval.deployed import deployed_energy, report_section, write_deployed
        from step_deploy.energy.report import summary_line
        from step_deploy.sim_eval.deployed import deployed_simulation, write_deployed_sim
        from step_deploy.sim_eval.deployed import report_section as sim_section
        from step_deploy.simulators.cycle.report import summary_line as sim_line

        calib = None
        if not options["check_only"]:  # resolve the data first: a missing data set fails before any work
            calib = resolve_calibration(options["calib"], root=options["root"], model=prep.model, info=prep.info,
                                        n_calib=options["calib_samples"], n_eval=options["samples"])
        T = int(prep.model.step)
        spec = load_target(options["chip"])
        ctx = PassContext(target=spec, steps=T)
        float_stage, fixed_stage = split_pipeline(PIPELINES[self.pipeline])
        graph = run_pipeline(prep.graph, float_stage, ctx)
        mapping = ctx.results["map-to-cores"]
        diags = check_target(graph, spec, mapping)
        lines = [f"target {spec.name}: {mapping.total_cores} neuro-cores on {mapping.chips} chip(s), "
                 f"{len(mapping.off_core)} nodes off the neuro-cores", diagnostics_table(diags)]
        n_err = len(ir.errors(diags))
        if options["check_only"]:
            return TargetResult(1 if n_err else 0, None, tuple(lines))
        if n_err and not options["allow_errors"]:
            return TargetResult(1, None, tuple(lines), (
                f"error: the network does not fit {spec.name} ({n_err} constraint error(s) above); nothing written. "
                f"Fix them, choose another --chip, or pass --allow-errors to write the artifacts anyway",))
        ctx.calibration = encoded_input(prep.model, calib.x_calib)
        qgraph = run_pipeline(graph, fixed_stage, ctx)
        qreport = ctx.results["quantize-loihi"]
        energy = deployed_energy(prep.model, qgraph, graph, "golden-loihi", calib.x_eval, calib.y_eval, calib.source,
                                 prep.info.path, prep.info.arch)
        sim, sim_parity = deployed_simulation(qgraph, graph, encoded_input(prep.model, calib.x_eval), arch="mesh",
                                              chip=spec.name)
        with atomic_output_dir(out, force=force, writer=f"step-export --target {self.name}",
                               inputs=[prep.info.path]) as tmp:
            write_json(tmp / "constraints.json", report_dict(mapping, diags, spec))
            (tmp / "constraints.md").write_text(report_markdown(mapping, diags, spec))
            art.write_network(tmp, qgraph, qreport, mapping)
            check = self_check(prep, qgraph, calib, options["run_lava"])
            report = {"checkpoint": str(prep.info.path), "arch": prep.info.arch, "chip": spec.name, "time_steps": T,
                      "qat": qat_metadata(prep),
                      "tie": qreport.get("tie"), "data": calib.source, "data_is_noise": bool(calib.is_noise),
                      "chip_features": art.chip_features(qreport, mapping, spec),
                      "saturation": {"calibration": int(qreport.get("saturation_total", 0)),
                                     "evaluation": check["float_vs_golden"]["saturation_events"]},
                      "qgraph": {"nodes": len(qgraph), "op_counts": qgraph.op_counts()},
                      "lava_schedule": ctx.results["delay-balance"].as_dict(),
                      "accuracy": check["float_vs_golden"]}
            if "lava" in check:
                report["lava"] = check["lava"]
            report["energy_uj_per_sample"] = {v: r.per_sample_pj * 1e-6 for v, r in energy.snn.items()}
            report["simulated"] = {"arch": sim.arch, "samples": sim.samples,
                                   "latency_us_per_sample": round(sim.mean_latency_ns * 1e-3, 6),
                                   "energy_uj_per_sample": round(sim.energy_per_sample_pj * 1e-6, 6),
                                   "spike_mismatches_vs_golden": sum(v["mismatches"] for v in sim_parity.values())}
            write_deployed(energy, tmp)
            write_deployed_sim(sim, sim_parity, tmp, {"checkpoint": Path(str(prep.info.path)).name,
                                                      "arch": prep.info.arch, "samples": sim.samples, "steps": T})
            write_json(tmp / "report.json", report)
            (tmp / "report.md").write_text(art.report_markdown(report) + report_section(energy)
                                           + sim_section(sim, sim_parity))
            counts = {s: sum(d.severity == s for d in diags) for s in ("error", "warning", "info")}
            summary = {**base_summary(self, prep, graph, calib.source, bool(calib.is_noise)), "chip": spec.name,
                       "quantized_ir": {"nodes": len(qgraph), "op_counts": qgraph.op_counts()},
                       "constraints": {"cores": mapping.total_cores, "chips": mapping.chips, "errors": counts["error"],
                                       "warnings": counts["warning"], "info": counts["info"]},
                       "self_check": check}
            write_summary(tmp, summary, _summary_md(summary, report))
        lines += _result_lines(report, n_err, out, spec.name)
        lines.append(summary_line(energy) + " (energy.md)")
        lines.append("simulated: " + sim_line(sim, sim_parity) + " (sim.md)")
        return TargetResult(0 if check["ok"] else 1, summary, tuple(lines))


def _result_lines(report: dict, n_err: int, out, chip: str) -> list[str]:
    acc = report["accuracy"]
    msg = [f"wrote {out}: network/ (quantized IR + layers.json), quantization.json, constraints.{{json,md}}, "
           f"report.{{json,md}}, energy.{{json,md}}, sim.{{json,md}}, summary.{{json,md}}"]
    if report["data_is_noise"]:
        msg.append(f"WARNING: calibrated and evaluated on NOISE ({report['data']})")
    if "float_pytorch" in acc:
        msg.append(f"accuracy on {acc['samples']} samples: float PyTorch {acc['float_pytorch']:.4f}, "
                   f"golden integer {acc['golden_integer']:.4f} (drop {acc['drop_points']} points)")
    else:
        msg.append(f"float vs golden prediction agreement on {acc['samples']} unlabelled samples: "
                   f"{acc['prediction_agreement']:.4f}")
    if "lava" in report:
        lv = report["lava"]
        msg.append(f"Lava parity: {lv['spike_mismatches']} spike mismatches in {lv['spikes_compared']} values over "
                   f"{lv['samples']} samples x {lv['layers']} layers")
        msg.append(art.lava_table(lv))
    if n_err:
        msg.append(f"note: written despite {n_err} constraint error(s) on {chip} (--allow-errors): see constraints.md")
    return msg
