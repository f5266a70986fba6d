"""MinHash signatures must equal datasketch's bit for bit, for every hash, scheme and setting.

datasketch is the oracle throughout: the numba SHA-1/xxh32 against hashlib/xxhash, signatures
against ``MinHash.update_batch(shingles(...))``, LSH parameters against ``MinHashLSH``.
"""

from __future__ import annotations

import hashlib
import random
import re
import struct
import sys
import unicodedata

import datasketch
import numpy as np
import pytest
import xxhash

from provenance.errors import ConfigError
from provenance.minhash import (
    _SPACES_KEPT_BY_NFKC,
    MinHasher,
    _encode,
    band_keys,
    jaccard_estimate,
    lsh_params,
    normalize,
    shingles,
)
from provenance.minhash_jit import sha1_32, xxh32

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation "
    "ullamco laboris nisi ut aliquip ex ea commodo consequat."
)

# Every kind of document the kernel has a separate path for.
MIXED_DOCS = [
    "",
    "   \t\n  ",
    "one",
    "two words",
    "exactly five words right here",
    "a b c d e f g h i j k",  # as many words as a document of its length can have
    "Exactly five words right here and then six",
    LOREM,
    LOREM * 4,
    "  leading\tand trailing\n\nwhitespace,   runs  of\x0bit\x1c too  ",
    "Ｆｕｌｌ-ｗｉｄｔｈ ﬁsh ligatures and CAFÉ naïve Straße Ελληνικά",
    "日本語の テキスト と 絵文字 🙂 😀 mixed with ascii words here",
    "non-breaking\u00a0space em\u2003space ideographic\u3000space and\x85next\u2028line\u2029para",
    # shingles longer than 55 bytes take SHA-1's two-block path, > 119 bytes three blocks
    " ".join(["supercalifragilisticexpialidocious"] * 3 + ["x" * 70, "y" * 130, "z"] * 2),
]


def datasketch_hashvalues(text: str, mh: MinHasher) -> np.ndarray:
    m = datasketch.MinHash(mh.num_perm, seed=mh.seed, hashfunc=mh.hashfunc, scheme=mh.scheme)
    m.update_batch(shingles(text, mh.ngram))
    return m.hashvalues


def assert_matches_datasketch(texts: list[str], mh: MinHasher) -> None:
    sig = mh.signatures(texts)
    assert sig.shape == (len(texts), mh.num_perm)
    for i, text in enumerate(texts):
        expected = datasketch_hashvalues(text, mh)
        assert sig.dtype == expected.dtype
        assert np.array_equal(sig[i], expected), f"document {i}: {text[:40]!r}"


def random_text(rng: random.Random, n_words: int) -> str:
    alphabet = "abcXYZ éßΣж日🙂ﬁＡ1,.-\t\n\r\x0b\x0c\x1c\x1f\xa0\x85\u2003\u2028\u3000"
    seps = [" ", "  ", "\t", "\n", "\xa0", "\u2003", "\x85", "\x1e", "\u3000"]
    words = ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(n_words)]
    return "".join(w + rng.choice(seps) for w in words)


# --- normalize and shingles ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ﬁsh", "fish"),
        ("ＡＢＣ　１２３", "abc 123"),
        ("MiXeD CaSe", "mixed case"),
        ("a\tb\nc\r\nd", "a b c d"),
        ("non\u00a0breaking", "non breaking"),
        ("para\u2029graph\x85line", "para graph line"),
        ("  outer  ", "outer"),
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "ngram", "expected"),
    [
        ("", 5, []),
        (" \t\n", 3, []),
        ("Hello", 5, [b"hello"]),
        ("a b c d", 5, [b"a b c d"]),
        ("a b c d e", 5, [b"a b c d e"]),
        ("a b c d e f", 5, [b"a b c d e", b"b c d e f"]),
        ("a  B\tc", 1, [b"a", b"b", b"c"]),
        ("Café ﬁ 日本", 2, ["café fi".encode(), "fi 日本".encode()]),
    ],
)
def test_shingles(text, ngram, expected):
    assert shingles(text, ngram) == expected


def test_spaces_kept_by_nfkc_are_all_non_ascii_whitespace_nfkc_keeps():
    kept = {
        chr(c)
        for c in range(128, sys.maxunicode + 1)
        if chr(c).isspace() and unicodedata.normalize("NFKC", chr(c)) == chr(c)
    }
    assert kept == set(_SPACES_KEPT_BY_NFKC)


def test_encode_is_normalize_up_to_space_runs():
    """The kernel collapses and strips spaces; everything else _encode must do itself."""
    rng = random.Random(3)
    texts = [random_text(rng, rng.randint(0, 20)) for _ in range(300)]
    texts += ["".join(map(chr, range(128))), "ABC\x1c\x1d\x1e\x1fdef", *MIXED_DOCS]
    for text in texts:
        collapsed = re.sub(b" +", b" ", _encode(text)).strip(b" ")
        assert collapsed == normalize(text).encode("utf-8"), repr(text)


# --- hash functions inside numba ----------------------------------------------------------


def random_messages() -> list[bytes]:
    rng = np.random.default_rng(0)
    lengths = list(range(0, 301)) + [55, 56, 63, 64, 65, 119, 120, 128, 1000]
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]


def test_numba_sha1_32_equals_hashlib():
    w = np.empty(80, dtype=np.uint32)
    for msg in random_messages():
        # at an offset inside a larger buffer, as the kernel calls it
        buf = np.frombuffer(b"\xff" * 7 + msg + b"\xee" * 9, dtype=np.uint8)
        expected = struct.unpack("<I", hashlib.sha1(msg).digest()[:4])[0]
        assert sha1_32(buf, 7, 7 + len(msg), w) == expected, len(msg)


def test_numba_xxh32_equals_xxhash():
    for msg in random_messages():
        buf = np.frombuffer(b"\xff" * 5 + msg + b"\xee" * 3, dtype=np.uint8)
        assert xxh32(buf, 5, 5 + len(msg)) == xxhash.xxh32_intdigest(msg), len(msg)


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("hash_name", ["sha1", "xxh32"])
@pytest.mark.parametrize(
    ("num_perm", "ngram", "seed"), [(128, 5, 1), (16, 1, 0), (97, 3, 42), (256, 9, 2**32 - 1)]
)
def test_signatures_equal_datasketch(scheme, hash_name, num_perm, ngram, seed):
    mh = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed, hash=hash_name, scheme=scheme)
    assert_matches_datasketch(MIXED_DOCS, mh)


@pytest.mark.parametrize(
    "mh", [MinHasher(), MinHasher(num_perm=32, ngram=2, hash="xxh32", scheme="legacy")]
)
def test_signatures_equal_datasketch_on_random_unicode_documents(mh):
    rng = random.Random(7)
    texts = [random_text(rng, rng.randint(0, 40)) for _ in range(150)]
    assert_matches_datasketch(texts, mh)


def test_hashfunc_is_what_datasketch_needs():
    assert MinHasher().hashfunc is datasketch.hashfunc.sha1_hash32
    assert MinHasher(hash="xxh32").hashfunc(b"abc") == xxhash.xxh32_intdigest(b"abc")


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_empty_documents_give_datasketch_initial_hashvalues(scheme):
    sig = MinHasher(num_perm=64, scheme=scheme).signatures(["", "  \n "])
    initial = datasketch.MinHash(num_perm=64, scheme=scheme).hashvalues
    assert sig.dtype == initial.dtype
    assert (sig == initial).all()


def test_empty_batch():
    sig = MinHasher(num_perm=8).signatures([])
    assert sig.shape == (0, 8) and sig.dtype == np.uint32


def test_batching_does_not_change_signatures():
    mh = MinHasher(num_perm=32)
    whole = mh.signatures(MIXED_DOCS)
    one_by_one = np.vstack([mh.signatures([t]) for t in MIXED_DOCS])
    assert np.array_equal(whole, one_by_one)


def test_normalisation_variants_share_a_signature():
    sig = MinHasher().signatures([LOREM, LOREM.upper().replace(" ", "\n  "), f"\t{LOREM}  "])
    assert (sig == sig[0]).all()


# --- datasketch interoperability ----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_datasketch_round_trip(scheme):
    mh = MinHasher(num_perm=64, scheme=scheme)
    sig = mh.signatures([LOREM])[0]
    lean = mh.to_datasketch(sig)
    assert isinstance(lean, datasketch.LeanMinHash)
    assert lean.scheme == scheme and lean.seed == mh.seed
    assert np.array_equal(mh.from_datasketch(lean), sig)
    own = datasketch.MinHash(num_perm=64, scheme=scheme)
    own.update_batch(shingles(LOREM))
    assert lean.jaccard(own) == 1.0
    assert np.array_equal(mh.from_datasketch(own), sig)


def test_lsh_mixes_our_sketches_with_datasketch_ones():
    mh = MinHasher(num_perm=128)
    docs = {f"doc{i}": f"{LOREM} variant number {i} " + "filler words " * i for i in range(6)}
    docs["other"] = "a completely different text about lobsters in the Atlantic ocean " * 3
    bands, rows = lsh_params(0.5, 128)
    lsh = datasketch.MinHashLSH(num_perm=128, params=(bands, rows))
    ours = mh.signatures(list(docs.values()))
    for i, (key, text) in enumerate(docs.items()):
        if i % 2:
            lsh.insert(key, mh.to_datasketch(ours[i]))
        else:
            theirs = datasketch.MinHash(num_perm=128)
            theirs.update_batch(shingles(text))
            lsh.insert(key, theirs)
    near_dup = mh.signatures([LOREM + " variant number 0 filler"])[0]
    found = set(lsh.query(mh.to_datasketch(near_dup)))
    assert {"doc0", "doc1"} <= found
    assert "other" not in found


@pytest.mark.parametrize(
    ("sketch", "field"),
    [
        (datasketch.MinHash(num_perm=32), "num_perm=32"),
        (datasketch.MinHash(num_perm=64, seed=2), "seed=2"),
        (datasketch.MinHash(num_perm=64, scheme="legacy"), "scheme='legacy'"),
    ],
)
def test_from_datasketch_refuses_other_settings(sketch, field):
    with pytest.raises(ValueError, match=re.escape(field)) as err:
        MinHasher(num_perm=64).from_datasketch(sketch)
    assert isinstance(err.value, ConfigError)
    assert "same num_perm, seed and scheme" in str(err.value)


def test_to_datasketch_refuses_wrong_shape():
    with pytest.raises(ConfigError, match=r"shape \(64,\)"):
        MinHasher(num_perm=64).to_datasketch(np.zeros(32, dtype=np.uint32))


# --- LSH parameters and band keys -------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "num_perm", "weights"),
    [
        (0.9, 128, (0.5, 0.5)),
        (0.5, 128, (0.5, 0.5)),
        (0.8, 256, (0.5, 0.5)),
        (0.7, 64, (0.3, 0.7)),
        (0.3, 32, (0.6, 0.4)),
        (0.85, 100, (0.5, 0.5)),
    ],
)
def test_lsh_params_equal_datasketch(threshold, num_perm, weights):
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    assert lsh_params(threshold, num_perm, *weights) == (lsh.b, lsh.r)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 128), "threshold must be strictly between 0 and 1, got 0.0"),
        ((1.0, 128), "threshold must be strictly between 0 and 1, got 1.0"),
        ((0.5, 1), "num_perm must be >= 2, got 1"),
        ((0.5, 128, 0.7, 0.7), "must be 1, got 0.7 + 0.7"),
        ((0.5, 128, -0.5, 1.5), "false_positive_weight must be in [0, 1], got -0.5"),
        ((0.9, 16), "single LSH band"),
    ],
)
def test_lsh_params_validation(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        lsh_params(*args)


def test_band_keys_equal_iff_band_values_equal():
    rng = np.random.default_rng(1)
    # few distinct values, so that many bands coincide by chance
    sig = rng.integers(0, 2, size=(60, 12), dtype=np.uint32)
    keys = band_keys(sig, bands=4, rows=3)
    assert keys.shape == (60, 4) and keys.dtype == np.int64
    bands = sig.reshape(60, 4, 3)
    same_values = (bands[:, None] == bands[None, :]).all(axis=-1)
    same_keys = keys[:, None] == keys[None, :]
    assert same_values.any() and not same_values.all()
    assert np.array_equal(same_keys, same_values)


def test_band_keys_change_only_with_their_band():
    sig = np.arange(40, dtype=np.uint32).reshape(2, 20)
    sig[1] = sig[0]
    sig[1, 7] += 1000
    keys = band_keys(sig, bands=5, rows=4)
    assert list(keys[0] == keys[1]) == [True, False, True, True, True]


def test_band_keys_are_salted_by_band_position():
    sig = np.tile(np.array([5, 6], dtype=np.uint32), 3)[None, :]
    keys = band_keys(sig, bands=3, rows=2)
    assert len(set(keys[0].tolist())) == 3


def test_band_keys_ignore_values_beyond_the_bands_and_the_dtype():
    sig = np.array([[1, 2, 3, 4, 5]], dtype=np.uint32)
    wider = sig.astype(np.uint64)
    wider[0, 4] = 99
    assert np.array_equal(band_keys(sig, 2, 2), band_keys(wider, 2, 2))


def test_band_keys_are_stable():
    """Keys are persisted (the ledger stores them): the key function must never change."""
    sig = np.array([[0, 1, 2**32 - 1, 12345]], dtype=np.uint32)
    assert band_keys(sig, 2, 2).tolist() == [[4419026930777335657, 397068127070061595]]


def test_band_keys_validation():
    sig = np.zeros((3, 10), dtype=np.uint32)
    with pytest.raises(
        ConfigError, match=re.escape("bands * rows = 3 * 4 = 12 exceeds num_perm=10")
    ):
        band_keys(sig, 3, 4)
    with pytest.raises(ConfigError, match="rows must be >= 1, got 0"):
        band_keys(sig, 3, 0)
    with pytest.raises(ConfigError, match="2-D integer array"):
        band_keys(sig[0], 2, 2)


# --- Jaccard estimate -----------------------------------------------------------------------


def test_jaccard_estimate_close_to_true_jaccard():
    words = [f"w{i}" for i in range(400)]
    a, b = " ".join(words[:300]), " ".join(words[100:])
    sa, sb = set(shingles(a)), set(shingles(b))
    true_j = len(sa & sb) / len(sa | sb)
    num_perm = 256
    sig = MinHasher(num_perm=num_perm).signatures([a, b])
    estimate = jaccard_estimate(sig[0], sig[1])
    assert isinstance(estimate, float)
    assert abs(estimate - true_j) < 4 * np.sqrt(true_j * (1 - true_j) / num_perm)


def test_jaccard_estimate_broadcasts():
    batch = np.array([[1, 2, 3, 4], [1, 0, 0, 0], [9, 9, 9, 9]])
    assert jaccard_estimate(batch, batch[0]).tolist() == [1.0, 0.25, 0.0]
    assert jaccard_estimate(batch[:, None], batch[None]).shape == (3, 3)
    with pytest.raises(ConfigError, match="same last dimension"):
        jaccard_estimate(batch, np.zeros(3))


# --- parameter validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ngram": 0}, "ngram must be >= 1, got 0"),
        ({"num_perm": 0}, "num_perm must be >= 1, got 0"),
        ({"num_perm": 8.0}, "num_perm must be an integer, got 8.0"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"seed": 2**32}, "seed must be <= 4294967295"),
        ({"hash": "md5"}, "hash must be one of sha1, xxh32, got 'md5'"),
        ({"scheme": "affine64"}, "scheme must be one of affine32, legacy, got 'affine64'"),
    ],
)
def test_minhasher_validation(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MinHasher(**kwargs)


def test_signatures_input_validation():
    with pytest.raises(ConfigError, match=re.escape("got a single string: pass [text]")):
        MinHasher().signatures("just one text")
    with pytest.raises(ConfigError, match=re.escape("texts[1] must be str, got bytes")):
        MinHasher().signatures(["ok", b"bytes"])
    with pytest.raises(ConfigError, match="ngram must be >= 1, got 0"):
        shingles("a b", 0)
