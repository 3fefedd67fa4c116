"""The integer golden model: the reference interpreter's integer mode.

It *defines* the quantized (Loihi fixed-point) network produced by ``passes.quantize_loihi``;
Lava (``simulators.lava_runner``), the cycle-level simulator and the HLS C simulation must
reproduce its spikes bit for bit. It is ``reference.run`` with :data:`INTEGER_OPS`: one small
function per op, all values int64 tensors (convolutions and matmuls are evaluated in float64,
which is exact below 2^53; every value here stays far below that).

Arithmetic (lava-nc 0.10.0 ``fixed_pt``, read in its source): synapses
``A = (W·X) << weight_exp + bias`` with 8-bit mantissas; neurons ``u = wrap24(a << 6)`` (``du =
4095``: no current memory), ``v = sat24(trunc0(v·(4096-dv)/4096) + u)``, spike on ``v > vth<<6``
(or ``>=`` on Loihi 2), reset to 0. See ``ir.fixed_point.LoihiLIF``.

**Time alignment: the golden model is delay-free.** Step t of every node depends on step t of
its inputs, as in the float IR, so golden step t is float step t. Lava adds one step per
Dense/Sparse (and each custom process its own latency, see ``exporters.lava_processes``). The
Lava exporter computes every node's latency with ``passes.delay_balance`` (the number of
delaying stages on its paths), inserts ``Delay`` processes where branches of different latency
meet (residual adds, Q/K/V into MatMul/Mul), starts each bias when its data arrives, and the
Lava runner reads node n's step t at Lava step ``t + latency[n]``; it runs ``T + max latency``
steps for a T-step golden run.

**Events, no silent clipping.** ``run_golden(..., events=True)`` counts per node: ``u_wrap`` and
``v_sat`` (the 24-bit state wrapped or saturated), ``input_clip`` (analog input clamped to its
bits), ``a_over_16bit`` (a synaptic input beyond Lava's declared 16-bit ``a_out``; Lava's CPU
models do not clip it), ``over_24bit`` (a graded value beyond 24 bits), ``int32_overflow`` (Lava
would fail), and ``max_abs`` (the largest magnitude seen).
"""
from __future__ import annotations

from step_deploy.errors import StepDeployError

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from step_deploy import ir

from .reference import RunResult, run
from .reference_ops import FLOAT_OPS
from step_deploy.ir import fixed_point as fx  # after reference_ops (see reference_ops' op-table check)

MAX_UV = 1 << 23
_I32 = (1 << 31) - 1


class GoldenError(StepDeployError, ValueError):
    """A node the integer model cannot run (a float op left in a quantized graph)."""


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def _i64(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).to(torch.int64)


def _w(state: dict, key: str, array) -> Optional[torch.Tensor]:
    if key not in state:
        state[key] = None if array is None else torch.from_numpy(np.asarray(array, np.float64))
    return state[key]


def _shift(acc: torch.Tensor, exp: int) -> torch.Tensor:
    return acc << exp if exp >= 0 else acc >> (-exp)  # >> on int64 is a floor, as numpy's


def _bias(n, state, rank: int, channel_axis: int) -> Optional[torch.Tensor]:
    if "bias" not in state:
        b = n.effective_bias()
        if b is None:
            state["bias"] = None
        else:
            shape = [1] * rank
            shape[channel_axis] = -1
            state["bias"] = torch.from_numpy(b).reshape(shape)
    return state["bias"]


def trunc_decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """``x·keep / 4096`` rounded toward zero (Lava: ``sign(p)·(|p| >> 12)``)."""
    if keep == 0:
        return torch.zeros_like(x)
    p = x * int(keep)
    return torch.sign(p) * (p.abs() >> 12)


def wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's current wrap: one ±2^24 correction outside ``(-2^23, 2^23]``."""
    if u.numel() == 0 or (int(u.max()) <= MAX_UV and int(u.min()) > -MAX_UV):
        return u
    w = torch.where(u > MAX_UV, u - 2 * MAX_UV, u)
    return torch.where(w <= -MAX_UV, u + 2 * MAX_UV, w)


def quantize_input(n: fx.QuantizeInput, x: torch.Tensor) -> torch.Tensor:
    """The host-side input quantization (shared with the Lava runner, so both see the same ints)."""
    if not x.is_floating_point():
        x = x.to(torch.float32)
    lo, hi = n.bounds
    return torch.clamp(torch.round(x * n.scale), lo, hi).to(torch.int64)


# --------------------------------------------------------------------------- ops


def op_quantize_input(n: fx.QuantizeInput, xs, state, t):
    return quantize_input(n, xs[0])


def op_fixed_linear(n: fx.FixedLinear, xs, state, t):
    acc = _i64(F.linear(_f64(xs[0]), _w(state, "w", n.weight)))
    b = _bias(n, state, acc.dim(), acc.dim() - 1)
    y = _shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def op_fixed_conv2d(n: fx.FixedConv2d, xs, state, t):
    acc = _i64(F.conv2d(_f64(xs[0]), _w(state, "w", n.weight), None, tuple(n.stride), tuple(n.padding),
                        tuple(n.dilation), n.groups))
    b = _bias(n, state, acc.dim(), 1)
    y = _shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def op_fixed_conv1d(n: fx.FixedConv1d, xs, state, t):
    acc = _i64(F.conv1d(_f64(xs[0]), _w(state, "w", n.weight), None, n.stride, n.padding, n.dilation, n.groups))
    b = _bias(n, state, acc.dim(), 1)
    y = _shift(acc, int(n.weight_exp))
    return y + b if b is not None else y


def lif_step(n: fx.LoihiLIF, a: torch.Tensor, state: dict):
    """One LoihiLIF step; returns ``(spikes, u_wrapped_mask, v_saturated_mask)``."""
    a = a.to(torch.int64)
    u = state.get("u")
    v = state.get("v")
    if u is None:
        u = torch.zeros_like(a)
        v = torch.zeros_like(a)
    u_raw = trunc_decay(u, 4096 - (int(n.du) + 1)) + (a << 6)
    u = wrap24(u_raw)
    v_raw = trunc_decay(v, 4096 - int(n.dv)) + u
    v = torch.clamp(v_raw, -MAX_UV + 1, MAX_UV - 1)
    thr = int(n.vth) << 6
    s = v >= thr if n.compare == ">=" else v > thr
    state["u"] = u
    state["v"] = torch.where(s, torch.zeros_like(v), v)
    return s.to(torch.int64), u != u_raw, v != v_raw


def op_loihi_lif(n: fx.LoihiLIF, xs, state, t):
    return lif_step(n, xs[0], state)[0]


def op_matmul(n: ir.MatMul, xs, state, t):
    if n.scale != 1.0:
        raise GoldenError(f"{n.name}: MatMul scale {n.scale} in an integer graph (quantize_loihi folds it)")
    a, b = (_f64(x) for x in xs)
    if n.transpose_a:
        a = a.transpose(-2, -1)
    if n.transpose_b:
        b = b.transpose(-2, -1)
    return _i64(a @ b)


def op_maxpool2d(n: ir.MaxPool2d, xs, state, t):
    return _i64(F.max_pool2d(_f64(xs[0]), tuple(n.kernel_size), tuple(n.stride), tuple(n.padding)))


def op_temporal_sum(n: fx.TemporalSum, xs, state, t):
    acc = state["acc"] + xs[0] if "acc" in state else xs[0].clone()
    state["acc"] = acc
    return acc


def _not_integer(n, xs, state, t):
    raise GoldenError(f"{n.name}: {n.op} is a float op; run passes.quantize_loihi before the golden model")


_SAME = ("Input", "Output", "Mul", "Sum", "Add", "Reshape", "Transpose", "Flatten", "Delay")
_FLOAT_ONLY = ("Conv2d", "Conv1d", "Linear", "BatchNorm", "Neuron", "Mean", "Scale", "AvgPool2d", "TemporalMean")

BASE_OPS = {k: FLOAT_OPS[k] for k in _SAME}
BASE_OPS.update({k: _not_integer for k in _FLOAT_ONLY})
BASE_OPS.update({
    "MatMul": op_matmul, "MaxPool2d": op_maxpool2d, "QuantizeInput": op_quantize_input,
    "FixedLinear": op_fixed_linear, "FixedConv2d": op_fixed_conv2d, "FixedConv1d": op_fixed_conv1d,
    "LoihiLIF": op_loihi_lif, "TemporalSum": op_temporal_sum,
})


# --------------------------------------------------------------------------- event counting


def _count(ev: dict, key: str, mask: torch.Tensor) -> None:
    c = int(mask.sum())
    if c:
        ev[key] = ev.get(key, 0) + c


def _observe(events: dict, n, xs, y: torch.Tensor) -> None:
    ev = events.setdefault(n.name, {})
    if n.op == "Input":
        return
    if y.numel():
        ev["max_abs"] = max(ev.get("max_abs", 0), int(y.abs().max()))
    if n.op == "QuantizeInput":
        x = xs[0].to(torch.float32) if not xs[0].is_floating_point() else xs[0]
        lo, hi = n.bounds
        r = torch.round(x * n.scale)
        _count(ev, "input_clip", (r < lo) | (r > hi))
    if isinstance(n, fx.FIXED_SYNAPSES):
        _count(ev, "a_over_16bit", y.abs() > (1 << 15) - 1)
    if n.op not in ("LoihiLIF", "Output", "TemporalSum"):  # the readout sum is a host-side int32
        _count(ev, "over_24bit", y.abs() > MAX_UV - 1)
        _count(ev, "int32_overflow", y.abs() > _I32)


def make_integer_ops(events: Optional[dict] = None) -> dict:
    """The integer op table; with ``events`` (a dict) every op also counts its events into it."""
    if events is None:
        return dict(BASE_OPS)
    ops = {}
    for name, f in BASE_OPS.items():
        if name == "LoihiLIF":
            def lif(n, xs, state, t):
                s, wrapped, sat = lif_step(n, xs[0], state)
                ev = events.setdefault(n.name, {})
                _count(ev, "u_wrap", wrapped)
                _count(ev, "v_sat", sat)
                _count(ev, "a_shift_int32_overflow", xs[0].abs() >= (1 << 25))
                return s
            ops[name] = lif
        else:
            def op(n, xs, state, t, _f=f):
                y = _f(n, xs, state, t)
                _observe(events, n, xs, y)
                return y
            ops[name] = op
    return ops


INTEGER_OPS = make_integer_ops()


@dataclass
class GoldenResult(RunResult):
    """``RunResult`` plus ``events[node][kind]`` counts (empty unless ``events=True``)."""

    events: dict = field(default_factory=dict)


def neuron_names(qgraph: ir.Graph) -> list[str]:
    return [n.name for n in qgraph.topo_order() if isinstance(n, fx.LoihiLIF)]


def integer_inputs(qgraph: ir.Graph, inputs) -> dict:
    """Spike/count inputs given as floats (0.0/1.0, as the float interpreter wants them) become
    int64; analog inputs stay float for ``QuantizeInput``."""
    if not isinstance(inputs, dict):
        inputs = {qgraph.inputs[0].name: inputs}
    out = {}
    for n in qgraph.inputs:
        x = inputs[n.name]
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        if n.kind != "analog" and x.is_floating_point():
            if not torch.equal(x, torch.round(x)):
                raise GoldenError(f"input {n.name!r} is '{n.kind}' but holds non-integer values")
            x = x.to(torch.int64)
        out[n.name] = x
    return out


def run_golden(qgraph: ir.Graph, inputs: Union[dict, torch.Tensor, np.ndarray], steps: Optional[int] = None,
               record: Union[bool, Iterable[str]] = True, events: bool = False) -> GoldenResult:
    """Run the quantized graph. ``inputs`` as for ``reference.run`` (analog floats go through the
    graph's ``QuantizeInput``; spike/count inputs must be integers). ``record=True`` records the
    spikes of every ``LoihiLIF``; traces and outputs are int64 ``(T, B, ...)`` tensors."""
    names = neuron_names(qgraph) if record is True else list(record or ())
    gap = qgraph.metadata.get("gap_steps")
    if gap and steps and steps > gap:
        warnings.warn(f"tie 'gap' reproduces '>=' exactly for at most {gap} steps; this run has {steps} "
                      "(Lava and the golden model still agree)", RuntimeWarning)
    ev: dict = {}
    res = run(qgraph, integer_inputs(qgraph, inputs), steps=steps, record=names,
              ops=make_integer_ops(ev if events else None))
    return GoldenResult(res.outputs, res.traces, ev)


def merge_events(total: dict, part: dict) -> dict:
    """Accumulate ``part`` into ``total`` (counts add, ``max_abs`` takes the max)."""
    for node, ev in part.items():
        dst = total.setdefault(node, {})
        for k, v in ev.items():
            dst[k] = max(dst.get(k, 0), v) if k == "max_abs" else dst.get(k, 0) + v
    return total


def _dataset_tensors(dataset, limit: Optional[int]):
    if hasattr(dataset, "tensors"):
        x, y = dataset.tensors[0], dataset.tensors[1]
    else:
        pairs = [dataset[i] for i in range(len(dataset))]
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs])
    return (x[:limit], y[:limit]) if limit else (x, y)


def accuracy_float_vs_golden(model, dataset, calib=None, steps: Optional[int] = None, tie: str = "auto",
                             target=None, limit: Optional[int] = None, batch_size: int = 64) -> dict:
    """Top-1 accuracy of the float IR and of the integer golden model on ``dataset``.

    ``model``: a zoo model (captured and BN-folded here; its encoder makes the time axis) or a
    float ``ir.Graph`` (then ``dataset`` holds per-step inputs and ``steps`` is needed).
    ``calib``: the calibration dataset (default: the first 256 samples of ``dataset``; pass the
    training split for an honest number). Returns accuracies, prediction agreement, spike
    agreement and the quantization report."""
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.passes.quantize_loihi import quantize_loihi

    x, y = _dataset_tensors(dataset, limit)
    xc = _dataset_tensors(calib, 256)[0] if calib is not None else x[:256]
    if isinstance(model, ir.Graph):
        graph, encode = model, (lambda v: v)
    else:
        from step_deploy.frontend.capture import capture, encoded_input

        graph = fold_batchnorm(capture(model))
        steps = steps or int(model.step)
        encode = lambda v: encoded_input(model, v)
    qgraph, report = quantize_loihi(graph, encode(xc), steps=steps, target=target, tie=tie, batch_size=batch_size)
    pf, pg, same, total = [], [], 0, 0
    for start in range(0, len(x), batch_size):
        xb = encode(x[start:start + batch_size])
        f = run(graph, xb, steps=steps, record=True)
        g = run_golden(qgraph, xb, steps=steps, record=True)
        pf.append(f.final().argmax(-1))
        pg.append(g.final().argmax(-1))
        for k, v in g.traces.items():
            same += int((f.traces[k].to(torch.int64) == v).sum())
            total += v.numel()
    pf, pg = torch.cat(pf), torch.cat(pg)
    return {"n": len(y), "float_acc": float((pf == y).float().mean()), "golden_acc": float((pg == y).float().mean()),
            "prediction_agreement": float((pf == pg).float().mean()),
            "spike_agreement": same / total if total else 1.0, "report": report}


__all__ = ["INTEGER_OPS", "accuracy_float_vs_golden", "BASE_OPS", "GoldenError", "GoldenResult", "make_integer_ops", "run_golden",
           "lif_step", "trunc_decay", "wrap24", "quantize_input", "neuron_names", "merge_events", "MAX_UV"]
