"""Running the shards: in this process (``workers=0``), on an embedded Dask ``LocalCluster`` sized
to the machine (the default), or on an existing Dask cluster (``scheduler``, or Dask's own
``scheduler-address`` config / ``DASK_SCHEDULER_ADDRESS``).

- **Written as they complete.** Each shard's result goes to ``<store>/shard-NNNNN.json``
  (write to a temporary file, then rename) the moment the driver receives it; the store is keyed
  by the job (checkpoint bytes, options, samples, sharding), so a rerun with ``resume=True`` loads
  the shards already there and computes only the missing ones.
- **Worker loss.** A shard is one Dask task with a unique key; a worker that dies mid-task loses
  only its unfinished tasks, which the scheduler runs again elsewhere. The driver writes each
  shard once, and :func:`~step_deploy.parity.merge.check_coverage` refuses anything but one result
  per sample. Results are independent of which worker ran what: shards compute single-threaded and
  every worker builds the same networks from the same bytes.
- **Lava needs non-daemonic workers.** Lava starts OS processes; Python forbids that in a daemonic
  process, and Dask's nannies start workers as daemons by default. The embedded cluster is started
  with ``distributed.worker.daemon = False`` (kept set while it runs, so a restarted worker gets it
  too); on an existing cluster start the workers with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``,
  otherwise the Lava stage reports itself not applicable and says so.
- **Progress**: one bar over samples, across all workers (advanced as shards complete)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from step_deploy.errors import StepDeployError

from .shard import ShardSpec, run_shard


class ClusterError(StepDeployError):
    """The Dask scheduler cannot be reached, or a shard could not be computed."""


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


class ShardStore:
    """Shard results of one job on disk: ``<root>/<job key>/shard-NNNNN.json``."""

    def __init__(self, root: Path, key: str):
        self.dir = Path(root) / key
        self.key = key

    def path(self, index: int) -> Path:
        return self.dir / f"shard-{index:05d}.json"

    def load(self, spec: ShardSpec) -> Optional[dict]:
        p = self.path(spec.index)
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("job") != self.key or (rec.get("start"), rec.get("stop")) != (spec.start, spec.stop):
            return None
        return rec

    def save(self, result: dict) -> dict:
        """Write ``result``; returns it as it reads back (JSON types, keys sorted), so that a fresh
        shard and a resumed one merge into the same bytes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(result["shard"])
        tmp = p.with_name(p.name + f".tmp{os.getpid()}")
        text = json.dumps({**result, "job": self.key}, sort_keys=True)
        tmp.write_text(text)
        os.replace(tmp, p)
        return json.loads(text)

    def clear(self) -> None:
        if self.dir.is_dir():
            for p in self.dir.glob("shard-*.json*"):
                p.unlink()


@dataclass(frozen=True)
class RunStats:
    computed: int
    reused: int
    workers: int
    where: str  # "this process", "local Dask cluster (2 workers)", "tcp://...", for the printed line


def _bar(total: int, initial: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="parity", unit="sample", disable=not progress, leave=False)


#: seconds ``step-parity --scheduler`` keeps trying to reach the scheduler (``--scheduler-timeout``)
SCHEDULER_TIMEOUT = 10.0


def _connect(scheduler: Optional[str], workers: int, stack: contextlib.ExitStack,
             timeout: float = SCHEDULER_TIMEOUT):
    """A Dask client: on ``scheduler`` (tried for ``timeout`` seconds) or on a new LocalCluster of
    ``workers`` processes."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = stack.enter_context(Client(scheduler, timeout=f"{timeout:g}s", set_as_default=False))
        except (OSError, TimeoutError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({msg}): start one (`dask scheduler` "
                               f"and `dask worker {scheduler}`), or drop --scheduler to use a local cluster") from None
        n = len(client.scheduler_info().get("workers", {}))
        return client, f"Dask scheduler {scheduler} ({n} worker{'s' if n != 1 else ''})"
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_ in their workers' environment by default; any explicit value
    # turns off glibc's dynamic mmap threshold, so every large tensor is a fresh mmap: the golden model ran
    # 3x slower in a worker than in this process (benchmarks/bench_parity.py). Our workers keep glibc's default.
    stack.enter_context(dask.config.set({"distributed.worker.daemon": False,
                                         "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}))
    # CRITICAL: a worker's heartbeat racing the scheduler's shutdown logs a traceback at ERROR level at
    # the end of a good run; a shard that fails reaches the driver through its future and is reported there
    cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=logging.CRITICAL,
                                               env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}))
    client = stack.enter_context(Client(cluster, set_as_default=False))
    return client, f"local Dask cluster ({workers} worker process{'es' if workers != 1 else ''})"


def run_shards(job, specs: list[ShardSpec], x, y, store: ShardStore, *, workers: Optional[int] = None,
               scheduler: Optional[str] = None, scheduler_timeout: float = SCHEDULER_TIMEOUT, resume: bool = False,
               progress: bool = False):
    """Every shard's result (loaded from ``store`` with ``resume``, else computed), in shard order,
    and :class:`RunStats`."""
    results: dict[int, dict] = {}
    if resume:
        for s in specs:
            rec = store.load(s)
            if rec is not None:
                results[s.index] = rec
    else:
        store.clear()
    todo = [s for s in specs if s.index not in results]
    total = sum(s.stop - s.start for s in specs)
    done = sum(s.stop - s.start for s in specs if s.index in results)
    # default: one worker per core, but no more than there are shards to compute (a worker that would get
    # no shard still costs a process start: seconds of imports)
    workers = min(default_workers(), max(1, len(todo))) if workers is None else workers

    def part(s):
        return (x[s.start:s.stop], y[s.start:s.stop] if y is not None else None)

    if not todo:
        return [results[s.index] for s in specs], RunStats(0, len(results), 0, "nothing to compute (all resumed)")
    with _bar(total, done, progress) as bar:
        if workers == 0 and not scheduler:
            for s in todo:
                rec = run_shard(job, s, *part(s))
                results[s.index] = store.save(rec)
                bar.update(s.stop - s.start)
            where = "this process"
        else:
            where = _run_dask(job, todo, part, store, results, bar, workers, scheduler, scheduler_timeout)
    return [results[s.index] for s in specs], RunStats(len(todo), len(specs) - len(todo), workers, where)


def _run_dask(job, todo, part, store, results, bar, workers, scheduler, scheduler_timeout) -> str:
    from distributed import as_completed

    with contextlib.ExitStack() as stack:
        client, where = _connect(scheduler, workers, stack, scheduler_timeout)
        job_f = client.scatter(job, broadcast=True, hash=False)
        futures = {}
        for s in todo:
            xs, ys = part(s)
            f = client.submit(run_shard, job_f, s, xs, ys, key=f"step-parity-{job.key}-{s.index:05d}", pure=False)
            futures[f] = s
        try:
            for f, rec in as_completed(list(futures), loop=client.loop, with_results=True, raise_errors=False):
                s = futures[f]
                if f.status == "error":
                    exc = f.exception()
                    raise ClusterError(f"shard {s.index} (samples {s.start}..{s.stop - 1}) could not be computed: "
                                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                                       f"(the shards already done are kept: rerun with --resume)")
                results[s.index] = store.save(rec)
                bar.update(s.stop - s.start)
        finally:
            for f in futures:
                f.cancel()
    return where
