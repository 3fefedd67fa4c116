"""Command-line options that several hardware targets share (one declaration, one help text: the
CLI adds a shared flag once, in the group of the first target that declares it)."""
from __future__ import annotations

from .registry import TargetOption

N_CALIB = 256

CHECK_ONLY = TargetOption(("--check-only",), {
    "action": "store_true",
    "help": "only check that the network fits the chip or part and print the table (writes nothing); exit 1 "
            "when it does not"}, False)
ALLOW_ERRORS = TargetOption(("--allow-errors",), {
    "action": "store_true", "help": "write the artifacts even when the constraint / fit check fails"}, False)
CALIB = TargetOption(("--calib",), {
    "metavar": "DATA",
    "help": "calibration/evaluation inputs: a bundled data set (digits, ...), an on-disk data set with --root, a "
            ".npy/.pt tensor file, or 'noise' (flagged in every report); default: the checkpoint's data set"}, None)
CALIB_SAMPLES = TargetOption(("--calib-samples",), {
    "type": int, "metavar": "N", "help": f"calibration samples for the quantizer (default {N_CALIB})"}, N_CALIB)
ROOT = TargetOption(("--root",), {"metavar": "DIR", "help": "folder of an on-disk data set (cifar10, cifar10-dvs)"},
                    None)

__all__ = ["N_CALIB", "CHECK_ONLY", "ALLOW_ERRORS", "CALIB", "CALIB_SAMPLES", "ROOT"]
