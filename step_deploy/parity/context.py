"""What a parity run ships to its workers (:class:`ParityJob`) and what each worker builds from it
once (:class:`StageContext`): the model, its float graphs, the Loihi and FPGA quantized graphs,
the ONNX and NIR artifacts and the compiled C simulation.

The job carries the checkpoint's bytes, not its path, so that workers on other machines (an
existing Dask cluster) need no shared file system. Every artifact is built lazily, on the first
stage that needs it, and deterministically: the calibration data, quantization and parallelism
search are the same on every worker, so every worker builds byte-identical networks (the job key
is a hash of everything that decides them). One context per job and process is cached
(:func:`context_for`)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Optional

from step_deploy import __version__


@dataclass(frozen=True)
class ParityOptions:
    """Everything besides the checkpoint and the samples that decides a parity run's numbers."""

    chip: str = "loihi2"              # Loihi spec: quantization, mapping and constraint check
    mesh_hardware: Optional[str] = None  # cycle-loihi hardware file (default: by chip)
    part: str = "zcu104"              # FPGA part
    clock_mhz: float = 200.0
    parallelism: str = "auto"         # FPGA parallelism as step-export's --parallelism
    weight_bits: int = 8              # FPGA weight bits
    calib: Optional[str] = None       # calibration data (default: the checkpoint's training split)
    root: Optional[str] = None
    calib_samples: int = 256
    tolerance: float = 1e-4           # float pairs: threshold-tie tolerance (simulators.float_parity)


@dataclass(frozen=True)
class ParityJob:
    """The checkpoint and options every shard of a run shares (pickled once to each worker)."""

    checkpoint: bytes = field(repr=False)
    checkpoint_name: str
    options: ParityOptions

    @cached_property
    def key(self) -> str:
        h = hashlib.sha256()
        h.update(self.checkpoint)
        h.update(json.dumps(asdict(self.options), sort_keys=True).encode())
        h.update(__version__.encode())
        return h.hexdigest()[:20]


class NotApplicable(Exception):
    """A stage cannot run for this model or on this machine; the message says why (one sentence)."""


_CONTEXTS: dict[str, "StageContext"] = {}


def context_for(job: ParityJob) -> "StageContext":
    """The worker's (cached) context of ``job``."""
    ctx = _CONTEXTS.get(job.key)
    if ctx is None:
        _CONTEXTS.clear()  # one job at a time per process: free the previous one's models
        ctx = _CONTEXTS[job.key] = StageContext(job)
    return ctx


class StageContext:
    """Lazily built artifacts of one job in one process. Properties raise :class:`NotApplicable`
    when the artifact cannot be built for this model (e.g. the network does not fit the chip)."""

    def __init__(self, job: ParityJob):
        self.job = job
        self.options = job.options
        self._tmp = tempfile.TemporaryDirectory(prefix="step_deploy_parity_")
        self.workdir = Path(self._tmp.name)

    # ---------------------------------------------------------------- model and float graphs
    @cached_property
    def prep(self):
        from step_deploy.export.common import prepare

        path = self.workdir / (Path(self.job.checkpoint_name).name or "model.ckpt")
        path.write_bytes(self.job.checkpoint)
        return prepare(path)

    @property
    def model(self):
        return self.prep.model

    @property
    def steps(self) -> int:
        return int(self.model.step)

    @property
    def graph(self):
        """The captured float graph (BatchNorm unfolded), as the reference and ONNX stages run it."""
        return self.prep.graph

    @cached_property
    def folded(self):
        from step_deploy.passes.fold_batchnorm import fold_batchnorm

        return fold_batchnorm(self.prep.graph)

    @cached_property
    def calibration(self):
        """The encoded calibration inputs (the same choice and count as ``step-export``)."""
        from step_deploy.data.calibration import resolve_calibration
        from step_deploy.frontend import encoded_input

        o = self.options
        data = resolve_calibration(o.calib, root=o.root, model=self.model, info=self.prep.info,
                                   n_calib=o.calib_samples, n_eval=1)
        return encoded_input(self.model, data.x_calib)

    # ---------------------------------------------------------------- Loihi
    @cached_property
    def loihi(self):
        """``(float graph as the chip sees it, quantized graph, spec)``, exactly as ``step-export
        --target loihi`` builds them; :class:`NotApplicable` with the first constraint error when
        the network does not fit the chip."""
        from step_deploy import ir
        from step_deploy.export.loihi import split_pipeline
        from step_deploy.passes import PIPELINES, PassContext, run_pipeline
        from step_deploy.targets import check_target, load_target

        spec = load_target(self.options.chip)
        ctx = PassContext(target=spec, steps=self.steps)
        float_stage, fixed_stage = split_pipeline(PIPELINES["loihi"])
        graph = run_pipeline(self.prep.graph, float_stage, ctx)
        errors = ir.errors(check_target(graph, spec, ctx.results["map-to-cores"]))
        if errors:
            e = errors[0]
            raise NotApplicable(f"the network does not fit {spec.name}: {len(errors)} constraint error(s), first {e}")
        ctx.calibration = self.calibration
        qgraph = run_pipeline(graph, fixed_stage, ctx)
        return graph, qgraph, spec

    # ---------------------------------------------------------------- FPGA
    @cached_property
    def fpga(self):
        """``(quantized graph, {node: P}, part)`` as ``step-export --target fpga`` builds them."""
        from step_deploy.fpga import estimate as est
        from step_deploy.fpga.parts import load_part
        from step_deploy.passes import PIPELINES, PassContext, run_pipeline

        o = self.options
        ctx = PassContext(steps=self.steps, calibration=self.calibration,
                          options={"quantize-fpga": {"weight_bits": o.weight_bits, "per_channel": True}})
        qgraph = run_pipeline(self.prep.graph, PIPELINES["fpga"], ctx)
        part = load_part(o.part)
        par = est.resolve_parallelism(est.parse_parallelism(o.parallelism), qgraph, part, o.clock_mhz)
        return qgraph, par, part

    @cached_property
    def hls(self):
        """``(HlsProject, compiled CSimModel)``: the generated C++ project, built with g++ (cached by
        content hash in the build cache)."""
        from step_deploy.fpga.csim import CSimError, CSimModel, ap_types_dir, compiler
        from step_deploy.fpga.hls_writer import HlsProject

        try:
            compiler(), ap_types_dir()
        except CSimError as e:
            raise NotApplicable(str(e)) from None
        qgraph, par, part = self.fpga
        proj = HlsProject(qgraph, parallelism=par, part=part.hls_part, clock_mhz=self.options.clock_mhz,
                          steps=self.steps)
        d = self.workdir / "hls"
        for rel, data in proj.files().items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(data)
        model = CSimModel(d)
        model.compile()
        return proj, model

    # ---------------------------------------------------------------- float artifacts
    @cached_property
    def onnx(self):
        from step_deploy.exporters.onnx_export import export_onnx
        from step_deploy.exporters.onnx_runner import OnnxSession

        model = export_onnx(self.graph, self.workdir / "model.onnx", expose_spikes=True)
        return OnnxSession(model)

    @cached_property
    def nir_graph(self):
        """The folded float graph written as NIR and read back into the IR."""
        from step_deploy.exporters.nir_export import write_nir
        from step_deploy.exporters.nir_read import read_nir_as_ir

        write_nir(self.folded, self.workdir / "model.nir")
        return read_nir_as_ir(self.workdir / "model.nir")

    def close(self) -> None:
        self._tmp.cleanup()


def require_module(module: str, pip_name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise NotApplicable(f"the Python package '{pip_name}' is not installed (make setup installs it)")


def in_daemon_process() -> bool:
    """Whether this process is a daemonic multiprocessing child (which may not start processes)."""
    import multiprocessing

    return bool(multiprocessing.current_process().daemon) and os.environ.get("STEP_DEPLOY_ALLOW_DAEMON") != "1"
