"""MinHash signatures for whole batches of documents, byte-identical to datasketch's, but fast.

Near-duplicate detection has to sketch every document of a corpus, and datasketch spends most of
its time in Python: one ``hashlib`` call and one numpy round trip per shingle. Here Python only
normalises and packs the batch into one byte buffer; a single numba kernel then finds the word
n-grams, hashes them (SHA-1 or xxh32, re-implemented so that no Python object is made per
shingle), applies every permutation and keeps the minima.

The values are exactly those of ``datasketch.MinHash`` (same hash, same permutations drawn from
``np.random.RandomState(seed)``, same ``affine32`` or ``legacy`` scheme), so signatures made here
can be mixed with sketches users make themselves: see :meth:`MinHasher.to_datasketch`.

What is hashed is fixed by :func:`normalize` and :func:`shingles`: word n-grams of the NFKC,
lower-cased, whitespace-collapsed text, joined by one space and UTF-8 encoded.
"""

from __future__ import annotations

import functools
import math
import numbers
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from provenance.errors import ConfigError, SketchMismatchError

if TYPE_CHECKING:
    import datasketch

HASHES = ("sha1", "xxh32")
SCHEMES = ("affine32", "legacy")

_MERSENNE61 = np.uint64((1 << 61) - 1)  # datasketch's prime: its permutations' range
_SCHEME_DTYPES = {"affine32": np.uint32, "legacy": np.uint64}


def normalize(text: str) -> str:
    """Canonical form of a document: NFKC, lower case, single ASCII spaces, no outer spaces.

    Copies that differ only by ligatures, full-width forms, case or line wrapping are the same
    document for deduplication, so they must give the same shingles.

    Examples
    --------
    >>> normalize("  The\\tQUICK\\u00a0ﬁsh\\n\\n")
    'the quick fish'
    """
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def shingles(text: str, ngram: int = 5) -> list[bytes]:
    """Word ``ngram``-grams of ``normalize(text)``, UTF-8 encoded: what datasketch must be fed.

    This is the pure-Python reference of what the kernel hashes. A document shorter than
    ``ngram`` words still gets one shingle (itself) so that short documents are not all equal to
    the empty set; an empty document gets none.

    Examples
    --------
    >>> shingles("a b c d", ngram=3)
    [b'a b c', b'b c d']
    >>> shingles("Hello  World", ngram=5)
    [b'hello world']
    >>> shingles(" \\n ")
    []
    """
    _check_ngram(ngram)
    words = normalize(text).split(" ")
    if words == [""]:
        return []
    if len(words) < ngram:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)]


@dataclass(frozen=True)
class MinHasher:
    """Settings of a MinHash sketch, and the batch computation of its signatures.

    A signature made with these settings equals the ``hashvalues`` of
    ``datasketch.MinHash(num_perm, seed=seed, hashfunc=self.hashfunc, scheme=scheme)`` updated
    with ``shingles(text, ngram)``. The dtype is datasketch's: uint32 for ``affine32``, uint64
    (values below 2**32) for ``legacy``.

    Examples
    --------
    >>> mh = MinHasher(num_perm=16, ngram=2)
    >>> sig = mh.signatures(["the cat sat on the mat", "the cat sat on a mat", ""])
    >>> sig.shape, sig.dtype.name
    ((3, 16), 'uint32')
    >>> bool((sig[2] == 2**32 - 1).all())
    True
    """

    num_perm: int = 128
    ngram: int = 5
    seed: int = 1
    hash: str = "sha1"
    scheme: str = "affine32"

    def __post_init__(self) -> None:
        _check_int("num_perm", self.num_perm, low=1)
        _check_ngram(self.ngram)
        _check_int("seed", self.seed, low=0, high=2**32 - 1)
        if self.hash not in HASHES:
            raise ConfigError(f"hash must be one of {', '.join(HASHES)}, got {self.hash!r}")
        if self.scheme not in SCHEMES:
            raise ConfigError(
                f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r} "
                "(datasketch's 'affine64' is not supported)"
            )

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """Signatures of a batch, shape ``(len(texts), num_perm)``.

        Batches amortise the Python-side packing; a few thousand documents per call is plenty.

        Examples
        --------
        >>> import datasketch
        >>> mh = MinHasher(num_perm=4, ngram=1)
        >>> sig = mh.signatures(["Hello world", "HELLO\\tworld"])
        >>> sig[0].tolist(), bool((sig[0] == sig[1]).all())
        ([625790555, 194865109, 1355773502, 1324736089], True)
        >>> m = datasketch.MinHash(num_perm=4, seed=1, hashfunc=mh.hashfunc)
        >>> m.update_batch(shingles("Hello world", ngram=1))
        >>> m.hashvalues.tolist() == sig[0].tolist()
        True
        """
        buf, offsets = _pack(texts)
        a, b = _permutations(self.num_perm, self.seed, self.scheme)
        out = np.empty((offsets.size - 1, self.num_perm), dtype=_SCHEME_DTYPES[self.scheme])
        from provenance.minhash_jit import signatures  # numba: loaded where first needed

        signatures(buf, offsets, self.ngram, HASHES.index(self.hash), a, b, out,
                   self.scheme == "legacy")
        return out

    @property
    def hashfunc(self) -> Callable[[bytes], int]:
        """The 32-bit hash datasketch must be given to reproduce these signatures.

        Examples
        --------
        >>> MinHasher(hash="xxh32").hashfunc(b"abc")
        852579327
        """
        if self.hash == "sha1":
            from datasketch.hashfunc import sha1_hash32

            return sha1_hash32
        import xxhash

        return xxhash.xxh32_intdigest

    def to_datasketch(self, signature: np.ndarray) -> datasketch.LeanMinHash:
        """A read-only datasketch sketch of one signature, e.g. to query a ``MinHashLSH``.

        Examples
        --------
        >>> mh = MinHasher(num_perm=8)
        >>> lean = mh.to_datasketch(mh.signatures(["some text"])[0])
        >>> lean.jaccard(lean), lean.scheme
        (1.0, 'affine32')
        """
        from datasketch import LeanMinHash

        sig = np.asarray(signature)
        if sig.shape != (self.num_perm,):
            raise ConfigError(
                f"signature must have shape ({self.num_perm},) for num_perm={self.num_perm}, "
                f"got {sig.shape}: pass one row of signatures()"
            )
        return LeanMinHash(seed=self.seed, hashvalues=sig, scheme=self.scheme)

    def from_datasketch(self, m: datasketch.MinHash) -> np.ndarray:
        """The hash values of a datasketch (Lean)MinHash, as a signature of these settings.

        Sketches with another ``num_perm``, ``seed`` or scheme hold values that cannot be
        compared with ours, so they are refused rather than silently giving wrong similarities.
        (The hash function and the shingling leave no trace in a sketch and cannot be checked.)

        Examples
        --------
        >>> import datasketch
        >>> mh = MinHasher(num_perm=8)
        >>> m = datasketch.MinHash(num_perm=8, seed=1)
        >>> m.update(b"hello")
        >>> bool((mh.from_datasketch(m) == mh.signatures(["hello"])[0]).all())
        True
        """
        scheme = getattr(m, "scheme", "legacy")
        found = {"num_perm": len(m.hashvalues), "seed": m.seed, "scheme": scheme}
        wanted = {"num_perm": self.num_perm, "seed": self.seed, "scheme": self.scheme}
        wrong = [
            f"{k}={found[k]!r} (expected {wanted[k]!r})" for k in wanted if found[k] != wanted[k]
        ]
        if wrong:
            raise SketchMismatchError(
                f"datasketch MinHash does not match these MinHasher settings: {', '.join(wrong)}; "
                "build it with the same num_perm, seed and scheme, or use a matching MinHasher"
            )
        return np.array(m.hashvalues, dtype=_SCHEME_DTYPES[self.scheme])


def lsh_params(
    threshold: float,
    num_perm: int,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> tuple[int, int]:
    """``(bands, rows)`` exactly as ``datasketch.MinHashLSH(threshold, num_perm, weights)`` picks.

    An index built from :func:`band_keys` then has the same recall/precision trade-off as a
    datasketch index users may already run. Like datasketch, this minimises the weighted sum of
    the false positive and false negative probability integrals over all ``bands * rows <=
    num_perm`` (the same ``scipy.integrate.quad`` calls, so ties break identically).

    Examples
    --------
    >>> lsh_params(0.9, 128)
    (5, 25)
    >>> lsh_params(0.5, 128)
    (25, 5)
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ConfigError(f"threshold must be a number, got {threshold!r}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
    _check_int("num_perm", num_perm, low=2)
    for name, w in (
        ("false_positive_weight", false_positive_weight),
        ("false_negative_weight", false_negative_weight),
    ):
        if not 0.0 <= w <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {w!r}")
    if not math.isclose(false_positive_weight + false_negative_weight, 1.0, abs_tol=1e-9):
        raise ConfigError(
            "false_positive_weight + false_negative_weight must be 1, got "
            f"{false_positive_weight} + {false_negative_weight}"
        )
    bands, rows = _optimal_lsh_params(
        float(threshold), int(num_perm), float(false_positive_weight), float(false_negative_weight)
    )
    if bands < 2:
        raise ConfigError(
            f"threshold={threshold} with num_perm={num_perm} gives a single LSH band, which "
            "datasketch.MinHashLSH rejects: raise num_perm or lower the threshold"
        )
    return bands, rows


@functools.lru_cache(maxsize=64)
def _optimal_lsh_params(
    threshold: float, num_perm: int, fp_w: float, fn_w: float
) -> tuple[int, int]:
    from scipy.integrate import quad  # scipy comes with datasketch; imported late (slow import)

    def false_positive(b: int, r: int) -> float:
        return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]

    def false_negative(b: int, r: int) -> float:
        return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]

    best_error, best = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            error = false_positive(b, r) * fp_w + false_negative(b, r) * fn_w
            if error < best_error:
                best_error, best = error, (b, r)
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One int64 key per LSH band and document, shape ``(n_docs, bands)``.

    Two documents are LSH candidates when they share a key in some band; one 64-bit integer per
    band is what an SQL index can store and join on. The key hashes the ``rows`` values of the
    band, salted by the band index (equal values in different bands must not collide), with a
    fixed 64-bit mixer: keys are stable across processes, platforms and versions, so they can be
    persisted. Values beyond ``bands * rows`` are ignored, as in datasketch.

    Examples
    --------
    >>> sig = np.array([[1, 2, 3, 4], [1, 2, 3, 5], [3, 4, 1, 2]], dtype=np.uint32)
    >>> keys = band_keys(sig, bands=2, rows=2)
    >>> keys.shape, keys.dtype.name
    ((3, 2), 'int64')
    >>> bool(keys[0, 0] == keys[1, 0]), bool(keys[0, 1] == keys[1, 1])
    (True, False)
    >>> bool(keys[0, 0] == keys[2, 1])
    False
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2 or sig.dtype.kind not in "ui":
        raise ConfigError(
            "signatures must be a 2-D integer array (n_docs, num_perm), "
            f"got a {sig.ndim}-D {sig.dtype} array"
        )
    _check_int("bands", bands, low=1)
    _check_int("rows", rows, low=1)
    if bands * rows > sig.shape[1]:
        raise ConfigError(
            f"bands * rows = {bands} * {rows} = {bands * rows} exceeds num_perm={sig.shape[1]}: "
            "use lsh_params(threshold, num_perm) to choose them"
        )
    values = sig[:, : bands * rows].astype(np.uint64).reshape(sig.shape[0], bands, rows)
    keys = _fmix64(np.arange(bands, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    keys = np.broadcast_to(keys, values.shape[:2])
    for r in range(rows):
        keys = _fmix64(keys ^ values[:, :, r])
    return keys.view(np.int64)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Estimated Jaccard similarity: the fraction of equal hash values along the last axis.

    Broadcasts, so one signature can be compared with a whole batch at once.

    Examples
    --------
    >>> jaccard_estimate(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0]))
    0.5
    >>> jaccard_estimate(np.array([[1, 2], [3, 4]]), np.array([1, 4])).tolist()
    [0.5, 0.5]
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-1]:
        raise ConfigError(
            f"signatures must have the same last dimension (num_perm), got shapes {a.shape} and "
            f"{b.shape}"
        )
    est = np.mean(a == b, axis=-1)
    return float(est) if est.ndim == 0 else est


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value}")


def _check_ngram(ngram: int) -> None:
    _check_int("ngram", ngram, low=1)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a fixed bijection that spreads every input bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _ascii_table() -> bytes:
    table = bytearray(range(256))
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c + 32
    for c in b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f":  # what str.split() splits ASCII text on
        table[c] = ord(" ")
    return bytes(table)


_ASCII_LOWER_SPACES = _ascii_table()
# The non-ASCII characters str.split() splits on that NFKC keeps (it maps the others to " ").
_SPACES_KEPT_BY_NFKC = "\x85\u1680\u2028\u2029"


def _encode(text: str) -> bytes:
    """UTF-8 of ``normalize(text)``, except that runs of spaces are left for the kernel.

    Building the word list of ``str.split`` costs more than all the rest of :func:`normalize`,
    so it is avoided: ASCII text is its own NFKC form, and in UTF-8 the bytes of every non-ASCII
    character are >= 0x80, so one ``bytes.translate`` can lower-case and turn every ASCII
    whitespace into a space; the kernel then collapses and strips the spaces. Only text holding
    one of the few non-ASCII spaces that survive NFKC takes the slow path.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).lower()
        if any(c in text for c in _SPACES_KEPT_BY_NFKC):
            text = " ".join(text.split())
    return text.encode("utf-8").translate(_ASCII_LOWER_SPACES)


def _pack(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The encoded documents in one uint8 buffer, with ``n + 1`` int64 offsets."""
    if isinstance(texts, (str, bytes)):
        raise ConfigError("texts must be a sequence of str, got a single string: pass [text]")
    encoded = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"texts[{i}] must be str, got {type(text).__name__}")
        encoded.append(_encode(text))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


@functools.lru_cache(maxsize=32)
def _permutations(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters ``(a, b)``, drawn in datasketch's exact order."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        pairs = [
            (
                gen.randint(1, _MERSENNE61, dtype=np.uint64),
                gen.randint(0, _MERSENNE61, dtype=np.uint64),
            )
            for _ in range(num_perm)
        ]
        a, b = np.array(pairs, dtype=np.uint64).T
    else:
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    a.flags.writeable = b.flags.writeable = False  # shared by every call: never mutate
    return a, b
