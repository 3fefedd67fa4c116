"""quantize-loihi: BN-folded float IR -> integer IR for Loihi (lava-nc ``fixed_pt`` arithmetic).

``quantize_loihi(graph, calib_inputs, steps, target=None) -> (qgraph, report)``.

Requires: a float IR without BatchNorm next to a synapse (run ``fold_batchnorm`` first), LIF/IF/PLIF
neurons with ``v_reset = 0`` (hard or soft reset; binary, ternary (-1/0/+1), integer ``fire='round'``
(ILIF) or ``fire='round_normalized'`` (NILIF) spikes). KLIF/EIF/CLIF/GLIF neurons and PSN's
``TemporalLinear``/``Heaviside`` have no integer form and are refused naming the node
(``loihi_scales.NO_INTEGER_FORM``). Guarantees: every op is integer (``fixedpoint.loihi`` types plus
Add/Mul/Sum/MatMul(scale 1)/MaxPool2d/layout/Delay), node names kept (spikes compare by name).

**Scales.** Every tensor ``X`` becomes integers ``A ≈ X · s`` (``scale`` in the report). Spikes have
s = 1; counts stay exact integers (Mean -> Sum multiplies s by n; MatMul's constant folds in,
``s = s_a · s_b / scale``). Synapse outputs get a power-of-two s per *scale class* (tensors joined by
Add share one s, e.g. SDT's membrane shortcuts): the smallest s at which every member's largest
weight fills the 8-bit mantissa with ``weight_exp = e_min``, lowered when calibration on data shows
that the 24-bit state or a graded payload would overflow (with ``margin``). Mantissas are rounded
half-to-even, to even values when the signs are mixed (Loihi drops that LSB).

**Neurons.** STEP's ``H = V + (X - V)/tau`` is ``du = 4095`` (no current memory), ``dv = 4096/tau``
(2048 for tau = 2), ``u = A << 6``: the state scale is ``64 · tau · s_in`` (the 1/tau input factor is
folded) and ``vth = threshold · tau · s_in``. Spikformer's attention neuron sees the count
``Q·Kᵀ·V`` (s = 8, the 0.125 folded) against threshold 0.5: ``vth = 8``. With tau = 2 and T <= 7 the
halvings are exact, so ``v`` is exactly the scaled float membrane of the quantized inputs.

**Ties** (STEP fires on ``>=``, Lava's LIF on ``>``), chosen by ``tie``:
- ``'ge'`` (default for Loihi 2): ``compare='>='``, ``vth << 6 = threshold · state scale``, exact.
  Needs Loihi 2's programmable neuron (Lava: the custom ``FixedLIF``).
- ``'gap'`` (Loihi 1 and 2, Lava's stock ``LIF``): every neuron input is made a multiple of
  2^(T-1) (``weight_exp >= T-1`` and bias exponents >= T-1, or an inserted ``<neuron>.gap_shift``
  identity synapse ``<< k`` for weight-free inputs such as attention counts). Then every ``v``
  reachable within T steps is a multiple of 64, and ``v > (vth-1) << 6`` is exactly
  ``v >= vth << 6``: the threshold falls strictly between reachable values. Costs T-1 state bits;
  the golden model flags runs longer than T (``metadata['gap_steps']``).
- Neurons that already fire on ``>`` keep it (``'native'``).
- Soft-reset, ILIF and NILIF neurons (``'exact'``, Loihi 2's programmable neuron, Lava ``FixedLIF``)
  keep the exact threshold ``θ = vth << 6 = threshold · state scale`` whatever ``tie`` says: their
  reset subtracts θ and ILIF divides by it (``S = clamp(rne_div(v, θ), 0, D)``), so a shifted
  threshold would change the state. With the same exact-halving argument, ``v / θ`` is exactly
  the float ``H / V_th`` and the integer round-half-to-even equals ``torch.round``; NILIF fires on
  ``2v > D·θ``, the integer form of ``round_half_even(clamp(H/θ, 0, D) / D)``. ILIF spikes are
  integers 0..D with scale 1: a downstream synapse sees ``D·w`` at most (the calibration run,
  which produces the same values, sizes its scale), and Lava sends them as graded spikes.
Per layer the report records the choice, the chip it needs and the Lava process.

**Seed attention ops** (contract §2). A ternary neuron becomes a ``LoihiLIF(fire='ternary')`` with
the exact threshold (``+1`` at ``v >= θ``, ``-1`` at ``v <= -θ``; hard reset to 0 where it spiked,
soft ``v - S·θ``): Loihi 2's programmable neuron, 2-bit signed graded spikes, and the synapses after
it add or subtract. ``ReLU`` keeps its input's scale (A²OS²A's K: the synapse's integers, rectified),
so ``Q·Kᵀ·V`` with a real K has the synapse's scale and the attention neuron's threshold carries it.
``Shiftmax`` takes integer scores at scale 1 only (refused naming the node otherwise) and outputs the
scale ``2^(F+L)``; when that exact scale overflows the attention neuron's 24-bit state or 17-bit
threshold, the export is refused naming the Shiftmax and the largest ``frac_bits`` that fits (an
exact scale cannot be lowered). ``TemporalBlockSum`` keeps the scale; the golden model runs it
node-major (the report states its block, buffer and latency).

**Input.** Analog input (direct-coded pixels) is quantized on the host to ``input_bits``-bit graded
spikes (``QuantizeInput``, a power-of-two scale from the calibration maximum). The quantizer is
signed (``[-2^(bits-1), 2^(bits-1) - 1]``, the sign bit counted in ``bits``) when the calibration
inputs hold negative values (``input_signed=None``), e.g. mean/std-normalised pixels, so they are
not clipped to 0; else unsigned (``[0, 2^bits - 1]``, one more bit of resolution). Its clip count
on the calibration data is reported (``inputs[name]['clipped']``, golden event ``input_clip``).
Event/count inputs stay exact integers, unless the calibration data holds fractional values
(STEP resizes DVS frames bilinearly): then they are quantized the same way and the quantized
graph's ``Input`` becomes ``kind='analog'``.

**Readout.** ``TemporalMean -> Linear`` is reordered to ``Linear -> TemporalMean`` (exact: both are
linear) and the temporal mean becomes a ``TemporalSum`` (Lava ``Accumulator``): logits ≈
``Y[t] / ((t + 1) · scale)``; the argmax is unchanged.

Calibration (``passes.loihi_scales``: scale classes, float calibration run, headroom) runs the
float reference interpreter; then the golden model runs on the same data and counts
saturation/wrap events per layer for the report (no silent clipping).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from step_deploy import ir

from .loihi_scales import SYNAPSES, ScaleClasses, batches, calibrate, headroom, input_nodes, integer_core_node, prepare
from ..fixedpoint import loihi as fx
from .registry import PassContext, register_pass

TIES = ("auto", "ge", "gap")
MAX_UV = 1 << 23
CHIP_GE = "loihi2 (programmable neuron microcode; Lava: FixedLIF compare='>=')"
CHIP_GT = "loihi1 or loihi2 (built-in LIF; Lava: LIF)"
CHIP_CUSTOM = "loihi2 (programmable neuron microcode: soft reset / rounded or graded spikes; Lava: FixedLIF)"


def _v2(a) -> int:
    """Largest k such that every entry of ``a`` is divisible by 2^k (62 for all zeros)."""
    a = np.abs(np.asarray(a, np.int64)).ravel()
    a = a[a != 0]
    if a.size == 0:
        return 62
    g = int(np.gcd.reduce(a))
    return (g & -g).bit_length() - 1


def _chip(target) -> tuple[str, bool]:
    if target is None:
        return "loihi2", True
    if isinstance(target, str):
        from step_deploy.targets.spec import load_target

        target = load_target(target)
    return target.name, bool(target.limit("programmable_neurons"))


# --------------------------------------------------------------------------- build


def _quantize_synapse(n, sx: float, s: float, exp_min: Optional[int]):
    """Float synapse with input scale sx, output scale s -> (Fixed node, layer info, 2-adic divisor).
    ``exp_min`` (tie 'gap'): weight and bias exponents are at least this; the mantissas shrink
    instead when the scale is lowered for headroom."""
    w = n.weight.astype(np.float64) * s / sx
    mixed = n.weight.min() < 0 < n.weight.max()
    full = 254 if mixed else 255
    wmax = float(np.abs(w).max()) if w.size else 0.0
    e = int(math.ceil(math.log2(wmax / full))) if wmax > 0 else 0
    e = max(e, exp_min) if exp_min is not None else e
    m = w / 2.0 ** e
    m = 2 * np.round(m / 2) if mixed else np.round(m)
    lo, hi = fx.WEIGHT_RANGE[fx.sign_mode(n.weight)]
    mant = np.clip(m, lo, hi).astype(np.int32)
    info = {"op": "Fixed" + n.op, "scale": s, "input_scale": sx, "weight_exp": e, "sign_mode": fx.sign_mode(mant),
            "mantissa_min": int(mant.min()) if mant.size else 0, "mantissa_max": int(mant.max()) if mant.size else 0,
            "weight_rel_error": float(np.abs(mant * 2.0 ** e - w).max() / wmax) if wmax else 0.0}
    bias_mant, bias_exp = None, 0
    if n.bias is not None and np.any(n.bias != 0):
        b = n.bias.astype(np.float64) * s
        bias_exp = exp_min or 0
        while np.abs(np.round(b / 2.0 ** bias_exp)).max() > (1 << (fx.BIAS_MANT_BITS - 1)) - 1:
            bias_exp += 1
        bias_mant = np.round(b / 2.0 ** bias_exp).astype(np.int32)
        info.update(bias_exp=bias_exp, bias_mant_min=int(bias_mant.min()), bias_mant_max=int(bias_mant.max()),
                    loihi_neuron_bias=f"bias_mant << {bias_exp + 6} (fits the chip's 3-bit exponent: {bias_exp + 6 <= 7})")
    common = dict(name=n.name, inputs=n.inputs, weight=mant, weight_exp=e, bias_mant=bias_mant, bias_exp=bias_exp)
    if n.op == "Linear":
        node = fx.FixedLinear(**common)
    elif n.op == "Conv2d":
        node = fx.FixedConv2d(**common, stride=n.stride, padding=n.padding, dilation=n.dilation, groups=n.groups)
    else:
        node = fx.FixedConv1d(**common, stride=n.stride, padding=n.padding, dilation=n.dilation, groups=n.groups)
    k = min(_v2(mant) + e, _v2(bias_mant) + bias_exp if bias_mant is not None else 62) if e >= 0 else 0
    return node, info, k


def build(g: ir.Graph, sc: ScaleClasses, sig: dict, input_q: dict, tie: str, T: int):
    """Emit the integer graph; returns (qgraph, per-layer info, 2-adic divisor k of every tensor)."""
    q = ir.Graph(metadata={**g.metadata, ir.FORMAT_KEY: fx.FORMAT_NAME, "tie": tie, "gap_steps": T if tie == "gap" else None})
    layers, k2, rename = {}, {}, {}
    shapes = sc.shapes
    for n in sc.order:
        ins = tuple(rename.get(i, i) for i in n.inputs)
        s_in = [sc.scale(sig, i) for i in n.inputs]
        if n.op == "Input":
            nodes = input_nodes(n, input_q, fx.QuantizeInput)
            for node in nodes:
                q.add(node)
            rename[n.name] = nodes[-1].name
            k2[n.name] = 0
            continue
        if n.op in SYNAPSES:
            node, info, k2[n.name] = _quantize_synapse(ir.replace(n, inputs=ins), s_in[0], sc.scale(sig, n.name),
                                                       (T - 1) if tie == "gap" else None)
            q.add(node)
            layers[n.name] = {**info, **_spike_input_bound(g[n.inputs[0]], node)}
            continue
        if n.op == "Neuron":
            node, info, shift_node = _quantize_neuron(n, ins, s_in[0], k2[n.inputs[0]], shapes[n.name], tie, T)
            if shift_node is not None:
                q.add(shift_node)
            q.add(node)
            layers[n.name] = info
            k2[n.name] = 0
            continue
        k_in = [k2[i] for i in n.inputs]
        node = integer_core_node(n, ins, fx.TemporalSum)
        q.add(node)
        k2[n.name] = 0 if n.op == "Shiftmax" else sum(k_in) if n.op in ("Mul", "MatMul") else min(k_in)
        if n.op in ("Mean", "Mul", "MatMul", "Add", "Sum", "TemporalMean") + SEED_OPS:
            layers[n.name] = {"op": node.op, "scale": sc.scale(sig, n.name), **_seed_op_info(n, s_in, shapes)}
    return q, layers, k2


#: the seed attention ops, integer ops of the core set (``simulators.integer_ops``), recorded per layer
SEED_OPS = ("ReLU", "Shiftmax", "TemporalBlockSum")


def _seed_op_info(n: ir.Node, s_in: list, shapes: dict) -> dict:
    """What the report states of a seed attention op: its input scale and, for Shiftmax, the exact
    output fraction bits; for TemporalBlockSum its block, buffer and latency on a streaming target."""
    if n.op == "Shiftmax":
        return {"input_scale": s_in[0], "frac_bits": int(n.frac_bits),
                "out_frac_bits": n.out_frac_bits(tuple(shapes[n.inputs[0]])),
                "note": "integer scores at scale 1 -> a_j << (F + L - E): the float Shiftmax times 2^(F+L), exactly"}
    if n.op == "TemporalBlockSum":
        return {"block": int(n.block), "buffer_elements": n.buffer_elements(tuple(shapes[n.inputs[0]])),
                "latency_steps": n.latency,
                "note": "window op: the golden model runs it node-major, the mesh simulator block-major; Lava "
                        "streams it with a latency of block-1 steps (BlockSum, delay-balanced)"}
    if n.op == "ReLU":
        return {"note": "max(x, 0) on the synapse's integers: the scale of its input is kept"}
    return {}


def neuron_model(n: ir.Neuron) -> str:
    """What a non-stock neuron needs of Loihi 2's programmable neuron ('' for the stock LIF rule)."""
    return ", ".join(fx.programmable_features(n))


def _spike_input_bound(src: ir.Node, node) -> dict:
    """For a synapse reading spikes: the largest spike value (1, or D for ILIF's integer spikes) and
    the worst-case synaptic input ``max_o Σ_i |W[o, i]| · D << weight_exp + |bias|`` it implies,
    against the 24-bit current ``u = a << 6`` (the scales themselves come from calibration)."""
    if src.op == "Neuron":
        top = int(src.max_level) if src.fire == "round" else 1
    elif src.op == "Input" and src.kind == "spikes":
        top = 1
    else:
        return {}
    w = np.abs(np.asarray(node.weight, np.int64)).reshape(node.weight.shape[0], -1)
    worst = int(w.sum(1).max()) * top if w.size else 0
    worst = worst << node.weight_exp if node.weight_exp >= 0 else worst >> -node.weight_exp
    b = node.effective_bias()
    worst += int(np.abs(b).max()) if b is not None else 0
    return {"input_max_level": top, "worst_case_input": worst, "worst_case_fits_u24": (worst << 6) < MAX_UV}


def _quantize_neuron(n: ir.Neuron, ins, s_in: float, k_in: int, shape, tie: str, T: int):
    tau = 1.0 if n.kind == "IF" else float(n.tau)
    dv_f = 0.0 if n.kind == "IF" else 4096.0 / tau
    dv = int(round(dv_f))
    state = 64.0 * s_in * (tau if (n.decay_input and n.kind != "IF") else 1.0)
    custom = neuron_model(n)
    ternary = n.output == "ternary"
    fire = "ternary" if ternary else n.fire
    mode = "exact" if custom else ("native" if n.compare == ">" else tie)
    shift = 0
    if mode == "gap":
        if dv not in (0, 2048):
            mode = "ge"  # the grid argument needs halving (tau = 2) or no decay (IF)
        else:  # halving needs every input a multiple of 2^(T-1); an IF neuron (no decay) needs nothing
            shift = max(0, (T - 1) - k_in) if dv == 2048 else 0
    state *= 2.0 ** shift
    vth_f = n.v_threshold * state / 64.0
    vth = min(int(round(vth_f)), (1 << fx.VTH_BITS) - 1)  # an overflow is fixed by headroom()
    vth = max(vth, 1) if custom else vth  # round / soft reset divide by or subtract θ; headroom() flags the rest
    info = {"op": "LoihiLIF", "input_scale": s_in, "state_scale": state, "threshold": n.v_threshold, "du": 4095,
            "dv": dv, "decay_exact": dv == dv_f, "threshold_exact": vth == vth_f, "tie": mode,
            "compare": ">" if mode in ("gap", "native") else ">=" if mode == "ge" else n.compare, "gap_shift": shift,
            "reset": n.reset, "fire": fire, "max_level": int(n.max_level) if n.fire == "round" else 1,
            "spike_bits": max(1, int(n.max_level).bit_length()) if n.fire == "round" else 2 if ternary else 1}
    if n.fire == "round_normalized":
        info["round_d"] = int(n.round_d)
    if mode == "gap":
        vth -= 1
        info.update(chip=CHIP_GT, lava_process="LIF", note="v is a multiple of 64 within T steps: v > (vth)<<6 == v >= (vth+1)<<6")
    elif mode == "ge":
        info.update(chip=CHIP_GE, lava_process="FixedLIF")
    elif mode == "exact":
        info.update(chip=CHIP_CUSTOM, lava_process="FixedLIF", neuron_model=custom,
                    note="exact threshold θ = vth << 6 (no 'gap' grid: a soft reset subtracts θ, rounding divides "
                         "by it, a ternary neuron also fires at -θ)")
    else:
        info.update(chip=CHIP_GT, lava_process="LIF")
    info["threshold_mantissa"] = vth
    shift_node = None
    src = ins[0]
    if shift:
        c = int(shape[-1])
        shift_node = fx.FixedLinear(f"{n.name}.gap_shift", ins, weight=np.eye(c, dtype=np.int32), weight_exp=shift)
        src = shift_node.name
    node = fx.LoihiLIF(n.name, (src,), du=4095, dv=dv, vth=vth, compare=info["compare"], reset=n.reset, fire=fire,
                       max_level=info["max_level"], round_d=int(n.round_d) if n.fire == "round_normalized" else 0)
    return node, info, shift_node


# --------------------------------------------------------------------------- entry point


def quantize_loihi(graph: ir.Graph, calib_inputs, steps: Optional[int] = None, target=None, *, tie: str = "auto",
                   input_bits: int = 8, margin: float = 2.0, extra_bits: int = 0, batch_size: int = 64,
                   input_signed: Optional[bool] = None):
    """Quantize the BN-folded float ``graph`` for Loihi; returns ``(qgraph, report)``.

    ``calib_inputs``: ``(B, *shape)`` static input (with ``steps``) or ``(T, B, *shape)``. ``target``:
    None (Loihi 2), 'loihi2', 'loihi1' or a ``TargetSpec``. ``tie``: 'auto' ('ge' on chips with
    programmable neurons, else 'gap'), 'ge' or 'gap' (see the module doc). ``input_signed``: None
    (signed analog input quantizer when the calibration inputs hold negative values), True or False
    (forced; False clips negative inputs to 0, which the report counts)."""
    if tie not in TIES:
        raise ValueError(f"tie must be one of {TIES}, got {tie!r}")
    chip, programmable = _chip(target)
    tie = ("ge" if programmable else "gap") if tie == "auto" else tie
    if tie == "ge" and not programmable:
        raise ValueError(f"tie='ge' needs Loihi 2's programmable neuron; target {chip} has none: use tie='gap'")
    g = prepare(graph, multi_level=True)
    T = int(steps or g.metadata.get("time_steps") or 0)
    if T <= 0:
        raise ValueError("quantize_loihi needs steps=T (the number of time steps the network runs)")
    stats = calibrate(g, calib_inputs, T, batch_size)
    input_q = {}
    fractional = _fractional_inputs(g, calib_inputs, batch_size)
    for n in g.inputs:
        if n.kind == "analog" or n.name in fractional:
            input_q[n.name] = _input_quantizer(n.name, stats[n.name], input_bits, input_signed)
            if n.kind != "analog":
                input_q[n.name]["note"] += (f"; the '{n.kind}' input holds fractional values in the calibration data "
                                            f"(e.g. bilinearly resized event frames), so it is quantized like an "
                                            f"analog input")
    sc = ScaleClasses(g, {k: v["scale"] for k, v in input_q.items()}, (T - 1) if tie == "gap" else 0, extra_bits)
    for attempt in range(8):  # solve, build, check headroom, lower the classes that overflow
        sig, deps = sc.solve()
        qgraph, layers, _ = build(g, sc, sig, input_q, tie, T)
        need, notes = headroom(g, sc, sig, deps, layers, stats, margin, T)
        if not need:
            break
        for c, bits in need.items():
            sc.caps[c] = int(round(math.log2(sig[c]))) - bits
    if need:
        notes.append(f"headroom not reached for scale classes {sorted(need)} after {attempt + 1} attempts")
    ir.check(qgraph)
    return qgraph, _report(qgraph, layers, input_q, stats, notes, calib_inputs, T, tie, chip, margin, batch_size)


def _fractional_inputs(g: ir.Graph, calib_inputs, batch_size: int) -> set:
    """Spike/count inputs whose calibration values are not all integers (STEP's DVS frames are
    resized bilinearly): the integer models cannot take them as counts, so they get a quantizer."""
    out = set()
    for chunk in batches(g, calib_inputs, batch_size):
        for name, x in chunk.items():
            if g[name].kind != "analog" and x.is_floating_point() and not bool((x == x.round()).all()):
                out.add(name)
    return out


def _input_quantizer(name: str, st: dict, bits: int, forced: Optional[bool]) -> dict:
    """Signedness and power-of-two scale of an analog input's ``QuantizeInput`` from its calibration
    range ``st`` (``min``, ``amax``): the largest scale at which the calibration maximum fits."""
    lo, amax = float(st["min"]), float(st["amax"])
    signed = bool(lo < 0) if forced is None else bool(forced)
    top = (1 << (bits - signed)) - 1
    s = 2.0 ** math.floor(math.log2(top / amax)) if amax > 0 else 1.0
    why = ("forced by input_signed" if forced is not None else
           "calibration inputs hold negative values" if signed else "calibration inputs are all >= 0")
    lo_q, hi_q = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return {"node": f"{name}.q", "bits": bits, "signed": signed, "scale": s, "calib_min": lo, "calib_max": amax,
            "range": [lo_q, hi_q], "signed_reason": why,
            "note": f"input sent as {bits}-bit {'signed' if signed else 'unsigned'} graded spikes "
                    f"(integers {lo_q}..{hi_q}, value = integer / {s:g})"}


def _report(qgraph, layers, input_q, stats, notes, calib_inputs, T, tie, chip, margin, batch_size) -> dict:
    from step_deploy.simulators.golden import merge_events, run_golden

    events: dict = {}
    for chunk in batches(qgraph, calib_inputs, batch_size):
        merge_events(events, run_golden(qgraph, chunk, steps=T, record=(), events=True).events)
    for name, info in layers.items():
        ev = {k: v for k, v in events.get(name, {}).items()}
        if name + ".gap_shift" in events:
            ev["gap_shift_max_abs"] = events[name + ".gap_shift"].get("max_abs", 0)
        info["events"] = ev
        if name in stats:
            info["calib_max_abs"] = stats[name].get("hmax", stats[name]["amax"])
    for info in input_q.values():  # values outside the quantizer's range on the calibration data
        info["clipped"] = int(events.get(info["node"], {}).get("input_clip", 0))
    bad = {k: sum(v for e, v in ev.items() if e in ("u_wrap", "v_sat", "input_clip", "int32_overflow", "over_24bit"))
           for k, ev in events.items()}
    out = qgraph.outputs[0]
    neurons = [i for i in layers.values() if i["op"] == "LoihiLIF"]
    return {
        "target": chip, "steps": T, "tie": tie, "margin": margin,
        "chip_required": (CHIP_CUSTOM if any(i["tie"] == "exact" for i in neurons) else
                          CHIP_GE if any(i["tie"] == "ge" for i in neurons) else CHIP_GT),
        "inputs": input_q, "layers": layers,
        "output": {"node": out.inputs[0], "scale": layers.get(out.inputs[0], {}).get("scale"),
                   "dequantize": "float value at step t = Y[t] / ((t + 1) * scale) for a TemporalSum readout"},
        "saturation_events": {k: v for k, v in bad.items() if v}, "saturation_total": int(sum(bad.values())),
        "notes": notes, "time_alignment": "delay-free golden model; the Lava runner shifts by passes.delay_balance",
    }



@register_pass("quantize-loihi", requires=("float", "bn-folded"), guarantees=f"quantized:{fx.FORMAT_NAME}",
               removes="float")
def quantize_loihi_pass(graph: ir.Graph, ctx: PassContext) -> ir.Graph:
    """Quantize with ``ctx.calibration``, ``ctx.steps`` and ``ctx.target``; the report goes to ``ctx.results``."""
    ctx.require("quantize-loihi", "calibration")
    qgraph, report = quantize_loihi(graph, ctx.calibration, steps=ctx.steps, target=ctx.target,
                                    **ctx.options.get("quantize-loihi", {}))
    ctx.results["quantize-loihi"] = report
    return qgraph


__all__ = ["quantize_loihi", "quantize_loihi_pass", "prepare", "calibrate", "ScaleClasses", "build", "headroom", "TIES"]
