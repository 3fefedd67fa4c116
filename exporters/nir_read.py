"""NIR file -> IR graph: the inverse of the NIR exporter (standard nodes + step-deploy extensions).

For files written by step-deploy, structure comes from the NIR edges, weights from the NIR
parameters, exact scalar fields (names, tau, the un-nudged threshold, ...) from each node's
``step_deploy`` record; the result is then re-exported and compared with the file node by node,
so a file whose records disagree with its NIR parameters is rejected. Plain NIR files (no
records) are read for the node types that have an IR equivalent, with NIR's ``>`` firing rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from step_deploy import ir

from . import nir_extensions as ext


def _unique(a, what: str, node: str) -> float:
    vals = np.unique(np.asarray(a))
    if vals.size != 1:
        raise ValueError(f"NIR node {node!r}: {what} differs across neurons ({vals.size} values); the IR needs one value")
    return float(vals[0])


def _ungroup(w: np.ndarray, groups: int, node: str) -> np.ndarray:
    if groups == 1:
        return w
    co, ci = w.shape[:2]
    opg, cig = co // groups, ci // groups
    out = np.stack([w[g * opg:(g + 1) * opg, g * cig:(g + 1) * cig] for g in range(groups)]).reshape(
        (co, cig) + w.shape[2:])
    if not np.array_equal(_dense_back(out, groups), w):
        raise ValueError(f"NIR node {node!r}: weight is not block-diagonal for groups={groups}")
    return out


def _dense_back(w, groups):
    from .nir_export import _dense_groups

    return _dense_groups(w, groups)


def _untile(a: np.ndarray, lead: int, node: str) -> np.ndarray:
    if lead == 0:
        return a
    first = a[(0,) * lead]
    if not np.array_equal(np.broadcast_to(first, a.shape), a):
        raise ValueError(f"NIR node {node!r}: tiled weight differs between rows")
    return np.ascontiguousarray(first)


def _tuple(v) -> tuple:
    return tuple(int(x) for x in np.atleast_1d(np.asarray(v)))


def _from_record(nir, node, rec: dict, inputs, name: str) -> ir.Node:
    """IR node from a step-deploy record; weights and biases come from the NIR parameters."""
    params = rec["params"]
    arrays: dict[str, np.ndarray] = {}
    if rec["op"] in ("Conv2d", "Conv1d") and isinstance(node, (nir.Conv2d, nir.Conv1d)):
        arrays["weight"] = _ungroup(np.asarray(node.weight), int(params["groups"]), name)
        if "bias" not in params:
            arrays["bias"] = np.asarray(node.bias)
    elif rec["op"] == "Linear" and isinstance(node, (nir.Affine, nir.Linear)):
        lead = len(rec.get("tiled", []))
        arrays["weight"] = _untile(np.asarray(node.weight), lead, name)
        if isinstance(node, nir.Affine):
            arrays["bias"] = _untile(np.asarray(node.bias), lead, name)
    return ext.build_ir_node(rec, arrays, inputs)


def _from_plain(nir, node, inputs, name: str, dt: float) -> ir.Node:
    """IR node from a NIR node without a step-deploy record (a plain NIR file)."""
    if isinstance(node, nir.Input):
        return ir.Input(name, shape=_tuple(node.input_type["input"]))
    if isinstance(node, nir.Output):
        return ir.Output(name, inputs)
    if isinstance(node, (nir.Affine, nir.Linear)):
        if np.ndim(node.weight) != 2:
            raise ValueError(f"NIR node {name!r}: batched Affine weights are not supported")
        bias = np.asarray(node.bias) if isinstance(node, nir.Affine) else None
        return ir.Linear(name, inputs, weight=np.asarray(node.weight), bias=bias)
    if isinstance(node, nir.Conv2d):
        return ir.Conv2d(name, inputs, weight=np.asarray(node.weight), bias=np.asarray(node.bias),
                         stride=_tuple(node.stride) * (2 // len(_tuple(node.stride))),
                         padding=_pad(node.padding, 2, name), dilation=_tuple(node.dilation) * (2 // len(_tuple(node.dilation))),
                         groups=int(node.groups))
    if isinstance(node, nir.Conv1d):
        return ir.Conv1d(name, inputs, weight=np.asarray(node.weight), bias=np.asarray(node.bias),
                         stride=int(np.asarray(node.stride).reshape(-1)[0]), padding=_pad(node.padding, 1, name)[0],
                         dilation=int(np.asarray(node.dilation).reshape(-1)[0]), groups=int(node.groups))
    if isinstance(node, nir.Flatten):
        return ir.Flatten(name, inputs, start_dim=int(node.start_dim), end_dim=int(node.end_dim))
    if isinstance(node, nir.AvgPool2d):
        return ir.AvgPool2d(name, inputs, kernel_size=_tuple(node.kernel_size), stride=_tuple(node.stride),
                            padding=_tuple(node.padding))
    if isinstance(node, nir.Scale):
        return ir.Scale(name, inputs, factor=_unique(node.scale, "scale", name))
    if isinstance(node, nir.Delay):
        return ir.Delay(name, inputs, steps=int(round(_unique(node.delay, "delay", name) / dt)))
    if isinstance(node, (nir.LIF, nir.IF)):
        v_reset = _unique(node.v_reset, "v_reset", name)
        thr = _unique(node.v_threshold, "v_threshold", name)
        r = _unique(node.r, "r", name)
        if isinstance(node, nir.IF):
            if not np.isclose(r * dt, 1.0):
                raise ValueError(f"NIR IF {name!r}: r·dt = {r * dt:g}; the IR's IF adds its input unscaled (r = 1/dt)")
            return ir.Neuron(name, inputs, kind="IF", v_threshold=thr, v_reset=v_reset, compare=">")
        tau = _unique(node.tau, "tau", name) / dt
        if not np.isclose(_unique(node.v_leak, "v_leak", name), v_reset):
            raise ValueError(f"NIR LIF {name!r}: v_leak != v_reset has no IR equivalent")
        if np.isclose(r, 1.0):
            decay_input = True
        elif np.isclose(r, tau):
            decay_input = False
        else:
            raise ValueError(f"NIR LIF {name!r}: r={r:g} is neither 1 (decay_input) nor tau·… ({tau:g}); "
                             "insert a Scale before the neuron")
        return ir.Neuron(name, inputs, kind="LIF", tau=tau, v_threshold=thr, v_reset=v_reset, compare=">",
                         decay_input=decay_input)
    raise ValueError(f"NIR node {name!r}: {type(node).__name__} has no IR equivalent in step-deploy")


def _pad(p, n: int, name: str) -> tuple:
    if isinstance(p, (str, bytes)):
        raise ValueError(f"NIR node {name!r}: padding {p!r} is not supported; write integer padding")
    t = _tuple(p)
    return t * (n // len(t)) if len(t) != n else t


def _expand(names, absorbed: dict) -> list[str]:
    out = []
    for i in names:
        out += _expand(absorbed[i], absorbed) if i in absorbed else [i]
    return out


def read_nir_as_ir(source: Union[str, Path, "object"], dt: Optional[float] = None, verify: bool = True) -> ir.Graph:
    """Read a NIR file (or a ``nir.NIRGraph``) back into an IR graph.

    ``dt``: time units per IR step; default from the file's metadata (plain NIR files: 1.0).
    ``verify``: for step-deploy files, re-export the result and require every NIR node, record and
    edge to equal the file's (proves the file is self-consistent and complete)."""
    import nir

    g = source if isinstance(source, nir.NIRGraph) else nir.read(str(source))
    gmeta, _ = ext.decode(g.metadata)
    ours = bool(gmeta) and gmeta.get("format") == ext.FORMAT
    if ours and gmeta.get("format_version") != ext.FORMAT_VERSION:
        raise ValueError(f"NIR file format {gmeta.get('format_version')} is not supported (this reads {ext.FORMAT_VERSION})")
    gmeta = gmeta if ours else {}
    dt = float(dt if dt is not None else gmeta.get("dt", 1.0))
    absorbed = {k: list(v) for k, v in gmeta.get("absorbed_adds", {}).items()}
    records = {k: ext.decode(n.metadata) for k, n in g.nodes.items()}
    ir_name = {k: (rec or {}).get("name", k) for k, (rec, _) in records.items()}
    in_edges: dict[str, list[str]] = {k: [] for k in g.nodes}
    for src, dst in g.edges:
        in_edges[dst].append(src)

    built: list[ir.Node] = []
    for key, node in g.nodes.items():
        rec, arrays = records[key]
        role = rec.get("role") if rec else None
        if role in (ext.ROLE_OPERAND, ext.ROLE_SINK):
            continue
        if role == ext.ROLE_EXTENSION:
            inputs = []
            for port in rec["operands"]:
                if len(in_edges.get(port, [])) != 1:
                    raise ValueError(f"NIR extension {key!r}: operand port {port!r} must have exactly one in-edge")
                inputs.append(ir_name[in_edges[port][0]])
            built.append(ext.build_ir_node(rec, arrays, tuple(inputs)))
            continue
        srcs = [ir_name[s] for s in in_edges[key]]
        if rec is not None:
            if sorted(_expand(rec["inputs"], absorbed)) != sorted(srcs):
                raise ValueError(f"NIR node {key!r}: in-edges {srcs} disagree with its record {rec['inputs']}")
            built.append(_from_record(nir, node, rec, tuple(rec["inputs"]), key))
            continue
        inputs = tuple(srcs)
        if len(srcs) > 1:  # plain NIR: several in-edges are summed
            add = ir.Add(f"{key}.sum", inputs)
            built.append(add)
            inputs = (add.name,)
        built.append(_from_plain(nir, node, inputs, key, dt))
    built += [ir.Add(a, tuple(ins)) for a, ins in absorbed.items()]

    order = {name: i for i, name in enumerate(gmeta.get("node_order", []))}
    built.sort(key=lambda n: order.get(n.name, len(order)))
    graph = ir.Graph(built, metadata=gmeta.get("ir_metadata") or {})
    if ours and verify:
        _verify_reexport(g, graph, gmeta)
    return graph


def _verify_reexport(g, graph: ir.Graph, gmeta: dict) -> None:
    from .nir_export import export_nir

    again, _ = export_nir(graph, gmeta["dt"], threshold=gmeta["threshold"], avgpool=gmeta["avgpool"],
                          tile_linear=gmeta["tile_linear"])
    bad = []
    if set(again.nodes) != set(g.nodes):
        bad.append(f"node names differ: {sorted(set(again.nodes) ^ set(g.nodes))}")
    if sorted(map(tuple, again.edges)) != sorted(map(tuple, g.edges)):
        bad.append("edges differ")
    for k in sorted(set(again.nodes) & set(g.nodes)):
        a, b = again.nodes[k], g.nodes[k]
        if type(a) is not type(b) or ext.decode(a.metadata)[0] != ext.decode(b.metadata)[0]:
            bad.append(f"{k}: type or record differs")
            continue
        for f, va in vars(a).items():
            if f in ("metadata", "input_type", "output_type"):
                continue
            vb = getattr(b, f, None)
            same = np.array_equal(np.asarray(va), np.asarray(vb))
            if isinstance(va, np.ndarray) and isinstance(vb, np.ndarray):
                same = same and va.dtype == vb.dtype
            if not same:
                bad.append(f"{k}.{f} differs")
        ea, eb = ext.decode(a.metadata)[1], ext.decode(b.metadata)[1]
        if sorted(ea) != sorted(eb) or any(not np.array_equal(ea[x], eb[x]) for x in ea):
            bad.append(f"{k}: metadata arrays differ")
    if bad:
        raise ValueError("NIR file is inconsistent with its step-deploy records:\n  " + "\n  ".join(bad))
