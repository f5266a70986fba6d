"""Build a mixture: plan exact counts, select by keyed hash, write shards and a manifest.

Two streaming passes over the sources, so memory does not grow with the corpus beyond a few
bytes of metadata a document (the ranking key, 8 bytes, plus a byte per flag where one is
needed):

1. the metadata pass reads, one parquet row group at a time, only the columns the plan needs
   (the id, and the text only where the row group's statistics do not already prove it valid)
   and keeps compact numpy arrays per source: the XXH64 ranking key, the pool, and the flags of
   the rows that are rejected, filtered or excluded by the strategy (bad rows go to
   ``rejects.jsonl``);
2. (optional) deduplicate across sources, keeping the human copy;
3. each pool's k-th smallest key (or the token-budget prefix) is its threshold, and the rows
   under it are the mixture;
4. the write pass streams the selected rows (a polars streaming query over all sources, filtered
   by row index) into parquet shards, counting as they are written. Its batches are copied out of
   the decoded row groups before they are buffered (:func:`_compact`), keeping their chunk layout:
   the layout decides the shards' page boundaries, so the shards keep their exact bytes.

The manifest's achieved numbers are counted from the rows actually written, not from the plan.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mixers.dedup import find_duplicates
from mixers.manifest import Manifest, SyntheticShare
from mixers.sampling import (
    SEPARATOR,
    budget_prefix,
    duplicated_keys,
    kth_smallest_in_place,
    weighted_key,
    xxh64_strings,
)
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
    RowGroup,
    file_rows,
    generation_expr,
    iter_row_groups,
    load_source,
    pool_expr,
    reason_expr,
    reject_from_row,
    source_names,
)
from mixers.spec import MixtureSpec
from provenance.corpus import RejectsWriter
from provenance.errors import ConfigError, InputError
from provenance.schema import PROV_GENERATION, PROV_LABEL, PROV_SCORE

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


POOL_CODES = {pool: code for code, pool in enumerate(POOLS)}
ROLE_POOL = {"human": "original", "synthetic": "synthetic", "from-tags": "scraped"}
Mask = np.ndarray | bool | None


def _both(*masks: Mask) -> Mask:
    """The rows in every mask: a bool array, None or True (every row), False (no row)."""
    out = None
    for mask in masks:
        if mask is False:
            return False
        if mask is not None and mask is not True:
            out = mask if out is None else out & mask
    return out


def _count(mask: Mask, rows: int) -> int:
    if mask is False:
        return 0
    return rows if mask is None or mask is True else int(np.count_nonzero(mask))


@dataclass
class _SourceRows:
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
        return _both(self.in_pool(pool), self.eligible) if self.rows else False

    @property
    def ranks(self) -> np.ndarray:
        return self.key if self.rank is None else self.rank


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


def _fill_row_group(rows: _SourceRows, start: int, group: RowGroup, spec: MixtureSpec,
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
            filtered = frame.select(_filtered_expr(spec)).to_series().to_numpy()
            if filtered.any():
                rows.array("filtered", np.bool_, False)[start:end] = filtered
        if needs.rank:
            rows.array("rank", np.float64)[start:end] = frame.select(
                _rank_expr(spec)).to_series().to_numpy()
    elif needs.rank:
        # Only scraped rows are weighted; every other row has weight 1.
        key = pl.Series(KEY_COL, rows.key[start:end], dtype=pl.UInt64).to_frame()
        rows.array("rank", np.float64)[start:end] = key.select(
            weighted_key(pl.col(KEY_COL), pl.lit(1.0))).to_series().to_numpy()
    if needs.tokens:
        tokens = pl.Series(spec.text_field, text).to_frame().select(needs.token_expr)
        rows.array("tokens", np.int64)[start:end] = tokens.to_series().fill_null(0).to_numpy()


def _read_metadata(loaded: list[LoadedSource], spec: MixtureSpec,
                   schema: dict[str, pl.DataType]) -> list[_SourceRows]:
    """The metadata pass: one read of the needed columns, row group by row group."""
    needs = _Needs(
        generation=spec.strategy in ("replace", "retain"),
        rank=spec.strategy == "reweight",
        tokens=spec.target_tokens is not None,
        filtered=bool(spec.effective_drop_labels) or spec.max_score is not None,
        token_expr=_token_expr(spec) if spec.target_tokens is not None else None,
        schema=schema,
    )
    out: list[_SourceRows] = []
    tasks: list[tuple[_SourceRows, int, Path]] = []
    offset = 0
    for ls in loaded:
        counts = [file_rows(path) for path in ls.files]
        total = sum(counts)
        rows = _SourceRows(ls, offset, total, np.empty(total, dtype=np.uint64),
                           fixed_pool=POOL_CODES[ROLE_POOL[ls.source.role]])
        if needs.generation and ls.source.generation is not None:
            rows.generation = ls.source.generation
        # Without the column (and without a declared generation) every generation is null.
        start = 0
        for path, n in zip(ls.files, counts, strict=True):
            tasks.append((rows, start, path))
            start += n
        out.append(rows)
        offset += total

    def read(task: tuple[_SourceRows, int, Path]) -> None:
        rows, start, path = task
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

    workers = min(len(tasks), os.cpu_count() or 1, 4)
    if workers <= 1:
        for task in tasks:
            read(task)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(read, tasks))
    return out


def _route_rejects(
    frame: pl.LazyFrame, any_bad: bool, spec: MixtureSpec, sink: RejectsWriter
) -> Counter:
    """Fetch the rows the metadata pass marked bad (rare) and write them to the rejects."""
    per_source: Counter = Counter()
    if not any_bad:
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


def _pool_values(sources: list[_SourceRows], pool: str, column: str) -> np.ndarray:
    """``column`` ("ranks" or "tokens") of the eligible rows of ``pool``, in row order.

    Always a new array (the caller may reorder it).
    """
    parts = []
    for rows in sources:
        picked = rows.select(pool)
        if picked is not False:
            values = rows.ranks if column == "ranks" else rows.tokens
            parts.append(values if picked is None or picked is True else values[picked])
    if not parts:
        return np.zeros(0, dtype=np.int64 if column == "tokens" else np.uint64)
    return np.concatenate(parts)


def _pool_count(sources: list[_SourceRows], pool: str) -> int:
    return sum(_count(rows.select(pool), rows.rows) for rows in sources)


def _plan(spec: MixtureSpec, sources: list[_SourceRows], newest: int | None) -> MixturePlan:
    unit = "docs" if spec.target_docs is not None else "tokens"
    target = spec.target_docs if spec.target_docs is not None else spec.target_tokens
    available_docs = {p: _pool_count(sources, p) for p in POOLS}
    available_tokens = (
        {p: int(_pool_values(sources, p, "tokens").sum()) for p in POOLS}
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
        pools[pool] = _select(plan, sources, requested, have)
    return MixturePlan(unit, target, pools, {}, newest)


def _select(plan: PoolPlan, sources: list[_SourceRows], requested: int, have: int) -> PoolPlan:
    if requested == 0:
        return plan
    plan.repeats, remainder = divmod(requested, have) if requested >= have else (0, requested)
    rank = _pool_values(sources, plan.pool, "ranks")
    if plan.unit == "docs":
        plan.threshold = kth_smallest_in_place(rank, remainder)
        plan.take_docs = plan.repeats * have + remainder
        return plan
    tokens = _pool_values(sources, plan.pool, "tokens")
    plan.threshold, n, got = budget_prefix(rank, tokens, remainder)
    plan.take_docs = plan.repeats * plan.available_docs + n
    plan.take_tokens = plan.repeats * have + got
    return plan


def _copies(sources: list[_SourceRows], plan: MixturePlan) -> tuple[list[pl.Series], int]:
    """Row indices written in each copy, and their tokens: copy c holds every pool with more
    than c full repeats, and the rank prefix of each pool whose repeats equal c."""
    copies: list[pl.Series] = []
    tokens = 0
    for copy in range(max((p.repeats for p in plan.pools.values()), default=0) + 1):
        parts = []
        for pool, pool_plan in plan.pools.items():
            if copy < pool_plan.repeats:
                taken = None
            elif copy == pool_plan.repeats and pool_plan.threshold is not None:
                taken = pool_plan.threshold
            else:
                continue
            for rows in sources:
                picked = rows.select(pool)
                if picked is False:
                    continue
                if taken is not None:
                    picked = _both(picked, rows.ranks <= taken)
                index = (np.arange(rows.rows, dtype=np.int64) if picked is None or picked is True
                         else np.flatnonzero(picked))
                parts.append((index + rows.offset).astype(np.uint32))
                if rows.tokens is not None:
                    tokens += int(rows.tokens[index].sum())
        copies.append(
            pl.Series(IDX_COL, np.concatenate(parts), dtype=pl.UInt32) if parts
            else pl.Series(IDX_COL, [], dtype=pl.UInt64)
        )
    return copies, tokens


def _selected(frame: pl.LazyFrame, copies: list[pl.Series],
              copied: tuple[str, ...] = ()) -> pl.LazyFrame:
    """The rows of each copy, tagged with ``mix_copy``.

    The string columns in ``copied`` (read from every file: text and id) are copied right after
    the filter: a filtered string column still refers to the whole decoded row group, so every
    batch in flight would otherwise hold the text of all the rows read for it (most of the
    corpus, per batch, when the mixture is a small share of it). The copy is elementwise, so the
    batches keep their exact chunk layout, on which the shards' bytes depend.
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
    tokens: int | None
    dropped: pl.DataFrame
    per_source: dict[str, dict[str, int]]
    copied: tuple[str, ...] = ()


def _output_frame(prepared: _Prepared) -> pl.LazyFrame:
    drop = (*INTERNAL, IDX_COL, REJECT_COL, FILE_COL, ROW_COL)
    return _selected(prepared.frame, prepared.copies, prepared.copied).drop(drop, strict=False)


def _prepare(spec: MixtureSpec, workdir: Path, sink: RejectsWriter) -> _Prepared:
    names = source_names(spec.sources)
    loaded = [
        load_source(s, n, spec, workdir=workdir, on_reject=sink)
        for s, n in zip(spec.sources, names, strict=True)
    ]
    frame = pl.concat([ls.frame for ls in loaded], how="diagonal_relaxed").with_row_index(IDX_COL)
    schema = dict(frame.collect_schema())
    sources = _read_metadata(loaded, spec, schema)
    pa.default_memory_pool().release_unused()
    rejected = _route_rejects(frame, any(r.bad is not None for r in sources), spec, sink)
    newest = _newest_generation(sources) if spec.strategy in ("replace", "retain") else None
    per_source = _flag_rows(sources, newest)
    _check_unique(sources)
    dropped = pl.DataFrame(schema={IDX_COL: pl.UInt32, "id": pl.String, "source": pl.String})
    if spec.dedup != "none":
        dropped = _dedup(frame, _eligible_index(sources), spec)
        _drop_rows(sources, dropped.get_column(IDX_COL).to_numpy())
    plan = _plan(spec, sources, newest)
    copies, tokens = _copies(sources, plan)
    return _Prepared(frame, plan, loaded, copies,
                     tokens if spec.target_tokens is not None else None, dropped,
                     _per_source(sources, per_source, rejected),
                     tuple(name for name in dict.fromkeys((spec.text_field, spec.id_field))
                           if schema.get(name) == pl.String))


def _valid(rows: _SourceRows) -> np.ndarray | None:
    return None if rows.bad is None else ~rows.bad


def _newest_generation(sources: list[_SourceRows]) -> int | None:
    """The newest generation among the valid synthetic rows (None when none is known)."""
    newest = None
    for rows in sources:
        if rows.generation is None:
            continue
        known = _both(rows.in_pool("synthetic"), _valid(rows), rows.rows > 0)
        if isinstance(rows.generation, int):
            if _count(known, rows.rows) == 0:
                continue
            top = rows.generation
        else:
            known = _both(known, ~rows.generation_null)
            if _count(known, rows.rows) == 0:
                continue
            top = int(rows.generation[known if known is not None else slice(None)].max())
        newest = top if newest is None else max(newest, top)
    return newest


def _flag_rows(sources: list[_SourceRows], newest: int | None) -> dict[str, tuple[int, int]]:
    """Set each source's eligible rows (valid, not filtered, not excluded by the strategy);
    returns the filtered and excluded counts per source (of its valid rows)."""
    counts = {}
    for rows in sources:
        excluded: Mask = False
        if newest is not None and rows.generation is not None:
            stale = (rows.generation != newest if isinstance(rows.generation, int)
                     else ~rows.generation_null & (rows.generation != newest))
            excluded = _both(rows.in_pool("synthetic"), stale)
        if excluded is None or excluded is True:
            excluded = np.ones(rows.rows, dtype=np.bool_)
        valid = _valid(rows)
        filtered = False if rows.filtered is None else rows.filtered
        kept = None if rows.filtered is None else ~rows.filtered
        counts[rows.loaded.name] = (_count(_both(filtered, valid), rows.rows),
                                    _count(_both(excluded, valid, kept), rows.rows))
        rows.eligible = _both(valid, kept, None if excluded is False else ~excluded)
    return counts


def _check_unique(sources: list[_SourceRows]) -> None:
    """Refuse eligible rows that share a ranking key (an id repeated within a source)."""
    repeated = duplicated_keys([(rows.key, rows.eligible) for rows in sources])
    if not repeated.size:
        return
    counts = []
    for rows in sources:
        hit = np.isin(rows.key, repeated)
        if rows.eligible is not None:
            hit &= rows.eligible
        if hit.any():
            counts.append((rows.loaded.name, int(np.count_nonzero(hit))))
    detail = ", ".join(f"{name!s}: {n:,}" for name, n in counts)
    raise InputError(
        f"duplicate ids within a source ({detail} rows share an id); ids must be unique "
        "within a source (tailguard tag rejects duplicates)"
    )


def _eligible_index(sources: list[_SourceRows]) -> pl.DataFrame:
    parts = [
        (np.arange(rows.rows, dtype=np.int64) if rows.eligible is None
         else np.flatnonzero(rows.eligible)) + rows.offset
        for rows in sources
    ]
    index = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return pl.DataFrame({IDX_COL: pl.Series(IDX_COL, index.astype(np.uint32), dtype=pl.UInt32)})


def _drop_rows(sources: list[_SourceRows], index: np.ndarray) -> None:
    """Make the rows at the global ``index`` ineligible (deduplicated away)."""
    for rows in sources:
        local = index[(index >= rows.offset) & (index < rows.offset + rows.rows)] - rows.offset
        if local.size:
            if rows.eligible is None:
                rows.eligible = np.ones(rows.rows, dtype=np.bool_)
            rows.eligible[local.astype(np.int64)] = False


def _per_source(
    sources: list[_SourceRows], flags: dict[str, tuple[int, int]], rejected: Counter
) -> dict[str, dict[str, int]]:
    out = {}
    for rows in sources:
        ls = rows.loaded
        if ls.staged:
            read, bad = ls.counts.read, ls.counts.rejected
        else:
            read, bad = rows.rows, rejected.get(ls.name, 0)
        filtered, excluded = flags.get(ls.name, (0, 0))
        out[ls.name] = {"read": read, "rejected": bad, "filtered": filtered,
                        "excluded_by_strategy": excluded}
    return out


def _compact(batch: pl.DataFrame, skip: tuple[str, ...] = ()) -> pl.DataFrame:
    """Copy the strings of each chunk of ``batch`` out of the row groups they were decoded in.

    A filtered string column still refers to the whole decoded row group, so a shard buffer of
    selected rows would hold the text of every row read. Each chunk is copied on its own, so
    the batch keeps its exact chunk layout (and the shard its exact bytes); columns held as one
    value (a single chunk beside multi-chunk data columns) are left alone, and so are the
    columns in ``skip`` (already copied by the query).
    """
    chunks = batch.n_chunks("all")
    if max(chunks, default=1) < 2:
        return batch
    for position, (name, dtype) in enumerate(batch.schema.items()):
        if chunks[position] < 2 or dtype not in (pl.String, pl.Binary) or name in skip:
            continue
        series = batch.get_column(name)
        copied = [pl.Series(name, chunk.to_arrow(), dtype=dtype) for chunk in series.get_chunks()]
        batch.replace_column(position, pl.concat(copied, rechunk=False))
    return batch


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
            writer.add(_compact(batch, prepared.copied))
            bar.update(batch.height)
    writer.flush()
    documents = sum(by_pool.values())
    achieved = {
        "documents": documents,
        "tokens": prepared.tokens,
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
