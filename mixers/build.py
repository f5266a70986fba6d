"""Build a mixture: plan exact counts, select by keyed hash, write shards and a manifest.

The work is a handful of streaming passes over lazy frames, so memory does not grow with the
corpus (only with the per-pool ranking keys, 8 bytes a document):

1. validate each source (bad rows to ``rejects.jsonl``);
2. count what each pool can offer after the provenance filter and the strategy's generation rule;
3. (optional) deduplicate across sources, keeping the human copy;
4. collect each pool's ranking keys and find the k-th smallest (or the token-budget prefix);
5. stream the rows under each pool's threshold into parquet shards, counting as they are written.

The manifest's achieved numbers are counted from the rows actually written, not from the plan.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mixers.dedup import find_duplicates
from mixers.manifest import Manifest, SyntheticShare
from mixers.sampling import budget_prefix, kth_smallest, weighted_key
from mixers.sources import (
    FILE_COL,
    GEN_COL,
    KEY_COL,
    POOL_COL,
    POOLS,
    REJECT_COL,
    ROW_COL,
    SOURCE_COL,
    TOKENS_COL,
    LoadedSource,
    load_source,
    reject_from_row,
    source_names,
)
from mixers.spec import MixtureSpec
from provenance.corpus import RejectsWriter
from provenance.errors import ConfigError, InputError
from provenance.schema import PROV_LABEL, PROV_SCORE

RANK_COL = "_rank"
IDX_COL = "_idx"
COPY_COL = "mix_copy"
INTERNAL = (KEY_COL, GEN_COL, TOKENS_COL, RANK_COL, "_filtered", "_excluded")


@dataclass
class PoolPlan:
    """What one pool contributes: requested and available amounts, and how it is selected."""

    pool: str
    unit: str
    requested: int
    available_docs: int
    available_tokens: int | None = None
    repeats: int = 0
    take_docs: int = 0
    take_tokens: int | None = None
    threshold: float | int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "threshold"}


@dataclass
class MixturePlan:
    unit: str
    target: int
    pools: dict[str, PoolPlan]
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    newest_generation: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "target": self.target,
            "newest_generation": self.newest_generation,
            "pools": {k: v.as_dict() for k, v in self.pools.items()},
        }


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_target(
    spec: MixtureSpec, target: int, scraped_available: int, original_available: int | None = None
) -> dict[str, int]:
    """Exact amounts per pool: synthetic share, original floor, rest from scraped then original.

    When there is no original data to make up a shortfall of the scraped pool
    (``original_available == 0``), the scraped pool is asked for the whole rest, so a filtered
    web corpus on its own reports its own shortfall (and can be upsampled) instead of failing on
    an empty original pool.

    Examples
    --------
    >>> import polars as pl
    >>> from mixers.spec import MixtureSpec, Source
    >>> df = pl.DataFrame({"id": ["1"], "text": ["x"]})
    >>> spec = MixtureSpec(sources=(Source(df, "human"), Source(df, "from-tags")),
    ...                    target_docs=1000, synthetic_ratio=0.3, retain_original=0.2)
    >>> split_target(spec, 1000, scraped_available=400)
    {'synthetic': 300, 'original': 300, 'scraped': 400}
    >>> web_only = spec.with_overrides(retain_original=0.0)
    >>> split_target(web_only, 1000, scraped_available=400, original_available=0)
    {'synthetic': 300, 'original': 0, 'scraped': 700}
    """
    synthetic = _round(spec.synthetic_ratio * target)
    original = min(_round(spec.retain_original * target), target - synthetic)
    rest = target - synthetic - original
    scraped = rest if original_available == 0 else min(rest, scraped_available)
    return {"synthetic": synthetic, "original": original + rest - scraped, "scraped": scraped}


# ------------------------------------------------------------------------------------------------


def _token_expr(spec: MixtureSpec) -> pl.Expr:
    text = pl.col(spec.text_field)
    if spec.tokenizer == "whitespace":
        return text.str.count_matches(r"\S+").cast(pl.Int64)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
    except OSError as exc:
        raise InputError(f"cannot load tokenizer: {str(exc).splitlines()[0]}",
                         file=spec.tokenizer) from exc

    def count(s: pl.Series) -> pl.Series:
        encoded = tokenizer(s.to_list(), add_special_tokens=False)["input_ids"]
        return pl.Series(s.name, [len(ids) for ids in encoded], dtype=pl.Int64)

    return text.map_batches(count, return_dtype=pl.Int64, is_elementwise=True)


def _filtered_expr(spec: MixtureSpec) -> pl.Expr:
    """Scraped documents the provenance filter drops."""
    scraped = pl.col(POOL_COL) == "scraped"
    filtered = pl.lit(False)
    labels = spec.effective_drop_labels
    if labels:
        filtered = filtered | (scraped & pl.col(PROV_LABEL).is_in(list(labels)).fill_null(False))
    if spec.max_score is not None:
        filtered = filtered | (scraped & (pl.col(PROV_SCORE) > spec.max_score).fill_null(False))
    return filtered


def _rank_expr(spec: MixtureSpec) -> pl.Expr:
    key = pl.col(KEY_COL)
    if spec.strategy != "reweight":
        return key
    weight = (1.0 - pl.col(PROV_SCORE).fill_null(0.0).clip(0.0, 1.0)) ** spec.reweight_power
    # Other pools are drawn with weight 1 on the same (0, inf) scale.
    return pl.when(pl.col(POOL_COL) == "scraped").then(weighted_key(key, weight)).otherwise(
        weighted_key(key, pl.lit(1.0))
    )


def _metadata(frame: pl.LazyFrame, spec: MixtureSpec, names: list[str]) -> pl.DataFrame:
    """The one streaming pass over all sources: a few bytes of metadata per document."""
    columns = [
        pl.col(IDX_COL),
        pl.col(SOURCE_COL).cast(pl.Enum(names)),
        pl.col(POOL_COL),
        pl.col(REJECT_COL).is_not_null().alias("_bad"),
        pl.col(KEY_COL),
        _filtered_expr(spec).alias("_filtered"),
    ]
    if spec.strategy in ("replace", "retain"):
        columns.append(pl.col(GEN_COL))
    if spec.strategy == "reweight":
        columns.append(_rank_expr(spec).alias(RANK_COL))
    if spec.target_tokens is not None:
        columns.append(_token_expr(spec).alias(TOKENS_COL))
    return frame.select(columns).collect(engine="streaming")


def _route_rejects(
    frame: pl.LazyFrame, meta: pl.DataFrame, spec: MixtureSpec, sink: RejectsWriter
) -> Counter:
    """Fetch the rows the metadata pass marked bad (rare) and write them to the rejects."""
    per_source: Counter = Counter()
    if not meta.get_column("_bad").any():
        return per_source
    bad = frame.filter(pl.col(REJECT_COL).is_not_null()).drop(
        [c for c in (KEY_COL, IDX_COL, POOL_COL, GEN_COL) if c in frame.collect_schema()]
    ).collect(engine="streaming")
    for rec in bad.iter_rows(named=True):
        per_source[rec.pop(SOURCE_COL)] += 1
        sink(reject_from_row(rec, spec))
    return per_source


def _dedup(frame: pl.LazyFrame, eligible: pl.DataFrame, spec: MixtureSpec) -> pl.DataFrame:
    docs = (
        frame.join(eligible.select(IDX_COL).lazy(), on=IDX_COL, how="semi")
        .select(
            pl.col(IDX_COL),
            pl.col(KEY_COL).alias("key"),
            pl.col(spec.id_field).alias("id"),
            pl.col(SOURCE_COL).alias("source"),
            pl.col(POOL_COL).cast(pl.String).alias("pool"),
            pl.col(PROV_LABEL).alias("label"),
            pl.col(spec.text_field).alias("text"),
        )
        .collect(engine="streaming")
    )
    dropped = find_duplicates(docs.drop(IDX_COL), near=spec.dedup == "near",
                              threshold=spec.dedup_threshold)
    return dropped.join(
        docs.select(pl.col(IDX_COL), pl.col("id"), pl.col("source")), on=["id", "source"]
    )


def _plan(spec: MixtureSpec, eligible: pl.DataFrame, newest: int | None) -> MixturePlan:
    unit = "docs" if spec.target_docs is not None else "tokens"
    target = spec.target_docs if spec.target_docs is not None else spec.target_tokens
    by_pool = {p: eligible.filter(pl.col(POOL_COL) == p) for p in POOLS}
    available_docs = {p: f.height for p, f in by_pool.items()}
    available_tokens = (
        {p: int(f.get_column(TOKENS_COL).sum()) for p, f in by_pool.items()}
        if unit == "tokens" else None
    )
    scraped_available = (available_tokens or available_docs)["scraped"]
    amounts = split_target(
        spec, target, scraped_available, (available_tokens or available_docs)["original"]
    )
    pools: dict[str, PoolPlan] = {}
    for pool in POOLS:
        requested = amounts[pool]
        plan = PoolPlan(pool, unit, requested, available_docs[pool],
                        None if available_tokens is None else available_tokens[pool])
        have = plan.available_docs if unit == "docs" else plan.available_tokens
        if requested > have and not spec.allow_upsample:
            raise ConfigError(
                f"the {pool} pool has {have:,} {unit} after filtering but {requested:,} are "
                f"requested (target {target:,} {unit}); lower the target or the ratios, add "
                "sources, or allow upsampling (--allow-upsample)"
            )
        if requested > 0 and have == 0:
            raise ConfigError(f"the {pool} pool is empty but {requested:,} {unit} are requested")
        pools[pool] = _select(plan, by_pool[pool], requested, have)
    return MixturePlan(unit, target, pools, {}, newest)


def _select(plan: PoolPlan, rows: pl.DataFrame, requested: int, have: int) -> PoolPlan:
    if requested == 0:
        return plan
    plan.repeats, remainder = divmod(requested, have) if requested >= have else (0, requested)
    rank = rows.get_column(RANK_COL).to_numpy()
    if plan.unit == "docs":
        plan.threshold = kth_smallest(rank, remainder)
        plan.take_docs = plan.repeats * have + remainder
        return plan
    tokens = rows.get_column(TOKENS_COL).to_numpy()
    plan.threshold, n, got = budget_prefix(rank, tokens, remainder)
    plan.take_docs = plan.repeats * plan.available_docs + n
    plan.take_tokens = plan.repeats * have + got
    return plan


def _copies(eligible: pl.DataFrame, plan: MixturePlan) -> list[pl.Series]:
    """Row indices written in each copy: copy c holds every pool with more than c full repeats,
    and the rank prefix of each pool whose repeats equal c."""
    copies: list[pl.Series] = []
    for copy in range(max((p.repeats for p in plan.pools.values()), default=0) + 1):
        parts = []
        for pool, pool_plan in plan.pools.items():
            in_pool = eligible.filter(pl.col(POOL_COL) == pool)
            if copy < pool_plan.repeats:
                parts.append(in_pool.get_column(IDX_COL))
            elif copy == pool_plan.repeats and pool_plan.threshold is not None:
                parts.append(in_pool.filter(pl.col(RANK_COL) <= pool_plan.threshold)
                             .get_column(IDX_COL))
        copies.append(pl.concat(parts) if parts else pl.Series(IDX_COL, [], dtype=pl.UInt64))
    return copies


def _selected(frame: pl.LazyFrame, copies: list[pl.Series]) -> pl.LazyFrame:
    parts = [
        frame.filter(pl.col(IDX_COL).is_in(indices.implode())).with_columns(
            pl.lit(copy, dtype=pl.Int32).alias(COPY_COL)
        )
        for copy, indices in enumerate(copies)
        if indices.len()
    ]
    if not parts:
        return frame.head(0).with_columns(pl.lit(0, dtype=pl.Int32).alias(COPY_COL))
    return pl.concat(parts, how="diagonal_relaxed")


@dataclass
class _ShardWriter:
    out_dir: Path
    shard_rows: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    _buffer: list[pl.DataFrame] = field(default_factory=list)
    _rows: int = 0

    def add(self, batch: pl.DataFrame) -> None:
        while batch.height:
            room = self.shard_rows - self._rows
            self._buffer.append(batch.head(room))
            self._rows += min(room, batch.height)
            batch = batch.slice(room)
            if self._rows == self.shard_rows:
                self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        frame = pl.concat(self._buffer, how="diagonal_relaxed")
        name = f"part-{len(self.shards):05d}.parquet"
        path = self.out_dir / name
        pq.write_table(frame.to_arrow(), path, compression="zstd")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.shards.append({"file": name, "rows": frame.height, "sha256": digest})
        self._buffer, self._rows = [], 0


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
) -> Manifest:
    """Build the mixture ``spec`` describes into ``out_dir`` and return its manifest.

    Writes ``part-NNNNN.parquet`` shards (input columns, provenance columns, ``mix_source``,
    ``mix_pool``, ``mix_copy``), ``manifest.json``, ``dataset_card.md`` and, if any row could
    not be read, ``rejects.jsonl``. The manifest is written last, so a folder with a manifest
    holds a complete mixture. ``dry_run`` plans (reading the data to count it) and writes
    nothing. Use :func:`select_mixture` to get a mixture as a LazyFrame instead.
    """
    start = time.perf_counter()
    if out_dir is None and not dry_run:
        raise ConfigError("build_mixture needs out_dir (or dry_run=True); "
                          "use select_mixture() for an in-memory mixture")
    out = Path(out_dir) if out_dir is not None else None
    writing = out is not None and not dry_run
    if writing:
        _check_out_dir(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="tailguard-mix-") as tmp:
        sink = RejectsWriter(Path(tmp) / "rejects.jsonl")
        prepared = _prepare(spec, Path(tmp), sink)
        sink.close()
        if writing:
            _prepare_out_dir(out)
        if sink.count and out is not None and not dry_run:
            shutil.move(sink.path, out / "rejects.jsonl")
        achieved, share, shards = (
            ({}, SyntheticShare(), []) if dry_run else _write(prepared, spec, out, progress)
        )
    manifest = _manifest(spec, prepared, achieved, share, shards, sink.count)
    manifest.seconds = round(time.perf_counter() - start, 3)
    manifest.out_dir = None if out is None else str(out)
    manifest.dry_run = dry_run
    if out is not None and not dry_run:
        if prepared.dropped.height:
            prepared.dropped.drop(IDX_COL).write_parquet(out / "dedup_dropped.parquet")
        manifest.write_card(out)
        manifest.write(out)
    return manifest


def select_mixture(spec: MixtureSpec, workdir: str | os.PathLike) -> pl.LazyFrame:
    """The mixture as a LazyFrame, for pipelines that mix in memory.

    ``workdir`` holds staged copies of non-parquet sources and must outlive the frame.
    """
    sink = RejectsWriter(Path(workdir) / "rejects.jsonl")
    prepared = _prepare(spec, Path(workdir), sink)
    sink.close()
    return _output_frame(prepared)


@dataclass
class _Prepared:
    frame: pl.LazyFrame
    plan: MixturePlan
    loaded: list[LoadedSource]
    copies: list[pl.Series]
    eligible: pl.DataFrame
    dropped: pl.DataFrame
    per_source: dict[str, dict[str, int]]


def _output_frame(prepared: _Prepared) -> pl.LazyFrame:
    drop = (*INTERNAL, IDX_COL, REJECT_COL, FILE_COL, ROW_COL)
    return _selected(prepared.frame, prepared.copies).drop(drop, strict=False)


def _prepare(spec: MixtureSpec, workdir: Path, sink: RejectsWriter) -> _Prepared:
    names = source_names(spec.sources)
    loaded = [
        load_source(s, n, spec, workdir=workdir, on_reject=sink)
        for s, n in zip(spec.sources, names, strict=True)
    ]
    frame = pl.concat([ls.frame for ls in loaded], how="diagonal_relaxed").with_row_index(IDX_COL)
    meta = _metadata(frame, spec, names)
    rejected = _route_rejects(frame, meta, spec, sink)
    valid = meta.filter(~pl.col("_bad"))
    newest = None
    if spec.strategy in ("replace", "retain"):
        gens = valid.filter(pl.col(POOL_COL) == "synthetic").get_column(GEN_COL)
        newest = None if gens.null_count() == gens.len() else int(gens.max())
    excluded = pl.lit(False)
    if newest is not None:
        excluded = (pl.col(POOL_COL) == "synthetic") & (pl.col(GEN_COL).fill_null(newest) != newest)
    valid = valid.with_columns(excluded.alias("_excluded"))
    per_source = _per_source(meta, valid, rejected, loaded)
    eligible = valid.filter(~pl.col("_filtered") & ~pl.col("_excluded"))
    duplicated = eligible.filter(pl.col(KEY_COL).is_duplicated())
    if duplicated.height:
        counts = duplicated.get_column(SOURCE_COL).value_counts().iter_rows()
        detail = ", ".join(f"{name!s}: {n:,}" for name, n in counts)
        raise InputError(
            f"duplicate ids within a source ({detail} rows share an id); ids must be unique "
            "within a source (tailguard tag rejects duplicates)"
        )
    dropped = pl.DataFrame(schema={IDX_COL: pl.UInt32, "id": pl.String, "source": pl.String})
    if spec.dedup != "none":
        dropped = _dedup(frame, eligible, spec)
        eligible = eligible.join(dropped.select(IDX_COL), on=IDX_COL, how="anti")
    if RANK_COL not in eligible.columns:
        eligible = eligible.with_columns(pl.col(KEY_COL).alias(RANK_COL))
    plan = _plan(spec, eligible, newest)
    copies = _copies(eligible, plan)
    return _Prepared(frame, plan, loaded, copies, eligible, dropped, per_source)


def _per_source(
    meta: pl.DataFrame, valid: pl.DataFrame, rejected: Counter, loaded: list[LoadedSource]
) -> dict[str, dict[str, int]]:
    rows = dict(meta.get_column(SOURCE_COL).cast(pl.String).value_counts().iter_rows())
    flags = valid.group_by(pl.col(SOURCE_COL).cast(pl.String)).agg(
        pl.col("_filtered").sum(), (pl.col("_excluded") & ~pl.col("_filtered")).sum()
    )
    by_flag = {r[0]: (int(r[1]), int(r[2])) for r in flags.iter_rows()}
    out = {}
    for ls in loaded:
        n = int(rows.get(ls.name, 0))
        if ls.staged:
            read, bad = ls.counts.read, ls.counts.rejected
        else:
            read, bad = n, rejected.get(ls.name, 0)
        filtered, excluded = by_flag.get(ls.name, (0, 0))
        out[ls.name] = {"read": read, "rejected": bad, "filtered": filtered,
                        "excluded_by_strategy": excluded}
    return out


def _write(
    prepared: _Prepared, spec: MixtureSpec, out: Path, progress: bool
) -> tuple[dict[str, Any], SyntheticShare, list[dict[str, Any]]]:
    by_source: Counter = Counter()
    by_pool: Counter = Counter()
    share = SyntheticShare()
    writer = _ShardWriter(out, spec.shard_rows)
    total = sum(c.len() for c in prepared.copies)
    bar = tqdm(total=total, unit="doc", desc="mixing", disable=None if progress else True)
    with bar:
        for batch in _output_frame(prepared).collect_batches(chunk_size=100_000):
            by_source.update(dict(batch.get_column(SOURCE_COL).value_counts().iter_rows()))
            by_pool.update(dict(batch.get_column(POOL_COL).cast(pl.String)
                                .value_counts().iter_rows()))
            score = batch.get_column(PROV_SCORE).cast(pl.Float64)
            scored = score.drop_nulls()
            share.add(batch.height, scored.len(), float(scored.sum()),
                      float((scored * (1 - scored)).sum()))
            writer.add(batch)
            bar.update(batch.height)
    writer.flush()
    documents = sum(by_pool.values())
    tokens = None
    if spec.target_tokens is not None:
        per_row = prepared.eligible.select(IDX_COL, TOKENS_COL)
        tokens = sum(
            int(per_row.filter(pl.col(IDX_COL).is_in(c.implode()))[TOKENS_COL].sum())
            for c in prepared.copies
        )
    achieved = {
        "documents": documents,
        "tokens": tokens,
        "documents_by_pool": {p: by_pool.get(p, 0) for p in POOLS},
        "documents_by_source": dict(sorted(by_source.items())),
        "synthetic_share": round(by_pool.get("synthetic", 0) / documents, 6) if documents else None,
        "original_share": round(by_pool.get("original", 0) / documents, 6) if documents else None,
    }
    return achieved, share, writer.shards


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
