"""Reading a corpus: validated polars batches with every bad row counted and routed."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from provenance.corpus.batch_sources import (
    DatasetBatches,
    FrameBatches,
    LazyFrameBatches,
    ParquetBatches,
    is_hf_dataset,
    load_dataset_folder,
)
from provenance.corpus.formats import DEFAULT_BATCH_SIZE, resolve_inputs
from provenance.corpus.rejects import CorpusCounts, Reject, RejectReason
from provenance.errors import InputError
from provenance.schema import ID, TEXT


def content_id(text: str) -> str:
    """A stable id derived from content: the first 16 hex digits of the text's SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def already_read(doc_id: str) -> str:
    """The message of a ``duplicate_id`` reject."""
    return f"id {doc_id!r} was already read"


class CorpusIds:
    """The ids a corpus has read so far, and the ids it derived from content.

    This is the one part of reading that depends on every earlier row of the corpus: a document
    without id gets its content id (:func:`content_id`), numbered ``-2``, ``-3`` ... where the
    content repeats, and a row whose id was already read is a duplicate. :class:`CorpusReader`
    keeps one; the Ray tagger's driver keeps the corpus-wide one and passes its workers' shards
    through it in corpus order, so both engines number and reject ids with this code.

    Examples
    --------
    >>> ids = CorpusIds()
    >>> ids.derive("hello") == content_id("hello"), ids.derive("hello")[-2:]
    (True, '-2')
    >>> ids.claim_all(["a", "b", "a"]), ids.claim("b")
    ([True, True, False], False)
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._derived: Counter = Counter()

    def number(self, base: str) -> str:
        """The id of the next document whose content id is ``base``."""
        self._derived[base] += 1
        n = self._derived[base]
        return base if n == 1 else f"{base}-{n}"

    def derive(self, text: str) -> str:
        """The id of the next document without one whose text is ``text``."""
        return self.number(content_id(text))

    def claim(self, doc_id: str) -> bool:
        """Whether ``doc_id`` is new (it is recorded); ``False`` for an id already read."""
        if doc_id in self.seen:
            return False
        self.seen.add(doc_id)
        return True

    def claim_all(self, ids: Iterable[str]) -> list[bool]:
        """:meth:`claim` for each id in order: the first copy of an id is the one kept."""
        seen, new = self.seen, []
        for doc_id in ids:
            if doc_id in seen:
                new.append(False)
            else:
                seen.add(doc_id)
                new.append(True)
        return new


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
    origins : bool
        Keep where each accepted row came from, in order, in :attr:`origins` (an
        :class:`Origin` per row): a caller that checks a field of the rows it was given (a
        label, a group) can then name the file and line of a bad one, which the row's place
        in the batches does not tell once rows before it were rejected.

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
        origins: bool = False,
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
        #: where each accepted row came from (only with ``origins=True``)
        self.origins: list[Origin] | None = [] if origins else None
        self.ids = CorpusIds()
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
            return [("frame", "<LazyFrame>", LazyFrameBatches(source, self.batch_size))]
        if isinstance(source, pl.DataFrame):
            return [("frame", "<DataFrame>", FrameBatches(source, self.batch_size))]
        if is_hf_dataset(source):
            return [("frame", "<datasets.Dataset>", DatasetBatches(source, self.batch_size))]
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
                inputs.append((kind, str(path), ParquetBatches(path, self.batch_size)))
            else:
                dataset = load_dataset_folder(path)
                inputs.append((kind, str(path), DatasetBatches(dataset, self.batch_size)))
        return inputs

    # -- jsonl ----------------------------------------------------------------------------------

    def _iter_jsonl(self, path: Path) -> Iterator[pl.DataFrame]:
        name = str(path)
        rows: list[dict] = []
        for lineno, raw in enumerate(read_lines(path), start=1):
            record = self._parse_line(name, lineno, raw)
            if record is not None and self._check_record(name, record, line=lineno):
                rows.append(record)
                if self.origins is not None:
                    self.origins.append(Origin(name, line=lineno))
            if len(rows) >= self.batch_size:
                yield self._rows_to_frame(rows)
                rows = []
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
        if not self.ids.claim(doc_id):
            return self._reject(
                name, RejectReason.DUPLICATE_ID, already_read(doc_id),
                line=line, field=self.id_field, raw=record,
            )
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
        if self.origins is not None:
            self.origins.extend(Origin(name, row=r) for r in frame.get_column("__row").to_list())
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
        new = self.ids.claim_all(frame.get_column(id_col).to_list())
        return self._reject_rows(
            name, frame, ~pl.Series(new, dtype=pl.Boolean), RejectReason.DUPLICATE_ID,
            "id was already read", id_col, describe=lambda rec: already_read(rec[id_col]),
        )

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
        self.counts.ids_derived += 1
        return self.ids.derive(text)

    def _order_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        first = [self.id_field, self.text_field]
        return frame.select(first + [c for c in frame.columns if c not in first])


UTF8_BOM = b"\xef\xbb\xbf"


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a jsonl (or jsonl.gz) file as bytes, without a UTF-8 byte order mark.

    A BOM that an editor put at the start of the file is not part of the first record (Python's
    ``utf-8-sig`` and polars skip it too); one anywhere else is data, left for the parser to
    judge. Only reading the file is guarded here: an error raised by whoever consumes the lines
    (a rejects file that cannot be written) keeps its own message instead of being blamed on
    this input.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "bom.jsonl"
    >>> _ = path.write_bytes(UTF8_BOM + b'{"text": "a"}\\n{"text": "b"}\\n')
    >>> list(read_lines(path))
    [b'{"text": "a"}\\n', b'{"text": "b"}\\n']
    >>> import shutil; shutil.rmtree(path.parent)
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            first = next(fh, None)
            if first is None:
                return
            yield first.removeprefix(UTF8_BOM)
            yield from fh
    except (OSError, EOFError) as exc:  # unreadable or truncated gzip
        raise InputError(f"cannot read file: {exc}", file=str(path)) from exc


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


@dataclass(frozen=True)
class Origin:
    """Where one row was read: its file and 1-based ``line`` (jsonl) or 0-based ``row`` (a
    table), as :class:`~provenance.errors.InputError` and :class:`Reject` name them.

    >>> Origin("docs.jsonl", line=7).error("label 'robot' is not a label", "label").args[0]
    "docs.jsonl, line 7, field 'label': label 'robot' is not a label"
    """

    file: str
    line: int | None = None
    row: int | None = None

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, file=self.file, line=self.line, row=self.row, field=field)


@dataclass
class Corpus:
    """A corpus read into memory, with what was rejected and the counts (and, when read with
    ``origins=True``, where each row of ``frame`` came from)."""

    frame: pl.DataFrame
    rejects: list[Reject]
    counts: CorpusCounts
    origins: list[Origin] | None = None


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
    >>> import shutil; shutil.rmtree(path.parent)
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
    return Corpus(frame=frame, rejects=reader.rejects, counts=reader.counts,
                  origins=reader.origins)
