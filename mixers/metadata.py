"""The metadata pass: what the plan needs to know about every row, in a few bytes a row.

One streaming read of the sources, one parquet row group at a time, of only the columns the plan
needs: the id, and the text only where the row group's statistics do not already prove it valid
(or where tokens are counted). Each source's rows end in compact numpy arrays
(:class:`SourceRows`): the XXH64 ranking key (8 bytes a row), and only where they vary, the pool,
the flags of rows that are rejected or filtered, the generation, the weighted rank and the token
count. Memory therefore grows by about 8 bytes a document, whatever the documents hold.

The per-row values come from the same polars expressions as the sources' lazy frames
(:func:`mixers.sources.reason_expr`, :func:`~mixers.sources.pool_expr`,
:func:`~mixers.sources.generation_expr` and those below), so the two agree row for row.

:func:`read_metadata` reads every file in this process; an engine that spreads the files over
workers runs :func:`file_metadata` on each and joins a source's files with :func:`join_files`,
to the same arrays.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from mixers.sampling import SEPARATOR, weighted_key, xxh64_strings
from mixers.sources import (
    KEY_COL,
    POOL_COL,
    POOLS,
    LoadedSource,
    RowGroup,
    file_rows,
    generation_expr,
    iter_row_groups,
    pool_expr,
    reason_expr,
)
from mixers.spec import MixtureSpec
from provenance.errors import InputError
from provenance.schema import PROV_GENERATION, PROV_LABEL, PROV_SCORE

#: Strategies that keep only the newest synthetic generation (and so need the generations).
GENERATION_STRATEGIES = ("replace", "retain")
# Threads that read files at once (each also uses pyarrow's own pool to decode).
MAX_THREADS = 4


def token_expr(spec: MixtureSpec) -> pl.Expr:
    """Tokens per document with ``spec.tokenizer`` (a tokenizer loads once a process)."""
    text = pl.col(spec.text_field)
    if spec.tokenizer == "whitespace":
        return text.str.count_matches(r"\S+").cast(pl.Int64)
    tokenizer = _tokenizer(spec.tokenizer)

    def count(s: pl.Series) -> pl.Series:
        encoded = tokenizer(s.to_list(), add_special_tokens=False)["input_ids"]
        return pl.Series(s.name, [len(ids) for ids in encoded], dtype=pl.Int64)

    return text.map_batches(count, return_dtype=pl.Int64, is_elementwise=True)


@functools.cache
def _tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise InputError(f"cannot load tokenizer: {str(exc).splitlines()[0]}",
                         file=name) from exc


def filtered_expr(spec: MixtureSpec) -> pl.Expr:
    """Scraped documents the provenance filter drops."""
    scraped = pl.col(POOL_COL) == "scraped"
    filtered = pl.lit(False)
    labels = spec.effective_drop_labels
    if labels:
        filtered = filtered | (scraped & pl.col(PROV_LABEL).is_in(list(labels)).fill_null(False))
    if spec.max_score is not None:
        filtered = filtered | (scraped & (pl.col(PROV_SCORE) > spec.max_score).fill_null(False))
    return filtered


def rank_expr(spec: MixtureSpec) -> pl.Expr:
    key = pl.col(KEY_COL)
    if spec.strategy != "reweight":
        return key
    weight = (1.0 - pl.col(PROV_SCORE).fill_null(0.0).clip(0.0, 1.0)) ** spec.reweight_power
    # Other pools are drawn with weight 1 on the same (0, inf) scale.
    return pl.when(pl.col(POOL_COL) == "scraped").then(weighted_key(key, weight)).otherwise(
        weighted_key(key, pl.lit(1.0))
    )


POOL_CODES = {pool: code for code, pool in enumerate(POOLS)}
ROLE_POOL = {"human": "original", "synthetic": "synthetic", "from-tags": "scraped"}
Mask = np.ndarray | bool | None


def both(*masks: Mask) -> Mask:
    """The rows in every mask: a bool array, None or True (every row), False (no row)."""
    out = None
    for mask in masks:
        if mask is False:
            return False
        if mask is not None and mask is not True:
            out = mask if out is None else out & mask
    return out


def rows_in(mask: Mask, rows: int) -> int:
    """How many of ``rows`` rows ``mask`` holds."""
    if mask is False:
        return 0
    return rows if mask is None or mask is True else int(np.count_nonzero(mask))


@dataclass
class SourceRows:
    """Per-row metadata of one source as compact numpy arrays, in row order.

    Arrays that would hold the same value for every row are not kept: ``pool`` is None when
    every row is in ``fixed_pool``, ``bad``/``filtered`` are None when no row is, ``generation``
    is None (all null), an int (the same for all rows) or an array (with ``generation_null``),
    ``rank`` is None when it is the key itself.
    """

    loaded: LoadedSource
    offset: int
    rows: int
    key: np.ndarray
    fixed_pool: int = 0
    pool: np.ndarray | None = None
    bad: np.ndarray | None = None
    filtered: np.ndarray | None = None
    generation: np.ndarray | int | None = None
    generation_null: np.ndarray | None = None
    rank: np.ndarray | None = None
    tokens: np.ndarray | None = None
    eligible: np.ndarray | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def array(self, name: str, dtype: type, fill: Any = 0) -> np.ndarray:
        """The per-row array ``name``, created (filled with ``fill``) on first use."""
        with self._lock:
            if getattr(self, name) is None:
                setattr(self, name, np.full(self.rows, fill, dtype=dtype))
            return getattr(self, name)

    def in_pool(self, pool: str) -> np.ndarray | bool:
        """Rows in ``pool`` (a bool when the source has one pool)."""
        if self.pool is None:
            return self.fixed_pool == POOL_CODES[pool]
        return self.pool == POOL_CODES[pool]

    def select(self, pool: str) -> np.ndarray | bool | None:
        """The eligible rows in ``pool``: a mask, None (every row) or False (no row)."""
        return both(self.in_pool(pool), self.eligible) if self.rows else False

    @property
    def ranks(self) -> np.ndarray:
        return self.key if self.rank is None else self.rank

    def release(self) -> None:
        """Drop the per-row arrays once the selection is made: the write pass needs only the
        pools (and the key array is most of a build's memory)."""
        self.key = self.rank = self.tokens = self.eligible = None
        self.bad = self.filtered = self.generation_null = None
        if isinstance(self.generation, np.ndarray):
            self.generation = None


@dataclass(frozen=True)
class _Needs:
    """What the metadata pass computes beyond the key, for one build."""

    generation: bool
    rank: bool
    tokens: bool
    filtered: bool
    token_expr: pl.Expr | None
    schema: dict[str, pl.DataType]


def _id_strings(values: pa.Array) -> pa.Array:
    """The ids as strings, exactly as the lazy frame's ``cast(pl.String)`` spells them."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values
    if pa.types.is_integer(kind):
        return values.cast(pa.large_string())
    return pl.Series(values).cast(pl.String).to_arrow()


def _series(group: RowGroup, name: str, dtype: pl.DataType) -> pl.Series:
    """Column ``name`` of a row group as ``dtype`` (null where the file has no such column)."""
    values = group.columns.get(name)
    if values is None:
        return pl.repeat(None, group.rows, dtype=dtype, eager=True).alias(name)
    series = pl.Series(name, values)
    return series if series.dtype == dtype else series.cast(dtype)


def _fill_row_group(rows: SourceRows, start: int, group: RowGroup, spec: MixtureSpec,
                    needs: _Needs) -> None:
    """Compute the metadata of one row group into ``rows`` at ``start``."""
    ls = rows.loaded
    end = start + group.rows
    ids = _id_strings(group.columns[spec.id_field])
    rows.key[start:end] = xxh64_strings(ids, spec.seed, ls.name + SEPARATOR)
    text = group.columns.get(spec.text_field)
    if not ls.staged and (not group.text_clean or ids.null_count):
        if group.text_clean:
            bad = ids.is_null().to_numpy(zero_copy_only=False)
        else:
            frame = pl.DataFrame([pl.Series(spec.text_field, text)]).with_columns(
                pl.Series(spec.id_field, ids))
            bad = frame.select(reason_expr(spec).is_not_null()).to_series().to_numpy()
        if bad.any():
            rows.array("bad", np.bool_, False)[start:end] = bad
    source, raw = ls.source, ls.raw_schema
    pool = None
    if source.role == "from-tags":
        label = _series(group, PROV_LABEL, raw[PROV_LABEL])
        pool = label.to_frame().select(pool_expr(source)).to_series()
        rows.array("pool", np.uint8)[start:end] = pool.to_physical().to_numpy()
    if needs.generation and source.generation is None and PROV_GENERATION in raw:
        gen = _series(group, PROV_GENERATION, raw[PROV_GENERATION]).to_frame().select(
            generation_expr(source)).to_series()
        rows.array("generation", np.int64)[start:end] = gen.fill_null(0).to_numpy()
        rows.array("generation_null", np.bool_, False)[start:end] = gen.is_null().to_numpy()
    if pool is not None and (needs.filtered or needs.rank):
        frame = pl.DataFrame([
            pool.alias(POOL_COL),
            _series(group, PROV_LABEL, needs.schema[PROV_LABEL]),
            _series(group, PROV_SCORE, needs.schema[PROV_SCORE]),
            pl.Series(KEY_COL, rows.key[start:end], dtype=pl.UInt64),
        ])
        if needs.filtered:
            filtered = frame.select(filtered_expr(spec)).to_series().to_numpy()
            if filtered.any():
                rows.array("filtered", np.bool_, False)[start:end] = filtered
        if needs.rank:
            rows.array("rank", np.float64)[start:end] = frame.select(
                rank_expr(spec)).to_series().to_numpy()
    elif needs.rank:
        # Only scraped rows are weighted; every other row has weight 1.
        key = pl.Series(KEY_COL, rows.key[start:end], dtype=pl.UInt64).to_frame()
        rows.array("rank", np.float64)[start:end] = key.select(
            weighted_key(pl.col(KEY_COL), pl.lit(1.0))).to_series().to_numpy()
    if needs.tokens:
        tokens = pl.Series(spec.text_field, text).to_frame().select(needs.token_expr)
        rows.array("tokens", np.int64)[start:end] = tokens.to_series().fill_null(0).to_numpy()


def _needs(spec: MixtureSpec, schema: dict[str, pl.DataType]) -> _Needs:
    return _Needs(
        generation=spec.strategy in GENERATION_STRATEGIES,
        rank=spec.strategy == "reweight",
        tokens=spec.target_tokens is not None,
        filtered=bool(spec.effective_drop_labels) or spec.max_score is not None,
        token_expr=token_expr(spec) if spec.target_tokens is not None else None,
        schema=schema,
    )


def _new_rows(ls: LoadedSource, offset: int, rows: int, generations: bool) -> SourceRows:
    """Empty metadata for ``rows`` rows of ``ls`` (with ``generations``, the declared
    generation already set)."""
    out = SourceRows(ls, offset, rows, np.empty(rows, dtype=np.uint64),
                     fixed_pool=POOL_CODES[ROLE_POOL[ls.source.role]])
    if generations and ls.source.generation is not None:
        out.generation = ls.source.generation
    # Without the column (and without a declared generation) every generation is null.
    return out


def _read_file(rows: SourceRows, start: int, path: Path, spec: MixtureSpec,
               needs: _Needs) -> None:
    """Compute the metadata of the file ``path`` into ``rows``, from row ``start`` on."""
    ls = rows.loaded
    columns = [spec.id_field]
    if ls.source.role == "from-tags":
        columns.append(PROV_LABEL)
        if needs.rank or spec.max_score is not None:
            columns.append(PROV_SCORE)
    if needs.generation and ls.source.generation is None:
        columns.append(PROV_GENERATION)
    validate = not ls.staged
    for group in iter_row_groups(
        path, columns, text_field=spec.text_field if validate or needs.tokens else None,
        read_text=needs.tokens,
    ):
        _fill_row_group(rows, start, group, spec, needs)
        start += group.rows


def read_metadata(loaded: list[LoadedSource], spec: MixtureSpec,
                  schema: dict[str, pl.DataType]) -> list[SourceRows]:
    """The metadata pass: one read of the needed columns, row group by row group.

    ``schema`` is the schema of the build's frame of all sources (the provenance columns are
    compared in its types).
    """
    needs = _needs(spec, schema)
    out: list[SourceRows] = []
    tasks: list[tuple[SourceRows, int, Path]] = []
    offset = 0
    for ls in loaded:
        counts = [file_rows(path) for path in ls.files]
        rows = _new_rows(ls, offset, sum(counts), needs.generation)
        start = 0
        for path, n in zip(ls.files, counts, strict=True):
            tasks.append((rows, start, path))
            start += n
        out.append(rows)
        offset += rows.rows

    def read(task: tuple[SourceRows, int, Path]) -> None:
        _read_file(*task, spec, needs)

    workers = min(len(tasks), os.cpu_count() or 1, MAX_THREADS)
    if workers <= 1:
        for task in tasks:
            read(task)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(read, tasks))
    return out


def file_metadata(ls: LoadedSource, path: Path, spec: MixtureSpec,
                  schema: dict[str, pl.DataType]) -> SourceRows:
    """The metadata of one file of ``ls`` on its own (row 0 is the file's first row): the
    metadata pass of one file, for engines that spread the files over workers. Join the files
    of a source with :func:`join_files`."""
    needs = _needs(spec, schema)
    rows = _new_rows(ls, 0, file_rows(path), needs.generation)
    _read_file(rows, 0, path, spec, needs)
    return rows


#: The per-row arrays of :class:`SourceRows` a file may hold, with their type and the value of
#: rows that do not set them.
ARRAYS = {"pool": (np.uint8, 0), "bad": (np.bool_, False), "filtered": (np.bool_, False),
          "generation": (np.int64, 0), "generation_null": (np.bool_, False),
          "rank": (np.float64, 0), "tokens": (np.int64, 0)}


def join_files(ls: LoadedSource, offset: int, files: list[SourceRows],
               spec: MixtureSpec) -> SourceRows:
    """The metadata of source ``ls`` (at global row ``offset``) from that of its files, in
    order (:func:`file_metadata`): the arrays :func:`read_metadata` computes for the source."""
    rows = _new_rows(ls, offset, sum(part.rows for part in files),
                     spec.strategy in GENERATION_STRATEGIES)
    if files:
        np.concatenate([part.key for part in files], out=rows.key)
    start = 0
    for part in files:
        for name, (dtype, fill) in ARRAYS.items():
            values = getattr(part, name)
            if isinstance(values, np.ndarray):
                rows.array(name, dtype, fill)[start:start + part.rows] = values
        start += part.rows
    return rows
