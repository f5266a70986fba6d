"""Build a mixture: plan exact counts, select by keyed hash, write shards and a manifest.

Two streaming passes over the sources, so memory does not grow with the corpus beyond a few
bytes of metadata a document:

1. the metadata pass (:mod:`mixers.metadata`) reads only the columns the plan needs and keeps,
   per source, the XXH64 ranking key of every row and the few flags that vary (pool, rejected,
   filtered, generation); bad rows go to ``rejects.jsonl``;
2. the plan (:mod:`mixers.plan`): the strategy's exclusions, the duplicate-id check, (optional)
   deduplication across sources that keeps the human copy, and each pool's k-th smallest key
   (or its token-budget prefix) as its threshold: the rows under it are the mixture;
3. the write pass (:mod:`mixers.shards`) reads the row groups that hold selected rows, keeps
   those rows and writes them as parquet shards (shard format 2), counting as it writes: the
   manifest's achieved numbers are counted from the rows actually written, not from the plan.

Where the passes over the data run is an engine's choice (:class:`LocalPasses`: this process;
:class:`mixers.ray_build.RayPasses`: Ray workers). Everything else, the output folder, the
plan, the shards' layout and the manifest, is done here, the same for every engine
(:func:`run_build`), so every engine writes the same bytes.

:func:`select_mixture` returns the same rows as a polars LazyFrame (the sources' lazy frames,
filtered by row index) for pipelines that mix in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from mixers.manifest import Manifest, SyntheticShare
from mixers.metadata import SourceRows, read_metadata
from mixers.plan import (
    MixturePlan,
    PoolPlan,
    dedup_columns,
    plan_mixture,
    source_counts,
    split_target,
)
from mixers.shards import (
    SHARD_FORMAT,
    Selected,
    WritePlan,
    plan_write,
    read_part,
    write_tables,
)
from mixers.sources import (
    COPY_COL,
    FILE_COL,
    GEN_COL,
    IDX_COL,
    KEY_COL,
    POOLS,
    REJECT_COL,
    ROW_COL,
    TOKENS_COL,
    LoadedSource,
    iter_rejects,
    load_source,
    source_names,
)
from mixers.spec import MixtureSpec
from provenance.corpus import RejectsWriter
from provenance.errors import ConfigError, InputError

RANK_COL = "_rank"
INTERNAL = (KEY_COL, GEN_COL, TOKENS_COL, RANK_COL, "_filtered", "_excluded")
# Columns of the sources' lazy frames that never reach the mixture.
DROPPED = (*INTERNAL, IDX_COL, REJECT_COL, FILE_COL, ROW_COL)


def _selected(frame: pl.LazyFrame, copies: list[pl.Series],
              copied: tuple[str, ...] = ()) -> pl.LazyFrame:
    """The rows of each copy (global row indices), tagged with ``mix_copy``.

    The string columns in ``copied`` (text and id) are copied right after the filter: a filtered
    string column still refers to the whole decoded row group, so a collected mixture would
    otherwise hold the text of every row read for it.
    """
    parts = [
        frame.filter(pl.col(IDX_COL).is_in(indices.implode())).with_columns(
            pl.lit(copy, dtype=pl.Int32).alias(COPY_COL),
            *[pl.col(name) + pl.lit("") for name in copied],
        )
        for copy, indices in enumerate(copies)
        if indices.len()
    ]
    if not parts:
        return frame.head(0).with_columns(pl.lit(0, dtype=pl.Int32).alias(COPY_COL))
    return pl.concat(parts, how="diagonal_relaxed")


# -- the engine's part: the passes over the data ----------------------------------------------


class LocalPasses:
    """The passes over the data, run in this process: the engine's part of a build.

    :func:`run_build` calls them in turn; another engine (:class:`mixers.ray_build.RayPasses`)
    overrides where they run, not what they compute.
    """

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """The context the build runs in (a connection to a cluster, say)."""
        return contextlib.nullcontext()

    def workdir(self, out: Path | None) -> Path | None:
        """The folder that holds the build's work folder (staged sources, rejects) while the
        build writes into ``out`` (None: a dry run); None for the system's temporary folder."""
        return None

    def metadata(self, frame: pl.LazyFrame, loaded: list[LoadedSource], spec: MixtureSpec,
                 schema: dict[str, pl.DataType], sink: RejectsWriter
                 ) -> tuple[list[SourceRows], Counter]:
        """The metadata pass: the per-row metadata of each source, in order; the bad rows go
        to ``sink``, and their count by source is returned. ``frame`` is every source's lazy
        frame, concatenated (``schema``) and numbered (``_idx``)."""
        sources = read_metadata(loaded, spec, schema)
        pa.default_memory_pool().release_unused()
        rejected: Counter = Counter()
        if any(rows.bad is not None for rows in sources):
            for name, reject in iter_rejects(frame, spec):
                rejected[name] += 1
                sink(reject)
        return sources, rejected

    def dedup_docs(self, frame: pl.LazyFrame, sources: list[SourceRows],
                   spec: MixtureSpec) -> pl.DataFrame:
        """The eligible rows with what deduplication compares, for
        :func:`~mixers.plan.plan_mixture`."""
        return (
            frame.join(_eligible_index(sources).lazy(), on=IDX_COL, how="semi")
            .select(pl.col(IDX_COL), *dedup_columns(spec))
            .collect(engine="streaming")
        )

    def read(self, plan: WritePlan) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """The write pass's reads: the selected rows of each file of ``plan``, in its order
        (:func:`~mixers.shards.read_part`), for :func:`~mixers.shards.write_tables`."""
        for part in plan.parts:
            yield from read_part(part)


def _eligible_index(sources: list[SourceRows]) -> pl.DataFrame:
    parts = [
        (np.arange(rows.rows, dtype=np.int64) if rows.eligible is None
         else np.flatnonzero(rows.eligible)) + rows.offset
        for rows in sources
    ]
    index = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return pl.DataFrame({IDX_COL: pl.Series(IDX_COL, index.astype(np.uint32), dtype=pl.UInt32)})


# -- building --------------------------------------------------------------------------------------


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / "manifest.json").exists() and not overwrite:
        raise InputError(
            "already holds a mixture (manifest.json); choose another folder or pass "
            "overwrite=True (--overwrite)", file=str(out_dir),
        )


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the folder and clear an old mixture, only once the new one has been planned."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part-*.parquet"):
        old.unlink()
    (out_dir / "manifest.json").unlink(missing_ok=True)


def build_mixture(
    spec: MixtureSpec,
    out_dir: str | os.PathLike | None = None,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    engine: Any = "local",
    ray_address: str | None = None,
) -> Manifest:
    """Build the mixture ``spec`` describes into ``out_dir`` and return its manifest.

    Writes ``part-NNNNN.parquet`` shards (input columns, provenance columns, ``mix_source``,
    ``mix_pool``, ``mix_copy``; layout: :mod:`mixers.shards`), ``manifest.json``,
    ``dataset_card.md`` and, if any row could not be read, ``rejects.jsonl``. The manifest is
    written last, so a folder with a manifest holds a complete mixture. ``dry_run`` plans
    (reading the data to count it) and writes nothing. Use :func:`select_mixture` to get a
    mixture as a LazyFrame instead. ``engine="ray"`` (or a
    :class:`~provenance.engines.RayEngine`) reads and hashes the files on Ray, at
    ``ray_address``; the shards are the same bytes (:mod:`mixers.ray_build`).
    """
    if engine != "local" or ray_address is not None:
        from mixers.engines import build_mixture_with

        return build_mixture_with(spec, out_dir, engine=engine, ray_address=ray_address,
                                  dry_run=dry_run, overwrite=overwrite, progress=progress)
    return run_build(spec, out_dir, LocalPasses(), dry_run=dry_run, overwrite=overwrite,
                     progress=progress)


def run_build(
    spec: MixtureSpec,
    out_dir: str | os.PathLike | None,
    passes: LocalPasses,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Manifest:
    """:func:`build_mixture`, with the passes over the data run by ``passes`` (an engine's)."""
    start = time.perf_counter()
    if out_dir is None and not dry_run:
        raise ConfigError("build_mixture needs out_dir (or dry_run=True); "
                          "use select_mixture() for an in-memory mixture")
    out = Path(out_dir) if out_dir is not None else None
    writing = out is not None and not dry_run
    if writing:
        _check_out_dir(out, overwrite)
    parent = passes.workdir(out if writing else None)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    prefix = "tailguard-mix-" if parent is None else ".tailguard-mix-"
    with passes.session(), tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        sink = RejectsWriter(Path(tmp) / "rejects.jsonl")
        prepared = _prepare(spec, Path(tmp), sink, passes)
        sink.close()
        if writing:
            _prepare_out_dir(out)
        if sink.count and writing:
            shutil.move(sink.path, out / "rejects.jsonl")
        achieved, share, shards = (
            _write(prepared, spec, out, progress, passes) if writing
            else ({}, SyntheticShare(), [])
        )
    manifest = _manifest(spec, prepared, achieved, share, shards, sink.count)
    manifest.seconds = round(time.perf_counter() - start, 3)
    manifest.out_dir = None if out is None else str(out)
    manifest.dry_run = dry_run
    if writing:
        manifest.shard_format = SHARD_FORMAT
        if prepared.dropped.height:
            prepared.dropped.drop(IDX_COL).write_parquet(out / "dedup_dropped.parquet")
        manifest.write_card(out)
        manifest.write(out)
    return manifest


def select_mixture(spec: MixtureSpec, workdir: str | os.PathLike) -> pl.LazyFrame:
    """The mixture as a LazyFrame, for pipelines that mix in memory: the rows and values of the
    shards :func:`build_mixture` writes, in the same order.

    ``workdir`` holds staged copies of non-parquet sources and must outlive the frame.
    """
    sink = RejectsWriter(Path(workdir) / "rejects.jsonl")
    prepared = _prepare(spec, Path(workdir), sink, LocalPasses())
    sink.close()
    return _output_frame(prepared)


@dataclass
class _Prepared:
    frame: pl.LazyFrame
    plan: MixturePlan
    loaded: list[LoadedSource]
    sources: list[SourceRows]
    copies: list[list[np.ndarray]]
    tokens: int | None
    dropped: pl.DataFrame
    per_source: dict[str, dict[str, int]]
    copied: tuple[str, ...] = ()


def _output_frame(prepared: _Prepared) -> pl.LazyFrame:
    index = [
        pl.Series(IDX_COL, np.concatenate([rows.offset + part for rows, part in
                                           zip(prepared.sources, parts, strict=True)]),
                  dtype=pl.UInt32)
        for parts in prepared.copies
    ]
    return _selected(prepared.frame, index, prepared.copied).drop(DROPPED, strict=False)


def _prepare(spec: MixtureSpec, workdir: Path, sink: RejectsWriter,
             passes: LocalPasses) -> _Prepared:
    names = source_names(spec.sources)
    loaded = [
        load_source(s, n, spec, workdir=workdir, on_reject=sink)
        for s, n in zip(spec.sources, names, strict=True)
    ]
    frame = pl.concat([ls.frame for ls in loaded], how="diagonal_relaxed").with_row_index(IDX_COL)
    schema = dict(frame.collect_schema())
    sources, rejected = passes.metadata(frame, loaded, spec, schema, sink)
    selection = plan_mixture(spec, sources,
                             dedup_docs=lambda rows: passes.dedup_docs(frame, rows, spec))
    counts = source_counts(sources, selection.flags, rejected)
    for rows in sources:
        rows.release()
    return _Prepared(frame, selection.plan, loaded, sources, selection.copies, selection.tokens,
                     selection.dropped, counts,
                     tuple(name for name in dict.fromkeys((spec.text_field, spec.id_field))
                           if schema.get(name) == pl.String))


def _write(
    prepared: _Prepared, spec: MixtureSpec, out: Path, progress: bool, passes: LocalPasses
) -> tuple[dict[str, Any], SyntheticShare, list[dict[str, Any]]]:
    selected = [
        Selected(rows.loaded, index, copy, rows.fixed_pool if rows.pool is None else rows.pool)
        for copy, parts in enumerate(prepared.copies)
        for rows, index in zip(prepared.sources, parts, strict=True)
        if index.size
    ]
    target = prepared.frame.with_columns(pl.lit(0, dtype=pl.Int32).alias(COPY_COL)).drop(
        DROPPED, strict=False).collect_schema()
    plan = plan_write(selected, target, plain=(spec.id_field, spec.text_field))
    # The plan holds each file's rows: the per-source row lists are no longer needed (and
    # would stay alive, one more copy of every selected row, through the write pass).
    del selected
    prepared.copies = []
    written = write_tables(plan, passes.read(plan), out, spec.shard_rows, progress=progress)
    by_pool, by_source = written.by_pool, written.by_source
    documents = sum(by_pool.values())
    achieved = {
        "documents": documents,
        "tokens": prepared.tokens,
        "documents_by_pool": {p: by_pool.get(p, 0) for p in POOLS},
        "documents_by_source": dict(sorted(by_source.items())),
        "synthetic_share": round(by_pool.get("synthetic", 0) / documents, 6) if documents else None,
        "original_share": round(by_pool.get("original", 0) / documents, 6) if documents else None,
    }
    return achieved, written.share, written.shards


def _manifest(
    spec: MixtureSpec, prepared: _Prepared, achieved: dict[str, Any], share: SyntheticShare,
    shards: list[dict[str, Any]], rejects: int,
) -> Manifest:
    dropped, plan = prepared.dropped, prepared.plan
    dedup_by_source = (
        dict(dropped.get_column("source").value_counts().iter_rows()) if dropped.height else {}
    )
    sources: dict[str, dict[str, Any]] = {}
    for ls in prepared.loaded:
        sources[ls.name] = {
            "path": ls.source.as_dict()["path"],
            "role": ls.source.role,
            **prepared.per_source[ls.name],
            "deduplicated": int(dedup_by_source.get(ls.name, 0)),
            "selected": achieved.get("documents_by_source", {}).get(ls.name, 0),
        }
    dedup_info: dict[str, Any] = {"mode": spec.dedup, "dropped": dropped.height}
    if spec.dedup != "none":
        dedup_info["by_kind"] = (
            dict(dropped.get_column("kind").value_counts().iter_rows()) if dropped.height else {}
        )
        dedup_info["dropped_ids"] = dropped.drop(IDX_COL).head(10_000).to_dicts()
        dedup_info["dropped_file"] = "dedup_dropped.parquet" if dropped.height else None
    requested = {
        "unit": plan.unit,
        "target": plan.target,
        "synthetic_ratio": spec.synthetic_ratio,
        "retain_original": spec.retain_original,
        "by_pool": {p: pp.requested for p, pp in plan.pools.items()},
    }
    return Manifest(
        spec=spec.as_dict(),
        spec_hash=spec.spec_hash(),
        plan=plan.as_dict(),
        sources=sources,
        requested=requested,
        achieved=achieved,
        synthetic_share=share.as_dict(),
        dedup=dedup_info,
        rejects={"count": rejects, "file": "rejects.jsonl" if rejects else None},
        shards=shards,
    )


# MixturePlan, PoolPlan and split_target live in mixers.plan; they are also importable from here.
__all__ = ["LocalPasses", "MixturePlan", "PoolPlan", "build_mixture", "run_build",
           "select_mixture", "split_target"]
