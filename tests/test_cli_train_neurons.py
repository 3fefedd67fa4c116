"""step-train --node / --reset: any neuron of the zoo trains, the choice is saved in the checkpoint
and rebuilt by load_checkpoint (what step-export and step-parity load); a neuron or reset that
does not exist or does not apply is a one-line usage error before any training."""
import pytest
import torch

from step_deploy import training
from step_deploy.cli import train_main
from step_deploy.errors import UsageError
from step_deploy.frontend.checkpoint import load_checkpoint
from step_deploy.models import build_model
from step_deploy.models.neurons import iter_neurons
from step_deploy.training import TrainArgs, neuron_choice
from test_cli_train import small_digits  # noqa: F401  (fixture: the first 64/32 digits)

ARCH = "spikformer-2-64-digits"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield "1"
    torch.set_num_threads(before)


def test_step_train_node_ilif_trains_and_the_checkpoint_rebuilds_ilif(tmp_path, capsys, small_digits, one_thread):
    out = tmp_path / "ilif.ckpt"
    code = train_main(["--arch", ARCH, "--node", "ILIFNode", "--epochs", "1", "--batch-size", "64",
                       "--threads", one_thread, "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "with ilif neurons" in printed
    model, info = load_checkpoint(out)
    assert info.config["node"] == "ilif"  # STEP's class name saved as our short name
    assert info.metadata["train_args"]["node"] == "ILIFNode" and info.metadata["node"] == "ilif"
    kinds = {type(m).__name__ for _, m in iter_neurons(model)}
    assert kinds == {"ILIFNode"}
    # the rebuilt model is the trained one: integer spikes (0..2) come out of its neurons
    spikes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: spikes.append(o)) for _, m in iter_neurons(model)]
    with torch.no_grad():
        model(torch.rand(2, 1, 8, 8) * 4)
    for h in hooks:
        h.remove()
    values = torch.unique(torch.cat([s.flatten() for s in spikes]))
    assert set(values.tolist()) <= {0.0, 1.0, 2.0} and values.max() == 2.0


def test_soft_reset_builds_soft_reset_if_neurons():
    over = neuron_choice(TrainArgs(arch=ARCH, node="if", reset="soft"))
    assert over == {"node": "if", "reset": "soft"}
    m = build_model(ARCH, **over)
    assert {(type(n).__name__, n.reset_mode) for _, n in iter_neurons(m)} == {("IFNode", "soft")}


@pytest.mark.parametrize("argv, option", [
    (["--node", "nosuch"], "--node"),
    (["--node", "ilif", "--reset", "soft"], "--reset"),   # ILIF resets softly by definition: not a choice
    (["--node", "psn", "--reset", "soft"], "--reset"),
])
def test_a_wrong_neuron_choice_is_refused_before_training(tmp_path, capsys, monkeypatch, argv, option):
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained despite a usage error"))
    code = train_main(["--arch", ARCH, "-o", str(tmp_path / "m.ckpt"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and option in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match=option):
        training.validate_train_args(TrainArgs(arch=ARCH, **dict(zip(("node", "reset"), argv[1::2]))))
