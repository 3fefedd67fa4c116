"""``digits-seq``: the bundled digits read row by row, as a sequence.

Per sample: float32 ``(8, 8)`` = ``(time steps, features)``: time step ``t`` is row ``t`` of the
8x8 image (top to bottom) and its 8 features are that row's pixels (left to right), the same
values as ``digits`` (grey level / 16, in [0, 1]). So ``seq[i] == digits[i][0]`` exactly.
The layout is time-first per sample; a ``DataLoader`` batch is ``(B, 8, 8)``, i.e.
``(B, T, F)``: transpose to ``(T, B, F)`` for the time-first convention of the IR.

Labels and the train/test split are those of ``digits`` (1437 / 360 samples).
"""

from __future__ import annotations

import numpy as np

from .digits import digits_arrays

SEQ_SHAPE = (8, 8)  # (time steps = rows, features = pixels of the row)


def digits_seq_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(sequences, labels)``: float32 (n, 8, 8) = (n, rows/time, pixels/features), int64 (n,)."""
    images, labels = digits_arrays(split)
    return np.ascontiguousarray(images[:, 0]), labels


def load_digits_seq(split: str = "train"):
    """``digits-seq`` as a ``TensorDataset`` of ``(x, y)``; x float32 (8, 8) = (time, features)."""
    import torch
    from torch.utils.data import TensorDataset

    seq, labels = digits_seq_arrays(split)
    return TensorDataset(torch.from_numpy(seq), torch.from_numpy(labels))
