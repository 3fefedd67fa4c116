"""``step-parity``: every stage of the pipeline on the same samples, every pair compared, on one
machine or a Dask cluster (orchestration: imports everything below it)."""
