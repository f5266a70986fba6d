"""XXH64 of Arrow strings in plain numpy: the mixer's ranking hash, without a JIT.

The mixer ranks every document by XXH64(seed, source + "\\x1f" + id). A numba kernel does that at
about 25 ns a row, but loading numba and its compiled code costs every process about 0.4 s and
115 MB of memory before the first row, more than hashing ten million ids takes. This module
computes the same hash with whole-array numpy operations at about the same speed (30-80 ns a
row, depending on the id length), and numpy releases the GIL, so threads hash in parallel.

How: XXH64's control flow depends only on the input length, so the rows are grouped by length
and every step of the algorithm runs on all rows of a group at once, in uint64 lanes. The input
bytes are read through an unaligned view of the string buffer (8-byte words at any byte
position), so a word of every row is one gather; the source prefix is folded into the words as
constants, so the prefixed strings are never built.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_M64 = (1 << 64) - 1
# The five primes of the XXH64 specification.
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
# Rows hashed together: the lanes of a chunk (a few arrays of 512 KB) stay in cache.
CHUNK = 1 << 16


def _u(x: int) -> np.uint64:
    return np.uint64(x & _M64)


class _Lanes:
    """In-place uint64 arithmetic on the lanes of one chunk, with one scratch array."""

    def __init__(self, n: int) -> None:
        self.tmp = np.empty(n, dtype=np.uint64)

    def rotl(self, x: np.ndarray, r: int) -> np.ndarray:
        np.right_shift(x, _u(64 - r), out=self.tmp)
        np.left_shift(x, _u(r), out=x)
        return np.bitwise_or(x, self.tmp, out=x)

    def round(self, acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
        """acc = rotl(acc + lane * P2, 31) * P1 (clobbers lane)."""
        np.multiply(lane, _u(_P2), out=lane)
        np.add(acc, lane, out=acc)
        self.rotl(acc, 31)
        return np.multiply(acc, _u(_P1), out=acc)

    def round0(self, lane: np.ndarray) -> np.ndarray:
        """The round of a zero accumulator, rotl(lane * P2, 31) * P1, in place on lane."""
        np.multiply(lane, _u(_P2), out=lane)
        self.rotl(lane, 31)
        return np.multiply(lane, _u(_P1), out=lane)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round0(lane: int) -> int:
    return _rotl(lane * _P2 & _M64, 31) * _P1 & _M64


class _Rows:
    """Where the strings of a chunk of rows start: at ``starts`` (any rows), or at ``first``,
    ``first + stride``, ... (consecutive strings of one length, read without a gather)."""

    def __init__(self, starts: np.ndarray | None = None, first: int = 0, stride: int = 0,
                 n: int = 0) -> None:
        self.starts, self.first, self.stride = starts, first, stride
        self.n = n if starts is None else starts.size


class _Bytes:
    """The bytes of ``prefix + string`` for the rows of one Arrow string array."""

    def __init__(self, data: np.ndarray, prefix: bytes, last: int) -> None:
        # A word (8 bytes) may be read from the start of any string (``last``: the last start),
        # so the buffer needs eight bytes past it: a padded copy when it ends too soon.
        if last + 8 <= data.size:
            self.u8 = data
        else:
            self.u8 = np.zeros(data.size + 8, dtype=np.uint8)
            self.u8[: data.size] = data
        self.u32 = np.ndarray((self.u8.size - 3,), dtype="<u4", buffer=self.u8, strides=(1,))
        self.u64 = np.ndarray((self.u8.size - 7,), dtype="<u8", buffer=self.u8, strides=(1,))
        self.prefix = prefix

    def _at(self, rows: _Rows, skip: int, width: int) -> np.ndarray:
        """The ``width``-byte integers ``skip`` bytes into every row's string (a new array)."""
        if rows.starts is None:
            kind = "<u8" if width == 8 else "<u4" if width == 4 else "u1"
            view = np.ndarray((rows.n,), dtype=kind, buffer=self.u8, offset=rows.first + skip,
                              strides=(rows.stride,))
            return view.astype(np.uint64)
        view = self.u64 if width == 8 else self.u32 if width == 4 else self.u8
        return view[rows.starts + skip].astype(np.uint64, copy=False)

    def read(self, rows: _Rows, pos: int, width: int) -> np.ndarray:
        """The little-endian integer of ``width`` (8, 4 or 1) bytes at byte ``pos`` of every
        row's ``prefix + string``, as a new uint64 array."""
        plen = len(self.prefix)
        if pos >= plen:
            return self._at(rows, pos - plen, width)
        head = int.from_bytes(self.prefix[pos : pos + width], "little")
        if pos + width <= plen:
            return np.full(rows.n, head, dtype=np.uint64)
        # The word straddles the prefix and the string: prefix bytes low, string bytes high.
        word = self._at(rows, 0, 8)
        np.left_shift(word, _u(8 * (plen - pos)), out=word)
        if width < 8:
            np.bitwise_and(word, _u((1 << (8 * width)) - 1), out=word)
        return np.bitwise_or(word, _u(head), out=word)


def _xxh64_same_length(data: _Bytes, rows: _Rows, length: int, seed: int) -> np.ndarray:
    """XXH64 of rows that all have ``length`` bytes (prefix included): the specification's
    steps, each on every row at once."""
    n = rows.n
    lanes = _Lanes(n)
    p = 0
    if length >= 32:
        acc = [np.full(n, (seed + init) & _M64, dtype=np.uint64)
               for init in (_P1 + _P2, _P2, 0, -_P1)]
        while p + 32 <= length:
            for j, v in enumerate(acc):
                lanes.round(v, data.read(rows, p + 8 * j, 8))
            p += 32
        h = np.zeros(n, dtype=np.uint64)
        for v, r in zip(acc, (1, 7, 12, 18), strict=True):
            np.add(h, lanes.rotl(v.copy(), r), out=h)
        for v in acc:
            np.bitwise_xor(h, lanes.round0(v), out=h)
            np.multiply(h, _u(_P1), out=h)
            np.add(h, _u(_P4), out=h)
        np.add(h, _u(length), out=h)
    else:
        # Words made of the prefix alone are the same for every row: hash them once.
        start = (seed + _P5 + length) & _M64
        while p + 8 <= min(length, len(data.prefix)):
            word = int.from_bytes(data.prefix[p : p + 8], "little")
            start = (_rotl(start ^ _round0(word), 27) * _P1 + _P4) & _M64
            p += 8
        h = np.full(n, start, dtype=np.uint64)
    while p + 8 <= length:
        np.bitwise_xor(h, lanes.round0(data.read(rows, p, 8)), out=h)
        lanes.rotl(h, 27)
        np.multiply(h, _u(_P1), out=h)
        np.add(h, _u(_P4), out=h)
        p += 8
    if p + 4 <= length:
        k = data.read(rows, p, 4)
        np.bitwise_xor(h, np.multiply(k, _u(_P1), out=k), out=h)
        lanes.rotl(h, 23)
        np.multiply(h, _u(_P2), out=h)
        np.add(h, _u(_P3), out=h)
        p += 4
    while p < length:
        k = data.read(rows, p, 1)
        np.bitwise_xor(h, np.multiply(k, _u(_P5), out=k), out=h)
        lanes.rotl(h, 11)
        np.multiply(h, _u(_P1), out=h)
        p += 1
    for shift, prime in ((33, _P2), (29, _P3), (32, None)):
        np.bitwise_xor(h, np.right_shift(h, _u(shift), out=lanes.tmp), out=h)
        if prime is not None:
            np.multiply(h, _u(prime), out=h)
    return h


def _string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as int64, data bytes) of a string array, nulls read as ""."""
    if values.null_count:
        values = values.fill_null("")
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_string())
    _, offsets_buf, data_buf = values.buffers()
    kind = np.int64 if pa.types.is_large_string(values.type) else np.int32
    first = values.offset
    offsets = np.frombuffer(offsets_buf, dtype=kind)[first : first + len(values) + 1]
    data = np.zeros(0, np.uint8) if data_buf is None else np.frombuffer(data_buf, dtype=np.uint8)
    return offsets.astype(np.int64, copy=False), data


def xxh64_arrow(values: pa.Array | pa.ChunkedArray, seed: int, prefix: str = "") -> np.ndarray:
    """XXH64 of ``prefix`` + every string's UTF-8 bytes with ``seed`` (nulls hash like "").

    Examples
    --------
    >>> import xxhash
    >>> keys = xxh64_arrow(pa.array(["abc", None]), seed=7, prefix="src\\x1f")
    >>> int(keys[0]) == xxhash.xxh64_intdigest(b"src\\x1fabc", 7)
    True
    >>> int(keys[1]) == xxhash.xxh64_intdigest(b"src\\x1f", 7)
    True
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    out = np.empty(len(values), dtype=np.uint64)
    if not len(values):
        return out
    offsets, raw = _string_buffers(values)
    head = prefix.encode("utf-8")
    starts = offsets[:-1]
    data = _Bytes(raw, head, int(starts[-1]))
    lengths = np.diff(offsets)
    seed &= _M64
    low, high = int(lengths.min()), int(lengths.max())
    if low == high:
        for c in range(0, out.size, CHUNK):
            rows = _Rows(first=int(starts[c]), stride=low, n=min(CHUNK, out.size - c))
            out[c : c + CHUNK] = _xxh64_same_length(data, rows, low + len(head), seed)
        return out
    # Group the rows by length (a radix sort when lengths fit 16 bits).
    order = np.argsort(lengths.astype(np.uint16) if high < 1 << 16 else lengths, kind="stable")
    ordered = lengths[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, out.size], strict=True):
        for c in range(a, b, CHUNK):
            chunk = order[c : min(c + CHUNK, b)]
            out[chunk] = _xxh64_same_length(data, _Rows(starts[chunk]),
                                            int(ordered[a]) + len(head), seed)
    return out
