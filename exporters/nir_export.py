"""NIR exporter: IR graph -> ``nir.NIRGraph`` (NIR 1.0.8) + a coverage report.

Standard NIR nodes are used wherever NIR has one; ops NIR lacks become step-deploy extensions
(see :mod:`.nir_extensions` and docs/nir.md). Discretization (derived in docs/nir.md): NIR's
``tau dv/dt = (v_leak - v) + r I`` under forward Euler at step ``dt`` equals the IR's LIF
``H = V + (X - (V - v_reset))/tau`` with ``tau_nir = tau·dt``, ``r = 1``, ``v_leak = v_reset``
(``r = tau`` without decay_input); IF ``dv/dt = r I`` with ``r = 1/dt``. NIR fires on
``v > v_threshold``; a ``>=`` neuron is written with the threshold nudged one float32 ulp down
(``threshold="nudge"``, exact for float32 membranes) or unchanged (``threshold="keep"``).

API: :func:`export_nir`, :func:`write_nir`, :func:`coverage_markdown` (reading back: ``nir_read.read_nir_as_ir``),
:data:`IMPORTER_SETTINGS`, :func:`fixup_snntorch`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Union

import numpy as np

from step_deploy import ir

from . import nir_extensions as ext

#: IR ops whose NIR node sums its in-edges before acting on them (where an Add may become edges)
SUMMING_OPS = ("Conv1d", "Conv2d", "Linear", "Scale", "Neuron")
#: IR ops written as standard NIR 1.0.8 nodes (Linear: on a 1-D input, or tiled; Neuron: hard reset, binary)
STANDARD_OPS = ("Input", "Output", "Conv1d", "Conv2d", "Linear", "Flatten", "AvgPool2d", "Scale", "Delay", "Neuron")
#: the backend's op set: standard nodes, step-deploy extension nodes (``nir_extensions.EXTENSION_OPS``)
NIR_BACKEND = ir.register_backend("nir", set(STANDARD_OPS) | set(ext.EXTENSION_OPS), kind="float",
                                  where="exporters/nir_export.py",
                                  hint="NIR takes float graphs (quantized graphs go to the golden model or Lava)")
#: ops of the STEP neuron zoo that NIR 1.0.8 cannot express: why each is an extension
_ZOO_REASONS = {
    "KLIFNeuron": "KLIF's learned gain and rectifier (relu(k·H)) before firing are not expressible in NIR 1.0.8",
    "EIFNeuron": "EIF's exponential term is not expressible in NIR 1.0.8 (CubaLIF/LIF are linear)",
    "CLIFNeuron": "CLIF's complementary memory (sigmoid gates on a second state) is not expressible in NIR 1.0.8",
    "GLIFNeuron": "GLIF's per-step learned parameters and gates are not expressible in NIR 1.0.8 (constant tau, "
                  "v_threshold only)",
    "TemporalLinear": "a linear map across the T time steps (PSN, non-causal: needs a T-step buffer); NIR 1.0.8 "
                      "nodes act per time step",
    "Heaviside": "NIR 1.0.8 has no stateless threshold node (every spiking node integrates)",
    "ReLU": "NIR 1.0.8 has no rectifier (A²OS²A's real-valued K is not a spike)",
    "Shiftmax": "NIR 1.0.8 has no row-wise normalisation (bipolar self-attention's shift-based softmax)",
    "TemporalBlockSum": "a sum over a block of time steps (STAtten, non-causal inside a block: needs a buffer of the "
                        "block); NIR 1.0.8 nodes act per time step",
}
THRESHOLD_MODES = ("nudge", "keep")
AVGPOOL_MODES = ("avgpool", "conv")


def _f32(shape, value) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def nudged_threshold(theta: float) -> np.float32:
    """The float32 just below ``float32(theta)``: for float32 ``v``, ``v > nudged`` iff ``v >= theta``."""
    return np.nextafter(np.float32(theta), np.float32(-np.inf))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _dense_groups(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight ``(C_out, C_in/g, k...)`` as the equivalent dense ``(C_out, C_in, k...)``."""
    if groups == 1:
        return w
    co, cig = w.shape[:2]
    dense = np.zeros((co, cig * groups) + w.shape[2:], dtype=w.dtype)
    opg = co // groups
    for g in range(groups):
        dense[g * opg:(g + 1) * opg, g * cig:(g + 1) * cig] = w[g * opg:(g + 1) * opg]
    return dense


class _Exporter:
    def __init__(self, graph: ir.Graph, dt: float, threshold: str, avgpool: str, tile_linear: bool):
        import nir

        if not dt > 0:
            raise ValueError(f"NIR export: dt must be positive, got {dt}")
        if threshold not in THRESHOLD_MODES:
            raise ValueError(f"NIR export: threshold={threshold!r}, expected one of {THRESHOLD_MODES}")
        if avgpool not in AVGPOOL_MODES:
            raise ValueError(f"NIR export: avgpool={avgpool!r}, expected one of {AVGPOOL_MODES}")
        self.nir, self.g, self.dt = nir, graph, float(dt)
        self.threshold, self.avgpool, self.tile_linear = threshold, avgpool, tile_linear
        self.shapes = graph.infer_shapes()
        self.order = graph.topo_order()
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.rows: dict[str, dict] = {}
        self.notes: list[str] = []
        self.names: dict[str, str] = {}
        used: set[str] = set()
        for n in graph.nodes.values():  # NIR names: IR names, '/' (an HDF5 path separator) replaced
            cand = n.name.replace("/", "|")
            while cand in used:
                cand += "_"
            used.add(cand)
            self.names[n.name] = cand
        self.used = used

    # ------------------------------------------------------------------ planning
    def _fresh(self, base: str) -> str:
        name = base
        while name in self.used:
            name += "_"
        self.used.add(name)
        return name

    def standard_reason(self, n: ir.Node) -> Optional[str]:
        """None if ``n`` maps to a standard NIR node, else why it needs an extension."""
        if n.op in _ZOO_REASONS:
            return _ZOO_REASONS[n.op]
        if isinstance(n, ir.Neuron):
            if n.fire == "round_normalized":
                return "NILIF's normalized rounding (round(clamp(H/θ, 0, D)/D)) is not expressible in NIR 1.0.8"
            if n.reset != "hard":
                return "soft reset (V -= V_th) is not expressible in NIR 1.0.8 (only v_reset)"
            if n.output != "binary":
                return f"{n.output} spikes are not expressible in NIR 1.0.8 (binary spikes only)"
            return None
        if isinstance(n, ir.Linear):
            rank = len(self.shapes[n.inputs[0]])
            if rank != 1 and not self.tile_linear:
                return (f"Linear over a rank-{rank} input: NIR's Affine types a 1-D input, so a standard node would "
                        "need the weight tiled per row (tile_linear=True)")
            return None
        if n.op in STANDARD_OPS:
            return None
        if isinstance(n, ir.BatchNorm):
            return "NIR has no BatchNorm: run the fold-batchnorm pass (this one could not be folded or was not)"
        if isinstance(n, ir.Add):
            return "Add whose consumers are not all synapses/neurons (NIR sums in-edges only into a node's input)"
        return f"NIR 1.0.8 has no {n.op}"

    def plan_adds(self) -> set[str]:
        """Adds that become plain edges: every consumer is a standard summing node or such an Add,
        and no consumer receives the same source twice (NIR forbids duplicate edges)."""
        std = {n.name for n in self.order if self.standard_reason(n) is None}
        cand = {n.name for n in self.order if isinstance(n, ir.Add)}
        while True:
            drop = set()
            for a in cand:
                cons = self.g.consumers(a)
                if not cons or any(not ((c.op in SUMMING_OPS and c.name in std) or c.name in cand) for c in cons):
                    drop.add(a)
            for c in self.order:  # duplicate sources after expansion
                if c.op in SUMMING_OPS and any(i in cand for i in c.inputs):
                    srcs = self._sources(c.inputs, cand)
                    if len(srcs) != len(set(srcs)):
                        drop |= self._adds_under(c.inputs, cand)
            if not drop & cand:
                return cand
            cand -= drop

    def _sources(self, names, absorbed) -> list[str]:
        out = []
        for i in names:
            out += self._sources(self.g[i].inputs, absorbed) if i in absorbed else [i]
        return out

    def _adds_under(self, names, absorbed) -> set[str]:
        out = set()
        for i in names:
            if i in absorbed:
                out |= {i} | self._adds_under(self.g[i].inputs, absorbed)
        return out

    # ------------------------------------------------------------------ emitting
    def row(self, n: ir.Node, status: str, nir_types: list[str], detail: str = "") -> None:
        self.rows[n.name] = {"name": n.name, "op": n.op, "status": status, "nir": nir_types, "detail": detail}

    def connect(self, ir_inputs, target: str) -> None:
        for s in self._sources(ir_inputs, self.absorbed):
            self.edges.append((self.names[s], target))

    def run(self):
        nir = self.nir
        self.absorbed = self.plan_adds()
        for n in self.order:
            name, shape = self.names[n.name], self.shapes[n.name]
            if n.name in self.absorbed:
                self.row(n, "absorbed", [], "became in-edges of its consumers (NIR sums a node's in-edges)")
                continue
            reason = self.standard_reason(n)
            if reason is None:
                node, rec_extra, arrays, detail = self.standard(n, shape)
                rec = ext.node_record(n, {"Input": ext.ROLE_INPUT, "Output": ext.ROLE_OUTPUT}.get(n.op, ext.ROLE_STANDARD),
                                      **rec_extra)
                node.metadata = ext.encode(rec, arrays)
                self.nodes[name] = node
                self.connect(n.inputs, name)
                self.row(n, "standard", [type(node).__name__], detail)
            else:
                ports = []
                for k, i in enumerate(n.inputs):
                    port = self._fresh(ext.port_name(name, k))
                    ports.append(port)
                    in_shape = np.array(self.shapes[i], dtype=np.int64)
                    self.nodes[port] = nir.Output(in_shape, metadata=ext.encode(
                        {"role": ext.ROLE_OPERAND, "of": n.name, "index": k}))
                    self.connect((i,), port)
                rec = ext.node_record(n, ext.ROLE_EXTENSION, operands=ports)
                self.nodes[name] = nir.Input(np.array(shape, dtype=np.int64),
                                             metadata=ext.encode(rec, ext.array_params(n)))
                self.row(n, "extension", ["Input"] + ["Output"] * len(ports), reason)
            if n.op != "Output" and not self.g.consumers(n.name):
                sink = self._fresh(f"{name}.unused")
                self.nodes[sink] = nir.Output(np.array(shape, dtype=np.int64),
                                              metadata=ext.encode({"role": ext.ROLE_SINK, "of": n.name}))
                self.edges.append((name, sink))
        meta = {"format": ext.FORMAT, "format_version": ext.FORMAT_VERSION, "dt": self.dt,
                "threshold": self.threshold, "avgpool": self.avgpool, "tile_linear": self.tile_linear,
                "absorbed_adds": {a: list(self.g[a].inputs) for a in sorted(self.absorbed)},
                "node_order": list(self.g.nodes), "ir_metadata": self.g.metadata}
        graph_meta = {ext.META_KEY: ext.dumps(meta), "conventions": conventions_text(self.dt, self.threshold)}
        expected = set(self.nodes)
        graph = nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=graph_meta, type_check=True)
        added = set(graph.nodes) - expected
        if added:  # pragma: no cover - guarded by the sinks above
            raise RuntimeError(f"NIR type inference added nodes {sorted(added)}; the export is incomplete")
        return graph, self.coverage()

    def standard(self, n: ir.Node, shape):
        """``(nir_node, record_extra, metadata_arrays, detail)`` for a standard-mapped IR node."""
        nir, dt = self.nir, self.dt
        in_shape = self.shapes[n.inputs[0]] if n.inputs else None
        if isinstance(n, ir.Input):
            return nir.Input(np.array(shape, dtype=np.int64)), {}, {}, ""
        if isinstance(n, ir.Output):
            return nir.Output(np.array(shape, dtype=np.int64)), {}, {}, ""
        if isinstance(n, (ir.Conv2d, ir.Conv1d)):
            w = _dense_groups(n.weight, n.groups)
            b = n.bias if n.bias is not None else np.zeros(w.shape[0], dtype=w.dtype)
            detail = f"groups={n.groups} expanded to a dense weight (NIR 1.0.8 type-checks convs as ungrouped)" \
                if n.groups > 1 else ""
            if isinstance(n, ir.Conv2d):
                node = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=tuple(n.stride),
                                  padding=tuple(n.padding), dilation=tuple(n.dilation), groups=1, bias=b)
            else:
                node = nir.Conv1d(input_shape=int(in_shape[1]), weight=w, stride=int(n.stride),
                                  padding=int(n.padding), dilation=int(n.dilation), groups=1, bias=b)
            return node, {}, {}, detail
        if isinstance(n, ir.Linear):
            lead = tuple(in_shape[:-1])
            w = np.ascontiguousarray(np.broadcast_to(n.weight, lead + n.weight.shape))
            detail = f"weight tiled over leading axes {lead}" if lead else ""
            if n.bias is None:
                return nir.Linear(weight=w), {"tiled": list(lead)}, {}, detail
            b = np.ascontiguousarray(np.broadcast_to(n.bias, lead + n.bias.shape))
            return nir.Affine(weight=w, bias=b), {"tiled": list(lead)}, {}, detail
        if isinstance(n, ir.Flatten):
            r = len(in_shape)
            s, e = n.start_dim % r - r, n.end_dim % r - r  # negative dims: the same with or without a batch axis
            return nir.Flatten(input_type={"input": np.array(in_shape, dtype=np.int64)}, start_dim=s, end_dim=e), {}, {}, \
                "dims written negative (importers add a batch axis)"
        if isinstance(n, ir.AvgPool2d):
            k, s, p = (np.array(_pair(v), dtype=np.int64) for v in (n.kernel_size, n.stride, n.padding))
            if self.avgpool == "avgpool":
                return nir.AvgPool2d(kernel_size=k, stride=s, padding=p), {}, {}, ""
            c = in_shape[0]
            w = np.zeros((c, c, int(k[0]), int(k[1])), dtype=np.float32)
            w[np.arange(c), np.arange(c)] = np.float32(1.0 / (k[0] * k[1]))
            node = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=tuple(int(v) for v in s),
                              padding=tuple(int(v) for v in p), dilation=(1, 1), groups=1,
                              bias=np.zeros(c, dtype=np.float32))
            return node, {"lowered": "conv"}, {}, "lowered to a Conv2d with 1/(kH·kW) on the channel diagonal (avgpool='conv')"
        if isinstance(n, ir.Scale):
            return nir.Scale(scale=_f32(shape, n.factor)), {}, {}, ""
        if isinstance(n, ir.Delay):
            return nir.Delay(delay=_f32(shape, n.steps * dt)), {}, {}, f"delay = steps·dt = {n.steps * dt:g}"
        if isinstance(n, ir.Neuron):
            return self.neuron(n, shape)
        raise AssertionError(n.op)  # pragma: no cover

    def neuron(self, n: ir.Neuron, shape):
        nir, dt = self.nir, self.dt
        nudge = n.compare == ">=" and self.threshold == "nudge"
        thr = nudged_threshold(n.v_threshold) if nudge else np.float32(n.v_threshold)
        extra = {"threshold_encoding": "nudged" if nudge else "exact"}
        detail = ("v_threshold nudged one float32 ulp down (>= as >)" if nudge else
                  "fires on > v_threshold in NIR but >= in the IR" if n.compare == ">=" else "")
        if n.kind == "IF":
            node = nir.IF(r=_f32(shape, 1.0 / dt), v_threshold=_f32(shape, thr), v_reset=_f32(shape, n.v_reset))
        else:
            node = nir.LIF(tau=_f32(shape, n.tau * dt), r=_f32(shape, 1.0 if n.decay_input else n.tau),
                           v_leak=_f32(shape, n.v_reset), v_threshold=_f32(shape, thr), v_reset=_f32(shape, n.v_reset))
        return node, extra, {}, detail

    # ------------------------------------------------------------------ report
    def coverage(self) -> dict:
        import nir

        rows = [self.rows[n.name] for n in self.order]
        counts = Counter(r["status"] for r in rows)
        by_op: dict[str, dict[str, int]] = {}
        for r in rows:
            by_op.setdefault(r["op"], {"standard": 0, "extension": 0, "absorbed": 0})[r["status"]] += 1
        neurons = [n for n in self.order if isinstance(n, ir.Neuron) and self.rows[n.name]["status"] == "standard"]
        ge = [n for n in neurons if n.compare == ">="]
        notes = [f"NIR has no time step; this file assumes dt={self.dt:g} per IR step (graph metadata). Forward "
                 "Euler at dt reproduces the IR: LIF tau=tau_ir·dt, r=1 (r=tau_ir without decay_input), "
                 "v_leak=v_reset; IF r=1/dt."]
        if ge:
            notes.append(f"{len(ge)} neuron layer(s) fire on >= (STEP) but NIR fires on >: " + (
                "v_threshold written as the float32 just below θ (exact for float32 membranes)."
                if self.threshold == "nudge" else "v_threshold written unchanged; a NIR backend will miss exact ties."))
        if neurons:
            notes.append("Reset: hard reset maps to NIR v_reset. Initial membrane: the IR starts at V=v_reset "
                         "(NIR does not say; Norse LIF starts at v_leak=v_reset, snnTorch at 0).")
        for n in self.order:
            if (isinstance(n, ir.Neuron) or n.op in _ZOO_REASONS) and self.rows[n.name]["status"] == "extension":
                notes.append(f"{n.name}: {self.rows[n.name]['detail']}; exported as extension '{n.op}'.")
        if self.absorbed:
            notes.append(f"{len(self.absorbed)} Add node(s) became several in-edges (NIR sums a node's in-edges).")
        if any(r["status"] == "extension" for r in rows):
            notes.append("Extensions are cuts: operands leave through Output nodes '<op>.in<k>', the result "
                         "re-enters through an Input node named after the op; a standard NIR backend sees "
                         "separate sub-networks and cannot run the file end to end.")
        if any(isinstance(n, ir.BatchNorm) for n in self.order):
            notes.append("Unfolded BatchNorm exported as an extension: run the fold-batchnorm pass first.")
        return {"target": "nir", "nir_version": nir.version, "format": f"{ext.FORMAT}/{ext.FORMAT_VERSION}",
                "dt": self.dt, "threshold": self.threshold, "nodes": rows,
                "counts": {"standard": counts["standard"], "extension": counts["extension"],
                           "absorbed": counts["absorbed"], "total": len(rows)},
                "by_op": dict(sorted(by_op.items())),
                "extension_ops": sorted({r["op"] for r in rows if r["status"] == "extension"}),
                "semantic_notes": notes}


def conventions_text(dt: float, threshold: str) -> str:
    return (f"step-deploy NIR export. One IR step = dt = {dt:g} time units; forward Euler. "
            "LIF: tau = tau_ir*dt, r = 1, v_leak = v_reset. IF: r = 1/dt. Spikes: "
            + ("v > v_threshold where v_threshold = nextafter(theta, -inf) in float32 for neurons that fire on >= theta. "
               if threshold == "nudge" else "v > v_threshold (the IR's >= neurons keep theta: ties differ). ")
            + "Extensions: see step_deploy docs/nir.md; metadata key 'step_deploy'.")


def export_nir(graph: ir.Graph, dt: float = 1.0, *, threshold: str = "nudge", avgpool: str = "avgpool",
               tile_linear: bool = False, allow_extensions: bool = True):
    """Export an IR graph to a ``nir.NIRGraph``; returns ``(nir_graph, coverage)``.

    ``dt``: time units per IR step (snnTorch's importer assumes 1e-4, Norse's default 1e-3; see
    :data:`IMPORTER_SETTINGS`). ``threshold``: ``'nudge'`` or ``'keep'`` for ``>=`` neurons.
    ``avgpool``: ``'avgpool'`` (nir.AvgPool2d) or ``'conv'`` (a Conv2d; for importers without
    AvgPool2d, e.g. Norse). ``tile_linear``: write Linear on rank>1 inputs as a standard Affine
    with the weight tiled per row instead of an extension. ``allow_extensions=False`` raises a
    ValueError naming every node that NIR cannot express. An op neither standard nor an extension
    raises ``ir.UnsupportedOpError`` before any work."""
    ir.require_ops(graph, NIR_BACKEND)
    ex = _Exporter(graph, dt, threshold, avgpool, tile_linear)
    if not allow_extensions:
        absorbed = ex.plan_adds()
        bad = [(n.name, ex.standard_reason(n)) for n in ex.order
               if n.name not in absorbed and ex.standard_reason(n) is not None]
        if bad:
            raise ValueError("NIR export (allow_extensions=False): these nodes have no standard NIR form:\n"
                             + "\n".join(f"  {name}: {why}" for name, why in bad))
    return ex.run()


def write_nir(graph: ir.Graph, path: Union[str, Path], dt: float = 1.0, **options) -> dict:
    """Export and write with ``nir.write`` (HDF5, gzip); returns the coverage report. The bytes are
    the same for the same graph and options (checked in tests)."""
    import nir

    nir_graph, coverage = export_nir(graph, dt, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, nir_graph)
    coverage["path"] = str(path)
    return coverage


def coverage_markdown(coverage: dict) -> str:
    """The coverage report as Markdown (counts, per-op table, per-node extensions, notes)."""
    c = coverage["counts"]
    lines = [f"# NIR export coverage (NIR {coverage['nir_version']}, {coverage['format']}, dt={coverage['dt']:g})", "",
             f"{c['total']} IR nodes: {c['standard']} standard NIR, {c['extension']} extension, "
             f"{c['absorbed']} absorbed into edges.", "", "| op | standard | extension | absorbed |", "|---|---|---|---|"]
    for op, k in coverage["by_op"].items():
        lines.append(f"| {op} | {k['standard']} | {k['extension']} | {k['absorbed']} |")
    exts = [r for r in coverage["nodes"] if r["status"] == "extension"]
    if exts:
        lines += ["", "## Extension nodes", "", "| node | op | why |", "|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['op']} | {r['detail']} |" for r in exts]
    lines += ["", "## Semantic notes", ""] + [f"- {s}" for s in coverage["semantic_notes"]]
    return "\n".join(lines) + "\n"


from .nir_interop import IMPORTER_SETTINGS, fixup_snntorch, settings_for  # noqa: E402

__all__ = ["export_nir", "write_nir", "coverage_markdown", "nudged_threshold",
           "IMPORTER_SETTINGS", "settings_for", "fixup_snntorch"]
