"""The write pass: stream the selected rows into parquet shards, counting what is written.

Every input row group that holds selected rows is read (its columns, with pyarrow, in batches
of about :data:`READ_BYTES`), only the selected rows are kept (``take``), and the columns the
mixer adds are made from the same values as the sources' lazy frames: the literals of
:func:`mixers.sources.fill_columns`, ``mix_source``, ``mix_pool`` (from the metadata pass's
pool codes) and ``mix_copy``. Each column is cast to the mixture's schema the way polars'
relaxed concatenation of the sources would cast it, so the shards hold exactly the rows and
values of :func:`mixers.build.select_mixture`.
Memory is a few batches and one output row group, whatever the corpus, its row groups or the
shard size. The reads run one batch ahead of the writes in a second thread (pyarrow decodes and
encodes without the GIL): on a quiet 2-core machine that took a 10M-document build from 2.3 to
2.0 s for about 30 MB more memory.

Shard format 2 (``shard_format`` in ``manifest.json``; format 1, before it, was a polars
streaming query whose chunk layout decided the bytes): rows in mixture order (copy, then source,
file and row order), ``shard_rows`` rows a shard, row groups of :data:`ROW_GROUP_ROWS` rows
(fewer for large documents, see :func:`_group_rows`) written from one contiguous table each,
zstd, no dictionary encoding for the id and text columns. The bytes depend only on the rows
written, the inputs' footers and the pyarrow version: not on thread counts, batch sizes or how
the inputs' rows are split into row groups.

The pass has three steps, so that an engine can spread the reads: :func:`plan_write` (the
files to read, and a recipe for each), :func:`read_part` (the selected rows of one file: in this
process, or on a worker) and :func:`write_tables` (the shards, from those tables in order). The
bytes do not depend on where the tables were read, so every engine writes the same shards.

The manifest's numbers are counted here, from the tables actually written.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mixers.manifest import SyntheticShare
from mixers.sources import (
    COPY_COL,
    POOL_COL,
    POOLS,
    SOURCE_COL,
    LoadedSource,
    file_rows,
    fill_columns,
    pool_expr,
)
from provenance.outputs import writing
from provenance.schema import PROV_SCORE

SHARD_FORMAT = 2
# Rows of an output row group: at most ROW_GROUP_ROWS, fewer for large documents (about
# ROW_GROUP_BYTES of data, from the largest average row size of the input files).
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 64 << 20
# Data decoded at a time from an input file (pyarrow decodes its columns in parallel).
READ_BYTES = 16 << 20


@dataclass(frozen=True)
class Selected:
    """The rows of one source that one copy of the mixture holds.

    ``rows`` are row numbers within the source (its files in order), ascending; ``pools`` is
    the pool code (index in :data:`mixers.sources.POOLS`) of every row of the source, or the one
    code of all of them.
    """

    loaded: LoadedSource
    rows: np.ndarray
    copy: int
    pools: np.ndarray | int


@dataclass
class Written:
    """What the write pass wrote."""

    by_source: Counter = field(default_factory=Counter)
    by_pool: Counter = field(default_factory=Counter)
    share: SyntheticShare = field(default_factory=SyntheticShare)
    shards: list[dict[str, Any]] = field(default_factory=list)


def _one_row(columns: dict[str, pl.Expr], target: pl.Schema) -> dict[str, pa.Array]:
    """Literal expressions evaluated once, cast to the mixture's types, as 1-row arrays."""
    if not columns:
        return {}
    frame = pl.select(**{name: expr.cast(target[name]) for name, expr in columns.items()})
    return {name: frame.to_arrow().column(name).combine_chunks() for name in columns}


@dataclass
class _Recipe:
    """How one file's columns become the mixture's columns.

    Each output column is read from the file (``reads``: cast through the source's type to the
    mixture's), repeated from a 1-row constant (the source's fill literals, ``mix_source``,
    ``mix_copy``, a fixed pool, or a null for a column the file lacks), or, for tagged sources,
    ``mix_pool`` taken from the pool codes.

    String columns the file stores as a small dictionary (labels, evidence) are read as Arrow
    dictionaries (``dictionary``) and decoded after the ``take``: decoding every row of a
    repeated label costs as much as decoding the text.
    """

    schema: pa.Schema
    reads: dict[str, tuple[pl.DataType, pl.DataType, bool]]
    constants: dict[str, pa.Array]
    pools: pa.Array | None
    dictionary: dict[str, pa.DataType] = field(default_factory=dict)

    def columns(self, table: pa.Table, codes: np.ndarray | None) -> pa.Table:
        n = table.num_rows
        repeat = pa.array(np.zeros(n, dtype=np.int32))
        arrays = []
        for name, kind in zip(self.schema.names, self.schema.types, strict=True):
            if name in self.reads:
                values = table.column(name)
                if name in self.dictionary:
                    values = values.cast(self.dictionary[name])
                arrays.append(_convert(values, kind, *self.reads[name]))
            elif name in self.constants:
                arrays.append(self.constants[name].take(repeat))
            else:
                arrays.append(self.pools.take(pa.array(codes)))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _convert(values: pa.ChunkedArray, kind: pa.DataType, source: pl.DataType,
             target: pl.DataType, same: bool) -> pa.ChunkedArray | pa.Array:
    """A file column as the mixture's type ``kind``: unchanged, an Arrow cast where only the
    representation differs (``same``: string to large_string), else polars' casts, file type
    to the source's type (``source``) to the mixture's (``target``), as the lazy frames do."""
    if values.type == kind:
        return values
    if same:
        return values.cast(kind)
    series = pl.from_arrow(values)
    for dtype in (source, target):
        if series.dtype != dtype:
            series = series.cast(dtype)
    out = series.to_frame().to_arrow().column(0)
    return out if out.type == kind else out.cast(kind)


def _recipe(item: Selected, path: Path, schema: pa.Schema, target: pl.Schema,
            source_types: pl.Schema) -> _Recipe:
    """The recipe for one file of ``item``'s source; ``source_types`` is the schema of the
    source's lazy frame (its files relaxed to common types, the mixer's columns added)."""
    ls = item.loaded
    file_schema = pq.read_schema(path)
    # The types polars reads the file as, from its footer: converting an Arrow type through
    # an empty array would import pandas (a quarter of a second) on the first call.
    file_types = pl.read_parquet_schema(path)
    fill = fill_columns(ls.source, ls.name, ls.raw_schema)
    literals: dict[str, pl.Expr] = {
        SOURCE_COL: pl.lit(ls.name),
        COPY_COL: pl.lit(item.copy, dtype=pl.Int32),
    }
    if isinstance(item.pools, int):
        literals[POOL_COL] = pool_expr(ls.source)
    reads = {}
    for name in schema.names:
        if name in literals:
            continue
        if name in fill:
            literals[name] = fill[name]
        elif name in file_schema.names:
            reads[name] = (source_types[name], target[name],
                           file_types.get(name) == source_types[name] == target[name])
        elif name != POOL_COL:
            literals[name] = pl.lit(None, dtype=target[name])
    pools = None
    if not isinstance(item.pools, int):
        pools = pl.DataFrame({POOL_COL: pl.Series(POOLS).cast(target[POOL_COL])}).to_arrow()
        pools = pools.column(0).combine_chunks()
    return _Recipe(schema, reads, _one_row(literals, target), pools,
                   _small_dictionaries(path, file_schema, reads))


def _small_dictionaries(path: Path, file_schema: pa.Schema, reads: Any) -> dict[str, pa.DataType]:
    """The string columns read from ``path`` whose first row group holds a dictionary of at most
    a byte or two a row (low-cardinality values), with their declared types."""
    meta = pq.read_metadata(path)
    if not meta.num_row_groups:
        return {}
    group = meta.row_group(0)
    out = {}
    for i in range(group.num_columns):
        chunk = group.column(i)
        name = chunk.path_in_schema
        if name not in reads or name not in file_schema.names:
            continue
        kind = file_schema.field(name).type
        if ((pa.types.is_string(kind) or pa.types.is_large_string(kind))
                and chunk.has_dictionary_page
                and chunk.total_uncompressed_size <= 2 * group.num_rows + 4096):
            out[name] = kind
    return out


def _row_bytes(meta: pq.FileMetaData) -> int:
    """Average uncompressed bytes of a row of a parquet file, from its footer."""
    size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    return max(1, size // max(1, meta.num_rows))


def _batch_rows(meta: pq.FileMetaData) -> int:
    """Rows decoded at a time from a file: about :data:`READ_BYTES` of data, so memory does
    not depend on how large the file's row groups are."""
    return int(min(max(READ_BYTES // _row_bytes(meta), 1024), 1 << 20))


def _group_rows(selected: list[Selected]) -> int:
    """Rows of an output row group, a function of the inputs only (see :data:`ROW_GROUP_BYTES`)."""
    largest = max((_row_bytes(pq.read_metadata(path)) for item in selected
                   for path in item.loaded.files), default=1)
    return int(min(max(ROW_GROUP_BYTES // largest, 1024), ROW_GROUP_ROWS))


@dataclass(frozen=True)
class FilePart:
    """The selected rows of one input file in one copy: one read of the write pass.

    ``rows`` are row numbers within the file, ascending; ``pools`` the pool code of each of
    them, or the one code of all of them; ``recipe`` makes the mixture's columns.
    """

    path: Path
    rows: np.ndarray
    pools: np.ndarray | int
    recipe: _Recipe


@dataclass
class WritePlan:
    """What the write pass reads (:attr:`parts`, in mixture order: copy, source, file) and how
    it writes: the shards' schema, the rows of a row group and the columns written without
    dictionary encoding."""

    schema: pa.Schema
    group_rows: int
    plain: tuple[str, ...]
    parts: list[FilePart]

    @property
    def rows(self) -> int:
        return sum(part.rows.size for part in self.parts)


def plan_write(selected: list[Selected], target: pl.Schema,
               plain: tuple[str, ...] = ()) -> WritePlan:
    """Split the rows of ``selected`` (in that order) into the reads of the files that hold
    them, with the recipes that turn each file's columns into ``target``.

    ``plain`` names the columns written without dictionary encoding (the id and the text:
    nearly every value differs, so a dictionary is only overhead).
    """
    schema = pl.DataFrame(schema=target).to_arrow().schema
    parts = []
    source_types: dict[str, pl.Schema] = {}
    for item in selected:
        name = item.loaded.name
        if name not in source_types:
            source_types[name] = item.loaded.frame.collect_schema()
        start = 0
        for path in item.loaded.files:
            if not item.rows.size or start > item.rows[-1]:
                break
            end = start + file_rows(path)
            lo, hi = np.searchsorted(item.rows, (start, end))
            if hi > lo:
                rows = item.rows[lo:hi]
                pools = item.pools if isinstance(item.pools, int) else item.pools[rows]
                # Row numbers within a file fit 32 bits: half the memory of the plan's rows.
                parts.append(FilePart(path, (rows - start).astype(np.uint32), pools,
                                      _recipe(item, path, schema, target, source_types[name])))
            start = end
    return WritePlan(schema, _group_rows(selected), plain, parts)


def read_part(part: FilePart) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The selected rows of one file as tables in the mixture's schema, with their pool codes,
    in row order. Only the row groups that hold selected rows are read."""
    recipe, wanted = part.recipe, part.rows
    with pq.ParquetFile(part.path, read_dictionary=list(recipe.dictionary)) as parquet:
        meta = parquet.metadata
        batch = _batch_rows(meta)
        start = 0
        for group in range(meta.num_row_groups):
            end = start + meta.row_group(group).num_rows
            lo, hi = np.searchsorted(wanted, (start, end))
            if hi == lo:
                start = end
                continue
            for table in parquet.iter_batches(batch_size=batch, row_groups=[group],
                                              columns=list(recipe.reads)):
                lo, hi = np.searchsorted(wanted, (start, start + table.num_rows))
                if hi > lo:
                    taken = table.take(wanted[lo:hi] - start)
                    codes = (np.full(hi - lo, part.pools, dtype=np.uint8)
                             if isinstance(part.pools, int) else part.pools[lo:hi])
                    yield recipe.columns(pa.Table.from_batches([taken]), codes), codes
                start += table.num_rows
            start = end


class _ShardWriter:
    """Rows in, shards of ``shard_rows`` rows out, each in row groups of ``group_rows`` rows
    written from one contiguous table (so the bytes do not depend on how the rows came in)."""

    def __init__(self, out_dir: Path, shard_rows: int, group_rows: int, schema: pa.Schema,
                 plain: tuple[str, ...]) -> None:
        self.out_dir, self.shard_rows, self.schema = out_dir, shard_rows, schema
        self.group_rows = group_rows
        self.dictionary = [name for name in schema.names if name not in plain]
        self.shards: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._shard_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            room = self.shard_rows - self._shard_rows - self._pending_rows
            self._pending.append(table.slice(0, room))
            self._pending_rows += min(room, table.num_rows)
            table = table.slice(room)
            if self._shard_rows + self._pending_rows == self.shard_rows:
                self.close()
            elif self._pending_rows >= self.group_rows:
                self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write the pending rows as whole row groups (the rest too when ``final``)."""
        pending = pa.concat_tables(self._pending)
        size = self.group_rows
        whole = pending.num_rows if final else pending.num_rows // size * size
        if self._writer is None:
            path = self.out_dir / f"part-{len(self.shards):05d}.parquet"
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd",
                                            use_dictionary=self.dictionary)
        for start in range(0, whole, size):
            group = pending.slice(start, min(size, whole - start)).combine_chunks()
            self._writer.write_table(group, row_group_size=size)
        self._shard_rows += whole
        rest = pending.slice(whole)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        """Finish the current shard, if it has rows."""
        if self._pending_rows:
            self._flush(final=True)
        if self._writer is None:
            return
        self._writer.close()
        name = f"part-{len(self.shards):05d}.parquet"
        with open(self.out_dir / name, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        self.shards.append({"file": name, "rows": self._shard_rows, "sha256": digest})
        self._writer, self._shard_rows = None, 0


def write_tables(plan: WritePlan, tables: Iterable[tuple[pa.Table, np.ndarray]],
                 out_dir: Path, shard_rows: int, *, progress: bool = False,
                 output: str | os.PathLike | None = None) -> Written:
    """Write the tables :func:`read_part` made of ``plan``'s parts, in the order of the parts,
    as shards of ``shard_rows`` rows, and count them.

    The shards' bytes depend only on the rows: the tables may come from any process and be
    split anyhow, as long as their rows come in the parts' order.

    A failed write (no space, read-only) is one :class:`~provenance.errors.OutputError` line
    naming ``output`` (default ``out_dir``: name the user's folder when ``out_dir`` is a staging
    folder); an input that cannot be read keeps its own error.
    """
    written = Written()
    writer = _ShardWriter(out_dir, shard_rows, plan.group_rows, plan.schema, plan.plain)
    named = out_dir if output is None else output
    bar = _progress(plan.rows, progress)
    for table, codes in _read_ahead(tables):
        if not table.num_rows:
            continue
        source = table.column(SOURCE_COL)[0].as_py()
        written.by_source[source] += table.num_rows
        for code, n in enumerate(np.bincount(codes, minlength=len(POOLS))):
            written.by_pool[POOLS[code]] += int(n)
        written.share.add(table.column(PROV_SCORE))
        with writing(named):
            writer.add(table)
        bar.update(table.num_rows)
    with writing(named):
        writer.close()
    bar.close()
    written.shards = writer.shards
    return written


def _read_ahead(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """``items``, produced in a second thread up to ``depth`` ahead: pyarrow releases the GIL
    while it decodes and encodes, so reading the next batch overlaps writing this one."""
    import queue
    import threading

    done = object()
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        """Hand ``item`` over unless the consumer has gone (False)."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(done)
        except BaseException as error:  # noqa: BLE001  (re-raised in the consumer)
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator left early closes its files here
                close()

    thread = threading.Thread(target=produce, name="mix-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool) -> Any:
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="doc", desc="mixing", disable=None)
