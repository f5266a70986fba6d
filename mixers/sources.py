"""Turn each mixture source into a validated lazy frame with the columns the mixer needs.

Parquet sources stay lazy (polars scans them in streaming passes, so a corpus larger than memory
mixes in bounded memory); validation is a lazy expression and only the bad rows are ever
collected. Everything else (jsonl, ``save_to_disk`` folders, in-memory frames and datasets) goes
through :class:`provenance.corpus.CorpusReader` once into a parquet file in the build's work
folder, with the same rejects rules as tagging.

Every frame leaves here with: the id and text columns, ``mix_source`` (the source's name),
``mix_pool`` (``original``, ``synthetic`` or ``scraped``), the provenance columns (filled from the
source's role where the data has none), ``_generation`` and the ranking key ``_key``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mixers.sampling import selection_key
from mixers.spec import MixtureSpec, Source
from provenance.corpus import (
    CorpusCounts,
    CorpusReader,
    CorpusWriter,
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
KEY_COL = "_key"
GEN_COL = "_generation"
TOKENS_COL = "_tokens"
REJECT_COL = "_reject"
FILE_COL = "_file"
ROW_COL = "_row"
POOLS = ("original", "synthetic", "scraped")
POOL_DTYPE = pl.Enum(POOLS)


@dataclass
class LoadedSource:
    """A source ready for mixing. ``counts`` is filled while reading for staged sources and by
    the build's metadata pass for parquet sources (``staged`` tells which)."""

    source: Source
    name: str
    frame: pl.LazyFrame
    counts: CorpusCounts = field(default_factory=CorpusCounts)
    staged: bool = False


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
    """Validate one source and add the mixer's columns (see the module docstring)."""
    counts = CorpusCounts()
    path = source.path
    if isinstance(path, (str, os.PathLike)):
        inputs = resolve_inputs(path)
        if all(kind == "parquet" for kind, _ in inputs):
            frame = _scan_parquet([p for _, p in inputs], spec, counts)
            return LoadedSource(source, name, _decorate(frame, source, name, spec), counts)
    reader = CorpusReader(
        path, id_field=spec.id_field, text_field=spec.text_field, on_reject=on_reject
    )
    staged = workdir / f"source-{name.replace(os.sep, '_')}.parquet"
    with CorpusWriter(staged) as writer:
        for batch in reader:
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
    return LoadedSource(source, name, _decorate(frame, source, name, spec), counts, staged=True)


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
    text = pl.col(text_col)
    reason = (
        pl.when(text.is_null()).then(pl.lit(RejectReason.MISSING_TEXT.value))
        .when(text.str.strip_chars() == "").then(pl.lit(RejectReason.EMPTY_TEXT.value))
        .when(pl.col(id_col).is_null()).then(pl.lit(RejectReason.BAD_ID.value))
        .otherwise(None)
    )
    return frame.with_columns(reason.alias(REJECT_COL))


def reject_from_row(rec: dict[str, Any], spec: MixtureSpec) -> Reject:
    """The :class:`Reject` for a row the metadata pass marked bad."""
    reason = RejectReason(rec.pop(REJECT_COL))
    file, row = rec.pop(FILE_COL), rec.pop(ROW_COL)
    field_name = spec.id_field if reason is RejectReason.BAD_ID else spec.text_field
    return Reject(file=file, reason=reason, message=reason.value, row=row, field=field_name,
                  raw=rec)


def _decorate(frame: pl.LazyFrame, source: Source, name: str, spec: MixtureSpec) -> pl.LazyFrame:
    schema = frame.collect_schema()
    role_label = {"human": Label.HUMAN, "synthetic": Label.SYNTHETIC}.get(source.role)
    if source.role == "from-tags" and PROV_LABEL not in schema:
        raise InputError(
            f"source {name!r} has role from-tags but no {PROV_LABEL} column; tag it first: "
            "tailguard tag INPUT -o tagged.parquet"
        )
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
    frame = frame.with_columns(**fill) if fill else frame
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
    generation = pl.col(PROV_GENERATION).cast(pl.Int64)
    if source.generation is not None:
        generation = pl.lit(source.generation, dtype=pl.Int64)
    return frame.with_columns(
        pl.lit(name).alias(SOURCE_COL),
        pool.cast(POOL_DTYPE).alias(POOL_COL),
        generation.alias(GEN_COL),
        selection_key(name, spec.id_field, spec.seed).alias(KEY_COL),
    )
