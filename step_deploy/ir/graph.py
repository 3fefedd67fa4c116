"""The IR graph: named nodes, edges given by each node's ``inputs``, deterministic topological order."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator, Optional

from .diagnostics import Diagnostic, IRError
from .nodes import Input, Node, Output, Shape, ShapeError


class Graph:
    """A per-time-step dataflow graph. Node order of insertion breaks topological ties, so every
    traversal (and every file written from it) is deterministic."""

    def __init__(self, nodes: Iterable[Node] = (), metadata: Optional[dict] = None):
        self.nodes: dict[str, Node] = {}
        self.metadata: dict = dict(metadata or {})
        for n in nodes:
            self.add(n)

    # ------------------------------------------------------------------ editing
    def add(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise ValueError(f"duplicate node name {node.name!r}")
        self.nodes[node.name] = node
        return node

    def replace(self, node: Node) -> None:
        """Swap in a new version of an existing node (same name), keeping its position."""
        if node.name not in self.nodes:
            raise KeyError(node.name)
        self.nodes[node.name] = node

    def remove(self, name: str) -> None:
        del self.nodes[name]

    def rewire(self, old: str, new: str) -> None:
        """Make every consumer of ``old`` read ``new`` instead."""
        from .nodes import replace

        for n in list(self.nodes.values()):
            if old in n.inputs:
                self.replace(replace(n, inputs=tuple(new if i == old else i for i in n.inputs)))

    def copy(self) -> "Graph":
        return Graph(self.nodes.values(), dict(self.metadata))

    # ------------------------------------------------------------------ queries
    def __iter__(self) -> Iterator[Node]:
        return iter(self.topo_order())

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    @property
    def inputs(self) -> list[Input]:
        return [n for n in self.nodes.values() if isinstance(n, Input)]

    @property
    def outputs(self) -> list[Output]:
        return [n for n in self.nodes.values() if isinstance(n, Output)]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if name in n.inputs]

    def producers(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.inputs]

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(n.op for n in self.nodes.values()).items()))

    def topo_order(self) -> list[Node]:
        """Kahn's algorithm; among ready nodes the earliest inserted goes first."""
        index = {name: i for i, name in enumerate(self.nodes)}
        missing = [(n.name, i) for n in self.nodes.values() for i in n.inputs if i not in self.nodes]
        if missing:
            raise IRError([Diagnostic("inputs-exist", n, f"reads unknown node {i!r}") for n, i in missing])
        indeg = {name: len(set(n.inputs)) for name, n in self.nodes.items()}
        users: dict[str, list[str]] = {name: [] for name in self.nodes}
        for n in self.nodes.values():
            for i in set(n.inputs):
                users[i].append(n.name)
        import heapq

        ready = [(index[k], k) for k, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(self.nodes[name])
            for u in users[name]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(ready, (index[u], u))
        if len(order) != len(self.nodes):
            stuck = sorted(set(self.nodes) - {n.name for n in order})
            raise IRError([Diagnostic("acyclic", s, "is part of a cycle (use a Delay node for recurrence)") for s in stuck])
        return order

    def infer_shapes(self) -> dict[str, Shape]:
        """Per-step output shape of every node. Raises IRError naming the node on a mismatch."""
        shapes: dict[str, Shape] = {}
        for n in self.topo_order():
            try:
                shapes[n.name] = tuple(int(s) for s in n.infer_shape([shapes[i] for i in n.inputs]))
            except (ShapeError, ValueError, IndexError, TypeError) as e:
                raise IRError([Diagnostic("shapes", n.name, f"{n.op}: {e}",
                                          hint="check the producer's shape and this node's parameters")]) from None
        return shapes

    def to_networkx(self):
        """A networkx MultiDiGraph view (for analysis and drawing)."""
        import networkx as nx

        g = nx.MultiDiGraph()
        for n in self.nodes.values():
            g.add_node(n.name, op=n.op)
        for n in self.nodes.values():
            for port, i in enumerate(n.inputs):
                g.add_edge(i, n.name, port=port)
        return g

    def summary(self) -> str:
        shapes = self.infer_shapes()
        lines = [f"{'node':40s} {'op':12s} {'shape':18s} inputs"]
        for n in self.topo_order():
            lines.append(f"{n.name:40s} {n.op:12s} {str(shapes[n.name]):18s} {', '.join(n.inputs)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes: {self.op_counts()})"
