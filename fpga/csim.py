"""C simulation of a generated HLS project with g++, in the manner of hls4ml's
``compile()``/``predict()``: the project's ``csim_bridge.cpp`` and top function are built into a
shared library (cached by a hash of every source byte, the compiler and the flags), loaded with
ctypes, and run sample by sample; every layer's output at every step comes back for parity.

The ``ap_int`` headers are those of the installed hls4ml wheel (found without importing it), or
``$STEP_DEPLOY_AP_TYPES``. Built libraries live in ``$STEP_DEPLOY_CACHE/csim`` (default
``~/.cache/step-deploy/csim``).
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from step_deploy.errors import StepDeployError

CXXFLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-Wno-unused-label", "-fPIC", "-shared")
SOURCES = ("csim_bridge.cpp", "firmware/stepd_top.cpp")
#: the one translation unit g++ compiles: it includes :data:`SOURCES` (from the project, found with ``-I``), so
#: the ap_int headers are parsed once, not once per source (measured: a third of a digits model's build time)
UNITY_SOURCE = "stepd_csim_unity.cpp"


class CSimError(StepDeployError):
    """The C simulation cannot be built or run (no g++, no ap_types headers, a compile error)."""


def ap_types_dir() -> Path:
    """The ``ap_types`` include directory: ``$STEP_DEPLOY_AP_TYPES`` or the installed hls4ml wheel's."""
    env = os.environ.get("STEP_DEPLOY_AP_TYPES")
    if env:
        p = Path(env)
    else:
        spec = importlib.util.find_spec("hls4ml")
        if spec is None or not spec.submodule_search_locations:
            raise CSimError("the ap_int headers come from the hls4ml wheel, which is not installed: "
                            "pip install hls4ml==1.3.0 (or set STEP_DEPLOY_AP_TYPES to an ap_types directory)")
        p = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    if not (p / "ap_int.h").is_file():
        raise CSimError(f"no ap_int.h in {p}: set STEP_DEPLOY_AP_TYPES to a directory with the ap_types headers")
    return p


def compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise CSimError(f"C++ compiler {cxx!r} not found: install g++ (apt-get install g++) or set CXX")
    return path


def cache_dir() -> Path:
    root = Path(os.environ.get("STEP_DEPLOY_CACHE") or Path.home() / ".cache" / "step-deploy")
    return root / "csim"


def _project_sources(project: Path) -> list[Path]:
    files = [project / s for s in SOURCES]
    files += sorted((project / "firmware").rglob("*.h"))
    return files


def build_key(project: Path, cxx: str, ap_dir: Path) -> str:
    """Hash of every source byte (with relative paths), the compiler's version and the flags."""
    h = hashlib.sha256()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h.update(json.dumps([version, list(CXXFLAGS), str(ap_dir), UNITY_SOURCE]).encode())
    for f in _project_sources(project):
        h.update(str(f.relative_to(project)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


@dataclass
class CSimResult:
    """``outputs``: ``(n, *out_shape)`` int64 (the top's output after the last step);
    ``traces``: ``{node: (T, n, *shape)}`` int64, every traced layer at every step."""

    outputs: np.ndarray
    traces: dict = field(default_factory=dict)
    seconds: float = 0.0


class CSimModel:
    """A generated project, compiled with g++ and run through ctypes."""

    def __init__(self, project: Union[str, Path]):
        self.project = Path(project)
        mf = self.project / "project.json"
        if not mf.is_file():
            raise CSimError(f"{self.project} is not a step-deploy FPGA project (no project.json)")
        self.manifest = json.loads(mf.read_text())
        self.steps = int(self.manifest["steps"])
        self.layers = self.manifest["layers"]
        self.in_shape = tuple(self.manifest["input"]["shape"])
        self.out_shape = tuple(self.manifest["output"]["shape"])
        self.lib_path: Optional[Path] = None
        self.build_seconds = 0.0
        self.cached = False
        self._lib = None

    def compile(self) -> Path:
        """Build (or reuse from the cache) the shared library; returns its path."""
        cxx, ap_dir = compiler(), ap_types_dir()
        key = build_key(self.project, cxx, ap_dir)
        out = cache_dir() / f"stepd-{key}.so"
        self.cached = out.is_file()
        if not self.cached:
            out.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                tmp_lib = Path(tmp) / out.name
                unity = Path(tmp) / UNITY_SOURCE
                unity.write_text("".join(f'#include "{s}"\n' for s in SOURCES))
                cmd = [cxx, *CXXFLAGS, "-isystem", str(ap_dir), "-I", str(self.project),
                       "-I", str(self.project / "firmware"), "-I", str(self.project / "firmware" / "kernels"),
                       str(unity), "-o", str(tmp_lib), "-lpthread"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    log = self.project / "csim_build.log"
                    first = next((l for l in proc.stderr.splitlines() if " error: " in l or "fatal error" in l),
                                 proc.stderr.strip()[:300])
                    try:
                        log.write_text(" ".join(cmd) + "\n\n" + proc.stderr)
                        where = f"; full log in {log}"
                    except OSError:
                        where = ""
                    raise CSimError(f"g++ could not compile the generated project {self.project}: {first}{where}. "
                                    "This is a bug in step-deploy's FPGA writer: please report it with the log")
                self.warnings = [l for l in proc.stderr.splitlines() if "warning" in l]
                os.replace(tmp_lib, out)
            self.build_seconds = time.perf_counter() - t0
        self.lib_path = out
        self._lib = ctypes.CDLL(str(out))
        self._lib.stepd_run.restype = ctypes.c_int
        self._lib.stepd_run.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        sizes = (ctypes.c_int64 * 4)()
        self._lib.stepd_sizes(sizes)
        want = [self.steps, int(np.prod(self.in_shape)), int(np.prod(self.out_shape)), len(self.layers)]
        if list(sizes) != want:
            raise CSimError(f"library {out} does not match {self.project}/project.json ({list(sizes)} != {want})")
        return out

    def predict(self, x: np.ndarray, trace: Union[bool, Iterable[str]] = True, batch: int = 64,
                threads: Optional[int] = None) -> CSimResult:
        """Run integer inputs ``x`` of shape ``(n, T, *in_shape)`` (the input quantizer's output).
        ``trace``: True for every layer, False for none, or the node names to return. ``threads``:
        samples run on this many threads (default ``$STEP_DEPLOY_CSIM_THREADS`` or the CPU count);
        every sample is an independent call of the top, so the results do not depend on it."""
        threads = int(threads or os.environ.get("STEP_DEPLOY_CSIM_THREADS") or os.cpu_count() or 1)
        if self._lib is None:
            self.compile()
        x = np.ascontiguousarray(x, dtype=np.int64)
        if x.shape[1:] != (self.steps, *self.in_shape):
            raise CSimError(f"input shape {x.shape[1:]} != (T, *input) = {(self.steps, *self.in_shape)}")
        n = x.shape[0]
        names = ([l["node"] for l in self.layers] if trace is True else list(trace or ()))
        unknown = sorted(set(names) - {l["node"] for l in self.layers})
        if unknown:
            raise CSimError(f"no traced layer named {unknown[0]!r} in {self.project}")
        offsets = np.full(len(self.layers), -1, np.int64)
        stride = 0
        for l in self.layers:
            if l["node"] in names:
                offsets[l["id"]] = stride
                stride += self.steps * int(l["size"])
        out_size = int(np.prod(self.out_shape))
        outputs = np.zeros((n, out_size), np.int32)
        tr = np.zeros((n, max(stride, 1)), np.int32)
        t0 = time.perf_counter()
        x32 = x.astype(np.int32)
        if not np.array_equal(x32, x):
            raise CSimError("inputs do not fit int32")
        for s in range(0, n, batch):
            e = min(n, s + batch)
            xb = np.ascontiguousarray(x32[s:e])
            ob = np.zeros((e - s, out_size), np.int32)
            tb = np.zeros((e - s, max(stride, 1)), np.int32)
            rc = self._lib.stepd_run(xb.ctypes.data, e - s, ob.ctypes.data, tb.ctypes.data if stride else None,
                                     offsets.ctypes.data, stride, threads)
            if rc == 2:
                ii = self.manifest["input"]
                raise CSimError(f"an input value is outside the top's input type {ii['ctype']} "
                                f"[{ii['lo']}, {ii['hi']}]: pass the input quantizer's integers")
            if rc != 0:
                raise CSimError(f"C simulation failed (code {rc}): could not start its thread")
            outputs[s:e], tr[s:e] = ob, tb
        seconds = time.perf_counter() - t0
        traces = {}
        for l in self.layers:
            if offsets[l["id"]] >= 0:
                o, size = int(offsets[l["id"]]), int(l["size"])
                v = tr[:, o:o + self.steps * size].reshape(n, self.steps, *l["shape"])
                traces[l["node"]] = np.moveaxis(v, 1, 0).astype(np.int64)
        return CSimResult(outputs.reshape(n, *self.out_shape).astype(np.int64), traces, seconds)


__all__ = ["CSimModel", "CSimResult", "CSimError", "ap_types_dir", "compiler", "cache_dir", "build_key"]
