"""Reports of a mapping and its diagnostics: a fixed-width table for the terminal, Markdown for
files, and a JSON-serialisable dict (deterministic order: graph order, then rule order)."""
from __future__ import annotations

from ..ir.diagnostics import Diagnostic

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}

MEMORY_MODEL = [
    "cores are not shared between layers (one layer tile per core, as NengoLoihi places one block per core)",
    "a layer is cut into equal tiles (rows x outputs for Linear, channels x rows x cols for conv); the tile "
    "with the fewest cores that keeps every per-core resource within its limit is chosen",
    "synapses (unshared) = neurons x fan-in, fan-in = C_in/groups x kH x kW for conv (padding taps counted: "
    "an upper bound), in_features for Linear",
    "stored entries: every synapse without weight sharing; with weight_sharing, a conv kernel slice or a "
    "Linear weight slice is stored once per core",
    "memory bits: one synapse list per input axon (or per shared kernel row), blocks of synapse_block_size "
    "entries + synapse_block_overhead_bits, rounded up to synapse_word_bits (NengoLoihi bits_per_axon); an "
    "entry is weight_bits, plus index bits for an 'indexed' encoding; plus neurons x neuron_state_bits",
    "input axons = distinct presynaptic sources of the tile; output axons = neurons x destination cores",
    "graded payload = ceil(log2(max value + 1)) bits; an analog input is assumed quantized to 8 bits",
]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=lambda d: SEVERITY_ORDER.get(d.severity, 3))  # stable: keeps rule/graph order


def _groups(diags: list[Diagnostic], group: bool) -> list[list[Diagnostic]]:
    """Diagnostics with the same severity, rule and fix, in first-seen order (one per row if not group)."""
    if not group:
        return [[d] for d in _sorted(diags)]
    out: dict[tuple, list[Diagnostic]] = {}
    for d in _sorted(diags):
        out.setdefault((d.severity, d.rule, d.hint if d.node else id(d)), []).append(d)
    return list(out.values())


def diagnostics_table(diags: list[Diagnostic], width: int = 110, group: bool = True) -> str:
    """Fixed-width table: severity, rule, node, value, limit, then message and fix lines. With
    ``group``, diagnostics of one rule with the same fix share a row that lists the other nodes."""
    if not diags:
        return "no diagnostics: the graph maps onto the target as is"
    groups = _groups(diags, group)
    rows = [(g[0].severity, g[0].rule, g[0].node or "-", _fmt(g[0].value), _fmt(g[0].limit)) for g in groups]
    heads = ("SEVERITY", "RULE", "NODE", "VALUE", "LIMIT")
    w = [min(40, max(len(h), *(len(r[i]) for r in rows))) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c[:w[i]].ljust(w[i]) for i, c in enumerate(cells)).rstrip()  # noqa: E731
    out = [line(heads), line(tuple("-" * x for x in w))]
    for r, g in zip(rows, groups):
        d = g[0]
        out.append(line(r))
        out.extend(_wrap("    ", d.message, width))
        if d.hint:
            out.extend(_wrap("    fix: ", d.hint, width))
        if len(g) > 1:
            out.extend(_wrap("    same for: ", same_for(g), width))
    n = {s: sum(d.severity == s for d in diags) for s in SEVERITY_ORDER}
    out.append(f"{n['error']} error(s), {n['warning']} warning(s), {n['info']} info")
    return "\n".join(out)


#: rules whose diagnostics name a single node rather than a layer on the cores
_NODE_RULES = ("off-core", "live-spike-product", "graded-spikes", "analog-input", "synaptic-delay")


def same_for(group: list[Diagnostic]) -> str:
    """``18 more layers (19 layers in all): a, b, ...`` for a group sharing one table row."""
    d = group[0]
    noun = "nodes" if d.rule in _NODE_RULES else "layers"
    others = ", ".join(x.node + (f" ({_fmt(x.value)})" if x.value != d.value else "") for x in group[1:])
    more = len(group) - 1
    return f"{more} more {noun[:-1] if more == 1 else noun} ({len(group)} {noun} in all): {others}"


def _wrap(prefix: str, text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], prefix
    for wd in words:
        if len(cur) + len(wd) + 1 > width and cur.strip() != prefix.strip():
            lines.append(cur.rstrip())
            cur = " " * len(prefix)
        cur += wd + " "
    lines.append(cur.rstrip())
    return lines


def _layer_dict(L) -> dict:
    return {"name": L.name, "role": L.role, "nodes": list(L.nodes), "sources": list(L.sources),
            "shape": list(L.shape), "neurons": L.neurons, "fan_in": L.fan_in, "synapses": L.synapses,
            "stored_synapses": L.stored, "cores": L.cores, "tile": list(L.tile), "binding": L.binding,
            "infeasible": list(L.infeasible), "per_core": dict(L.per_core), "payload_bits_in": L.payload_in,
            "out_axons_per_neuron": L.out_axons_per_neuron, "note": L.note}


def report_dict(mapping, diags: list[Diagnostic], target=None) -> dict:
    """JSON-serialisable report: totals, layers, off-core nodes, every node's placement, diagnostics."""
    m = mapping
    out = {
        "target": m.target,
        "weight_bits": m.weight_bits,
        "totals": {"cores": m.total_cores, "chips": m.chips, "cores_per_chip": m.cores_per_chip,
                   "neurons": m.neurons, "synapses_unshared": m.synapses, "synapses_stored": m.stored_synapses,
                   "off_core_ops_per_step": m.off_core_ops, "layers": len(m.layers), "off_core_nodes": len(m.off_core)},
        "layers": [_layer_dict(L) for L in m.layers],
        "off_core": [{"node": o.node, "op": o.op, "placement": o.placement, "how": o.how,
                      "ops_per_step": o.ops_per_step, "cost_unit": o.cost_unit, "expansion": o.expansion,
                      **({"buffer": dict(o.buffer)} if o.buffer else {})}
                     for o in m.off_core],
        "nodes": {k: dict(v) for k, v in m.nodes.items()},
        "diagnostics": [d.as_dict() for d in diags],
        "summary": {s: sum(d.severity == s for d in diags) for s in SEVERITY_ORDER},
        "memory_model": list(MEMORY_MODEL),
    }
    if target is not None:
        out["limits"] = target.as_dict()["limits"]
    return out


def report_markdown(mapping, diags: list[Diagnostic], target=None) -> str:
    """Markdown report: totals, a table of layers, what does not map, diagnostics, the memory model."""
    m = mapping
    s = [f"# Mapping onto {m.target}", "",
         f"- **{m.total_cores} neuro-cores** on **{m.chips} chip(s)** ({m.cores_per_chip} cores per chip), "
         f"{len(m.layers)} layers, weights {m.weight_bits}-bit",
         f"- {m.neurons} neurons, {m.synapses} synapses unshared ({m.stored_synapses} stored entries)",
         f"- off the neuro-cores: {len(m.off_core)} nodes, {m.off_core_ops} ops per step", "",
         "## Layers", "",
         "| layer | role | neurons | fan-in | synapses | cores | bound by | neurons/core | in-axons/core | "
         "memory KiB/core |", "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for L in m.layers:
        pc = L.per_core
        bound = L.binding + (" **(over)**" if L.infeasible else "")
        s.append(f"| {L.name} | {L.role} | {L.neurons} | {L.fan_in} | {L.synapses} | {L.cores} | {bound} | "
                 f"{pc['neurons']} | {pc['in_axons']} | {pc['memory_bits'] / 8192:.1f} |")
    s += ["", "## Not on the neuro-cores", ""]
    if m.off_core:
        s += ["| node | op | where | why | cost per step | expanded into neurons |", "|---|---|---|---|---|---|"]
        for o in m.off_core:
            e = o.expansion
            alt = (f"{e['neurons']} neurons, {e['synapses']} synapses, {e['cores']} cores"
                   + ("" if e["possible"] else " (not on this target)")) if e else "-"
            if o.buffer:
                alt = (f"buffer of {o.buffer['buffer_elements']} elements, latency {o.buffer['latency_steps']} "
                       f"step(s)")
            s.append(f"| {o.node} | {o.op} | {o.placement} | {o.how} | {o.ops_per_step} {o.cost_unit} | {alt} |")
    else:
        s.append("everything maps onto neuro-cores.")
    s += ["", "## Diagnostics", "", "```", diagnostics_table(diags), "```", "", "## Memory model (assumptions)", ""]
    s += [f"- {x}" for x in MEMORY_MODEL]
    if target is not None:
        s += ["", "## Limits used", "", "| key | value | unit | confidence | source |", "|---|---|---|---|---|"]
        for k, e in target.limits.items():
            s.append(f"| {k} | {_fmt(e.value)} | {e.unit} | {e.confidence} | {e.source} |")
    return "\n".join(s) + "\n"
