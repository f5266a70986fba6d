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

The output folder is checked before anything is read (:func:`_check_out_dir`: not an input,
writable, and either new, empty, or a mixture that ``overwrite`` may replace), and the mixture
is built in a hidden folder beside it that replaces it only once complete
(:func:`provenance.outputs.staged_folder`): a failed or killed build leaves the old mixture as
it was, and never a partial shard or a side file of an earlier run. The build's work files
(staged copies of non-parquet sources, rejects) live in a hidden work folder beside the output
(the system's temporary folder for a dry run) that goes on any exit; a killed run's is swept by
the next one.

:func:`select_mixture` returns the same rows as a polars LazyFrame (the sources' lazy frames,
filtered by row index) for pipelines that mix in memory.
"""

from __future__ import annotations

import contextlib
import os
import re
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

from mixers.manifest import Manifest, RunFacts, SyntheticShare
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
from provenance.engines import RayEngine, resolve_engine
from provenance.errors import ConfigError, OutputError
from provenance.outputs import (
    check_output,
    staged_folder,
    sweep_dead_work,
    work_dir,
    writing,
)

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

    :func:`run_build` calls them in turn; another engine's passes
    (:class:`mixers.ray_build.RayPasses`, which :func:`build_mixture` picks for
    ``engine="ray"``) have the same methods and change where they run, not what they compute.
    """

    #: The engine's name, as ``run.json`` records it.
    name = "local"

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """The context the build runs in (a connection to a cluster, say)."""
        return contextlib.nullcontext()

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


#: The files a mixture folder holds besides its shards (``part-NNNNN.parquet``).
MIXTURE_FILES = ("manifest.json", "run.json", "dataset_card.md", "rejects.jsonl",
                 "dedup_dropped.parquet")
# A shard, or the temporary file of an atomic write of an earlier version's build.
_KNOWN = "|".join(re.escape(name) for name in MIXTURE_FILES)
_MIXTURE_NAME = re.compile(rf"part-\d{{5,}}\.parquet|\.(?:{_KNOWN})\..+\.tmp")


def is_mixture_file(name: str) -> bool:
    """Whether a build writes files of this name into a mixture folder.

    ``--overwrite`` replaces a mixture folder whole, so it is refused where the folder holds
    anything else (a user's notes, another tool's output): those are never deleted.

    Examples
    --------
    >>> [is_mixture_file(n) for n in ("part-00003.parquet", "run.json", "notes.txt", ".git")]
    [True, True, False, False]
    """
    return name in MIXTURE_FILES or _MIXTURE_NAME.fullmatch(name) is not None


def _source_paths(spec: MixtureSpec) -> list[str | os.PathLike]:
    """The paths (files, folders, globs) the spec's sources read; in-memory sources have none."""
    return [s.path for s in spec.sources if isinstance(s.path, (str, os.PathLike))]


def _check_out_dir(out_dir: Path, spec: MixtureSpec, overwrite: bool) -> None:
    """Refuse, in one line and before any work, an output folder this build must not write.

    The folder must not be, hold or lie inside a source, and must be writable
    (:func:`~provenance.outputs.check_output`). If it exists and is not empty it must hold a
    mixture (``manifest.json``), ``overwrite`` must be given, and it must hold only what a
    mixture holds (:func:`is_mixture_file`): the build replaces it whole.
    """
    check_output(out_dir, _source_paths(spec), folder=True)
    # A killed build's swap is undone first, so the folder judged is the one the user has.
    sweep_dead_work(out_dir.parent)
    names = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not names:
        return
    if "manifest.json" not in names:
        raise OutputError("is not empty and holds no tailguard mixture (no manifest.json); "
                          "choose a new or empty folder", path=str(out_dir))
    if not overwrite:
        raise OutputError("already holds a mixture (manifest.json); choose another folder or "
                          "pass overwrite=True (--overwrite)", path=str(out_dir))
    foreign = [name for name in names if not is_mixture_file(name)]
    if foreign:
        raise OutputError(
            f"holds {foreign[0]}, which a mixture does not write; --overwrite replaces the "
            "whole folder, so move it out first (or choose another folder)", path=str(out_dir))


def build_mixture(
    spec: MixtureSpec,
    out_dir: str | os.PathLike | None = None,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    engine: str | RayEngine = "local",
    ray_address: str | None = None,
) -> Manifest:
    """Build the mixture ``spec`` describes into ``out_dir`` and return its manifest.

    Writes ``part-NNNNN.parquet`` shards (input columns, provenance columns, ``mix_source``,
    ``mix_pool``, ``mix_copy``; layout: :mod:`mixers.shards`), ``manifest.json`` (a function
    of the spec and the inputs), ``run.json`` (where, when and how long: :class:`RunFacts`),
    ``dataset_card.md`` and, if any row could not be read, ``rejects.jsonl``. The folder appears
    (or replaces a mixture already there, with ``overwrite``) only once complete. ``dry_run``
    plans (reading the data to count it) and writes nothing. Use :func:`select_mixture` to get a
    mixture as a LazyFrame instead.

    ``engine`` says where the passes over the data run: ``"local"`` (this process), or
    ``"ray"`` / a :class:`~provenance.engines.RayEngine` (Ray workers, :mod:`mixers.ray_build`;
    ``ray_address`` picks the cluster), which writes the same bytes.

    Examples
    --------
    >>> import polars as pl
    >>> from mixers.spec import MixtureSpec, Source
    >>> docs = pl.DataFrame({"id": ["a", "b", "c"], "text": ["one", "two", "three"]})
    >>> spec = MixtureSpec(sources=(Source(docs, "human", name="docs"),), target_docs=2)
    >>> build_mixture(spec, dry_run=True).plan["pools"]["original"]["take_docs"]
    2
    """
    ray_engine = resolve_engine(engine, ray_address)
    passes = LocalPasses()
    if ray_engine is not None:
        from mixers.ray_build import RayPasses

        passes = RayPasses(ray_engine)
    return run_build(spec, out_dir, passes, dry_run=dry_run, overwrite=overwrite,
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
    out = None if dry_run or out_dir is None else Path(out_dir)
    if out is not None:
        _check_out_dir(out, spec, overwrite)
    run = RunFacts(out_dir=None if out is None else str(out.absolute()), dry_run=dry_run,
                   engine=passes.name)
    # The work folder (staged sources, rejects) is beside the output: an engine's workers read
    # the staged sources there, and the next run into the same output sweeps a killed run's.
    # A dry run writes nothing beside its output: its work folder is in the system temp dir.
    parent = Path(tempfile.gettempdir()) if out is None else out.absolute().parent
    with passes.session(), work_dir(parent, "mix") as work:
        sink = RejectsWriter(work / "rejects.jsonl")
        with _writes_in(work, out):
            prepared = _prepare(spec, work, sink, passes)
            sink.close()
        if out is None:
            manifest = _manifest(spec, prepared, {}, SyntheticShare(), [], sink.count)
            run.seconds = round(time.perf_counter() - start, 3)
        else:
            with staged_folder(out) as staged:
                manifest = _write_mixture(prepared, spec, staged, out, sink, progress, passes)
                run.seconds = round(time.perf_counter() - start, 3)
                with writing(out):
                    run.write(staged)
    manifest.run = run
    return manifest


@contextlib.contextmanager
def _writes_in(work: Path, out: Path | None) -> Iterator[None]:
    """A failed write of a file in the work folder (a staged source, the rejects) is one line
    naming the output (or the work folder of a dry run) and the cause; any other error keeps
    its own wording (an input that cannot be read)."""
    try:
        yield
    except (OSError, OutputError) as exc:
        where = exc.filename if isinstance(exc, OSError) else exc.path
        failed = exc if isinstance(exc, OSError) else exc.__cause__
        if (where is None or not isinstance(failed, Exception)
                or work not in Path(where).absolute().parents):
            raise
        with writing(work if out is None else out):  # the same wording, the user's folder
            raise failed from None


def _write_mixture(prepared: _Prepared, spec: MixtureSpec, staged: Path, out: Path,
                   sink: RejectsWriter, progress: bool, passes: LocalPasses) -> Manifest:
    """Write the whole mixture into ``staged`` (shards, rejects, dropped duplicates, card,
    manifest); write errors are one line naming ``out``, the folder the user asked for."""
    if sink.count:
        with writing(out):
            shutil.move(sink.path, staged / "rejects.jsonl")
    achieved, share, shards = _write(prepared, spec, staged, out, progress, passes)
    manifest = _manifest(spec, prepared, achieved, share, shards, sink.count)
    manifest.shard_format = SHARD_FORMAT
    with writing(out):
        if prepared.dropped.height:
            prepared.dropped.drop(IDX_COL).write_parquet(staged / "dedup_dropped.parquet")
        manifest.write_card(staged)
        manifest.write(staged)
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
    prepared: _Prepared, spec: MixtureSpec, staged: Path, out: Path, progress: bool,
    passes: LocalPasses,
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
    written = write_tables(plan, passes.read(plan), staged, spec.shard_rows, progress=progress,
                           output=out)
    by_pool, by_source = written.by_pool, written.by_source
    documents = sum(by_pool.values())
    achieved = {
        "documents": documents,
        "tokens": prepared.tokens,
        # Token targets: each pool's tokens (those of the rows selected, and so written).
        "tokens_by_pool": None if prepared.tokens is None else {
            p: prepared.plan.pools[p].take_tokens or 0 for p in POOLS},
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
        # Sorted: value_counts' order varies from run to run, and the manifest may not.
        dedup_info["by_kind"] = (
            dict(sorted(dropped.get_column("kind").value_counts().iter_rows()))
            if dropped.height else {}
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
__all__ = ["MIXTURE_FILES", "LocalPasses", "MixturePlan", "PoolPlan", "build_mixture",
           "is_mixture_file", "run_build", "select_mixture", "split_target"]
