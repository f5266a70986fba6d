"""Text metrics on hand-computed cases, and the n-gram baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapse_eval.text.text_metrics import (
    BigramModel,
    as_sequences,
    distinct_n,
    ngram_baselines,
    ngram_codes,
    perplexity_quantiles,
    rare_ngram_recall,
    unigram_kl,
    vocab_coverage,
)
from provenance.errors import ConfigError, InputError


def test_inputs_may_be_tensors_arrays_or_ragged_lists() -> None:
    as_tensor = as_sequences(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    as_list = as_sequences([[1, 2, 3], np.array([4, 5, 6])])
    assert [s.tolist() for s in as_tensor] == [s.tolist() for s in as_list]
    assert [s.tolist() for s in as_sequences([7, 8])] == [[7, 8]]
    with pytest.raises(InputError, match="negative"):
        as_sequences([[1, -1]])


def test_ngrams_never_cross_sequence_boundaries() -> None:
    codes = ngram_codes(as_sequences([[1, 2], [3, 4]]), 2, base=10)
    assert codes.tolist() == [12, 34]  # no 23
    with pytest.raises(ConfigError, match="do not fit in 64 bits"):
        ngram_codes(as_sequences([[1, 2]]), 6, base=2**11)


def test_ngram_codes_are_each_sequences_windows_in_order() -> None:
    """Sequences are joined for speed: the codes must still be, in order, the n-grams inside
    each sequence (short and empty ones give none), whatever the lengths."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        seqs = [rng.integers(0, 30, rng.integers(0, 7)) for _ in range(rng.integers(0, 6))]
        for n in (1, 2, 3, 4):
            expected = [int("".join(f"{t:02d}" for t in seq[i:i + n]))
                        for seq in seqs for i in range(len(seq) - n + 1)]
            assert ngram_codes(as_sequences(seqs), n, base=100).tolist() == expected, (seqs, n)


def test_distinct_n_by_hand() -> None:
    seqs = [[1, 2, 3, 1, 2], [1, 2, 4]]
    # bigrams: 12 23 31 12 | 12 24 -> 4 distinct of 6
    assert distinct_n(seqs, 2) == pytest.approx(4 / 6)
    assert distinct_n(seqs, 1) == pytest.approx(4 / 8)
    assert distinct_n([[5, 5, 5, 5]], 3) == 0.5  # 555, 555
    assert math.isnan(distinct_n([[1]], 2))


def test_rare_ngram_recall_by_hand() -> None:
    human = [[1, 2, 1, 2, 1, 2, 3, 4], [9, 9]]
    # bigrams: 12 x3, 21 x2, 23, 34, 99 -> rare (<= 2): 21, 23, 34, 99
    assert rare_ngram_recall(human, [[2, 1, 7], [3, 4]], n=2, max_count=2) == 0.5
    assert rare_ngram_recall(human, [[1, 2]], n=2, max_count=2) == 0.0  # 12 is frequent
    assert rare_ngram_recall(human, human, n=2, max_count=5) == 1.0
    assert rare_ngram_recall(human, [[4, 3]], n=1, max_count=1) == pytest.approx(2 / 2)
    assert math.isnan(rare_ngram_recall([[1, 1, 1]], [[1]], n=1, max_count=2))


def test_unigram_kl_is_zero_for_identical_counts_and_grows_with_lost_tokens() -> None:
    human = [[0, 1, 2, 3, 3]]
    assert unigram_kl(human, [[3, 2, 1, 0, 3]], 6) == 0.0
    lost_one = unigram_kl(human, [[1, 2, 3, 3, 3]], 6)
    lost_two = unigram_kl(human, [[2, 3, 3, 3, 3]], 6)
    assert 0 < lost_one < lost_two
    # By hand: add-0.5 counts over 6 types.
    p = np.array([1.5, 1.5, 1.5, 2.5, 0.5, 0.5]) / 8
    q = np.array([0.5, 1.5, 1.5, 3.5, 0.5, 0.5]) / 8
    assert lost_one == pytest.approx(float(np.sum(p * np.log(p / q))))
    with pytest.raises(InputError, match="token id 9 >= vocab_size 6"):
        unigram_kl(human, [[9]], 6)


def test_vocab_coverage_by_hand() -> None:
    reference = [[1, 2, 3, 4, 4]]
    assert vocab_coverage([[1, 1, 2, 7]], 8, reference_ids=reference) == 0.5  # 7 not counted
    assert vocab_coverage(reference, 8, reference_ids=reference) == 1.0
    assert vocab_coverage([[1, 1, 2, 7]], 8) == 3 / 8


def test_perplexity_quantiles() -> None:
    values = np.arange(1, 101, dtype=float)
    out = perplexity_quantiles(values)
    assert list(out) == ["perplexity_q05", "perplexity_q50", "perplexity_q95", "perplexity_q99"]
    assert out["perplexity_q50"] == pytest.approx(50.5)
    assert perplexity_quantiles(torch.tensor([2.0, 4.0]), qs=(50, 99.5)) == {
        "perplexity_q50": 3.0, "perplexity_q99_5": pytest.approx(3.99)}
    assert math.isnan(perplexity_quantiles([])["perplexity_q05"])


def test_unigram_baseline_by_hand() -> None:
    train = np.array([[0, 0, 0, 1]])
    evals = np.array([[1, 0, 1]])  # scores tokens 0 and 1
    out = ngram_baselines(train, evals, vocab_size=3)
    p0, p1 = (3 + 1) / (4 + 3), (1 + 1) / (4 + 3)
    assert out["unigram_ppl"] == pytest.approx(math.exp(-(math.log(p0) + math.log(p1)) / 2))


def test_the_bigram_model_interpolates_with_the_unigram_model() -> None:
    seqs = as_sequences([[0, 1, 0, 1, 2]])
    model = BigramModel(4, lam=0.5).fit(seqs)
    uni = (np.array([2, 2, 1, 0]) + 1) / (5 + 4)
    logp = model.log_prob(as_sequences([[0, 1, 3, 2]]))
    # p(1|0) = .5 * 2/2 + .5 uni[1]; p(3|1) = .5 * 0 + .5 uni[3]; 3 never a context: uni[2]
    expected = np.log([0.5 + 0.5 * uni[1], 0.5 * uni[3], uni[2]])
    np.testing.assert_allclose(logp, expected)


def test_the_bigram_baseline_beats_the_unigram_one_on_structured_text() -> None:
    rng = np.random.default_rng(0)
    # A Markov chain whose next token is mostly the previous one plus one.
    steps = np.where(rng.random((400, 32)) < 0.8, 1, rng.integers(0, 50, (400, 32)))
    seqs = np.cumsum(steps, axis=1) % 50
    out = ngram_baselines(seqs[:300], seqs[300:], vocab_size=50)
    assert out["bigram_ppl"] < out["unigram_ppl"] / 5
    assert out["unigram_ppl"] == pytest.approx(50, rel=0.1)
