"""Neurons of three flavours to IR ``Neuron`` nodes, with every semantic difference explicit.

* step-deploy / STEP neurons (``neuron_params()``): the dict names the IR op (``"op"``: ``Neuron``,
  ``KLIFNeuron``, ``EIFNeuron``, ``CLIFNeuron``, ``GLIFNeuron``, or ``PSN``) and holds the node's
  fields by their IR names, so multi-level spikes (ILIF), NILIF's rule and soft reset pass through
  unchanged; a key that is not a field is refused, never dropped. PSN becomes ``TemporalLinear``
  (its T×T ``fc`` across time, a sequence op) + ``Heaviside`` (``>= 0``). A neuron whose
  ``neuron_params()`` raises ``NotImplementedError`` (HDLIF) is refused naming the module path.
  The older format without ``"op"`` (binary LIF/IF/PLIF, key ``threshold``) is still read.
* SpikingJelly-style (attributes ``v_threshold``, ``v_reset``, ``tau``, ``decay_input``): fire
  on ``>=`` (SpikingJelly's Heaviside is ``x >= 0``); ``v_reset=None`` means soft reset.
* snnTorch ``Leaky``: ``mem = beta·mem + x``, fires on ``>``; only ``reset_mechanism='zero'``
  with ``reset_delay=False`` is expressible exactly (the delayed reset acts one step late, and
  subtraction re-tests a pending reset), so anything else is refused with a message saying what
  to set.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from step_deploy import ir

from .builder import Builder, CaptureError, child, lowers_by_probe


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


_OLD_KEYS = {"kind", "tau", "threshold", "v_reset", "reset", "compare", "decay_input", "step"}
#: ``neuron_params()["op"]`` -> IR node class (PSN lowers to two nodes, see :func:`_lower_psn`)
_NEW_OPS = {"Neuron": ir.Neuron, "KLIFNeuron": ir.KLIFNeuron, "EIFNeuron": ir.EIFNeuron, "CLIFNeuron": ir.CLIFNeuron,
            "GLIFNeuron": ir.GLIFNeuron, "PSN": None}


def _plain(v):
    """A field value as the IR stores it: tensors to numpy float32 arrays, 0-d values to Python scalars."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return v.item() if v.ndim == 0 else np.ascontiguousarray(v, dtype=np.float32)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def _module_params(m, path: str) -> dict:
    """``m.neuron_params()``; a neuron that cannot be lowered says why (``NotImplementedError``)."""
    try:
        return m.neuron_params()
    except NotImplementedError as e:
        raise CaptureError(f"module {path or '<root>'!r} ({type(m).__name__}) cannot be captured: {e}. "
                           f"To deploy the model, build it with another neuron") from None


def _from_old_format(p: dict, path: str, m) -> dict:
    """The format before ``"op"``: ``{"kind": "lif", "threshold": ..., ...}`` (binary LIF/IF/PLIF)."""
    extra = sorted(set(p) - _OLD_KEYS)
    if extra:  # e.g. levels of a multi-level neuron: never drop them and capture a binary neuron
        raise CaptureError(f"module {path!r} ({type(m).__name__}): neuron_params() has keys {extra} that the old "
                           f"format (no 'op' key) cannot carry; return the new format with 'op' and the IR "
                           f"field names (see step_deploy.ir.Neuron)")
    kind = {"lif": "LIF", "if": "IF", "plif": "PLIF"}.get(p.get("kind"))
    if kind is None:
        raise CaptureError(f"module {path!r} ({type(m).__name__}): neuron_params() kind={p.get('kind')!r} has no "
                           f"meaning in the old format (lif, if, plif); return the new format with 'op'")
    return {"op": "Neuron", "kind": kind, "tau": float(p["tau"]) if p["tau"] is not None else 1.0,
            "v_threshold": float(p["threshold"]), "v_reset": float(p["v_reset"]), "reset": p["reset"],
            "compare": p["compare"], "decay_input": bool(p["decay_input"])}


def _from_new_format(p: dict, path: str, m) -> dict:
    """``{"op": <IR class name> | "PSN", <IR field>: value, ...}``: every key must be a field of the
    node (``step``, the model's T, is accepted and dropped), so no setting is silently lost."""
    op = p["op"]
    if op not in _NEW_OPS:
        raise CaptureError(f"module {path!r} ({type(m).__name__}): neuron_params() names op {op!r}; capture knows "
                           f"{sorted(_NEW_OPS)}")
    fields = {"weight", "bias"} if op == "PSN" else set(ir.node_fields(_NEW_OPS[op])) - {"name", "inputs"}
    out = {k: _plain(v) for k, v in p.items() if k not in ("op", "step")}
    unknown = sorted(set(out) - fields)
    if unknown:
        raise CaptureError(f"module {path!r} ({type(m).__name__}): neuron_params() keys {unknown} are not fields of "
                           f"IR {op} (fields: {sorted(fields)}); they would be dropped, so capture refuses")
    out["op"] = op
    return out


def neuron_params_of(m, path: str = "", probe: bool = False) -> Optional[dict]:
    """IR fields for a neuron module (key ``"op"``: the IR class name, or ``"PSN"``), or None if ``m``
    is not a neuron. With ``probe`` only says whether ``m`` is one (never raises for ours)."""
    if hasattr(m, "neuron_params") and callable(m.neuron_params):
        if probe:
            return {}
        p = _module_params(m, path)
        return _from_new_format(p, path, m) if "op" in p else _from_old_format(p, path, m)
    if probe:
        return _snntorch_params(m, path) if type(m).__name__ == "Leaky" and not getattr(m, "reset_delay", True) \
            else (_sj_params(m) or ({} if type(m).__name__ == "Leaky" else None))
    p = _snntorch_params(m, path) or _sj_params(m)
    return dict(p, op="Neuron") if p else p


def _lower_psn(b: Builder, path: str, x: str, p: dict) -> str:
    """STEP's ``PSNTorch``: ``H = W·X_seq + b`` across the T steps (a sequence op), then ``S = H >= 0``."""
    w, bias = np.asarray(p["weight"], np.float32), np.asarray(p["bias"], np.float32)
    h = b.add(ir.TemporalLinear, child(path, "fc"), (x,), weight=w, bias=bias)
    return b.add(ir.Heaviside, path, (h,), threshold=0.0, compare=">=")


def lower_neuron(b: Builder, m, path: str, x: str) -> str:
    params = neuron_params_of(m, path)
    if not params:
        raise CaptureError(f"module {path!r} ({type(m).__name__}) is not a supported neuron")
    op = params.pop("op")
    if op == "PSN":
        return _lower_psn(b, path, x, params)
    try:
        return b.add(_NEW_OPS[op], path, (x,), **params)
    except (TypeError, ValueError) as e:
        if isinstance(e, CaptureError):
            raise
        raise CaptureError(f"module {path!r} ({type(m).__name__}): neuron_params() do not make a valid IR {op}: "
                           f"{e}") from None


@lowers_by_probe
def _neuron_probe(m):
    """Any module that looks like a neuron (ours, SpikingJelly-style, snnTorch ``Leaky``)."""
    return lower_neuron if neuron_params_of(m, probe=True) is not None else None
