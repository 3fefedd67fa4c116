"""Serialization: ``graph.json`` (structure and scalar fields) + ``weights.npz`` (arrays).

Derived from the dataclass fields, so every node type round-trips without per-type code. Files
are byte-identical for the same graph (sorted JSON keys, fixed zip timestamps)."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Union

import numpy as np

from .graph import Graph
from .nodes import NODE_TYPES, Node, node_fields

SCHEMA_VERSION = 1
#: ``graph.metadata`` entry naming the fixed-point format of a quantized graph (``step_deploy.fixedpoint``)
FORMAT_KEY = "fixed_point_format"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _to_json(v):
    if isinstance(v, tuple):
        return [_to_json(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def _from_json(v):
    return tuple(_from_json(x) for x in v) if isinstance(v, list) else v


def write_npz(path: Union[str, Path], arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but deterministic: sorted members, fixed timestamps, no compression."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def graph_to_dict(g: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    nodes, arrays = [], {}
    for n in g.nodes.values():
        params = {}
        for k, v in n.params().items():
            if isinstance(v, np.ndarray):
                key = f"{n.name}/{k}"
                arrays[key] = v
                params[k] = {"$array": key}
            else:
                params[k] = _to_json(v)
        nodes.append({"name": n.name, "op": n.op, "inputs": list(n.inputs), "params": params})
    return {"schema_version": SCHEMA_VERSION, "metadata": g.metadata, "nodes": nodes}, arrays


def graph_from_dict(d: dict, arrays: dict[str, np.ndarray]) -> Graph:
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"IR schema_version {version!r} is not supported (this step-deploy reads {SCHEMA_VERSION})")
    g = Graph(metadata=d.get("metadata", {}))
    for nd in d["nodes"]:
        cls = NODE_TYPES.get(nd["op"])
        if cls is None:
            fmt = g.metadata.get(FORMAT_KEY)
            if fmt:
                raise ValueError(f"node {nd['name']!r}: unknown node type {nd['op']}: it belongs to fixed-point format "
                                 f"{fmt!r}; load with step_deploy.fixedpoint.load(path)")
            raise ValueError(f"node {nd['name']!r}: unknown op {nd['op']!r}")
        params = {}
        for k, v in nd["params"].items():
            if k not in node_fields(cls):
                raise ValueError(f"node {nd['name']!r}: {nd['op']} has no field {k!r}")
            params[k] = arrays[v["$array"]] if isinstance(v, dict) and "$array" in v else _from_json(v)
        g.add(cls(name=nd["name"], inputs=tuple(nd["inputs"]), **params))
    return g


def save(g: Graph, directory: Union[str, Path]) -> Path:
    """Write ``graph.json`` and ``weights.npz`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    d, arrays = graph_to_dict(g)
    (directory / "graph.json").write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")
    write_npz(directory / "weights.npz", arrays)
    return directory


def load(directory: Union[str, Path]) -> Graph:
    directory = Path(directory)
    d = json.loads((directory / "graph.json").read_text())
    with np.load(directory / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return graph_from_dict(d, arrays)


def nodes_equal(a: Node, b: Node) -> bool:
    """Field-by-field equality (arrays compared exactly, dtype included)."""
    if type(a) is not type(b) or a.name != b.name or tuple(a.inputs) != tuple(b.inputs):
        return False
    for k, va in a.params().items():
        vb = getattr(b, k)
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (isinstance(va, np.ndarray) and isinstance(vb, np.ndarray)) or va.dtype != vb.dtype \
                    or not np.array_equal(va, vb):
                return False
        elif _to_json(va) != _to_json(vb):
            return False
    return True
