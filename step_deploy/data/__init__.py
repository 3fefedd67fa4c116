"""Data sets: the bundled digits and what is derived from them, plus loaders for data on disk.

Nothing is ever downloaded (DESIGN.md section 5). Registry:

=============  ==========================  ========  ========  =======  =======================
name           per-sample x (float32)      kind      encoding  classes  source
=============  ==========================  ========  ========  =======  =======================
digits         (1, 8, 8) in [0, 1]         static    direct    10       sklearn load_digits
digits-events  (T, 2, 8, 8) event counts   events    events    10       derived from digits
digits-seq     (8, 8) = (rows, pixels)     sequence  direct    10       derived from digits
cifar10        (3, 32, 32) normalised      static    direct    10       user's disk (torchvision)
cifar10-dvs    (T, 2, S, S), S=event_size  events    events    10       user's disk (event files)
=============  ==========================  ========  ========  =======  =======================

Labels are int64. The digits variants share one fixed stratified split: train 1437, test 360
(``split='all'``: 1797); see :mod:`step_deploy.data.digits`. Event tensors put channel 0 = OFF,
channel 1 = ON. ``digits-events`` and ``cifar10-dvs`` are time-first per sample; a
``DataLoader`` batch is ``(B, T, ...)``, transpose to ``(T, B, ...)`` for the IR's time-first
layout. The zoo's models read ``digits-seq`` with ``encoding='sequence'`` (T = 8, one image row per
step: :class:`step_deploy.models.encoders.SequenceEncoder`), which ``step-train --data digits-seq``
sets. The derived digits arrays are cached in memory (``functools.lru_cache``); no files are
written.

Quantization inputs (``--calib``): ``step_deploy.data.calibration.resolve_calibration`` gives real
calibration/evaluation data (a data set, a tensor file) or, only when asked, noise (it builds on
this package, so it is imported from its module, not re-exported here).
"""

from __future__ import annotations

from .digits import CLASSES as DIGIT_CLASSES
from .digits import SPLIT_SIZES as DIGITS_SPLIT_SIZES
from .digits import check_split, digits_arrays, load_digits_dataset, split_indices
from .events import (
    digits_events_arrays,
    events_shape,
    image_to_events,
    load_digits_events,
)
from .external import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DEFAULT_EVENT_SIZE,
    events_to_frames,
    load_cifar10,
    load_cifar10_dvs,
    read_event_file,
)
from .sequences import digits_seq_arrays, load_digits_seq

DATASETS = ("digits", "digits-events", "digits-seq", "cifar10", "cifar10-dvs")
BUNDLED = ("digits", "digits-events", "digits-seq")
DEFAULT_T = 4


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    return name


def load_dataset(name: str, split: str = "train", root=None, T: int = DEFAULT_T,
                 event_size: int | None = DEFAULT_EVENT_SIZE, **options):
    """Load data set ``name``'s ``split`` as a map-style dataset of ``(x, y)`` pairs.

    ``split``: 'train' or 'test' (bundled digits sets and cifar10-dvs also take 'all').
    ``root``: folder of the data on disk (cifar10, cifar10-dvs); ignored for the bundled sets.
    ``T``: time steps of the event data sets (digits-events, cifar10-dvs).
    ``event_size``: side of the resized cifar10-dvs frames (``None`` keeps 128).
    ``options``: extra keywords of the specific loader (digits-events: ``substeps``,
    ``threshold``, ``eps``, ``scale``; cifar10-dvs: ``test_fraction``).

    The bundled sets come back as ``torch.utils.data.TensorDataset`` (``.tensors == (x, y)``);
    the on-disk sets as lazy datasets with ``__len__``, ``__getitem__ -> (x, y)`` and
    ``.targets``. Raises ``ValueError`` for unknown names or splits and
    ``FileNotFoundError`` when an on-disk data set is missing.
    """
    _check_name(name)

    def _no_options():
        if options:
            raise TypeError(f"{name} takes no extra options, got {sorted(options)}")

    if name == "digits":
        _no_options()
        return load_digits_dataset(split)
    if name == "digits-events":
        return load_digits_events(split, T, **options)
    if name == "digits-seq":
        _no_options()
        return load_digits_seq(split)
    if name == "cifar10":
        _no_options()
        return load_cifar10(root, split)
    return load_cifar10_dvs(root, split, T=T, event_size=event_size, **options)


def dataset_info(name: str, T: int = DEFAULT_T,
                 event_size: int | None = DEFAULT_EVENT_SIZE, scale: int = 1) -> dict:
    """Static facts about data set ``name`` (nothing is loaded).

    Keys: ``name``, ``input_shape`` (per sample, as ``load_dataset`` returns it),
    ``num_classes``, ``kind`` ('static' | 'events' | 'sequence'), ``encoding`` ('direct':
    real values fed to the first layer / a direct encoder; 'events': already spikes/counts),
    ``time_steps`` (T of the data itself, ``None`` for static images), ``classes``,
    ``split_sizes`` (``None`` if it depends on the user's files), ``bundled``, ``description``.
    ``T``, ``event_size`` and ``scale`` (digits-events) only affect event shapes.
    """
    _check_name(name)
    if name == "digits":
        return dict(name=name, input_shape=(1, 8, 8), num_classes=10, kind="static",
                    encoding="direct", time_steps=None, classes=DIGIT_CLASSES,
                    split_sizes=dict(DIGITS_SPLIT_SIZES), bundled=True,
                    description="scikit-learn digits, 8x8 grey levels / 16 in [0, 1]")
    if name == "digits-events":
        return dict(name=name, input_shape=events_shape(T, scale), num_classes=10, kind="events",
                    encoding="events", time_steps=int(T), classes=DIGIT_CLASSES,
                    split_sizes=dict(DIGITS_SPLIT_SIZES), bundled=True,
                    description="digits moved along a saccade triangle, DVS ON/OFF event counts "
                                "(channel 0 OFF, 1 ON)")
    if name == "digits-seq":
        return dict(name=name, input_shape=(8, 8), num_classes=10, kind="sequence",
                    encoding="direct", time_steps=8, classes=DIGIT_CLASSES,
                    split_sizes=dict(DIGITS_SPLIT_SIZES), bundled=True,
                    description="digits read row by row: (time = rows, features = pixels)")
    if name == "cifar10":
        return dict(name=name, input_shape=(3, 32, 32), num_classes=10, kind="static",
                    encoding="direct", time_steps=None, classes=CIFAR10_CLASSES,
                    split_sizes={"train": 50000, "test": 10000}, bundled=False,
                    description="CIFAR-10 from disk (torchvision format), normalised with "
                                f"mean {CIFAR10_MEAN}, std {CIFAR10_STD}")
    side = 128 if event_size is None else int(event_size)
    return dict(name=name, input_shape=(int(T), 2, side, side), num_classes=10, kind="events",
                encoding="events", time_steps=int(T), classes=CIFAR10_CLASSES,
                split_sizes=None, bundled=False,
                description="CIFAR10-DVS event files from disk, binned into T frames "
                            "(tonic ToFrame n_time_bins) and resized bilinearly")


__all__ = [
    "DATASETS", "BUNDLED", "load_dataset", "dataset_info",
    "digits_arrays", "digits_events_arrays", "digits_seq_arrays", "split_indices", "check_split",
    "image_to_events", "events_to_frames", "read_event_file",
    "load_cifar10", "load_cifar10_dvs", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_CLASSES",
]
