"""``step_deploy.parity`` as a library: the same job gives the same matrix serially and on Dask, a
worker killed mid-run loses no sample and counts none twice, ``resume`` computes only what is
missing, a faulty stage is caught and located to the spike, and the energy counters are compared.

Every comparison here is element-wise with counts (the matrix's own numbers, checked against what
the test planted). The model is a random-weight digits Spikformer (``parity_ckpt`` in conftest);
runs stay small: 16 digits in shards of 4, the fast stages, 32 calibration samples."""
import json
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from step_deploy import ir
from step_deploy.parity import stages as stage_registry
from step_deploy.parity.command import RunOptions, compute
from step_deploy.parity.context import ParityOptions
from step_deploy.parity.stages import Stage, StageOutput, register_stage

FAST = "torch,reference,golden-loihi,cycle-loihi"
N = 16
SHARD = 4
OPTIONS = ParityOptions(calib_samples=32)
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_options(work, stages=FAST, **kw) -> RunOptions:
    kw.setdefault("workers", 0)
    return RunOptions(stages=stages, samples=N, shard_size=SHARD, work=str(work), **kw)


def parity_json(result: dict) -> bytes:
    """The bytes ``command.write`` puts into parity.json."""
    return (json.dumps(result, indent=1, sort_keys=False) + "\n").encode()


def pair(result: dict, a: str, b: str) -> dict:
    found = [p for p in result["pairs"] if (p["a"], p["b"]) == (a, b)]
    assert len(found) == 1, f"pair {a} vs {b} appears {len(found)} times"
    return found[0]


def assert_covers_once(store_dir, n: int, shard_size: int) -> None:
    """The shard files in the store cover samples 0..n-1, each exactly once."""
    spans = sorted((r["start"], r["stop"]) for r in
                   (json.loads(p.read_text()) for p in store_dir.glob("shard-*.json")))
    assert spans == [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def local_cluster(env=None):
    """A 2-process Dask LocalCluster with non-daemonic workers (what step-parity's own cluster uses)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.daemon": False,
                          "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                            silence_logs=logging.CRITICAL, env={**WORKER_ENV, **(env or {})})


@pytest.fixture(scope="module")
def serial(parity_ckpt, tmp_path_factory):
    """The reference run of this module: in this process, no Dask. ``(result, stats, store)``."""
    result, stats, store, _ = compute(parity_ckpt, OPTIONS, run_options(tmp_path_factory.mktemp("serial_work")))
    return result, stats, store


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    with local_cluster() as c:
        yield c


# ---------------------------------------------------------------------------- serial vs Dask


def test_the_serial_run_compares_every_pair_on_every_sample(serial):
    result, stats, store = serial
    assert stats.computed == N // SHARD and stats.reused == 0 and stats.where == "this process"
    assert result["samples"] == N and result["ok"] is True
    assert list(result["stages"]) == FAST.split(",")
    assert all(e["status"] == "ok" and e["samples"] == N for e in result["stages"].values())
    assert len(result["pairs"]) == 6
    layers = result["layers"]
    for p in result["pairs"]:
        assert p["samples"] == N and set(p["per_layer"]) == set(layers)
        assert p["values"] == sum(d["values"] for d in p["per_layer"].values()) > 0
        assert p["mismatches"] == sum(d["mismatches"] for d in p["per_layer"].values())
    assert pair(result, "torch", "reference")["verdict"] == "exact"
    assert pair(result, "golden-loihi", "cycle-loihi")["verdict"] == "exact"
    # float vs integer: quantization changes spikes; reported, never judged
    q = pair(result, "torch", "golden-loihi")
    assert q["kind"] == "quantized" and q["ok"] is None and q["verdict"] in ("differs", "exact")
    assert_covers_once(store.dir, N, SHARD)


def test_dask_gives_the_byte_identical_matrix(parity_ckpt, serial, cluster, tmp_path):
    result, stats, _, _ = compute(parity_ckpt, OPTIONS, run_options(tmp_path / "work", workers=None,
                                                                     scheduler=cluster.scheduler_address))
    assert stats.computed == N // SHARD and stats.reused == 0
    assert cluster.scheduler_address in stats.where and "2 workers" in stats.where
    assert parity_json(result) == parity_json(serial[0])


@pytest.mark.slow  # workers build the networks, one twice: 24 s on a quiet 2-core machine, 50 s on a busy one
def test_a_worker_killed_mid_run_loses_no_sample_and_counts_none_twice(parity_ckpt, serial, tmp_path):
    """Each shard sleeps 1 s on the workers (STEP_DEPLOY_PARITY_SHARD_DELAY), so that the run is
    still going when the first shard file lands in the store: then one worker that has a shard in
    hand is SIGKILLed. The scheduler reruns its shard elsewhere; the matrix equals the serial one."""
    pytest.importorskip("distributed")
    from distributed import Client

    work = tmp_path / "work"
    with local_cluster(env={"STEP_DEPLOY_PARITY_SHARD_DELAY": "1.0"}) as c, \
            Client(c, set_as_default=False) as client:
        pids = client.run(os.getpid)
        box = {}

        def job():
            try:
                box["run"] = compute(parity_ckpt, OPTIONS, run_options(work, workers=None,
                                                                       scheduler=c.scheduler_address))
            except BaseException as e:  # noqa: BLE001  (handed to the test thread)
                box["error"] = e

        th = threading.Thread(target=job, daemon=True)
        th.start()
        deadline = time.monotonic() + 180
        while True:  # the first shard is stored and a worker holds another one: kill that worker
            processing = client.processing()
            busy = [w for w, keys in processing.items() if keys and w in pids]
            if busy and list(work.glob("*/shard-*.json")):
                break
            assert th.is_alive(), f"the run ended before a worker could be killed mid-shard: {box}"
            assert time.monotonic() < deadline, "no shard result within 180 s"
            time.sleep(0.02)
        done_at_kill = len(list(work.glob("*/shard-*.json")))
        lost = list(processing[busy[0]])
        os.kill(pids[busy[0]], signal.SIGKILL)
        th.join(timeout=300)
        assert not th.is_alive(), "the run did not finish within 300 s of the kill"
        # the scheduler sent the killed worker's shard(s) out again
        sent = [t for t in client.story(*lost) if t[0] == "scheduler" and t[3] == "processing"]
        assert lost and len(sent) > len(lost), sent
    assert "error" not in box, box.get("error")
    assert done_at_kill < N // SHARD, "every shard was already done when the worker was killed"
    result, stats, store, _ = box["run"]
    assert stats.computed == N // SHARD
    assert all(e["samples"] == N for e in result["stages"].values())
    assert all(p["samples"] == N for p in result["pairs"])
    assert_covers_once(store.dir, N, SHARD)
    assert parity_json(result) == parity_json(serial[0])


# ---------------------------------------------------------------------------- resume


def test_resume_computes_only_the_missing_shards(parity_ckpt, serial, tmp_path):
    result0, _, store = serial
    shards = sorted(store.dir.glob("shard-*.json"))
    assert len(shards) == N // SHARD
    for p in shards[1:3]:
        p.unlink()
    result, stats, store2, _ = compute(parity_ckpt, OPTIONS, run_options(store.dir.parent, resume=True))
    assert store2.dir == store.dir
    assert (stats.computed, stats.reused) == (2, N // SHARD - 2)
    assert parity_json(result) == parity_json(result0)
    assert_covers_once(store.dir, N, SHARD)
    # a resumed run with nothing missing computes nothing
    result, stats, _, _ = compute(parity_ckpt, OPTIONS, run_options(store.dir.parent, resume=True))
    assert (stats.computed, stats.reused) == (0, N // SHARD)
    assert parity_json(result) == parity_json(result0)


def test_a_shard_of_another_job_is_not_resumed(parity_ckpt, tmp_path):
    """The store is keyed by the job: another calibration (another network) never reuses shards."""
    work = tmp_path / "work"
    _, stats, store, _ = compute(parity_ckpt, OPTIONS, run_options(work, stages="golden-loihi"))
    assert (stats.computed, stats.reused) == (N // SHARD, 0)
    _, stats, _, _ = compute(parity_ckpt, OPTIONS, run_options(work, stages="golden-loihi", resume=True))
    assert (stats.computed, stats.reused) == (0, N // SHARD)
    other = ParityOptions(calib_samples=16)
    _, stats, store2, _ = compute(parity_ckpt, other, run_options(work, stages="golden-loihi", resume=True))
    assert store2.dir != store.dir and (stats.computed, stats.reused) == (N // SHARD, 0)


# ---------------------------------------------------------------------------- faults are caught


@pytest.fixture
def extra_stage():
    """Register stages for one test; removed from the registry afterwards."""
    added = []

    def add(stage: Stage) -> Stage:
        added.append(stage.name)
        return register_stage(stage)

    yield add
    for name in added:
        stage_registry._STAGES.pop(name, None)


def _digit(i: int) -> torch.Tensor:
    from step_deploy.data import load_dataset

    return load_dataset("digits", "test").tensors[0][i]


def test_one_flipped_spike_is_caught_and_located(parity_ckpt, serial, extra_stage, tmp_path):
    layer, step, sample, flat = "block.0.mlp.fc1_lif", 2, 6, 37
    target = _digit(sample)
    planted = {}

    def run_faulty(ctx, x, x_enc):
        out = stage_registry._run_golden_loihi(ctx, x, x_enc)
        traces = {k: v.clone() for k, v in out.traces.items()}
        for b in range(len(x)):
            if torch.equal(x[b], target):
                t = traces[layer]
                idx = tuple(int(i) for i in np.unravel_index(flat, t.shape[2:]))
                old = t[(step, b, *idx)].item()
                t[(step, b, *idx)] = 1 - old
                planted.update(index=list(idx), old=float(old), new=float(1 - old))
        return StageOutput(out.logits, traces, out.counters, out.counter_source)

    extra_stage(Stage("faulty-loihi", "golden model with one spike flipped", "integer", "loihi", run_faulty))
    result, _, _, _ = compute(parity_ckpt, OPTIONS, run_options(tmp_path / "work",
                                                                stages="golden-loihi,cycle-loihi,faulty-loihi"))
    assert planted, f"sample {sample} was not among the inputs the stage saw"
    assert planted["old"] in (0.0, 1.0)
    for other in ("golden-loihi", "cycle-loihi"):
        p = pair(result, other, "faulty-loihi")
        assert p["kind"] == "exact" and p["verdict"] == "MISMATCH" and p["ok"] is False
        assert p["mismatches"] == 1 and p["values"] > 1_000_000
        assert p["per_layer"][layer]["mismatches"] == 1
        assert p["per_layer"][layer]["per_step"] == [int(t == step) for t in range(result["steps"])]
        assert p["first"] == {"layer": layer, "step": step, "sample": sample, "index": planted["index"],
                              "a_value": planted["old"], "b_value": planted["new"]}
    assert result["ok"] is False
    assert "golden-loihi vs faulty-loihi" in result["summary"] and f"layer {layer} step {step} sample {sample}" \
        in result["summary"]
    # the pair without the faulty stage is exactly what the run without it found
    assert pair(result, "golden-loihi", "cycle-loihi") == pair(serial[0], "golden-loihi", "cycle-loihi")


def test_a_float_stage_with_a_wrong_weight_is_a_mismatch_not_rounding(parity_ckpt, extra_stage, tmp_path):
    victim = "block.0.mlp.fc1_linear"

    def run_scaled(ctx, x, x_enc):
        from step_deploy.simulators.reference import run

        wrong = ctx.graph.copy()
        node = ctx.graph[victim]
        wrong.replace(ir.replace(node, weight=node.weight * 1.05))
        neurons = [n.name for n in wrong.topo_order() if isinstance(n, ir.Neuron)]
        res = run(wrong, x_enc, record=neurons)
        traces = {k: res.traces[k] for k in neurons}
        return StageOutput(res.final(), traces, stage_registry.counters_from_traces(traces), "spikes from traces")

    extra_stage(Stage("reference-w105", "reference, one weight 5 % off", "float", "float", run_scaled))
    result, _, _, _ = compute(parity_ckpt, OPTIONS, run_options(tmp_path / "work",
                                                                stages="torch,reference,reference-w105"))
    good = pair(result, "torch", "reference")
    assert good["verdict"] == "exact" and good["ok"] is True and good["mismatches"] == 0
    for a in ("torch", "reference"):
        p = pair(result, a, "reference-w105")
        assert p["kind"] == "float" and p["verdict"] == "MISMATCH" and p["ok"] is False
        assert p["mismatches"] > 0 and p["float"]["non_tie_flips"] > 0
        assert p["first"]["layer"] == "block.0.mlp.fc1_lif"  # the first neuron the weight feeds
        assert p["float"]["first_non_tie"]["layer"] == "block.0.mlp.fc1_lif"
        # nothing upstream of the wrong weight differs
        assert all(p["per_layer"][k]["mismatches"] == 0 for k in result["layers"][:result["layers"].index(
            "block.0.mlp.fc1_lif")])
    assert result["ok"] is False


# ---------------------------------------------------------------------------- counters


def test_energy_counters_are_compared_where_spikes_are_equal(serial):
    result = serial[0]
    layers = result["layers"]
    for a, b in (("golden-loihi", "cycle-loihi"), ("torch", "reference")):
        c = pair(result, a, b)["counters"]
        # spikes per layer and synaptic operations per synapse: more keys than spiking layers
        assert c["compared"] > len(layers) and c["equal"] is True and c["differences"] == []
    st = result["stages"]
    assert st["torch"]["counter_source"] != st["reference"]["counter_source"]  # hooks vs interpreter
    assert st["golden-loihi"]["counter_source"] != st["cycle-loihi"]["counter_source"]
    # where the spikes differ (float vs integer: quantization) the counters are seen to differ
    q = pair(result, "torch", "golden-loihi")
    assert q["mismatches"] > 0
    assert q["counters"]["compared"] > 0 and q["counters"]["equal"] is False and q["counters"]["differences"]


# ---------------------------------------------------------------------------- not applicable


def test_loihi1_marks_the_loihi_stages_not_applicable_and_drops_nothing(parity_ckpt, tmp_path):
    chosen = "torch,reference,golden-loihi,lava,cycle-loihi"
    result, _, _, _ = compute(parity_ckpt, ParityOptions(chip="loihi1", calib_samples=32),
                              run_options(tmp_path / "work", stages=chosen))
    assert list(result["stages"]) == chosen.split(",")
    for s in ("golden-loihi", "lava", "cycle-loihi"):
        e = result["stages"][s]
        assert e["status"] == "not applicable" and e["samples"] == 0
        assert "loihi1" in e["reason"] and "graded" in e["reason"]
    assert len(result["pairs"]) == 10  # every pair of the 5 chosen stages is in the matrix
    for p in result["pairs"]:
        if {p["a"], p["b"]} <= {"torch", "reference"}:
            assert p["verdict"] == "exact"
        else:
            assert p["verdict"] == "n/a" and p["ok"] is None and "not applicable" in p["reason"]
    assert result["ok"] is True
