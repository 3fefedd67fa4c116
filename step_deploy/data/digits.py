"""The bundled ``digits`` data set (scikit-learn's 1,797 handwritten 8x8 digits).

This is the only real data that ships with step-deploy (DESIGN.md section 5): it comes with
scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded. The event-based
(:mod:`step_deploy.data.events`) and sequential (:mod:`step_deploy.data.sequences`) variants
are derived from the arrays defined here.

Values
    images: float32 in [0, 1] (the raw 0..16 grey levels divided by 16), shape (N, 1, 8, 8).
    labels: int64 in 0..9, shape (N,).

Split (fixed, deterministic, stratified)
    ``sklearn.model_selection.train_test_split(indices, test_size=0.2, random_state=0,
    stratify=labels)``; each side's indices are then sorted so that samples keep the order of
    the original data set.

    ======  =====  =============================================
    split   size   per class (0..9)
    ======  =====  =============================================
    train   1437   142 146 142 146 145 145 145 143 139 144
    test     360    36  36  35  37  36  37  36  36  35  36
    all     1797   178 182 177 183 181 182 181 179 174 180
    ======  =====  =============================================

Everything here is computed once per process and cached in memory (no files are written);
the public functions hand out fresh copies so callers cannot corrupt the cache.
"""

from __future__ import annotations

import functools

import numpy as np

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
NUM_SAMPLES = 1797
TEST_SIZE = 0.2
SPLIT_SEED = 0
SPLIT_SIZES = {"train": 1437, "test": 360, "all": 1797}
SPLITS = ("train", "test", "all")
CLASSES = tuple(str(i) for i in range(NUM_CLASSES))


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def _sklearn_digits_file():
    """scikit-learn's own copy of the digits (``sklearn/datasets/data/digits.csv.gz``: 1,797 rows of 64
    grey levels and the label), found without importing scikit-learn (that import costs about 3 s,
    paid by every command and worker process that loads the digits); ``None`` if it is not there."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=None)
def _all_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = _sklearn_digits_file()
    if path is not None:  # what sklearn.datasets.load_digits reads, read the same way
        data = np.loadtxt(path, delimiter=",")
        raw, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:  # pragma: no cover - a scikit-learn that moved its data file
        from sklearn.datasets import load_digits

        d = load_digits()
        raw, target = d.images, d.target
    images = (raw.astype(np.float64) / 16.0).astype(np.float32)[:, None, :, :]
    labels = target.astype(np.int64)
    if images.shape != (NUM_SAMPLES,) + IMAGE_SHAPE:  # pragma: no cover - sklearn invariant
        raise RuntimeError(f"unexpected digits shape {images.shape}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def stratified_split() -> dict[str, np.ndarray]:
    """The split computed by scikit-learn (``train_test_split``, see the module docstring); what
    :data:`step_deploy.data.digits_split.TEST_INDICES` holds, written out."""
    from sklearn.model_selection import train_test_split

    _, labels = _all_arrays()
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels)
    return {"train": np.sort(train), "test": np.sort(test), "all": idx}


@functools.lru_cache(maxsize=None)
def _split_indices() -> dict[str, np.ndarray]:
    from .digits_split import TEST_INDICES

    idx = np.arange(NUM_SAMPLES)
    test = np.asarray(TEST_INDICES, dtype=np.int64)
    out = {"train": np.setdiff1d(idx, test), "test": test, "all": idx}
    for k, v in out.items():
        v.setflags(write=False)
        if len(v) != SPLIT_SIZES[k]:  # pragma: no cover - guards against an edited split file
            raise RuntimeError(f"digits {k} split has {len(v)} samples, expected {SPLIT_SIZES[k]}")
    return out


def split_indices(split: str = "train") -> np.ndarray:
    """Indices (into the 1,797 samples of ``load_digits``) of ``split``: 'train', 'test' or 'all'."""
    return _split_indices()[check_split(split)].copy()


def digits_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` as numpy arrays: float32 (n, 1, 8, 8) in [0, 1] and int64 (n,)."""
    images, labels = _all_arrays()
    idx = _split_indices()[check_split(split)]
    return images[idx].copy(), labels[idx].copy()


def load_digits_dataset(split: str = "train"):
    """The ``digits`` data set as a ``torch.utils.data.TensorDataset`` of ``(x, y)``.

    ``x``: float32 (1, 8, 8) in [0, 1]; ``y``: int64 class 0..9.
    """
    import torch
    from torch.utils.data import TensorDataset

    images, labels = digits_arrays(split)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
