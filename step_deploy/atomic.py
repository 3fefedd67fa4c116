"""Output paths that never destroy what is not ours.

Every output directory is written into a temporary sibling and moved into place only when
complete (``atomic_output_dir``). step-deploy replaces only a directory it wrote itself: each
output holds the marker file :data:`MARKER_NAME`, a small JSON that names the tool, its version,
what wrote the directory and every file in it. A directory without the marker, or with entries
the marker does not list (files a user added), is foreign: it is refused with an
:class:`~step_deploy.errors.OutputError` unless ``force=True`` (``--force``). An empty directory
may be used. Never replaced, even with force: a regular file, a symbolic link, the current
directory or one of its ancestors (``.``, ``..``, ``/``), the home directory, and a directory that
holds one of the command's inputs (e.g. the checkpoint being exported).

``check_output_dir`` / ``check_output_file`` make the same checks up front, so that a command
refuses its output path before minutes of work rather than after. Created directories get the
usual ``0o777 & ~umask`` mode; files keep the mode their writer gave them.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from step_deploy import __version__
from step_deploy.errors import OutputError

MARKER_NAME = ".step-deploy-output"
_MARKER_TOOL = "step-deploy"
_SHOW = 5  # entries named in a refusal message


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------------- marker


def _entries(directory: Path) -> list[str]:
    """Every file and folder under ``directory`` (relative, '/'-separated, sorted), links not followed."""
    found = []
    for root, dirs, files in os.walk(directory):
        rel = Path(root).relative_to(directory)
        found += [(rel / name).as_posix() for name in dirs + files]
    return sorted(found)


def marker_bytes(directory, writer: str) -> bytes:
    """The marker for ``directory`` as it is now: deterministic (no time stamps, no PIDs)."""
    files = [e for e in _entries(Path(directory)) if e != MARKER_NAME]
    body = {"tool": _MARKER_TOOL, "version": __version__, "written_by": writer,
            "note": "step-deploy wrote this directory; it replaces it on the next run to the same path "
                    "only while it holds nothing but the files listed here.",
            "files": files}
    return (json.dumps(body, indent=1) + "\n").encode()


def read_marker(directory) -> Optional[dict]:
    """The marker of ``directory`` if it is a step-deploy output, else ``None``."""
    marker = Path(directory) / MARKER_NAME
    if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > 10_000_000:
        return None
    try:
        body = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(body, dict) or body.get("tool") != _MARKER_TOOL:
        return None
    return body


def _foreign_entries(directory: Path) -> list[str]:
    """Entries of ``directory`` that step-deploy did not write (empty: it may be replaced)."""
    marker = read_marker(directory)
    if marker is None:
        return sorted(os.listdir(directory))  # the top level says enough (and a big folder is not walked)
    listed = marker.get("files")
    if not isinstance(listed, list):
        return []
    listed = set(listed)
    return [e for e in _entries(directory) if e != MARKER_NAME and e not in listed]


# ----------------------------------------------------------------------------------- checks


def _as_path(out) -> Path:
    if out is None or str(out) == "":
        raise OutputError("no output path given: pass one with -o")
    return Path(os.path.expanduser(str(out)))


def _listing(names: list[str]) -> str:
    more = f", ... ({len(names)} entries in all)" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def _refuse_links_and_workplaces(path: Path, raw: str) -> None:
    if path.is_symlink():
        raise OutputError(f"{raw}: is a symbolic link (to {os.readlink(path)}); step-deploy neither writes "
                          f"through nor replaces links. Give the real path, or another one with -o.")
    real = path.resolve()
    cwd = home = None
    with contextlib.suppress(OSError):  # the working directory may have been deleted
        cwd = Path.cwd().resolve()
    with contextlib.suppress(RuntimeError, KeyError, OSError):  # no home directory known
        home = Path.home().resolve()
    if real.parent == real:
        raise OutputError(f"{raw}: is the file system root; use a new sub-folder with -o.")
    if cwd is not None and (real == cwd or real in cwd.parents):
        where = "the current directory" if real == cwd else "a folder above the current directory"
        raise OutputError(f"{raw}: is {where} ({real}); an output directory is replaced as a whole, so it "
                          f"is never the folder you work in or one above it (not even with --force). "
                          f"Use a new sub-folder, e.g. -o ./export.")
    if real == home:
        raise OutputError(f"{raw}: is your home directory; it is never replaced (not even with --force). "
                          f"Use a new sub-folder, e.g. -o ~/step-deploy-out.")


def _refuse_holding_inputs(path: Path, raw: str, inputs: Iterable) -> None:
    real = path.resolve()
    for item in inputs:
        item_real = Path(os.path.expanduser(str(item))).resolve()
        if item_real == real or real in item_real.parents:
            raise OutputError(f"{raw}: holds the input {item}; replacing the output directory would delete it "
                              f"(not even --force does that). Choose an output path outside it with -o.")


def _check_creatable(path: Path, raw: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable directory."""
    ancestor = path.absolute().parent
    while not os.path.lexists(ancestor) and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{raw}: cannot be created because {ancestor} is a file, not a folder. "
                          f"Choose another path with -o.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{raw}: cannot be created: no permission to write in {ancestor}. "
                          f"Choose another path with -o.")


def check_output_dir(out, force: bool = False, *, inputs: Iterable = ()) -> Path:
    """Validate ``out`` as an output directory before any work; returns it as a Path.

    Accepted: a path that does not exist yet (and can be created), an empty directory, or a
    previous step-deploy output (marker present, nothing added since). With ``force`` also a
    foreign directory, whose contents are then deleted when the new output replaces it. Raises
    :class:`OutputError` (saying what is there and what to do) for everything else: a regular
    file, a link, the current directory or an ancestor of it, the home directory, a directory
    holding one of ``inputs``."""
    path = _as_path(out)
    raw = str(out)
    _refuse_links_and_workplaces(path, raw)
    _refuse_holding_inputs(path, raw, inputs)
    if not path.exists():
        _check_creatable(path, raw)
        return path
    if not path.is_dir():
        raise OutputError(f"{raw}: is a file, and step-deploy writes a directory there; it never replaces a "
                          f"file (not even with --force). Choose another path with -o.")
    foreign = _foreign_entries(path)
    if foreign and not force:
        kind = ("holds files step-deploy did not write" if read_marker(path) is None
                else "is an earlier step-deploy output, but files were added to it since")
        raise OutputError(f"{raw}: {kind} ({_listing(foreign)}); it is left untouched. Choose another output "
                          f"path with -o, or pass --force to replace the whole directory (its contents are "
                          f"deleted).")
    return path


def check_output_file(out, force: bool = False, *, is_ours: Callable[[Path], bool],
                      what: str = "file") -> Path:
    """Validate ``out`` as an output *file* before any work; returns it as a Path.

    It may not exist yet (its folder must be creatable), or be a regular file that ``is_ours``
    recognises (e.g. an earlier step-deploy checkpoint); with ``force`` any regular file. A
    directory, a link or a special file is refused with :class:`OutputError`."""
    path = _as_path(out)
    raw = str(out)
    if raw.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise OutputError(f"{raw}: names a folder; -o takes the {what} file to write, "
                          f"e.g. -o {path / ('model.ckpt' if what == 'checkpoint' else 'output')}.")
    if path.is_symlink():
        raise OutputError(f"{raw}: is a symbolic link (to {os.readlink(path)}); give the real path or another "
                          f"one with -o.")
    if not path.exists():
        _check_creatable(path, raw)
        return path
    if path.is_dir():
        example = path / ("model.ckpt" if what == "checkpoint" else "output")
        raise OutputError(f"{raw}: is a directory; -o takes the {what} file to write, e.g. -o {example}.")
    if not path.is_file():
        raise OutputError(f"{raw}: is not a regular file; choose another path with -o.")
    if not force and not is_ours(path):
        raise OutputError(f"{raw}: exists and is not a step-deploy {what}; it is left untouched. Choose another "
                          f"path with -o, or pass --force to overwrite it.")
    return path


# ------------------------------------------------------------------------------ the writer


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    OS or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _move_into_place(tmp: Path, path: Path) -> Optional[Path]:
    """Make ``tmp`` become ``path``; returns what must be deleted afterwards (the old output)."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return None
    if _exchange(tmp, path):
        return tmp  # tmp now holds the old output
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    try:
        os.rename(path, old)  # a directory may be renamed over an empty one
    except BaseException:
        os.rmdir(old)
        raise
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    return old


def _remove(path: Optional[Path]) -> None:
    if path is not None and os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out, force: bool = False, *, writer: str = "step-deploy",
                      inputs: Iterable = ()) -> Iterator[Path]:
    """``with atomic_output_dir(out) as tmp:`` write into ``tmp``; on success ``tmp`` (plus the
    marker, naming ``writer``) becomes ``out``. ``out`` is validated by :func:`check_output_dir`
    before and again after the block (it may have changed meanwhile). On any failure, including
    KeyboardInterrupt, ``out`` is unchanged and no temporary sibling is left behind."""
    inputs = tuple(inputs)
    path = check_output_dir(out, force, inputs=inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror or e}); choose another path "
                          f"with -o.") from None
    leftover: Optional[Path] = tmp
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        (tmp / MARKER_NAME).write_bytes(marker_bytes(tmp, writer))
        check_output_dir(out, force, inputs=inputs)
        try:
            leftover = _move_into_place(tmp, path)
        except OSError as e:
            raise OutputError(f"{out}: could not move the finished output into place ({e.strerror or e}); "
                              f"{out} is unchanged.") from None
    finally:
        _remove(leftover)  # the temporary folder after a failure, the old output after a success


__all__ = ["MARKER_NAME", "atomic_output_dir", "check_output_dir", "check_output_file", "current_umask",
           "marker_bytes", "read_marker"]
