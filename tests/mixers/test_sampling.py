"""Keyed-hash selection: version-stable XXH64, exact k, weighted draws, token prefixes."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
import xxhash

from mixers.sampling import budget_prefix, kth_smallest, selection_key, weighted_key, xxh64_strings


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**64 - 1])
def test_xxh64_equals_the_reference_implementation(seed: int) -> None:
    rng = random.Random(seed % 1000)
    values = ["", "a", "x" * 31, "y" * 32, "z" * 33, "é" * 40]
    values += ["".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 90)))
               for _ in range(500)]
    got = xxh64_strings(pl.Series(values), seed)
    assert [int(h) for h in got] == [xxhash.xxh64_intdigest(v.encode(), seed) for v in values]


def test_xxh64_on_sliced_and_chunked_arrays() -> None:
    series = pl.concat([pl.Series(["a", "b", "c"]), pl.Series(["d", "e"])], rechunk=False)
    assert list(xxh64_strings(series.slice(1, 3), 5)) == [
        xxhash.xxh64_intdigest(v.encode(), 5) for v in "bcd"
    ]


@pytest.mark.parametrize("prefix", ["", "a", "src\x1f", "exactly8", "eight+1\x1f",
                                    "a source name longer than thirty-two bytes\x1f"])
@pytest.mark.parametrize("kind", ["string", "large_string"])
def test_xxh64_with_a_prefix_on_mixed_and_equal_lengths(prefix: str, kind: str) -> None:
    """Every branch of the numpy kernel: lengths around 4, 8 and 32 with the prefix, words made
    of the prefix alone, straddling it, or in the string; rows of one length (read with a
    stride) and of many (gathered); sliced arrays and nulls."""
    import pyarrow as pa

    from mixers.xxh64 import xxh64_arrow

    rng = random.Random(len(prefix))
    mixed = ["".join(chr(rng.choice([rng.randint(33, 126), rng.randint(0xA0, 0x2FFF)]))
                     for _ in range(rng.randint(0, 70))) for _ in range(600)] + [None, ""]
    same = [f"{rng.getrandbits(128):032x}"[:29] for _ in range(300)]
    for values in (mixed, same, ["x"] * 3, [""] * 2):
        array = pa.array(values, type=getattr(pa, kind)())
        for part in (array, array.slice(1, max(0, len(values) - 2))):
            expected = [xxhash.xxh64_intdigest((prefix + (v or "")).encode(), 11)
                        for v in part.to_pylist()]
            assert xxh64_arrow(part, 11, prefix).tolist() == expected


def test_kth_smallest_of_parts_equals_a_partition_of_their_union() -> None:
    from mixers.sampling import kth_smallest_of

    rng = np.random.default_rng(4)
    for trial in range(60):
        values = rng.integers(0, 2**64, 3000, dtype=np.uint64)
        if trial % 3 == 0:  # keys sharing their top bits: one bucket holds them all
            values = values >> np.uint64(20)
        mask = rng.random(3000) < 0.6 if trial % 2 else None
        other = rng.integers(0, 2**64, 500, dtype=np.uint64)
        union = np.concatenate([values if mask is None else values[mask], other])
        k = int(rng.integers(1, union.size + 1))
        parts = [(values, mask), (other, True), (other, False)]
        assert kth_smallest_of(parts, k) == kth_smallest(union, k)
    assert kth_smallest_of([(other, None)], 0) is None
    with pytest.raises(ValueError, match="exceeds the 500 values"):
        kth_smallest_of([(other, None)], 501)


def test_selection_key_is_keyed_by_seed_source_and_id() -> None:
    frame = pl.LazyFrame({"id": ["a", "b"]})
    key = frame.select(selection_key("src", "id", 3)).collect().to_series().to_list()
    assert key == [xxhash.xxh64_intdigest(f"src\x1f{i}".encode(), 3) for i in "ab"]
    other_seed = frame.select(selection_key("src", "id", 4)).collect().to_series().to_list()
    other_source = frame.select(selection_key("s2", "id", 3)).collect().to_series().to_list()
    assert key != other_seed and key != other_source


def test_kth_smallest_and_errors() -> None:
    values = np.array([5, 1, 4, 2, 3], dtype=np.uint64)
    assert kth_smallest(values, 1) == 1 and kth_smallest(values, 5) == 5
    assert kth_smallest(values, 0) is None
    with pytest.raises(ValueError, match="k=6 exceeds the 5 values"):
        kth_smallest(values, 6)


def test_budget_prefix_stays_within_one_document() -> None:
    keys = np.array([3, 1, 2, 5, 4])
    tokens = np.array([10, 7, 8, 9, 6])
    # rank order 1, 2, 3, 4, 5 -> tokens 7, 8, 10, 6, 9 -> cumulative 7, 15, 25, 31, 40
    assert budget_prefix(keys, tokens, 30) == (3, 3, 25)
    assert budget_prefix(keys, tokens, 31) == (4, 4, 31)
    assert budget_prefix(keys, tokens, 6) == (None, 0, 0)


def test_weighted_key_draws_in_proportion_to_weight() -> None:
    n = 20_000
    frame = pl.DataFrame({"id": [str(i) for i in range(n)],
                          "w": [1.0 if i % 2 else 0.25 for i in range(n)]})
    ranked = frame.with_columns(
        weighted_key(selection_key("s", "id", 1), pl.col("w")).alias("r")
    ).sort("r").head(1000)
    heavy = (ranked.get_column("w") == 1.0).mean()
    # With k << n the first draws approach weight-proportional odds: 1 / (1 + 0.25) = 0.8.
    assert 0.76 < heavy < 0.84


def test_zero_weight_rows_come_last_and_a_threshold_still_takes_exactly_k() -> None:
    n = 100
    frame = pl.DataFrame({"id": [str(i) for i in range(n)], "w": [1.0] * 10 + [0.0] * 90})
    rank = frame.select(weighted_key(selection_key("s", "id", 1), pl.col("w"))).to_series()
    assert rank.is_finite().all() and rank.n_unique() == n
    assert rank.head(10).max() < rank.tail(90).min()  # every weighted row before any zero one
    threshold = kth_smallest(rank.to_numpy(), 25)
    assert int((rank <= threshold).sum()) == 25


def test_integer_ids_hash_like_their_decimal_strings_with_a_seed_per_row() -> None:
    from mixers.sampling import xxh64_int_ids

    ids = np.array([[0, 9, 10, 2**40 + 17], [5, 123456789012, 1, 99]])
    seeds = np.array([3, 2**63 + 11], dtype=np.uint64)
    keys = xxh64_int_ids(ids, seeds, "web\x1f")
    for row in range(2):
        expected = xxh64_strings(pl.Series([str(i) for i in ids[row]]), int(seeds[row]), "web\x1f")
        assert keys[row].tolist() == expected.tolist()
    with pytest.raises(ValueError, match="non-negative"):
        xxh64_int_ids(np.array([[-1]]), seeds[:1])
