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

STEP's other neurons (ILIF, NILIF, EIF, KLIF, HDLIF, CLIF, GLIF, PSN) live in
:mod:`.neuron_zoo`; :func:`make_neuron` builds any of them by our short name or
STEP's class name. Every neuron derives from :class:`SpikingNeuron` and
describes itself for lowering with ``neuron_params()`` (key ``"op"`` = the IR
class name, the other keys = that IR node's fields).
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from .surrogates import Surrogate, make_surrogate

__all__ = ["SpikingNeuron", "BaseNeuron", "LIFNode", "IFNode", "PLIFNode", "NEURONS", "STEP_NODE_CLASSES",
           "make_neuron", "neuron_class", "iter_neurons"]

_COMPARES = (">=", ">")
_RESETS = ("hard", "soft")


def split_steps(module: nn.Module, x: torch.Tensor, step: int) -> torch.Tensor:
    """STEP's ``(T*B, ...)`` -> ``(T, B, ...)``, with an error naming the neuron when ``T*B`` does not split."""
    if x.dim() < 1 or x.shape[0] % step != 0:
        raise ValueError(
            f"{type(module).__name__}: leading dim {tuple(x.shape)[:1]} is not a multiple "
            f"of step={step}; expected a (T*B, ...) tensor"
        )
    return x.unflatten(0, (step, -1))


class SpikingNeuron(nn.Module):
    """Marker base of every neuron of the model zoo (:func:`iter_neurons` finds these).

    Subclasses set ``step`` (the ``T`` that splits STEP's ``(T*B, ...)`` layout), start
    their state fresh on every forward call, and implement :meth:`neuron_params`.
    """

    step: int = 4

    def neuron_params(self) -> dict:
        """``{"op": <IR class name>, <IR field>: value, ...}`` (contract §2)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe itself for lowering")

    def reset_state(self) -> None:
        """No-op: state is re-initialised on every forward call."""

    n_reset = reset_state  # BrainCog/STEP name


class BaseNeuron(SpikingNeuron):
    """Common state machine of the threshold neurons (see module docstring).

    Subclasses change one piece: :meth:`charge` (``H`` from ``V`` and ``X``), :meth:`fire`
    (output spike and the spike used by the reset), :meth:`initial_membrane`.

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
    ir_kind = "LIF"
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

    def fire(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, S_reset)``: the output spike (surrogate gradient) and the spike the reset uses."""
        s = self.act_fun(h - self.threshold)
        return s, (s.detach() if self.detach_reset else s)

    def initial_membrane(self, x0: torch.Tensor) -> torch.Tensor:
        """``V[-1]``: ``v_reset`` everywhere (BrainCog's ``n_reset``)."""
        return torch.full_like(x0, self.v_reset)

    def effective_tau(self) -> float | None:
        """Time constant used by :meth:`charge` (``None`` for no leak)."""
        return self.tau

    def run_steps(self, x: torch.Tensor) -> tuple[list, list, list]:
        """``(spikes, H, V)`` per step for a ``(T, B, ...)`` input, gradients kept (V after the reset)."""
        v = self.initial_membrane(x[0])
        spikes, hs, vs = [], [], []
        for t in range(x.shape[0]):
            h = self.charge(v, x[t])
            s, s_r = self.fire(h)
            if self.reset_mode == "hard":
                v = h * (1.0 - s_r)
                if self.v_reset != 0.0:
                    v = v + s_r * self.v_reset
            else:
                v = h - s_r * self.threshold
            spikes.append(s)
            hs.append(h)
            vs.append(v)
        return spikes, hs, vs

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Run the neuron over a ``(T, B, ...)`` input; returns spikes ``(T, B, ...)``."""
        spikes, hs, vs = self.run_steps(x)
        if self.record_state:
            self.h_seq = torch.stack([h.detach() for h in hs])
            self.v_seq = torch.stack([v.detach() for v in vs])
        return torch.stack(spikes, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run over STEP's ``(T*B, ...)`` layout (time-major); returns ``(T*B, ...)``."""
        return self.forward_steps(split_steps(self, x, self.step)).flatten(0, 1)

    def neuron_params(self) -> dict:
        """IR ``Neuron`` fields (contract §2): ``op``, ``kind`` LIF/IF/PLIF, ``v_threshold``, ..."""
        tau = self.effective_tau()
        return {
            "op": "Neuron",
            "kind": self.ir_kind,
            "tau": 1.0 if tau is None else float(tau),
            "v_threshold": float(self.threshold.detach()),
            "v_reset": self.v_reset,
            "reset": self.reset_mode,
            "compare": self.compare,
            "decay_input": self.decay_input,
            "output": "binary",
            "max_level": 1,
            "fire": "threshold",
            "round_d": 0,
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
    ir_kind = "LIF"

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
    ir_kind = "IF"
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
    ir_kind = "PLIF"

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, step: int = 4, **kwargs):
        if tau <= 1.0:
            raise ValueError(f"PLIFNode needs tau > 1, got {tau}")
        super().__init__(tau=tau, threshold=threshold, step=step, **kwargs)
        self.w = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))

    def effective_tau(self) -> float:
        return 1.0 / float(torch.sigmoid(self.w.detach()))

    def charge(self, v, x):
        return v + (x - (v - self.v_reset)) * torch.sigmoid(self.w)


#: short name -> class (:mod:`.neuron_zoo` adds STEP's other neurons when it is imported, which importing
#: ``step_deploy.models`` does)
NEURONS: dict[str, type] = {"lif": LIFNode, "if": IFNode, "plif": PLIFNode}

#: STEP ``node_type`` class name -> our short name
STEP_NODE_CLASSES: dict[str, str] = {"LIFNode": "lif", "IFNode": "if", "PLIFNode": "plif"}

# options NeuronSpec passes to every neuron; a neuron without the option accepts them at these values
_NEUTRAL = {"surrogate": "sigmoid", "alpha": 4.0, "reset": "hard", "detach_reset": True}
# options a neuron may lack without a word: STEP passes them to every node and some constructors drop them
_IGNORABLE = ("input_dims", "levels", "D")


def neuron_class(node: str) -> type:
    """The neuron class for our short name (``lif``, ``ilif``, ...) or STEP's class name (``ILIFNode``, ...)."""
    key = STEP_NODE_CLASSES.get(str(node), str(node).lower())
    if key not in NEURONS:
        raise ValueError(f"unknown neuron {node!r}; known: {sorted(NEURONS)} or STEP's class names "
                         f"{sorted(STEP_NODE_CLASSES)}")
    return NEURONS[key]


def _accepted(cls: type) -> set[str] | None:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def make_neuron(node: str = "lif", **kwargs) -> SpikingNeuron:
    """Build a neuron by short name or STEP class name (see :func:`neuron_class`).

    ``kwargs`` whose value is ``None`` are dropped so that class defaults apply
    (e.g. ``compare=None`` keeps IFNode's ``'>'``). An option the neuron does not have is
    dropped when it has the value every model passes (``surrogate='sigmoid'``, ``alpha=4``,
    ``reset='hard'``; ``input_dims`` and ``levels`` always) and is an error otherwise.
    """
    cls = neuron_class(node)
    accepted = _accepted(cls)
    out = {}
    for key, val in kwargs.items():
        if val is None:
            continue
        if accepted is not None and key not in accepted:
            if key in _IGNORABLE or _NEUTRAL.get(key, object()) == val:
                continue
            raise ValueError(f"neuron {node!r} ({cls.__name__}) has no option {key}={val!r}; its options: "
                             f"{', '.join(sorted(accepted))}")
        out[key] = val
    return cls(**out)


def iter_neurons(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """``(qualified_name, module)`` for every neuron in ``model`` (registration order); neurons
    inside a neuron (HDLIF's experts) are part of it and not listed."""
    found: list[tuple[str, SpikingNeuron]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, SpikingNeuron):
            continue
        if any(name.startswith(outer + ".") or outer == "" for outer, _ in found):
            continue
        found.append((name, mod))
    return found
