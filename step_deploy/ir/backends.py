"""Which backend implements which op: every backend (exporter or executor) registers the op set
of its own dispatch table here, and checks a graph against it with :func:`require_ops` before it
starts, so a missing implementation is an :class:`UnsupportedOpError` naming the node, the op
and the backend, never a ``KeyError`` half-way. ``python -m step_deploy.opmatrix`` turns the
registry into the op × backend table of ``docs/ops.md``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

from .diagnostics import Diagnostic, IRError
from .graph import Graph


@dataclass(frozen=True)
class Backend:
    """``name`` (e.g. ``'onnx'``), ``ops`` it implements, ``kind`` (``'float'`` or ``'integer'``:
    which graphs it takes), ``where`` (the module whose table ``ops`` comes from), ``hint`` (what
    to do with a graph it cannot take)."""

    name: str
    ops: frozenset[str]
    kind: str = "float"
    where: str = ""
    hint: str = ""


class UnsupportedOpError(IRError):
    """A graph holds ops a backend does not implement (one diagnostic per node)."""

    def __init__(self, backend: Backend, diags: list[Diagnostic]):
        self.backend = backend
        ValueError.__init__(self, "\n".join(str(d) for d in diags))
        self.diagnostics = list(diags)


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, ops: Iterable[str], *, kind: str = "float", where: str = "",
                     hint: str = "") -> Backend:
    """Register (or replace) backend ``name`` with the op names of its dispatch table."""
    if kind not in ("float", "integer"):
        raise ValueError(f"backend {name!r}: kind must be 'float' or 'integer', got {kind!r}")
    BACKENDS[name] = Backend(name, frozenset(ops), kind, where, hint)
    return BACKENDS[name]


def require_ops(graph: Graph, backend: Union[str, Backend]) -> None:
    """Raise :class:`UnsupportedOpError` naming, per op ``backend`` does not implement, the first
    node (in graph order) and how many more; return silently when it implements them all."""
    b = BACKENDS[backend] if isinstance(backend, str) else backend
    by_op: dict[str, list[str]] = {}
    for n in graph.topo_order():
        if n.op not in b.ops:
            by_op.setdefault(n.op, []).append(n.name)
    if not by_op:
        return
    hint = (b.hint + "; " if b.hint else "") + f"{b.name} supports: {', '.join(sorted(b.ops))}"
    diags = []
    for op, names in by_op.items():
        more = f" (and {len(names) - 1} more node(s): {', '.join(names[1:4])}{', ...' if len(names) > 4 else ''})" \
            if len(names) > 1 else ""
        diags.append(Diagnostic("unsupported-op", names[0], f"op {op} is not supported by backend {b.name!r}{more}",
                                hint=hint))
    raise UnsupportedOpError(b, diags)


__all__ = ["Backend", "BACKENDS", "UnsupportedOpError", "register_backend", "require_ops"]
