"""Make lava-nc 0.10.0 importable on Python 3.11, without touching site-packages.

lava-nc 0.10.0 declares ``Requires-Python <3.11``. Importing it on 3.11 fails for exactly one
reason, found by importing every module under ``lava.magma`` and ``lava.proc`` and running
LIF/Dense/Sparse/RingBuffer networks on ``Loihi2SimCfg(select_tag='fixed_pt')``:

* ``lava/magma/compiler/var_model.py`` declares three dataclasses (``CoreEncoder``,
  ``ChipEncoder``, ``AxonEncoder``) whose fields use an *instance* as default
  (``x: ByteEncoder = ByteEncoder()``). Since 3.11, ``dataclasses`` rejects unhashable defaults
  (``ValueError: mutable default ... use default_factory``). Nearly everything in lava imports
  that module (the compiler), so ``import lava.proc.lif.process`` fails too.

:func:`import_lava` installs a ``sys.meta_path`` finder that, only for the modules listed in
``_REWRITES``, loads the original file from site-packages and rewrites its *source text* before
compiling it (``x: ByteEncoder = ByteEncoder()`` → ``x: ByteEncoder =
field(default_factory=ByteEncoder)``). Line numbers are kept, so tracebacks still point at the
installed file. No ``.pyc`` is written for the rewritten module.

A second, defensive rewrite: ``lava/magma/runtime/message_infrastructure/multiprocessing.py``
calls ``multiprocessing.set_start_method('fork')`` at import time, which raises ``RuntimeError:
context has already been set`` when anything (torch, a test, a library) fixed the start method
before lava was imported. The rewrite keeps lava's behaviour (fork) but tolerates an earlier
``'fork'`` and forces fork (with a warning) only if another method was chosen.

Model discovery: :func:`register_process_models` lets our own processes (in
``step_deploy.exporters.lava_processes``) skip lava's model search, which would import every
module of ``step_deploy.exporters`` and re-execute every file of its directory on each compile
(it patches ``ProcGroupDiGraphs._find_proc_models`` in memory; unregistered processes are
searched as before).

Multiprocessing: Lava runs every process model in its own OS process, created with the
default start method, which lava sets to ``fork`` at import. Forked children inherit the
parent's already-imported, already-patched modules and never re-import lava, so the hook needs
nothing in the children; this is also why it works under pytest (checked: the tests run in
pytest, also after torch is imported). If the start method is switched to ``spawn`` *after*
lava was imported, each child unpickles its builder and re-imports lava without the hook, and
fails (``RuntimeError: context has already been set`` / the dataclass error): call
:func:`check_start_method` before a run (``lava_harness.run_open_loop`` does).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing
import re
import sys
import warnings
from typing import Callable

INSTALL_HINT = ("lava-nc 0.10.0 is not installed. Install it with: pip install --no-deps "
                "--ignore-requires-python lava-nc==0.10.0   (or run `make setup`)")

_DEFAULT_INSTANCE = re.compile(r"^(?P<head>\s+\w+\s*:\s*(?P<typ>\w+)\s*=\s*)(?P=typ)\(\)\s*$",
                               re.MULTILINE)


def _fix_instance_defaults(src: str) -> str:
    """``name: T = T()`` (dataclass field with an instance default) → ``default_factory=T``."""
    new, n = _DEFAULT_INSTANCE.subn(r"\g<head>_step_deploy_field(default_factory=\g<typ>)", src)
    if n == 0:
        return src
    # Import ``field`` on the first line after the __future__ import, keeping line numbers.
    future = "from __future__ import annotations"
    imp = "from dataclasses import field as _step_deploy_field"
    if future in new:
        return new.replace(future, f"{future}; {imp}", 1)
    return f"{imp}; " + new


_START_METHOD = "    mp.set_start_method('fork')"
_START_METHOD_FIX = ("    mp.get_start_method(allow_none=True) == 'fork' or "
                     "mp.set_start_method('fork', force=True)")


def _tolerant_start_method(src: str) -> str:
    """Make lava's import-time ``set_start_method('fork')`` idempotent (see module doc)."""
    return src.replace(_START_METHOD, _START_METHOD_FIX, 1) if _START_METHOD in src else src


#: module name -> source rewrite applied when it is imported
_REWRITES: dict[str, Callable[[str], str]] = {
    "lava.magma.compiler.var_model": _fix_instance_defaults,
    "lava.magma.runtime.message_infrastructure.multiprocessing": _tolerant_start_method,
}


class _RewritingLoader(importlib.abc.Loader):
    """Executes a module from its original file after a source-to-source rewrite."""

    def __init__(self, fullname: str, path: str, rewrite: Callable[[str], str]):
        self.fullname, self.path, self.rewrite = fullname, path, rewrite

    def create_module(self, spec):
        return None  # default module creation

    def get_source(self, fullname: str) -> str:
        with open(self.path, encoding="utf-8") as f:
            return self.rewrite(f.read())

    def exec_module(self, module) -> None:
        code = compile(self.get_source(self.fullname), self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)


class _LavaCompatFinder(importlib.abc.MetaPathFinder):
    """Finds the modules in ``_REWRITES`` with the normal path finder, then swaps the loader."""

    def find_spec(self, fullname, path=None, target=None):
        rewrite = _REWRITES.get(fullname)
        if rewrite is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return spec
        loader = _RewritingLoader(fullname, spec.origin, rewrite)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def install_hook() -> None:
    """Put the rewriting finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _LavaCompatFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LavaCompatFinder())


def _is_patched(module) -> bool:
    return isinstance(getattr(module, "__loader__", None), _RewritingLoader)


def import_lava():
    """Install the compatibility hook, import ``lava`` and return the package.

    Raises ImportError with the install command when lava-nc is not installed."""
    if importlib.util.find_spec("lava") is None or importlib.util.find_spec("lava.magma") is None:
        raise ImportError(INSTALL_HINT)
    install_hook()
    mp_module = "lava.magma.runtime.message_infrastructure.multiprocessing"
    method = multiprocessing.get_start_method(allow_none=True)
    if mp_module not in sys.modules and method not in (None, "fork"):
        warnings.warn(f"lava needs the 'fork' multiprocessing start method; importing it switches "
                      f"the process-wide start method from {method!r} to 'fork'", RuntimeWarning)
    lava = importlib.import_module("lava")
    # Import the patched modules eagerly so that a failure shows here, not deep in a compile.
    for name in _REWRITES:
        importlib.import_module(name)
    return lava


def check_start_method() -> None:
    """Raise RuntimeError unless multiprocessing uses ``fork`` (which lava's runtime needs)."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method not in (None, "fork"):
        raise RuntimeError(f"Lava runs need the 'fork' multiprocessing start method, but it is "
                           f"{method!r}; call multiprocessing.set_start_method('fork', force=True) "
                           f"before running Lava")


#: process class -> its process models, consulted before lava's directory scan
_MODEL_REGISTRY: dict[type, list[type]] = {}
#: process class -> what lava's directory scan found for it (lava's own processes: Dense, LIF, sources, sinks)
_FOUND: dict[type, list[type]] = {}


def register_process_models(proc_cls: type, *model_classes: type) -> None:
    """Tell lava's compiler where the process models of ``proc_cls`` are.

    Lava's compiler (``ProcGroupDiGraphs._find_proc_models``) looks for models by importing
    *every* sibling module of the process's package and re-executing every ``.py`` file in its
    directory (for ``step_deploy.exporters`` that would be all exporters, on every compile).
    For registered process classes the patched finder returns the registered models directly;
    lava's tag selection (``select_tag='fixed_pt'``) still applies. Other processes (lava's own) are
    found by lava's scan, once per class: its result depends only on the class, and a network of ~100
    processes spent ~1.8 s of its ~10 s run scanning the same few directories again and again."""
    import_lava()
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs

    _MODEL_REGISTRY.setdefault(proc_cls, [])
    for m in model_classes:
        if m not in _MODEL_REGISTRY[proc_cls]:
            _MODEL_REGISTRY[proc_cls].append(m)
    find = ProcGroupDiGraphs.__dict__["_find_proc_models"].__func__
    if getattr(find, "_step_deploy_patched", False):
        return

    def _find_proc_models(proc):
        cls = type(proc)
        models = _MODEL_REGISTRY.get(cls)
        if models:
            return list(models)
        if cls not in _FOUND:  # lava's scan depends only on the class: once per class and process, not per instance
            _FOUND[cls] = find(proc)
        return list(_FOUND[cls])

    _find_proc_models._step_deploy_patched = True
    ProcGroupDiGraphs._find_proc_models = staticmethod(_find_proc_models)


def lava_available() -> bool:
    """True when lava-nc is installed (does not import it)."""
    try:
        return importlib.util.find_spec("lava.magma") is not None
    except (ImportError, ValueError):
        return False


__all__ = ["import_lava", "install_hook", "lava_available", "register_process_models",
           "check_start_method", "INSTALL_HINT"]

if __name__ == "__main__":  # pragma: no cover - manual check
    warnings.simplefilter("default")
    print(import_lava().__path__)
