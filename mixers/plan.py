"""The plan of a mixture: from the metadata of every row to the rows of every copy.

The planning step of a build (:mod:`mixers.build`), the same on every engine: it sees only the
per-row metadata of each source (:class:`~mixers.metadata.SourceRows`, a few numbers a row),
whether one process computed it (:func:`~mixers.metadata.read_metadata`) or many
(:func:`~mixers.metadata.file_metadata`, :func:`~mixers.metadata.join_files`).
:func:`plan_mixture` applies the strategy's exclusions, refuses repeated ids, drops the rows
deduplication finds, then fixes each pool's exact amount (:func:`split_target`) and threshold
(the k-th smallest ranking key, or the token-budget prefix); the rows under the thresholds are
the mixture (:attr:`Selection.copies`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from mixers.metadata import GENERATION_STRATEGIES, Mask, SourceRows, both, rows_in
from mixers.sampling import (
    budget_prefix,
    duplicated_keys,
    kth_smallest_in_place,
    kth_smallest_of,
)
from mixers.sources import IDX_COL, KEY_COL, POOL_COL, POOLS, SOURCE_COL
from mixers.spec import MixtureSpec
from provenance.errors import ConfigError, InputError
from provenance.schema import PROV_LABEL


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


# -- planning ------------------------------------------------------------------------------------


@dataclass
class Selection:
    """What :func:`plan_mixture` decided.

    ``copies[c][s]`` are the rows (numbers within source ``s``, ascending) that copy ``c`` of
    the mixture holds; ``tokens`` is their token count (token targets only); ``dropped`` the
    rows deduplication drops (:data:`~mixers.dedup.DROPPED_SCHEMA` and the global row index
    ``_idx``); ``flags`` the filtered and excluded counts of each source's valid rows.
    """

    plan: MixturePlan
    copies: list[list[np.ndarray]]
    tokens: int | None
    dropped: pl.DataFrame
    flags: dict[str, tuple[int, int]]


def plan_mixture(
    spec: MixtureSpec,
    sources: list[SourceRows],
    *,
    dedup_docs: Callable[[list[SourceRows]], pl.DataFrame],
) -> Selection:
    """Plan the mixture ``spec`` describes from the metadata of every source's rows.

    Sets each source's ``eligible`` rows (valid, not filtered, not excluded by the strategy,
    not deduplicated away), then plans each pool and lists the rows of every copy. Raises
    :class:`~provenance.errors.InputError` for ids repeated within a source and
    :class:`~provenance.errors.ConfigError` for a pool too small for its share.

    ``dedup_docs`` (called only when ``spec.dedup`` is not ``"none"``) returns the eligible
    rows of ``sources`` with the columns :func:`dedup_columns` selects and their global row
    index ``_idx``, in row order: the texts are the engine's to read, not in the metadata.
    """
    newest = (_newest_generation(sources) if spec.strategy in GENERATION_STRATEGIES
              else None)
    flags = _flag_rows(sources, newest)
    _check_unique(sources)
    dropped = pl.DataFrame(schema={IDX_COL: pl.UInt32, "id": pl.String, "source": pl.String})
    if spec.dedup != "none":
        dropped = _deduplicate(dedup_docs(sources), spec)
        _drop_rows(sources, dropped.get_column(IDX_COL).to_numpy())
    plan = _plan(spec, sources, newest)
    copies, tokens = _copies(sources, plan)
    return Selection(plan, copies, tokens if spec.target_tokens is not None else None,
                     dropped, flags)


def source_counts(sources: list[SourceRows], flags: dict[str, tuple[int, int]],
                  rejected: Counter) -> dict[str, dict[str, int]]:
    """The manifest's counts of each source: rows read, rejected (``rejected``: the metadata
    pass's bad rows by source; staged sources count their own), filtered and excluded."""
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


def dedup_columns(spec: MixtureSpec) -> list[pl.Expr]:
    """What deduplication compares, from the columns of the sources' frames."""
    return [
        pl.col(KEY_COL).alias("key"),
        pl.col(spec.id_field).alias("id"),
        pl.col(SOURCE_COL).alias("source"),
        pl.col(POOL_COL).cast(pl.String).alias("pool"),
        pl.col(PROV_LABEL).alias("label"),
        pl.col(spec.text_field).alias("text"),
    ]


def _deduplicate(docs: pl.DataFrame, spec: MixtureSpec) -> pl.DataFrame:
    """The rows of ``docs`` deduplication drops, with their global row index."""
    from mixers.dedup import find_duplicates  # MinHash (numba): loaded only to deduplicate

    dropped = find_duplicates(docs.drop(IDX_COL), near=spec.dedup == "near",
                              threshold=spec.dedup_threshold)
    return dropped.join(
        docs.select(pl.col(IDX_COL), pl.col("id"), pl.col("source")), on=["id", "source"]
    )


# -- the steps -----------------------------------------------------------------------------------


def _valid(rows: SourceRows) -> np.ndarray | None:
    return None if rows.bad is None else ~rows.bad


def _newest_generation(sources: list[SourceRows]) -> int | None:
    """The newest generation among the valid synthetic rows (None when none is known)."""
    newest = None
    for rows in sources:
        if rows.generation is None:
            continue
        known = both(rows.in_pool("synthetic"), _valid(rows), rows.rows > 0)
        if isinstance(rows.generation, int):
            if rows_in(known, rows.rows) == 0:
                continue
            top = rows.generation
        else:
            known = both(known, ~rows.generation_null)
            if rows_in(known, rows.rows) == 0:
                continue
            top = int(rows.generation[known if known is not None else slice(None)].max())
        newest = top if newest is None else max(newest, top)
    return newest


def _flag_rows(sources: list[SourceRows], newest: int | None) -> dict[str, tuple[int, int]]:
    """Set each source's eligible rows (valid, not filtered, not excluded by the strategy);
    returns the filtered and excluded counts per source (of its valid rows)."""
    counts = {}
    for rows in sources:
        excluded: Mask = False
        if newest is not None and rows.generation is not None:
            stale = (rows.generation != newest if isinstance(rows.generation, int)
                     else ~rows.generation_null & (rows.generation != newest))
            excluded = both(rows.in_pool("synthetic"), stale)
        if excluded is None or excluded is True:
            excluded = np.ones(rows.rows, dtype=np.bool_)
        valid = _valid(rows)
        filtered = False if rows.filtered is None else rows.filtered
        kept = None if rows.filtered is None else ~rows.filtered
        counts[rows.loaded.name] = (rows_in(both(filtered, valid), rows.rows),
                                    rows_in(both(excluded, valid, kept), rows.rows))
        rows.eligible = both(valid, kept, None if excluded is False else ~excluded)
    return counts


def _check_unique(sources: list[SourceRows]) -> None:
    """Refuse eligible rows that share a ranking key (an id repeated within a source).

    Keys hash the source's name with the id, so only rows of one source can share one; checking
    source by source keeps the check's memory to the largest source.
    """
    counts = []
    for rows in sources:
        repeated = duplicated_keys([(rows.key, rows.eligible)])
        if not repeated.size:
            continue
        hit = np.isin(rows.key, repeated)
        if rows.eligible is not None:
            hit &= rows.eligible
        counts.append((rows.loaded.name, int(np.count_nonzero(hit))))
    if not counts:
        return
    detail = ", ".join(f"{name!s}: {n:,}" for name, n in counts)
    raise InputError(
        f"duplicate ids within a source ({detail} rows share an id); ids must be unique "
        "within a source (tailguard tag rejects duplicates)"
    )


def _drop_rows(sources: list[SourceRows], index: np.ndarray) -> None:
    """Make the rows at the global ``index`` ineligible (deduplicated away)."""
    for rows in sources:
        local = index[(index >= rows.offset) & (index < rows.offset + rows.rows)] - rows.offset
        if local.size:
            if rows.eligible is None:
                rows.eligible = np.ones(rows.rows, dtype=np.bool_)
            rows.eligible[local.astype(np.int64)] = False


def _pool_values(sources: list[SourceRows], pool: str, column: str) -> np.ndarray:
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


def _pool_count(sources: list[SourceRows], pool: str) -> int:
    return sum(rows_in(rows.select(pool), rows.rows) for rows in sources)


def _plan(spec: MixtureSpec, sources: list[SourceRows], newest: int | None) -> MixturePlan:
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


def _select(plan: PoolPlan, sources: list[SourceRows], requested: int, have: int) -> PoolPlan:
    if requested == 0:
        return plan
    plan.repeats, remainder = divmod(requested, have) if requested >= have else (0, requested)
    if plan.unit == "docs":
        if all(rows.rank is None for rows in sources):
            # Hash keys: a radix select, without a copy of the pool's keys.
            parts = [(rows.key, rows.select(plan.pool)) for rows in sources]
            plan.threshold = kth_smallest_of(parts, remainder)
        else:
            plan.threshold = kth_smallest_in_place(_pool_values(sources, plan.pool, "ranks"),
                                                   remainder)
        plan.take_docs = plan.repeats * have + remainder
        return plan
    rank = _pool_values(sources, plan.pool, "ranks")
    tokens = _pool_values(sources, plan.pool, "tokens")
    plan.threshold, n, got = budget_prefix(rank, tokens, remainder)
    plan.take_docs = plan.repeats * plan.available_docs + n
    plan.take_tokens = plan.repeats * have + got
    return plan


def _either(a: Mask, b: Mask) -> Mask:
    """The rows in either mask (None or True: every row, False: no row)."""
    if a is None or a is True or b is None or b is True:
        return None
    if a is False:
        return b
    return a if b is False else a | b


def _copies(sources: list[SourceRows], plan: MixturePlan) -> tuple[list[list[np.ndarray]], int]:
    """The rows of each source written in each copy, ascending, and their tokens: copy c holds
    every pool with more than c full repeats, and the rank prefix of each pool whose repeats
    equal c."""
    copies: list[list[np.ndarray]] = []
    tokens = 0
    for copy in range(max((p.repeats for p in plan.pools.values()), default=0) + 1):
        per_source = []
        for rows in sources:
            taken: Mask = False
            for pool, pool_plan in plan.pools.items():
                if copy < pool_plan.repeats:
                    threshold = None
                elif copy == pool_plan.repeats and pool_plan.threshold is not None:
                    threshold = pool_plan.threshold
                else:
                    continue
                picked = rows.select(pool)
                if picked is not False and threshold is not None:
                    picked = both(picked, rows.ranks <= threshold)
                taken = _either(taken, picked)
            if taken is False:
                index = np.zeros(0, dtype=np.int64)
            elif taken is None or taken is True:
                index = np.arange(rows.rows, dtype=np.int64)
            else:
                index = np.flatnonzero(taken)
            if rows.tokens is not None:
                tokens += int(rows.tokens[index].sum())
            per_source.append(index)
        copies.append(per_source)
    return copies, tokens
