"""Writing a corpus: parquet or jsonl that appears atomically, whatever the batches' schemas.

Nothing of a run that fails or is killed is ever read as data: parquet batches wait in a hidden
work folder (:func:`provenance.outputs.work_dir`, swept by the next run when the process was
killed) and the jsonl output in a hidden temporary file (:func:`provenance.atomic.atomic_path`).
A failed write (read-only folder, full disk) is one :class:`~provenance.errors.OutputError`
that names the output and the cause.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import polars as pl

from provenance.atomic import atomic_path, close_atomic, open_atomic
from provenance.corpus.formats import output_format
from provenance.outputs import work_dir, writing


def write_corpus(frame: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as parquet or jsonl (by extension), atomically."""
    with CorpusWriter(path) as writer:
        writer.write(frame)
    return Path(path)


class CorpusWriter:
    """Stream batches into one parquet or jsonl file that appears atomically on close.

    Batches of a web corpus need not share a schema (a field present in one batch only, an int
    column that turns float): parquet batches go to part files first and are merged with
    polars' relaxed concatenation, so columns are unified instead of the run failing at batch 900.

    ``schema`` (column name -> polars dtype) is what a parquet output holds when no batch was
    written (an empty input, or one whose rows were all rejected), so that the next step finds
    its columns; a jsonl output is then an empty file.
    """

    def __init__(self, path: str | os.PathLike, *,
                 schema: Mapping[str, pl.DataType] | None = None) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.schema = dict(schema or {})
        self.rows = 0
        self._parts: list[Path] = []
        self._work = contextlib.ExitStack()
        self._folder: Path | None = None
        self._raw: IO[bytes] | None = None
        self._jsonl: IO[bytes] | None = None
        self._pending: Any = None

    def write(self, frame: pl.DataFrame) -> None:
        with writing(self.path):
            if self.format == "parquet":
                self._write_part(frame)
            else:
                self._write_jsonl(frame)
        self.rows += frame.height

    def _write_part(self, frame: pl.DataFrame) -> None:
        if self._folder is None:
            self._folder = self._work.enter_context(work_dir(self.path.parent, "corpus"))
        part = self._folder / f"part-{len(self._parts):06d}.parquet"
        frame.write_parquet(part)
        self._parts.append(part)

    def _write_jsonl(self, frame: pl.DataFrame) -> None:
        if self._raw is None:
            self._raw, self._pending = open_atomic(self.path, "wb")
            # filename="": the header names no file, so the bytes do not depend on the
            # temporary file's random name.
            self._jsonl = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0) if (
                self.path.name.lower().endswith(".gz")) else self._raw
        frame.write_ndjson(self._jsonl)

    def close(self, *, commit: bool = True) -> None:
        try:
            with writing(self.path):
                if self.format == "parquet":
                    if commit:
                        self._merge_parts()
                else:
                    if self._raw is None and commit:
                        self._write_jsonl(pl.DataFrame())
                    self._close_jsonl(commit)
        finally:
            self._work.close()  # the work folder goes, whatever happened
            self._folder = None

    def _close_jsonl(self, commit: bool) -> None:
        raw, jsonl = self._raw, self._jsonl
        self._raw = self._jsonl = None
        if raw is None or jsonl is None:
            return
        if jsonl is not raw:
            try:
                jsonl.close()  # the gzip trailer; the file under it stays open
            except BaseException as exc:
                close_atomic(raw, self._pending, commit=False)
                if commit or not isinstance(exc, OSError):
                    raise
                return
        close_atomic(raw, self._pending, commit=commit)

    def _merge_parts(self) -> None:
        with atomic_path(self.path, suffix=".parquet") as tmp:
            if not self._parts:
                pl.DataFrame(schema=self.schema).write_parquet(tmp)
            elif len(self._parts) == 1:
                os.replace(self._parts[0], tmp)
            else:
                frames = [pl.scan_parquet(p) for p in self._parts]
                pl.concat(frames, how="diagonal_relaxed").sink_parquet(tmp)

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)
