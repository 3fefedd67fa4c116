"""``digits-events``: an event-camera (DVS) version of the bundled digits, derived deterministically.

How a sample is made (no randomness anywhere):

1. **Canvas.** The digit image (grey levels / 16, in [0, 1]) is kept at 8x8 (``scale=1``, the
   default) or enlarged by pixel replication to ``8*scale`` x ``8*scale``.
2. **Saccades.** As in N-MNIST, a sensor looking at a static digit moves along a closed
   triangle. The image is translated (sub-pixel, bilinear, zero outside the canvas) along
   the path ``(0, 0) -> (1, 0) -> (0.5, 1) -> (0, 0)`` in ``(dx, dy)`` pixels (x to the right,
   y downwards), multiplied by ``scale``; each of the three legs takes a third of the
   time. The path is sampled at ``T * substeps + 1`` equally spaced instants (``substeps=4``
   by default); sample 0 is the image at rest, the last one is back at rest.
3. **DVS pixels.** Each pixel keeps a reference log intensity ``ref``, initialised to
   ``log(I_0 + eps)`` (the sensor has been looking at the still image). At every sampled
   instant ``k`` it computes ``d = log(I_k + eps) - ref``; it emits ``floor(d / C)`` ON
   events if ``d >= C`` or ``floor(-d / C)`` OFF events if ``d <= -C`` and moves ``ref`` by the
   same number of thresholds (``ref += n_on*C - n_off*C``), as a DVS does. Defaults:
   contrast threshold ``C = 0.4``, ``eps = 0.1``.
4. **Frames.** Events of instants ``k = f*substeps + 1 .. (f+1)*substeps`` are counted into
   frame ``f`` (``f = 0 .. T-1``).

Per sample: float32 ``(T, 2, H, W)`` event counts (non-negative integers), ``H = W = 8*scale``.
Channel 0 holds OFF events (``p = 0``), channel 1 ON events (``p = 1``): the same order as
tonic's ``ToFrame`` and SpikingJelly's frames, so the CIFAR10-DVS loader
(:mod:`step_deploy.data.external`) agrees. A blank (constant) image produces no events at
all; only places where the moving image changes (edges) fire. ``T`` may be any positive
integer (default 4); a different ``T`` changes the temporal sampling, not the path.

Labels and the train/test split are those of ``digits`` (1437 / 360 samples).
Derived arrays are cached in memory (``functools.lru_cache``); no files are written.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .digits import _all_arrays, _split_indices, check_split

#: Corners of the closed saccade path, (dx, dy) in pixels of the 8x8 image.
SACCADE_VERTICES = ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0))
DEFAULT_T = 4
DEFAULT_SUBSTEPS = 4
DEFAULT_THRESHOLD = 0.4
DEFAULT_EPS = 0.1
DEFAULT_SCALE = 1
OFF, ON = 0, 1


def saccade_path(n_steps: int, scale: float = 1.0) -> np.ndarray:
    """``(n_steps + 1, 2)`` array of (dx, dy) offsets along the closed triangle path.

    Row ``k`` is the position at time ``k / n_steps`` of the whole movement; rows 0 and
    ``n_steps`` are both the rest position (0, 0).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    v = np.asarray(SACCADE_VERTICES, dtype=np.float64) * float(scale)
    n_legs = len(v)
    out = np.empty((n_steps + 1, 2), dtype=np.float64)
    for k in range(n_steps + 1):
        s = k * n_legs / n_steps  # position in "legs"
        leg = min(int(math.floor(s)), n_legs - 1)
        u = s - leg
        a, b = v[leg], v[(leg + 1) % n_legs]
        out[k] = a + u * (b - a)
    out[-1] = v[0]
    return out


def _shift_int(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``out[i] = a[i - k]`` along ``axis``, zeros where ``i - k`` is outside."""
    out = np.zeros_like(a)
    n = a.shape[axis]
    if abs(k) >= n:
        return out
    dst = [slice(None)] * a.ndim
    src = [slice(None)] * a.ndim
    dst[axis] = slice(max(k, 0), n + min(k, 0))
    src[axis] = slice(max(-k, 0), n - max(k, 0))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _shift_axis(a: np.ndarray, d: float, axis: int) -> np.ndarray:
    """Bilinear translation by ``d`` pixels along ``axis``: ``out[i] = a(i - d)``, zero outside."""
    i = int(math.floor(d))
    f = d - i
    out = _shift_int(a, i, axis)
    if f != 0.0:
        out = (1.0 - f) * out + f * _shift_int(a, i + 1, axis)
    return out


def shift_image(images: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Translate ``(..., H, W)`` images by ``dx`` (right) and ``dy`` (down) pixels, bilinear."""
    a = np.asarray(images, dtype=np.float64)
    return _shift_axis(_shift_axis(a, dx, a.ndim - 1), dy, a.ndim - 2)


def intensities_to_events(
    video: np.ndarray,
    T: int,
    threshold: float = DEFAULT_THRESHOLD,
    eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """DVS model: turn an intensity video into per-frame ON/OFF event counts.

    ``video``: ``(K + 1, *rest)`` non-negative intensities, ``K`` a multiple of ``T``; frame 0
    sets the reference levels. Returns ``(T, 2, *rest)`` float64 counts (channel 0 = OFF,
    channel 1 = ON); frame ``f`` collects instants ``f*K/T + 1 .. (f+1)*K/T``.
    """
    video = np.asarray(video, dtype=np.float64)
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    n_steps = video.shape[0] - 1
    if n_steps < T or n_steps % T:
        raise ValueError(f"video has {n_steps} steps after the first frame, not a multiple of T={T}")
    if threshold <= 0 or eps <= 0:
        raise ValueError("threshold and eps must be positive")
    sub = n_steps // T
    log_i = np.log(video + eps)
    ref = log_i[0].copy()
    out = np.zeros((T, 2) + video.shape[1:], dtype=np.float64)
    for k in range(1, n_steps + 1):
        d = log_i[k] - ref
        n_on = np.floor(np.maximum(d, 0.0) / threshold)
        n_off = np.floor(np.maximum(-d, 0.0) / threshold)
        ref += (n_on - n_off) * threshold
        f = (k - 1) // sub
        out[f, OFF] += n_off
        out[f, ON] += n_on
    return out


def image_to_events(
    images: np.ndarray,
    T: int = DEFAULT_T,
    *,
    substeps: int = DEFAULT_SUBSTEPS,
    threshold: float = DEFAULT_THRESHOLD,
    eps: float = DEFAULT_EPS,
    scale: int = DEFAULT_SCALE,
) -> np.ndarray:
    """Saccade + DVS conversion of still images (values in [0, 1]).

    ``images``: ``(H, W)``, ``(N, H, W)`` or ``(N, 1, H, W)``. Returns float32 counts of shape
    ``(T, 2, H*scale, W*scale)`` for a single ``(H, W)`` image, else ``(N, T, 2, H*scale, W*scale)``.
    The saccade amplitude (``SACCADE_VERTICES``) is in units of the original pixels.
    """
    a = np.asarray(images, dtype=np.float64)
    single = a.ndim == 2
    if single:
        a = a[None]
    elif a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"expected one channel, got shape {a.shape}")
        a = a[:, 0]
    elif a.ndim != 3:
        raise ValueError(f"expected (H, W), (N, H, W) or (N, 1, H, W) images, got shape {a.shape}")
    if int(T) != T or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    T, substeps, scale = int(T), int(substeps), int(scale)
    if scale > 1:
        a = np.repeat(np.repeat(a, scale, axis=-2), scale, axis=-1)
    path = saccade_path(T * substeps, scale=scale)
    video = np.stack([shift_image(a, dx, dy) for dx, dy in path])  # (K+1, N, H, W)
    ev = intensities_to_events(video, T, threshold=threshold, eps=eps)  # (T, 2, N, H, W)
    ev = np.ascontiguousarray(ev.transpose(2, 0, 1, 3, 4)).astype(np.float32)
    return ev[0] if single else ev


@functools.lru_cache(maxsize=16)
def _all_events(T: int, substeps: int, threshold: float, eps: float, scale: int) -> np.ndarray:
    images, _ = _all_arrays()
    ev = image_to_events(images, T, substeps=substeps, threshold=threshold, eps=eps, scale=scale)
    ev.setflags(write=False)
    return ev


def events_shape(T: int = DEFAULT_T, scale: int = DEFAULT_SCALE) -> tuple[int, int, int, int]:
    """Per-sample shape of ``digits-events``: ``(T, 2, 8*scale, 8*scale)``."""
    return (int(T), 2, 8 * int(scale), 8 * int(scale))


def digits_events_arrays(
    split: str = "train",
    T: int = DEFAULT_T,
    *,
    substeps: int = DEFAULT_SUBSTEPS,
    threshold: float = DEFAULT_THRESHOLD,
    eps: float = DEFAULT_EPS,
    scale: int = DEFAULT_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """``(events, labels)``: float32 (n, T, 2, H, W) counts and int64 (n,) labels."""
    if int(T) != T or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    idx = _split_indices()[check_split(split)]
    ev = _all_events(int(T), int(substeps), float(threshold), float(eps), int(scale))
    _, labels = _all_arrays()
    return ev[idx].copy(), labels[idx].copy()


def load_digits_events(split: str = "train", T: int = DEFAULT_T, **options):
    """``digits-events`` as a ``TensorDataset`` of ``(x, y)``; x float32 (T, 2, 8, 8) by default.

    ``options``: ``substeps``, ``threshold``, ``eps``, ``scale`` (see the module docstring).
    """
    import torch
    from torch.utils.data import TensorDataset

    ev, labels = digits_events_arrays(split, T, **options)
    return TensorDataset(torch.from_numpy(ev), torch.from_numpy(labels))
