"""STEP's other neurons (``cls/models/utils/node.py``, ``node_type`` in its configs).

Each class computes what STEP's class computes, in the same floating-point operation order
(float32 results are bit-identical), and has STEP's ``state_dict`` keys, so STEP checkpoints
load with ``strict=True``. Conventions shared with :mod:`.neurons`: input and output are
STEP's time-major ``(T*B, ...)`` tensors, and the state starts fresh on every forward call
(STEP resets it once per batch with ``n_reset``; a forward call here is one batch).

=================  =========================================================================
class              per step ``t`` (``θ`` threshold, ``D`` levels)
=================  =========================================================================
``ILIFNode``       ``H = V + (X - V)/tau``; ``S = round_half_even(clamp(H/θ, 0, D))``;
                   ``V = H - S·θ``  (integer spikes 0..D; straight-through gradient)
``NILIFNode``      ``H`` as LIF; ``S = round_half_even(clamp(H/θ, 0, D) / D)``; ``V = H - S·θ``
``KLIFNode``       ``H = relu(k · (V + (X - V)/tau))``; ``S = H >= θ``; ``V = H·(1 - S)``
``EIFNode``        ``H = V + (X - V + ΔT·exp((V - θrh)/ΔT)) / tau``; ``S = H >= θ``;
                   ``V = H·(1 - S) + S·v_reset``  (``V[-1] = v_reset = -0.1``)
``CLIFNeuron``     ``H = V·(1 - 1/tau) + X`` (``H = X`` at t = 0); ``M = M·sigmoid(H/tau)``;
                   ``S = H >= 1``; ``M += S``; ``V = H - S·1 - S·sigmoid(M)``
``GLIFTorch``      gated LIF with learned per-step parameters (see the class)
``PSNTorch``       ``H[t] = Σ_τ W[t,τ]·X[τ] + b[t]`` over the whole sequence; ``S = H >= 0``
``HDLIFNode``      a gated mixture of IF/LIF/PLIF/EIF membranes (see the class)
=================  =========================================================================
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .neurons import (NEURONS, STEP_NODE_CLASSES, BaseNeuron, IFNode, LIFNode, PLIFNode, SpikingNeuron,
                      split_steps)
from .surrogates import (SigmoidSurrogate, heaviside_parametric_sigmoid, rectangle_spike,
                         spike_act_extended)

__all__ = ["ILIFNode", "NILIFNode", "KLIFNode", "EIFNode", "HDLIFNode", "ComplementaryLIFNeuron",
           "GLIFTorch", "PSNTorch"]


def _levels(D, levels) -> int:
    d = int(D if levels is None else levels)
    if d < 1:
        raise ValueError(f"ILIF/NILIF levels (D) must be >= 1, got {d}")
    return d


class ILIFNode(BaseNeuron):
    """STEP ``ILIFNode`` (integer LIF, multi-level spikes ``0..D``)::

        H[t] = V[t-1] + (X[t] - V[t-1]) / tau
        u    = clamp(H[t] / θ, 0, D)
        S[t] = round_half_even(u)              (torch.round: H/θ = k + 0.5 goes to the even k)
        V[t] = H[t] - S[t] · θ                 (soft reset)

    The output is ``S.detach() - u.detach() + u`` (STEP's straight-through estimator): its value
    is exactly ``S``, its gradient that of ``u``. ``D`` (alias ``levels``) defaults to 2 (STEP).
    ``act_fun.alpha`` is kept only because STEP's state_dict has it.
    """

    kind = "ilif"

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, step: int = 4, D: int = 2,
                 levels: int | None = None, surrogate="sigmoid", alpha: float = 4.0):
        super().__init__(tau=tau, threshold=threshold, step=step, reset="soft", surrogate=surrogate, alpha=alpha)
        self.D = _levels(D, levels)

    def charge(self, v, x):
        return v + (x - v) / self.tau

    def normalized(self, h: torch.Tensor) -> torch.Tensor:
        """``clamp(H/θ, 0, D)`` (STEP's ``u_clamped``)."""
        return torch.clamp(h / self.threshold, min=0, max=self.D)

    def fire(self, h):
        u = self.normalized(h)
        hard = torch.round(u)
        return hard.detach() - u.detach() + u, hard

    def neuron_params(self) -> dict:
        p = super().neuron_params()
        p.update(kind="LIF", reset="soft", output="integer", fire="round", max_level=self.D, round_d=self.D)
        return p

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, threshold={float(self.threshold):g}, step={self.step}, D={self.D}"


class NILIFNode(ILIFNode):
    """STEP ``NILIFNode`` (normalised integer LIF, binary spikes)::

        H[t] = V[t-1] + (X[t] - V[t-1]) / tau
        u    = clamp(H[t] / θ, 0, D) / D
        S[t] = round_half_even(u)              (H/θ = D/2 exactly gives 0)
        V[t] = H[t] - S[t] · θ                 (soft reset)
    """

    kind = "nilif"

    def normalized(self, h):
        return torch.clamp(h / self.threshold, min=0, max=self.D) / self.D

    def neuron_params(self) -> dict:
        p = BaseNeuron.neuron_params(self)
        p.update(kind="LIF", reset="soft", output="binary", fire="round_normalized", max_level=1, round_d=self.D)
        return p


class KLIFNode(BaseNeuron):
    """STEP ``KLIFNode``: LIF charge, a learned gain ``k`` (key ``k``, init 1) and a rectifier::

        H[t] = relu(k · (V[t-1] + (X[t] - V[t-1]) / tau))
        S[t] = H[t] >= θ;  V[t] = H[t] · (1 - S[t])
    """

    kind = "klif"

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, step: int = 4, surrogate="sigmoid",
                 alpha: float = 4.0):
        super().__init__(tau=tau, threshold=threshold, step=step, surrogate=surrogate, alpha=alpha)
        self.k = nn.Parameter(torch.tensor(1.0))

    def charge(self, v, x):
        return torch.relu((v + (x - v) / self.tau) * self.k)

    def neuron_params(self) -> dict:
        p = super().neuron_params()
        p.update(op="KLIFNeuron", kind="KLIF", k=float(self.k.detach()))
        return p


class EIFNode(BaseNeuron):
    """STEP ``EIFNode`` (exponential integrate-and-fire); buffers ``delta_T``, ``theta_rh``, ``tau``::

        H[t] = V[t-1] + (X[t] - V[t-1] + ΔT · exp((V[t-1] - θrh) / ΔT)) / tau
        S[t] = H[t] >= θ;  V[t] = H[t] · (1 - S[t]) + S[t] · v_reset        (v_reset = -0.1)

    ``V[-1] = v_reset``: the state STEP's per-batch ``n_reset`` leaves (STEP's very first batch
    after construction starts at 0 instead; every later one at ``v_reset``).
    """

    kind = "eif"

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, step: int = 4, v_reset: float = -0.1,
                 delta_T: float = 1.0, theta_rh: float = 0.8, surrogate="sigmoid", alpha: float = 4.0):
        super().__init__(tau=tau, threshold=threshold, step=step, v_reset=v_reset, surrogate=surrogate,
                         alpha=alpha)
        del self.tau
        self.register_buffer("delta_T", torch.tensor(float(delta_T)))
        self.register_buffer("theta_rh", torch.tensor(float(theta_rh)))
        self.register_buffer("tau", torch.tensor(float(tau)))

    def effective_tau(self) -> float:
        return float(self.tau)

    def charge(self, v, x):
        return v + (x - v + self.delta_T * torch.exp((v - self.theta_rh) / self.delta_T)) / self.tau

    def neuron_params(self) -> dict:
        p = super().neuron_params()
        p.update(op="EIFNeuron", kind="EIF", delta_t=float(self.delta_T), theta_rh=float(self.theta_rh))
        return p


class ComplementaryLIFNeuron(SpikingNeuron):
    """STEP ``ComplementaryLIFNeuron`` (CLIF, arXiv 2402.04663); no state_dict entries::

        H[t] = V[t-1] · (1 - 1/tau) + X[t]          (t = 0: H = X)
        M    = M[t-1] · sigmoid(H[t] / tau)         (M[-1] = 0)
        S[t] = H[t] >= v_threshold                  (rectangle surrogate, width 1)
        M[t] = M + S[t]
        V[t] = H[t] - S[t] · v_threshold - S[t] · sigmoid(M[t])

    STEP's constructor ignores ``threshold=``: ``v_threshold`` stays 1.0 for every CLIF of a
    model, attention neurons included. ``threshold`` is accepted here and ignored the same way.
    """

    kind = "clif"

    def __init__(self, tau: float = 2.0, step: int = 4, threshold: float | None = None,
                 v_threshold: float = 1.0):
        super().__init__()
        self.tau = float(tau)
        self.step = int(step)
        self.v_threshold = float(v_threshold)
        self.ignored_threshold = threshold

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        spikes = []
        v = m = None
        for t in range(x.shape[0]):
            v = x[t] if v is None else v * (1 - 1.0 / self.tau) + x[t]
            m = torch.zeros_like(v) if m is None else m
            m = m * torch.sigmoid(v / self.tau)
            s = rectangle_spike(v - self.v_threshold, 1.0)
            m = m + s
            v = v - s * self.v_threshold
            v = v - s * torch.sigmoid(m)
            spikes.append(s)
        return torch.stack(spikes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(split_steps(self, x, self.step)).flatten(0, 1)

    def neuron_params(self) -> dict:
        return {"op": "CLIFNeuron", "kind": "CLIF", "tau": self.tau, "v_threshold": self.v_threshold,
                "v_reset": 0.0, "reset": "soft", "compare": ">=", "decay_input": False, "output": "binary",
                "max_level": 1, "fire": "threshold", "round_d": 0}

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, v_threshold={self.v_threshold:g}, step={self.step}"


def _logit(p: float) -> float:
    return -math.log(1 / p - 1)


class GLIFTorch(SpikingNeuron):
    """STEP ``GLIFTorch`` (gated LIF, arXiv 2210.13768) with STEP's defaults (``time_wise``,
    ``static_gate``). Keys ``alpha, beta, gamma`` (gate logits) and ``tau, Vth, leak, conduct,
    reVth`` (per-step logits, shape ``(T,)``). With ``p[t] = sigmoid(param[t])``, gates
    ``al, be, ga = (logit > 0)`` (static) or ``sigmoid(logit)``, ``U[-1] = O[-1] = 0``::

        I[t] = X[t] · (1 - be · (1 - conduct[t]))
        U[t] = ((1 - al·(1 - tau[t])) · U[t-1] · (1 - ga·O[t-1]) - (1 - al)·leak[t]) + I[t]
               - (1 - ga) · reVth[t] · O[t-1]
        O[t] = U[t] - Vth[t] > 0                    (SpikeAct_extended: strict, box gradient)

    The input is read as STEP does, ``x.reshape(T, -1)``. STEP's constructor ignores the model's
    ``threshold`` and ``tau``; so does this one.
    """

    kind = "glif"

    def __init__(self, step: int = 10, static_gate: bool = True, threshold: float | None = None,
                 tau: float | None = None):
        super().__init__()
        self.step = self.T = int(step)
        self.static_gate = bool(static_gate)
        gate = [0.6, 0.8, 0.6]
        param = [0.25, 0.5, 0.5 / (self.T * 2), 0.5]  # linear decay = Vth / (2T), as STEP sets it
        self.alpha, self.beta, self.gamma = [
            nn.Parameter(torch.tensor(math.log(1 / ((i - 0.5) * 0.5 + 0.5) - 1), dtype=torch.float)) for i in gate]
        self.tau, self.Vth, self.leak, self.conduct = [
            nn.Parameter(-math.log(1 / i - 1) * torch.ones(self.T, dtype=torch.float)) for i in param]
        self.reVth = nn.Parameter(-math.log(1 / param[1] - 1) * torch.ones(self.T, dtype=torch.float))

    def gates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(al, be, ga)`` as the update uses them."""
        if self.static_gate:
            return tuple(g.detach().gt(0.).float() for g in (self.alpha, self.beta, self.gamma))
        return self.alpha.sigmoid(), self.beta.sigmoid(), self.gamma.sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() % self.T:
            raise ValueError(f"GLIFTorch(step={self.T}): input of {x.numel()} values does not split into "
                             f"{self.T} steps")
        x_t = x.reshape(self.T, -1)
        al, be, ga = self.gates()
        u = torch.zeros(x_t.shape[1:], dtype=x.dtype, device=x.device)
        o = torch.zeros_like(u)
        out = []
        for t in range(self.T):
            tau, vth = self.tau[t].sigmoid(), self.Vth[t].sigmoid()
            leak, conduct, revth = self.leak[t].sigmoid(), self.conduct[t].sigmoid(), self.reVth[t].sigmoid()
            i_t = x_t[t] * (1 - be * (1 - conduct))
            u = ((1 - al * (1 - tau)) * u * (1 - ga * o) - (1 - al) * leak) + i_t - (1 - ga) * revth * o
            o = spike_act_extended(u - vth)
            out.append(o)
        return torch.stack(out).reshape(x.shape)

    def neuron_params(self) -> dict:
        with torch.no_grad():
            params_t = torch.stack([p.sigmoid() for p in (self.tau, self.Vth, self.leak, self.conduct,
                                                          self.reVth)], dim=1)
            gates = tuple(float(g) for g in self.gates())
        arr = params_t.numpy().astype("float32")
        return {"op": "GLIFNeuron", "kind": "GLIF", "compare": ">", "v_threshold": float(arr[0, 1]),
                "reset": "hard", "v_reset": 0.0, "decay_input": True, "output": "binary", "max_level": 1,
                "fire": "threshold", "round_d": 0, "params_t": arr, "gates": gates}

    def extra_repr(self) -> str:
        return f"step={self.T}, static_gate={self.static_gate}"


class PSNTorch(SpikingNeuron):
    """STEP ``PSNTorch`` (parallel spiking neuron, arXiv 2304.12760); keys ``fc.weight`` (T, T),
    ``fc.bias`` (T,, init -1), ``act_func.alpha`` (Sigmoid surrogate, alpha 2)::

        H[t] = Σ_τ W[t, τ] · X[τ] + b[t]         (torch.addmm over the whole sequence)
        S[t] = H[t] >= 0

    Non-causal (``S[0]`` needs ``X[T-1]``), no reset. ``threshold``/``tau`` are ignored, as in STEP.
    """

    kind = "psn"

    def __init__(self, step: int = 4, threshold: float | None = None, tau: float | None = None):
        super().__init__()
        self.step = self.T = int(step)
        self.fc = nn.Linear(self.T, self.T)
        nn.init.constant_(self.fc.bias, -1)
        self.act_func = SigmoidSurrogate(alpha=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() % self.T:
            raise ValueError(f"PSNTorch(step={self.T}): input of {x.numel()} values does not split into "
                             f"{self.T} steps")
        h = torch.addmm(self.fc.bias.unsqueeze(1), self.fc.weight, x.reshape(self.T, -1))
        return self.act_func(h).view(x.shape)

    def neuron_params(self) -> dict:
        return {"op": "PSN", "weight": self.fc.weight.detach().numpy().astype("float32").copy(),
                "bias": self.fc.bias.detach().numpy().astype("float32").copy()}

    def extra_repr(self) -> str:
        return f"step={self.T}"


HDLIF_REFUSAL = ("HDLIFNode's output mixes the membranes of 4 expert neurons with a gate computed by a Conv1d over "
                 "the channels of all T steps and (at inference) a top-2 softmax: a whole-sequence, data-dependent "
                 "mixture that no per-step IR node expresses; it runs in PyTorch only")


class HDLIFNode(SpikingNeuron):
    """STEP ``HDLIFNode`` (MoE neuron of Spiking Point Transformer): experts ``experts.0..3`` =
    IF (Sigmoid surrogate alpha 2, fires on ``>=``), LIF, PLIF, EIF, all with the model's
    threshold; gate ``gate_MoE = Conv1d(input_dims·T, 4, 1)``. With ``x`` as ``(T·B, C, N)``
    (a 4-D map is flattened; a token tensor ``(T·B, N, C)`` is transposed when ``N != C``)::

        z      = x.view(-1, T, C, N).flatten(1, 2)              (STEP's view: rows b'·T + t')
        g      = softmax_E(gate_MoE(z))                         (training)
               = softmax_E(top2(gate_MoE(z)), others -inf)      (eval)
        V_e[t] = expert e's membrane after its reset; 0.0 is replaced by ``threshold``
        S[t]   = Σ_e g[e] · V_e[t] >= 0.2                       (surrogate slope k = 4)

    STEP's view reads the time-major ``(T·B)`` rows as ``(B, T)``, so for ``B > 1`` the gate
    of sample b mixes rows of other samples; reproduced as is. ``input_dims`` is required.
    """

    kind = "hdlif"

    def __init__(self, input_dims: int | None = None, threshold: float = 0.5, step: int = 4, tau: float = 2.0):
        super().__init__()
        if input_dims is None:
            raise ValueError("HDLIFNode needs input_dims (its gate is a Conv1d over input_dims*T channels); STEP "
                             "passes it only in Spikformer's SPS stem, SSA and MLP (sdt_cifar, qkformer_cifar, "
                             "conv2_embed, random_ssa and repconv_attn build nodes without it, so STEP cannot build "
                             "HDLIF there)")
        self.step = int(step)
        self.embed_dims = int(input_dims)
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.k_MoE, self.v_th_MoE = 4, 0.2
        self.act_fun = SigmoidSurrogate(alpha=4.0)
        self.experts = nn.ModuleList([
            IFNode(threshold=threshold, step=step, compare=">=", surrogate="sigmoid", alpha=2.0),
            LIFNode(threshold=threshold, step=step, tau=tau),
            PLIFNode(threshold=threshold, step=step, tau=tau),
            EIFNode(threshold=threshold, step=step, tau=tau, v_reset=-0.1, delta_T=1.0, theta_rh=0.8),
        ])
        self.gate_MoE = nn.Conv1d(self.embed_dims * self.step, len(self.experts), 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture weights ``(T, B', E, N)`` for ``x`` ``(T·B, C, N)`` (STEP's view and repeat)."""
        z = x.view(-1, self.step, *x.shape[1:]).flatten(1, 2)
        logits = self.gate_MoE(z)
        if self.training:
            return F.softmax(logits, dim=-2).repeat(self.step, 1, 1, 1)
        values, idx = torch.topk(logits, 2, dim=-2)
        g = torch.zeros_like(logits)
        g.scatter_(-2, idx, values)
        masked = g.clone()
        masked[g == 0] = float("-inf")
        return F.softmax(masked, dim=-2).repeat(self.step, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape4 = None
        if x.dim() == 4:
            shape4 = x.shape
            x = x.flatten(-2, -1)
        if x.dim() != 3 or self.embed_dims not in (x.shape[1], x.shape[2]):
            raise ValueError(f"HDLIFNode(input_dims={self.embed_dims}): expected a (T*B, C, H, W), (T*B, C, N) or "
                             f"(T*B, N, C) tensor with C = {self.embed_dims}, got shape {tuple(x.shape)}")
        transposed = x.shape[1] != self.embed_dims
        if transposed:
            x = x.transpose(-2, -1)
        split_steps(self, x, self.step)
        gate = self.gate(x)
        xs = x.unflatten(0, (self.step, -1))
        mems = torch.stack([torch.stack(e.run_steps(xs)[2]) for e in self.experts], dim=2)  # T, B, E, C, N
        mems = mems.masked_fill(mems == 0.0, self.threshold)
        out = torch.sum(gate.unsqueeze(3) * mems, dim=2)
        out = heaviside_parametric_sigmoid(out, self.k_MoE, self.v_th_MoE).flatten(0, 1)
        if shape4 is not None:
            return out.reshape(shape4)
        return out.transpose(-2, -1) if transposed else out

    def neuron_params(self) -> dict:
        raise NotImplementedError(HDLIF_REFUSAL)

    def extra_repr(self) -> str:
        return f"input_dims={self.embed_dims}, threshold={self.threshold:g}, tau={self.tau:g}, step={self.step}"


_ZOO = {"ilif": ILIFNode, "nilif": NILIFNode, "klif": KLIFNode, "eif": EIFNode, "hdlif": HDLIFNode,
        "clif": ComplementaryLIFNeuron, "glif": GLIFTorch, "psn": PSNTorch}
NEURONS.update(_ZOO)
STEP_NODE_CLASSES.update({cls.__name__: name for name, cls in _ZOO.items()})
