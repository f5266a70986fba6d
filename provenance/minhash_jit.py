"""The numba kernels behind :class:`provenance.minhash.MinHasher`: SHA-1, xxh32 and the min-hash.

Kept apart from :mod:`provenance.minhash` because importing numba costs about half a second, and
everything that only normalises text (the ledger's records, the CLI's ``--help``) must not pay
it: :meth:`MinHasher.signatures` imports this module on its first call.

Every function hashes exactly what :func:`provenance.minhash.shingles` yields and is tested
against ``hashlib``, ``xxhash`` and datasketch in ``tests/provenance/test_minhash.py``.
"""

from __future__ import annotations

import numba
import numpy as np

_SPACE = 0x20  # ord(' '): the byte words are joined by
#: The Mersenne prime 2**61 - 1 of datasketch's ``legacy`` scheme.
_MERSENNE61 = np.uint64((1 << 61) - 1)
_MAX32 = np.uint32(0xFFFFFFFF)
_U61 = np.uint64(61)
_LOW32 = np.uint64(0xFFFFFFFF)

# Integer arithmetic in numba widens uint32 to 64 bits, so every 32-bit result is cut back
# with np.uint32(...): LLVM then emits plain 32-bit (wrapping) instructions.


@numba.njit(cache=True, inline="always")
def _rotl32(x, n):
    return np.uint32((x << n) | (x >> (32 - n)))


@numba.njit(cache=True, inline="always")
def _be32(buf, p):
    return np.uint32((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3])


@numba.njit(cache=True, inline="always")
def _le32(buf, p):
    return np.uint32(buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16) | (buf[p + 3] << 24))


@numba.njit(cache=True)
def _sha1_load_block(buf, base, end, w):
    """Big-endian words of the 64-byte block at ``base``, with SHA-1's 0x80 padding byte."""
    for t in range(16):
        p = base + 4 * t
        if p + 4 <= end:
            w[t] = _be32(buf, p)
        elif p > end:
            w[t] = 0
        else:
            v = 0
            for q in range(p, p + 4):
                byte = buf[q] if q < end else (0x80 if q == end else 0)
                v = (v << 8) | byte
            w[t] = np.uint32(v)


@numba.njit(cache=True, inline="always")
def _sha1_step(a, b, c, d, e, f, k, wt):
    """One SHA-1 round: the new (a, b, c, d, e) for round function value ``f``, constant ``k``."""
    return np.uint32(_rotl32(a, 5) + f + e + k + wt), a, _rotl32(b, 30), c, d


@numba.njit(cache=True)
def sha1_32(buf, start, end, w):
    """``struct.unpack('<I', hashlib.sha1(buf[start:end]).digest()[:4])[0]``; ``w``: uint32[80]."""
    length = end - start
    h0, h1, h2 = np.uint32(0x67452301), np.uint32(0xEFCDAB89), np.uint32(0x98BADCFE)
    h3, h4 = np.uint32(0x10325476), np.uint32(0xC3D2E1F0)
    nblocks = (length + 8) // 64 + 1
    for blk in range(nblocks):
        _sha1_load_block(buf, start + 64 * blk, end, w)
        if blk == nblocks - 1:
            w[14] = np.uint32((length * 8) >> 32)
            w[15] = np.uint32(length * 8)
        for t in range(16, 80):
            w[t] = _rotl32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        a, b, c, d, e = h0, h1, h2, h3, h4
        for t in range(20):
            a, b, c, d, e = _sha1_step(a, b, c, d, e, d ^ (b & (c ^ d)), 0x5A827999, w[t])
        for t in range(20, 40):
            a, b, c, d, e = _sha1_step(a, b, c, d, e, b ^ c ^ d, 0x6ED9EBA1, w[t])
        for t in range(40, 60):
            a, b, c, d, e = _sha1_step(a, b, c, d, e, (b & c) | (d & (b | c)), 0x8F1BBCDC, w[t])
        for t in range(60, 80):
            a, b, c, d, e = _sha1_step(a, b, c, d, e, b ^ c ^ d, 0xCA62C1D6, w[t])
        h0, h1, h2 = np.uint32(h0 + a), np.uint32(h1 + b), np.uint32(h2 + c)
        h3, h4 = np.uint32(h3 + d), np.uint32(h4 + e)
    # digest[:4] is h0 big-endian; datasketch reads it little-endian.
    return np.uint32(((h0 & 0xFF) << 24) | ((h0 & 0xFF00) << 8) | ((h0 >> 8) & 0xFF00) | (h0 >> 24))


@numba.njit(cache=True)
def xxh32(buf, start, end):
    """``xxhash.xxh32_intdigest(buf[start:end])`` (seed 0)."""
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    length = end - start
    p = start
    if length >= 16:
        v1, v2, v3, v4 = np.uint32(p1 + p2), np.uint32(p2), np.uint32(0), np.uint32(-p1)
        while p + 16 <= end:
            v1 = np.uint32(_rotl32(np.uint32(v1 + _le32(buf, p) * p2), 13) * p1)
            v2 = np.uint32(_rotl32(np.uint32(v2 + _le32(buf, p + 4) * p2), 13) * p1)
            v3 = np.uint32(_rotl32(np.uint32(v3 + _le32(buf, p + 8) * p2), 13) * p1)
            v4 = np.uint32(_rotl32(np.uint32(v4 + _le32(buf, p + 12) * p2), 13) * p1)
            p += 16
        h = np.uint32(_rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18))
    else:
        h = np.uint32(p5)
    h = np.uint32(h + length)
    while p + 4 <= end:
        h = np.uint32(_rotl32(np.uint32(h + _le32(buf, p) * p3), 17) * p4)
        p += 4
    while p < end:
        h = np.uint32(_rotl32(np.uint32(h + buf[p] * p5), 11) * p1)
        p += 1
    h = np.uint32((h ^ (h >> 15)) * p2)
    h = np.uint32((h ^ (h >> 13)) * p3)
    return np.uint32(h ^ (h >> 16))


@numba.njit(cache=True)
def _shingle_hashes(buf, start, end, ngram, hash_kind, text, word_starts, w, out):
    """Hash every word n-gram of the document ``buf[start:end]`` into ``out``; return the count.

    The document is first copied to ``text`` with runs of spaces collapsed and outer spaces
    dropped (the last step of :func:`normalize`). Then there is exactly one space between words,
    so an n-gram is the contiguous slice from the start of its first word to the end of its last.
    """
    m = 0
    n_words = 0
    in_word = False
    for i in range(start, end):
        c = buf[i]
        if c == _SPACE:
            in_word = False
            continue
        if not in_word:
            if n_words > 0:
                text[m] = _SPACE
                m += 1
            word_starts[n_words] = m
            n_words += 1
            in_word = True
        text[m] = c
        m += 1
    if n_words == 0:
        return 0
    word_starts[n_words] = m + 1  # so that word j always ends at word_starts[j + 1] - 1
    span = min(ngram, n_words)
    count = n_words - span + 1
    for i in range(count):
        lo, hi = word_starts[i], word_starts[i + span] - 1
        out[i] = sha1_32(text, lo, hi, w) if hash_kind == 0 else xxh32(text, lo, hi)
    return count


@numba.njit(cache=True, inline="always")
def _fmix32(h):
    h = np.uint32((h ^ (h >> 16)) * 0x85EBCA6B)
    h = np.uint32((h ^ (h >> 13)) * 0xC2B2AE35)
    return np.uint32(h ^ (h >> 16))


@numba.njit(cache=True)
def _scratch(offsets):
    """Work arrays for the longest document (a word takes at least one byte and a space)."""
    longest = 0
    for d in range(offsets.size - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    max_words = (longest + 1) // 2
    text = np.empty(longest, dtype=np.uint8)
    word_starts = np.empty(max_words + 1, dtype=np.int64)
    hashes = np.empty(max(max_words, 1), dtype=np.uint32)
    return text, word_starts, hashes, np.empty(80, dtype=np.uint32)


@numba.njit(cache=True, inline="always")
def _min_affine32(row, hashes, n, a, b):
    """datasketch 2.x ``affine32``: ``a * fmix32(h) + b mod 2**32``, min over shingles."""
    row[:] = _MAX32
    for j in range(n):
        h = _fmix32(hashes[j])
        for k in range(a.size):
            v = np.uint32(a[k] * h + b[k])
            row[k] = min(row[k], v)


@numba.njit(cache=True, inline="always")
def _min_legacy(row, hashes, n, a, b):
    """datasketch < 2.0: ``(a * h + b mod 2**64) mod (2**61 - 1)``, low 32 bits, min."""
    row[:] = np.uint64(_MAX32)
    for j in range(n):
        h = np.uint64(hashes[j])
        for k in range(a.size):
            x = a[k] * h + b[k]
            x = (x & _MERSENNE61) + (x >> _U61)  # x mod 2**61 - 1, up to one subtraction
            if x >= _MERSENNE61:
                x -= _MERSENNE61
            row[k] = min(row[k], x & _LOW32)


@numba.njit(cache=True, nogil=True)
def signatures(buf, offsets, ngram, hash_kind, a, b, out, legacy):
    """Every document's signature into ``out``: its shingles' hashes under each permutation
    ``(a, b)``, min-reduced; ``legacy`` picks datasketch's scheme (uint64 ``a``, ``b``, ``out``)
    over ``affine32`` (uint32)."""
    text, word_starts, hashes, w = _scratch(offsets)
    for d in range(offsets.size - 1):
        n = _shingle_hashes(
            buf, offsets[d], offsets[d + 1], ngram, hash_kind, text, word_starts, w, hashes
        )
        if legacy:
            _min_legacy(out[d], hashes, n, a, b)
        else:
            _min_affine32(out[d], hashes, n, a, b)
