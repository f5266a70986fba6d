"""Build a mixture on Ray: workers read the files, the driver plans and writes, as locally.

A Ray build (``build_mixture(spec, out, engine="ray")``) is the local build
(:func:`mixers.build.run_build`) with its passes over the data spread over Ray Data tasks, one
input file a task (:class:`RayPasses`); every step between them is the local code, run on the
driver:

1. **metadata pass (workers)**: each task computes its file's per-row metadata with the local
   pass (:func:`~mixers.metadata.file_metadata`: the XXH64 ranking key, pool, flags,
   generation, weighted rank, tokens; a few bytes a row) and its bad rows as rejects; the
   driver joins each source's files (:func:`~mixers.metadata.join_files`);
2. **plan (driver)**: :func:`~mixers.plan.plan_mixture`; for ``dedup``, the tasks send the
   texts of their eligible rows and the driver runs the local deduplication (it is not
   distributed);
3. **write pass (workers, then driver)**: each task reads the selected rows of one file
   (:func:`~mixers.shards.read_part`, the recipe made on the driver) and sends them, in the
   mixture's schema, to the driver, which writes the shards (:func:`~mixers.shards.write_tables`),
   the manifest and the dataset card.

Shards' bytes depend only on the rows written (shard format 2), so the shards are those of the
local engine, byte for byte (same sha256), and so is the manifest (only ``run.json`` differs).

Sources that are not parquet (jsonl, ``save_to_disk`` folders, in-memory frames) are validated
and staged to parquet on the driver first, as the local build does, in its hidden work folder
next to the output folder; every file must be readable by every node (a shared file system or
the same mounts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from mixers.metadata import ARRAYS, SourceRows, file_metadata, join_files
from mixers.plan import dedup_columns
from mixers.shards import WritePlan, read_part
from mixers.sources import IDX_COL, LoadedSource, iter_rejects, parquet_source
from mixers.spec import MixtureSpec, Source
from provenance.corpus import RejectsWriter
from provenance.engines import RayEngine, cluster_workers, import_ray, ray_session
from provenance.schema import TAG_COLUMNS


@dataclass(frozen=True)
class _Task:
    """One parquet file of one source (``source``: its index)."""

    source: int
    loaded: LoadedSource
    path: Path


def _portable(ls: LoadedSource) -> LoadedSource:
    """``ls`` as the workers get it: without its lazy frame, and without in-memory data."""
    path = ls.source.path if isinstance(ls.source.path, (str, os.PathLike)) else None
    return dataclasses.replace(ls, source=dataclasses.replace(ls.source, path=path),
                               frame=pl.LazyFrame())


def _file_frame(task: _Task, spec: MixtureSpec, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """The rows of one file exactly as they are in the local build's frame of all sources
    (``schema``, less its row index).

    The file goes through :func:`~mixers.sources.parquet_source` on its own (every task's file
    is parquet: a source's own, or its staged copy); where a provenance column exists in
    other files of its source but not in this one, the source-wide frame holds nulls (no role
    default), and every column is cast to the build's unified dtype, in the build's order.
    """
    ls = task.loaded
    source = Source(str(task.path), ls.source.role, ls.name, ls.source.generation)
    one = MixtureSpec(
        sources=(source,), target_docs=1, synthetic_ratio=1.0 if source.role == "synthetic"
        else 0.0, id_field=spec.id_field, text_field=spec.text_field, seed=spec.seed,
    )
    loaded = parquet_source(source, ls.name, one, [task.path])
    present = set(loaded.frame.collect_schema())
    nulls = {c for c in TAG_COLUMNS if c in ls.raw_schema and c not in loaded.raw_schema}
    return loaded.frame.select([
        pl.col(name).cast(dtype) if name in present and name not in nulls
        else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in schema.items() if name != IDX_COL
    ])


# -- what travels: Arrow IPC bytes in one-row envelopes ------------------------------------------


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _envelope(index: int, data: bytes, extra: bytes = b"") -> pa.Table:
    return pa.table({"task": [index], "data": [data], "extra": [extra]},
                    schema=pa.schema([("task", pa.int64()), ("data", pa.large_binary()),
                                      ("extra", pa.large_binary())]))


def _pack_rows(rows: SourceRows) -> bytes:
    """A file's per-row arrays (those it has) as IPC bytes."""
    arrays = {"key": rows.key}
    arrays.update({name: getattr(rows, name) for name in ARRAYS
                   if isinstance(getattr(rows, name), np.ndarray)})
    return _ipc(pa.table(arrays))


def _unpack_rows(ls: LoadedSource, data: bytes) -> SourceRows:
    table = _table(data)
    arrays = {name: table.column(name).to_numpy() for name in table.column_names}
    return SourceRows(ls, 0, table.num_rows, **arrays)


class _RejectLine(str):
    """A reject a worker already serialised, for :class:`RejectsWriter`."""

    def as_json(self) -> str:
        return str(self)


# -- the tasks (Ray Data map_batches functions; one file a call) -----------------------------------


def metadata_task(batch: dict[str, Any], tasks: list[_Task], spec: MixtureSpec,
                  schema: dict[str, pl.DataType]) -> pa.Table:
    """The metadata of one file (the local pass), and its bad rows as rejects (JSON lines)."""
    index = int(batch["task"][0])
    task = tasks[index]
    rows = file_metadata(task.loaded, task.path, spec, schema)
    rejects = []
    if rows.bad is not None:
        rejects = [reject.as_json()
                   for _, reject in iter_rejects(_file_frame(task, spec, schema), spec)]
    return _envelope(index, _pack_rows(rows), "\n".join(rejects).encode())


def dedup_task(batch: dict[str, Any], tasks: list[_Task], spec: MixtureSpec,
               schema: dict[str, pl.DataType]) -> pa.Table:
    """The eligible rows of one file (``mask``: packed bits, empty for all) with what
    deduplication compares and their global row index (from ``base``)."""
    index, base = int(batch["task"][0]), int(batch["base"][0])
    frame = _file_frame(tasks[index], spec, schema).collect().with_row_index(IDX_COL, offset=base)
    mask = batch["mask"][0]
    if len(mask):
        frame = frame.filter(pl.Series(np.unpackbits(
            np.frombuffer(mask, dtype=np.uint8), count=frame.height).astype(np.bool_)))
    return _envelope(index, _ipc(frame.select(pl.col(IDX_COL), *dedup_columns(spec)).to_arrow()))


def write_task(batch: dict[str, Any]) -> Iterator[pa.Table]:
    """The selected rows of one file in one copy (a pickled :class:`~mixers.shards.FilePart`),
    in the mixture's schema, with their pool codes."""
    index = int(batch["task"][0])
    for table, codes in read_part(pickle.loads(batch["part"][0])):
        yield _envelope(index, _ipc(table), np.ascontiguousarray(codes, np.uint8).tobytes())


# -- the driver ------------------------------------------------------------------------------------


class RayPasses:
    """The local build's passes over the data, one Ray Data task per input file.

    :func:`mixers.build.build_mixture` runs them for ``engine="ray"`` in place of
    :class:`mixers.build.LocalPasses`, whose methods these have (the same results, computed by
    the same functions on Ray workers).
    """

    #: The engine's name, as ``run.json`` records it.
    name = "ray"

    def __init__(self, engine: RayEngine) -> None:
        import_ray()  # the install hint, before any work
        self.engine = engine
        self.ray: Any = None
        self.tasks: list[_Task] = []
        self.spans: list[tuple[int, int]] = []  # each task's rows within its source
        self.shared: dict[str, Any] = {}

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        with ray_session(self.engine) as ray:
            self.ray = ray
            try:
                yield ray
            finally:
                self.ray = None

    def _run(self, fn: Any, items: list[dict[str, Any]], **kwargs: Any) -> Iterator[Any]:
        """``fn`` over ``items`` on Ray Data; envelopes come back in the items' order."""
        if not items:
            return iter(())
        workers = cluster_workers(self.ray, self.engine, len(items))
        dataset = self.ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            fn, batch_size=1, fn_kwargs=kwargs, num_cpus=1,
            compute=self.ray.data.TaskPoolStrategy(size=workers),
        )
        return dataset.iter_rows()

    def metadata(self, frame: pl.LazyFrame, loaded: list[LoadedSource], spec: MixtureSpec,
                 schema: dict[str, pl.DataType], sink: RejectsWriter
                 ) -> tuple[list[SourceRows], Counter]:
        portable = [_portable(ls) for ls in loaded]
        self.tasks = [_Task(i, ls, path) for i, ls in enumerate(portable) for path in ls.files]
        self.shared = {
            "tasks": self.tasks, "schema": schema,
            # The spec's options; its sources as the workers can receive them.
            "spec": dataclasses.replace(spec, sources=tuple(ls.source for ls in portable)),
        }
        files: list[list[SourceRows]] = [[] for _ in loaded]
        read = [0] * len(loaded)  # rows so far, by source
        rejected: Counter = Counter()
        self.spans = []
        items = [{"task": i} for i in range(len(self.tasks))]
        for envelope in self._run(metadata_task, items, **self.shared):
            task = self.tasks[envelope["task"]]
            rows = _unpack_rows(task.loaded, envelope["data"])
            files[task.source].append(rows)
            self.spans.append((read[task.source], read[task.source] + rows.rows))
            read[task.source] += rows.rows
            for line in filter(None, envelope["extra"].decode().split("\n")):
                sink(_RejectLine(line))
                rejected[task.loaded.name] += 1
        sources, offset = [], 0
        for ls, parts in zip(loaded, files, strict=True):
            sources.append(join_files(ls, offset, parts, spec))
            offset += sources[-1].rows
        return sources, rejected

    def dedup_docs(self, frame: pl.LazyFrame, sources: list[SourceRows],
                   spec: MixtureSpec) -> pl.DataFrame:
        items = []
        for index, (task, (start, end)) in enumerate(zip(self.tasks, self.spans, strict=True)):
            rows = sources[task.source]
            eligible = None if rows.eligible is None else rows.eligible[start:end]
            if end == start or (eligible is not None and not eligible.any()):
                continue
            mask = b"" if eligible is None else np.packbits(eligible).tobytes()
            items.append({"task": index, "base": rows.offset + start, "mask": mask})
        parts = [pl.from_arrow(_table(envelope["data"]))
                 for envelope in self._run(dedup_task, items, **self.shared)]
        if not parts:
            return frame.head(0).select(pl.col(IDX_COL), *dedup_columns(spec)).collect()
        return pl.concat(parts)

    def read(self, plan: WritePlan) -> Iterator[tuple[pa.Table, np.ndarray]]:
        items = [{"task": i, "part": pickle.dumps(part)} for i, part in enumerate(plan.parts)]
        for envelope in self._run(write_task, items):
            yield _table(envelope["data"]), np.frombuffer(envelope["extra"], dtype=np.uint8)


__all__ = ["RayPasses", "dedup_task", "metadata_task", "write_task"]
