"""Graph -> Graph passes, registered by name with the properties they require and guarantee, and
grouped into per-target pipelines (see ``registry``). Importing this package registers every pass."""
from . import delay_balance, map_to_cores, quantize_fpga, quantize_loihi
from .fold_batchnorm import fold_batchnorm
from .registry import (PASSES, PIPELINES, Pass, PassContext, PassError, graph_properties, register_pass, resolve,
                       run_pipeline)

__all__ = ["delay_balance", "map_to_cores", "quantize_fpga", "quantize_loihi", "fold_batchnorm", "PASSES", "PIPELINES", "Pass",
           "PassContext", "PassError", "graph_properties", "register_pass", "resolve", "run_pipeline"]
