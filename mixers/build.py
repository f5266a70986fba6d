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
    GEN_COL,
    KEY_COL,
    POOL_COL,
    POOLS,
    SOURCE_COL,
    TOKENS_COL,
    LoadedSource,
    load_source,
    source_names,
)
from mixers.spec import MixtureSpec
from provenance.corpus import RejectsWriter
from provenance.errors import ConfigError, InputError
from provenance.schema import PROV_LABEL, PROV_SCORE

RANK_COL = "_rank"
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


def split_target(spec: MixtureSpec, target: int, scraped_available: int) -> dict[str, int]:
    """Exact amounts per pool: synthetic share, original floor, rest from scraped then original.

    Examples
    --------
    >>> import polars as pl
    >>> from mixers.spec import MixtureSpec, Source
    >>> df = pl.DataFrame({"id": ["1"], "text": ["x"]})
    >>> spec = MixtureSpec(sources=(Source(df, "human"), Source(df, "from-tags")),
    ...                    target_docs=1000, synthetic_ratio=0.3, retain_original=0.2)
    >>> split_target(spec, 1000, scraped_available=400)
    {'synthetic': 300, 'original': 300, 'scraped': 400}
    """
    synthetic = _round(spec.synthetic_ratio * target)
    original = min(_round(spec.retain_original * target), target - synthetic)
    rest = target - synthetic - original
    scraped = min(rest, scraped_available)
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


def _eligible(frame: pl.LazyFrame, spec: MixtureSpec, newest: int | None) -> pl.LazyFrame:
    """Flag documents the provenance filter drops (scraped pool) and old generations."""
    scraped = pl.col(POOL_COL) == "scraped"
    filtered = pl.lit(False)
    labels = spec.effective_drop_labels
    if labels:
        filtered = filtered | (scraped & pl.col(PROV_LABEL).is_in(list(labels)))
    if spec.max_score is not None:
        filtered = filtered | (scraped & (pl.col(PROV_SCORE) > spec.max_score).fill_null(False))
    excluded = pl.lit(False)
    if newest is not None:
        excluded = (pl.col(POOL_COL) == "synthetic") & (
            pl.col(GEN_COL).fill_null(newest) != newest
        )
    return frame.with_columns(filtered.alias("_filtered"), excluded.alias("_excluded"))


def _rank_expr(spec: MixtureSpec) -> pl.Expr:
    key = pl.col(KEY_COL)
    if spec.strategy != "reweight":
        return key
    weight = (1.0 - pl.col(PROV_SCORE).fill_null(0.0).clip(0.0, 1.0)) ** spec.reweight_power
    scraped_rank = weighted_key(key, weight)
    # Other pools keep plain keys, mapped to (0, inf) the same way with weight 1.
    return pl.when(pl.col(POOL_COL) == "scraped").then(scraped_rank).otherwise(
        weighted_key(key, pl.lit(1.0))
    )


def _newest_generation(frame: pl.LazyFrame, spec: MixtureSpec) -> int | None:
    if spec.strategy not in ("replace", "retain"):
        return None
    value = (
        frame.filter(pl.col(POOL_COL) == "synthetic")
        .select(pl.col(GEN_COL).max())
        .collect(engine="streaming")
        .item()
    )
    return None if value is None else int(value)


def _source_counts(frame: pl.LazyFrame) -> pl.DataFrame:
    return (
        frame.group_by(SOURCE_COL)
        .agg(
            pl.len().alias("valid"),
            pl.col("_filtered").sum().alias("filtered"),
            (pl.col("_excluded") & ~pl.col("_filtered")).sum().alias("excluded_by_strategy"),
            pl.col(KEY_COL).n_unique().alias("unique_keys"),
        )
        .collect(engine="streaming")
    )


def _dedup(frame: pl.LazyFrame, spec: MixtureSpec) -> pl.DataFrame:
    docs = frame.select(
        pl.col(KEY_COL).alias("key"),
        pl.col(spec.id_field).alias("id"),
        pl.col(SOURCE_COL).alias("source"),
        pl.col(POOL_COL).alias("pool"),
        pl.col(PROV_LABEL).alias("label"),
        pl.col(spec.text_field).alias("text"),
    ).collect(engine="streaming")
    return find_duplicates(docs, near=spec.dedup == "near", threshold=spec.dedup_threshold)


def _plan(
    spec: MixtureSpec, ranks: pl.DataFrame, source_rows: dict[str, dict[str, int]],
    newest: int | None,
) -> MixturePlan:
    unit = "docs" if spec.target_docs is not None else "tokens"
    target = spec.target_docs if spec.target_docs is not None else spec.target_tokens
    by_pool = {p: ranks.filter(pl.col(POOL_COL) == p) for p in POOLS}
    available_docs = {p: f.height for p, f in by_pool.items()}
    available_tokens = (
        {p: int(f.get_column(TOKENS_COL).sum()) for p, f in by_pool.items()}
        if unit == "tokens" else None
    )
    scraped_available = (available_tokens or available_docs)["scraped"]
    amounts = split_target(spec, target, scraped_available)
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
    return MixturePlan(unit, target, pools, source_rows, newest)


def _select(plan: PoolPlan, ranks: pl.DataFrame, requested: int, have: int) -> PoolPlan:
    if requested == 0:
        return plan
    plan.repeats, remainder = divmod(requested, have) if requested >= have else (0, requested)
    rank = ranks.get_column(RANK_COL).to_numpy()
    if plan.unit == "docs":
        plan.threshold = kth_smallest(rank, remainder)
        plan.take_docs = plan.repeats * have + remainder
        return plan
    tokens = ranks.get_column(TOKENS_COL).to_numpy()
    plan.threshold, n, got = budget_prefix(rank, tokens, remainder)
    plan.take_docs = plan.repeats * plan.available_docs + n
    plan.take_tokens = plan.repeats * have + got
    return plan


def _selected(frame: pl.LazyFrame, plan: MixturePlan) -> pl.LazyFrame:
    parts = []
    for pool, pool_plan in plan.pools.items():
        in_pool = frame.filter(pl.col(POOL_COL) == pool)
        for copy in range(pool_plan.repeats):
            parts.append(in_pool.with_columns(pl.lit(copy, dtype=pl.Int32).alias(COPY_COL)))
        if pool_plan.threshold is not None:
            parts.append(
                in_pool.filter(pl.col(RANK_COL) <= pool_plan.threshold).with_columns(
                    pl.lit(pool_plan.repeats, dtype=pl.Int32).alias(COPY_COL)
                )
            )
    if not parts:
        return frame.head(0).with_columns(pl.lit(0, dtype=pl.Int32).alias(COPY_COL))
    return pl.concat(parts, how="diagonal_relaxed")


# ------------------------------------------------------------------------------------------------


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


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / "manifest.json").exists() and not overwrite:
        raise InputError(
            "already holds a mixture (manifest.json); choose another folder or pass "
            "overwrite=True (--overwrite)", file=str(out_dir),
        )
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
    nothing. With ``out_dir=None`` the mixture is not written; use :func:`select_mixture` to
    get it as a LazyFrame.
    """
    start = time.perf_counter()
    if out_dir is None and not dry_run:
        raise ConfigError("build_mixture needs out_dir (or dry_run=True); "
                          "use select_mixture() for an in-memory mixture")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not dry_run:
        _prepare_out_dir(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="tailguard-mix-") as tmp:
        sink = RejectsWriter(Path(tmp) / "rejects.jsonl")
        frame, plan, loaded, dropped = _prepare(spec, Path(tmp), sink)
        sink.close()
        rejects_count = sink.count
        if rejects_count and out is not None and not dry_run:
            shutil.move(sink.path, out / "rejects.jsonl")
        selected = _selected(frame, plan).drop(INTERNAL, strict=False)
        achieved, share, shards = _write(selected, spec, plan, out, dry_run, progress)
    manifest = _manifest(spec, plan, loaded, dropped, achieved, share, shards, rejects_count)
    manifest.seconds = round(time.perf_counter() - start, 3)
    manifest.out_dir = None if out is None else str(out)
    manifest.dry_run = dry_run
    if out is not None and not dry_run:
        if dropped.height:
            dropped.write_parquet(out / "dedup_dropped.parquet")
        manifest.write_card(out)
        manifest.write(out)
    return manifest


def select_mixture(spec: MixtureSpec, workdir: str | os.PathLike) -> pl.LazyFrame:
    """The mixture as a LazyFrame, for pipelines that mix in memory.

    ``workdir`` holds staged copies of non-parquet sources and must outlive the frame.
    """
    sink = RejectsWriter(Path(workdir) / "rejects.jsonl")
    frame, plan, _, _ = _prepare(spec, Path(workdir), sink)
    sink.close()
    return _selected(frame, plan).drop(INTERNAL, strict=False)


def _prepare(
    spec: MixtureSpec, workdir: Path, sink: RejectsWriter
) -> tuple[pl.LazyFrame, MixturePlan, list[LoadedSource], pl.DataFrame]:
    names = source_names(spec.sources)
    loaded = [
        load_source(s, n, spec, workdir=workdir, on_reject=sink)
        for s, n in zip(spec.sources, names, strict=True)
    ]
    frame = pl.concat([ls.frame for ls in loaded], how="diagonal_relaxed")
    if spec.target_tokens is not None:
        frame = frame.with_columns(_token_expr(spec).alias(TOKENS_COL))
    newest = _newest_generation(frame, spec)
    frame = _eligible(frame, spec, newest)
    counts = _source_counts(frame)
    for row in counts.iter_rows(named=True):
        if row["unique_keys"] < row["valid"]:
            raise InputError(
                f"source {row[SOURCE_COL]!r} has {row['valid'] - row['unique_keys']:,} duplicate "
                f"ids; ids must be unique within a source (tailguard tag rejects duplicates)"
            )
    source_rows = {
        r[SOURCE_COL]: {k: int(v) for k, v in r.items() if k not in (SOURCE_COL, "unique_keys")}
        for r in counts.iter_rows(named=True)
    }
    frame = frame.filter(~pl.col("_filtered") & ~pl.col("_excluded"))
    dropped = pl.DataFrame(schema={"id": pl.String, "source": pl.String})
    if spec.dedup != "none":
        dropped = _dedup(frame, spec)
        if dropped.height:
            gone = dropped.select(
                pl.col("source").alias(SOURCE_COL), pl.col("id").alias(spec.id_field)
            ).lazy()
            frame = frame.join(gone, on=[SOURCE_COL, spec.id_field], how="anti")
    frame = frame.with_columns(_rank_expr(spec).alias(RANK_COL))
    columns = [POOL_COL, RANK_COL] + ([TOKENS_COL] if spec.target_tokens is not None else [])
    ranks = frame.select(columns).collect(engine="streaming")
    plan = _plan(spec, ranks, source_rows, newest)
    return frame, plan, loaded, dropped


def _write(
    selected: pl.LazyFrame, spec: MixtureSpec, plan: MixturePlan, out: Path | None,
    dry_run: bool, progress: bool,
) -> tuple[dict[str, Any], SyntheticShare, list[dict[str, Any]]]:
    by_source: Counter = Counter()
    by_pool: Counter = Counter()
    tokens = 0
    share = SyntheticShare()
    if dry_run:
        return {}, share, []
    writer = _ShardWriter(out, spec.shard_rows) if out is not None else None
    total = sum(p.take_docs for p in plan.pools.values())
    bar = tqdm(total=total, unit="doc", desc="mixing", disable=None if progress else True)
    with bar:
        for batch in selected.collect_batches(chunk_size=50_000):
            by_source.update(dict(batch.get_column(SOURCE_COL).value_counts().iter_rows()))
            by_pool.update(dict(batch.get_column(POOL_COL).value_counts().iter_rows()))
            if spec.target_tokens is not None:
                tokens += int(batch.select(_token_expr(spec).sum()).item())
            score = batch.get_column(PROV_SCORE).cast(pl.Float64)
            scored = score.drop_nulls()
            share.add(batch.height, scored.len(), float(scored.sum()),
                      float((scored * (1 - scored)).sum()))
            if writer is not None:
                writer.add(batch)
            bar.update(batch.height)
    if writer is not None:
        writer.flush()
    documents = sum(by_pool.values())
    achieved = {
        "documents": documents,
        "tokens": tokens if spec.target_tokens is not None else None,
        "documents_by_pool": {p: by_pool.get(p, 0) for p in POOLS},
        "documents_by_source": dict(sorted(by_source.items())),
        "synthetic_share": round(by_pool.get("synthetic", 0) / documents, 6) if documents else None,
        "original_share": round(by_pool.get("original", 0) / documents, 6) if documents else None,
    }
    return achieved, share, writer.shards if writer is not None else []


def _manifest(
    spec: MixtureSpec, plan: MixturePlan, loaded: list[LoadedSource], dropped: pl.DataFrame,
    achieved: dict[str, Any], share: SyntheticShare, shards: list[dict[str, Any]],
    rejects: int,
) -> Manifest:
    sources: dict[str, dict[str, Any]] = {}
    dedup_by_source = (
        dict(dropped.get_column("source").value_counts().iter_rows()) if dropped.height else {}
    )
    for ls in loaded:
        rows = plan.sources.get(ls.name, {})
        sources[ls.name] = {
            "path": ls.source.as_dict()["path"],
            "role": ls.source.role,
            "read": ls.counts.read,
            "rejected": ls.counts.rejected,
            "filtered": rows.get("filtered", 0),
            "excluded_by_strategy": rows.get("excluded_by_strategy", 0),
            "deduplicated": int(dedup_by_source.get(ls.name, 0)),
            "selected": achieved.get("documents_by_source", {}).get(ls.name, 0),
        }
    dedup_info: dict[str, Any] = {"mode": spec.dedup, "dropped": dropped.height}
    if spec.dedup != "none":
        dedup_info["by_kind"] = (
            dict(dropped.get_column("kind").value_counts().iter_rows()) if dropped.height else {}
        )
        dedup_info["dropped_ids"] = dropped.head(10_000).to_dicts()
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
