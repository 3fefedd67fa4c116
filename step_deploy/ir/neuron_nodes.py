"""IR node types of spiking neurons: one frozen dataclass per neuron rule, the per-step equation
in each docstring (the numerical definition is ``step_deploy.simulators.reference_neurons``).

``Neuron`` covers LIF/IF/PLIF with hard or soft reset and binary, ternary, ILIF (integer) and
NILIF spikes; STEP's neurons with other dynamics are subclasses with their own op names (so a
backend that does not implement one refuses it); PSN is a sequence op (``TemporalLinear``, whole
time sequence) followed by a stateless ``Heaviside``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from .nodes import Node, Shape, ShapeError, register

# --------------------------------------------------------------------------- neurons

NEURON_KINDS = ("LIF", "IF", "PLIF", "KLIF", "EIF", "CLIF", "GLIF")
FIRE_RULES = ("threshold", "round", "round_normalized")
RESET_MODES = ("hard", "soft")
COMPARES = (">=", ">")
ALPHABETS = ("binary", "ternary", "integer")


@register
@dataclass(frozen=True, eq=False)
class Neuron(Node):
    """Spiking neuron layer (elementwise, stateful). With ``V[-1] = v_reset``:

    charge  LIF/PLIF (decay_input): ``H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau``
            LIF (no decay_input):   ``H[t] = V[t-1] - (V[t-1] - v_reset) / tau + X[t]``
            IF:                     ``H[t] = V[t-1] + X[t]``
    fire    ``binary``:  ``S[t] = H[t] >= v_threshold`` (``compare='>='``, STEP) or ``>`` (Lava, BrainCog DVS)
            ``ternary``: ``S[t] = +1 if H >= θ; -1 if H <= -θ; else 0`` (with ``>``/``<`` for strict)
            ``integer`` (``fire='round'``, STEP's ILIF, D = max_level):
                       ``S[t] = clamp(round_half_even(H[t] / θ), 0, max_level)``
            ``round_normalized`` (STEP's NILIF, D = ``round_d``, binary output):
                       ``S[t] = round_half_even(clamp(H[t] / θ, 0, D) / D)`` (a tie ``H/θ = D/2`` gives 0)
    reset   ``hard``: ``V[t] = H[t] · (1 - |S[t]|) + v_reset · |S[t]|``
            ``soft``: ``V[t] = H[t] - S[t] · v_threshold``

    PLIF's learned tau is fixed at export (``tau = 1 / sigmoid(w)``); ``kind`` keeps the provenance.
    ``output`` names the spike alphabet (``binary`` {0,1}, ``ternary`` {-1,0,1}, ``integer``
    {0..max_level}), so consumers know whether spikes are single bits."""

    kind: str = "LIF"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float = 0.0
    reset: str = "hard"
    compare: str = ">="
    decay_input: bool = True
    output: str = "binary"
    max_level: int = 1
    fire: str = "threshold"
    round_d: int = 0
    stateful: ClassVar[bool] = True

    def __post_init__(self):
        if self.output == "integer" and self.fire == "threshold":  # graphs written before ``fire`` existed
            object.__setattr__(self, "fire", "round")
        for attr, allowed in (("kind", NEURON_KINDS), ("reset", RESET_MODES),
                              ("compare", COMPARES), ("output", ALPHABETS), ("fire", FIRE_RULES)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"neuron {self.name}: {attr}={getattr(self, attr)!r}, expected one of {allowed}")
        if self.fire == "round" and self.output != "integer":
            raise ValueError(f"neuron {self.name}: fire='round' sends integer spikes; set output='integer'")
        if self.fire == "round_normalized" and (self.output != "binary" or self.round_d < 1):
            raise ValueError(f"neuron {self.name}: fire='round_normalized' (NILIF) needs output='binary' and round_d >= 1")

    def infer_shape(self, in_shapes):
        return in_shapes[0]

    @property
    def levels(self) -> int:
        """Number of distinct spike values (2 for binary)."""
        return {"binary": 2, "ternary": 3}.get(self.output, self.max_level + 1)



@register
@dataclass(frozen=True, eq=False)
class KLIFNeuron(Neuron):
    """STEP's ``KLIFNode``: the LIF charge, then a learnable gain and a rectifier before firing::

        H[t] = relu(k · (V[t-1] + (X[t] - V[t-1]) / tau))
        S[t] = H[t] >= v_threshold;  V[t] = H[t] · (1 - S[t])        (hard reset to 0)
    """

    kind: str = "KLIF"
    k: float = 1.0


@register
@dataclass(frozen=True, eq=False)
class EIFNeuron(Neuron):
    """STEP's ``EIFNode`` (exponential integrate-and-fire)::

        H[t] = V[t-1] + (X[t] - V[t-1] + delta_t · exp((V[t-1] - theta_rh) / delta_t)) / tau
        S[t] = H[t] >= v_threshold;  V[t] = H[t] · (1 - S[t]) + S[t] · v_reset   (v_reset = -0.1 in STEP)

    ``V[-1] = v_reset`` (the state STEP's per-batch ``n_reset`` leaves). The exponential has no exact
    integer form."""

    kind: str = "EIF"
    v_reset: float = -0.1
    delta_t: float = 1.0
    theta_rh: float = 0.8


@register
@dataclass(frozen=True, eq=False)
class CLIFNeuron(Neuron):
    """STEP's ``ComplementaryLIFNeuron`` (CLIF): a membrane ``V`` and a complementary memory ``M``,
    both 0 before step 0::

        H[t] = V[t-1] · (1 - 1/tau) + X[t]
        M'   = M[t-1] · sigmoid(H[t] / tau)
        S[t] = H[t] >= v_threshold
        M[t] = M' + S[t]
        V[t] = H[t] - S[t] · v_threshold - S[t] · sigmoid(M[t])

    STEP builds it with ``v_threshold=1.0`` whatever threshold the model passes (its constructor
    ignores ``threshold=``)."""

    kind: str = "CLIF"
    reset: str = "soft"
    decay_input: bool = False


@register
@dataclass(frozen=True, eq=False)
class GLIFNeuron(Neuron):
    """STEP's ``GLIFTorch`` (gated LIF) with per-step parameters (time_wise) and gates
    ``(al, be, ga)``, all as the model uses them (after the sigmoid; static gates are 0/1).
    ``params[t] = (tau, vth, leak, conduct, revth)`` at step t; ``U[-1] = 0``, ``O[-1] = 0``::

        I[t] = X[t] · (1 - be · (1 - conduct[t]))
        U[t] = (1 - al · (1 - tau[t])) · U[t-1] · (1 - ga · O[t-1]) - (1 - al) · leak[t]
               + I[t] - (1 - ga) · revth[t] · O[t-1]
        O[t] = U[t] - vth[t] > 0

    ``v_threshold`` holds ``vth[0]`` for reports only; the rule uses ``params``."""

    kind: str = "GLIF"
    compare: str = ">"
    params_t: Optional[np.ndarray] = None
    gates: tuple = (1.0, 1.0, 1.0)

    def __post_init__(self):
        super().__post_init__()
        if self.params_t is None or self.params_t.ndim != 2 or self.params_t.shape[1] != 5:
            raise ValueError(f"neuron {self.name}: GLIF params_t must be a (T, 5) array (tau, vth, leak, conduct, revth)")


@register
@dataclass(frozen=True, eq=False)
class TemporalLinear(Node):
    """A linear map **across time steps** (STEP's ``PSNTorch`` charge): with the input's whole
    sequence ``X[0..T-1]`` held in a time buffer,

        Y[t] = Σ_τ weight[t, τ] · X[τ] + bias[t]          (weight (T, T), bias (T,))

    It is non-causal (``Y[0]`` needs ``X[T-1]``), so it is a **sequence op**: an executor must
    buffer all T steps of its input before the first output (memory: ``T × numel(X)`` values),
    and everything downstream starts T steps later on a streaming target."""

    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    sequence: ClassVar[bool] = True
    stateful: ClassVar[bool] = True

    @property
    def steps(self) -> int:
        return int(self.weight.shape[0])

    def infer_shape(self, in_shapes):
        if self.weight is None or self.weight.ndim != 2 or self.weight.shape[0] != self.weight.shape[1]:
            raise ShapeError(f"{self.name}: weight must be a square (T, T) array")
        if self.bias is None or self.bias.shape != (self.weight.shape[0],):
            raise ShapeError(f"{self.name}: bias must have shape ({self.weight.shape[0]},)")
        return in_shapes[0]

    def buffer_elements(self, in_shape: Shape) -> int:
        """Values the time buffer holds: ``T × numel(X)``."""
        return self.steps * int(np.prod(in_shape))


@register
@dataclass(frozen=True, eq=False)
class Heaviside(Node):
    """Stateless firing (PSN's spike): ``S[t] = X[t] >= threshold`` (or ``>`` with ``compare='>'``)."""

    threshold: float = 0.0
    compare: str = ">="

    def __post_init__(self):
        if self.compare not in COMPARES:
            raise ValueError(f"{self.name}: compare={self.compare!r}, expected one of {COMPARES}")

    def infer_shape(self, in_shapes):
        return in_shapes[0]
