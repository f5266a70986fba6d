"""Tables as batch sources: each yields ``(row offset, frame)`` so rejects can name their row.

A parquet file, an in-memory polars frame (eager or lazy) and a ``datasets.Dataset`` (in memory
or a ``save_to_disk`` folder) all stream the same way, a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from provenance.errors import InputError


@dataclass
class ParquetBatches:
    """A parquet file read batch by batch (its row count comes free from the footer)."""

    path: Path
    batch_size: int

    def __call__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        try:
            pfile = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"not a readable parquet file: {exc}", file=str(self.path)) from exc
        offset = 0
        try:
            for batch in pfile.iter_batches(batch_size=self.batch_size):
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                yield offset, frame
                offset += frame.height
        except pa.ArrowInvalid as exc:
            raise InputError(
                f"parquet data cannot be decoded near row {offset}: {exc}", file=str(self.path)
            ) from exc

    @property
    def rows(self) -> int:
        return pq.ParquetFile(self.path).metadata.num_rows


@dataclass
class FrameBatches:
    """An in-memory polars DataFrame, sliced (zero-copy)."""

    frame: pl.DataFrame
    batch_size: int

    def __call__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        for offset in range(0, self.frame.height, self.batch_size):
            yield offset, self.frame.slice(offset, self.batch_size)

    @property
    def rows(self) -> int:
        return self.frame.height


@dataclass
class LazyFrameBatches:
    """A polars LazyFrame, collected a batch at a time (no row count without running it)."""

    frame: pl.LazyFrame
    batch_size: int

    def __call__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        offset = 0
        for batch in self.frame.collect_batches(chunk_size=self.batch_size):
            yield offset, batch
            offset += batch.height

    rows = None


@dataclass
class DatasetBatches:
    """A ``datasets.Dataset``, read as Arrow tables without going through Python rows."""

    dataset: Any
    batch_size: int

    def __call__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        offset = 0
        for table in self.dataset.with_format("arrow").iter(batch_size=self.batch_size):
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            yield offset, frame
            offset += frame.height

    @property
    def rows(self) -> int:
        return len(self.dataset)


def is_hf_dataset(obj: Any) -> bool:
    """Duck-typed, so reading a polars frame never imports ``datasets``."""
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "with_format")


def load_dataset_folder(path: Path) -> Any:
    """One split saved with ``save_to_disk``; a DatasetDict is refused, naming a split to pass."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several unrelated types here
        raise InputError(f"cannot load the datasets folder: {exc}", file=str(path)) from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded.keys())
        raise InputError(
            f"this folder holds a DatasetDict with splits {splits}; pass one split's folder, "
            f"e.g. {path / next(iter(loaded.keys()))}",
            file=str(path),
        )
    return loaded
