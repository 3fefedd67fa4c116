"""Calibration and scale solving for ``quantize_loihi`` (see that module for the semantics).

* :func:`prepare`: what Loihi can express; ``TemporalMean -> Linear`` becomes ``Linear ->
  TemporalMean`` (exact: both are linear), so the readout integrates integer logits.
* :func:`calibrate`: one float run (the reference interpreter) on calibration data; per node the
  largest magnitude, and for neurons the largest input and membrane.
* :class:`ScaleClasses`: tensors joined by scale-preserving ops (Add, MaxPool2d, layout, Sum,
  Delay, ReLU, TemporalBlockSum) share one integer scale. A class holding a spike- or
  count-derived tensor has its scale fixed by exact arithmetic; a class of synapse outputs only gets the smallest power of two at
  which every member's largest weight fills the 8-bit mantissa at ``weight_exp = e_min`` (raised by up
  to ``EXACT_BIAS_BITS`` when that makes every member's bias an exact integer: the biases of a
  model fine-tuned on the weight grid, ``step_deploy.qat``, are multiples of each synapse's weight
  step, which can be finer than the class's unit when the class joins synapses of different
  weight ranges, e.g. SDT's membrane shortcuts). A
  ``Shiftmax`` needs integer scores at the exact scale 1 (a product of spike tensors; anything else
  is refused naming the node) and fixes its output scale at ``2^(frac_bits + ceil(log2 n))``; a
  ReLU'd synapse output (A²OS²A's K) keeps its synapse's free scale, and products through
  ``MatMul`` carry it (:attr:`ScaleClasses.shiftmax_origin` names the Shiftmax behind a fixed scale).
* :func:`headroom`: how many bits each free class must drop so the calibration values fit the
  24-bit state, the 17-bit threshold, 24-bit graded payloads and the int32 readout (``margin``).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from step_deploy import ir

from ..fixedpoint import loihi as fx
from ..fixedpoint.loihi import NO_INTEGER_FORM, NO_INTEGER_FORM_FIX
from ..ir.diagnostics import Diagnostic, IRError

SYNAPSES = ("Linear", "Conv2d", "Conv1d")
PRESERVING = ("Add", "MaxPool2d", "Transpose", "Reshape", "Flatten", "Delay", "Sum", "Output", "ReLU",
              "TemporalBlockSum")
MAX_UV = 1 << 23


def _err(rule, node, msg, hint=""):
    return IRError([Diagnostic(rule, node, msg, hint=hint)])


def _neuron_problem(n: ir.Neuron, target: str, multi_level: bool) -> str:
    """Why ``target``'s integer neuron cannot compute ``n`` ('' when it can)."""
    if n.kind not in ("LIF", "IF", "PLIF"):
        return f"kind={n.kind}: {target}'s integer neuron computes LIF, IF and PLIF"
    if n.v_reset != 0:
        return f"v_reset={n.v_reset}: {target}'s integer neuron resets to 0 (or subtracts the threshold)"
    if not multi_level and (n.reset != "hard" or n.output != "binary" or n.fire != "threshold"):
        return (f"reset={n.reset}, output={n.output}, fire={n.fire}: {target}'s LIF resets to 0 "
                f"and sends binary threshold spikes")
    return ""


def prepare(graph: ir.Graph, target: str = "Loihi", multi_level: bool = False) -> ir.Graph:
    """Check what ``target``'s integer format can express (shared by ``quantize_fpga``) and move
    each ``TemporalMean`` after the ``Linear`` it feeds.

    Refused with a diagnostic naming the node: BatchNorm/Scale/AvgPool2d, the ops of
    :data:`NO_INTEGER_FORM`, neurons with ``v_reset != 0``, and, unless ``multi_level`` (the
    caller's neurons implement them), soft reset, integer (ILIF), ``round_normalized`` (NILIF) and
    ternary (-1/0/+1) spikes."""
    g = graph.copy()
    bad = []
    for n in g.nodes.values():
        if n.op in ("BatchNorm", "Scale", "AvgPool2d"):
            bad.append(Diagnostic("quantize-op", n.name, f"{n.op} has no {target} integer form",
                                  hint="run fold_batchnorm first" if n.op == "BatchNorm" else ""))
        elif n.op in NO_INTEGER_FORM:
            bad.append(Diagnostic("quantize-op", n.name, f"{n.op} has no {target} integer form: "
                                  f"{NO_INTEGER_FORM[n.op]}", hint=NO_INTEGER_FORM_FIX))
        elif isinstance(n, ir.Neuron) and _neuron_problem(n, target, multi_level):
            bad.append(Diagnostic("quantize-neuron", n.name, _neuron_problem(n, target, multi_level),
                                  hint="use hard reset to 0 with binary spikes" if not multi_level else
                                  "use v_reset=0 and binary, ternary or integer (0..D) spikes"))
    if bad:
        raise IRError(bad)
    for tm in [n for n in g.topo_order() if n.op == "TemporalMean"]:
        users = g.consumers(tm.name)
        if len(users) == 1 and users[0].op == "Linear":
            lin = users[0]
            g.rewire(lin.name, tm.name)
            g.replace(ir.replace(lin, inputs=tm.inputs))
            g.replace(ir.replace(tm, inputs=(lin.name,)))
            order = [n.name for n in g.topo_order()]
            g = ir.Graph([g[k] for k in order], g.metadata)
    return g


def input_nodes(n: ir.Input, input_q: dict, quantizer) -> list:
    """An ``Input`` and, when it is quantized (``input_q[name]``: scale, bits, signed), the format's
    ``quantizer`` node ``<name>.q`` after it; a quantized spike/count input becomes ``'analog'``."""
    if n.name not in input_q:
        return [n]
    qi = input_q[n.name]
    return [ir.replace(n, kind="analog") if n.kind != "analog" else n,
            quantizer(f"{n.name}.q", (n.name,), scale=qi["scale"], bits=qi["bits"], signed=qi["signed"])]


def integer_core_node(n: ir.Node, ins: tuple, temporal_sum) -> ir.Node:
    """The integer form of a node that is neither synapse nor neuron: ``Mean -> Sum`` (its scale
    grows by the count), ``MatMul`` with its constant folded into the scale (``scale = 1``),
    ``TemporalMean ->`` the format's ``temporal_sum`` node type; the rest unchanged."""
    if n.op == "Mean":
        return ir.Sum(n.name, ins, axis=n.axis, keepdim=n.keepdim)
    if n.op == "MatMul":
        return ir.replace(n, inputs=ins, scale=1.0)
    if n.op == "TemporalMean":
        return temporal_sum(n.name, ins)
    return ir.replace(n, inputs=ins)


def _membrane(n: ir.Neuron, x, v):
    if n.kind == "IF":
        return v + x
    if n.decay_input:
        return v + (x - v) / n.tau
    return v - v / n.tau + x


def batches(g: ir.Graph, inputs, batch_size: int):
    """Split ``inputs`` (one array for a single-input graph, or ``{input: array}``; each
    ``(B, *shape)`` static or ``(T, B, *shape)``) into dicts of at most ``batch_size`` samples."""
    import torch

    if not isinstance(inputs, dict):
        inputs = {g.inputs[0].name: inputs}
    tens = {k: v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v)) for k, v in inputs.items()}
    axes = {k: 0 if v.dim() == len(g[k].shape) + 1 else 1 for k, v in tens.items()}
    total = {v.shape[axes[k]] for k, v in tens.items()}
    if len(total) != 1:
        raise ValueError(f"inputs have different batch sizes {sorted(total)}")
    n = total.pop()
    for start in range(0, n, batch_size):
        yield {k: v.narrow(axes[k], start, min(batch_size, n - start)) for k, v in tens.items()}


def calibrate(g: ir.Graph, inputs, steps, batch_size: int = 64) -> dict:
    """Float run on ``inputs``: per node ``amax`` (max |value|), ``min``; neurons also ``xmax``
    (input) and ``hmax`` (membrane before the spike)."""
    import torch

    from step_deploy.simulators.reference import run
    from step_deploy.simulators.reference_ops import FLOAT_OPS

    stats: dict[str, dict] = {}

    def wrap(f):
        def op(n, xs, state, t):
            st = stats.setdefault(n.name, {"amax": 0.0, "min": 0.0})
            if n.op == "Neuron":
                v = state.get("v", torch.zeros_like(xs[0]))
                st["xmax"] = max(st.get("xmax", 0.0), float(xs[0].abs().max()))
                st["hmax"] = max(st.get("hmax", 0.0), float(_membrane(n, xs[0], v).abs().max()))
            y = f(n, xs, state, t)
            if y.numel():
                st["amax"] = max(st["amax"], float(y.abs().max()))
                st["min"] = min(st["min"], float(y.min()))
            return y
        return op

    ops = {k: wrap(f) for k, f in FLOAT_OPS.items()}
    for chunk in batches(g, inputs, batch_size):
        for name, x in chunk.items():  # node-major runs (graphs with a window op) feed inputs without an op call
            st = stats.setdefault(name, {"amax": 0.0, "min": 0.0})
            if x.numel():
                st["amax"] = max(st["amax"], float(x.float().abs().max()))
                st["min"] = min(st["min"], float(x.float().min()))
        run(g, {k: v.float() for k, v in chunk.items()}, steps=steps, ops=ops)
    return stats




EXACT_BIAS_BITS = 4  # a class's scale may rise this many bits above its weights' choice to make every bias exact


def _exact_bias_bits(b, limit: int) -> int:
    """The smallest ``p`` (from -30) at which ``b · 2^p`` is all integers, or a large number if
    none up to ``limit`` is (a float32 bias that is not a short dyadic fraction)."""
    b = np.asarray(b, np.float64)
    for p in range(-30, limit + 1):
        v = b * 2.0 ** p
        if np.all(v == np.round(v)):
            return p
    return 10 ** 6


class ScaleClasses:
    """Union-find of tensors that share a scale (joined by scale-preserving ops) and the solver."""

    def __init__(self, g: ir.Graph, input_scales: dict, e_min: int, extra_bits: int):
        self.g, self.input_scales, self.e_min, self.extra = g, input_scales, e_min, extra_bits
        self.order = g.topo_order()
        self.shapes = g.infer_shapes()
        parent = {n: n for n in g.nodes}

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for n in self.order:
            if n.op in PRESERVING:
                for i in n.inputs:
                    parent[find(i)] = find(n.name)
        self.cls = {n: find(n) for n in g.nodes}
        self.members: dict[str, list] = {}
        for n in self.order:
            self.members.setdefault(self.cls[n.name], []).append(n)
        self.caps: dict[str, int] = {}
        #: class -> the Shiftmax whose fixed output scale it carries (through MatMul/Mul/preserving ops)
        self.shiftmax_origin: dict[str, str] = {}

    def _shiftmax_error(self, m, s_in, why: str) -> IRError:
        return _err("quantize-scale", m.name, f"Shiftmax needs integer scores at scale 1 (a product of spike "
                    f"tensors, e.g. MatMul(Q, K) of ternary spikes); its input {m.inputs[0]} has scale {s_in:g} "
                    f"({why})", "feed it Q·Kᵀ of spike tensors with MatMul scale 1 (no real-valued operand, no "
                    "constant): then the integer Shiftmax equals the float one exactly")

    def solve(self) -> tuple[dict, dict]:
        """-> (scale per class, {class: {free class: power}} dependencies)."""
        sig, deps = {}, {}
        pending = list(self.members)
        while pending:
            done = [c for c in pending if self._try(c, sig, deps)]
            if not done:
                raise IRError([Diagnostic("quantize-scales", c, "cannot resolve this tensor's scale") for c in pending])
            pending = [c for c in pending if c not in done]
        return sig, deps

    def scale(self, sig, name) -> float:
        return sig[self.cls[name]]

    def _try(self, c, sig, deps) -> bool:
        srcs = [m for m in self.members[c] if m.op not in PRESERVING]
        derived = [m for m in srcs if m.op not in SYNAPSES]
        ins = {m.name: [sig.get(self.cls[i]) for i in m.inputs] for m in srcs}
        if any(s is None for m in srcs for s in ins[m.name]) and not derived:
            return False
        if derived:
            vals = []
            for m in derived:  # a neuron's output scale (spikes: 1) does not depend on its input
                if m.op not in ("Input", "Neuron") and any(s is None for s in ins[m.name]):
                    return False
                dep = Counter()
                if m.op not in ("Input", "Neuron", "Shiftmax"):  # a Shiftmax's output scale is fixed
                    for i in m.inputs:
                        dep.update(deps[self.cls[i]])
                if m.op == "Shiftmax" and deps[self.cls[m.inputs[0]]]:
                    raise self._shiftmax_error(m, ins[m.name][0], "depends on a synapse's calibrated scale")
                vals.append((m, self._derived(m, ins[m.name]), dict(dep)))
                origin = m.name if m.op == "Shiftmax" else next(
                    (self.shiftmax_origin[self.cls[i]] for i in m.inputs
                     if m.op not in ("Input", "Neuron") and self.cls[i] in self.shiftmax_origin), None)
                if origin is not None:
                    self.shiftmax_origin[c] = origin
            for m, s, _ in vals[1:]:
                if not math.isclose(s, vals[0][1], rel_tol=1e-12):
                    raise _err("quantize-scales", m.name, f"joins tensors of scales {vals[0][1]} and {s}",
                               "an Add of spikes with synaptic values is not supported")
            sig[c], deps[c] = vals[0][1], vals[0][2]
            return True
        want = None
        for m in srcs:
            w = np.abs(m.weight).max() if m.weight.size else 0.0
            if w > 0:
                full = 254 if (m.weight.min() < 0 < m.weight.max()) else 255
                s = math.floor(math.log2(full * 2.0 ** self.e_min * ins[m.name][0] / w))
                want = s if want is None else max(want, s)
        want = (want or 0) + self.extra
        exact = max((_exact_bias_bits(m.bias, want + EXACT_BIAS_BITS) for m in srcs if m.bias is not None),
                    default=None)
        if exact is not None and want < exact <= want + EXACT_BIAS_BITS:
            want = exact  # every member's bias is then an integer (e.g. an on-grid model: step_deploy.qat)
        s = min(want, self.caps.get(c, 10 ** 6))
        sig[c], deps[c] = 2.0 ** s, {c: 1}
        return True

    def _derived(self, m, ins) -> float:
        if m.op == "Input":
            return float(self.input_scales.get(m.name, 1.0))
        if m.op == "Neuron":
            return 1.0
        if m.op == "Mean":
            return ins[0] * self.shapes[m.inputs[0]][m.axis]
        if m.op == "Mul":
            return ins[0] * ins[1]
        if m.op == "MatMul":
            return ins[0] * ins[1] / m.scale
        if m.op == "TemporalMean":
            return ins[0]
        if m.op == "Shiftmax":
            if ins[0] != 1.0:
                raise self._shiftmax_error(m, ins[0], "not an integer score")
            return 2.0 ** m.out_frac_bits(tuple(self.shapes[m.inputs[0]]))
        raise _err("quantize-op", m.name, f"{m.op} has no Loihi integer form",
                   "supported: Conv/Linear, LIF/IF neurons, Add, Mul, Sum, Mean, MatMul, MaxPool2d, layout, Delay, "
                   "ReLU, Shiftmax, TemporalBlockSum")




def headroom(g, sc: ScaleClasses, sig, deps, layers, stats, margin, T) -> tuple[dict, list]:
    """Bits each free scale class must drop so calibration values fit (24-bit state, 24-bit graded
    payloads, int32 readout); plus notes on overflows no class can fix. An overflow behind a
    Shiftmax's exact scale raises ``IRError`` naming the Shiftmax and the ``frac_bits`` that fit."""
    need, notes, shiftmax_over = {}, [], {}

    def demand(name, value, limit, what, m=margin):
        if value * m <= limit:
            return
        bits = math.ceil(math.log2(value * m / limit))
        d = deps[sc.cls[name]]
        if len(d) == 1 and next(iter(d.values())) == 1:
            c = next(iter(d))
            need[c] = max(need.get(c, 0), bits)
        elif sc.shiftmax_origin.get(sc.cls[name]):
            sm = sc.shiftmax_origin[sc.cls[name]]
            if bits > shiftmax_over.get(sm, (0,))[0]:
                shiftmax_over[sm] = (bits, name, what, limit.bit_length())
        else:
            notes.append(f"{name}: {what} needs {bits} more bits than fit and its scale is fixed by exact counts")

    for n in sc.order:
        st = stats.get(n.name, {})
        if n.op == "Neuron":
            info = layers[n.name]
            demand(n.inputs[0], st.get("hmax", 0) * info["state_scale"], MAX_UV, "state v")
            demand(n.inputs[0], n.v_threshold * info["state_scale"] / 64, (1 << fx.VTH_BITS) - 1, "threshold", 1.0)
            demand(n.inputs[0], st.get("xmax", 0) * 64 * info["input_scale"] * 2 ** info["gap_shift"], MAX_UV,
                   "current u")
        elif n.op == "TemporalMean":
            demand(n.name, st.get("amax", 0) * sc.scale(sig, n.name) * T, 2 ** 31, "readout sum")
        elif n.op not in ("Input", "Output"):
            demand(n.name, st.get("amax", 0) * sc.scale(sig, n.name), MAX_UV, "graded value")
    if shiftmax_over:
        raise IRError([_shiftmax_overflow(g[sm], *over, sc.scale(sig, over[1])) for sm, over in shiftmax_over.items()])
    return need, notes


def _shiftmax_overflow(sm: ir.Shiftmax, bits: int, name: str, what: str, field: int, scale: float) -> Diagnostic:
    """A Shiftmax whose exact output scale overflows a Loihi field downstream: refused, naming it and
    the largest ``frac_bits`` that fits (its scale is exact, so no headroom pass can lower it)."""
    f = int(sm.frac_bits)
    fix = (f"use frac_bits <= {f - bits} (the model's shiftmax_bits) for Loihi" if f - bits >= 0 else
           "shorten the score rows, or run the attention on the host")
    return Diagnostic("quantize-headroom", sm.name, f"Shiftmax(frac_bits={f}) fixes the scale of {name} at "
                      f"2^{int(round(math.log2(scale)))}: its {what} needs {bits} more bit(s) than Loihi's {field}-bit "
                      f"field holds on the calibration data (an exact scale cannot be lowered)", hint=fix)


__all__ = ["NO_INTEGER_FORM", "NO_INTEGER_FORM_FIX", "prepare", "input_nodes", "integer_core_node", "batches",
           "calibrate", "ScaleClasses", "headroom", "SYNAPSES", "PRESERVING", "MAX_UV"]
