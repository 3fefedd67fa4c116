"""resolve_calibration: every --calib form gives real data (or noise only when asked), checked
against the model, with a plain sentence saying what was used."""
import pickle

import numpy as np
import pytest
import torch

from step_deploy.data import load_dataset
from step_deploy.data.calibration import CalibrationData, CalibrationError, resolve_calibration
from step_deploy.errors import StepDeployError
from step_deploy.frontend.checkpoint import CheckpointInfo
from step_deploy.models import build_model


@pytest.fixture(scope="module")
def digits_model():
    return build_model("spikformer-2-64-digits").eval()


@pytest.fixture(scope="module")
def events_model():
    return build_model("spikformer-2-64-digits", encoding="events", in_channels=2).eval()


def info(metadata=None, path="model.ckpt"):
    return CheckpointInfo(path, "step-deploy", "spikformer", {}, dict(metadata or {}))


def normalized_digits(n=20):
    x = load_dataset("digits", "test").tensors[0][:n]
    return (x - 0.3) / 0.4  # about [-0.75, 1.75]: signed, like mean/std-normalised pixels


# --------------------------------------------------------------------------- data sets


def test_checkpoint_dataset_bundled_gives_train_calibration_and_test_evaluation(digits_model):
    d = resolve_calibration(None, root=None, model=digits_model, info=info({"dataset": "digits"}))
    train, test = load_dataset("digits", "train").tensors, load_dataset("digits", "test").tensors
    assert isinstance(d, CalibrationData) and not d.is_noise and not d.signed
    assert torch.equal(d.x_calib, train[0][:256])
    assert torch.equal(d.x_eval, test[0]) and torch.equal(d.y_eval, test[1]) and len(d.y_eval) == 360
    assert d.source == ("calibration: 256 samples of the bundled 'digits' train split (values in [0, 1]); "
                        "evaluation: its 360-sample test split")


def test_bundled_name_with_sizes_and_is_deterministic(digits_model):
    a = resolve_calibration("digits", root=None, model=digits_model, info=info(), n_calib=32, n_eval=50)
    b = resolve_calibration("digits", root=None, model=digits_model, info=info(), n_calib=32, n_eval=50)
    assert a.x_calib.shape == (32, 1, 8, 8) and a.x_eval.shape == (50, 1, 8, 8) and a.y_eval.shape == (50,)
    assert torch.equal(a.x_calib, b.x_calib) and torch.equal(a.x_eval, b.x_eval) and a.source == b.source
    assert "first 50 of its 360 test samples" in a.source


def test_bundled_data_set_that_does_not_fit_the_model_is_refused(digits_model):
    cifar_model = build_model("spikformer-2-64-digits", in_channels=3, img_size=32)
    with pytest.raises(CalibrationError, match=r"data set digits \(train split\): inputs have shape "
                                               r"\(256, 1, 8, 8\).*\(N, 3, 32, 32\)"):
        resolve_calibration("digits", root=None, model=cifar_model, info=info())


# --------------------------------------------------------------------------- tensor files


def test_npy_file_without_labels_is_signed_and_evaluated_on_itself(digits_model, tmp_path):
    x = normalized_digits(20).numpy()
    np.save(tmp_path / "inputs.npy", x)
    d = resolve_calibration(str(tmp_path / "inputs.npy"), root=None, model=digits_model, info=info(), n_calib=8)
    assert d.signed and not d.is_noise and d.y_eval is None
    assert torch.equal(d.x_calib, torch.from_numpy(x[:8])) and torch.equal(d.x_eval, torch.from_numpy(x))
    assert "the first 8 of the 20 samples in inputs.npy" in d.source
    assert "without labels, so accuracy is not reported" in d.source


def test_pt_file_tensor_and_labelled_forms(digits_model, tmp_path):
    x = normalized_digits(12)
    y = torch.arange(12) % 10
    torch.save(x.to(torch.float64), tmp_path / "x.pt")
    d = resolve_calibration(str(tmp_path / "x.pt"), root=None, model=digits_model, info=info())
    assert d.x_calib.dtype == torch.float32 and torch.equal(d.x_calib, x) and d.y_eval is None and d.signed
    assert "all 12 of the 12 samples in x.pt" in d.source
    torch.save({"x": x, "y": y}, tmp_path / "xy.pt")
    d = resolve_calibration(str(tmp_path / "xy.pt"), root=None, model=digits_model, info=info(), n_eval=5)
    assert torch.equal(d.y_eval, y[:5]) and torch.equal(d.x_eval, x[:5]) and "with its labels" in d.source
    np.savez(tmp_path / "xy.npz", x=x.numpy(), y=y.numpy())
    d = resolve_calibration(str(tmp_path / "xy.npz"), root=None, model=digits_model, info=info())
    assert torch.equal(d.y_eval, y) and torch.equal(d.x_calib, x)


def test_wrong_shape_file_names_the_expected_shape(digits_model, tmp_path):
    np.save(tmp_path / "cifar.npy", np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(CalibrationError, match=r"cifar\.npy: inputs have shape \(4, 3, 32, 32\).*"
                                               r"\(N, C, H, W\) direct-coded images of shape \(N, 1, 8, 8\)"):
        resolve_calibration(str(tmp_path / "cifar.npy"), root=None, model=digits_model, info=info())


def test_nan_file_is_refused_with_the_count_and_first_index(digits_model, tmp_path):
    x = normalized_digits(6).numpy()
    x[2, 0, 3, 4] = np.nan
    x[5, 0, 0, 0] = np.inf
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(CalibrationError, match=r"2 non-finite values \(NaN/inf\), first at index "
                                               r"\(2, 0, 3, 4\) of sample 2"):
        resolve_calibration(str(tmp_path / "nan.npy"), root=None, model=digits_model, info=info())


def test_unreadable_or_wrong_content_files_are_clear_errors(digits_model, tmp_path):
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(CalibrationError, match="dtype <U1 is not numeric"):
        resolve_calibration(str(tmp_path / "text.npy"), root=None, model=digits_model, info=info())
    with open(tmp_path / "code.pt", "wb") as f:  # a pickle that is not plain tensors: weights_only refuses it
        pickle.dump(CalibrationData, f, protocol=2)
    with pytest.raises(CalibrationError, match=r"code\.pt: holds Python objects other than tensors, refused"):
        resolve_calibration(str(tmp_path / "code.pt"), root=None, model=digits_model, info=info())
    torch.save({"inputs": torch.zeros(2, 1, 8, 8)}, tmp_path / "dict.pt")
    with pytest.raises(CalibrationError, match="dict with 'x'"):
        resolve_calibration(str(tmp_path / "dict.pt"), root=None, model=digits_model, info=info())
    with pytest.raises(CalibrationError, match="does not exist"):
        resolve_calibration(str(tmp_path / "missing.npy"), root=None, model=digits_model, info=info())
    torch.save({"x": torch.zeros(3, 1, 8, 8), "y": torch.zeros(2, dtype=torch.int64)}, tmp_path / "short.pt")
    with pytest.raises(CalibrationError, match="2 labels for 3 samples"):
        resolve_calibration(str(tmp_path / "short.pt"), root=None, model=digits_model, info=info())


def test_event_file_needs_the_time_axis(events_model, tmp_path):
    np.save(tmp_path / "frames.npy", np.zeros((3, 2, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match=r"\(N, T, C, H, W\) event frames of shape \(N, 4, 2, 8, 8\)"):
        resolve_calibration(str(tmp_path / "frames.npy"), root=None, model=events_model, info=info())
    np.save(tmp_path / "counts.npy", np.ones((3, 4, 2, 8, 8), np.uint8))
    d = resolve_calibration(str(tmp_path / "counts.npy"), root=None, model=events_model, info=info())
    assert d.x_calib.dtype == torch.float32 and d.x_calib.shape == (3, 4, 2, 8, 8) and not d.signed
    np.save(tmp_path / "resized.npy", np.full((3, 4, 2, 8, 8), 0.5, np.float32))  # bilinear resize: fractional
    d = resolve_calibration(str(tmp_path / "resized.npy"), root=None, model=events_model, info=info())
    assert float(d.x_calib.max()) == 0.5


# --------------------------------------------------------------------------- missing data, noise


def test_missing_data_names_calib_and_every_way_to_give_inputs(digits_model):
    step_cifar = info({"args": {"dataset": "torch/cifar10"}}, path="step_cifar.pth")
    with pytest.raises(CalibrationError) as e:
        resolve_calibration(None, root=None, model=digits_model, info=step_cifar)
    msg = str(e.value)
    assert isinstance(e.value, StepDeployError)
    for part in ("step_cifar.pth", "'torch/cifar10' is not bundled", "--calib <bundled data set> (digits",
                 "--root <folder>", "--calib <file.npy|file.pt|file.npz>", "(N, 1, 8, 8)", "--calib noise"):
        assert part in msg, part
    with pytest.raises(CalibrationError, match="names no data set.*--calib noise"):
        resolve_calibration(None, root=None, model=digits_model, info=info())
    with pytest.raises(CalibrationError, match="'imnet' has no loader"):
        resolve_calibration(None, root=None, model=digits_model, info=info({"args": {"dataset": "imnet"}}))


def test_on_disk_data_set_without_files_says_where_to_put_them(digits_model, tmp_path):
    with pytest.raises(CalibrationError, match="cifar10 is not bundled.*pass --root"):
        resolve_calibration("cifar10", root=None, model=digits_model, info=info())
    with pytest.raises(CalibrationError, match=r"--calib cifar10 --root .*cifar-10-batches-py"):
        resolve_calibration(None, root=str(tmp_path), model=digits_model, info=info({"dataset": "cifar10"}))


def test_unknown_calib_value_is_refused(digits_model):
    with pytest.raises(CalibrationError, match="'mnist' is neither a data set .* nor 'noise'"):
        resolve_calibration("mnist", root=None, model=digits_model, info=info())
    with pytest.raises(CalibrationError, match="n_calib must be a positive"):
        resolve_calibration("digits", root=None, model=digits_model, info=info(), n_calib=0)


def test_noise_is_flagged_deterministic_and_unlabelled(digits_model, events_model):
    a = resolve_calibration("noise", root=None, model=digits_model, info=info(), n_calib=16, n_eval=4)
    b = resolve_calibration("noise", root=None, model=digits_model, info=info(), n_calib=16, n_eval=4)
    assert a.is_noise and not a.signed and a.y_eval is None
    assert a.x_calib.shape == (16, 1, 8, 8) and a.x_eval.shape == (4, 1, 8, 8)
    assert torch.equal(a.x_calib, b.x_calib) and torch.equal(a.x_eval, b.x_eval)
    assert not torch.equal(a.x_eval, a.x_calib[:4])  # evaluation samples are not the calibration ones
    assert a.source.startswith("calibration: NOISE")
    e = resolve_calibration("noise", root=None, model=events_model, info=info(), n_calib=4)
    assert e.x_calib.shape == (4, 4, 2, 8, 8) and torch.equal(e.x_calib, e.x_calib.round()) and e.is_noise


def test_signed_follows_the_calibration_data(digits_model, tmp_path):
    x = load_dataset("digits", "train").tensors[0][:16]
    for values, signed in ((x, False), ((x - 0.3) / 0.4, True), (x - 1e-3, True)):
        np.save(tmp_path / "x.npy", values.numpy())
        d = resolve_calibration(str(tmp_path / "x.npy"), root=None, model=digits_model, info=info())
        assert d.signed is signed


def _write_dvs(root, classes=("airplane", "automobile"), per_class=4, seed=0):
    r = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            n = 400
            np.savez(root / c / f"{i:03d}.npz", t=np.sort(r.integers(0, 10_000, n)), x=r.integers(0, 128, n),
                     y=r.integers(0, 128, n), p=r.integers(0, 2, n))


def test_step_dvs_checkpoint_finds_cifar10_dvs_on_disk_and_spreads_calibration(events_model, tmp_path):
    _write_dvs(tmp_path)
    step_dvs = info({"args": {"dataset": "dvsc10"}})
    d = resolve_calibration(None, root=str(tmp_path), model=events_model, info=step_dvs, n_calib=2)
    assert d.x_calib.shape == (2, 4, 2, 8, 8) and d.x_eval.shape == (2, 4, 2, 8, 8)  # 3 train, 1 test per class
    assert d.y_eval.tolist() == [0, 1] and not d.is_noise
    assert "2 evenly spread samples of the 'cifar10-dvs' data set under" in d.source
    ds = load_dataset("cifar10-dvs", "train", root=tmp_path, T=4, event_size=8)
    assert torch.equal(d.x_calib[1], ds[3][0])  # every 3rd of 6 train files: both classes are in
