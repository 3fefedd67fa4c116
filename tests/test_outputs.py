"""Output paths never destroy what is not ours (issue 7 section 4): step_deploy.atomic and the
step-export command line."""
import json
import os
from pathlib import Path

import pytest

from step_deploy import atomic
from step_deploy.atomic import MARKER_NAME, atomic_output_dir, check_output_dir, check_output_file, read_marker
from step_deploy.errors import OutputError


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its bytes (None for folders)."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def hidden_leftovers(parent: Path) -> list:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def write_output(out, text="new", **kw):
    with atomic_output_dir(out, **kw) as tmp:
        (tmp / "result.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return Path(out)


@pytest.fixture
def foreign(tmp_path):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "notes.txt").write_text("my notes")
    (proj / "src" / "main.c").write_text("int main(void) { return 0; }")
    return proj


def test_new_output_has_content_and_marker_and_no_leftovers(tmp_path):
    out = write_output(tmp_path / "a" / "b")
    assert (out / "result.txt").read_text() == "new" and (out / "sub" / "data.bin").exists()
    marker = read_marker(out)
    assert marker["tool"] == "step-deploy" and marker["files"] == ["result.txt", "sub", "sub/data.bin"]
    assert hidden_leftovers(out.parent) == []


def test_foreign_directory_is_refused_and_untouched(foreign):
    before = snapshot(foreign)
    ran = []
    with pytest.raises(OutputError) as err:
        with atomic_output_dir(foreign) as tmp:
            ran.append(tmp)
    assert ran == [], "the refusal comes before any work"
    msg = str(err.value)
    assert str(foreign) in msg and "notes.txt" in msg and "--force" in msg and "-o" in msg
    assert snapshot(foreign) == before
    assert hidden_leftovers(foreign.parent) == []
    with pytest.raises(OutputError):
        check_output_dir(foreign)


def test_force_replaces_a_foreign_directory(foreign):
    write_output(foreign, force=True)
    assert sorted(snapshot(foreign)) == [MARKER_NAME, "result.txt", "sub", "sub/data.bin"]
    assert hidden_leftovers(foreign.parent) == []


def test_own_previous_output_is_replaced(tmp_path):
    out = write_output(tmp_path / "out", text="first")
    with atomic_output_dir(out) as tmp:
        (tmp / "other.txt").write_text("second")
    assert sorted(snapshot(out)) == [MARKER_NAME, "other.txt"]
    assert hidden_leftovers(tmp_path) == []


def test_own_output_with_a_file_added_by_the_user_is_refused(tmp_path):
    out = write_output(tmp_path / "out")
    (out / "sub" / "my-analysis.ipynb").write_text("{}")
    before = snapshot(out)
    with pytest.raises(OutputError, match=r"files were added.*sub/my-analysis\.ipynb.*--force"):
        write_output(out, text="again")
    assert snapshot(out) == before


def test_empty_directory_may_be_used(tmp_path):
    (tmp_path / "empty").mkdir()
    out = write_output(tmp_path / "empty")
    assert (out / "result.txt").read_text() == "new"


@pytest.mark.parametrize("force", [False, True])
def test_regular_file_is_refused_even_with_force(tmp_path, force):
    f = tmp_path / "existing.txt"
    f.write_text("precious")
    with pytest.raises(OutputError, match="is a file.*never replaces a file"):
        write_output(f, force=force)
    assert f.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"], "no hidden copy, no temp dir"


def test_path_below_a_file_is_refused_up_front(tmp_path):
    (tmp_path / "existing.txt").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "existing.txt" / "out")


def test_symlink_is_refused_and_its_target_untouched(tmp_path, foreign):
    link = tmp_path / "link"
    link.symlink_to(foreign)
    before = snapshot(foreign)
    with pytest.raises(OutputError, match="symbolic link"):
        write_output(link, force=True)
    assert link.is_symlink() and snapshot(foreign) == before


@pytest.mark.parametrize("name", [".", "..", "sub/..", "/"])
def test_current_directory_and_ancestors_are_refused_with_no_leftovers(tmp_path, monkeypatch, name):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    with pytest.raises(OutputError, match="current directory|file system root"):
        write_output(name, force=True)
    assert (work / "keep.txt").read_text() == "keep"
    assert hidden_leftovers(work) == [] and hidden_leftovers(tmp_path) == []


def test_home_directory_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputError, match="home directory"):
        check_output_dir("~", force=True)
    assert check_output_dir("~/exports") == home / "exports"


def test_directory_holding_an_input_is_refused_even_with_force(foreign):
    ckpt = foreign / "model.ckpt"
    ckpt.write_bytes(b"weights")
    with pytest.raises(OutputError, match="holds the input"):
        write_output(foreign, force=True, inputs=[ckpt])
    assert ckpt.read_bytes() == b"weights"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_inside_the_block_keeps_the_old_output_and_leaves_nothing(tmp_path, exc):
    out = write_output(tmp_path / "out", text="old")
    before = snapshot(out)
    with pytest.raises(exc):
        with atomic_output_dir(out) as tmp:
            (tmp / "result.txt").write_text("half")
            raise exc("stopped")
    assert snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []


def test_swap_without_renameat2_and_a_failed_rename_restores_the_old_output(tmp_path, monkeypatch):
    out = write_output(tmp_path / "out", text="old")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the portable rename-aside path
    write_output(out, text="replaced")
    assert (out / "result.txt").read_text() == "replaced" and hidden_leftovers(tmp_path) == []

    before = snapshot(out)
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in Path(src).name:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing_rename)
    with pytest.raises(OutputError, match="could not move the finished output into place"):
        write_output(out, text="lost")
    assert snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("mask,mode", [(0o027, 0o750), (0o002, 0o775)])
def test_created_directories_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert atomic.current_umask() == mask
        out = write_output(tmp_path / "out")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == mode
    assert ((out / "sub").stat().st_mode & 0o777) == mode
    assert ((out / "result.txt").stat().st_mode & 0o777) == 0o666 & ~mask


def test_marker_is_deterministic_and_lists_the_files(tmp_path):
    a = write_output(tmp_path / "a")
    b = write_output(tmp_path / "b")
    assert (a / MARKER_NAME).read_bytes() == (b / MARKER_NAME).read_bytes()
    body = json.loads((a / MARKER_NAME).read_text())
    assert set(body) == {"tool", "version", "written_by", "note", "files"}
    assert body["files"] == ["result.txt", "sub", "sub/data.bin"]


def test_check_output_file_rules(tmp_path):
    ours = tmp_path / "ours.ckpt"
    ours.write_text("ours")
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("theirs")
    is_ours = lambda p: p.read_text() == "ours"  # noqa: E731
    assert check_output_file(tmp_path / "new" / "m.ckpt", is_ours=is_ours) == tmp_path / "new" / "m.ckpt"
    assert check_output_file(ours, is_ours=is_ours) == ours
    with pytest.raises(OutputError, match="not a step-deploy checkpoint.*--force"):
        check_output_file(theirs, is_ours=is_ours, what="checkpoint")
    assert check_output_file(theirs, force=True, is_ours=is_ours) == theirs
    with pytest.raises(OutputError, match=r"is a directory.*model\.ckpt"):
        check_output_file(tmp_path, force=True, is_ours=is_ours, what="checkpoint")
    with pytest.raises(OutputError, match="names a folder"):
        check_output_file(f"{tmp_path}/runs/", is_ours=is_ours, what="checkpoint")


# ------------------------------------------------------------------------- step-export end to end


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from conftest import random_model
    from step_deploy.frontend.checkpoint import save_checkpoint

    return save_checkpoint(random_model("sdt-1-64-digits"), tmp_path_factory.mktemp("ck") / "model.ckpt")


def test_export_refuses_a_foreign_directory_and_keeps_its_files(tiny_ckpt, foreign, capsys):
    from step_deploy.cli import export_main

    before = snapshot(foreign)
    assert export_main([str(tiny_ckpt), "--target", "onnx", "-o", str(foreign), "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "notes.txt" in err and "--force" in err and "Traceback" not in err
    assert snapshot(foreign) == before
    assert hidden_leftovers(foreign.parent) == []


def test_export_to_current_directory_is_refused_without_leftovers(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from step_deploy.cli import export_main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert export_main([str(tiny_ckpt), "--target", "onnx", "-o", ".", "--samples", "2"]) == 2
    assert "current directory" in capsys.readouterr().err
    assert list(work.iterdir()) == [] and hidden_leftovers(tmp_path) == []


def test_export_force_replaces_a_foreign_directory(tiny_ckpt, foreign):
    """Needs step-export's --force (wired by the CLI/export restructuring)."""
    from step_deploy.cli import export_main

    assert export_main([str(tiny_ckpt), "--target", "onnx", "-o", str(foreign), "--samples", "2", "--force"]) == 0
    names = {p.name for p in foreign.iterdir()}
    assert "notes.txt" not in names and {"model.onnx", "summary.json", MARKER_NAME} <= names
    assert read_marker(foreign)["written_by"].startswith("step")
