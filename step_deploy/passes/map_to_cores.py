"""map-to-cores: place the float graph on the target's neuro-cores (analysis, no rewrite).

The mapping algorithm and its resource model live with the target data
(``step_deploy.targets.mapping``); this module registers it as a pass. Requires ``float`` (it maps
the BN-folded float graph: shapes and structure decide the placement); guarantees ``mapped``; the
:class:`~step_deploy.targets.mapping.Mapping` goes to ``ctx.results['map-to-cores']``."""
from __future__ import annotations

from step_deploy import ir
from step_deploy.targets.mapping import Mapping, map_to_cores

from .registry import PassContext, register_pass


@register_pass("map-to-cores", requires=("float", "bn-folded"), guarantees="mapped")
def map_to_cores_pass(graph: ir.Graph, ctx: PassContext) -> ir.Graph:
    """Map ``graph`` onto ``ctx.target``'s cores; the Mapping goes to ``ctx.results``."""
    ctx.require("map-to-cores", "target")
    ctx.results["map-to-cores"] = map_to_cores(graph, ctx.target, **ctx.options.get("map-to-cores", {}))
    return graph


__all__ = ["map_to_cores", "map_to_cores_pass", "Mapping"]
