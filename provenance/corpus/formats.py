"""Which files a corpus path means, and which format a file is read or written in."""

from __future__ import annotations

import glob as globlib
import os
from pathlib import Path

from provenance.errors import InputError
from provenance.outputs import is_hidden_name

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


def _hidden_below(path: Path, base: Path, pattern: tuple[str, ...] = ()) -> bool:
    """Whether a part of ``path`` below ``base`` is a hidden name (work files, markers).

    A part the glob ``pattern`` names literally (``data/_shards/*.parquet``) was asked for, so
    it is not skipped; parts matched by a wildcard are.
    """
    try:
        parts = path.relative_to(base).parts
    except ValueError:  # not below it: nothing to judge
        return False
    for index, part in enumerate(parts):
        literal = (not any("**" in p for p in pattern[: index + 1])
                   and index < len(pattern) and not globlib.has_magic(pattern[index]))
        if is_hidden_name(part) and not literal:
            return True
    return False


def _glob_files(text: str) -> list[Path]:
    """The corpus files a glob matches, skipping hidden names below its literal folder."""
    parts = Path(text).parts
    literal = next((i for i, part in enumerate(parts) if globlib.has_magic(part)), len(parts))
    base = Path(*parts[:literal]) if literal else Path()
    matches = (Path(p) for p in globlib.glob(text, recursive=True))
    return sorted(p for p in matches
                  if p.is_file() and not _hidden_below(p, base, parts[literal:]))


def _folder_files(folder: Path) -> list[Path]:
    """The corpus files in a folder, recursively; hidden folders are not entered."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_hidden_name(d)]
        found += [Path(root, name) for name in files if not is_hidden_name(name)
                  and name.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)
                  and not name.endswith(".rejects.jsonl")]
    return sorted(found)


def resolve_inputs(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """The files behind a corpus path, in a stable order, each with its kind.

    Accepts one file, a folder (its jsonl/parquet files, recursively, sorted), a glob pattern, or a
    ``save_to_disk`` folder (kind ``dataset``). Below the folder (or a glob's wildcards), names
    that start with ``.`` or ``_`` are skipped, as pyarrow datasets do: they are work files of a
    run (even one that was killed), markers and metadata, never documents.

    Examples
    --------
    >>> import tempfile, pathlib, shutil
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.jsonl", ".out.parquet.parts.x/part-0.parquet", "_tmp/b.jsonl"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = (root / name).write_text("")
    >>> [p.name for _, p in resolve_inputs(root)]
    ['a.jsonl']
    >>> [p.name for _, p in resolve_inputs(root / "_tmp")]  # named, so read
    ['b.jsonl']
    >>> shutil.rmtree(root)
    """
    text = os.fspath(source)
    path = Path(text)
    if globlib.has_magic(text):
        matches = _glob_files(text)
        if not matches:
            raise InputError("glob pattern matched no file", file=text)
        return [(input_kind(p), p) for p in matches]
    if not path.exists():
        raise InputError("no such file or folder", file=text)
    if _is_dataset_folder(path):
        return [("dataset", path)]
    if path.is_dir():
        files = _folder_files(path)
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
