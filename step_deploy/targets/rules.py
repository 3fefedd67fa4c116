"""Hardware constraint checker. Rules are data (name, what they check, a function), as in
``step_deploy.ir.verify``; ``check_target`` runs them all and returns every diagnostic.

Severity: ``error`` = cannot run on this target as mapped; ``warning`` = runs, but part of it
elsewhere (host / embedded cores, more chips) at a stated cost, or not exactly; ``info`` = a fact
worth knowing that needs no action: an unknown limit that was not checked, mixed-sign weights
losing an LSB, or a difference the Loihi export already handles exactly (a ``>=`` neuron made
exact by a custom neuron or the 'gap' tie strategy, analog input quantized on the host)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from .. import ir
from ..fixedpoint import loihi as fx
from ..ir.diagnostics import Diagnostic
from .memory import ANALOG_INPUT_BITS, payload_bits
from .spec import TargetSpec, TargetSpecError, load_target

WeightBits = Union[int, dict, None]


@dataclass
class Context:
    graph: ir.Graph
    target: TargetSpec
    mapping: object  # step_deploy.targets.mapping.Mapping
    weight_bits: WeightBits


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[Context], list[Diagnostic]]


def _per_core(rule: str, resource: str, key: str, what: str, hint: Callable, at_synapse: bool) -> Callable:
    def check(c: Context) -> list[Diagnostic]:
        lim = c.target.limit(key)
        if lim is None:
            return []
        return [Diagnostic(rule, L.cause if at_synapse else L.name,
                           f"{what} per core is {L.per_core[resource]} (layer {L.name}: {L.role}, {L.neurons} "
                           f"neurons, fan-in {L.fan_in}, on {L.cores} core(s)); {c.target.name} allows {lim}",
                           L.per_core[resource], lim, hint(c, L))
                for L in c.mapping.layers if L.per_core[resource] > lim]
    return check


def _fan_in_hint(c: Context, L) -> str:
    lim = c.target.limit("in_axons_per_core")
    parts = math.ceil(L.fan_in / lim)
    return (f"a neuron of {L.name} reads {L.fan_in} presynaptic sources: split its input into {parts} partial "
            f"sums (e.g. {parts} relay layers of {L.neurons} neurons each, or dendritic compartments), "
            f"or shrink the input width")


def _memory_hint(c: Context, L) -> str:
    return (f"{L.fan_in} synapses per neuron at {c.mapping.weight_bits}-bit weights: use fewer weight bits, "
            f"enable shared kernels (weight_sharing), or reduce the fan-in")


def _chip_rules(c: Context) -> list[Diagnostic]:
    m, t, out = c.mapping, c.target, []
    per_chip = t.limit("neuro_cores_per_chip")
    if m.total_cores > per_chip:
        big = sorted(m.layers, key=lambda L: -L.cores)[:3]
        out.append(Diagnostic("cores-per-chip", None, f"the mapping needs {m.total_cores} neuro-cores = {m.chips} chips",
                              m.total_cores, per_chip, f"run on a {m.chips}-chip system or shrink the model; largest "
                              f"layers: " + ", ".join(f"{L.name} ({L.cores})" for L in big), "warning"))
    for rule, total, key, what in (("neurons-per-chip", m.neurons, "neurons_per_chip", "neurons"),
                                   ("synapses-per-chip", m.stored_synapses, "synapses_per_chip", "stored synapses")):
        lim = t.limit(key)
        if total > lim:
            k = math.ceil(total / lim)
            extra = f" ({m.synapses} unshared)" if rule == "synapses-per-chip" else ""
            out.append(Diagnostic(rule, None, f"{total} {what}{extra} need {k} chips by this resource alone",
                                  total, lim, f"spread over {max(k, m.chips)} chips or shrink the model", "warning"))
    return out


def _node_bits(c: Context, name: str) -> Optional[int]:
    wb = c.weight_bits if c.weight_bits is not None else c.mapping.weight_bits
    return wb.get(name, c.mapping.weight_bits) if isinstance(wb, dict) else wb


def _weight_precision(c: Context) -> list[Diagnostic]:
    t, out, mixed = c.target, [], []
    allowed, top = t.limit("weight_bits_allowed"), t.limit("weight_bits")
    for n in c.graph.topo_order():
        if not isinstance(n, (ir.Linear, ir.Conv2d, ir.Conv1d)) or c.mapping.nodes[n.name]["placement"] != "synapses":
            continue
        bits = _node_bits(c, n.name)
        if bits is not None and (bits > top or bits not in allowed):
            out.append(Diagnostic("weight-precision", n.name, f"{bits}-bit weights; {t.name} stores {allowed}-bit "
                                  f"mantissas with a shared exponent", bits, top,
                                  f"quantize {n.name} to at most {top} bits (one of {allowed})"))
        w = np.asarray(n.weight)
        if t.limit("mixed_sign_loses_lsb") and bits == top and w.min() < 0 < w.max():
            mixed.append(n.name)
    if mixed:
        out.append(Diagnostic("weight-precision", None, f"{len(mixed)} synapse layer(s) have mixed-sign weights: at "
                              f"{top} bits the mantissa loses one LSB (even values only)", len(mixed), None,
                              f"expect {top - 1} effective bits; first: {mixed[0]}", "info"))
    return out


def _graded_hint(n: ir.Node, t: TargetSpec) -> str:
    if isinstance(n, ir.Add):
        return ("fold the add into each consumer's synapses (one duplicated synapse group per operand: fan-in x "
                f"{len(n.inputs)}), or deploy on a chip with graded spikes (Loihi 2)")
    if isinstance(n, (ir.MatMul, ir.Mul)):
        return "expand the product into coincidence neurons, or run its consumers on the host too"
    if isinstance(n, ir.Neuron):
        return "retrain with binary spikes (output='binary') or deploy on a chip with graded spikes (Loihi 2)"
    if isinstance(n, ir.Sum):
        return "fold the reduction into the consumer's synapses, or run it on the host"
    return "send binary spikes only, or deploy on a chip with graded spikes (Loihi 2)"


def _graded_spikes(c: Context) -> list[Diagnostic]:
    t, m, out = c.target, c.mapping, []
    graded, cap = t.limit("graded_spikes"), t.limit("spike_payload_bits")
    readers: dict[str, list[str]] = {}
    for L in m.layers:
        for s in L.sources:
            v, s = m.values[s], m.origin.get(s, s)
            if v["kind"] in ("graded", "host") and (not graded or payload_bits(v) > cap):
                readers.setdefault(s, []).append(L.name)
    for s, who in readers.items():
        v, bits = m.values[s], payload_bits(m.values[s])
        lo = f"-{v['vmax']}" if v.get("signed") else "0"
        rng = f"{lo}..{v['vmax']}" if v["vmax"] is not None else "non-binary values"
        why = "has no graded spikes (binary only)" if not graded else f"carries at most {cap}-bit spikes"
        out.append(Diagnostic("graded-spikes", s, f"{s} sends {rng} ({bits}-bit) to on-chip layer(s) "
                              f"{', '.join(who)}; {t.name} {why}", bits, cap, _graded_hint(c.graph[s], t)))
    return out


def _live_products(c: Context) -> list[Diagnostic]:
    out = []
    for o in c.mapping.off_core:
        if o.op not in ("MatMul", "Mul"):
            continue
        e = o.expansion
        alt = (f"expand into {e['how']}: {e['neurons']} neurons, {e['synapses']} synapses, {e['cores']} core(s)"
               + ("" if e["possible"] else f" (not possible on {c.target.name}: needs graded spikes and "
                                           f"programmable neurons)"))
        out.append(Diagnostic("live-spike-product", o.node, f"{o.how} is not a synapse: {o.ops_per_step} "
                              f"{o.cost_unit} per step", o.ops_per_step, None,
                              f"run on embedded/host cores ({o.ops_per_step} {o.cost_unit}/step) or {alt}", "warning"))
    return out


def _embedded_ops(c: Context) -> list[Diagnostic]:
    """The seed attention ops (ReLU, Shiftmax, TemporalBlockSum) run on the embedded cores with their
    cost per step; the block sum also needs its buffer and delays its consumers by ``block - 1`` steps."""
    out = []
    for o in c.mapping.off_core:
        if o.op not in ("ReLU", "Shiftmax", "TemporalBlockSum"):
            continue
        msg = f"{o.how} runs on the embedded cores: {o.ops_per_step} {o.cost_unit} per step"
        hint = f"expected for {o.op} (no neuro-core form); budget {o.ops_per_step} {o.cost_unit}/step"
        value = o.ops_per_step
        if o.buffer:
            b = o.buffer
            msg += (f"; a block accumulator of {b['buffer_elements']} elements, and its consumers wait "
                    f"{b['latency_steps']} step(s) (latency) for each block of {b['block']}")
            hint = (f"buffer {b['buffer_elements']} elements on the embedded core; Lava streams it with a latency of "
                    f"{b['latency_steps']} step(s) (the other branches are delayed to match), or use block=1")
        out.append(Diagnostic("embedded-op", o.node, msg, value, None, hint, "warning"))
    return out


def _shiftmax_neuron(g: ir.Graph, sm: ir.Node) -> tuple[Optional[ir.Neuron], float]:
    """The neuron a Shiftmax's probabilities reach through ``MatMul`` (its other operand spikes:
    scale 1) and layout ops, and the constant those MatMuls divide by (their ``scale``)."""
    name, div = sm.name, 1.0
    while True:
        users = g.consumers(name)
        if len(users) != 1:
            return None, div
        u = users[0]
        if isinstance(u, ir.Neuron):
            return u, div
        if isinstance(u, ir.MatMul):
            div *= float(u.scale)
        elif not isinstance(u, (ir.Reshape, ir.Transpose, ir.Flatten)):
            return None, div
        name = u.name


def _shiftmax_scale(c: Context) -> list[Diagnostic]:
    """A Shiftmax's exact integer scale ``2^(F + ceil(log2 n))`` reaches the attention neuron's
    threshold ``θ · τ · scale`` (17-bit mantissa on Loihi): too large a ``frac_bits`` cannot deploy."""
    out, shapes = [], c.graph.infer_shapes()
    top = (1 << fx.VTH_BITS) - 1
    for n in c.graph.topo_order():
        if not isinstance(n, ir.Shiftmax):
            continue
        neuron, div = _shiftmax_neuron(c.graph, n)
        if neuron is None:
            continue
        bits = n.out_frac_bits(tuple(shapes[n.inputs[0]]))
        tau = float(neuron.tau) if neuron.decay_input and neuron.kind != "IF" else 1.0
        vth = float(neuron.v_threshold) * tau * 2.0 ** bits / div
        if vth <= top:
            continue
        over = math.ceil(math.log2(vth / top))
        fits = int(n.frac_bits) - over
        out.append(Diagnostic("shiftmax-scale", n.name, f"Shiftmax(frac_bits={n.frac_bits}) over rows of "
                              f"{shapes[n.inputs[0]][n.axis]} has the exact integer scale 2^{bits}: {neuron.name}'s "
                              f"threshold mantissa {int(vth)} exceeds {c.target.name}'s {fx.VTH_BITS} bits", int(vth), top,
                              f"train with frac_bits <= {fits} (shiftmax_bits)" if fits >= 0 else
                              "shorten the score rows, or run the attention on the host"))
    return out


def _analog_input(c: Context) -> list[Diagnostic]:
    t, m, out = c.target, c.mapping, []
    for n in c.graph.inputs:
        if n.kind != "analog":
            continue
        size = math.prod(c.graph.infer_shapes()[n.name])
        host = [o for o in m.off_core if m.values[o.node].get("from_analog")]
        if t.limit("graded_spikes"):
            users = [L.name for L in m.layers if any(m.origin.get(s) == n.name for s in L.sources)]
            out.append(Diagnostic("analog-input", n.name, f"analog input ({size} values per step) is not spikes: "
                                  f"{t.name} takes it as graded spikes", ANALOG_INPUT_BITS, t.limit("spike_payload_bits"),
                                  f"handled by the Loihi export: the host quantizes the input to "
                                  f"{ANALOG_INPUT_BITS}-bit graded spikes (QuantizeInput, part of the golden model) for "
                                  f"{', '.join(users) or 'the first layer'}", "info"))
        else:
            cost = ", ".join(f"{o.node}: {o.ops_per_step} {o.cost_unit}" for o in host)
            out.append(Diagnostic("analog-input", n.name, f"analog input ({size} values per step) cannot enter "
                                  f"{t.name} (binary spikes only): the first layer runs on the host", ANALOG_INPUT_BITS,
                                  t.limit("spike_payload_bits"),
                                  f"host cost per step: {cost or 'none'}; or encode the input as spikes "
                                  f"(rate/threshold encoder) and retrain", "warning"))
    return out


def _gap_exact(n: ir.Neuron) -> bool:
    """The 'gap' tie strategy (``passes/quantize_loihi.py``) makes a stock ``>`` neuron fire exactly
    on ``>=`` when the membrane only halves (tau = 2) or does not decay (IF)."""
    return n.kind == "IF" or float(n.tau) == 2.0


def _threshold_compare(c: Context) -> list[Diagnostic]:
    """``info`` where the Loihi export makes the comparison exact (a custom ``>=`` neuron on a chip
    with programmable neurons, or the 'gap' strategy), ``warning`` where it cannot."""
    t, out = c.target, []
    builtin = t.limit("builtin_compare")
    for L in c.mapping.layers:
        n = c.graph[L.name]
        if not isinstance(n, ir.Neuron) or n.compare == builtin:
            continue
        msg = f"fires on v {n.compare} {n.v_threshold}; the built-in neuron fires on v {builtin} vth"
        if t.limit("programmable_neurons"):
            hint = (f"handled exactly by the Loihi export: a custom neuron that fires on v {n.compare} vth "
                    f"({t.name} neurons are programmable; Lava process FixedLIF, tie strategy 'ge')")
            sev = "info"
        elif _gap_exact(n):
            hint = (f"handled exactly by the Loihi export's 'gap' tie strategy: every input is scaled to a multiple "
                    f"of 2^(T-1), so the stock neuron's v > vth - 1 equals v >= vth for up to T steps (costs T-1 "
                    f"state bits)")
            sev = "info"
        else:
            hint = (f"{t.name} neurons are not programmable and tau = {n.tau} defeats the 'gap' strategy: "
                    f"reachable v can equal the threshold, so spikes can differ from the model; retrain with "
                    f"tau = 2 or deploy on a chip with programmable neurons (Loihi 2)")
            sev = "warning"
        out.append(Diagnostic("threshold-compare", n.name, msg, n.compare, builtin, hint, sev))
    return out


def _neuron_model(c: Context) -> list[Diagnostic]:
    """Neuron dynamics against the chip's neuron: ops with no integer form are errors everywhere;
    soft reset, ILIF/NILIF and ternary spikes need a programmable neuron (``info`` on Loihi 2, where
    the export builds them exactly; ``error`` on Loihi 1) and, for multi-level and ternary (signed
    2-bit) spikes, graded spikes wide enough; ``v_reset != 0`` is not built."""
    t, out = c.target, []
    prog, graded, cap = t.limit("programmable_neurons"), t.limit("graded_spikes"), t.limit("spike_payload_bits")
    on_chip = {L.name for L in c.mapping.layers}
    for n in c.graph.topo_order():
        if n.op in fx.NO_INTEGER_FORM:
            out.append(Diagnostic("neuron-model", n.name, f"{n.op} has no integer form for {t.name}: "
                                  f"{fx.NO_INTEGER_FORM[n.op]}", n.op, None, fx.NO_INTEGER_FORM_FIX))
            continue
        if not isinstance(n, ir.Neuron) or n.name not in on_chip:
            continue
        custom = fx.programmable_features(n)
        odd = [f"v_reset={n.v_reset}"] if n.v_reset != 0 else []
        if odd:
            out.append(Diagnostic("neuron-model", n.name, f"{', '.join(odd + custom)}: the built-in neuron resets "
                                  f"to 0 and sends binary spikes", ", ".join(odd + custom), "hard reset to 0, binary",
                                  "write a custom neuron (microcode); the Loihi export does not build this one" if prog
                                  else f"{t.name} neurons are not programmable: retrain with hard reset to 0 and "
                                       f"binary spikes", "warning" if prog else "error"))
            continue
        if not custom:
            continue
        bits = int(n.max_level).bit_length() if n.fire == "round" else 2 if n.output == "ternary" else 1
        if not prog:
            out.append(Diagnostic("neuron-model", n.name, f"{', '.join(custom)}: {t.name}'s built-in neuron resets to "
                                  f"0 and sends binary spikes (not programmable)", ", ".join(custom),
                                  "hard reset to 0, binary",
                                  "deploy on a chip with programmable neurons" + (" and graded spikes" if bits > 1 else "")
                                  + " (Loihi 2), or retrain with hard reset and binary threshold spikes (LIF/IF/PLIF)"))
        elif bits > 1 and (not graded or bits > cap):
            spikes = "ternary spikes -1/0/+1" if n.output == "ternary" else f"multi-level spikes 0..{n.max_level}"
            out.append(Diagnostic("neuron-model", n.name, f"{spikes} need {bits}-bit "
                                  f"graded spikes; {t.name} carries {cap if graded else 1}-bit spikes", bits,
                                  cap if graded else 1, f"lower max_level to at most {(1 << cap) - 1}" if graded
                                  else "deploy on a chip with graded spikes (Loihi 2)"))
        else:
            out.append(Diagnostic("neuron-model", n.name, f"{', '.join(custom)}: the built-in neuron resets to 0 "
                                  f"and sends binary spikes", ", ".join(custom), "hard reset to 0, binary",
                                  f"handled exactly by the Loihi export: a custom neuron ({t.name} neurons are "
                                  f"programmable; Lava process FixedLIF" + (
                                      f", {bits}-bit {'signed ' if n.output == 'ternary' else ''}graded spikes"
                                      if bits > 1 else "") + ")", "info"))
    return out


def _feeds_chip(g: ir.Graph, m, name: str) -> bool:
    """True when some node downstream of ``name`` runs on the neuro-cores."""
    seen, todo = set(), [name]
    while todo:
        for x in g.consumers(todo.pop()):
            if x.name not in seen:
                seen.add(x.name)
                if m.nodes[x.name]["layer"] is not None and m.nodes[x.name]["placement"] != "free":
                    return True
                todo.append(x.name)
    return False


def _off_core(c: Context) -> list[Diagnostic]:
    out, m = [], c.mapping
    for o in m.off_core:
        if o.op in ("MatMul", "Mul", "ReLU", "Shiftmax", "TemporalBlockSum") or m.values[o.node].get("from_analog"):
            continue
        at_end = not _feeds_chip(c.graph, m, o.node)
        out.append(Diagnostic("off-core", o.node, f"runs on the host: {o.how} ({o.ops_per_step} {o.cost_unit}/step)",
                              o.ops_per_step, None, "a readout after the chip: expected" if at_end else
                              "moves data chip -> host -> chip every step; keep it on-chip if possible",
                              "info" if at_end else "warning"))
    return out


def _delays(c: Context) -> list[Diagnostic]:
    lim, out = c.target.limit("max_synaptic_delay"), []
    for n in c.graph.topo_order():
        if isinstance(n, ir.Delay) and lim is not None and n.steps > lim:
            size = math.prod(c.graph.infer_shapes()[n.name])
            relays = math.ceil(n.steps / lim) - 1
            out.append(Diagnostic("synaptic-delay", n.name, f"delay of {n.steps} steps; synapses delay at most {lim}",
                                  n.steps, lim, f"chain {relays} relay layer(s) of {size} neurons (delay {lim} each)",
                                  "warning"))
    return out


def _unknown_limits(c: Context) -> list[Diagnostic]:
    return [Diagnostic("limit-unknown", None, f"{k} is unknown for {c.target.name}: not checked",
                       None, None, c.target.source(k), "info")
            for k in ("in_axons_per_core", "out_axons_per_core") if c.target.limit(k) is None]


RULES: list[Rule] = [
    Rule("neurons-per-core", "neurons on each core within the core's compartments",
         _per_core("neurons-per-core", "neurons", "neurons_per_core", "neurons",
                   lambda c, L: "split the layer over more cores (the mapper does this; a hand-made mapping is over)",
                   False)),
    Rule("synaptic-memory-per-core", "synapse lists (+ neuron state) fit a core's memory",
         _per_core("synaptic-memory-per-core", "memory_bits", "core_memory_bits", "memory bits", _memory_hint,
                   True)),
    Rule("fan-in-axons", "distinct presynaptic sources per core within the input-axon limit",
         _per_core("fan-in-axons", "in_axons", "in_axons_per_core", "input axons", _fan_in_hint, True)),
    Rule("fan-out-axons", "output axons (neuron -> destination core) per core within the limit",
         _per_core("fan-out-axons", "out_axons", "out_axons_per_core", "output axons",
                   lambda c, L: "put fewer neurons per core, or merge the consumers' tiles", False)),
    Rule("per-chip", "cores, neurons and synapses per chip (cores-per-chip, neurons-per-chip, synapses-per-chip)",
         _chip_rules),
    Rule("weight-precision", "weight mantissa widths the synapse format supports", _weight_precision),
    Rule("graded-spikes", "non-binary values between on-chip layers need graded spikes", _graded_spikes),
    Rule("live-spike-product", "MatMul/Mul of two live tensors is not a synapse", _live_products),
    Rule("embedded-op", "ReLU, Shiftmax and TemporalBlockSum run on the embedded cores (cost per step; the block "
         "sum's buffer and latency)", _embedded_ops),
    Rule("shiftmax-scale", "a Shiftmax's exact scale 2^(F + L) carried into the attention neuron's threshold fits "
         "its mantissa", _shiftmax_scale),
    Rule("analog-input", "an analog input is not spikes", _analog_input),
    Rule("threshold-compare", "the model's threshold comparison against the built-in neuron's", _threshold_compare),
    Rule("neuron-model", "reset mode, firing rule and spike alphabet the chip's neurons support (soft reset, "
         "ILIF/NILIF need programmable neurons; ops without an integer form are refused)", _neuron_model),
    Rule("synaptic-delay", "Delay nodes within the synaptic delay range", _delays),
    Rule("off-core", "other nodes that run on the host", _off_core),
    Rule("limit-unknown", "limits the target spec does not know", _unknown_limits),
]


def check_target(graph: ir.Graph, target: TargetSpec | str, mapping=None, weight_bits: WeightBits = None,
                 rules: list[Rule] = RULES) -> list[Diagnostic]:
    """Map (unless ``mapping`` is given) and run every rule; ``weight_bits`` is an int or {node: bits}."""
    from .mapping import map_to_cores

    target = load_target(target)
    if target.kind != "neuromorphic":
        raise TargetSpecError(target.path or target.name, [f"{target.name} is a {target.kind} spec; the constraint "
                                                           f"rules check neuromorphic chips (e.g. loihi2, loihi1)"])
    if mapping is None:
        default = weight_bits if isinstance(weight_bits, int) else 8
        mapping = map_to_cores(graph, target, default)
    elif mapping.target != target.name:
        raise ValueError(f"the mapping was made for {mapping.target!r}, not for {target.name!r}: map again")
    ctx = Context(graph, target, mapping, weight_bits)
    diags: list[Diagnostic] = []
    for rule in rules:
        diags.extend(rule.check(ctx))
    return diags
