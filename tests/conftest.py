import fcntl
import hashlib
import os
from pathlib import Path

#: thread pools limited to one thread in each parallel test worker (make test runs one per core)
ONE_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Set before numpy and torch load, so that this worker's OpenBLAS (numpy) and OpenMP (torch) pools
    # start with one thread, and every process it starts inherits it: the CLI subprocesses (README tour,
    # examples), Lava's runtime processes and Dask workers. With two threads each, the workers and their
    # subprocesses oversubscribe the cores and spin against each other. A value the caller set is kept.
    for _var in ONE_THREAD_ENV:
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread settings above)
import pytest  # noqa: E402
import torch  # noqa: E402

from step_deploy.models import build_model  # noqa: E402
from step_deploy.models.random_stats import randomize_batchnorm  # noqa: F401,E402  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # parallel test workers (make test runs one per core): one intra-op thread each, or the workers'
    # OpenMP threads oversubscribe the cores and spin against each other
    torch.set_num_threads(1)

#: the longest test files (measured with ``--durations``, about 40-190 s each on 2 cores), longest first.
#: ``make test`` hands whole files to its workers (``--dist loadfile``) in collection order; collected
#: alphabetically, a 3-minute file could start last and run alone while the other worker idles. Starting
#: the longest first ("longest processing time first") leaves the short files to fill the end.
LONGEST_FILES = (
    "test_examples.py", "test_zoo_trained_parity.py", "test_seed_trained_parity_a.py", "test_fpga_csim.py",
    "test_cycle_fpga.py", "test_seed_trained_parity_b.py", "test_quantize_fpga.py", "test_lava_parity.py",
    "test_parity.py", "test_bench_parity.py", "test_cli.py", "test_export_float_parity.py",
)


def pytest_collection_modifyitems(session, config, items):
    """Collected tests keep their order within a file; the files of :data:`LONGEST_FILES` move to the front."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (the benchmark scripts are not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_model(arch, seed=0, **over):
    torch.manual_seed(seed)
    return randomize_batchnorm(build_model(arch, **over).eval(), seed)


#: epochs of the tiny digits models the accuracy tests train (shared: each is trained once per run). The fewest
#: that pass the accuracy criteria with a margin (float >= 90 %, golden within 1 point, predictions agreeing on
#: >= 95 %), measured: Spikformer at 6 epochs loses 1.1 points on Loihi; SDT at 6 agrees on only 95.8 %;
#: QKFormer at 7: float 95.3 %, golden Loihi 95.8 %, FPGA 95.3 %, agreement 97.2 %
DIGITS_EPOCHS = {"spikformer-2-64-digits": 8, "sdt-1-64-digits": 8, "qkformer-2-64-digits": 7}


@pytest.fixture(scope="session")
def trained_digits():
    """``trained_digits(arch)``: a tiny digits model trained for ``DIGITS_EPOCHS[arch]`` epochs
    (seed 0), trained once per test session and shared by every test that asks for it."""
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = _trained_once(arch, DIGITS_EPOCHS[arch])
        return cache[arch]
    return get


def _fixture_source_hash() -> str:
    """What decides a trained fixture: the model, neuron, data and training code."""
    h = hashlib.sha256()
    src = ROOT / "step_deploy"
    for p in sorted([*src.glob("models/*.py"), *src.glob("data/*.py"), src / "training.py"]):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _fixture_path(arch: str, epochs: int, node: str | None = None, reset: str | None = None,
                  batch_size: int = 64) -> Path:
    """Where the trained fixture lives: the build cache (``$STEP_DEPLOY_CACHE/test-models``), keyed by the
    training arguments and a hash of the code that decides them."""
    root = Path(os.environ.get("STEP_DEPLOY_CACHE") or Path.home() / ".cache" / "step-deploy") / "test-models"
    root.mkdir(parents=True, exist_ok=True)
    neuron = "" if node is None else f"-{node}" + ("" if reset is None else f"-{reset}")
    batch = "" if batch_size == 64 else f"-b{batch_size}"
    return root / f"{arch}-e{epochs}{neuron}{batch}-seed0-{_fixture_source_hash()}.ckpt"


def _train_into(path: Path, arch: str, epochs: int, node: str | None = None, reset: str | None = None,
                batch_size: int = 64) -> None:
    """Train and save the checkpoint (caller holds its lock): written aside, then moved into place."""
    from step_deploy.frontend.checkpoint import save_checkpoint
    from step_deploy.training import TrainArgs, train

    args = TrainArgs(arch=arch, epochs=epochs, node=node, reset=reset, batch_size=batch_size)
    model, metrics = train(args, progress=False)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_checkpoint(model, tmp, metadata={**metrics, "arch_name": arch})
    os.replace(tmp, path)


#: the shared accuracy fixtures (:data:`DIGITS_EPOCHS`) that this run's collected tests ask for by their
#: ``arch`` parameter; filled by :func:`pytest_collection_finish` (every xdist worker sees the whole run)
WANTED_DIGITS: set = set()


def pytest_collection_finish(session):
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("arch") in DIGITS_EPOCHS and {"trained_digits", "fpga_digits"} & set(item.fixturenames):
            WANTED_DIGITS.add(params["arch"])


def _train_if_missing(path: Path, arch: str, epochs: int, *, wait: bool, **train) -> bool:
    """Train ``path`` under its file lock unless it is already there. ``wait=False``: give up (False) when
    another process holds the lock, i.e. is training it."""
    with open(path.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        if not path.is_file():
            _train_into(path, arch, epochs, **train)
    return True


def _prefetch_while_waiting(target: Path) -> None:
    """Another worker is training ``target``: rather than idle until it is done, train the other shared
    fixtures this run needs that nobody has trained or is training (each is needed by some worker soon;
    the three take ~3.5 min of one core on a cold cache), until ``target`` is there."""
    for arch in sorted(WANTED_DIGITS):
        if target.is_file():
            return
        path = _fixture_path(arch, DIGITS_EPOCHS[arch])
        if path != target and not path.is_file():
            _train_if_missing(path, arch, DIGITS_EPOCHS[arch], wait=False)


def _trained_once(arch: str, epochs: int, node: str | None = None, reset: str | None = None,
                  batch_size: int = 64):
    """The digits model ``arch`` trained for ``epochs`` (seed 0, batches of ``batch_size``), trained once
    per machine and code version: saved as a checkpoint in the build cache (:func:`_fixture_path`) under
    a file lock, so parallel test workers (pytest-xdist) and later runs load it instead of training
    again. A worker that finds it being trained by another trains the run's other shared fixtures
    meanwhile."""
    from step_deploy.frontend.checkpoint import load_checkpoint

    path = _fixture_path(arch, epochs, node, reset, batch_size)
    train = dict(node=node, reset=reset, batch_size=batch_size)
    if not _train_if_missing(path, arch, epochs, wait=False, **train):
        _prefetch_while_waiting(path)
        _train_if_missing(path, arch, epochs, wait=True, **train)
    model, _ = load_checkpoint(path)  # in place only once complete (written aside, then renamed)
    return model.eval()


#: calibration samples (the first N training digits) the FPGA quantization of the trained models uses;
#: ``accuracy_float_vs_golden`` calibrates on the same first 256 (its default), so both tests share one graph
FPGA_CALIB_SAMPLES = 256


@pytest.fixture(scope="session")
def fpga_digits(trained_digits):
    """``fpga_digits(arch) -> (model, qgraph, report, calib)``: the trained digits model quantized to
    ``'fpga-int'`` with the defaults (8-bit weights, bias correction) on the first
    ``FPGA_CALIB_SAMPLES`` training digits, once per session. The slow accuracy test
    (test_quantize_fpga) and the whole-test-set C simulation (test_fpga_csim) share it, so the
    calibration, bias-correction and saturation-count passes run once per architecture, not twice."""
    from step_deploy.data import load_dataset
    from step_deploy.frontend.capture import capture, encoded_input
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.passes.quantize_fpga import quantize_fpga

    cache = {}

    def get(arch):
        if arch not in cache:
            model = trained_digits(arch)
            calib = encoded_input(model, load_dataset("digits", "train").tensors[0][:FPGA_CALIB_SAMPLES])
            qgraph, report = quantize_fpga(fold_batchnorm(capture(model)), calib, steps=model.step)
            cache[arch] = (model, qgraph, report, calib)
        return cache[arch]
    return get


@pytest.fixture(scope="session")
def fpga_tiny():
    """``fpga_tiny(arch)``: a tiny digits architecture with random weights (``random_model``), BatchNorm
    folded, FPGA-quantized (T = 4) on 4 random images, once per session (the estimate and the
    cycle-level simulator tests share it)."""
    from step_deploy.frontend.capture import capture
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.passes.quantize_fpga import quantize_fpga

    cache = {}

    def get(arch):
        if arch not in cache:
            g = fold_batchnorm(capture(random_model(arch)))
            cache[arch] = quantize_fpga(g, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                                        steps=4)[0]
        return cache[arch]
    return get


def reuse_quantized(qgraph, report, calib):
    """A ``quantize`` callable for ``accuracy_float_vs_golden`` that hands back an already quantized
    graph; it first checks that it is asked for the same calibration data (else the reuse would be wrong)."""
    def quantize(graph, calib_inputs, steps=None, batch_size=64):
        assert steps == report["steps"] and torch.equal(calib_inputs, calib), \
            "reuse_quantized: asked for another calibration than the shared graph was quantized with"
        return qgraph, report
    return quantize


# ---- parity fixtures ----


@pytest.fixture(scope="session")
def parity_ckpt(tmp_path_factory):
    """A digits checkpoint for ``step-parity`` tests: ``spikformer-2-64-digits`` with random
    weights (BatchNorm statistics randomized so that it spikes), recorded as trained on the bundled
    ``digits`` (so its samples are the digits test split), saved once per session."""
    from step_deploy.frontend.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("parity_ckpt") / "sf.ckpt"
    return save_checkpoint(random_model("spikformer-2-64-digits"), path, metadata={"dataset": "digits"})


def parity_result(ckpt, work, *, samples: int, limits: dict, calib_samples: int = 32) -> dict:
    """``step-parity ckpt --stages all`` as its Python API computes it (one process, no Dask), without
    writing the report files and plots (``test_cli_parity``/``test_parity_report`` test those): the
    trained-model parity tests look only at the result that ``parity.json`` would hold."""
    from step_deploy.parity.command import RunOptions, compute
    from step_deploy.parity.context import ParityOptions

    ro = RunOptions(stages="all", samples=samples, limits=dict(limits), workers=0, work=str(work))
    result, _, _, _ = compute(ckpt, ParityOptions(calib_samples=calib_samples), ro)
    return result
