"""Multi-step spiking neurons compatible with STEP's ``LIFNode`` family.

All neurons share one discrete-time update (per step ``t``, state ``V``
starting at ``v_reset`` on every forward call)::

    H[t] = charge(V[t-1], X[t])                       # per neuron kind
    S[t] = H[t] >= V_th      (or H[t] > V_th if compare == '>')
    V[t] = H[t] * (1 - S[t]) + S[t] * v_reset          (reset == 'hard')
    V[t] = H[t] - S[t] * V_th                          (reset == 'soft')

with the charge functions

* ``LIFNode``:  ``H = V + (X - (V - v_reset)) / tau``   (decay_input, STEP/SpikingJelly)
* ``IFNode``:   ``H = V + X``
* ``PLIFNode``: ``H = V + (X - (V - v_reset)) * sigmoid(w)``  (learned ``1/tau``)

``S`` is computed through a surrogate (``act_fun``) whose forward pass is the
exact Heaviside step, so spikes are exact while gradients are smooth.  With
``detach_reset`` the reset uses ``S.detach()`` (STEP does this).

Layouts: ``forward(x)`` takes STEP's time-major flattened ``(T*B, ...)`` tensor
(index ``t*B + b``) and returns spikes in the same layout; ``forward_steps``
takes and returns ``(T, B, ...)``.  The ``state_dict`` of every neuron holds
exactly ``threshold`` and ``act_fun.alpha`` (plus ``w`` for PLIF), matching
STEP's keys.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .surrogates import Surrogate, make_surrogate

__all__ = ["BaseNeuron", "LIFNode", "IFNode", "PLIFNode", "NEURONS", "make_neuron", "iter_neurons"]

_COMPARES = (">=", ">")
_RESETS = ("hard", "soft")


class BaseNeuron(nn.Module):
    """Common state machine of all multi-step neurons (see module docstring).

    Args:
        tau: membrane time constant (plain attribute, not in the state_dict).
        threshold: firing threshold ``V_th`` (frozen parameter ``threshold``).
        step: number of time steps ``T`` used to split a ``(T*B, ...)`` input.
        v_reset: reset potential and initial membrane value.
        reset: ``'hard'`` (to ``v_reset``) or ``'soft'`` (subtract ``V_th``).
        compare: ``'>='`` (STEP) or ``'>'`` (BrainCog QGate/ATan, Lava, snnTorch).
        detach_reset: use ``S.detach()`` in the reset (no gradient through it).
        surrogate, alpha: surrogate-gradient name and sharpness.
    """

    kind = "base"
    decay_input = True

    def __init__(
        self,
        tau: float = 2.0,
        threshold: float = 1.0,
        step: int = 4,
        v_reset: float = 0.0,
        reset: str = "hard",
        compare: str = ">=",
        detach_reset: bool = True,
        surrogate: str | Surrogate = "sigmoid",
        alpha: float = 4.0,
    ):
        super().__init__()
        if reset not in _RESETS:
            raise ValueError(f"reset must be one of {_RESETS}, got {reset!r}")
        if compare not in _COMPARES:
            raise ValueError(f"compare must be one of {_COMPARES}, got {compare!r}")
        if int(step) < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self.tau = float(tau)
        self.step = int(step)
        self.v_reset = float(v_reset)
        self.reset_mode = reset
        self.detach_reset = bool(detach_reset)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=False)
        if isinstance(surrogate, Surrogate):
            self.act_fun = surrogate
        else:
            self.act_fun = make_surrogate(surrogate, alpha)
        self.compare = compare
        #: set True to keep the last run's membrane traces (``h_seq``: before
        #: firing, ``v_seq``: after reset; both ``(T, B, ...)``, detached)
        self.record_state = False
        self.h_seq: torch.Tensor | None = None
        self.v_seq: torch.Tensor | None = None

    # ``compare`` lives on the surrogate (its forward is the Heaviside step).
    @property
    def compare(self) -> str:
        return ">" if self.act_fun.strict else ">="

    @compare.setter
    def compare(self, value: str) -> None:
        if value not in _COMPARES:
            raise ValueError(f"compare must be one of {_COMPARES}, got {value!r}")
        self.act_fun.strict = value == ">"

    @property
    def reset(self) -> str:
        """Reset mode, ``'hard'`` or ``'soft'``."""
        return self.reset_mode

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Membrane before firing, ``H[t]`` from ``V[t-1]`` and ``X[t]``."""
        raise NotImplementedError

    def effective_tau(self) -> float | None:
        """Time constant used by :meth:`charge` (``None`` for no leak)."""
        return self.tau

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Run the neuron over a ``(T, B, ...)`` input; returns spikes ``(T, B, ...)``."""
        v = torch.full_like(x[0], self.v_reset)
        spikes, hs, vs = [], [], []
        for t in range(x.shape[0]):
            h = self.charge(v, x[t])
            s = self.act_fun(h - self.threshold)
            s_r = s.detach() if self.detach_reset else s
            if self.reset_mode == "hard":
                v = h * (1.0 - s_r)
                if self.v_reset != 0.0:
                    v = v + s_r * self.v_reset
            else:
                v = h - s_r * self.threshold
            spikes.append(s)
            if self.record_state:
                hs.append(h.detach())
                vs.append(v.detach())
        if self.record_state:
            self.h_seq, self.v_seq = torch.stack(hs), torch.stack(vs)
        return torch.stack(spikes, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run over STEP's ``(T*B, ...)`` layout (time-major); returns ``(T*B, ...)``."""
        if x.dim() < 1 or x.shape[0] % self.step != 0:
            raise ValueError(
                f"{type(self).__name__}: leading dim {tuple(x.shape)[:1]} is not a multiple "
                f"of step={self.step}; expected a (T*B, ...) tensor"
            )
        return self.forward_steps(x.unflatten(0, (self.step, -1))).flatten(0, 1)

    def reset_state(self) -> None:
        """No-op: state is re-initialised to ``v_reset`` on every forward call."""

    n_reset = reset_state  # BrainCog/STEP name

    def neuron_params(self) -> dict:
        """Plain-Python description of the neuron for lowering to the IR."""
        tau = self.effective_tau()
        return {
            "kind": self.kind,
            "tau": None if tau is None else float(tau),
            "threshold": float(self.threshold.detach()),
            "v_reset": self.v_reset,
            "reset": self.reset_mode,
            "compare": self.compare,
            "decay_input": self.decay_input,
            "step": self.step,
        }

    def extra_repr(self) -> str:
        tau = self.effective_tau()
        tau_s = "none" if tau is None else f"{tau:g}"
        return (
            f"tau={tau_s}, threshold={float(self.threshold):g}, step={self.step}, "
            f"v_reset={self.v_reset:g}, reset={self.reset_mode}, compare='{self.compare}'"
        )


class LIFNode(BaseNeuron):
    """STEP ``LIFNode`` / SpikingJelly ``MultiStepLIFNode(decay_input=True)``.

    ``H = V + (X - (V - v_reset)) / tau``; with ``tau=2, v_reset=0`` this is
    ``H = (V + X) / 2``.
    """

    kind = "lif"

    def charge(self, v, x):
        if self.v_reset == 0.0:  # STEP's form: mem + (x - mem) / tau (same bits, one op less)
            return v + (x - v) / self.tau
        return v + (x - (v - self.v_reset)) / self.tau


class IFNode(BaseNeuron):
    """Integrate-and-fire: ``H = V + X`` (no leak).

    Defaults follow STEP's ``IFNode``: fires on ``>`` (its ATan surrogate's
    forward is ``x > 0``) with an ATan surrogate, ``alpha=2``.
    """

    kind = "if"
    decay_input = False

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, step: int = 4, *,
                 compare: str = ">", surrogate="atan", alpha: float = 2.0, **kwargs):
        super().__init__(tau=tau, threshold=threshold, step=step, compare=compare,
                         surrogate=surrogate, alpha=alpha, **kwargs)

    def effective_tau(self):
        return None

    def charge(self, v, x):
        return v + x


class PLIFNode(BaseNeuron):
    """Parametric LIF: ``H = V + (X - (V - v_reset)) * sigmoid(w)``.

    ``w`` is a learnable scalar (state_dict key ``w``) initialised to
    ``-log(tau - 1)`` so that ``1/sigmoid(w) == tau`` (``w = 0`` for tau=2).
    """

    kind = "plif"

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, step: int = 4, **kwargs):
        if tau <= 1.0:
            raise ValueError(f"PLIFNode needs tau > 1, got {tau}")
        super().__init__(tau=tau, threshold=threshold, step=step, **kwargs)
        self.w = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))

    def effective_tau(self) -> float:
        return 1.0 / float(torch.sigmoid(self.w.detach()))

    def charge(self, v, x):
        return v + (x - (v - self.v_reset)) * torch.sigmoid(self.w)


NEURONS = {"lif": LIFNode, "if": IFNode, "plif": PLIFNode}


def make_neuron(node: str = "lif", **kwargs) -> BaseNeuron:
    """Build a neuron by kind name (``lif``, ``if``, ``plif``).

    ``kwargs`` whose value is ``None`` are dropped so that class defaults apply
    (e.g. ``compare=None`` keeps IFNode's ``'>'``).
    """
    key = str(node).lower()
    if key not in NEURONS:
        raise ValueError(f"unknown neuron {node!r}; known: {sorted(NEURONS)}")
    return NEURONS[key](**{k: v for k, v in kwargs.items() if v is not None})


def iter_neurons(model: nn.Module) -> list[tuple[str, BaseNeuron]]:
    """``(qualified_name, module)`` for every neuron in ``model`` (registration order)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseNeuron)]
