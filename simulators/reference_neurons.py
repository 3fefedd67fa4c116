"""Reference semantics of the spiking ops, float mode: each neuron op as three steps.

Every spiking op (``Neuron`` and its subclasses, and PSN's stateless ``Heaviside``) is a
:class:`NeuronRule`:

* ``charge(n, x, state, t) -> H[t]``: the membrane before firing, from the input ``X[t]`` and the
  state after step ``t-1`` (the state is read, not changed);
* ``fire(n, h, t) -> S[t]``: the spike, monotone non-decreasing in ``h``;
* ``commit(n, h, s, state, t)``: the state after step ``t`` given the spike ``s`` (which need not
  be ``fire(h)``: the float parity check forces observed spikes through it);
* ``boundary(n, h, t)``: the distance from ``h`` to the nearest membrane value where the spike
  changes (the firing threshold; ``(k + 1/2)·θ`` for ``fire='round'``; ``D·θ/2`` for
  ``fire='round_normalized'``), used to call a flipped spike a rounding tie.

The float32 operations follow STEP's code (``cls/models/utils/node.py``) in the same order, so the
PyTorch models and the reference agree bit for bit; see each function for the order. Constants
meet the activations as Python floats or 0-d tensors of the activation's dtype, which is what the
models' float32 parameters and buffers amount to, so ``dtype=torch.float64`` runs the same
equations in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from step_deploy import ir

__all__ = ["NeuronRule", "NEURON_RULES", "neuron_charge", "neuron_fire", "neuron_reset", "neuron_state",
           "spiking_ops", "threshold_at"]


# --------------------------------------------------------------------------- Neuron (LIF / IF / PLIF)


def neuron_charge(n: ir.Neuron, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The membrane ``H[t]`` from the input ``X[t]`` and the previous state ``V[t-1]``."""
    if n.kind == "IF":
        return v + x
    if n.kind == "PLIF" and n.decay_input:  # PLIF multiplies by sigmoid(w) = 1/tau, as trained
        return v + (x - (v - n.v_reset)) * (1.0 / n.tau)
    if n.decay_input:
        return v + (x - (v - n.v_reset)) / n.tau
    return v - (v - n.v_reset) / n.tau + x


def neuron_fire(n: ir.Neuron, h: torch.Tensor) -> torch.Tensor:
    """The spike ``S[t]`` for membrane ``H[t]``, by the node's ``fire`` rule and ``output`` alphabet.
    Monotone non-decreasing in ``h`` for every rule.

    ``round`` (ILIF): ``clamp(round_half_even(h / θ), 0, max_level)`` (STEP computes ``h / θ``,
    clamps, then rounds; with integer bounds the order does not change the value).
    ``round_normalized`` (NILIF): ``round_half_even(clamp(h / θ, 0, D) / D)``, STEP's order."""
    thr = n.v_threshold
    if n.fire == "round_normalized":
        return torch.round(torch.clamp(h / thr, 0, n.round_d) / n.round_d)
    if n.output == "binary":
        return (h >= thr if n.compare == ">=" else h > thr).to(h.dtype)
    if n.output == "ternary":
        pos = h >= thr if n.compare == ">=" else h > thr
        neg = h <= -thr if n.compare == ">=" else h < -thr
        return pos.to(h.dtype) - neg.to(h.dtype)
    return torch.clamp(torch.round(h / thr), 0, n.max_level)


def neuron_reset(n: ir.Neuron, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The state ``V[t]`` after spike ``s`` (which need not be ``neuron_fire(n, h)``): hard reset
    ``h·(1 - fired) + v_reset·fired``; soft reset ``h - s·v_threshold`` (STEP's ILIF/NILIF order)."""
    if n.reset == "hard":
        fired = s.abs() if n.output != "integer" else (s > 0).to(h.dtype)
        return h * (1.0 - fired) + n.v_reset * fired if n.v_reset else h * (1.0 - fired)
    return h - s * n.v_threshold


def neuron_state(n: ir.Neuron, x: torch.Tensor, state: dict) -> torch.Tensor:
    """``V[t-1]`` from the node's state (``v_reset`` before the first step)."""
    v = state.get("v")
    return torch.full_like(x, n.v_reset) if v is None else v


def _lif_charge(n, x, state, t):
    return neuron_charge(n, x, neuron_state(n, x, state))


def _lif_fire(n, h, t):
    return neuron_fire(n, h)


def _lif_commit(n, h, s, state, t):
    state["v"] = neuron_reset(n, h, s)


def _lif_boundary(n: ir.Neuron, h: torch.Tensor, t: int) -> torch.Tensor:
    thr = n.v_threshold
    if n.fire == "round_normalized":
        return (h - n.round_d * thr / 2).abs()
    if n.output == "binary":
        return (h - thr).abs()
    if n.output == "ternary":
        return torch.minimum((h - thr).abs(), (h + thr).abs())
    k = torch.clamp(torch.floor(h / thr), 0, max(n.max_level - 1, 0))
    return (h - (k + 0.5) * thr).abs()


# --------------------------------------------------------------------------- KLIF, EIF


def _klif_charge(n: ir.KLIFNeuron, x, state, t):
    """STEP's ``KLIFNode.integral``: the LIF charge, then ``mem *= k``, then ``relu``."""
    return torch.relu(neuron_charge(n, x, neuron_state(n, x, state)) * n.k)


def _eif_charge(n: ir.EIFNeuron, x, state, t):
    """STEP's ``EIFNode.integral``: ``v + (x - v + ΔT·exp((v - θ_rh) / ΔT)) / tau``, in that order."""
    v = neuron_state(n, x, state)
    return v + (x - v + n.delta_t * torch.exp((v - n.theta_rh) / n.delta_t)) / n.tau


# --------------------------------------------------------------------------- CLIF


def _clif_charge(n: ir.CLIFNeuron, x, state, t):
    """STEP's ``ComplementaryLIFNeuron._charging_v`` (v_reset None): ``v·(1 - 1/tau) + x`` (the
    factor computed in double, then applied), ``x / tau`` first with ``decay_input``."""
    if n.decay_input:
        x = x / n.tau
    v = state.get("v")
    return x if v is None else v * (1.0 - 1.0 / n.tau) + x  # STEP's first step sets v = x


def _clif_commit(n: ir.CLIFNeuron, h, s, state, t):
    """``M' = M·sigmoid(H/tau)``; ``M = M' + S``; ``V = H - S·θ``; ``V -= S·sigmoid(M)`` (STEP's order)."""
    m = state.get("m")
    m = torch.zeros_like(h) if m is None else m * torch.sigmoid(h / n.tau)
    m = m + s
    state["m"] = m
    v = h - s * n.v_threshold
    state["v"] = v - s * torch.sigmoid(m)


# --------------------------------------------------------------------------- GLIF


def _glif_scalars(n: ir.GLIFNeuron, state: dict, t: int, like: torch.Tensor) -> dict:
    """Step ``t``'s parameters and the gates as 0-d tensors of the activation's dtype (as STEP's
    float32 0-d parameters meet the activations)."""
    key = ("glif", like.dtype)
    if key not in state:
        p = torch.as_tensor(n.params_t).to(like.dtype)
        gates = torch.tensor([float(g) for g in n.gates], dtype=like.dtype)
        state[key] = (p, gates)
    p, gates = state[key]
    if t >= p.shape[0]:
        raise ValueError(f"GLIF neuron {n.name!r}: params_t holds {p.shape[0]} steps, the run reached step {t}; "
                         f"run the graph for T={p.shape[0]} steps (the model's T)")
    return dict(tau=p[t, 0], vth=p[t, 1], leak=p[t, 2], conduct=p[t, 3], revth=p[t, 4],
                al=gates[0], be=gates[1], ga=gates[2])


def _glif_charge(n: ir.GLIFNeuron, x, state, t):
    """STEP's ``GLIFTorch.extended_state_update``, operation by operation::

        I = x · (1 - be·(1 - conduct))
        U = ((1 - al·(1 - tau))·U' · (1 - ga·O') - (1 - al)·leak) + I - (1 - ga)·revth·O'
    """
    c = _glif_scalars(n, state, t, x)
    u = state.get("u")
    o = state.get("o")
    if u is None:
        u, o = torch.zeros_like(x), torch.zeros_like(x)
    i = x * (1 - c["be"] * (1 - c["conduct"]))
    return ((1 - c["al"] * (1 - c["tau"])) * u * (1 - c["ga"] * o) - (1 - c["al"]) * c["leak"]) + i \
        - (1 - c["ga"]) * c["revth"] * o


def _glif_fire(n: ir.GLIFNeuron, h, t):
    """``O = (U - vth[t]) > 0`` (``>= 0`` with ``compare='>='``)."""
    d = h - float(n.params_t[t, 1])  # a float32 value: exact as a Python float
    return (d > 0 if n.compare == ">" else d >= 0).to(h.dtype)


def _glif_commit(n, h, s, state, t):
    state["u"], state["o"] = h, s


def _glif_boundary(n: ir.GLIFNeuron, h, t):
    return (h - float(n.params_t[t, 1])).abs()


# --------------------------------------------------------------------------- Heaviside (PSN's spike)


def _heaviside_charge(n: ir.Heaviside, x, state, t):
    return x


def _heaviside_fire(n: ir.Heaviside, h, t):
    return (h >= n.threshold if n.compare == ">=" else h > n.threshold).to(h.dtype)


def _no_state(n, h, s, state, t):
    return None


def _heaviside_boundary(n: ir.Heaviside, h, t):
    return (h - n.threshold).abs()


# --------------------------------------------------------------------------- table


@dataclass(frozen=True)
class NeuronRule:
    """One spiking op as charge / fire / commit (see the module docstring)."""

    charge: Callable
    fire: Callable
    commit: Callable
    boundary: Callable


_LIF = NeuronRule(_lif_charge, _lif_fire, _lif_commit, _lif_boundary)
NEURON_RULES: dict[str, NeuronRule] = {
    "Neuron": _LIF,
    "KLIFNeuron": NeuronRule(_klif_charge, _lif_fire, _lif_commit, _lif_boundary),
    "EIFNeuron": NeuronRule(_eif_charge, _lif_fire, _lif_commit, _lif_boundary),
    "CLIFNeuron": NeuronRule(_clif_charge, _lif_fire, _clif_commit, _lif_boundary),
    "GLIFNeuron": NeuronRule(_glif_charge, _glif_fire, _glif_commit, _glif_boundary),
    "Heaviside": NeuronRule(_heaviside_charge, _heaviside_fire, _no_state, _heaviside_boundary),
}


def spiking_ops() -> frozenset[str]:
    """Ops whose output is a spike train (recorded by ``reference.run(record=True)``)."""
    return frozenset(NEURON_RULES)


def threshold_at(n: ir.Node, t: int) -> float:
    """The firing threshold of spiking node ``n`` at step ``t`` (for reports)."""
    if isinstance(n, ir.GLIFNeuron):
        return float(n.params_t[min(t, n.params_t.shape[0] - 1), 1])
    if isinstance(n, ir.Heaviside):
        return float(n.threshold)
    return float(n.v_threshold)


def op_spiking(n: ir.Node, xs, state, t):
    """Any spiking op: ``S = fire(charge(X, state))``, then the state update."""
    rule = NEURON_RULES[n.op]
    h = rule.charge(n, xs[0], state, t)
    s = rule.fire(n, h, t)
    rule.commit(n, h, s, state, t)
    return s
