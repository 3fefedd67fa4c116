"""Spike parity of a float backend (ONNX, NIR read back, ...) with PyTorch, explained.

Two float32 implementations of the same network disagree wherever a membrane lies within
rounding of its threshold, and one flipped spike cascades into thousands. Counting raw mismatches
therefore cannot tell a correct backend from a wrong one. This check decides it with **teacher
forcing**, in one float64 run of the reference interpreter on the float IR the backend was built
from (``graph``, after its pipeline):

- every spiking node (``Neuron`` and its subclasses KLIF/EIF/CLIF/GLIF, PSN's ``Heaviside``)
  computes its membrane ``H[t]`` in float64 from inputs that were computed from the *observed*
  upstream spikes, updates its state (reset, CLIF's second state, GLIF's previous spike) with the
  observed spike at each element, and passes the observed spike downstream, so the run follows
  the observed network state exactly (the rules are ``reference_neurons.NEURON_RULES``; a neuron
  without a rule is refused before the run, naming the node);
- at every element the observed spike is compared with what exact arithmetic says,
  ``fire(H64)``. A difference is a *local flip*. It is a *rounding tie* iff some membrane
  within ``tolerance · max(1, |threshold|)`` of ``H64`` fires the observed value (every fire rule
  is monotone, so this is ``fire(H64 - d) <= s <= fire(H64 + d)``): the decision boundaries are
  the threshold for step firing (GLIF: ``vth[t]``), ``(k + 1/2)·θ`` for ``fire='round'`` (ILIF),
  ``round_d·θ/2`` for ``fire='round_normalized'`` (NILIF); otherwise it is a *non-tie flip*.

The backend's and PyTorch's spikes are forced side by side (the batch is doubled), so both are
checked against the same exact arithmetic: a raw mismatch that is a local flip of either side is a
root; every other raw mismatch is a *cascade* of earlier roots (elements are visited in causal
order, step first, then topological order, so the first raw mismatch is the first divergence and
both sides share its float64 membrane). A graph with a sequence op (PSN's ``TemporalLinear``) or a
window op (STAtten's ``TemporalBlockSum``, non-causal inside its block) runs node-major, so there the
first divergence is the first in topological order, then step: a flip at step ``t`` of a layer can
change a consumer of a block sum at an earlier step of the block, and that earlier change is
counted as its cascade, never as a root.

The seed designs' other ops need no rule of their own: ternary neurons have two boundaries, ``±θ``
(a spike missed or fired at either is a tie when the float64 membrane is within the tolerance of
it); ``ReLU`` is exact; ``Shiftmax`` is exact on integer scores (powers of two; a row sum of powers
of two ``>= 2^-frac_bits``), which is what it gets from ``Q·Kᵀ`` of the observed (forced) spikes,
so it adds no rounding of its own. On fractional scores (not produced by the seed designs) a
backend's float32 row sum can land on the other side of a power of two than float64's, which halves
or doubles a row: the check then reports the flips downstream as non-tie (conservative, never
hidden).

``ok`` guarantees, for the samples given: (0) both sides traced every Neuron of ``graph``; (1)
every backend spike equals exact (float64) arithmetic on ``graph`` given the backend's own
upstream spikes, except at elements whose float64 membrane is within the tolerance of a firing
boundary; (2) the same holds for PyTorch's spikes (so the graph computes what the model
computes); (3) the backend's logits equal the float64 readout of its own spikes, and PyTorch's
logits the float64 readout of PyTorch's spikes, to ``logit_tolerance`` relative error. Hence
every spike on which the backend and PyTorch disagree descends from threshold ties under float
rounding, and the readout is right. It does not promise equal predictions: those are reported
(``prediction_agreement``), as is the raw mismatch count.

Tolerance (``DEFAULT_TOLERANCE = 1e-4``, times ``max(1, |threshold|)``): measured on
``spikformer-4-384``, ``sdt-2-512`` and ``qkformer-4-384`` (random BatchNorm statistics, 2
``torch.rand`` CIFAR images), the float32 reference interpreter's membranes differ from float64,
teacher-forced with the same spikes, by at most 1.0e-6 (mean 2e-8 to 6e-8) in every neuron, BN
folded or not; the ties found on those models lie within 5e-9 of the threshold. 1e-4 is a
hundred times the largest error seen, while a real fault (a threshold or weight off by 1 %) moves
membranes by about 1e-2. The error grows with fan-in and membrane magnitude: raise ``tolerance``
for networks with much larger membranes, and read ``max_tie_distance`` in the result. Logits
(``DEFAULT_LOGIT_TOLERANCE = 1e-4``, relative to the largest float64 logit): the float32 readout
of the same spikes differs from float64 by 1e-7 to 3e-7 on those models; a head weight off by 1 %
gives about 1e-2.

Entry point: :func:`check_float_backend`; :func:`markdown_lines` renders the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from step_deploy import ir
from step_deploy.frontend.neuron_groups import NEURON_GROUPS_KEY, group_traces  # noqa: F401 (API)

from .reference import as_time_major, run
from .reference_neurons import NEURON_RULES, threshold_at
from .reference_ops import FLOAT_OPS

__all__ = ["check_float_backend", "markdown_lines", "firing_boundary_distance", "is_rounding_tie", "group_traces",
           "DEFAULT_TOLERANCE", "DEFAULT_LOGIT_TOLERANCE", "NEURON_GROUPS_KEY"]

DEFAULT_TOLERANCE = 1e-4
DEFAULT_LOGIT_TOLERANCE = 1e-4
LISTED_FLIPS = 5


def _rule(n: ir.Node):
    rule = NEURON_RULES.get(n.op)
    if rule is None:
        raise ValueError(f"float parity: node {n.name!r} ({n.op}) is a neuron without a charge/fire/commit rule in "
                         f"simulators/reference_neurons.py, so its flips cannot be attributed; add its rule there")
    return rule


def firing_boundary_distance(n: ir.Node, h: torch.Tensor, t: int = 0) -> torch.Tensor:
    """Distance from each membrane value to the nearest boundary where the spike value changes at
    step ``t``: ``v_threshold`` (binary threshold firing; GLIF's ``vth[t]``; Heaviside's
    ``threshold``), ``±v_threshold`` (ternary), ``(k + 1/2)·v_threshold`` for ``fire='round'`` with
    ``k < max_level``, ``round_d·v_threshold/2`` for ``fire='round_normalized'``."""
    return _rule(n).boundary(n, h, t)


def is_rounding_tie(n: ir.Node, h: torch.Tensor, s: torch.Tensor, tolerance: float, t: int = 0) -> torch.Tensor:
    """Where spike ``s`` is what some membrane within ``tolerance · max(1, |threshold|)`` of ``h``
    fires at step ``t`` (every fire rule is monotone, so the reachable values are
    ``[fire(h - d), fire(h + d)]``)."""
    d = tolerance * max(1.0, abs(threshold_at(n, t)))
    fire = _rule(n).fire
    return (fire(n, h - d, t) <= s) & (s <= fire(n, h + d, t))


@dataclass
class _Side:
    """Local-flip bookkeeping of one side (the backend, or PyTorch)."""

    ties: int = 0
    non_ties: int = 0
    max_tie_distance: float = 0.0
    first_non_ties: list = field(default_factory=list)

    def observe(self, n: ir.Neuron, t: int, h, exact, s, tolerance: float) -> torch.Tensor:
        local = s != exact
        if not bool(local.any()):
            return local
        tie = is_rounding_tie(n, h, s, tolerance, t)
        ok, bad = local & tie, local & ~tie
        self.ties += int(ok.sum())
        if bool(ok.any()):
            self.max_tie_distance = max(self.max_tie_distance, float(firing_boundary_distance(n, h, t)[ok].max()))
        nb = int(bad.sum())
        if nb:
            self.non_ties += nb
            dist = firing_boundary_distance(n, h, t)
            for pos in bad.nonzero()[: LISTED_FLIPS - len(self.first_non_ties)].tolist():
                i = tuple(pos)
                self.first_non_ties.append({
                    "layer": n.name, "step": t, "sample": i[0], "index": list(i[1:]), "value": float(s[i]),
                    "exact_value": float(exact[i]), "membrane_float64": float(h[i]),
                    "threshold": threshold_at(n, t), "distance": float(dist[i])})
        return local


@dataclass
class _Forcing:
    """The teacher-forced Neuron op and everything it observes. Rows ``[0, B)`` of the doubled
    batch follow the backend, rows ``[B, 2B)`` follow PyTorch."""

    forced: dict
    batch: int
    tolerance: float
    backend: _Side = field(default_factory=_Side)
    pytorch: _Side = field(default_factory=_Side)
    cascade: int = 0
    raw: int = 0
    first_divergence: Optional[dict] = None

    def op(self, n: ir.Node, xs, state, t):
        rule = _rule(n)
        h = rule.charge(n, xs[0], state, t)
        exact = rule.fire(n, h, t)
        if n.name not in self.forced:  # not traced by both sides: runs free in float64
            rule.commit(n, h, exact, state, t)
            return exact
        s = self.forced[n.name][t]
        if s.shape != h.shape:
            raise ValueError(f"neuron {n.name!r}: traced spikes per step have shape {tuple(s.shape[1:])}, "
                             f"the graph computes {tuple(h.shape[1:])}; were the traces made from this graph?")
        rule.commit(n, h, s, state, t)
        B = self.batch
        local_b = self.backend.observe(n, t, h[:B], exact[:B], s[:B], self.tolerance)
        local_t = self.pytorch.observe(n, t, h[B:], exact[B:], s[B:], self.tolerance)
        raw = s[:B] != s[B:]
        n_raw = int(raw.sum())
        if n_raw:
            self.raw += n_raw
            self.cascade += int((raw & ~(local_b | local_t)).sum())
            if self.first_divergence is None:
                i = tuple(raw.nonzero()[0].tolist())
                self.first_divergence = {
                    "layer": n.name, "step": t, "sample": i[0], "index": list(i[1:]),
                    "torch_value": float(s[B:][i]), "backend_value": float(s[:B][i]),
                    "membrane_float64": float(h[:B][i]), "threshold": threshold_at(n, t),
                    "distance": float(firing_boundary_distance(n, h[:B][i], t))}
        return s


def _doubled_inputs(graph: ir.Graph, x, steps: Optional[int]) -> dict:
    """The encoded input, time-major, float64, with the batch repeated (backend rows, torch rows)."""
    if not isinstance(x, dict):
        if len(graph.inputs) != 1:
            raise ValueError(f"graph has {len(graph.inputs)} inputs; pass x as a dict {{input name: array}}")
        x = {graph.inputs[0].name: x}
    out = {}
    for node in graph.inputs:
        if node.name not in x:
            raise ValueError(f"missing input {node.name!r} for the float parity check")
        v = as_time_major(x[node.name], node, steps, torch.float64)
        out[node.name] = torch.cat([v, v], dim=1)
    return out


def _rel(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference, other = reference.double(), other.double()
    return float((reference - other).abs().max() / reference.abs().max().clamp_min(1e-12))


def _verdict(r: dict) -> str:
    if r["neurons_missing"]:
        m = r["neurons_missing"]
        return (f"{len(m)} neuron{'s are' if len(m) != 1 else ' is'} not traced by both the backend and PyTorch "
                f"(first: {m[0]}), so their spikes were not checked: record every Neuron on both sides")
    if r["non_tie_flips"]["count"]:
        f = r["non_tie_flips"]["first"][0]
        return (f"{r['non_tie_flips']['count']:,} backend spikes differ from exact arithmetic by more than rounding: "
                f"first at layer {f['layer']} step {f['step']} (membrane {f['membrane_float64']:.6g}, "
                f"threshold {f['threshold']:g})")
    if r["torch_non_tie_flips"]["count"]:
        f = r["torch_non_tie_flips"]["first"][0]
        return (f"{r['torch_non_tie_flips']['count']:,} PyTorch spikes differ from exact arithmetic on the graph by "
                f"more than rounding (the graph does not compute what the model computes): first at layer "
                f"{f['layer']} step {f['step']}")
    if r["teacher_forced_logit_error"] > r["logit_tolerance"]:
        return (f"the backend's logits differ from the float64 readout of its own spikes by "
                f"{r['teacher_forced_logit_error']:.2e} (limit {r['logit_tolerance']:.0e}): the readout is wrong")
    if r["torch_teacher_forced_logit_error"] > r["logit_tolerance"]:
        return (f"PyTorch's logits differ from the graph's float64 readout of PyTorch's spikes by "
                f"{r['torch_teacher_forced_logit_error']:.2e} (limit {r['logit_tolerance']:.0e}): "
                f"the graph's readout is not the model's")
    if r["spike_mismatches"] == 0:
        return "0 mismatches"
    ties = r["rounding_flips"] + r["torch_rounding_flips"]
    return (f"all {r['spike_mismatches']:,} mismatches follow from {ties:,} threshold "
            f"tie{'s' if ties != 1 else ''} under float rounding ({r['rounding_flips']:,} in the backend, "
            f"{r['torch_rounding_flips']:,} in PyTorch)")


def check_float_backend(graph: ir.Graph, x, torch_logits: torch.Tensor, torch_traces: dict,
                        backend_logits: torch.Tensor, backend_traces: dict, *, steps: Optional[int] = None,
                        tolerance: float = DEFAULT_TOLERANCE,
                        logit_tolerance: float = DEFAULT_LOGIT_TOLERANCE) -> dict:
    """Check a float backend's spikes and logits against PyTorch's, explaining every mismatch.

    ``graph``: the float IR the backend was made from (after its pipeline, e.g. BatchNorm folded);
    ``x``: the encoded input as fed to ``reference.run`` (``(T, B, ...)``, or ``(B, ...)`` with
    ``steps``, or a dict per input); traces: ``{neuron name: spikes (T, B, ...)}``; logits
    ``(B, classes)``. ``tolerance``: relative (to ``max(1, |threshold|)``) distance of the float64
    membrane from a firing boundary under which a flipped spike counts as a rounding tie.
    ``logit_tolerance``: allowed relative error of each side's logits against the float64 readout
    of its own spikes. ``torch_traces`` may be keyed by PyTorch module: IR neurons that stand for
    several of them (graph metadata ``neuron_groups``) are derived with :func:`group_traces`. See
    the module docstring for what ``ok`` guarantees; ``verdict`` says it in
    one sentence. One float64 reference run on twice the batch."""
    if tolerance < 0 or logit_tolerance < 0:
        raise ValueError(f"tolerance={tolerance}, logit_tolerance={logit_tolerance}: must be >= 0")
    torch_traces = group_traces(graph, torch_traces)  # IR neurons standing for several PyTorch neurons
    spiking = [n for n in graph.topo_order() if isinstance(n, ir.Neuron) or n.op in NEURON_RULES]
    for n in spiking:
        _rule(n)  # refuse a neuron whose flips cannot be attributed, before any work
    neurons = [n.name for n in spiking]
    common = [k for k in neurons if k in torch_traces and k in backend_traces]
    for k in common:
        if torch_traces[k].shape != backend_traces[k].shape:
            raise ValueError(f"neuron {k!r}: PyTorch traced {tuple(torch_traces[k].shape)}, the backend "
                             f"{tuple(backend_traces[k].shape)}; both must be (T, B, ...) for the same samples")
    feeds = _doubled_inputs(graph, x, steps)
    T, B2 = next(iter(feeds.values())).shape[:2]
    B = B2 // 2
    forced = {k: torch.cat([backend_traces[k], torch_traces[k]], dim=1).to(torch.float64) for k in common}
    for k, v in forced.items():
        if v.shape[:2] != (T, B2):
            raise ValueError(f"neuron {k!r}: traces cover (T, B) = {tuple(v.shape[:2]) if v.dim() > 1 else ()} "
                             f"per side, the input ({T}, {B})")
    forcing = _Forcing(forced, B, tolerance)
    res = run(graph, feeds, ops=dict(FLOAT_OPS, **{op: forcing.op for op in NEURON_RULES}), dtype=torch.float64)
    readout = res.final()
    torch_logits = torch.as_tensor(torch_logits).detach().double()
    backend_logits = torch.as_tensor(backend_logits).detach().double()
    spikes_compared = sum(int(torch_traces[k].numel()) for k in common)
    agree = (torch_logits.argmax(-1) == backend_logits.argmax(-1)).double().mean()
    result = {
        "spikes_compared": spikes_compared,
        "spike_mismatches": forcing.raw,
        "neurons_compared": len(common),
        "neurons_missing": [k for k in neurons if k not in common],
        "first_divergence": forcing.first_divergence,
        "rounding_flips": forcing.backend.ties,
        "non_tie_flips": {"count": forcing.backend.non_ties, "first": forcing.backend.first_non_ties},
        "torch_rounding_flips": forcing.pytorch.ties,
        "torch_non_tie_flips": {"count": forcing.pytorch.non_ties, "first": forcing.pytorch.first_non_ties},
        "cascade_mismatches": forcing.cascade,
        "max_tie_distance": max(forcing.backend.max_tie_distance, forcing.pytorch.max_tie_distance),
        "tolerance": tolerance,
        "logit_tolerance": logit_tolerance,
        "prediction_agreement": float(agree),
        "max_rel_logit_error": _rel(torch_logits, backend_logits),
        "teacher_forced_logit_error": _rel(readout[:B], backend_logits),
        "torch_teacher_forced_logit_error": _rel(readout[B:], torch_logits),
    }
    result["ok"] = (not result["neurons_missing"] and forcing.backend.non_ties == 0 and forcing.pytorch.non_ties == 0
                    and result["teacher_forced_logit_error"] <= logit_tolerance
                    and result["torch_teacher_forced_logit_error"] <= logit_tolerance)
    result["verdict"] = _verdict(result)
    return result


def markdown_lines(result: dict) -> list[str]:
    """The check as Markdown bullet lines for an export summary."""
    r = result
    lines = [f"- float parity: **{'ok' if r['ok'] else 'FAILED'}**: {r['verdict']}",
             f"- spikes compared: {r['spikes_compared']:,} ({r['neurons_compared']} neurons); "
             f"mismatches vs PyTorch: {r['spike_mismatches']:,}",
             f"- threshold ties under rounding: {r['rounding_flips']:,} in the backend, "
             f"{r['torch_rounding_flips']:,} in PyTorch (largest distance from the threshold "
             f"{r['max_tie_distance']:.2e}; tolerance {r['tolerance']:.0e} x max(1, |threshold|)); "
             f"cascaded mismatches: {r['cascade_mismatches']:,}",
             f"- spikes off exact arithmetic by more than rounding: {r['non_tie_flips']['count']:,} in the backend, "
             f"{r['torch_non_tie_flips']['count']:,} in PyTorch",
             f"- prediction agreement: {r['prediction_agreement']:.4f}; max relative logit error vs PyTorch: "
             f"{r['max_rel_logit_error']:.2e}; vs float64 readout of its own spikes: "
             f"{r['teacher_forced_logit_error']:.2e} (limit {r['logit_tolerance']:.0e})"]
    d = r["first_divergence"]
    if d:
        lines.append(f"- first divergence: layer `{d['layer']}` step {d['step']} sample {d['sample']} index "
                     f"{tuple(d['index'])}: PyTorch {d['torch_value']:g}, backend {d['backend_value']:g}, "
                     f"float64 membrane {d['membrane_float64']:.9g} vs threshold {d['threshold']:g} "
                     f"(distance {d['distance']:.2e})")
    if r["neurons_missing"]:
        lines.append(f"- neurons not traced by both sides (run free in float64): {len(r['neurons_missing'])}")
    return lines
