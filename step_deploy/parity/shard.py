"""One shard: a contiguous range of samples run through every chosen stage, and every pair of
stages compared on the samples both ran. The result is plain JSON (written to disk by the driver
as soon as the shard completes) and adds up across shards (:mod:`step_deploy.parity.merge`).

Comparisons, all element by element on the spiking layers both stages traced, every step:

- ``exact`` (two integer stages of one domain): mismatch counts per layer and step, and the first
  divergence in causal order (step, then layer order, then sample) with the values on both sides;
- ``float`` (two float stages): the same raw counts, plus ``simulators.float_parity``'s rounding
  attribution (teacher forcing in float64: every mismatch either descends from a threshold tie
  under float rounding or is a real fault);
- ``quantized`` (float vs integer, or two integer domains): the same raw counts and the prediction
  agreement, reported, never judged.

Energy counters (spikes per layer, synaptic operations per synapse) are kept per sample where the
stage gives them per sample, so that each pair compares them on exactly the samples both ran."""
from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from step_deploy.errors import StepDeployError
from step_deploy.ir import IRError

from .context import NotApplicable, ParityJob, context_for
from .stages import StageOutput, pair_kind, registered_stages


#: errors a stage raises to refuse a model it does not build (an op without an integer form, a window op
#: on a step-by-step runtime, a network that does not fit): user-facing errors, reported as "not
#: applicable" with their message. Any other exception is a crash: "failed", and the run exits 1.
REFUSALS = (StepDeployError, IRError)


def _first_line(e: BaseException) -> str:
    diags = getattr(e, "diagnostics", None)
    if diags:  # an IRError: its first diagnostic names the node, the rule and what to do
        return str(diags[0]).strip() + (f" (and {len(diags) - 1} more)" if len(diags) > 1 else "")
    text = str(e).strip() or type(e).__name__
    lines = text.splitlines()
    return lines[0] + (f" (and {len(lines) - 1} more line(s))" if len(lines) > 1 else "")


@dataclass(frozen=True)
class ShardSpec:
    """Samples ``[start, stop)`` of the run; ``limits[stage]``: the stage runs only samples below it."""

    index: int
    start: int
    stop: int
    stages: tuple
    limits: dict = field(default_factory=dict, hash=False)
    layers: tuple = ()           # spiking layers in causal order (the graph's)
    raster_sample: int = 0
    raster_layers: tuple = ()

    def samples_for(self, stage: str) -> int:
        lim = self.limits.get(stage)
        stop = self.stop if lim is None else min(self.stop, lim)
        return max(0, stop - self.start)


@contextlib.contextmanager
def _one_thread():
    """Shards compute with one intra-op thread, so a run gives the same float results whichever
    worker (and however many cores) computed a shard."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _as_int(v) -> torch.Tensor:
    v = v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))
    if v.is_floating_point():
        r = torch.round(v)
        v = r if torch.equal(r, v) else v
    return v.to(torch.int64) if not v.is_floating_point() else v


def _stage_record(name: str, out: StageOutput, n: int, spec: ShardSpec, y) -> dict:
    """What the merge needs of one stage on this shard."""
    rec = {"status": "ok", "samples": n, "predictions": out.logits[:n].argmax(-1).tolist(),
           "counter_source": out.counter_source, "nonzero_per_step": {}, "elements": {}}
    for k in spec.layers:
        if k in out.traces:
            v = out.traces[k][:, :n]
            T = v.shape[0]
            rec["nonzero_per_step"][k] = [int(c) for c in (v != 0).reshape(T, -1).sum(1).tolist()]
            rec["elements"][k] = int(np.prod(v.shape[2:])) if v.dim() > 2 else 1
    if y is not None:
        rec["correct"] = int((out.logits[:n].argmax(-1) == torch.as_tensor(y[:n])).sum())
    rel = spec.raster_sample - spec.start
    if 0 <= rel < n:
        rec["raster"] = {}
        for k in spec.raster_layers:
            if k in out.traces:
                a = out.traces[k][:, rel].reshape(out.traces[k].shape[0], -1)
                rec["raster"][k] = {"shape": list(a.shape), "active": (a != 0).nonzero().tolist()}
    return rec


def _raw_compare(a: dict, b: dict, n: int, layers: tuple, start: int) -> dict:
    """Element-wise comparison of the common layers on the first ``n`` samples."""
    per_layer, first, values, mism = {}, None, 0, 0
    for rank, k in enumerate(layers):
        if k not in a or k not in b:
            continue
        x, y = a[k][:, :n], b[k][:, :n]
        if x.shape != y.shape:
            raise ValueError(f"layer {k}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        diff = x != y
        T = diff.shape[0]
        steps = diff.reshape(T, -1).sum(1).tolist()
        m = int(sum(steps))
        per_layer[k] = {"values": int(diff.numel()), "mismatches": m, "per_step": [int(s) for s in steps]}
        values += int(diff.numel())
        mism += m
        if m:
            pos = diff.nonzero()[0].tolist()  # row-major: smallest step, then sample
            cand = {"layer": k, "rank": rank, "step": pos[0], "sample": start + pos[1], "index": pos[2:],
                    "a_value": float(x[tuple(pos)]), "b_value": float(y[tuple(pos)])}
            if first is None or (cand["step"], rank, cand["sample"]) < (first["step"], first["rank"], first["sample"]):
                first = cand
    return {"values": values, "mismatches": mism, "per_layer": per_layer, "first": first}


def _float_attribution(ctx, names: tuple, outs: dict, x_enc, n: int, tolerance: float) -> dict:
    """``simulators.float_parity`` on the pair (side a plays "PyTorch"), on the graph the pair's
    non-torch stage was built from (BatchNorm folded for NIR)."""
    from step_deploy.simulators.float_parity import check_float_backend

    a, b = names
    graph = ctx.folded if "nir" in names else ctx.graph
    oa, ob = outs[a], outs[b]
    ta = {k: v[:, :n].to(torch.float64) for k, v in oa.traces.items()}
    tb = {k: v[:, :n].to(torch.float64) for k, v in ob.traces.items()}
    chk = check_float_backend(graph, x_enc[:, :n], oa.logits[:n], ta, ob.logits[:n], tb, tolerance=tolerance)
    firsts = chk["non_tie_flips"]["first"] + chk["torch_non_tie_flips"]["first"]
    return {"rounding_flips": chk["rounding_flips"] + chk["torch_rounding_flips"],
            "non_tie_flips": chk["non_tie_flips"]["count"] + chk["torch_non_tie_flips"]["count"],
            "cascade_mismatches": chk["cascade_mismatches"], "max_tie_distance": chk["max_tie_distance"],
            "first_non_tie": firsts[0] if firsts else None, "neurons_missing": len(chk["neurons_missing"]),
            "logit_ok": chk["teacher_forced_logit_error"] <= chk["logit_tolerance"]
            and chk["torch_teacher_forced_logit_error"] <= chk["logit_tolerance"],
            "ok": bool(chk["ok"])}


def _counter_slice(out: StageOutput, n: int, total_n: int) -> dict:
    """``{key: count over the first n samples}``; a counter the stage gives only as a total is kept
    only when ``n`` is all the samples it ran."""
    res = {}
    for group, d in out.counters.items():
        for k, v in d.items():
            if isinstance(v, (list, tuple, np.ndarray)) or torch.is_tensor(v):
                res[f"{group}/{k}"] = int(np.asarray(v)[:n].sum())
            elif n == total_n:
                res[f"{group}/{k}"] = int(v)
    return res


def run_shard(job: ParityJob, spec: ShardSpec, x: torch.Tensor, y: Optional[torch.Tensor]) -> dict:
    """Run every stage of ``spec`` on the samples ``x`` (raw inputs) and compare every pair."""
    import os

    delay = float(os.environ.get("STEP_DEPLOY_PARITY_SHARD_DELAY", "0") or 0)  # worker-loss test hook
    t0 = time.perf_counter()
    stages = registered_stages()
    result = {"shard": spec.index, "start": spec.start, "stop": spec.stop, "stages": {}, "pairs": {}}
    outs: dict[str, StageOutput] = {}
    with _one_thread(), torch.no_grad():
        ctx = context_for(job)
        from step_deploy.frontend import encoded_input

        x_enc = encoded_input(ctx.model, x)
        for name in spec.stages:
            st = stages[name]
            n = min(spec.samples_for(name), len(x))
            if n == 0:
                result["stages"][name] = {"status": "ok", "samples": 0}
                continue
            ts = time.perf_counter()
            try:
                if st.check is not None:
                    st.check(ctx)
                out = st.run(ctx, x[:n], x_enc[:, :n])
                out = StageOutput(out.logits.detach(), {k: v.detach() if torch.is_tensor(v) else torch.as_tensor(v)
                                                        for k, v in out.traces.items()},
                                  _counters_per_sample(out, n), out.counter_source)
            except NotApplicable as e:
                result["stages"][name] = {"status": "not applicable", "reason": str(e), "samples": 0}
                continue
            except REFUSALS as e:  # the stage's own documented refusal of this model (an op it does not build)
                result["stages"][name] = {"status": "not applicable", "samples": 0,
                                          "reason": f"refused by the stage: {_first_line(e)}"}
                continue
            except Exception as e:  # a stage that crashes is reported in its cells, the others go on
                tb = traceback.extract_tb(e.__traceback__)[-1]
                result["stages"][name] = {"status": "failed", "samples": 0,
                                          "reason": f"{type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:"
                                                    f"{tb.lineno})"}
                continue
            outs[name] = out
            result["stages"][name] = _stage_record(name, out, n, spec, y)
            result["stages"][name]["seconds"] = round(time.perf_counter() - ts, 3)
        names = [s for s in spec.stages if s in outs]
        tc = time.perf_counter()
        ints = {s: {k: _as_int(v) for k, v in outs[s].traces.items() if k in spec.layers} for s in names}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                n = min(result["stages"][a]["samples"], result["stages"][b]["samples"])
                kind = pair_kind(stages[a], stages[b])
                rec = {"kind": kind, "samples": n,
                       **_raw_compare(ints[a], ints[b], n, spec.layers, spec.start),
                       "agree": int((outs[a].logits[:n].argmax(-1) == outs[b].logits[:n].argmax(-1)).sum())}
                if kind == "float" and (rec["mismatches"] or "torch" in (a, b)):
                    # teacher forcing in float64: always against PyTorch (it proves the graph computes what the
                    # model computes and checks each backend's readout), and for any other pair that differs
                    rec["float"] = _float_attribution(ctx, (a, b), outs, x_enc, n, job.options.tolerance)
                ca = _counter_slice(outs[a], n, result["stages"][a]["samples"])
                cb = _counter_slice(outs[b], n, result["stages"][b]["samples"])
                rec["counters"] = {k: [ca[k], cb[k]] for k in sorted(set(ca) & set(cb))}
                result["pairs"][f"{a}|{b}"] = rec
        result["compare_seconds"] = round(time.perf_counter() - tc, 3)
    if delay:
        time.sleep(delay)
    result["seconds"] = round(time.perf_counter() - t0, 3)  # not written into the report (timing varies)
    return result


def _counters_per_sample(out: StageOutput, n: int) -> dict:
    """Per-sample counters where the stage's traces allow it: spikes per layer are recounted from
    the traces per sample only when the stage's own counter equals that count (they are the same
    quantity); otherwise the stage's own figures are kept as given."""
    res = {}
    for group, d in out.counters.items():
        res[group] = {}
        for k, v in d.items():
            if group == "spikes" and k in out.traces:
                t = out.traces[k][:, :n]
                per = (t != 0).reshape(t.shape[0], t.shape[1], -1).sum((0, 2))
                if int(per.sum()) == int(v if not isinstance(v, (list, np.ndarray)) else np.sum(v)):
                    res[group][k] = per.tolist()
                    continue
            res[group][k] = v
    return res
