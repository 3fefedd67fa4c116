"""ONNX emitters of the neuron ops (``onnx_ops`` holds the others and the ``Context``): LIF/IF/PLIF
with every fire rule and reset, KLIF, EIF, CLIF, GLIF and PSN's ``Heaviside``, each in the float32
operation order of ``step_deploy.simulators.reference_neurons`` so that spikes agree bit for bit
(EIF and CLIF: up to onnxruntime's ``Exp``, see ``APPROXIMATE_OPS``)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from step_deploy import ir

from .onnx_context import Context

F32 = TensorProto.FLOAT

# --------------------------------------------------------------------------- neurons


def _charge_lif(cx: Context, n: ir.Neuron, x: str, v: str) -> str:
    """``H`` of LIF/IF/PLIF, the reference's float32 operations in order (PLIF multiplies by 1/tau)."""
    vr = float(n.v_reset)
    if n.kind == "IF":
        return cx.op("Add", [v, x], "h")
    d = cx.op("Sub", [v, cx.const("v_reset", vr)], "v_minus_reset") if vr else v  # v - 0.0 == v bitwise
    if n.kind == "PLIF" and n.decay_input:
        drive = cx.op("Sub", [x, d], "drive")
        return cx.op("Add", [v, cx.op("Mul", [drive, cx.const("inv_tau", 1.0 / n.tau)], "charge")], "h")
    tau = cx.const("tau", n.tau)
    if n.decay_input:
        return cx.op("Add", [v, cx.op("Div", [cx.op("Sub", [x, d], "drive"), tau], "charge")], "h")
    return cx.op("Add", [cx.op("Sub", [v, cx.op("Div", [d, tau], "leak")], "decayed"), x], "h")


def _charge_klif(cx: Context, n: ir.KLIFNeuron, x: str, v: str) -> str:
    """``H = relu(k · LIF charge)`` (STEP's ``mem *= k; relu``)."""
    return cx.op("Relu", [cx.op("Mul", [_charge_lif(cx, n, x, v), cx.const("k", n.k)], "gained")], "h_rectified")


def _charge_eif(cx: Context, n: ir.EIFNeuron, x: str, v: str) -> str:
    """``H = v + (x - v + ΔT·exp((v - θ_rh)/ΔT)) / tau`` in STEP's order."""
    dt = cx.const("delta_t", n.delta_t)
    z = cx.op("Div", [cx.op("Sub", [v, cx.const("theta_rh", n.theta_rh)], "above_rheobase"), dt], "exponent")
    boost = cx.op("Mul", [dt, cx.op("Exp", [z], "exp")], "boost")
    inner = cx.op("Add", [cx.op("Sub", [x, v], "drive"), boost], "drive_boosted")
    return cx.op("Add", [v, cx.op("Div", [inner, cx.const("tau", n.tau)], "charge")], "h")


def _fire(cx: Context, n: ir.Neuron, h: str, out: str) -> str:
    """``S`` by the node's fire rule; returns the spike's value name (``out``)."""
    thr = float(n.v_threshold)
    ge = n.compare == ">="
    if n.fire == "round_normalized":  # NILIF: round_half_even(clamp(h / θ, 0, D) / D)
        q = cx.op("Div", [h, cx.const("v_threshold", thr)], "quotient")
        c = cx.op("Clip", [q, cx.const("min_level", 0.0), cx.const("max_quotient", float(n.round_d))], "clamped")
        return cx.op("Round", [cx.op("Div", [c, cx.const("levels", float(n.round_d))], "normalized")], out=out)
    if n.output == "binary":
        return cx.op("Cast", [cx.op("GreaterOrEqual" if ge else "Greater", [h, cx.const("v_threshold", thr)], "fire")],
                     out=out, to=F32)
    if n.output == "ternary":
        pos = cx.op("GreaterOrEqual" if ge else "Greater", [h, cx.const("v_threshold", thr)], "fire_pos")
        neg = cx.op("LessOrEqual" if ge else "Less", [h, cx.const("neg_threshold", -thr)], "fire_neg")
        pos = cx.op("Cast", [pos], "pos", to=F32)
        neg = cx.op("Cast", [neg], "neg", to=F32)
        return cx.op("Sub", [pos, neg], out=out)
    # integer (ILIF): clamp(round_half_even(h / thr), 0, max_level)
    q = cx.op("Round", [cx.op("Div", [h, cx.const("v_threshold", thr)], "quotient")], "level")
    return cx.op("Clip", [q, cx.const("min_level", 0.0), cx.const("max_level", float(n.max_level))], out=out)


def _reset(cx: Context, n: ir.Neuron, h: str, s: str, v_next: str) -> None:
    """``V`` after the spike: hard ``h·(1 - fired) + v_reset·fired``, soft ``h - s·θ``."""
    thr, vr = float(n.v_threshold), float(n.v_reset)
    if n.reset == "soft":
        cx.op("Sub", [h, cx.op("Mul", [s, cx.const("v_threshold_soft", thr)], "subtracted")], out=v_next)
        return
    if n.output == "binary":
        fired = s
    elif n.output == "ternary":
        fired = cx.op("Abs", [s], "fired")
    else:
        fired = cx.op("Cast", [cx.op("Greater", [s, cx.const("zero", 0.0)], "spiked")], "fired", to=F32)
    keep = cx.op("Sub", [cx.const("one", 1.0), fired], "keep")
    if vr:
        kept = cx.op("Mul", [h, keep], "kept")
        cx.op("Add", [kept, cx.op("Mul", [cx.const("v_reset_value", vr), fired], "reset_part")], out=v_next)
    else:
        cx.op("Mul", [h, keep], out=v_next)


_CHARGES = {"Neuron": _charge_lif, "KLIFNeuron": _charge_klif, "EIFNeuron": _charge_eif}


def emit_neuron(cx: Context, n: ir.Neuron, ins, out):
    """LIF/IF/PLIF (every fire rule and reset), KLIF and EIF: state ``v`` (starts at ``v_reset``)."""
    v, v_next = cx.state(n, "v", ["B", *cx.shapes[n.name]], n.v_reset, "membrane potential V[t-1] (starts at v_reset)")
    h = _CHARGES[n.op](cx, n, ins[0], v)
    _reset(cx, n, h, _fire(cx, n, h, out), v_next)


def _sigmoid(cx: Context, z: str, suffix: str) -> str:
    """``1 / (1 + exp(-z))``: the form PyTorch's CPU sigmoid evaluates (ONNX ``Sigmoid`` is an
    approximation in onnxruntime); ``exp`` itself may still differ from PyTorch's in the last bit."""
    e = cx.op("Exp", [cx.op("Neg", [z], f"{suffix}_neg")], f"{suffix}_exp")
    return cx.op("Reciprocal", [cx.op("Add", [cx.const(f"{suffix}_one", 1.0), e], f"{suffix}_den")], suffix)


def emit_clifneuron(cx: Context, n: ir.CLIFNeuron, ins, out):
    """CLIF: states ``v`` and ``m`` (both 0 before step 0)::

        H = v·(1 - 1/tau) + x;  S = H >= θ;  m = m·sigmoid(H/tau) + S;  v = (H - S·θ) - S·sigmoid(m)
    """
    shape = ["B", *cx.shapes[n.name]]
    v, v_next = cx.state(n, "v", shape, 0.0, "membrane potential V[t-1] (starts at 0)")
    m, m_next = cx.state(n, "m", shape, 0.0, "complementary memory M[t-1] (starts at 0)")
    x = ins[0]
    if n.decay_input:
        x = cx.op("Div", [x, cx.const("tau_input", n.tau)], "x_decayed")
    h = cx.op("Add", [cx.op("Mul", [v, cx.const("decay", 1.0 - 1.0 / n.tau)], "decayed"), x], "h")
    s = _fire(cx, n, h, out)
    gate = _sigmoid(cx, cx.op("Div", [h, cx.const("tau", n.tau)], "h_over_tau"), "forming")
    mm = cx.op("Add", [cx.op("Mul", [m, gate], "m_formed"), s], out=m_next)
    v1 = cx.op("Sub", [h, cx.op("Mul", [s, cx.const("v_threshold_soft", float(n.v_threshold))], "subtracted")],
               "v_soft")
    cx.op("Sub", [v1, cx.op("Mul", [s, _sigmoid(cx, mm, "m_sigmoid")], "complement")], out=v_next)


def glif_coefficients(n: ir.GLIFNeuron) -> np.ndarray:
    """Per step ``(1 - be·(1 - conduct), 1 - al·(1 - tau), (1 - al)·leak, (1 - ga)·revth, vth)`` in
    float32, each with the float32 operations of STEP's 0-d parameter arithmetic."""
    f = np.float32
    p = np.asarray(n.params_t, np.float32)
    al, be, ga = (f(g) for g in n.gates)
    one = f(1)
    rows = [(one - be * (one - cond), one - al * (one - tau), (one - al) * leak, (one - ga) * revth, vth)
            for tau, vth, leak, cond, revth in p]
    return np.asarray(rows, np.float32).reshape(len(rows), 5)


def emit_glifneuron(cx: Context, n: ir.GLIFNeuron, ins, out):
    """GLIF: states ``u`` and ``o`` (0 before step 0), step ``t``'s coefficients gathered by ``t``::

        U = ((a·U') · (1 - ga·O') - l) + x·c - r·O';  O = (U - vth) > 0
    """
    shape = ["B", *cx.shapes[n.name]]
    u, u_next = cx.state(n, "u", shape, 0.0, "membrane U[t-1] (starts at 0)")
    o, o_next = cx.state(n, "o", shape, 0.0, "spike O[t-1] (starts at 0)")
    row = cx.op("Gather", [cx.const("coefficients", glif_coefficients(n)), cx.step_input], "step_coefficients", axis=0)
    c_in, a, leak, rev, vth = (cx.op("Gather", [row, cx.const(f"col{k}", k, np.int64)], name, axis=0)
                               for k, name in enumerate(("c_in", "a_decay", "leak_term", "rev_term", "vth")))
    i = cx.op("Mul", [ins[0], c_in], "current")
    gate = cx.op("Sub", [cx.const("one", 1.0), cx.op("Mul", [cx.const("ga", float(n.gates[2])), o], "ga_o")], "gate")
    kept = cx.op("Mul", [cx.op("Mul", [a, u], "decayed"), gate], "kept")
    h = cx.op("Sub", [cx.op("Add", [cx.op("Sub", [kept, leak], "leaked"), i], "charged"),
                      cx.op("Mul", [rev, o], "reversal")], out=u_next)
    d = cx.op("Sub", [h, vth], "above")
    fire = cx.op("Greater" if n.compare == ">" else "GreaterOrEqual", [d, cx.const("zero", 0.0)], "fire")
    s = cx.op("Cast", [fire], out=out, to=F32)
    cx.op("Identity", [s], out=o_next)


def emit_heaviside(cx: Context, n: ir.Heaviside, ins, out):
    """``S = X >= threshold`` (or ``>``)."""
    cmp = "GreaterOrEqual" if n.compare == ">=" else "Greater"
    cx.op("Cast", [cx.op(cmp, [ins[0], cx.const("threshold", float(n.threshold))], "fire")], out=out, to=F32)


#: ops the per-step ONNX model cannot express, with the reason (``export_onnx`` refuses them by node)
#: ops exported with a stated approximation: onnxruntime's ``Exp`` is not PyTorch's bit for bit
#: (measured on 100,000-element EIF/CLIF membranes: 1.5-3.6 % of the values differ by 1-2 ulp; the
#: spikes were equal, 0 mismatches in 12.2 M spikes of tiny Spikformer/QKFormer models on 64 digits).
#: A spike that such an ulp flips is a threshold tie, which the float parity check attributes.
APPROXIMATE_OPS: dict[str, str] = {
    "EIFNeuron": "membrane within 2 ulp: onnxruntime's Exp; 0 spike mismatches in 12.2 M measured",
    "CLIFNeuron": "membrane within 2 ulp: onnxruntime's Exp in the sigmoids; 0 spike mismatches in 12.2 M measured",
    "Shiftmax": ("bit-exact on integer scores (Q·Kᵀ of spikes, every Shiftmax of the seed designs: 0 of 477,600 values "
                 "differ); on fractional scores onnxruntime's Pow is not PyTorch's exp2: 0.65 % of the values 1 ulp "
                 "apart (3,116 of 477,600 measured)"),
}

REFUSED_OPS: dict[str, str] = {
    "TemporalLinear": ("a linear map across time steps (PSN): Y[t] needs X at every step, also later ones, but the "
                       "ONNX model computes one step with state I/O; run it with the reference interpreter "
                       "(step_deploy.simulators.reference.run), which evaluates sequence ops over all T steps"),
}
