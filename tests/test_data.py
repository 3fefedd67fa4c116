"""Tests of step_deploy.data: bundled digits, derived event/sequence variants, on-disk loaders."""

import pickle

import numpy as np
import pytest
import torch

from step_deploy import data
from step_deploy.data import events as ev_mod
from step_deploy.data import external

# --------------------------------------------------------------------------- digits


def test_digits_sizes_and_stratification():
    tr = data.load_dataset("digits", "train")
    te = data.load_dataset("digits", "test")
    al = data.load_dataset("digits", "all")
    assert (len(tr), len(te), len(al)) == (1437, 360, 1797)
    ytr, yte = tr.tensors[1].numpy(), te.tensors[1].numpy()
    assert np.bincount(ytr, minlength=10).tolist() == [142, 146, 142, 146, 145, 145, 145, 143, 139, 144]
    assert np.bincount(yte, minlength=10).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    # disjoint, covering, sorted
    itr, ite = data.split_indices("train"), data.split_indices("test")
    assert not set(itr) & set(ite)
    assert sorted(set(itr) | set(ite)) == list(range(1797))
    assert (np.diff(itr) > 0).all() and (np.diff(ite) > 0).all()
    # class proportions within one sample of 20 %
    total = np.bincount(al.tensors[1].numpy())
    assert np.all(np.abs(np.bincount(yte) - 0.2 * total) <= 1)


def test_digits_values_match_sklearn():
    from sklearn.datasets import load_digits

    d = load_digits()
    al = data.load_dataset("digits", "all")
    x, y = al.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (1797, 1, 8, 8)
    assert x.min() >= 0 and x.max() <= 1 and x.max() == 1
    np.testing.assert_array_equal(x.numpy()[:, 0], (d.images / 16).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), d.target)
    te = data.load_dataset("digits", "test")
    idx = data.split_indices("test")
    np.testing.assert_array_equal(te.tensors[0].numpy(), x.numpy()[idx])


@pytest.mark.slow  # imports scikit-learn, and a fresh process: ~7 s
def test_the_stored_split_is_scikit_learns_stratified_split_and_loading_does_not_import_sklearn():
    """The split written out in ``digits_split.py`` equals ``train_test_split``'s, recomputed here; a fresh
    process loading the digits does not import scikit-learn (its import costs every command ~3 s)."""
    import subprocess
    import sys

    from step_deploy.data.digits import stratified_split

    ref = stratified_split()
    for k in ("train", "test", "all"):
        np.testing.assert_array_equal(data.split_indices(k), ref[k])
    code = ("import sys; from step_deploy.data import load_dataset; x = load_dataset('digits', 'test'); "
            "print(len(x), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["360", "False"]


def test_digits_deterministic_and_cache_not_corruptible():
    a = data.load_dataset("digits", "train")
    a.tensors[0].add_(1.0)  # mutating one result must not leak into the next
    b = data.load_dataset("digits", "train")
    c = data.load_dataset("digits", "train")
    assert torch.equal(b.tensors[0], c.tensors[0]) and torch.equal(b.tensors[1], c.tensors[1])
    assert b.tensors[0].max() <= 1.0


# --------------------------------------------------------------------------- digits-events


@pytest.mark.parametrize("T", [1, 4, 7])
def test_events_shape_and_counts(T):
    ds = data.load_dataset("digits-events", "test", T=T)
    x, y = ds.tensors
    assert len(ds) == 360
    assert x.shape == (360, T, 2, 8, 8) and x.dtype == torch.float32
    assert ds[0][0].shape == data.dataset_info("digits-events", T=T)["input_shape"] == (T, 2, 8, 8)
    assert (x >= 0).all()
    assert torch.equal(x, x.round())
    assert torch.equal(y, data.load_dataset("digits", "test").tensors[1])


def test_events_deterministic():
    a = data.load_dataset("digits-events", "train", T=4).tensors[0]
    b = data.load_dataset("digits-events", "train", T=4).tensors[0]
    assert torch.equal(a, b)
    # recomputing from scratch (bypassing the cache) gives the same numbers
    imgs, _ = data.digits_arrays("train")
    np.testing.assert_array_equal(data.image_to_events(imgs, 4), a.numpy())


def test_events_on_and_off_present_everywhere():
    x = data.load_dataset("digits-events", "all", T=4).tensors[0]
    off, on = x[:, :, 0].sum(), x[:, :, 1].sum()
    assert off > 0 and on > 0
    assert 0.8 < float(on / off) < 1.25  # a closed saccade path: balanced polarities
    # every sample produces events, in each frame
    assert (x.sum(dim=(2, 3, 4)) > 0).all()


def test_blank_image_gives_no_events():
    out = data.image_to_events(np.zeros((8, 8)), T=5)
    assert out.shape == (5, 2, 8, 8) and not out.any()
    batch = data.image_to_events(np.zeros((3, 1, 8, 8)), T=2)
    assert batch.shape == (3, 2, 2, 8, 8) and not batch.any()
    # a bright uniform canvas only changes where zeros shift in from outside the canvas: the
    # path moves right/down, so only row 0 and column 0 can fire
    out = data.image_to_events(np.ones((8, 8)), T=3)
    assert out[..., 0, :].any() and not out[..., 1:, 1:].any()


def test_shifted_square_fires_only_at_edges():
    img = np.zeros((12, 12))
    img[3:9, 3:9] = 1.0  # a 6x6 square
    out = data.image_to_events(img, T=4)
    active = out.sum(axis=(0, 1)) > 0
    # the path stays within dx, dy in [0, 1]: a pixel can change only if it is within one
    # pixel (up/left) of the square's edges
    inside = np.zeros((12, 12), bool)
    inside[4:9, 4:9] = True  # (r - dy, c - dx) stays inside [3, 9) for all dx, dy in [0, 1]
    assert not active[inside].any()
    far = np.ones((12, 12), bool)
    far[3:10, 3:10] = False  # nothing can reach beyond one pixel right/down of the square
    assert not active[far].any()
    assert active.any()
    # moving right: the leading (right) edge turns on, the trailing (left) edge turns off
    first = out[0]  # frame 0 covers the first (rightward) part of the saccade
    assert first[ev_mod.ON][3:9, 9].sum() > 0 and first[ev_mod.OFF][3:9, 9].sum() == 0
    assert first[ev_mod.OFF][3:9, 3].sum() > 0 and first[ev_mod.ON][3:9, 3].sum() == 0


def test_dvs_model_threshold_and_reference():
    # one pixel stepping 0 -> 1 -> 1 -> 0: log(1.1) - log(0.1) = 2.398 = 5.99 thresholds of 0.4
    video = np.array([0.0, 1.0, 1.0, 0.0]).reshape(4, 1, 1)
    out = ev_mod.intensities_to_events(video, T=3, threshold=0.4, eps=0.1)
    assert out[:, ev_mod.ON, 0, 0].tolist() == [5, 0, 0]
    assert out[:, ev_mod.OFF, 0, 0].tolist() == [0, 0, 5]
    with pytest.raises(ValueError):
        ev_mod.intensities_to_events(video, T=2)


def test_saccade_path_closed():
    p = ev_mod.saccade_path(12)
    assert p.shape == (13, 2)
    assert np.array_equal(p[0], [0, 0]) and np.array_equal(p[-1], [0, 0])
    assert np.allclose(p[4], [1, 0]) and np.allclose(p[8], [0.5, 1])


def test_events_scale_option():
    ds = data.load_dataset("digits-events", "test", T=2, scale=2)
    assert ds.tensors[0].shape == (360, 2, 2, 16, 16)
    assert data.dataset_info("digits-events", T=2, scale=2)["input_shape"] == (2, 2, 16, 16)


# --------------------------------------------------------------------------- digits-seq


def test_sequences_equal_image_rows():
    seq = data.load_dataset("digits-seq", "train")
    img = data.load_dataset("digits", "train")
    assert seq.tensors[0].shape == (1437, 8, 8)
    assert torch.equal(seq.tensors[0], img.tensors[0][:, 0])
    assert torch.equal(seq.tensors[1], img.tensors[1])
    x0 = seq[0][0]
    for t in range(8):
        assert torch.equal(x0[t], img[0][0][0, t, :])
    info = data.dataset_info("digits-seq")
    assert info["kind"] == "sequence" and info["input_shape"] == (8, 8) and info["time_steps"] == 8


# --------------------------------------------------------------------------- registry


def test_registry_and_info():
    assert data.DATASETS == ("digits", "digits-events", "digits-seq", "cifar10", "cifar10-dvs")
    for name in data.DATASETS:
        info = data.dataset_info(name)
        assert info["num_classes"] == 10
        assert info["kind"] in ("static", "events", "sequence")
        assert info["encoding"] in ("direct", "events")
    assert data.dataset_info("digits")["input_shape"] == (1, 8, 8)
    assert data.dataset_info("digits")["encoding"] == "direct"
    assert data.dataset_info("digits-events")["input_shape"] == (4, 2, 8, 8)
    assert data.dataset_info("cifar10")["input_shape"] == (3, 32, 32)
    assert data.dataset_info("cifar10-dvs", T=8)["input_shape"] == (8, 2, 48, 48)
    assert data.dataset_info("cifar10-dvs", event_size=None)["input_shape"] == (4, 2, 128, 128)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="digits-events"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="cifar10-dvs"):
        data.dataset_info("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("digits", "val")
    with pytest.raises(TypeError):
        data.load_dataset("digits", "train", threshold=0.3)


def test_works_with_dataloader():
    dl = torch.utils.data.DataLoader(data.load_dataset("digits-events", "train", T=3), batch_size=16)
    x, y = next(iter(dl))
    assert x.shape == (16, 3, 2, 8, 8) and y.shape == (16,)


# --------------------------------------------------------------------------- CIFAR-10


def _write_fake_cifar10(root, n_per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        arr = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [(i * n_per_batch + j) % 10 for j in range(n_per_batch)]
        batches[name] = (arr, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": arr, "labels": labels,
                         "filenames": [f"{name}_{j}.png" for j in range(n_per_batch)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(external.CIFAR10_CLASSES), "num_cases_per_batch": n_per_batch,
                     "num_vis": 3072}, f)
    return batches


def test_cifar10_missing_root_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.load_dataset("cifar10", "train")  # root=None
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as e:
        data.load_dataset("cifar10", "train", root=tmp_path / "nowhere")
    assert "never downloads" in str(e.value)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        data.load_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(ValueError):
        data.load_dataset("cifar10", "all", root=tmp_path)


def test_cifar10_fake_files_fail_md5_clearly(tmp_path):
    _write_fake_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="md5"):
        data.load_dataset("cifar10", "train", root=tmp_path)


def test_cifar10_fake_folder_loads(tmp_path, monkeypatch):
    # torchvision md5-checks the official files; a fake folder can only pass with the check
    # switched off, which exercises the full torchvision read path and our normalisation.
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    batches = _write_fake_cifar10(tmp_path)
    tr = data.load_dataset("cifar10", "train", root=tmp_path)
    te = data.load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")
    assert len(tr) == 15 and len(te) == 3
    x, y = te[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw, labels = batches["test_batch"]
    expect = raw[1].reshape(3, 32, 32).astype(np.float32) / 255.0
    mean = np.array(external.CIFAR10_MEAN, np.float32)[:, None, None]
    std = np.array(external.CIFAR10_STD, np.float32)[:, None, None]
    np.testing.assert_allclose(x.numpy(), (expect - mean) / std, rtol=1e-6, atol=1e-6)
    assert int(y) == labels[1]
    assert tr.classes == list(external.CIFAR10_CLASSES)
    xb, yb = next(iter(torch.utils.data.DataLoader(tr, batch_size=4)))
    assert xb.shape == (4, 3, 32, 32) and yb.tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- CIFAR10-DVS


def _events(n, seed, t0=1000, duration=10000, hot=None):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0, t0 + duration, size=n))
    x = rng.integers(0, 128, size=n)
    y = rng.integers(0, 128, size=n)
    p = rng.integers(0, 2, size=n)
    if hot is not None:  # put every event in one pixel
        x[:], y[:] = hot
    return t, x, y, p


def _write_fake_dvs(root, classes=("cat", "airplane"), n_files=3, fmt="npz"):
    files = {}
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True)
        for k in range(n_files):
            t, x, y, p = _events(200 + 10 * k, seed=100 * ci + k)
            if fmt == "npz":
                path = d / f"{c}_{k}.npz"
                np.savez(path, t=t, x=x, y=y, p=p)
            else:
                arr = np.empty(len(t), dtype=[("x", "<i2"), ("y", "<i2"), ("p", "?"), ("t", "<i8")])
                arr["t"], arr["x"], arr["y"], arr["p"] = t, x, y, p.astype(bool)
                path = d / f"{c}_{k}.npy"
                np.save(path, arr)
            files[path.name] = (t, x, y, p)
    return files


def _reference_frames(t, x, y, p, T):
    """Straightforward loop version of tonic's ToFrame(n_time_bins=T)."""
    w = (t[-1] - t[0]) // T
    out = np.zeros((T, 2, 128, 128), np.float32)
    for ti, xi, yi, pi in zip(t, x, y, p):
        i = (ti - t[0]) // w
        if i < T:
            out[i, int(pi > 0), yi, xi] += 1
    return out


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_cifar10_dvs_fake_folder(tmp_path, fmt):
    files = _write_fake_dvs(tmp_path, fmt=fmt)
    ds = data.load_dataset("cifar10-dvs", "all", root=tmp_path, T=4)
    assert ds.classes == ["airplane", "cat"]  # sorted folder names
    assert len(ds) == 6
    x, y = ds[0]
    assert x.shape == (4, 2, 48, 48) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y) == 0  # airplane
    assert int(ds[5][1]) == 1  # cat
    # full resolution equals the tonic-style binning
    full = data.load_dataset("cifar10-dvs", "all", root=tmp_path, T=4, event_size=None)
    name = full.files[4].name
    xf, yf = full[4]
    assert xf.shape == (4, 2, 128, 128) and int(yf) == 1
    np.testing.assert_array_equal(xf.numpy(), _reference_frames(*files[name], T=4))
    # resize: bilinear via interpolate from the full frames
    expect = torch.nn.functional.interpolate(xf, size=(48, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(ds[4][0], expect)
    assert data.load_dataset("cifar10-dvs", "all", root=tmp_path, T=3, event_size=32)[0][0].shape == (3, 2, 32, 32)


def test_cifar10_dvs_split(tmp_path):
    _write_fake_dvs(tmp_path, n_files=3)
    tr = data.load_dataset("cifar10-dvs", "train", root=tmp_path)
    te = data.load_dataset("cifar10-dvs", "test", root=tmp_path)
    assert len(tr) == 4 and len(te) == 2  # per class: 2 train, last file test
    assert [f.name for f in te.files] == ["airplane_2.npz", "cat_2.npz"]
    assert te.targets.tolist() == [0, 1]
    assert not {f.name for f in tr.files} & {f.name for f in te.files}
    # explicit train/ and test/ folders
    root2 = tmp_path / "explicit"
    _write_fake_dvs(root2 / "train", n_files=2)
    _write_fake_dvs(root2 / "test", n_files=1)
    assert len(data.load_dataset("cifar10-dvs", "train", root=root2)) == 4
    assert len(data.load_dataset("cifar10-dvs", "test", root=root2)) == 2


def test_cifar10_dvs_frames_from_one_pixel(tmp_path):
    d = tmp_path / "dog"
    d.mkdir()
    t = np.arange(0, 400, 1)  # 400 events, 4 bins of 100 (last time stamp 399: w = 99)
    np.savez(d / "a.npz", t=t, x=np.full(400, 5), y=np.full(400, 7), p=(t % 2))
    frames = data.load_dataset("cifar10-dvs", "all", root=tmp_path, event_size=None)[0][0]
    assert frames.shape == (4, 2, 128, 128)
    assert frames.sum() == 4 * 99  # tonic drops events after T*w (t = 396..399)
    assert frames[:, :, 7, 5].sum() == frames.sum()
    assert frames[0, 0, 7, 5] == 50 and frames[0, 1, 7, 5] == 49


def test_cifar10_dvs_missing_root_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.load_dataset("cifar10-dvs", "train")
    with pytest.raises(FileNotFoundError, match="class") as e:
        data.load_dataset("cifar10-dvs", "train", root=tmp_path / "missing")
    assert ".npz" in str(e.value) and "never downloads" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        data.load_dataset("cifar10-dvs", "train", root=tmp_path / "empty")


def test_event_file_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(ValueError, match="t, x, y, p"):
        external.read_event_file(bad)
    ev = np.zeros(2, dtype=[("t", "i8"), ("x", "i8"), ("y", "i8"), ("p", "i8")])
    ev["x"] = [0, 200]
    with pytest.raises(ValueError, match="outside"):
        external.events_to_frames(ev, 2)
