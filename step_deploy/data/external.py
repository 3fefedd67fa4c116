"""Loaders for data sets the user already has on disk: CIFAR-10 and CIFAR10-DVS.

step-deploy never downloads anything (DESIGN.md section 5). A missing or incomplete root
raises ``FileNotFoundError`` saying what to put where.

CIFAR-10 (torchvision format)
    ``root`` is the folder holding ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``, ``batches.meta``, i.e. the extracted ``cifar-10-python.tar.gz``); passing the
    ``cifar-10-batches-py`` folder itself also works. It is read with
    ``torchvision.datasets.CIFAR10(root, train=..., download=False)``, which verifies the files'
    md5 sums. Samples: float32 ``(3, 32, 32)``, ``ToTensor`` scaling to [0, 1] then normalised
    with mean ``(0.4914, 0.4822, 0.4465)`` and std ``(0.2470, 0.2435, 0.2616)``; labels int64.
    Split sizes: train 50,000, test 10,000.

CIFAR10-DVS (event files, no extra packages needed)
    Layout: ``root/<class name>/<sample>.npz|.npy``, one subfolder per class; classes are the
    subfolder names sorted alphabetically (for CIFAR10-DVS: airplane, automobile, bird, cat,
    deer, dog, frog, horse, ship, truck = the CIFAR-10 label order). Optionally
    ``root/train/<class>/...`` and ``root/test/<class>/...`` give the split explicitly.
    Otherwise the split is fixed and deterministic: per class, files sorted by name, the last
    ``max(1, round(n * 0.1))`` (for ``n >= 2``) are the test set, the rest the training set
    (900 / 100 per class for the 1,000 recordings of CIFAR10-DVS); ``split='all'`` takes all.

    Event file formats (each an event stream with fields ``t``, ``x``, ``y``, ``p``):

    * ``.npy``: a structured array with named fields ``t, x, y, p`` (what tonic uses in
      memory, ``np.save(path, events)``);
    * ``.npz``: arrays named ``t``, ``x``, ``y``, ``p`` (SpikingJelly's ``events_np`` folder,
      ``np.savez(path, t=..., x=..., y=..., p=...)``), or a single structured array.

    ``x`` is the column (0..127), ``y`` the row (0..127), ``p`` the polarity (``p > 0`` = ON).
    Events are binned like tonic's ``ToFrame(sensor_size=(128, 128, 2), n_time_bins=T)``:
    window ``w = (t_last - t_first) // T``, frame ``i`` counts events with
    ``t_first + i*w <= t < t_first + (i+1)*w`` at ``[i, p, y, x]``. Frames ``(T, 2, 128, 128)``
    (channel 0 = OFF, 1 = ON) are then resized to ``(T, 2, event_size, event_size)``
    (default 48) with ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``;
    ``event_size=None`` (or 128) keeps the full resolution. Labels int64. Files are read
    lazily, one sample per ``__getitem__``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")

DVS_SENSOR_SIZE = (128, 128)  # (H, W)
DEFAULT_EVENT_SIZE = 48
DVS_TEST_FRACTION = 0.1
EVENT_SUFFIXES = (".npz", ".npy")

_NO_DOWNLOAD = "step-deploy never downloads data sets"


def _split_train(split: str) -> bool:
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for cifar10; expected 'train' or 'test'")
    return split == "train"


# --------------------------------------------------------------------------- CIFAR-10


def _cifar10_root(root) -> Path:
    if root is None:
        raise FileNotFoundError(
            "cifar10 needs root=: the folder that holds 'cifar-10-batches-py/' (data_batch_1..5, "
            "test_batch, batches.meta from the extracted cifar-10-python.tar.gz, "
            f"https://www.cs.toronto.edu/~kriz/cifar.html). {_NO_DOWNLOAD}."
        )
    root = Path(root).expanduser()
    if root.name == CIFAR10_FOLDER and not (root / CIFAR10_FOLDER).is_dir():
        root = root.parent
    folder = root / CIFAR10_FOLDER
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        where = f"{folder}" if folder.is_dir() else f"{root} (no '{CIFAR10_FOLDER}/' folder there)"
        raise FileNotFoundError(
            f"CIFAR-10 not found under {where}: missing {', '.join(missing)}. Put the extracted "
            f"torchvision/python version of CIFAR-10 (cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html) so that {folder}/ holds data_batch_1..5, "
            f"test_batch and batches.meta. {_NO_DOWNLOAD}."
        )
    return root


class CIFAR10Tensors:
    """CIFAR-10 held as uint8, normalised per item: ``(x float32 (3,32,32), y int64)``.

    Attributes: ``data`` uint8 (N, 32, 32, 3), ``targets`` int64 tensor (N,), ``classes``.
    """

    def __init__(self, data: np.ndarray, targets, classes, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        import torch

        self.data = np.ascontiguousarray(data, dtype=np.uint8)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.classes = list(classes)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        import torch

        x = torch.from_numpy(self.data[index]).permute(2, 0, 1).to(torch.float32).div(255.0)
        return (x - self._mean) / self._std, self.targets[index]


def load_cifar10(root, split: str = "train") -> CIFAR10Tensors:
    """CIFAR-10 from disk via ``torchvision.datasets.CIFAR10(root, train=..., download=False)``."""
    train = _split_train(split)
    root = _cifar10_root(root)
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise RuntimeError(
            f"CIFAR-10 files under {root / CIFAR10_FOLDER} are present but torchvision rejected them "
            f"({e}); they must be the official extracted cifar-10-python.tar.gz files (md5-checked). "
            f"{_NO_DOWNLOAD}."
        ) from e
    return CIFAR10Tensors(ds.data, ds.targets, ds.classes)


# --------------------------------------------------------------------------- CIFAR10-DVS


def read_event_file(path) -> np.ndarray:
    """Read one event file into a structured array with fields ``t, x, y, p``, sorted by t.

    ``x, y, p`` become int64 (``p`` is 1 for ON, i.e. ``p > 0``, else 0); ``t`` stays in its own
    unit (int64, or float64 for floating time stamps).
    """
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        fields = _structured_fields(arr, path)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if {"t", "x", "y", "p"} <= keys:
                fields = {k: np.asarray(z[k]).reshape(-1) for k in "txyp"}
            elif len(z.files) == 1:
                fields = _structured_fields(z[z.files[0]], path)
            else:
                raise ValueError(
                    f"{path}: an .npz event file needs arrays named t, x, y, p (or one structured "
                    f"array with those fields); found {sorted(keys)}"
                )
    else:
        raise ValueError(f"{path}: unsupported event file type (use {' or '.join(EVENT_SUFFIXES)})")
    n = len(fields["t"])
    if any(len(fields[k]) != n for k in "xyp"):
        raise ValueError(f"{path}: fields t, x, y, p have different lengths")
    t = np.asarray(fields["t"])
    t_type = np.float64 if np.issubdtype(t.dtype, np.floating) else np.int64
    ev = np.empty(n, dtype=[("t", t_type), ("x", np.int64), ("y", np.int64), ("p", np.int64)])
    ev["t"] = fields["t"]
    ev["x"] = fields["x"]
    ev["y"] = fields["y"]
    ev["p"] = (np.asarray(fields["p"]) > 0).astype(np.int64)
    if n > 1 and np.any(np.diff(ev["t"]) < 0):
        ev = ev[np.argsort(ev["t"], kind="stable")]
    return ev


def _structured_fields(arr: np.ndarray, path) -> dict:
    names = arr.dtype.names or ()
    if not {"t", "x", "y", "p"} <= set(names):
        raise ValueError(
            f"{path}: expected a structured array with fields t, x, y, p; got dtype {arr.dtype}"
        )
    return {k: np.asarray(arr[k]).reshape(-1) for k in "txyp"}


def events_to_frames(events: np.ndarray, T: int, sensor_size=DVS_SENSOR_SIZE) -> np.ndarray:
    """Bin events into ``(T, 2, H, W)`` float32 counts, like tonic ``ToFrame(n_time_bins=T)``.

    ``events``: structured array with fields t, x, y, p (sorted by t); ``sensor_size`` = (H, W).
    """
    T = int(T)
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    H, W = sensor_size
    frames = np.zeros((T, 2, H, W), dtype=np.float32)
    if len(events) == 0:
        return frames
    x, y, p = events["x"], events["y"], events["p"]
    if x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H:
        raise ValueError(
            f"event coordinates outside the {W}x{H} sensor: x in [{x.min()}, {x.max()}], "
            f"y in [{y.min()}, {y.max()}]"
        )
    t = events["t"]
    window = (t[-1] - t[0]) // T
    starts = np.arange(T) * window + t[0]
    lo = np.searchsorted(t, starts)
    hi = np.searchsorted(t, starts + window)
    p = (p > 0).astype(np.int64)
    for i in range(T):
        s = slice(lo[i], hi[i])
        np.add.at(frames, (i, p[s], y[s], x[s]), 1.0)
    return frames


def _list_class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _list_event_files(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix in EVENT_SUFFIXES
    )


def _dvs_missing(root, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR10-DVS not found{detail}. Expected root/<class>/<sample>.npz (arrays t, x, y, p, "
        f"as in SpikingJelly's events_np folder) or .npy (structured array with fields t, x, y, p, "
        f"as tonic holds events), one subfolder per class (airplane, automobile, bird, cat, deer, "
        f"dog, frog, horse, ship, truck); optionally root/train/<class>/ and root/test/<class>/. "
        f"Convert the original .aedat files with tonic or SpikingJelly first. {_NO_DOWNLOAD}."
    )


def cifar10_dvs_files(root, split: str = "train", test_fraction: float = DVS_TEST_FRACTION):
    """``(files, labels, classes)`` of the CIFAR10-DVS ``split`` under ``root`` (see module doc)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'all'")
    if root is None:
        raise _dvs_missing(None, ": cifar10-dvs needs root=")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _dvs_missing(root, f": {root} is not a directory")
    explicit = (root / "train").is_dir() and (root / "test").is_dir()
    if explicit:
        parts = ["train", "test"] if split == "all" else [split]
        class_names = sorted({d.name for s in ("train", "test") for d in _list_class_dirs(root / s)})
        per_class = {c: [] for c in class_names}
        for s in parts:
            for c in class_names:
                d = root / s / c
                if d.is_dir():
                    per_class[c].extend(_list_event_files(d))
    else:
        class_dirs = _list_class_dirs(root)
        class_names = [d.name for d in class_dirs]
        per_class = {}
        for d in class_dirs:
            files = _list_event_files(d)
            n = len(files)
            n_test = max(1, int(round(n * test_fraction))) if n >= 2 else 0
            if split == "train":
                files = files[: n - n_test]
            elif split == "test":
                files = files[n - n_test:]
            per_class[d.name] = files
    if not class_names or not any(per_class.values()):
        raise _dvs_missing(root, f": no class folders with .npz/.npy event files under {root}")
    files, labels = [], []
    for i, c in enumerate(class_names):
        files.extend(per_class[c])
        labels.extend([i] * len(per_class[c]))
    return files, np.asarray(labels, dtype=np.int64), class_names


class CIFAR10DVSFrames:
    """CIFAR10-DVS read lazily: item ``i`` is ``(frames float32 (T, 2, S, S), label int64)``."""

    def __init__(self, files, labels, classes, T: int = 4, event_size=DEFAULT_EVENT_SIZE,
                 sensor_size=DVS_SENSOR_SIZE):
        import torch

        self.files = list(files)
        self.targets = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.classes = list(classes)
        self.T = int(T)
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.sensor_size = tuple(sensor_size)
        self.event_size = None if event_size is None else int(event_size)

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        h, w = self.sensor_size if self.event_size is None else (self.event_size,) * 2
        return (self.T, 2, h, w)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        import torch
        import torch.nn.functional as F

        frames = torch.from_numpy(
            events_to_frames(read_event_file(self.files[index]), self.T, self.sensor_size)
        )
        size = self.event_size
        if size is not None and (size, size) != tuple(frames.shape[-2:]):
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
        return frames, self.targets[index]


def load_cifar10_dvs(root, split: str = "train", T: int = 4, event_size=DEFAULT_EVENT_SIZE,
                     test_fraction: float = DVS_TEST_FRACTION) -> CIFAR10DVSFrames:
    """CIFAR10-DVS from event files on disk (format and split in the module docstring)."""
    files, labels, classes = cifar10_dvs_files(root, split, test_fraction)
    return CIFAR10DVSFrames(files, labels, classes, T=T, event_size=event_size)


__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_CLASSES", "CIFAR10Tensors", "CIFAR10DVSFrames",
    "load_cifar10", "load_cifar10_dvs", "read_event_file", "events_to_frames",
    "cifar10_dvs_files",
]
