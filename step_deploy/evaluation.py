"""Evaluation: float IR against the integer golden model on a data set (orchestration: captures,
folds, quantizes and runs; sits above frontend, passes and simulators)."""
from __future__ import annotations

from typing import Optional

import torch

from step_deploy import ir
from step_deploy.frontend.capture import capture, encoded_input
from step_deploy.passes.fold_batchnorm import fold_batchnorm
from step_deploy.passes.quantize_loihi import quantize_loihi
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run


def _dataset_tensors(dataset, limit: Optional[int]):
    if hasattr(dataset, "tensors"):
        x, y = dataset.tensors[0], dataset.tensors[1]
    else:
        pairs = [dataset[i] for i in range(len(dataset))]
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs])
    return (x[:limit], y[:limit]) if limit else (x, y)


def accuracy_float_vs_golden(model, dataset, calib=None, steps: Optional[int] = None, tie: str = "auto",
                             target=None, limit: Optional[int] = None, batch_size: int = 64,
                             quantize=None) -> dict:
    """Top-1 accuracy of the float IR and of the integer golden model on ``dataset``.

    ``model``: a zoo model (captured and BN-folded here; its encoder makes the time axis) or a
    float ``ir.Graph`` (then ``dataset`` holds per-step inputs and ``steps`` is needed).
    ``calib``: the calibration dataset (default: the first 256 samples of ``dataset``; pass the
    training split for an honest number). Returns accuracies, prediction agreement, spike
    agreement and the quantization report. ``quantize``: ``f(graph, calib, steps=, batch_size=) ->
    (qgraph, report)`` for another format (default: ``quantize_loihi`` with ``tie`` and ``target``)."""
    x, y = _dataset_tensors(dataset, limit)
    xc = _dataset_tensors(calib, 256)[0] if calib is not None else x[:256]
    if isinstance(model, ir.Graph):
        graph, encode = model, (lambda v: v)
    else:
        graph = fold_batchnorm(capture(model))
        steps = steps or int(model.step)
        encode = lambda v: encoded_input(model, v)  # noqa: E731
    if quantize is None:
        qgraph, report = quantize_loihi(graph, encode(xc), steps=steps, target=target, tie=tie, batch_size=batch_size)
    else:
        qgraph, report = quantize(graph, encode(xc), steps=steps, batch_size=batch_size)
    pf, pg, same, total = [], [], 0, 0
    for start in range(0, len(x), batch_size):
        xb = encode(x[start:start + batch_size])
        f = run(graph, xb, steps=steps, record=True)
        g = run_golden(qgraph, xb, steps=steps, record=True)
        pf.append(f.final().argmax(-1))
        pg.append(g.final().argmax(-1))
        for k, v in g.traces.items():
            same += int((f.traces[k].to(torch.int64) == v).sum())
            total += v.numel()
    pf, pg = torch.cat(pf), torch.cat(pg)
    return {"n": len(y), "float_acc": float((pf == y).float().mean()), "golden_acc": float((pg == y).float().mean()),
            "prediction_agreement": float((pf == pg).float().mean()),
            "spike_agreement": same / total if total else 1.0, "report": report}


__all__ = ["accuracy_float_vs_golden"]
