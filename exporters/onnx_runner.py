"""Run a per-time-step ONNX model (from ``step_deploy.exporters.onnx_export``) over T steps with
onnxruntime, feeding the states back, and return the reference interpreter's ``RunResult``."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from step_deploy.simulators.reference import RunResult

__all__ = ["run_onnx", "OnnxSession"]


def _load(model_or_path):
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path))
    return onnx.load(str(Path(model_or_path)))


class OnnxSession:
    """An onnxruntime session on an exported step model plus its step-deploy metadata.

    ``optimize=False`` (default) disables onnxruntime's graph rewrites (Conv+Mul/Add folding and
    the like change float rounding); ``True`` uses onnxruntime's default level."""

    def __init__(self, model_or_path, providers: Optional[list] = None, optimize: bool = False):
        import onnxruntime as ort

        from .onnx_export import read_metadata

        model = _load(model_or_path)
        self.meta = read_metadata(model)
        opts = ort.SessionOptions()
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_shapes = {i.name: i.shape for i in self.session.get_inputs()}

    def initial_states(self, batch: int) -> dict[str, np.ndarray]:
        """State inputs before step 0 (membranes at v_reset, FIFOs and accumulators at zero)."""
        out = {}
        for s in self.meta["states"]:
            shape = [batch if d == "B" else int(d) for d in s["shape"]]
            out[s["input"]] = np.full(shape, s["init"], np.float32)
        return out


def _time_major(x, name: str, per_step_rank: int, steps: Optional[int]) -> np.ndarray:
    x = x.detach().cpu().float().numpy() if torch.is_tensor(x) else np.asarray(x, np.float32)
    x = x.astype(np.float32, copy=False)
    if x.ndim == per_step_rank + 1:  # (B, ...) static input, repeated every step (direct coding)
        if steps is None:
            raise ValueError(f"input {name!r} has no time axis; pass steps=T")
        return np.broadcast_to(x, (steps, *x.shape))
    if x.ndim != per_step_rank + 2:
        raise ValueError(f"input {name!r}: expected (T, B, ...) with {per_step_rank} per-step axes, "
                         f"or (B, ...) with steps=T; got {tuple(x.shape)}")
    return x


def run_onnx(model_or_path, inputs: Union[dict, torch.Tensor, np.ndarray], steps: Optional[int] = None,
             record: Union[bool, Iterable[str]] = False, providers: Optional[list] = None,
             optimize: bool = False, session: Optional[OnnxSession] = None) -> RunResult:
    """Run an exported step model for ``T`` steps (same conventions as ``reference.run``).

    ``inputs``: one array (single-input graphs) or ``{IR input name: array}``, each ``(T, B, ...)``
    or ``(B, ...)`` with ``steps=T``. ``record``: True records every exposed Neuron's spikes (export
    with ``expose_spikes=True``); an iterable records the named IR nodes (which must be exposed).
    Returns ``RunResult`` keyed by IR names, tensors shaped ``(T, B, ...)``."""
    sess = session or OnnxSession(model_or_path, providers=providers, optimize=optimize)
    meta = sess.meta
    in_map: dict[str, str] = meta["inputs"]
    if not isinstance(inputs, dict):
        if len(in_map) != 1:
            raise ValueError(f"model has {len(in_map)} inputs; pass a dict")
        inputs = {next(iter(in_map)): inputs}
    missing = sorted(set(in_map) - set(inputs))
    if missing:
        raise ValueError(f"missing inputs: {missing}")
    feeds = {}
    first_step = (lambda v: v) if int(meta.get("block", 1)) == 1 else (lambda v: f"{v}@0")  # noqa: E731
    for ir_name, onnx_name in in_map.items():
        rank = len(sess.input_shapes[first_step(onnx_name)]) - 1
        feeds[onnx_name] = _time_major(inputs[ir_name], ir_name, rank, steps)
    first = next(iter(feeds.values()))
    T, B = first.shape[0], first.shape[1]
    for k, v in feeds.items():
        if v.shape[:2] != (T, B):
            raise ValueError(f"input {k!r}: (T, B) = {v.shape[:2]}, expected {(T, B)}")

    traces_avail: dict[str, str] = meta["traces"]
    if record is True:
        wanted = [n for n in meta["neurons"] if n in traces_avail]
        if meta["neurons"] and not wanted:
            raise ValueError("record=True needs a model exported with expose_spikes=True")
    else:
        wanted = list(record or ())
        absent = [n for n in wanted if n not in traces_avail and n not in meta["outputs"]]
        if absent:
            raise ValueError(f"cannot record {absent}: not exposed in the model (export with expose=[...])")
    trace_names = {n: traces_avail.get(n, meta["outputs"].get(n)) for n in wanted}

    block = int(meta.get("block", 1))  # steps per call (a block model for window ops: onnx_export)
    if T % block:
        raise ValueError(f"the model computes {block} steps per call (its window ops' block); T = {T} is not a "
                         f"multiple of it")
    at = (lambda v, j: v) if block == 1 else (lambda v, j: f"{v}@{j}")  # noqa: E731
    out_names = [at(v, j) for j in range(block) for v in meta["outputs"].values()]
    state_out = [s["output"] for s in meta["states"]]
    fetch = list(dict.fromkeys(out_names + state_out + [at(v, j) for j in range(block) for v in trace_names.values()]))
    index = {name: i for i, name in enumerate(fetch)}
    states = sess.initial_states(B)
    outs = {k: [] for k in meta["outputs"]}
    traces = {k: [] for k in wanted}
    for t in range(0, T, block):
        feed = {at(k, j): np.ascontiguousarray(v[t + j]) for k, v in feeds.items() for j in range(block)}
        feed.update(states)
        feed[meta["step_input"]] = np.array(t, np.int64)
        res = sess.session.run(fetch, feed)
        states = {s["input"]: res[index[s["output"]]] for s in meta["states"]}
        for j in range(block):
            for k, v in meta["outputs"].items():
                outs[k].append(res[index[at(v, j)]])
            for k, v in trace_names.items():
                traces[k].append(res[index[at(v, j)]])
    stack = lambda d: {k: torch.from_numpy(np.stack(v)) for k, v in d.items()}  # noqa: E731
    return RunResult(stack(outs), stack(traces))
