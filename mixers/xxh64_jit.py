"""The numba XXH64 kernel for integer ids, loaded only by the numeric experiments that use it.

Numeric experiments rank millions of samples with integer ids per generation
(:func:`mixers.sampling.xxh64_int_ids`); writing each id's decimal digits straight into the
hash is several times faster than building strings. Loading numba costs a process about 0.4 s
and 115 MB, so this module is imported only when integer ids are hashed: mixing text
(:mod:`mixers.xxh64`) never loads it.
"""

from __future__ import annotations

import numba
import numpy as np

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
def xxh64_decimal_ids(prefix, ids, seeds, out):
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
