"""Shard results -> the parity matrix (``parity.json``; schema in the module docstring of
:mod:`step_deploy.parity.report` and ``docs/parity.md``).

Everything adds up (counts, agreements, counters) or takes the minimum in causal order (the
first divergence: step, then layer order, then sample), so the result does not depend on which
worker ran which shard or in which order shards completed. The merge refuses a set of shards that
does not cover every sample exactly once: a lost or double-counted sample is an error, never a
silently wrong matrix."""
from __future__ import annotations

from typing import Optional

from step_deploy.errors import StepDeployError

from .stages import pair_kind, registered_stages


class MergeError(StepDeployError):
    """The shard results do not cover the run's samples exactly once."""


#: the attribution of a float pair on a shard where it was not needed (equal spikes, no PyTorch side)
_NO_FLIPS = {"rounding_flips": 0, "non_tie_flips": 0, "cascade_mismatches": 0, "max_tie_distance": 0.0,
             "first_non_tie": None, "logit_ok": True, "neurons_missing": 0, "ok": True}


def check_coverage(shards: list[dict], n: int) -> None:
    seen = sorted((s["start"], s["stop"], s["shard"]) for s in shards)
    pos = 0
    for start, stop, idx in seen:
        if start != pos:
            what = "counted twice" if start < pos else "missing"
            raise MergeError(f"samples {min(start, pos)}..{max(start, pos) - 1} are {what} (shard {idx}): the shard "
                             f"results do not cover the {n} samples exactly once")
        pos = stop
    if pos != n:
        raise MergeError(f"samples {pos}..{n - 1} are missing: the shard results do not cover the {n} samples")


def _first(cands: list[Optional[dict]]) -> Optional[dict]:
    cands = [c for c in cands if c]
    if not cands:
        return None
    f = min(cands, key=lambda c: (c["step"], c["rank"], c["sample"], c["index"]))
    return {k: f[k] for k in ("layer", "step", "sample", "index", "a_value", "b_value")}


def _causal(keys, layers: list[str]) -> list[str]:
    """``keys`` in the network's layer order (then any others, sorted): parity.json reads the same
    whichever shard, fresh or resumed, came first."""
    return [k for k in layers if k in keys] + sorted(k for k in keys if k not in layers)


def _stage_entry(name: str, recs: list[dict], steps: int, labelled: bool, layers: list[str]) -> dict:
    st = registered_stages()[name]
    e = {"title": st.title, "kind": st.kind, "domain": st.domain, "status": "ok", "reason": None, "samples": 0,
         "accuracy": None, "firing_rate": {}, "firing_rate_per_step": {}, "counters": {}, "counter_source": None}
    bad = next((r for r in recs if r["status"] == "failed"), None) or next(
        (r for r in recs if r["status"] == "not applicable"), None)
    if bad is not None:
        e.update(status=bad["status"], reason=bad["reason"])
        return e
    ran = [r for r in recs if r["samples"]]
    n = sum(r["samples"] for r in ran)
    e["samples"] = n
    if not ran:
        return e
    e["counter_source"] = ran[0]["counter_source"]
    if labelled:
        e["accuracy"] = sum(r["correct"] for r in ran) / n
    nz: dict = {}
    elements: dict = {}
    for r in ran:
        for k, v in r["nonzero_per_step"].items():
            acc = nz.setdefault(k, [0] * len(v))
            for t, c in enumerate(v):
                acc[t] += c
            elements[k] = r["elements"][k]
    for k in _causal(nz, layers):
        v = nz[k]
        denom = elements[k] * n
        e["firing_rate_per_step"][k] = [round(c / denom, 6) for c in v]
        e["firing_rate"][k] = round(sum(v) / (denom * len(v)), 6)
    return e


def _pair_entry(a: str, b: str, recs: list[dict], stages: dict, steps: int, layers: list[str]) -> dict:
    reg = registered_stages()
    kind = pair_kind(reg[a], reg[b])
    e = {"a": a, "b": b, "kind": kind, "verdict": None, "ok": None, "reason": None, "samples": 0, "values": 0,
         "mismatches": 0, "prediction_agreement": None, "per_layer": {}, "first": None, "float": None,
         "counters": {"compared": 0, "equal": True, "differences": []}}
    for side in (a, b):
        if stages[side]["status"] != "ok":
            e.update(kind="not applicable", verdict="n/a",
                     reason=f"{side}: {stages[side]['status']}: {stages[side]['reason']}")
            return e
    recs = [r for r in recs if r and r["samples"]]
    n = sum(r["samples"] for r in recs)
    e["samples"] = n
    if not n:
        e.update(kind="not applicable", verdict="n/a", reason="no sample was run by both stages")
        return e
    e["values"] = sum(r["values"] for r in recs)
    e["mismatches"] = sum(r["mismatches"] for r in recs)
    e["prediction_agreement"] = round(sum(r["agree"] for r in recs) / n, 6)
    for r in recs:
        for k, v in r["per_layer"].items():
            d = e["per_layer"].setdefault(k, {"values": 0, "mismatches": 0, "per_step": [0] * len(v["per_step"])})
            d["values"] += v["values"]
            d["mismatches"] += v["mismatches"]
            d["per_step"] = [x + y for x, y in zip(d["per_step"], v["per_step"])]
    e["per_layer"] = {k: e["per_layer"][k] for k in _causal(e["per_layer"], layers)}
    e["first"] = _first([r["first"] for r in recs])
    totals: dict = {}
    for r in recs:
        for k, (x, y) in r["counters"].items():
            t = totals.setdefault(k, [0, 0])
            t[0] += x
            t[1] += y
    diffs = [{"key": k, "a": x, "b": y} for k, (x, y) in sorted(totals.items()) if x != y]
    e["counters"] = {"compared": len(totals), "equal": not diffs, "differences": diffs[:20]}
    if kind == "float":
        # shards where the pair's spikes were equal and neither side is PyTorch carry no attribution
        fl = [r.get("float") or _NO_FLIPS for r in recs]
        non_ties = [f["first_non_tie"] for f in fl if f["first_non_tie"]]
        e["float"] = {"rounding_flips": sum(f["rounding_flips"] for f in fl),
                      "non_tie_flips": sum(f["non_tie_flips"] for f in fl),
                      "cascade_mismatches": sum(f["cascade_mismatches"] for f in fl),
                      "max_tie_distance": max(f["max_tie_distance"] for f in fl),
                      "first_non_tie": non_ties[0] if non_ties else None,
                      "logits_ok": all(f["logit_ok"] for f in fl), "neurons_missing": max(f["neurons_missing"]
                                                                                           for f in fl)}
        e["ok"] = all(f["ok"] for f in fl) and (e["mismatches"] > 0 or e["counters"]["equal"])
        e["verdict"] = "exact" if e["mismatches"] == 0 and e["ok"] else ("explained" if e["ok"] else "MISMATCH")
    elif kind == "exact":
        e["ok"] = e["mismatches"] == 0 and e["counters"]["equal"]
        e["verdict"] = "exact" if e["ok"] else "MISMATCH"
    else:
        e["verdict"] = "differs" if e["mismatches"] or e["prediction_agreement"] < 1 else "exact"
    return e


def merge(shards: list[dict], header: dict, chosen: list[str], layers: list[str], raster_sample: int,
          raster_layers: list[str]) -> dict:
    """The parity matrix of ``shards`` (one result per shard of the run)."""
    shards = sorted(shards, key=lambda s: s["shard"])
    check_coverage(shards, header["samples"])
    steps = header["steps"]
    labelled = header.get("labelled", False)
    stages = {s: _stage_entry(s, [sh["stages"][s] for sh in shards], steps, labelled, layers) for s in chosen}
    pairs = []
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            pairs.append(_pair_entry(a, b, [sh["pairs"].get(f"{a}|{b}") for sh in shards], stages, steps, layers))
    raster = {"sample": raster_sample, "layers": list(raster_layers), "shape": {}, "stages": {}}
    for sh in shards:
        for s, rec in sh["stages"].items():
            for k, v in rec.get("raster", {}).items():
                raster["shape"][k] = v["shape"]
                raster["stages"].setdefault(s, {})[k] = v["active"]
    failed = [s for s, e in stages.items() if e["status"] == "failed"]
    bad = [p for p in pairs if p["ok"] is False]
    ok = not failed and not bad
    counts = {v: sum(p["verdict"] == v for p in pairs) for v in ("exact", "explained", "MISMATCH", "differs", "n/a")}
    if ok:
        summary = (f"every pair that must agree agrees: {counts['exact']} exact, {counts['explained']} float pair(s) "
                   f"explained by threshold ties under rounding, {counts['differs']} quantized pair(s) reported, "
                   f"{counts['n/a']} not applicable")
    else:
        parts = []
        if bad:
            f = bad[0]
            where = (f" (first at layer {f['first']['layer']} step {f['first']['step']} sample {f['first']['sample']})"
                     if f["first"] else "")
            parts.append(f"{len(bad)} pair(s) that must agree do not: first {f['a']} vs {f['b']}, "
                         f"{f['mismatches']:,} mismatches{where}")
        if failed:
            parts.append(f"stage(s) failed: {', '.join(failed)}")
        summary = "; ".join(parts)
    return {**{k: v for k, v in header.items() if k != "labelled"}, "layers": list(layers), "stages": stages,
            "pairs": pairs, "raster": raster, "ok": ok, "summary": summary}
