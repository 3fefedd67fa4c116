"""Command-line entry points (argument parsing only): ``step-train`` and ``step-export``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path




def _user_errors():
    from step_deploy.frontend import CaptureError, CheckpointError
    from step_deploy.ir import IRError

    return (CheckpointError, CaptureError, IRError, FileNotFoundError, ValueError, KeyError, ImportError)


def _fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def train_main(argv=None) -> int:
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
    ap.add_argument("-o", "--output", required=True, help="checkpoint file to write")
    ap.add_argument("--reuse", action="store_true", help="keep an existing checkpoint trained with the same arguments")
    a = ap.parse_args(argv)
    try:
        from step_deploy.frontend.checkpoint import load_checkpoint, save_checkpoint
        from step_deploy.training import TrainArgs, train

        targs = TrainArgs(arch=a.arch, data=a.data, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                          T=a.T, root=a.root)
        out = Path(a.output)
        if a.reuse and out.exists():
            _, info = load_checkpoint(out)
            if info.metadata.get("train_args") == {**targs.__dict__}:
                print(f"reusing {out}: {a.arch} on {a.data}, test accuracy {info.metadata['test_accuracy']:.4f}")
                return 0
            print(f"{out} was trained with other arguments; training again")
        model, metrics = train(targs)
        save_checkpoint(model, out, metadata={**metrics, "arch_name": a.arch})
    except _user_errors() as e:
        return _fail(str(e))
    print(f"{a.arch} on {a.data}: test accuracy {metrics['test_accuracy']:.4f} "
          f"({metrics['test_samples']} samples), trained in {metrics['train_seconds']:.0f} s -> {out}")
    return 0


def export_main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="step-export",
                                 description="Export a trained Spiking Transformer to a deployment target.")
    ap.add_argument("checkpoint")
    ap.add_argument("--target", required=True, choices=["loihi", "fpga", "nir", "onnx"])
    ap.add_argument("-o", "--output", help="output directory (default: <checkpoint stem>-<target>/)")
    ap.add_argument("--arch", help="architecture, for a bare state_dict (or to override the checkpoint's)")
    ap.add_argument("--samples", type=int, default=8, help="samples for the parity self-check")
    ap.add_argument("--chip", default="loihi2", help="loihi target: loihi2, loihi1 or a spec file (YAML/JSON)")
    ap.add_argument("--check-only", action="store_true", help="loihi: only map and check constraints; exit 1 on errors")
    ap.add_argument("--run-lava", type=int, default=0, metavar="N", help="loihi: also run N test samples in Lava")
    a = ap.parse_args(argv)
    if a.target == "fpga":
        return _fail("--target fpga is not built yet (HLS C++ generation comes in a later release); "
                     "available now: nir, onnx, loihi")
    out = Path(a.output or f"{Path(a.checkpoint).with_suffix('')}-{a.target}")
    try:
        from step_deploy import export

        prep = export.prepare(a.checkpoint, arch=a.arch, samples=a.samples)
        if a.target == "nir":
            summary = export.export_nir_target(prep, out)
        elif a.target == "onnx":
            summary = export.export_onnx_target(prep, out)
        else:
            from step_deploy import export_loihi

            return export_loihi.main(prep, out, chip=a.chip, check_only=a.check_only, run_lava=a.run_lava)
    except _user_errors() as e:
        return _fail(str(e))
    chk = summary["self_check"]
    print(json.dumps({"target": a.target, "output": str(out), "spike_mismatches": chk["spike_mismatches"],
                      "neurons_compared": chk["neurons_compared"],
                      "max_rel_logit_error": chk["max_rel_logit_error"]}, indent=1))
    return 0 if chk["spike_mismatches"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(export_main())
