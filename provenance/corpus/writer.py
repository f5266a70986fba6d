"""Writing a corpus: parquet or jsonl that appears atomically, whatever the batches' schemas."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import polars as pl

from provenance.atomic import atomic_path
from provenance.corpus.formats import output_format


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
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.rows = 0
        self._parts: list[Path] = []
        self._tmpdir: Path | None = None
        self._jsonl_ctx: Any = None
        self._jsonl: IO[bytes] | None = None

    def write(self, frame: pl.DataFrame) -> None:
        self.rows += frame.height
        if self.format == "parquet":
            if self._tmpdir is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._tmpdir = Path(
                    tempfile.mkdtemp(prefix=f".{self.path.name}.parts.", dir=self.path.parent)
                )
            part = self._tmpdir / f"part-{len(self._parts):06d}.parquet"
            frame.write_parquet(part)
            self._parts.append(part)
            return
        if self._jsonl is None:
            self._jsonl_ctx = atomic_path(self.path)
            tmp = self._jsonl_ctx.__enter__()
            raw = open(tmp, "wb")
            self._jsonl = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if str(
                self.path
            ).lower().endswith(".gz") else raw
            self._raw = raw
        frame.write_ndjson(self._jsonl)

    def close(self, *, commit: bool = True) -> None:
        try:
            if self.format == "parquet":
                if commit:
                    self._merge_parts()
            else:
                if self._jsonl is None and commit:
                    self.write(pl.DataFrame())
                if self._jsonl is not None:
                    self._jsonl.close()
                    if self._raw is not self._jsonl:
                        self._raw.close()
                    self._jsonl = None
                    exc = None if commit else RuntimeError("aborted")
                    self._jsonl_ctx.__exit__(type(exc) if exc else None, exc, None)
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    def _merge_parts(self) -> None:
        with atomic_path(self.path, suffix=".parquet") as tmp:
            if not self._parts:
                pl.DataFrame().write_parquet(tmp)
            elif len(self._parts) == 1:
                os.replace(self._parts[0], tmp)
            else:
                frames = [pl.scan_parquet(p) for p in self._parts]
                pl.concat(frames, how="diagonal_relaxed").sink_parquet(tmp)

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)
