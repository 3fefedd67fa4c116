"""``step-parity``: one parity matrix across every stage of the pipeline (orchestration).

Loads the checkpoint, picks the samples, cuts them into shards, runs the shards (in this process,
on an embedded Dask cluster or on an existing one: :mod:`step_deploy.parity.cluster`), merges them
(:mod:`step_deploy.parity.merge`) and writes ``parity.{json,md,html}`` with the PNG plots into the
output directory, atomically. Exit codes: 0 every pair that must agree agrees; 1 a pair that must
agree does not, or a stage failed (the report is still written); 2 a usage or user error."""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from step_deploy.errors import UsageError

from .cluster import SCHEDULER_TIMEOUT
from .context import ParityJob, ParityOptions
from .shard import ShardSpec
from .stages import registered_stages

DEFAULT_SHARD = 32
NOISE_SAMPLES = 64  # --samples all on noise inputs
RASTER_LAYERS = 4


@dataclass(frozen=True)
class RunOptions:
    stages: str = "all"
    samples: Optional[int] = None      # None: all
    limits: dict = field(default_factory=dict, hash=False)  # stage -> samples (overrides the stage defaults)
    data: Optional[str] = None
    shard_size: int = DEFAULT_SHARD
    workers: Optional[int] = None      # None: one per core; 0: in this process, no Dask
    scheduler: Optional[str] = None
    scheduler_timeout: float = SCHEDULER_TIMEOUT  # seconds to keep trying to reach ``scheduler``
    resume: bool = False
    work: Optional[str] = None         # shard store root
    raster_layers: Optional[tuple] = None
    raster_sample: int = 0
    progress: bool = False


def parse_stages(text: str) -> list[str]:
    reg = registered_stages()
    if text in ("all", ""):
        return list(reg)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in reg]
    if unknown:
        raise UsageError(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from all, {', '.join(reg)}")
    if len(set(names)) != len(names):
        raise UsageError("--stages: a stage is named twice")
    return [s for s in reg if s in names]  # registry order: pairs and the matrix read the same way every time


def parse_limits(text: Optional[str]) -> dict:
    """``lava=4,csim=16`` -> ``{"lava": 4, "csim": 16}``; ``all`` lifts a default limit."""
    out: dict = {}
    reg = registered_stages()
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, val = part.partition("=")
        name, val = name.strip(), val.strip()
        if name not in reg or not val:
            raise UsageError(f"--limit {part!r}: give stage=N (stages: {', '.join(reg)})")
        if val == "all":
            out[name] = None
            continue
        out[name] = _count(val, f"--limit {part!r}", 0)
    return out


def parse_samples(text) -> Optional[int]:
    if text is None or str(text) == "all":
        return None
    return _count(text, f"--samples {text!r}", 1)


def _count(text, what: str, least: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"{what}: give a number of samples or 'all'") from None
    if n < least:
        raise UsageError(f"{what}: the number of samples must be at least {least}")
    return n


def validate(po: ParityOptions, ro: RunOptions) -> list[str]:
    chosen = parse_stages(ro.stages)
    if ro.shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1, got {ro.shard_size}")
    if ro.workers is not None and ro.workers < 0:
        raise UsageError(f"--workers must be >= 0 (0: run in this process without Dask), got {ro.workers}")
    if ro.workers == 0 and ro.scheduler:
        raise UsageError("--workers 0 runs in this process; --scheduler runs on a Dask cluster: give one of them")
    if not (math.isfinite(ro.scheduler_timeout) and ro.scheduler_timeout > 0):
        raise UsageError(f"--scheduler-timeout must be a positive number of seconds, got {ro.scheduler_timeout}")
    if po.calib_samples < 1:
        raise UsageError(f"--calib-samples must be at least 1, got {po.calib_samples}")
    if ro.raster_sample < 0:
        raise UsageError(f"--raster-sample must be >= 0, got {ro.raster_sample}")
    missing = [s for s in ro.limits if s not in chosen]
    if missing:
        raise UsageError(f"--limit names stage(s) not chosen with --stages: {', '.join(missing)}")
    if ro.workers != 0 or ro.scheduler:
        import importlib.util
        if importlib.util.find_spec("distributed") is None:
            raise UsageError("running on Dask needs the packages 'dask' and 'distributed' (make setup installs them); "
                             "or run in this process with --workers 0")
    return chosen


def _data(prep, po: ParityOptions, ro: RunOptions):
    """``(x, y, source, is_noise, options)``: the samples; without a data set for the checkpoint,
    clearly labelled noise (calibration too)."""
    from step_deploy.data.calibration import CalibrationError, resolve_calibration

    def resolve(which, n):
        # n_calib as the quantizers use it, so that the data source line describes the run
        return resolve_calibration(which, root=po.root, model=prep.model, info=prep.info, n_calib=po.calib_samples,
                                   n_eval=n)

    if ro.data is not None and po.calib is None:
        po = replace(po, calib=ro.data)  # as step-export's --calib: one source for calibration and samples
    try:
        d = resolve(ro.data, ro.samples)
    except CalibrationError:
        if ro.data is not None or po.calib is not None:
            raise
        d = resolve("noise", ro.samples or NOISE_SAMPLES)
        po = replace(po, calib="noise")
    x = d.x_eval if ro.samples is None else d.x_eval[:ro.samples]
    y = d.y_eval[:len(x)] if d.y_eval is not None else None
    return x, y, d.source, bool(d.is_noise), po


def _layers(prep) -> list[str]:
    from step_deploy import ir

    return [n.name for n in prep.graph.topo_order() if isinstance(n, ir.Neuron)]


def _raster_layers(layers: list[str], given: Optional[tuple]) -> list[str]:
    if given:
        bad = [g for g in given if g not in layers]
        if bad:
            raise UsageError(f"--raster-layers: {', '.join(bad)} is not a spiking layer; layers: "
                             f"{', '.join(layers[:8])}{' ...' if len(layers) > 8 else ''}")
        return list(given)
    if len(layers) <= RASTER_LAYERS:
        return list(layers)
    idx = sorted({round(i * (len(layers) - 1) / (RASTER_LAYERS - 1)) for i in range(RASTER_LAYERS)})
    return [layers[i] for i in idx]


def plan_shards(n: int, chosen: list[str], limits: dict, shard_size: int, layers, raster_sample: int,
                raster_layers) -> list[ShardSpec]:
    return [ShardSpec(i, s, min(n, s + shard_size), tuple(chosen), dict(limits), tuple(layers), raster_sample,
                      tuple(raster_layers)) for i, s in enumerate(range(0, n, shard_size))]


def effective_limits(chosen: list[str], given: dict) -> dict:
    reg = registered_stages()
    out = {s: reg[s].default_limit for s in chosen if reg[s].default_limit is not None}
    out.update(given)
    return {k: v for k, v in out.items() if v is not None}


def _store_key(job: ParityJob, x, y, specs: list[ShardSpec]) -> str:
    h = hashlib.sha256(job.key.encode())
    h.update(x.contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.contiguous().numpy().tobytes())
    h.update(json.dumps([[s.start, s.stop, list(s.stages), sorted(s.limits.items()), list(s.layers),
                          s.raster_sample, list(s.raster_layers)] for s in specs]).encode())
    return h.hexdigest()[:20]


def work_root(given: Optional[str]) -> Path:
    import os

    if given:
        return Path(given)
    root = Path(os.environ.get("STEP_DEPLOY_CACHE") or Path.home() / ".cache" / "step-deploy")
    return root / "parity"


def compute(ckpt, po: ParityOptions, ro: RunOptions):
    """``(result, stats, store, seconds)``."""
    from step_deploy.errors import require_checkpoint_file
    from step_deploy.export.common import prepare

    from .cluster import ShardStore, run_shards
    from .merge import merge

    chosen = validate(po, ro)
    require_checkpoint_file(ckpt)
    prep = prepare(ckpt)
    x, y, source, is_noise, po = _data(prep, po, ro)
    layers = _layers(prep)
    raster = _raster_layers(layers, ro.raster_layers)
    if ro.raster_sample >= len(x):
        raise UsageError(f"--raster-sample {ro.raster_sample}: only {len(x)} samples are selected")
    limits = effective_limits(chosen, ro.limits)
    specs = plan_shards(len(x), chosen, limits, ro.shard_size, layers, ro.raster_sample, raster)
    job = ParityJob(Path(ckpt).read_bytes(), Path(str(ckpt)).name, po)
    store = ShardStore(work_root(ro.work), _store_key(job, x, y, specs))
    t0 = time.perf_counter()
    shards, stats = run_shards(job, specs, x, y, store, workers=ro.workers, scheduler=ro.scheduler,
                               scheduler_timeout=ro.scheduler_timeout, resume=ro.resume, progress=ro.progress)
    seconds = time.perf_counter() - t0
    header = {"checkpoint": Path(str(ckpt)).name, "arch": getattr(prep.info, "arch", None), "data": source,
              "data_is_noise": is_noise, "steps": int(prep.model.step), "samples": len(x), "labelled": y is not None,
              "limits": {s: limits[s] for s in sorted(limits)},
              "options": {"chip": po.chip, "part": po.part, "clock_mhz": po.clock_mhz, "parallelism": po.parallelism,
                          "weight_bits": po.weight_bits, "tolerance": po.tolerance}}
    result = merge(shards, header, chosen, layers, ro.raster_sample, raster)
    return result, stats, store, seconds


def write(result: dict, out: Path) -> list[str]:
    """Write ``parity.{json,md,html}`` and the PNGs into ``out`` (a temporary directory)."""
    from . import report

    (out / "parity.json").write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    (out / "parity.md").write_text(report.markdown(result))
    pngs = report.write_plots(result, out)
    images = {name: (out / name).read_bytes() for name in pngs}
    (out / "parity.html").write_text(report.html(result, images))
    return ["parity.json", "parity.md", "parity.html", *pngs]


def run_command(ckpt, out, po: ParityOptions, ro: RunOptions, force: bool = False) -> tuple[list[str], int]:
    from step_deploy.atomic import atomic_output_dir, check_output_dir

    from . import report

    check_output_dir(out, force, inputs=[ckpt])  # refuse a bad -o before minutes of work
    result, stats, store, seconds = compute(ckpt, po, ro)
    with atomic_output_dir(out, force=force, writer="step-parity", inputs=[ckpt]) as tmp:
        files = write(result, tmp)
    n = result["samples"]
    lines = list(report.summary_lines(result))
    lines.append(f"wrote {out}: {', '.join(files)} (open {Path(out) / 'parity.html'})")
    rate = f", {n / seconds:.1f} samples/s" if stats.computed and seconds > 0 else ""
    lines.append(f"{stats.computed} shard(s) computed on {stats.where} in {seconds:.1f} s{rate}; "
                 f"{stats.reused} reused (--resume); shard results: {store.dir}")
    return lines, 0 if result["ok"] else 1
