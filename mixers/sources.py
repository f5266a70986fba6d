"""Turn each mixture source into a validated lazy frame with the columns the mixer needs.

Parquet sources stay lazy (polars scans them in streaming passes, so a corpus larger than memory
mixes in bounded memory); validation is a lazy expression and only the bad rows are ever
collected. Everything else (jsonl, ``save_to_disk`` folders, in-memory frames and datasets) goes
through :class:`provenance.corpus.CorpusReader` once into a parquet file in the build's work
folder, with the same rejects rules as tagging.

Every frame leaves here with: the id and text columns, ``mix_source`` (the source's name),
``mix_pool`` (``original``, ``synthetic`` or ``scraped``), the provenance columns (filled from the
source's role where the data has none), ``_generation`` and the ranking key ``_key``.

Every source is therefore backed by parquet files (:attr:`LoadedSource.files`), which the build's
metadata pass reads row group by row group (:func:`iter_row_groups`) instead of going through the
lazy frame; the expressions that derive the mixer's columns (:func:`reason_expr`,
:func:`pool_expr`, :func:`generation_expr`) are shared by both, so they agree row for row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mixers.sampling import selection_key
from mixers.spec import LABELS, MixtureSpec, Source
from provenance.corpus import (
    CorpusCounts,
    CorpusReader,
    CorpusWriter,
    Origin,
    Reject,
    RejectReason,
    resolve_inputs,
)
from provenance.errors import ConfigError, InputError
from provenance.schema import (
    PROV_DETAIL,
    PROV_EVIDENCE,
    PROV_GENERATION,
    PROV_GENERATOR,
    PROV_LABEL,
    PROV_SCORE,
    TAG_SCHEMA,
    Evidence,
    Label,
)

SOURCE_COL = "mix_source"
POOL_COL = "mix_pool"
COPY_COL = "mix_copy"
KEY_COL = "_key"
GEN_COL = "_generation"
TOKENS_COL = "_tokens"
REJECT_COL = "_reject"
FILE_COL = "_file"
ROW_COL = "_row"
# The row's position in the build's frame of all sources (a UInt32).
IDX_COL = "_idx"
POOLS = ("original", "synthetic", "scraped")
POOL_DTYPE = pl.Enum(POOLS)


@dataclass
class LoadedSource:
    """A source ready for mixing. ``counts`` is filled while reading for staged sources and by
    the build's metadata pass for parquet sources (``staged`` tells which).

    ``files`` are the parquet files ``frame`` reads, in order (the staged copy for staged
    sources); ``raw_schema`` is the schema of their data before the mixer's columns are added.
    """

    source: Source
    name: str
    frame: pl.LazyFrame
    counts: CorpusCounts = field(default_factory=CorpusCounts)
    staged: bool = False
    files: list[Path] = field(default_factory=list)
    raw_schema: dict[str, pl.DataType] = field(default_factory=dict)


def source_names(sources: tuple[Source, ...]) -> list[str]:
    """Stable, unique names: the given name, else the path's last component.

    The name is part of every row's ranking key, so it must not depend on how a path was spelt
    (``./gen1`` and ``gen1`` are the same source); two sources with the same name are refused.
    """
    names = []
    for i, source in enumerate(sources):
        if source.name:
            names.append(source.name)
        elif isinstance(source.path, (str, os.PathLike)):
            names.append(Path(os.fspath(source.path).rstrip("/")).name)
        else:
            names.append(f"{source.role}-{i}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(
            f"several sources are named {', '.join(repeated)}; give each a distinct name "
            "(name = ... in the spec) so that its documents keep their ranking"
        )
    return names


def load_source(
    source: Source,
    name: str,
    spec: MixtureSpec,
    *,
    workdir: Path,
    on_reject: Any,
) -> LoadedSource:
    """Validate one source and add the mixer's columns (see the module docstring).

    A source that is not all parquet is staged as one parquet file in ``workdir``.
    """
    path = source.path
    if isinstance(path, (str, os.PathLike)):
        inputs = resolve_inputs(path)
        if all(kind == "parquet" for kind, _ in inputs):
            loaded = parquet_source(source, name, spec, [p for _, p in inputs])
            if source.role == "from-tags":
                check_parquet_tags(loaded.frame, name)
            return loaded
    tagged = source.role == "from-tags"
    reader = CorpusReader(
        path, id_field=spec.id_field, text_field=spec.text_field, on_reject=on_reject,
        origins=tagged,
    )
    staged = workdir / f"source-{name.replace(os.sep, '_')}.parquet"
    with CorpusWriter(staged) as writer:
        for batch in reader:
            if tagged:  # refused at its line before anything is mixed
                check_batch_tags(batch, name, reader.origins)
            writer.write(batch)
    counts = reader.counts
    frame = (
        pl.scan_parquet(staged)
        if writer.rows
        else pl.LazyFrame(schema={spec.id_field: pl.String, spec.text_field: pl.String})
    ).with_columns(
        pl.lit(None, dtype=pl.String).alias(REJECT_COL),
        pl.lit(None, dtype=pl.String).alias(FILE_COL),
        pl.lit(None, dtype=pl.UInt32).alias(ROW_COL),
    )
    return LoadedSource(source, name, _decorate(frame, source, name, spec), counts, staged=True,
                        files=[staged] if writer.rows else [],
                        raw_schema=dict(frame.collect_schema()))


def parquet_source(source: Source, name: str, spec: MixtureSpec,
                   files: list[Path]) -> LoadedSource:
    """The source ``source`` read lazily from the parquet ``files`` (nothing is staged or
    written): :func:`load_source` for a parquet source, or for one file of it on a worker."""
    counts = CorpusCounts()
    frame = _scan_parquet(files, spec, counts)
    return LoadedSource(source, name, _decorate(frame, source, name, spec), counts,
                        files=files, raw_schema=dict(frame.collect_schema()))


def _scan_parquet(files: list[Path], spec: MixtureSpec, counts: CorpusCounts) -> pl.LazyFrame:
    """Lazily scan parquet files, marking (not yet routing) rows without id or text.

    No pass over the data happens here: the reason column ``_reject`` is evaluated in the
    build's single metadata pass, and only the rare bad rows are fetched in full afterwards.
    """
    id_col, text_col = spec.id_field, spec.text_field
    frames = []
    for path in files:
        schema = pl.read_parquet_schema(path)
        if text_col not in schema:
            raise InputError(
                f"no column {text_col!r} (columns: {', '.join(schema)}); set text_field",
                file=str(path),
            )
        if id_col not in schema:
            raise InputError(
                f"no column {id_col!r}; mixing ranks documents by id, so give every document "
                "one (tailguard tag writes ids derived from content)",
                file=str(path),
            )
        if schema[text_col] != pl.String:
            raise InputError(f"text column has type {schema[text_col]}, not string",
                             file=str(path), field=text_col)
        counts.files += 1
        frames.append(
            pl.scan_parquet(path)
            .with_columns(pl.col(id_col).cast(pl.String))
            .with_row_index(ROW_COL)
            .with_columns(pl.lit(str(path)).alias(FILE_COL))
        )
    frame = pl.concat(frames, how="diagonal_relaxed")
    return frame.with_columns(reason_expr(spec).alias(REJECT_COL))


def reason_expr(spec: MixtureSpec) -> pl.Expr:
    """Why a parquet row cannot be mixed (null when it can): no text, blank text, or no id."""
    text = pl.col(spec.text_field)
    return (
        pl.when(text.is_null()).then(pl.lit(RejectReason.MISSING_TEXT.value))
        .when(text.str.strip_chars() == "").then(pl.lit(RejectReason.EMPTY_TEXT.value))
        .when(pl.col(spec.id_field).is_null()).then(pl.lit(RejectReason.BAD_ID.value))
        .otherwise(None)
    )


def reject_from_row(rec: dict[str, Any], spec: MixtureSpec) -> Reject:
    """The :class:`Reject` for a row the metadata pass marked bad."""
    reason = RejectReason(rec.pop(REJECT_COL))
    file, row = rec.pop(FILE_COL), rec.pop(ROW_COL)
    field_name = spec.id_field if reason is RejectReason.BAD_ID else spec.text_field
    return Reject(file=file, reason=reason, message=reason.value, row=row, field=field_name,
                  raw=rec)


def iter_rejects(frame: pl.LazyFrame, spec: MixtureSpec) -> Iterator[tuple[str, Reject]]:
    """The rows of ``frame`` marked bad (``_reject`` not null, rare), each with its source's
    name and its :class:`Reject` (the row's other columns as ``raw``)."""
    schema = frame.collect_schema()
    bad = frame.filter(pl.col(REJECT_COL).is_not_null()).drop(
        [c for c in (KEY_COL, IDX_COL, POOL_COL, GEN_COL) if c in schema]
    ).collect(engine="streaming")
    for rec in bad.iter_rows(named=True):
        name = rec.pop(SOURCE_COL)
        yield name, reject_from_row(rec, spec)


def fill_columns(source: Source, name: str, schema: Any) -> dict[str, pl.Expr]:
    """The provenance columns a source's data lacks (``schema``), as literals: declared by the
    role for ``human`` and ``synthetic`` sources, else null. The write pass fills its rows with
    these same values."""
    role_label = {"human": Label.HUMAN, "synthetic": Label.SYNTHETIC}.get(source.role)
    fill: dict[str, pl.Expr] = {}
    if role_label is not None:
        defaults = {
            PROV_LABEL: pl.lit(role_label.value),
            PROV_SCORE: pl.lit(1.0 if role_label is Label.SYNTHETIC else 0.0),
            PROV_EVIDENCE: pl.lit(Evidence.DECLARED.value),
            PROV_GENERATOR: pl.lit(None, dtype=pl.String),
            PROV_GENERATION: pl.lit(source.generation, dtype=pl.Int64),
            PROV_DETAIL: pl.lit(json.dumps({"role": source.role, "source": name})),
        }
        fill = {col: expr for col, expr in defaults.items() if col not in schema}
    # Every provenance column exists downstream, null where the data says nothing.
    for col, dtype in TAG_SCHEMA.items():
        if col not in schema and col not in fill:
            fill[col] = pl.lit(None, dtype=dtype)
    return fill


def _decorate(frame: pl.LazyFrame, source: Source, name: str, spec: MixtureSpec) -> pl.LazyFrame:
    schema = frame.collect_schema()
    if source.role == "from-tags" and PROV_LABEL not in schema:
        raise InputError(
            f"source {name!r} has role from-tags but no {PROV_LABEL} column; tag it first: "
            "tailguard tag INPUT -o tagged.parquet"
        )
    fill = fill_columns(source, name, schema)
    frame = frame.with_columns(**fill) if fill else frame
    return frame.with_columns(
        pl.lit(name).alias(SOURCE_COL),
        pool_expr(source).alias(POOL_COL),
        generation_expr(source).alias(GEN_COL),
        selection_key(name, spec.id_field, spec.seed).alias(KEY_COL),
    )


def foreign_tag_expr() -> pl.Expr:
    """True where a row's tag is not one of tailguard's labels (null is untagged, not foreign)."""
    label = pl.col(PROV_LABEL)
    return label.is_not_null() & ~label.cast(pl.String).is_in(LABELS)


def tag_problem(value: Any, name: str) -> str:
    return (f"{value!r} is not a tailguard label ({', '.join(LABELS)}) in from-tags source "
            f"{name!r}, which is mixed by its tags; write another tool's labels as these "
            "(machine -> synthetic) or tag the corpus: tailguard tag INPUT -o tagged.parquet")


def check_tag_dtype(dtype: pl.DataType, name: str, file: str | None = None) -> None:
    """Refuse a label column that cannot hold tailguard's labels (numbers, booleans ...)."""
    if dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(dtype, pl.Enum):
        raise InputError(f"from-tags source {name!r} has labels of type {dtype}, not text "
                         f"({', '.join(LABELS)})", file=file, field=PROV_LABEL)


def check_parquet_tags(frame: pl.LazyFrame, name: str) -> None:
    """Refuse a parquet ``from-tags`` source whose labels are not tailguard's, naming the first
    foreign value's file and row: its rows would silently count as scraped and escape every
    label filter (a ``machine`` tag is not dropped by ``drop_labels = ["synthetic"]``).

    Reads the label column only (one streaming pass, before any planning)."""
    check_tag_dtype(frame.collect_schema()[PROV_LABEL], name)
    first = frame.select(PROV_LABEL, FILE_COL, ROW_COL).filter(foreign_tag_expr()).head(1)
    for value, file, row in first.collect(engine="streaming").iter_rows():
        raise InputError(tag_problem(value, name), file=file, row=row, field=PROV_LABEL)


def check_batch_tags(batch: pl.DataFrame, name: str, origins: list[Origin]) -> None:
    """:func:`check_parquet_tags` for one batch of a staged source; ``origins`` holds where
    each row not yet checked was read (in order), and loses this batch's entries."""
    if PROV_LABEL in batch.columns:
        check_tag_dtype(batch.schema[PROV_LABEL], name, origins[0].file if origins else None)
        bad = batch.select(foreign_tag_expr()).to_series().arg_true()
        if bad.len():
            row = int(bad[0])
            raise origins[row].error(tag_problem(batch[PROV_LABEL][row], name), PROV_LABEL)
    del origins[:batch.height]


def pool_expr(source: Source) -> pl.Expr:
    """The pool of each row: fixed by the role, or by the tag for ``from-tags`` sources."""
    if source.role == "human":
        pool = pl.lit("original")
    elif source.role == "synthetic":
        pool = pl.lit("synthetic")
    else:
        pool = (
            pl.when(pl.col(PROV_LABEL) == Label.SYNTHETIC.value)
            .then(pl.lit("synthetic"))
            .otherwise(pl.lit("scraped"))
        )
    return pool.cast(POOL_DTYPE)


def generation_expr(source: Source) -> pl.Expr:
    """The synthetic generation of each row (Int64, null when unknown)."""
    if source.generation is not None:
        return pl.lit(source.generation, dtype=pl.Int64)
    return pl.col(PROV_GENERATION).cast(pl.Int64)


# -- reading the files behind a source, row group by row group -----------------------------------


@dataclass
class RowGroup:
    """One row group of one file: its position, its row count and the columns read from it.

    ``columns`` maps each requested column the file has to its Arrow array; ``text_clean`` is
    True when the row group's statistics prove that no text is null, empty or blank (so the
    text column did not have to be read to validate it).
    """

    file: Path
    index: int
    rows: int
    columns: dict[str, pa.Array]
    text_clean: bool = False


def file_rows(path: Path) -> int:
    """Rows in a parquet file, from its footer."""
    return pq.read_metadata(path).num_rows


def _text_clean(row_group: pq.RowGroupMetaData, position: int | None) -> bool:
    """Whether the statistics prove every text in the row group non-null and not blank.

    The statistics bound every value between min and max (byte-wise). When both start with a
    byte in 0x21..0xC1, so does every value: a printable ASCII character, never whitespace
    (Unicode whitespace starts with 0x09..0x0D, 0x20, 0xC2, 0xE1, 0xE2 or 0xE3), so no value is
    empty or blank after stripping.
    """
    if position is None:
        return False
    stats = row_group.column(position).statistics
    if stats is None or not stats.has_null_count or stats.null_count != 0:
        return False
    if not stats.has_min_max:
        return False
    low, high = stats.min, stats.max
    low = low.encode() if isinstance(low, str) else low
    high = high.encode() if isinstance(high, str) else high
    if not isinstance(low, bytes) or not isinstance(high, bytes) or not low or not high:
        return False
    return 0x20 < low[0] and high[0] < 0xC2


def iter_row_groups(
    path: Path, columns: list[str], *, text_field: str | None = None, read_text: bool = True
) -> Iterator[RowGroup]:
    """Read ``columns`` (those the file has) one row group at a time.

    With ``text_field``, the text column is only read where the row group's statistics do not
    already prove it clean (unless ``read_text``, which always reads it).
    """
    with pq.ParquetFile(path) as parquet:
        meta = parquet.metadata
        present = set(parquet.schema_arrow.names)
        position = None
        if text_field is not None:
            paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
            position = paths.index(text_field) if paths.count(text_field) == 1 else None
        wanted = [c for c in dict.fromkeys(columns) if c in present]
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            clean = text_field is not None and _text_clean(group, position)
            names = list(wanted)
            if (text_field is not None and text_field in present and text_field not in names
                    and (read_text or not clean)):
                names.append(text_field)
            table = parquet.read_row_group(index, columns=names) if names else None
            arrays = {} if table is None else {
                n: table.column(n).combine_chunks() for n in table.column_names
            }
            yield RowGroup(path, index, group.num_rows, arrays, clean)
