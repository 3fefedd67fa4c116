"""Checkpoints: own format, STEP/timm format with argparse.Namespace, bare state_dict; every error."""
import argparse
import collections
import os
import pickle

import pytest
import torch

from conftest import random_model
from step_deploy import load_checkpoint
from step_deploy.frontend.checkpoint import CheckpointError, save_checkpoint
from step_deploy.models import build_model

ARCH = "spikformer-2-64-digits"


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_own_format_round_trip(tmp_path):
    m = random_model(ARCH)
    p = save_checkpoint(m, tmp_path / "m.ckpt", metadata={"dataset": "digits", "test_accuracy": 0.9})
    m2, info = load_checkpoint(p)
    assert info.format == "step-deploy" and info.metadata["dataset"] == "digits"
    assert _same_weights(m, m2) and not m2.training
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(m(x), m2(x))
    assert not list(tmp_path.glob("*partial*")), "no temporary file left behind"


def _step_args(**over):
    a = dict(model="spikformer_cifar", step=4, img_size=8, patch_size=2, in_channels=1, num_classes=10, embed_dim=64,
             num_heads=4, mlp_ratio=4, attn_scale=0.125, depths=2, tau=2.0, threshold=1.0, node_type="LIFNode",
             dataset="torch/cifar10")
    a.update(over)
    return argparse.Namespace(**a)


def test_step_timm_checkpoint_with_namespace(tmp_path):
    args = _step_args(patch_size=4, img_size=32, in_channels=3)  # STEP's CIFAR stem always downsamples x4
    src = build_model("spikformer", **{k: getattr(args, k) for k in ("step", "img_size", "patch_size", "in_channels",
                                                                      "embed_dim", "num_heads", "depths")})
    ck = {"epoch": 3, "arch": "spikformer_cifar", "state_dict": collections.OrderedDict(src.state_dict()),
          "optimizer": {"state": {}, "param_groups": []}, "version": 2, "args": args, "amp_scaler": {}, "metric": 91.5}
    torch.save(ck, tmp_path / "model_best.pth.tar")
    m, info = load_checkpoint(tmp_path / "model_best.pth.tar")
    assert info.format == "step" and info.metadata["metric"] == 91.5 and info.arch == "spikformer"
    assert _same_weights(src, m)


def test_ddp_prefix_is_stripped(tmp_path):
    src = random_model(ARCH)
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "sd.pt")
    m, _ = load_checkpoint(tmp_path / "sd.pt", arch=ARCH)
    assert _same_weights(src, m)


def test_bare_state_dict_needs_arch(tmp_path):
    src = random_model("sdt-1-64-digits")
    torch.save(src.state_dict(), tmp_path / "sd.pt")
    m, info = load_checkpoint(tmp_path / "sd.pt", arch="sdt-1-64-digits")
    assert info.format == "state_dict" and _same_weights(src, m)
    with pytest.raises(CheckpointError, match="--arch"):
        load_checkpoint(tmp_path / "sd.pt")


def test_missing_empty_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.ckpt")
    p = save_checkpoint(random_model(ARCH), tmp_path / "m.ckpt")
    data = p.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.ckpt")
    (tmp_path / "notes.txt").write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot be read|not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"foo": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/step_deploy_pwned",))


def test_code_execution_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Payload()}, tmp_path / "evil.pt")
    if os.path.exists("/tmp/step_deploy_pwned"):
        os.remove("/tmp/step_deploy_pwned")
    with pytest.raises(CheckpointError, match="execute code"):
        load_checkpoint(tmp_path / "evil.pt", arch=ARCH)
    assert not os.path.exists("/tmp/step_deploy_pwned")
    with open(tmp_path / "raw.pkl", "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "raw.pkl", arch=ARCH)
    assert not os.path.exists("/tmp/step_deploy_pwned")


def test_unknown_arch_key_and_shape_errors(tmp_path):
    sd = random_model(ARCH).state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="unknown arch"):
        load_checkpoint(tmp_path / "sd.pt", arch="resnet50")
    with pytest.raises(CheckpointError, match="missing keys|unexpected keys|shape"):
        load_checkpoint(tmp_path / "sd.pt", arch="sdt-1-64-digits")
    sd2 = dict(sd)
    del sd2["head.bias"]
    sd2["extra.weight"] = torch.zeros(1)
    torch.save(sd2, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e.g. head.bias\); 1 unexpected keys \(e.g. extra.weight\)"):
        load_checkpoint(tmp_path / "keys.pt", arch=ARCH)
    sd3 = dict(sd)
    sd3["head.weight"] = torch.zeros(5, 64)
    torch.save(sd3, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"head.weight: checkpoint \(5, 64\) vs model \(10, 64\)"):
        load_checkpoint(tmp_path / "shape.pt", arch=ARCH)
    ck = {"arch": "vit_base", "state_dict": sd, "args": _step_args(model="vit_base")}
    torch.save(ck, tmp_path / "vit.pth.tar")
    with pytest.raises(CheckpointError, match="unknown STEP architecture 'vit_base'"):
        load_checkpoint(tmp_path / "vit.pth.tar")


def test_nan_weights_are_rejected(tmp_path):
    sd = random_model(ARCH).state_dict()
    sd["block.0.attn.q_linear.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN/Inf.*block.0.attn.q_linear.weight"):
        load_checkpoint(tmp_path / "nan.pt", arch=ARCH)


def _png_bytes():
    """A real 1x1 RGB PNG (signature, IHDR, IDAT, IEND chunks with CRCs)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + \
        chunk(b"IEND", b"")


class Custom:
    pass


def test_files_that_are_not_checkpoints_are_named_not_called_unsafe(tmp_path):
    import numpy as np

    (tmp_path / "photo.png").write_bytes(_png_bytes())
    (tmp_path / "args.yaml").write_text("model: spikformer_cifar\nstep: 4\n")
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(collections.OrderedDict(w=[1.0, 2.0]), f)
    cases = {"photo.png": "not a PyTorch checkpoint: it is a PNG image",
             "args.yaml": "not a PyTorch checkpoint: it is a text file",
             "weights.npz": "not a PyTorch checkpoint: it is a zip archive without torch's data.pkl",
             "plain.pkl": "not a PyTorch checkpoint: a plain pickle file"}
    for name, expected in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name, arch=ARCH)
        assert expected in str(err.value), (name, str(err.value))
        assert "execute code" not in str(err.value), name


def test_allowed_globals_load_and_only_real_code_is_refused(tmp_path):
    src = random_model(ARCH)
    sd = collections.OrderedDict(src.state_dict())  # references collections.OrderedDict: allowed
    torch.save(sd, tmp_path / "od.pt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("od.pt", "legacy.pt"):
        m, _ = load_checkpoint(tmp_path / name, arch=ARCH)
        assert _same_weights(src, m), name
    torch.save({"state_dict": sd, "hook": os.system}, tmp_path / "system.pt")
    torch.save({"state_dict": sd, "extra": Custom()}, tmp_path / "custom.pt")
    with open(tmp_path / "system.pkl", "wb") as f:
        pickle.dump({"run": os.system}, f)
    expected = {"system.pt": os.system.__module__ + ".system", "system.pkl": os.system.__module__ + ".system",
                "custom.pt": f"{__name__}.Custom"}
    for name, culprit in expected.items():
        with pytest.raises(CheckpointError, match=rf"refused: loading it would execute code \(it references "
                                                  rf"{culprit}\)"):
            load_checkpoint(tmp_path / name, arch=ARCH)


def test_own_checkpoint_with_another_arch_is_a_clear_error(tmp_path):
    """`--arch` naming another architecture than the one saved: a CheckpointError about the
    keys, not a TypeError from the other family's constructor (its config keys do not apply)."""
    p = save_checkpoint(random_model("sdt-1-64-digits"), tmp_path / "sdt.ckpt")
    with pytest.raises(CheckpointError, match="does not fit architecture 'spikformer-2-64-digits'"):
        load_checkpoint(p, arch="spikformer-2-64-digits")
    m, info = load_checkpoint(p, arch="sdt-1-64-digits")  # the saved arch named explicitly still loads
    assert info.arch.startswith("sdt")
