"""Neurons of three flavours to IR ``Neuron`` nodes, with every semantic difference explicit.

* step-deploy / STEP neurons (``neuron_params()``): LIF/IF/PLIF as they are.
* SpikingJelly-style (attributes ``v_threshold``, ``v_reset``, ``tau``, ``decay_input``): fire
  on ``>=`` (SpikingJelly's Heaviside is ``x >= 0``); ``v_reset=None`` means soft reset.
* snnTorch ``Leaky``: ``mem = beta·mem + x``, fires on ``>``; only ``reset_mechanism='zero'``
  with ``reset_delay=False`` is expressible exactly (the delayed reset acts one step late, and
  subtraction re-tests a pending reset), so anything else is refused with a message saying what
  to set.
"""
from __future__ import annotations

from typing import Optional

from step_deploy import ir

from .builder import Builder, CaptureError, lowers_by_probe


def _sj_params(m) -> Optional[dict]:
    if not hasattr(m, "v_threshold") or not hasattr(m, "v_reset"):
        return None
    kind = "IF" if not hasattr(m, "tau") else "LIF"
    v_reset = m.v_reset
    return {"kind": kind, "tau": float(getattr(m, "tau", 1.0)), "v_threshold": float(m.v_threshold),
            "v_reset": 0.0 if v_reset is None else float(v_reset), "reset": "soft" if v_reset is None else "hard",
            "compare": ">=", "decay_input": bool(getattr(m, "decay_input", True))}


def _snntorch_params(m, path) -> Optional[dict]:
    if type(m).__name__ != "Leaky" or not hasattr(m, "beta"):
        return None
    beta = m.beta.detach().flatten() if hasattr(m.beta, "detach") else [float(m.beta)]
    if len(set(float(b) for b in beta)) != 1:
        raise CaptureError(f"module {path!r} (snnTorch Leaky): per-neuron beta is not supported; use one beta")
    beta = float(beta[0])
    if getattr(m, "reset_delay", True):
        raise CaptureError(f"module {path!r} (snnTorch Leaky): reset_delay=True subtracts the reset one step late, "
                           f"which no per-step neuron equation expresses; build it with reset_delay=False")
    mech = getattr(m, "reset_mechanism", "subtract")
    if mech != "zero":
        raise CaptureError(
            f"module {path!r} (snnTorch Leaky): reset_mechanism={mech!r} is not supported: with subtraction snnTorch "
            f"tests the threshold on the membrane after subtracting a reset still pending from the previous step "
            f"(whenever V > threshold after a reset), which differs from a soft-reset neuron; use "
            f"reset_mechanism='zero', reset_delay=False")
    if not 0.0 <= beta < 1.0:
        raise CaptureError(f"module {path!r} (snnTorch Leaky): beta={beta} must be in [0, 1)")
    thr = m.threshold.detach().flatten() if hasattr(m.threshold, "detach") else [float(m.threshold)]
    return {"kind": "LIF", "tau": 1.0 / (1.0 - beta), "v_threshold": float(thr[0]), "v_reset": 0.0,
            "reset": "hard", "compare": ">", "decay_input": False}


def neuron_params_of(m, path: str = "", probe: bool = False) -> Optional[dict]:
    """IR Neuron fields for a neuron module, or None if ``m`` is not a neuron."""
    if hasattr(m, "neuron_params") and callable(m.neuron_params):
        p = m.neuron_params()
        kind = {"lif": "LIF", "if": "IF", "plif": "PLIF"}[p["kind"]]
        return {"kind": kind, "tau": float(p["tau"]) if p["tau"] is not None else 1.0,
                "v_threshold": float(p["threshold"]), "v_reset": float(p["v_reset"]), "reset": p["reset"],
                "compare": p["compare"], "decay_input": bool(p["decay_input"])}
    if probe:
        return _snntorch_params(m, path) if type(m).__name__ == "Leaky" and not getattr(m, "reset_delay", True) \
            else (_sj_params(m) or ({} if type(m).__name__ == "Leaky" else None))
    return _snntorch_params(m, path) or _sj_params(m)


def lower_neuron(b: Builder, m, path: str, x: str) -> str:
    params = neuron_params_of(m, path)
    if not params:
        raise CaptureError(f"module {path!r} ({type(m).__name__}) is not a supported neuron")
    return b.add(ir.Neuron, path, (x,), **params)


@lowers_by_probe
def _neuron_probe(m):
    """Any module that looks like a neuron (ours, SpikingJelly-style, snnTorch ``Leaky``)."""
    return lower_neuron if neuron_params_of(m, probe=True) is not None else None
