"""Read and write corpora without losing a document.

A corpus is jsonl, jsonl.gz, parquet (a file, a folder of files or a glob), a folder written by
``datasets.Dataset.save_to_disk``, or an in-memory polars / ``datasets`` table. Whatever it is,
it comes out as polars batches with a string ``id`` column and a string ``text`` column (named
by the caller), plus every other field the documents carry.

Web corpora are dirty, so every row read ends up either in a batch or as a :class:`Reject` with a
reason, and :class:`CorpusCounts` says how many of each: ``read == accepted + rejected`` always
holds. ``strict=True`` turns the first bad row into an :class:`~provenance.errors.InputError`
naming file, line (or row) and field instead.

``iter_*`` functions stream; ``read_*`` functions materialise (polars naming).
"""

from __future__ import annotations

import base64
import glob as globlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from provenance.atomic import atomic_path
from provenance.errors import InputError
from provenance.schema import ID, TEXT

DEFAULT_BATCH_SIZE = 10_000
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


class RejectReason(str, Enum):
    """Why a row did not make it into the corpus."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_UTF8 = "invalid_utf8"
    MISSING_TEXT = "missing_text"
    TEXT_NOT_STRING = "text_not_string"
    EMPTY_TEXT = "empty_text"
    BAD_ID = "bad_id"
    DUPLICATE_ID = "duplicate_id"


@dataclass(frozen=True)
class Reject:
    """One row that could not be used, with enough context to find and fix it.

    ``line`` is the 1-based line of a jsonl file; ``row`` the 0-based row of a table. ``raw`` is the
    record as read (the parsed object, or the line's text when it did not parse); for bytes that
    are not UTF-8, ``raw_base64`` keeps them exactly.
    """

    file: str
    reason: RejectReason
    message: str
    line: int | None = None
    row: int | None = None
    field: str | None = None
    raw: Any = None
    raw_base64: str | None = None

    def as_json(self) -> str:
        record: dict[str, Any] = {
            "file": self.file,
            "line": self.line,
            "row": self.row,
            "reason": self.reason.value,
            "field": self.field,
            "message": self.message,
            "raw": self.raw,
        }
        if self.raw_base64 is not None:
            record["raw_base64"] = self.raw_base64
        return json.dumps(record, ensure_ascii=False, default=str)

    def to_error(self) -> InputError:
        return InputError(
            f"{self.reason.value}: {self.message}",
            file=self.file,
            line=self.line,
            row=self.row,
            field=self.field,
        )


@dataclass
class CorpusCounts:
    """How many rows were read, kept and rejected (and why); ``read == accepted + rejected``."""

    files: int = 0
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    ids_derived: int = 0
    by_reason: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "ids_derived": self.ids_derived,
            "rejected_by_reason": dict(sorted(self.by_reason.items())),
        }


class RejectsWriter:
    """Append rejects to a jsonl file that appears atomically when the writer is closed.

    The file is only created when there is at least one reject, so a clean run leaves no empty
    rejects file behind; a stale one from an earlier run of the same output is removed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        self._ctx: Any = None
        self._fh: IO[str] | None = None

    def __call__(self, reject: Reject) -> None:
        if self._fh is None:
            self._ctx = atomic_path(self.path)
            tmp = self._ctx.__enter__()
            self._fh = open(tmp, "w", encoding="utf-8")
        self._fh.write(reject.as_json() + "\n")
        self.count += 1

    def close(self, *, commit: bool = True) -> None:
        if self._fh is None:
            if commit and self.path.exists():
                self.path.unlink()
            return
        self._fh.close()
        self._fh = None
        if commit:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def rejects_path_for(output: str | os.PathLike) -> Path:
    """The rejects file that goes with an output: ``<output>.rejects.jsonl``."""
    output = Path(output)
    return output.with_name(output.name + ".rejects.jsonl")


# --------------------------------------------------------------------------------------------
# Finding the input


def _is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists()
        or (path / "state.json").exists()
        or (path / "dataset_dict.json").exists()
    )


def _kind_of(path: Path) -> str:
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
        return [(_kind_of(p), p) for p in matches]
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
        return [(_kind_of(p), p) for p in files]
    return [(_kind_of(path), path)]


# --------------------------------------------------------------------------------------------
# Reading


def content_id(text: str) -> str:
    """A stable id derived from content: the first 16 hex digits of the text's SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class CorpusReader:
    """Stream a corpus as validated polars batches; count and route every bad row.

    Parameters
    ----------
    source : path, glob, ``polars.DataFrame`` / ``LazyFrame`` or ``datasets.Dataset``
        What to read (see :func:`resolve_inputs` for paths).
    id_field, text_field : str
        Names of the identifier and text fields. When a document has no id, a stable one is
        derived from its content (:func:`content_id`, with ``-2``, ``-3`` ... for repeats).
    batch_size : int
        Rows per yielded batch.
    strict : bool
        Raise :class:`InputError` on the first bad row instead of rejecting it.
    on_reject : callable, optional
        Receives each :class:`Reject` (e.g. a :class:`RejectsWriter`); by default they are kept
        in :attr:`rejects`.

    Examples
    --------
    >>> import polars as pl
    >>> reader = CorpusReader(pl.DataFrame({"id": ["a", "b", "a"], "text": ["x", " ", "y"]}))
    >>> [batch.height for batch in reader]
    [1]
    >>> reader.counts.read, reader.counts.accepted, reader.counts.rejected
    (3, 1, 2)
    >>> sorted(r.reason.value for r in reader.rejects)
    ['duplicate_id', 'empty_text']
    """

    def __init__(
        self,
        source: Any,
        *,
        id_field: str = ID,
        text_field: str = TEXT,
        batch_size: int = DEFAULT_BATCH_SIZE,
        strict: bool = False,
        on_reject: Callable[[Reject], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.id_field = id_field
        self.text_field = text_field
        self.batch_size = batch_size
        self.strict = strict
        self.counts = CorpusCounts()
        self.rejects: list[Reject] = []
        self._on_reject = on_reject or self.rejects.append
        self._seen_ids: set[str] = set()
        self._derived: Counter = Counter()
        self._inputs = self._resolve()

    # -- public -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[pl.DataFrame]:
        for kind, name, payload in self._inputs:
            self.counts.files += 1
            if kind == "jsonl":
                yield from self._iter_jsonl(payload)
            else:
                yield from self._iter_tables(name, payload())

    def estimated_rows(self) -> int | None:
        """Rows the reader will see, when that is cheap to know (for progress bars)."""
        total = 0
        for kind, _, payload in self._inputs:
            if kind == "jsonl":
                if payload.name.lower().endswith(".gz"):
                    return None
                total += _count_lines(payload)
            elif payload.rows is None:
                return None
            else:
                total += payload.rows
        return total

    # -- inputs -------------------------------------------------------------------------------

    def _resolve(self) -> list[tuple[str, str, Any]]:
        source = self.source
        if isinstance(source, pl.LazyFrame):
            return [("frame", "<LazyFrame>", _Lazy(source, self.batch_size))]
        if isinstance(source, pl.DataFrame):
            return [("frame", "<DataFrame>", _Frame(source, self.batch_size))]
        if _is_hf_dataset(source):
            return [("frame", "<datasets.Dataset>", _HFDataset(source, self.batch_size))]
        if not isinstance(source, (str, os.PathLike)):
            raise InputError(
                f"cannot read a corpus from {type(source).__name__}; pass a path, a polars "
                "DataFrame/LazyFrame or a datasets.Dataset"
            )
        inputs: list[tuple[str, str, Any]] = []
        for kind, path in resolve_inputs(source):
            if kind == "jsonl":
                inputs.append((kind, str(path), path))
            elif kind == "parquet":
                inputs.append((kind, str(path), _ParquetBatches(path, self.batch_size)))
            else:
                inputs.append((kind, str(path), _HFDataset(_load_dataset(path), self.batch_size)))
        return inputs

    # -- jsonl ----------------------------------------------------------------------------------

    def _iter_jsonl(self, path: Path) -> Iterator[pl.DataFrame]:
        name = str(path)
        rows: list[dict] = []
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        try:
            with opener(path, "rb") as fh:
                for lineno, raw in enumerate(fh, start=1):
                    record = self._parse_line(name, lineno, raw)
                    if record is not None and self._check_record(name, record, line=lineno):
                        rows.append(record)
                    if len(rows) >= self.batch_size:
                        yield self._rows_to_frame(rows)
                        rows = []
        except (OSError, EOFError) as exc:  # unreadable or truncated gzip
            raise InputError(f"cannot read file: {exc}", file=name) from exc
        if rows:
            yield self._rows_to_frame(rows)

    def _parse_line(self, name: str, lineno: int, raw: bytes) -> dict | None:
        stripped = raw.strip()
        if not stripped:
            # A blank line is not a document; it is neither read nor rejected.
            return None
        self.counts.read += 1
        try:
            line = stripped.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reject(
                name,
                RejectReason.INVALID_UTF8,
                f"bytes are not valid UTF-8 at offset {exc.start}",
                line=lineno,
                raw=stripped.decode("utf-8", errors="replace"),
                raw_base64=base64.b64encode(stripped).decode("ascii"),
            )
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            self._reject(
                name, RejectReason.MALFORMED_JSON, f"{exc.msg} (column {exc.colno})",
                line=lineno, raw=line,
            )
            return None
        if "\\u" in line and _has_lone_surrogate(record):
            self._reject(
                name, RejectReason.INVALID_UTF8,
                "a \\uD800-\\uDFFF escape without its pair is not valid Unicode text",
                line=lineno, raw=line,
            )
            return None
        if not isinstance(record, dict):
            self._reject(
                name, RejectReason.NOT_AN_OBJECT,
                f"expected a JSON object, got {type(record).__name__}", line=lineno, raw=record,
            )
            return None
        return record

    def _check_record(self, name: str, record: dict, *, line: int) -> bool:
        """Validate one parsed record in place (normalises its id); False if it was rejected."""
        text = record.get(self.text_field)
        if text is None:
            return self._reject(
                name, RejectReason.MISSING_TEXT, "no text", line=line, field=self.text_field,
                raw=record,
            )
        if not isinstance(text, str):
            return self._reject(
                name, RejectReason.TEXT_NOT_STRING, f"text is {type(text).__name__}, not a string",
                line=line, field=self.text_field, raw=record,
            )
        if not text.strip():
            return self._reject(
                name, RejectReason.EMPTY_TEXT, "text is empty or whitespace",
                line=line, field=self.text_field, raw=record,
            )
        doc_id = record.get(self.id_field)
        if doc_id is None:
            doc_id = self._derive_id(text)
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            return self._reject(
                name, RejectReason.BAD_ID, f"id must be a string or an integer, got "
                f"{type(doc_id).__name__}", line=line, field=self.id_field, raw=record,
            )
        doc_id = str(doc_id)
        if doc_id in self._seen_ids:
            return self._reject(
                name, RejectReason.DUPLICATE_ID, f"id {doc_id!r} was already read",
                line=line, field=self.id_field, raw=record,
            )
        self._seen_ids.add(doc_id)
        record[self.id_field] = doc_id
        self.counts.accepted += 1
        return True

    def _rows_to_frame(self, rows: list[dict]) -> pl.DataFrame:
        try:
            frame = pl.DataFrame(rows, infer_schema_length=None)
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            frame = pl.DataFrame(_jsonify_mixed_fields(rows), infer_schema_length=None)
        return self._order_columns(frame)

    # -- tables (parquet, frames, datasets) ----------------------------------------------------

    def _iter_tables(self, name: str, batches: Iterable[tuple[int, pl.DataFrame]]) -> Iterator[
        pl.DataFrame
    ]:
        for offset, frame in batches:
            if self.text_field not in frame.columns:
                raise InputError(
                    f"no column {self.text_field!r} (columns: {', '.join(frame.columns)}); "
                    "name the text column with --text-field / text_field=",
                    file=name,
                )
            self.counts.read += frame.height
            kept = self._check_frame(name, frame, offset)
            self.counts.accepted += kept.height
            if kept.height:
                yield self._order_columns(kept)

    def _check_frame(self, name: str, frame: pl.DataFrame, offset: int) -> pl.DataFrame:
        """Vectorised validation of a table batch; Python only touches the bad rows."""
        text_col = self.text_field
        frame = frame.with_row_index("__row", offset=offset)
        dtype = frame.schema[text_col]
        if dtype == pl.Binary:
            frame = self._decode_binary_text(name, frame)
        elif dtype not in (pl.String, pl.Null):
            self._reject_rows(
                name, frame, pl.lit(True), RejectReason.TEXT_NOT_STRING,
                f"text column has type {dtype}, not string", text_col,
            )
            return frame.head(0).drop("__row").with_columns(pl.col(text_col).cast(pl.String))
        text = pl.col(text_col)
        frame = self._reject_rows(
            name, frame, text.is_null(), RejectReason.MISSING_TEXT, "no text", text_col
        )
        frame = self._reject_rows(
            name, frame, text.str.strip_chars() == "", RejectReason.EMPTY_TEXT,
            "text is empty or whitespace", text_col,
        )
        frame = self._with_ids(name, frame)
        return frame.drop("__row")

    def _with_ids(self, name: str, frame: pl.DataFrame) -> pl.DataFrame:
        id_col = self.id_field
        if id_col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(id_col))
        dtype = frame.schema[id_col]
        if dtype.is_integer():
            frame = frame.with_columns(pl.col(id_col).cast(pl.String))
        elif dtype not in (pl.String, pl.Null):
            frame = self._reject_rows(
                name, frame, pl.col(id_col).is_not_null(), RejectReason.BAD_ID,
                f"id column has type {dtype}; ids must be strings or integers", id_col,
            )
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(id_col))
        else:
            frame = frame.with_columns(pl.col(id_col).cast(pl.String))
        if frame.get_column(id_col).null_count():
            texts = frame.get_column(self.text_field).to_list()
            ids = [
                self._derive_id(t) if i is None else i
                for i, t in zip(frame.get_column(id_col).to_list(), texts, strict=True)
            ]
            frame = frame.with_columns(pl.Series(id_col, ids, dtype=pl.String))
        # Duplicates within the batch and against earlier batches: only the first copy stays.
        ids = frame.get_column(id_col)
        seen = self._seen_ids
        seen_before = pl.Series([i in seen for i in ids.to_list()], dtype=pl.Boolean)
        dup = (~ids.is_first_distinct()) | seen_before
        frame = self._reject_rows(
            name, frame, dup, RejectReason.DUPLICATE_ID, "id was already read", id_col,
            describe=lambda rec: f"id {rec[id_col]!r} was already read",
        )
        self._seen_ids.update(frame.get_column(id_col).to_list())
        return frame

    def _decode_binary_text(self, name: str, frame: pl.DataFrame) -> pl.DataFrame:
        col = self.text_field
        decoded: list[str | None] = []
        bad: list[bool] = []
        for value in frame.get_column(col).to_list():
            try:
                decoded.append(None if value is None else value.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                decoded.append(None)
                bad.append(True)
        bad_rows = frame.filter(pl.Series(bad))
        for rec in bad_rows.to_dicts():
            raw_bytes = rec[col]
            rec[col] = raw_bytes.decode("utf-8", errors="replace")
            self._reject(
                name, RejectReason.INVALID_UTF8, "text bytes are not valid UTF-8",
                row=rec.pop("__row"), field=col, raw=rec,
                raw_base64=base64.b64encode(raw_bytes).decode("ascii"),
            )
        return frame.with_columns(pl.Series(col, decoded, dtype=pl.String)).filter(
            ~pl.Series(bad)
        )

    def _reject_rows(
        self,
        name: str,
        frame: pl.DataFrame,
        mask: pl.Expr | pl.Series,
        reason: RejectReason,
        message: str,
        field_name: str,
        describe: Callable[[dict], str] | None = None,
    ) -> pl.DataFrame:
        """Route rows where ``mask`` holds to the rejects; return the rest."""
        mask_expr = mask if isinstance(mask, pl.Expr) else pl.lit(mask)
        flagged = frame.with_columns(mask_expr.fill_null(False).alias("__bad"))
        bad = flagged.filter(pl.col("__bad")).drop("__bad")
        for rec in bad.to_dicts():
            row = rec.pop("__row")
            self._reject(
                name, reason, describe(rec) if describe else message, row=row, field=field_name,
                raw=rec,
            )
        return flagged.filter(~pl.col("__bad")).drop("__bad")

    # -- shared -------------------------------------------------------------------------------

    def _reject(self, name: str, reason: RejectReason, message: str, **where: Any) -> bool:
        reject = Reject(file=name, reason=reason, message=message, **where)
        if self.strict:
            raise reject.to_error()
        self.counts.rejected += 1
        self.counts.by_reason[reason.value] += 1
        self._on_reject(reject)
        return False

    def _derive_id(self, text: str) -> str:
        base = content_id(text)
        self._derived[base] += 1
        self.counts.ids_derived += 1
        n = self._derived[base]
        return base if n == 1 else f"{base}-{n}"

    def _order_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        first = [self.id_field, self.text_field]
        return frame.select(first + [c for c in frame.columns if c not in first])


# --------------------------------------------------------------------------------------------
# Table batch sources: each yields (row offset, frame)


@dataclass
class _ParquetBatches:
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
class _Frame:
    frame: pl.DataFrame
    batch_size: int

    def __call__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        for offset in range(0, self.frame.height, self.batch_size):
            yield offset, self.frame.slice(offset, self.batch_size)

    @property
    def rows(self) -> int:
        return self.frame.height


@dataclass
class _Lazy:
    frame: pl.LazyFrame
    batch_size: int

    def __call__(self) -> Iterator[tuple[int, pl.DataFrame]]:
        offset = 0
        for batch in self.frame.collect_batches(chunk_size=self.batch_size):
            yield offset, batch
            offset += batch.height

    rows = None


@dataclass
class _HFDataset:
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


def _is_hf_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "with_format")


def _load_dataset(path: Path) -> Any:
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


def _has_lone_surrogate(record: Any) -> bool:
    """True when JSON escapes produced a lone surrogate, which no UTF-8 writer can store."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def _jsonify_mixed_fields(rows: list[dict]) -> list[dict]:
    """Encode fields whose values have different JSON types across rows as JSON strings.

    Polars needs one type per column; a web corpus where ``meta`` is sometimes an object and
    sometimes a string would otherwise fail the whole batch. Nothing is lost: the JSON string holds
    the value exactly.
    """
    def kind(value: Any) -> str:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return "number" if is_number else type(value).__name__

    kinds: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, set()).add(kind(value))
    mixed = {k for k, ks in kinds.items() if len(ks) > 1 or ks & {"dict", "list"}}
    return [
        {
            k: json.dumps(v, ensure_ascii=False, sort_keys=True)
            if k in mixed and v is not None
            else v
            for k, v in row.items()
        }
        for row in rows
    ]


def progress_bar(reader: CorpusReader, desc: str, enabled: bool) -> tqdm:
    """A documents progress bar for a reader (total known when cheap to count).

    ``disable=None`` lets tqdm show it only when stderr is a terminal, so pipeline logs do not
    fill up with carriage returns.
    """
    total = reader.estimated_rows() if enabled else None
    return tqdm(
        total=total, unit="doc", desc=desc, disable=None if enabled else True, dynamic_ncols=True
    )


def iter_corpus(source: Any, **options: Any) -> Iterator[pl.DataFrame]:
    """Stream validated batches of a corpus (see :class:`CorpusReader` for the options)."""
    return iter(CorpusReader(source, **options))


@dataclass
class Corpus:
    """A corpus read into memory, with what was rejected and the counts."""

    frame: pl.DataFrame
    rejects: list[Reject]
    counts: CorpusCounts


def read_corpus(source: Any, **options: Any) -> Corpus:
    """Read a whole corpus into one DataFrame (see :class:`CorpusReader` for the options).

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
    >>> _ = path.write_text(json.dumps({"id": 1, "text": "hello"}) + "\\n{broken\\n")
    >>> corpus = read_corpus(path)
    >>> corpus.frame.get_column("id").to_list(), corpus.counts.rejected
    (['1'], 1)
    >>> corpus.rejects[0].reason.value, corpus.rejects[0].line
    ('malformed_json', 2)
    """
    reader = CorpusReader(source, **options)
    frames = list(reader)
    frame = (
        pl.concat(frames, how="diagonal_relaxed")
        if frames
        else pl.DataFrame(
            schema={reader.id_field: pl.String, reader.text_field: pl.String}
        )
    )
    return Corpus(frame=frame, rejects=reader.rejects, counts=reader.counts)


# --------------------------------------------------------------------------------------------
# Writing


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
