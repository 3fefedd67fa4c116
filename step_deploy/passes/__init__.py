"""Graph -> Graph passes, registered by name and grouped into per-target pipelines."""
from .fold_batchnorm import fold_batchnorm
from .registry import PASSES, PIPELINES, Pass, register_pass, run_pipeline

__all__ = ["fold_batchnorm", "PASSES", "PIPELINES", "Pass", "register_pass", "run_pipeline"]
