"""Per-layer parallelism: the ``--parallelism`` syntax and the automatic choice.

Syntax (``parse_parallelism``): ``auto`` | ``8`` (every compute node) | ``node=4,other=16`` (the rest
1) | ``node=4,other=16,auto`` (the rest chosen automatically around the fixed ones) |
``node=4,*=8`` (the rest 8).

``auto_parallelism`` minimises the estimated latency subject to every resource (DSP, BRAM36, URAM,
LUT, FF) staying within ``budget ×`` the part. Greedy and deterministic: start from P = 1 (overrides
fixed); repeatedly take, over all layers and all their larger candidate P, the move that fits the
remaining budget with the most cycles saved per unit of the scarcest budget it uses (ties: more
cycles saved, then graph order); stop when no move fits. Moves to a larger P may also free
memory (small banks leave BRAM for LUTRAM), so every larger P is considered, not just the next.
The candidate P values of a layer with parallel dimension N are the
smallest P for each ``ceil(N / 2^k)`` (1, 2, 4, ..., N). A resource that the minimal design
(P = 1, overrides kept) already exceeds is held at that minimal amount instead of the budget, so
the latency is still minimised for what does fit; the fit check (``fits()``, ``FitError``) reports
the resource that does not.
"""
from __future__ import annotations

import re
from math import ceil
from typing import Mapping, Optional, Union

from .resource_model import AUTO_KEY, DEFAULT_KEY, ParallelismError, check_clock, DesignModel, positive
from .parts import RESOURCES, FpgaPart, load_part

_NAME = re.compile(r"^[^\s=,]+$")


def parse_parallelism(text) -> Union[str, int, dict]:
    """``"auto"`` -> ``"auto"``; ``"8"`` -> ``8``; ``"a=4,b=16"`` -> ``{"a": 4, "b": 16}``;
    ``"a=4,auto"`` -> ``{"a": 4, "auto": True}`` (the rest by ``auto_parallelism``);
    ``"a=4,*=8"`` -> ``{"a": 4, "*": 8}`` (the rest 8).
    Raises ``ParallelismError`` naming the bad part."""
    if isinstance(text, bool):
        raise ParallelismError(f"--parallelism {text!r}: expected 'auto', a positive integer or node=P pairs")
    if isinstance(text, int):
        return positive(text, "--parallelism")
    s = str(text).strip()
    if s.lower() == "auto":
        return "auto"
    if re.fullmatch(r"[+-]?\d+", s):
        return positive(int(s), "--parallelism")
    if not s:
        raise ParallelismError("--parallelism is empty: expected 'auto', a positive integer (e.g. 8) or "
                               "node=P pairs (e.g. head=4,block.0.mlp.fc1_linear=16[,auto])")
    out: dict = {}
    for item in s.split(","):
        item = item.strip()
        if item.lower() in ("auto", DEFAULT_KEY + "=auto"):
            key, val = AUTO_KEY, True
        else:
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key or not _NAME.match(key):
                raise ParallelismError(f"--parallelism {s!r}: {item!r} is not node=P (expected 'auto', a positive "
                                       "integer, or comma-separated node=P pairs, optionally ending in ',auto')")
            if key == AUTO_KEY:
                raise ParallelismError(f"--parallelism {s!r}: write 'auto' alone (not {item!r}) to choose the "
                                       "nodes not named automatically")
            if re.fullmatch(r"[+-]?\d+", raw):
                val = positive(int(raw), f"--parallelism {key}")
            else:
                raise ParallelismError(f"--parallelism {s!r}: the value of {key!r} must be a positive integer, "
                                       f"got {raw!r}")
        if key in out:
            raise ParallelismError(f"--parallelism {s!r}: {key!r} is given twice")
        out[key] = val
    return out


def _candidates(n: int) -> list[int]:
    """Smallest P for each distinct ``ceil(n / 2^k)``: 1, 2, 4, ..., n."""
    out, k = set(), 0
    while True:
        c = ceil(n / (1 << k))
        out.add(ceil(n / c))
        if c == 1:
            return sorted(out)
        k += 1


def _auto(model: DesignModel, fixed: dict[str, int], default: int, budget: float) -> dict[str, int]:
    par = {k: fixed.get(k, default) for k in model.nodes}
    have = model.part.resources()
    limit = {r: budget * have[r] for r in RESOURCES}
    totals = model.design(1.0, par).totals()
    # a resource the minimal design already exceeds may not grow beyond that minimum
    limit = {r: max(limit[r], totals[r]) for r in RESOURCES}
    ladders = {k: _candidates(model.shapes[k].n) for k in model.nodes if k not in fixed}

    def moves(k: str) -> list:
        """Every larger P of layer ``k``, best (cycles saved per budget used) first."""
        cur = model.layer(k, par[k])
        out = []
        for p in ladders[k]:
            if p <= par[k]:
                continue
            new = model.layer(k, p)
            gain = cur.cycles_per_step - new.cycles_per_step
            if gain <= 0:
                continue
            delta = {r: getattr(new, r) - getattr(cur, r) for r in RESOURCES}
            cost = max([delta[r] / limit[r] for r in RESOURCES if limit[r] > 0] + [0.0])
            out.append((gain / cost if cost > 0 else float("inf"), gain, -p, p, delta))
        out.sort(key=lambda m: m[:3], reverse=True)
        return out

    pending = {k: moves(k) for k in ladders}
    order = {k: i for i, k in enumerate(model.nodes)}
    while True:
        best = None
        for k, ms in pending.items():
            for m in ms:
                if all(totals[r] + m[4][r] <= limit[r] for r in RESOURCES):
                    if best is None or (m[:2], -order[k]) > (best[1][:2], -order[best[0]]):
                        best = (k, m)
                    break
        if best is None:
            return par
        k, m = best
        par[k] = m[3]
        for r in RESOURCES:
            totals[r] += m[4][r]
        pending[k] = moves(k)


def auto_parallelism(qgraph, part: Union[FpgaPart, str], clock_mhz: float = 200.0,
                     overrides: Optional[Mapping[str, int]] = None, budget: float = 0.8, *,
                     steps: Optional[int] = None) -> dict[str, int]:
    """``{node: P}`` for every compute node minimising the estimated latency with every resource
    <= ``budget ×`` the part; ``overrides`` ``{node: P}`` are kept fixed (see the module docstring
    for the search and what happens when even P = 1 does not fit)."""
    check_clock(clock_mhz)
    if not 0 < float(budget) <= 1:
        raise ParallelismError(f"budget {budget!r} must be a fraction of the part in (0, 1]")
    model = DesignModel(qgraph, load_part(part), steps)
    fixed = {}
    for k, v in (overrides or {}).items():
        if k in (DEFAULT_KEY, AUTO_KEY):
            continue
        model.check_node(k)
        fixed[k] = positive(v, f"parallelism of {k!r}")
    return _auto(model, fixed, 1, float(budget))


def resolve_parallelism(spec, qgraph, part: Union[FpgaPart, str], clock_mhz: float = 200.0, budget: float = 0.8,
                        *, steps: Optional[int] = None) -> dict[str, int]:
    """Turn anything ``parse_parallelism`` returns (or None / an int / a dict) into ``{node: P}``
    for every compute node, running ``auto_parallelism`` where ``auto`` is asked for."""
    if isinstance(spec, str) and spec != "auto":
        spec = parse_parallelism(spec)
    model = DesignModel(qgraph, load_part(part), steps)
    if spec == "auto":
        return auto_parallelism(qgraph, model.part, clock_mhz, None, budget, steps=steps)
    if isinstance(spec, Mapping) and spec.get(AUTO_KEY):
        return auto_parallelism(qgraph, model.part, clock_mhz, spec, budget, steps=steps)
    return model.resolve(spec)


__all__ = ["parse_parallelism", "auto_parallelism", "resolve_parallelism"]
