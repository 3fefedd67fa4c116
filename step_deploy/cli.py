"""Command-line entry points (argument parsing only): ``step-train``, ``step-export``, ``step-energy`` and
``step-sim``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _our_errors() -> tuple:
    """The exception types the CLI reports as user errors (exit 2): ours only. Anything else is a
    bug in step-deploy and propagates with its traceback."""
    from step_deploy.errors import StepDeployError
    from step_deploy.ir import IRError

    return (StepDeployError, IRError)


def _fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def train_main(argv=None) -> int:
    """``step-train``: exit 0 when trained (or reused), 2 for a user error. The arguments and the
    output path are checked before training starts, so a mistake never costs a training run."""
    from step_deploy.data import DATASETS
    from step_deploy.models import list_configs

    ap = argparse.ArgumentParser(prog="step-train", description="Train a reference Spiking Transformer.")
    ap.add_argument("--arch", required=True, help=f"named config: {', '.join(list_configs())}")
    ap.add_argument("--data", default="digits", help=f"data set: {', '.join(DATASETS)}")
    ap.add_argument("--root", help="folder of an on-disk data set (cifar10, cifar10-dvs)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--T", type=int, help="time steps (default: the config's)")
    ap.add_argument("--node", help="neuron of every layer: a short name (lif, if, plif, ilif, nilif, eif, klif, "
                                   "hdlif, clif, glif, psn, tlif = ternary LIF) or STEP's class name (ILIFNode, "
                                   "...); default: the config's (lif). Saved in the checkpoint: step-export/step-parity rebuild it")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core; 1 trains several "
                                                "times faster on a machine whose cores are busy)")
    ap.add_argument("--reset", choices=("hard", "soft"),
                    help="reset of if/lif/plif neurons: hard (to 0, STEP's default) or soft (subtract the threshold)")
    ap.add_argument("--qat-epochs", type=int, default=0,
                    help="after --epochs, fine-tune this many epochs with every synapse's folded weights and bias on "
                         "the grid of both integer targets (8-bit, docs/qat.md): the PyTorch model then computes "
                         "what the Loihi and FPGA integer models compute, spike for spike (default: 0, off)")
    ap.add_argument("--chunk-size", type=int,
                    help="STAtten configs: time steps per attention block (must divide T; default: the config's, 2)")
    ap.add_argument("-o", "--output", required=True, help="checkpoint file to write")
    ap.add_argument("--reuse", action="store_true", help="keep an existing checkpoint trained with the same arguments")
    ap.add_argument("--force", action="store_true",
                    help="overwrite an existing file at -o even if it is not a step-deploy checkpoint")
    a = ap.parse_args(argv)
    from step_deploy.errors import OutputError, StepDeployError
    from step_deploy.ir import IRError

    try:
        from step_deploy.atomic import check_output_file
        from step_deploy.frontend.checkpoint import load_checkpoint, save_checkpoint
        from step_deploy.training import TrainArgs, is_step_deploy_checkpoint, train, validate_train_args

        targs = TrainArgs(arch=a.arch, data=a.data, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                          T=a.T, root=a.root, node=a.node, reset=a.reset, threads=a.threads,
                          qat_epochs=a.qat_epochs, chunk_size=a.chunk_size)
        validate_train_args(targs)
        out = check_output_file(a.output, a.force, is_ours=is_step_deploy_checkpoint, what="checkpoint")
        if a.reuse and is_step_deploy_checkpoint(out):
            _, info = load_checkpoint(out)
            if info.metadata.get("train_args") == {**targs.__dict__}:
                print(f"reusing {out}: {a.arch} on {a.data}, test accuracy "
                      f"{info.metadata.get('test_accuracy', float('nan')):.4f}")
                return 0
            print(f"{out} was trained with other arguments; training again")
        model, metrics = train(targs)
        try:
            save_checkpoint(model, out, metadata={**metrics, "arch_name": a.arch})
        except OSError as e:
            raise OutputError(f"{out}: could not write the checkpoint ({e.strerror or e})") from None
    except (StepDeployError, IRError) as e:
        return _fail(str(e))
    neuron = (f" with {metrics.get('node', a.node or 'lif')} neurons" if a.node or a.reset else "") + (
        f", {a.reset} reset" if a.reset else "")
    qat = metrics.get("qat")
    qat_note = (f" (float training {qat['float_test_accuracy_before']:.4f}, then {qat['epochs']} on-grid "
                f"epoch{'s' if qat['epochs'] != 1 else ''})" if qat else "")
    print(f"{a.arch}{neuron} on {a.data}: test accuracy {metrics['test_accuracy']:.4f}{qat_note} "
          f"({metrics['test_samples']} samples), trained in {metrics['train_seconds']:.0f} s -> {out}")
    return 0


def _export_parser() -> argparse.ArgumentParser:
    """The step-export parser, built from the target registry: each target's options in its group."""
    from step_deploy.export import PLANNED, registered_targets

    targets = registered_targets()
    ap = argparse.ArgumentParser(
        prog="step-export", description="Export a trained Spiking Transformer to a deployment target.",
        epilog="exit codes: 0 ok; 1 the self-check (parity) or the constraint check failed; 2 a usage or user "
               "error (bad argument, checkpoint, data or output path)")
    ap.add_argument("checkpoint", help="checkpoint file (step-deploy, STEP/timm, or a bare state_dict with --arch)")
    ap.add_argument("--target", required=True, choices=[*targets, *PLANNED],
                    help="; ".join(f"{n}: {t.description}" for n, t in targets.items()))
    ap.add_argument("-o", "--output", help="output directory (default: <checkpoint without suffix>-<target>/)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing output directory that step-deploy did not write (its files are deleted)")
    ap.add_argument("--arch", help="architecture, for a bare state_dict (or to override the checkpoint's)")
    ap.add_argument("--samples", type=int, help="samples for the self-check (default: 8 for nir/onnx; loihi: the "
                                                "whole evaluation split)")
    taken: set[str] = set()
    for name, t in targets.items():
        t.add_arguments(ap.add_argument_group(f"--target {name}", t.description), taken)
    return ap


def _export_options(a: argparse.Namespace, target) -> dict:
    """Validate everything that can be checked before any work; the target's options as a dict."""
    from step_deploy.errors import UsageError
    from step_deploy.export import check_options_apply

    if a.samples is not None and a.samples < 1:
        raise UsageError(f"--samples must be at least 1 (the number of samples to self-check), got {a.samples}")
    ckpt = Path(a.checkpoint)
    if not ckpt.is_file():
        raise UsageError(f"checkpoint {a.checkpoint}: " + ("is a directory, expected a checkpoint file"
                                                            if ckpt.is_dir() else "no such file"))
    check_options_apply(target, a)
    options = {"samples": a.samples if a.samples is not None else target.default_samples,
               **target.options_from_args(a)}
    target.validate(options)
    if not target.writes_output_with(options):
        given = [f for f, v in (("-o", a.output), ("--force", a.force)) if v]
        if given:
            raise UsageError(f"{' and '.join(given)}: this run writes nothing (--check-only); remove "
                             f"{'it' if len(given) == 1 else 'them'}")
    return options


def export_main(argv=None) -> int:
    """``step-export``: exit 0 ok, 1 parity or constraint failure, 2 usage or user error."""
    a = _export_parser().parse_args(argv)
    try:
        from step_deploy.atomic import check_output_dir
        from step_deploy.export import get_target, prepare

        target = get_target(a.target)
        options = _export_options(a, target)
        out = None
        if target.writes_output_with(options):
            inputs = [a.checkpoint] + [options[k] for k in ("calib",) if options.get(k) and Path(options[k]).is_file()]
            out = check_output_dir(a.output or f"{Path(a.checkpoint).with_suffix('')}-{a.target}", a.force,
                                   inputs=inputs)
        result = target.run(prepare(a.checkpoint, arch=a.arch), out, options, force=a.force)
    except _our_errors() as e:
        return _fail(str(e))
    for line in result.lines:
        print(line)
    for line in result.errors:
        print(line, file=sys.stderr)
    return result.exit_code


def energy_main(argv=None) -> int:
    """``step-energy``: exit 0 ok, 2 usage or user error (bad checkpoint, data, model name or constants)."""
    from step_deploy.energy.models import MODELS
    from step_deploy.energy_eval.run import SOURCES

    ap = argparse.ArgumentParser(
        prog="step-energy", description="Count operations and memory traffic of a Spiking Transformer per layer and "
        "step, price them with sourced energy models, and compare with the quantized ANN at equal bit budget.",
        epilog="exit codes: 0 ok; 2 a usage or user error")
    ap.add_argument("checkpoint", help="checkpoint file (step-deploy or STEP)")
    ap.add_argument("-o", "--output", help="output directory (default: <checkpoint without suffix>-energy/)")
    ap.add_argument("--force", action="store_true", help="replace an output directory step-deploy did not write")
    ap.add_argument("--samples", type=int, help="evaluation samples to count (default: the whole test split)")
    ap.add_argument("--model", default="all", help=f"energy models: all, or a comma list of {', '.join(MODELS)}")
    ap.add_argument("--source", default="torch", choices=SOURCES,
                    help="what is counted: the PyTorch model (hooks) or an integer golden model (default torch)")
    ap.add_argument("--data", help="evaluation data: a bundled data set, a tensor file, or noise (default: the "
                                   "checkpoint's own data set)")
    ap.add_argument("--root", help="folder holding an on-disk data set (cifar10, cifar10-dvs)")
    ap.add_argument("--weight-bits", type=int, default=8, help="weight bits of the deployed (integer) widths, 2..8")
    ap.add_argument("--constants", help="a YAML file of energy constants (default: the bundled, sourced table)")
    ap.add_argument("--sweep", action="store_true", help="also sweep weight bits x time steps with the FPGA golden "
                                                         "model: accuracy against energy, Pareto plot")
    ap.add_argument("--sweep-weight-bits", help="weight bits to sweep (default 2,4,8)")
    ap.add_argument("--sweep-steps", help="time steps to sweep (default 1, T/2, T)")
    ap.add_argument("--sweep-samples", type=int, help="samples per sweep point (default: as --samples)")
    ap.add_argument("--calib-samples", type=int, help="calibration samples for the deployed (integer) widths "
                                                      "(default: as step-export, 256)")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)
    try:
        from step_deploy.energy_eval.command import EnergyOptions, run_command

        o = EnergyOptions(samples=a.samples, models=a.model, source=a.source, data=a.data, root=a.root,
                          weight_bits=a.weight_bits, constants=a.constants, sweep=a.sweep,
                          sweep_weight_bits=a.sweep_weight_bits, sweep_steps=a.sweep_steps,
                          sweep_samples=a.sweep_samples, batch_size=a.batch_size, calib_samples=a.calib_samples,
                          progress=sys.stderr.isatty())
        out = a.output or f"{Path(a.checkpoint).with_suffix('')}-energy"
        lines = run_command(a.checkpoint, out, o, force=a.force)
    except _our_errors() as e:
        return _fail(str(e))
    for line in lines:
        print(line)
    return 0


def sim_main(argv=None) -> int:
    """``step-sim``: exit 0 ok, 1 when the simulated spikes differ from the golden model's (the
    report is still written), 2 usage or user error."""
    ap = argparse.ArgumentParser(
        prog="step-sim", description="Cycle-level simulation of a quantized Spiking Transformer on a Loihi-style "
        "core mesh or on the FPGA dataflow of the generated HLS design: spikes checked bit for bit against the "
        "integer golden model, cycles, latency, memory traffic and energy per layer and step.",
        epilog="exit codes: 0 ok; 1 the simulated spikes differ from the golden model's; 2 a usage or user error")
    ap.add_argument("checkpoint", help="checkpoint file (step-deploy or STEP)")
    ap.add_argument("--arch", default="loihi2", choices=("loihi1", "loihi2", "fpga"),
                    help="loihi1 (Davies et al. 2018 per-event costs), loihi2 (Loihi 2 core count; per-event costs "
                         "ASSUMED equal to Loihi 1's: Intel published none) or fpga (the generated HLS design)")
    ap.add_argument("--hardware", help="mesh description YAML (default: the bundled one of --arch); may 'extends' one")
    ap.add_argument("--part", default="zcu104", help="FPGA part (zcu102, zcu104, vcu118, pynq-z2 or a spec file)")
    ap.add_argument("--clock-mhz", type=float, default=200.0, help="FPGA clock (default 200)")
    ap.add_argument("--parallelism", default="auto", help="FPGA per-layer parallelism: auto, an integer, or "
                                                         "node=P pairs (as step-export)")
    ap.add_argument("--schedule", default="step", choices=("step", "batched"),
                    help="FPGA schedule: step (the generated design: steps outermost) or batched (all T steps of a "
                         "layer at once)")
    ap.add_argument("--weight-bits", type=int, default=8, help="FPGA weight bits, 2..8")
    ap.add_argument("--samples", type=int, default=16, help="test samples to simulate (default 16)")
    ap.add_argument("--data", help="evaluation data: a bundled data set, a tensor file, or noise (default: the "
                                   "checkpoint's own data set)")
    ap.add_argument("--root", help="folder holding an on-disk data set (cifar10, cifar10-dvs)")
    ap.add_argument("--calib-samples", type=int, help="calibration samples for the quantization (default 256)")
    ap.add_argument("--trace", action="store_true", help="also write steps.csv (time of every sample and step) "
                                                          "and spikes.npz (the simulated spikes)")
    ap.add_argument("--explore", action="store_true", help="FPGA: sweep parallelism x schedule on --part and write "
                                                          "the Pareto front of latency x resources x energy")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("-o", "--output", help="output directory (default: <checkpoint without suffix>-sim-<arch>/)")
    ap.add_argument("--force", action="store_true", help="replace an output directory step-deploy did not write")
    a = ap.parse_args(argv)
    try:
        from step_deploy.sim_eval.command import SimOptions, run_command

        o = SimOptions(arch=a.arch, hardware=a.hardware, part=a.part, clock_mhz=a.clock_mhz,
                       parallelism=a.parallelism, schedule=a.schedule, weight_bits=a.weight_bits, samples=a.samples,
                       data=a.data, root=a.root, calib_samples=a.calib_samples, trace=a.trace, explore=a.explore,
                       batch_size=a.batch_size, progress=sys.stderr.isatty())
        out = a.output or f"{Path(a.checkpoint).with_suffix('')}-sim-{a.arch}"
        lines, code = run_command(a.checkpoint, out, o, force=a.force)
    except _our_errors() as e:
        return _fail(str(e))
    for line in lines:
        print(line)
    return code


def parity_main(argv=None) -> int:
    """``step-parity``: exit 0 when every pair of stages that must agree agrees, 1 when one does not
    or a stage failed (the report is still written), 2 for a usage or user error."""
    ap = argparse.ArgumentParser(
        prog="step-parity", description="Run every stage of the pipeline (PyTorch, reference interpreter, ONNX, NIR, "
        "golden Loihi, Lava, golden FPGA, HLS C simulation, cycle-level simulators) on the same samples and compare "
        "every pair: integer stages bit for bit at every layer and step, float stages with the rounding attribution, "
        "accuracy, prediction agreement and energy counters. Shards run on Dask (a local cluster by default).",
        epilog="exit codes: 0 every pair that must agree agrees; 1 a pair differs or a stage failed (report written); "
               "2 a usage or user error")
    ap.add_argument("checkpoint", help="checkpoint file (step-deploy or STEP)")
    ap.add_argument("--stages", default="all", help="all (default) or a comma list of: " + ", ".join(
        ["torch", "reference", "onnx", "nir", "golden-loihi", "lava", "golden-fpga", "csim", "cycle-loihi",
         "cycle-fpga"]))
    ap.add_argument("--samples", default="all", help="test samples: a number or all (default)")
    ap.add_argument("--limit", metavar="STAGE=N,...", help="run a stage on its first N samples only (defaults: lava=4, "
                                                            "csim=64; STAGE=all lifts a default)")
    ap.add_argument("--data", help="samples: a bundled data set, a tensor file, or noise (default: the checkpoint's "
                                   "own test split)")
    ap.add_argument("--root", help="folder holding an on-disk data set (cifar10, cifar10-dvs)")
    ap.add_argument("--calib", help="calibration data for the quantizers (default: the checkpoint's training split)")
    ap.add_argument("--calib-samples", type=int, default=256, help="calibration samples (default 256)")
    ap.add_argument("--chip", default="loihi2", help="Loihi spec for the Loihi stages: loihi2 (default), loihi1 or a "
                                                     "spec file")
    ap.add_argument("--mesh-hardware", help="cycle-loihi mesh description (default: loihi2-assumed for loihi2, "
                                            "loihi1 for loihi1)")
    ap.add_argument("--part", default="zcu104", help="FPGA part for the FPGA stages (default zcu104)")
    ap.add_argument("--clock-mhz", type=float, default=200.0)
    ap.add_argument("--parallelism", default="auto", help="FPGA parallelism as step-export's (default auto)")
    ap.add_argument("--weight-bits", type=int, default=8, help="FPGA weight bits (default 8)")
    ap.add_argument("--workers", type=int, help="worker processes of the local Dask cluster (default: one per core, "
                                                "at most one per shard; 0: run in this process without Dask)")
    ap.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786 (default: Dask's "
                                        "scheduler-address config / DASK_SCHEDULER_ADDRESS, else a local cluster)")
    ap.add_argument("--scheduler-timeout", type=float, metavar="SECONDS",
                    help="how long to keep trying to reach --scheduler before giving up (default 10)")
    ap.add_argument("--shard-size", type=int, default=32, help="samples per task (default 32)")
    ap.add_argument("--resume", action="store_true", help="reuse the shard results a previous run of the same job "
                                                          "left on disk; compute only the missing ones")
    ap.add_argument("--work", help="where shard results are kept (default: $STEP_DEPLOY_CACHE/parity or "
                                   "~/.cache/step-deploy/parity)")
    ap.add_argument("--raster-layers", help="comma list of layers for the spike raster (default: 4 spread over the "
                                            "network)")
    ap.add_argument("--raster-sample", type=int, default=0, help="the sample shown in the raster (default 0)")
    ap.add_argument("-o", "--output", help="output directory (default: <checkpoint without suffix>-parity/)")
    ap.add_argument("--force", action="store_true", help="replace an output directory step-deploy did not write")
    a = ap.parse_args(argv)
    try:
        from step_deploy.parity.command import RunOptions, parse_limits, parse_samples, run_command
        from step_deploy.parity.context import ParityOptions

        scheduler = a.scheduler
        if scheduler is None and a.workers is None:
            import importlib.util
            if importlib.util.find_spec("dask") is not None:
                import dask
                scheduler = dask.config.get("scheduler-address", None)
        po = ParityOptions(chip=a.chip, mesh_hardware=a.mesh_hardware, part=a.part, clock_mhz=a.clock_mhz,
                           parallelism=a.parallelism, weight_bits=a.weight_bits, calib=a.calib, root=a.root,
                           calib_samples=a.calib_samples)
        ro = RunOptions(stages=a.stages, samples=parse_samples(a.samples), limits=parse_limits(a.limit), data=a.data,
                        shard_size=a.shard_size, workers=a.workers, scheduler=scheduler, resume=a.resume,
                        work=a.work, raster_layers=tuple(x.strip() for x in a.raster_layers.split(",") if x.strip())
                        if a.raster_layers else None, raster_sample=a.raster_sample, progress=sys.stderr.isatty(),
                        **({} if a.scheduler_timeout is None else {"scheduler_timeout": a.scheduler_timeout}))
        out = a.output or f"{Path(a.checkpoint).with_suffix('')}-parity"
        lines, code = run_command(a.checkpoint, out, po, ro, force=a.force)
    except _our_errors() as e:
        return _fail(str(e))
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(export_main())
