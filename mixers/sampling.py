"""Deterministic, engine-independent selection: rank by a keyed hash and take the first k.

Sampling with a random number generator makes a mixture depend on row order, batch sizes and the
engine that ran it. Ranking every row by a keyed hash of (seed, source, id) instead gives the same
answer on any engine and any partitioning, with exact counts: the k rows with the smallest keys.

The hash is XXH64 (a published, frozen algorithm) computed by a small numba kernel over Arrow
string buffers, so a published mixture does not change when polars is upgraded (polars'
``Expr.hash`` is only stable within one polars version). It equals
``xxhash.xxh64_intdigest(source + "\\x1f" + id, seed)``.

Weighted selection (the ``reweight`` strategy) uses the exponential-race form of
Efraimidis-Spirakis sampling: with u the hash mapped to (0, 1), the row's key is -ln(u) / w, and
the k smallest keys are a weighted sample without replacement.
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl
import pyarrow as pa

SEPARATOR = "\x1f"
# Smallest weight a weighted key distinguishes; -ln(u) / 1e-300 stays finite for every u.
MIN_WEIGHT = 1e-300

# The five primes of the XXH64 specification.
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)


@numba.njit(cache=True, inline="always")
def _rotl64(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit(cache=True, inline="always")
def _read_le(buf, p, nbytes):
    """Little-endian unsigned integer of ``nbytes`` bytes at ``buf[p]``."""
    v = np.uint64(0)
    for i in range(nbytes):
        v |= np.uint64(buf[p + i]) << np.uint64(8 * i)
    return v


@numba.njit(cache=True, inline="always")
def _round(acc, lane):
    acc = acc + lane * _P2
    acc = _rotl64(acc, 31)
    return acc * _P1


@numba.njit(cache=True, inline="always")
def _merge(acc, val):
    acc ^= _round(np.uint64(0), val)
    return acc * _P1 + _P4


@numba.njit(cache=True)
def _xxh64(buf, start, end, seed):
    p = start
    length = end - start
    if length >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        limit = end - 32
        while p <= limit:
            v1 = _round(v1, _read_le(buf, p, 8))
            v2 = _round(v2, _read_le(buf, p + 8, 8))
            v3 = _round(v3, _read_le(buf, p + 16, 8))
            v4 = _round(v4, _read_le(buf, p + 24, 8))
            p += 32
        h = _rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + _P5
    h += np.uint64(length)
    while p + 8 <= end:
        h ^= _round(np.uint64(0), _read_le(buf, p, 8))
        h = _rotl64(h, 27) * _P1 + _P4
        p += 8
    if p + 4 <= end:
        h ^= _read_le(buf, p, 4) * _P1
        h = _rotl64(h, 23) * _P2 + _P3
        p += 4
    while p < end:
        h ^= np.uint64(buf[p]) * _P5
        h = _rotl64(h, 11) * _P1
        p += 1
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@numba.njit(cache=True, nogil=True)
def _xxh64_many(buf, offsets, seed, out):
    for i in range(offsets.size - 1):
        out[i] = _xxh64(buf, offsets[i], offsets[i + 1], seed)


@numba.njit(cache=True, nogil=True)
def _xxh64_prefixed(prefix, buf, offsets, seed, out):
    """XXH64(prefix + string) without materialising the concatenated strings."""
    longest = 0
    for i in range(offsets.size - 1):
        longest = max(longest, offsets[i + 1] - offsets[i])
    scratch = np.empty(prefix.size + longest, dtype=np.uint8)
    scratch[: prefix.size] = prefix
    for i in range(offsets.size - 1):
        n = offsets[i + 1] - offsets[i]
        scratch[prefix.size : prefix.size + n] = buf[offsets[i] : offsets[i + 1]]
        out[i] = _xxh64(scratch, 0, prefix.size + n, seed)


def xxh64_strings(values: pl.Series | pa.Array, seed: int, prefix: str = "") -> np.ndarray:
    """XXH64 of ``prefix`` + every string's UTF-8 bytes with ``seed`` (nulls hash like "").

    Examples
    --------
    >>> import xxhash
    >>> int(xxh64_strings(pl.Series(["abc"]), seed=7)[0]) == xxhash.xxh64_intdigest(b"abc", 7)
    True
    """
    arr = values.to_arrow() if isinstance(values, pl.Series) else values
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = arr.fill_null("")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)
        if data_buf is not None
        else np.zeros(0, dtype=np.uint8)
    )
    out = np.empty(len(arr), dtype=np.uint64)
    offsets = np.ascontiguousarray(offsets)
    if prefix:
        head = np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8)
        _xxh64_prefixed(head, data, offsets, np.uint64(seed), out)
    else:
        _xxh64_many(data, offsets, np.uint64(seed), out)
    return out


@numba.njit(cache=True, nogil=True)
def _xxh64_decimal_ids(prefix, ids, seeds, out):
    """XXH64(prefix + decimal string of id) with one seed per row, for integer-id samples."""
    scratch = np.empty(prefix.size + 20, dtype=np.uint8)
    scratch[: prefix.size] = prefix
    digits = np.empty(20, dtype=np.uint8)
    for row in range(ids.shape[0]):
        seed = seeds[row]
        for col in range(ids.shape[1]):
            value = ids[row, col]
            n = 0
            while True:
                digits[n] = 48 + value % 10
                value //= 10
                n += 1
                if value == 0:
                    break
            for j in range(n):
                scratch[prefix.size + j] = digits[n - 1 - j]
            out[row, col] = _xxh64(scratch, 0, prefix.size + n, seed)


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
    ids = np.ascontiguousarray(np.atleast_2d(ids), dtype=np.int64)
    if ids.size and int(ids.min()) < 0:
        raise ValueError("ids must be non-negative")
    seeds = np.ascontiguousarray(np.broadcast_to(np.asarray(seeds, dtype=np.uint64),
                                                 (ids.shape[0],)))
    out = np.empty(ids.shape, dtype=np.uint64)
    _xxh64_decimal_ids(np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8), ids, seeds, out)
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


@numba.njit(cache=True, nogil=True)
def _mark_repeats(keys, eligible, seen, twice, mask):
    """Set a bit per key (its low bits) in ``seen``, and in ``twice`` where one was already set."""
    check = eligible.size > 0
    for i in range(keys.size):
        if check and not eligible[i]:
            continue
        b = keys[i] & mask
        byte = b >> np.uint64(3)
        bit = np.uint8(1) << np.uint8(b & np.uint64(7))
        if seen[byte] & bit:
            twice[byte] |= bit
        else:
            seen[byte] |= bit


@numba.njit(cache=True, nogil=True)
def _gather_repeats(keys, eligible, twice, mask, out, n):
    """Append the keys whose bit is set in ``twice`` to ``out`` (from position n); new n."""
    check = eligible.size > 0
    for i in range(keys.size):
        if check and not eligible[i]:
            continue
        b = keys[i] & mask
        if twice[b >> np.uint64(3)] & (np.uint8(1) << np.uint8(b & np.uint64(7))):
            if n < out.size:
                out[n] = keys[i]
            n += 1
    return n


def duplicated_keys(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """The key values that occur more than once across ``parts`` (sorted, usually empty).

    Each part is (keys, eligible): only keys where ``eligible`` is True count (None: all). Keys
    are hashes, so a bitmap of their low bits finds the few candidates (bits hit twice) in two
    passes, and only those are sorted: linear time, memory a few bits per key.

    Examples
    --------
    >>> keys = np.array([7, 3, 9, 3], dtype=np.uint64)
    >>> duplicated_keys([(keys, None)]).tolist()
    [3]
    >>> duplicated_keys([(keys, np.array([True, True, True, False]))]).tolist()
    []
    """
    total = sum(k.size if m is None else int(np.count_nonzero(m)) for k, m in parts)
    if total < 2:
        return np.zeros(0, dtype=np.uint64)
    bits = min(27, max(10, (total - 1).bit_length() + 3))
    mask = np.uint64((1 << bits) - 1)
    seen = np.zeros(1 << (bits - 3), dtype=np.uint8)
    twice = np.zeros(1 << (bits - 3), dtype=np.uint8)
    everything = np.zeros(0, dtype=np.bool_)
    for keys, eligible in parts:
        _mark_repeats(keys, everything if eligible is None else eligible, seen, twice, mask)
    del seen
    # About total**2 / 2**bits keys share a bit by chance; room for twice that, else recount.
    out = np.empty(2 * total * total // (1 << bits) + 1024, dtype=np.uint64)
    for _ in range(2):
        n = 0
        for keys, eligible in parts:
            n = _gather_repeats(keys, everything if eligible is None else eligible, twice, mask,
                                out, n)
        if n <= out.size:
            break
        out = np.empty(n, dtype=np.uint64)
    candidates = np.sort(out[:n])
    repeated = candidates[1:][candidates[1:] == candidates[:-1]]
    return np.unique(repeated)
