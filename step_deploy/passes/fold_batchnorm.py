"""fold-batchnorm: merge each inference BatchNorm into the Conv/Linear that feeds it.

``BN(W·x + b) = (W·s)·x + (b - mean)·s + beta`` with ``s = gamma / sqrt(var + eps)`` per output
channel. Statistics are shared over time (STEP runs BN over the T·B batch), so one folded layer
serves every step. A BatchNorm is folded only where that is exact in real arithmetic: its
producer is a Conv/Linear read by nothing else, and the BN axis is the producer's output-channel
axis. Any other BatchNorm stays (and the report says which)."""
from __future__ import annotations

import numpy as np

from step_deploy import ir

from .registry import register_pass


def _channel_axis(node, rank: int) -> int:
    return rank - 1 if isinstance(node, ir.Linear) else 0


@register_pass("fold-batchnorm", requires="float IR", guarantees="no BatchNorm directly after a Conv/Linear")
def fold_batchnorm(graph: ir.Graph) -> ir.Graph:
    g = graph.copy()
    shapes = g.infer_shapes()
    folded = []
    for bn in [n for n in g.topo_order() if isinstance(n, ir.BatchNorm)]:
        prod = g[bn.inputs[0]]
        if not isinstance(prod, (ir.Conv2d, ir.Conv1d, ir.Linear)) or len(g.consumers(prod.name)) != 1:
            continue
        rank = len(shapes[bn.name])
        if bn.axis % rank != _channel_axis(prod, rank):
            continue
        s = (bn.gamma.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps))
        w = prod.weight.astype(np.float64) * s.reshape((-1,) + (1,) * (prod.weight.ndim - 1))
        b0 = prod.bias.astype(np.float64) if prod.bias is not None else 0.0
        b = (b0 - bn.mean.astype(np.float64)) * s + bn.beta.astype(np.float64)
        g.replace(ir.replace(prod, weight=w.astype(np.float32), bias=b.astype(np.float32)))
        g.rewire(bn.name, prod.name)
        g.remove(bn.name)
        folded.append(bn.name)
    g.metadata = {**g.metadata, "folded_batchnorms": len(folded) + int(graph.metadata.get("folded_batchnorms", 0))}
    return g
