"""Which files a corpus path means, and which format a file is read or written in."""

from __future__ import annotations

import glob as globlib
import os
from pathlib import Path

from provenance.errors import InputError

DEFAULT_BATCH_SIZE = 10_000
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists()
        or (path / "state.json").exists()
        or (path / "dataset_dict.json").exists()
    )


def input_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        "unsupported input format; use .jsonl, .jsonl.gz, .parquet, a folder of those, "
        "or a folder written by datasets' save_to_disk",
        file=str(path),
    )


def resolve_inputs(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """The files behind a corpus path, in a stable order, each with its kind.

    Accepts one file, a folder (its jsonl/parquet files, recursively, sorted), a glob pattern, or a
    ``save_to_disk`` folder (kind ``dataset``).
    """
    text = os.fspath(source)
    path = Path(text)
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
        if not matches:
            raise InputError("glob pattern matched no file", file=text)
        return [(input_kind(p), p) for p in matches]
    if not path.exists():
        raise InputError("no such file or folder", file=text)
    if _is_dataset_folder(path):
        return [("dataset", path)]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not p.name.startswith(".")
            and p.name.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)
            and not p.name.endswith(".rejects.jsonl")
        )
        if not files:
            raise InputError("folder holds no .jsonl, .jsonl.gz or .parquet file", file=text)
        return [(input_kind(p), p) for p in files]
    return [(input_kind(path), path)]


def output_format(path: str | os.PathLike) -> str:
    """``parquet`` or ``jsonl`` from an output file name."""
    name = os.fspath(path).lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise InputError(
        "unsupported output format; name the output .parquet, .jsonl or .jsonl.gz",
        file=os.fspath(path),
    )
