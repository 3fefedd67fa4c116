"""step-train checks its arguments and its output path before training (issue 7 sections 4, 5)."""
import dataclasses
import math
import os

import pytest
import torch

from conftest import random_model
from step_deploy import training
from step_deploy.cli import train_main
from step_deploy.errors import UsageError
from step_deploy.frontend.checkpoint import load_checkpoint, save_checkpoint
from step_deploy.training import TrainArgs, is_step_deploy_checkpoint, validate_train_args

ARCH = "sdt-1-64-digits"


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if step-train gets as far as training."""
    calls = []

    def refuse(args, *a, **k):
        calls.append(args)
        raise AssertionError("step-train started training although its arguments are invalid")

    monkeypatch.setattr(training, "train", refuse)
    return calls


@pytest.fixture
def quick_training(monkeypatch):
    """Replace training by a random model, so the output handling is tested in milliseconds."""
    calls = []

    def fake(args, *a, **k):
        calls.append(args)
        metrics = {"test_accuracy": 0.5, "test_samples": 360, "train_seconds": 0.0, "train_args": dict(vars(args))}
        return random_model(ARCH), metrics

    monkeypatch.setattr(training, "train", fake)
    return calls


def run(capsys, *argv):
    code = train_main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_existing_directory_as_output_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "runs").mkdir()
    code, _, err = run(capsys, "--arch", ARCH, "-o", str(tmp_path / "runs"))
    assert code == 2 and not no_training
    assert err.startswith("error: ") and "is a directory" in err and "model.ckpt" in err and "Traceback" not in err


def test_output_below_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "--arch", ARCH, "-o", str(tmp_path / "file" / "m.ckpt"))
    assert code == 2 and not no_training and "is a file, not a folder" in err


def test_foreign_file_is_kept_unless_force(tmp_path, capsys, quick_training):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, _, err = run(capsys, "--arch", ARCH, "-o", str(notes))
    assert code == 2 and not quick_training
    assert "not a step-deploy checkpoint" in err and "--force" in err
    assert notes.read_text() == "my notes"

    code, out, _ = run(capsys, "--arch", ARCH, "-o", str(notes), "--force")
    assert code == 0 and len(quick_training) == 1 and str(notes) in out
    assert is_step_deploy_checkpoint(notes)


def test_own_checkpoint_is_replaced_and_reused(tmp_path, capsys, quick_training):
    out = tmp_path / "m.ckpt"
    save_checkpoint(random_model(ARCH, seed=1), out, metadata={"train_args": {"arch": "other"}})
    assert run(capsys, "--arch", ARCH, "--epochs", "2", "-o", str(out))[0] == 0
    _, info = load_checkpoint(out)
    assert info.metadata["train_args"]["epochs"] == 2, "the old checkpoint was replaced"
    code, stdout, _ = run(capsys, "--arch", ARCH, "--epochs", "2", "-o", str(out), "--reuse")
    assert code == 0 and stdout.startswith("reusing") and len(quick_training) == 1


@pytest.mark.parametrize("argv,option", [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--T", "0"], "--T"),
    (["--seed", "-1"], "--seed"),
    (["--arch", "nope"], "unknown arch"),
    (["--data", "mnist"], "--data"),
    (["--data", "digits-seq", "--T", "4"], "one image row per step"),
    (["--data", "cifar10"], "--root"),
    (["--root", "/data"], "--root"),
])
def test_invalid_arguments_are_refused_before_any_work(tmp_path, capsys, no_training, argv, option):
    out = tmp_path / "m.ckpt"
    code, _, err = run(capsys, "--arch", ARCH, "-o", str(out), *argv)
    assert code == 2 and not no_training and not out.exists()
    assert err.startswith("error: ") and option in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_on_disk_data_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "cifar"
    empty.mkdir()
    code, _, err = run(capsys, "--arch", ARCH, "--data", "cifar10", "--root", str(empty), "-o", str(tmp_path / "m"))
    assert code == 2 and "cifar10" in err and str(empty) in err and "Traceback" not in err


def test_a_bug_is_not_disguised_as_a_user_error(tmp_path, monkeypatch):
    def broken(args, *a, **k):
        raise KeyError("internal")

    monkeypatch.setattr(training, "train", broken)
    with pytest.raises(KeyError):
        train_main(["--arch", ARCH, "-o", str(tmp_path / "m.ckpt")])


def test_validate_train_args_accepts_the_defaults_and_names_the_option():
    validate_train_args(TrainArgs(arch=ARCH))
    with pytest.raises(UsageError, match="--epochs must be an integer >= 1, got 0"):
        validate_train_args(TrainArgs(arch=ARCH, epochs=0))
    with pytest.raises(UsageError, match="--lr"):
        validate_train_args(TrainArgs(arch=ARCH, lr=math.inf))


def test_is_step_deploy_checkpoint(tmp_path):
    own = save_checkpoint(random_model(ARCH), tmp_path / "own.ckpt")
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)
    assert is_step_deploy_checkpoint(own)
    assert not is_step_deploy_checkpoint(png)
    assert not is_step_deploy_checkpoint(plain)
    assert not is_step_deploy_checkpoint(tmp_path)


@pytest.fixture
def small_digits(monkeypatch):
    """The first 64 training and 32 test digits, so the real training loop runs in a second."""
    real = training.load_dataset

    def small(name, split, **kw):
        ds = real(name, split, **kw)
        n = 64 if split == "train" else 32
        return torch.utils.data.TensorDataset(*(t[:n] for t in ds.tensors))

    monkeypatch.setattr(training, "load_dataset", small)


@pytest.fixture
def one_thread():
    """threads=1 sets torch's process-wide thread count: put it back afterwards."""
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_training_is_seeded_updates_the_weights_and_reports_metrics(small_digits, one_thread):
    args = TrainArgs(arch=ARCH, epochs=2, batch_size=32, threads=one_thread)
    m1, metrics = training.train(args, progress=False)
    m2, _ = training.train(args, progress=False)
    m3, _ = training.train(dataclasses.replace(args, seed=1), progress=False)
    training.seed_everything(args.seed)
    initial = training.build_model(ARCH, **training.model_overrides_for("digits", None)).state_dict()
    sd1, sd2, sd3 = (m.state_dict() for m in (m1, m2, m3))
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1), "the same seed must give the same weights"
    assert not all(torch.equal(sd1[k], sd3[k]) for k in sd1), "another seed must give other weights"
    assert not torch.equal(sd1["head.weight"], initial["head.weight"]), "training must move the weights"
    assert (metrics["train_samples"], metrics["test_samples"], metrics["epochs"], metrics["T"]) == (64, 32, 2, 4)
    assert 0 <= metrics["test_accuracy"] <= 1 and math.isfinite(metrics["final_train_loss"])
    assert metrics["train_args"] == dataclasses.asdict(args)


def test_checkpoint_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = save_checkpoint(random_model(ARCH), tmp_path / "m.ckpt")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644, "not mkstemp's 0600"
