"""Deterministic, engine-independent selection: rank by a keyed hash and take the first k.

Sampling with a random number generator makes a mixture depend on row order, batch sizes and the
engine that ran it. Ranking every row by a keyed hash of (seed, source, id) instead gives the same
answer on any engine and any partitioning, with exact counts: the k rows with the smallest keys.

The hash is XXH64 (a published, frozen algorithm) computed over Arrow string buffers in numpy
(:mod:`mixers.xxh64`), so a published mixture does not change when polars is upgraded (polars'
``Expr.hash`` is only stable within one polars version). It equals
``xxhash.xxh64_intdigest(source + "\\x1f" + id, seed)``.

Weighted selection (the ``reweight`` strategy) uses the exponential-race form of
Efraimidis-Spirakis sampling: with u the hash mapped to (0, 1), the row's key is -ln(u) / w, and
the k smallest keys are a weighted sample without replacement.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from mixers.xxh64 import xxh64_arrow

SEPARATOR = "\x1f"
# Smallest weight a weighted key distinguishes; -ln(u) / 1e-300 stays finite for every u.
MIN_WEIGHT = 1e-300


def xxh64_strings(values: pl.Series | pa.Array, seed: int, prefix: str = "") -> np.ndarray:
    """XXH64 of ``prefix`` + every string's UTF-8 bytes with ``seed`` (nulls hash like "").

    Examples
    --------
    >>> import xxhash
    >>> int(xxh64_strings(pl.Series(["abc"]), seed=7)[0]) == xxhash.xxh64_intdigest(b"abc", 7)
    True
    """
    return xxh64_arrow(values.to_arrow() if isinstance(values, pl.Series) else values, seed, prefix)


def xxh64_int_ids(ids: np.ndarray, seeds: np.ndarray, prefix: str = "") -> np.ndarray:
    """:func:`xxh64_strings` of the decimal ids without building strings, one seed per row.

    Numeric experiments keep millions of samples with integer ids in arrays of shape
    (chains, samples); this gives them exactly the keys a ``mixers`` build of the same samples
    (id column = ``str(id)``) would rank by, so both executions select the same rows.

    Examples
    --------
    >>> import xxhash
    >>> keys = xxh64_int_ids(np.array([[0, 1234]]), np.array([7], dtype=np.uint64), "src\x1f")
    >>> int(keys[0, 1]) == xxhash.xxh64_intdigest(b"src\x1f1234", 7)
    True
    """
    from mixers.xxh64_jit import xxh64_decimal_ids  # numba: loaded only for integer ids

    ids = np.ascontiguousarray(np.atleast_2d(ids), dtype=np.int64)
    if ids.size and int(ids.min()) < 0:
        raise ValueError("ids must be non-negative")
    seeds = np.ascontiguousarray(np.broadcast_to(np.asarray(seeds, dtype=np.uint64),
                                                 (ids.shape[0],)))
    out = np.empty(ids.shape, dtype=np.uint64)
    xxh64_decimal_ids(np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8), ids, seeds, out)
    return out


def selection_key(source: str, id_col: str, seed: int) -> pl.Expr:
    """UInt64 ranking key XXH64(seed, source + "\\x1f" + id) as a streaming-friendly expression.

    The source prefix is hashed inside the kernel, so no concatenated strings are built.
    """
    prefix = source + SEPARATOR
    return pl.col(id_col).cast(pl.String).map_batches(
        lambda s: pl.Series(s.name, xxh64_strings(s, seed, prefix), dtype=pl.UInt64),
        return_dtype=pl.UInt64,
        is_elementwise=True,
    )


def key_uniform(keys: np.ndarray) -> np.ndarray:
    """Map uint64 keys to (0, 1) by their top 53 bits: the ``u`` of :func:`weighted_key`.

    The numpy twin of the expression inside :func:`weighted_key`, for code that holds keys as
    arrays (tensor mixtures, keyed taggers).
    """
    return ((keys >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)


def weighted_key(key: pl.Expr, weight: pl.Expr) -> pl.Expr:
    """Efraimidis-Spirakis key -ln(u)/w: the k smallest are a weighted sample without replacement.

    ``u`` is the top 53 bits of the hash mapped into (0, 1). Weights below ``MIN_WEIGHT`` (a weight
    of 0 included) count as ``MIN_WEIGHT``: such rows are drawn last, in a random order among
    themselves, and their keys stay finite and distinct — with +inf keys a threshold of +inf would
    take every zero-weight row instead of exactly the ones needed.
    """
    u = ((key // 2048).cast(pl.Float64) + 0.5) / float(2**53)
    return -(u.log()) / pl.max_horizontal(weight.fill_nan(0.0), pl.lit(MIN_WEIGHT))


def kth_smallest(values: np.ndarray, k: int) -> float | int | None:
    """The k-th smallest value (1-based), or None for k == 0."""
    if k <= 0:
        return None
    if k > values.size:
        raise ValueError(f"k={k} exceeds the {values.size} values")
    return np.partition(values, k - 1)[k - 1].item()


def budget_prefix(keys: np.ndarray, tokens: np.ndarray, budget: int) -> tuple[float | int | None,
                                                                                int, int]:
    """Threshold key for the longest rank-ordered prefix whose token sum stays within ``budget``.

    Returns (threshold key, documents taken, tokens taken). Stopping before the document that
    would overshoot meets the budget to within one document.
    """
    if budget <= 0 or keys.size == 0:
        return None, 0, 0
    order = np.argsort(keys, kind="stable")
    cumulative = np.cumsum(tokens[order])
    n = int(np.searchsorted(cumulative, budget, side="right"))
    if n == 0:
        return None, 0, 0
    return keys[order[n - 1]].item(), n, int(cumulative[n - 1])


def kth_smallest_of(parts: list[tuple[np.ndarray, np.ndarray | bool | None]], k: int) -> int | None:
    """The k-th smallest (1-based) of the uint64 values in ``parts`` (each (values, mask): only
    the values where the mask is True count; None or True: all), without gathering them.

    A radix select: a histogram of the top 16 bits (chunk by chunk) finds the bucket that holds
    the k-th value, and only that bucket's values (about n / 65,536 for hash keys) are gathered
    and partitioned. Memory stays a few MB however many values there are; the answer is that of
    :func:`kth_smallest` on the gathered values.

    Examples
    --------
    >>> values = np.array([50, 3, 2**63, 7, 9], dtype=np.uint64)
    >>> kth_smallest_of([(values, None)], 2), kth_smallest_of([(values, values != 3)], 2)
    (7, 9)
    """
    if k <= 0:
        return None
    shift = np.uint64(48)
    counts = np.zeros(1 << 16, dtype=np.int64)
    for chunk in _chunks(parts):
        counts += np.bincount((chunk >> shift).astype(np.uint16), minlength=1 << 16)
    total = int(counts.sum())
    if k > total:
        raise ValueError(f"k={k} exceeds the {total} values")
    below = np.cumsum(counts)
    bucket = int(np.searchsorted(below, k))
    rest = k - (int(below[bucket - 1]) if bucket else 0)
    inside = [chunk[(chunk >> shift) == np.uint64(bucket)] for chunk in _chunks(parts)]
    return kth_smallest_in_place(np.concatenate(inside), rest)


def _chunks(parts: list[tuple[np.ndarray, np.ndarray | bool | None]],
            size: int = 1 << 20) -> Iterator[np.ndarray]:
    """The chosen values of ``parts``, a bounded chunk at a time."""
    for values, mask in parts:
        if mask is False:
            continue
        for start in range(0, values.size, size):
            chunk = values[start : start + size]
            yield chunk if mask is None or mask is True else chunk[mask[start : start + size]]


def kth_smallest_in_place(values: np.ndarray, k: int) -> float | int | None:
    """:func:`kth_smallest` without a copy: ``values`` is left partially reordered.

    Examples
    --------
    >>> kth_smallest_in_place(np.array([5, 1, 4, 2], dtype=np.uint64), 2)
    2
    """
    if k <= 0:
        return None
    if k > values.size:
        raise ValueError(f"k={k} exceeds the {values.size} values")
    values.partition(k - 1)
    return values[k - 1].item()


def duplicated_keys(parts: list[tuple[np.ndarray, np.ndarray | None]],
                    block: int = 1 << 21) -> np.ndarray:
    """The key values that occur more than once across ``parts`` (sorted, usually empty).

    Each part is (keys, eligible): only keys where ``eligible`` is True count (None: all). The
    keys are split by their top bits into blocks of about ``block`` keys (equal keys share a
    block) and each block's distinct values are counted (polars, in parallel): memory is a
    block's worth, not a copy of every key; only when some key repeats are the repeats
    collected.

    Examples
    --------
    >>> keys = np.array([7, 3, 9, 3], dtype=np.uint64)
    >>> duplicated_keys([(keys, None)]).tolist()
    [3]
    >>> duplicated_keys([(keys, np.array([True, True, True, False]))]).tolist()
    []
    >>> duplicated_keys([(keys, None)], block=1).tolist()
    [3]
    """
    total = sum(k.size if m is None else int(np.count_nonzero(m)) for k, m in parts)
    if total < 2:
        return np.zeros(0, dtype=np.uint64)
    bits = min(8, max(0, math.ceil(math.log2(total / block)))) if total > block else 0
    if bits:
        # Each chunk's block numbers once (one byte a key), then one compare a block.
        # Views of the keys, never copies: a mask is applied per block.
        shift, size = np.uint64(64 - bits), 1 << 20
        chunks = [(values[i : i + size], (values[i : i + size] >> shift).astype(np.uint8),
                   None if mask is None or mask is True else mask[i : i + size])
                  for values, mask in parts if mask is not False
                  for i in range(0, values.size, size)]
    repeated = []
    for top in range(1 << bits):
        if bits:
            chosen = np.concatenate([c[b == top if m is None else (b == top) & m]
                                     for c, b, m in chunks])
        else:
            chosen = np.concatenate(list(_chunks(parts)))
        series = pl.Series(chosen)
        if series.n_unique() != series.len():
            repeated.append(series.filter(series.is_duplicated()).to_numpy())
    return np.unique(np.concatenate(repeated)) if repeated else np.zeros(0, dtype=np.uint64)
