"""Tail metrics of generated text, on token ids, and the n-gram baselines a model must beat.

Everything takes token ids: a 2-D array or tensor of blocks ``(n, L)`` (each row one sequence),
a 1-D array (one sequence), or a list of 1-D sequences of any lengths. N-grams never cross from
one sequence into the next. All counting is vectorised with numpy (n-grams are packed into one
int64 code each), so the 700k-token training set of the default corpus takes well under a
second per metric.

Definitions (``TEXT_METRIC_DEFINITIONS`` holds them for reports):

* ``unigram_ppl`` / ``bigram_ppl`` (:func:`ngram_baselines`): perplexity of the same next-token
  predictions a language model makes on blocks (tokens 1..L-1 of each sequence, see
  :mod:`collapse_eval.text.model`). The unigram model is add-``k`` smoothed (k = 1); the bigram
  model interpolates maximum-likelihood bigram probabilities with that unigram model,
  ``p(w | v) = lam c(v, w) / c(v) + (1 - lam) p_uni(w)`` (Jelinek-Mercer), with ``lam`` chosen
  on held-out data: fitted on the first 90% of the training sequences, scored on the last 10%
  over a grid, then refitted on all of them.
* ``distinct_n``: distinct n-grams / total n-grams over all sequences (diversity; 1 = no n-gram
  repeats).
* ``rare_ngram_recall``: of the n-grams that occur at least once and at most ``max_count``
  (5) times in the human data, the share that occur at least once in the generated text. The
  paper's tail: rare events are the first a recursively trained model forgets.
* ``unigram_kl``: KL(human || generated) in nats between the token frequency distributions,
  each add-``alpha`` smoothed (alpha = 0.5) over the vocabulary; 0 for identical counts, large
  when generated text drops tokens the human text uses.
* ``vocab_coverage``: share of the token types used by the human (reference) text that the
  generated text uses at least once; without a reference, share of the whole vocabulary.
* ``perplexity_qXX``: percentiles of per-sequence perplexities (of generated text under the
  generation-0 model, the paper's histograms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from provenance.errors import ConfigError, InputError

__all__ = [
    "TEXT_METRIC_DEFINITIONS",
    "BigramModel",
    "as_sequences",
    "distinct_n",
    "ngram_baselines",
    "ngram_codes",
    "perplexity_quantiles",
    "rare_ngram_recall",
    "unigram_kl",
    "vocab_coverage",
]

TEXT_METRIC_DEFINITIONS = {
    "unigram_ppl": "perplexity of an add-1 unigram model of the training tokens on the "
    "evaluation blocks (tokens 1..L-1 of each block)",
    "bigram_ppl": "perplexity of a bigram model interpolated with the unigram model "
    "(weight tuned on held-out training data) on the evaluation blocks",
    "distinct_n": "distinct n-grams / total n-grams of the generated sequences",
    "rare_ngram_recall": "share of the n-grams seen 1..5 times in the human training data that "
    "appear at least once in the generated text",
    "unigram_kl": "KL(human || generated) in nats of add-0.5 smoothed token frequencies",
    "vocab_coverage": "share of the human data's token types that the generated text uses",
    "perplexity_q": "percentile of per-sequence perplexities of generated text under the "
    "generation-0 model",
}

#: Interpolation weights tried for the bigram model.
LAMBDA_GRID = np.round(np.arange(0.05, 1.0, 0.05), 2)


# --------------------------------------------------------------------------- inputs


def as_sequences(ids: Any, name: str = "ids") -> list[np.ndarray]:
    """Token ids as a list of 1-D int64 arrays (rows of a 2-D input, or the given sequences).

    Examples
    --------
    >>> [s.tolist() for s in as_sequences(np.array([[1, 2], [3, 4]]))]
    [[1, 2], [3, 4]]
    >>> [s.tolist() for s in as_sequences([[1], [2, 3, 4]])]
    [[1], [2, 3, 4]]
    """
    if hasattr(ids, "detach"):  # torch tensor
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        if ids.ndim == 1:
            seqs = [ids]
        elif ids.ndim == 2:
            seqs = list(ids)
        else:
            raise InputError(f"{name} must be 1-D or 2-D token ids, got shape {ids.shape}")
    elif isinstance(ids, Iterable) and not isinstance(ids, str | bytes):
        items = list(ids)
        if items and all(isinstance(x, int | np.integer) for x in items):
            seqs = [np.asarray(items)]
        else:
            seqs = [np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
                    for x in items]
    else:
        raise InputError(f"{name} must be token ids (array, tensor or list of sequences), got "
                         f"{type(ids).__name__}")
    out = []
    for i, seq in enumerate(seqs):
        arr = np.asarray(seq)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"{name}[{i}] must be a 1-D sequence of integer token ids")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and arr.min() < 0:
            raise InputError(f"{name}[{i}] holds negative token ids")
        out.append(arr)
    return out


def _flat(seqs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)


def _check_vocab(seqs: Sequence[np.ndarray], vocab_size: int, name: str) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer) or (
        vocab_size < 1
    ):
        raise ConfigError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    for seq in seqs:
        if seq.size and seq.max() >= vocab_size:
            raise InputError(f"{name} holds token id {int(seq.max())} >= vocab_size {vocab_size}")


def ngram_codes(seqs: Sequence[np.ndarray], n: int, base: int) -> np.ndarray:
    """Every n-gram inside each sequence as one int64 code (base-``base`` digits).

    Examples
    --------
    >>> ngram_codes([np.array([1, 2, 3]), np.array([4])], n=2, base=10).tolist()
    [12, 23]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if base ** n >= 2**63:
        raise ConfigError(f"{n}-grams over a vocabulary of {base} do not fit in 64 bits; "
                          "use a smaller n")
    # One pass over all sequences joined end to end, then the windows that cross a join are
    # dropped: a loop of sliding windows per sequence cost 0.3 s of every 0.4 s of a trigram
    # recall over a generation's 4,000 documents (one numpy call per document).
    seqs = [seq for seq in seqs if seq.size >= n]
    if not seqs:
        return np.zeros(0, dtype=np.int64)
    flat = np.concatenate(seqs).astype(np.int64, copy=False)
    code = flat[: flat.size - n + 1].copy()
    for j in range(1, n):
        code = code * base + flat[j: flat.size - n + 1 + j]
    ends = np.cumsum([seq.size for seq in seqs])
    inside = np.ones(flat.size, dtype=bool)
    for j in range(1, n):  # the last n-1 starts of each sequence reach into the next one
        inside[ends - j] = False
    return code[inside[: code.size]]


def _base(*groups: Sequence[np.ndarray]) -> int:
    top = max((int(s.max()) for g in groups for s in g if s.size), default=0)
    return top + 1


# --------------------------------------------------------------------------- baselines


@dataclass
class BigramModel:
    """Add-``k`` unigram and Jelinek-Mercer interpolated bigram models of token ids.

    ``fit`` counts; ``lam`` is the bigram weight (set by :meth:`tune` on held-out data, or by
    hand). :meth:`log_prob` scores next-token predictions inside sequences.
    """

    vocab_size: int
    k: float = 1.0
    lam: float = 0.5

    def fit(self, seqs: Sequence[np.ndarray]) -> BigramModel:
        v = self.vocab_size
        flat = _flat(seqs)
        self.unigram_ = (np.bincount(flat, minlength=v) + self.k) / (flat.size + self.k * v)
        codes = ngram_codes(seqs, 2, v)
        self.codes_, self.counts_ = np.unique(codes, return_counts=True)
        self.context_counts_ = np.bincount(self.codes_ // v, weights=self.counts_, minlength=v)
        return self

    def _pairs(self, seqs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = ngram_codes(seqs, 2, self.vocab_size)
        context, target = codes // self.vocab_size, codes % self.vocab_size
        pair = np.zeros(len(codes))
        if len(self.codes_):
            pos = np.minimum(np.searchsorted(self.codes_, codes), len(self.codes_) - 1)
            pair = np.where(self.codes_[pos] == codes, self.counts_[pos], 0)
        ctx = self.context_counts_[context]
        ml = np.divide(pair, ctx, out=np.zeros(len(codes)), where=ctx > 0)
        return ml, self.unigram_[target], ctx > 0

    def log_prob(self, seqs: Sequence[np.ndarray], *, lam: float | None = None) -> np.ndarray:
        """Natural-log probabilities of tokens 1..L-1 of each sequence under the bigram model."""
        lam = self.lam if lam is None else lam
        ml, uni, seen = self._pairs(seqs)
        return np.log(np.where(seen, lam * ml + (1 - lam) * uni, uni))

    def unigram_log_prob(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        """Log probabilities of tokens 1..L-1 of each sequence under the unigram model."""
        targets = [s[1:] for s in seqs]
        return np.log(self.unigram_[_flat(targets)])

    def tune(self, heldout: Sequence[np.ndarray], grid: Sequence[float] = LAMBDA_GRID) -> float:
        """Set ``lam`` to the grid value with the best held-out likelihood; return it."""
        ml, uni, seen = self._pairs(heldout)
        best = max(
            grid,
            key=lambda lam: float(np.log(np.where(seen, lam * ml + (1 - lam) * uni, uni)).sum()),
        )
        self.lam = float(best)
        return self.lam


def ngram_baselines(
    train_ids: Any, eval_ids: Any, vocab_size: int, *, k: float = 1.0
) -> dict[str, float]:
    """Unigram and interpolated-bigram perplexities on the evaluation sequences.

    See the module notes for the definitions. Scores tokens 1..L-1 of each evaluation
    sequence, as :func:`collapse_eval.text.model.perplexity` does on blocks.

    Examples
    --------
    >>> train = np.array([[0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0]])
    >>> out = ngram_baselines(train, np.array([[0, 1, 0, 1]]), vocab_size=2)
    >>> round(out["unigram_ppl"], 3), out["bigram_ppl"] < 1.2
    (2.0, True)
    """
    train = as_sequences(train_ids, "train_ids")
    evals = as_sequences(eval_ids, "eval_ids")
    _check_vocab(train, vocab_size, "train_ids")
    _check_vocab(evals, vocab_size, "eval_ids")
    if not any(s.size >= 2 for s in evals):
        raise InputError("eval_ids need a sequence of at least 2 tokens")
    if not any(s.size >= 2 for s in train):
        raise InputError("train_ids need a sequence of at least 2 tokens")
    if len(train) >= 10:
        cut = len(train) - max(1, len(train) // 10)
        fit_part, heldout = train[:cut], train[cut:]
    else:  # a few long sequences: hold out the end of each
        cuts = [max(1, int(len(s) * 0.9)) for s in train]
        fit_part = [s[:c] for s, c in zip(train, cuts, strict=True)]
        heldout = [s[c - 1 :] for s, c in zip(train, cuts, strict=True)]
    lam = BigramModel(int(vocab_size), k=k).fit(fit_part).tune(heldout)
    model = BigramModel(int(vocab_size), k=k, lam=lam).fit(train)
    return {
        "unigram_ppl": float(math.exp(-model.unigram_log_prob(evals).mean())),
        "bigram_ppl": float(math.exp(-model.log_prob(evals).mean())),
    }


# --------------------------------------------------------------------------- tail metrics


def distinct_n(seqs: Any, n: int = 2) -> float:
    """Distinct n-grams / total n-grams, n-grams taken inside each sequence (``nan`` if none).

    Examples
    --------
    >>> distinct_n([[1, 2, 1, 2]], 2)  # 12, 21, 12: two distinct of three
    0.6666666666666666
    >>> distinct_n([[1, 2, 3], [1, 2, 3]], 1)
    0.5
    """
    items = as_sequences(seqs, "seqs")
    codes = ngram_codes(items, n, _base(items))
    if codes.size == 0:
        return float("nan")
    return float(np.unique(codes).size / codes.size)


def rare_ngram_recall(
    human_ids: Any, generated_ids: Any, *, n: int = 2, max_count: int = 5
) -> float:
    """Share of the human data's rare n-grams (seen 1..``max_count`` times) that the generated
    text contains at least once (``nan`` when the human data has none).

    Examples
    --------
    >>> human = [[1, 2, 3, 1, 2, 3, 1, 2, 9]]  # bigrams 12 x3, 23 x2, 31 x2, 29 x1
    >>> rare_ngram_recall(human, [[2, 3, 4]], n=2, max_count=2)  # rare: 23, 31, 29
    0.3333333333333333
    """
    if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1:
        raise ConfigError(f"max_count must be a positive integer, got {max_count!r}")
    human = as_sequences(human_ids, "human_ids")
    generated = as_sequences(generated_ids, "generated_ids")
    base = _base(human, generated)
    codes, counts = np.unique(ngram_codes(human, n, base), return_counts=True)
    rare = codes[counts <= max_count]
    if rare.size == 0:
        return float("nan")
    seen = np.isin(rare, ngram_codes(generated, n, base), assume_unique=False)
    return float(seen.mean())


def unigram_kl(
    human_ids: Any, generated_ids: Any, vocab_size: int, *, alpha: float = 0.5
) -> float:
    """KL(human || generated) in nats between add-``alpha`` smoothed token frequencies.

    Examples
    --------
    >>> unigram_kl([[1, 2, 2, 3]], [[2, 3, 1, 2]], vocab_size=4)
    0.0
    >>> unigram_kl([[1, 2, 2, 3]], [[2, 2, 2, 2]], vocab_size=4) > 0.3
    True
    """
    if not alpha > 0:
        raise ConfigError(f"alpha must be > 0 (KL needs every probability positive), got {alpha}")
    human = as_sequences(human_ids, "human_ids")
    generated = as_sequences(generated_ids, "generated_ids")
    _check_vocab(human, vocab_size, "human_ids")
    _check_vocab(generated, vocab_size, "generated_ids")
    h = np.bincount(_flat(human), minlength=vocab_size) + alpha
    g = np.bincount(_flat(generated), minlength=vocab_size) + alpha
    p, q = h / h.sum(), g / g.sum()
    return float(max(0.0, np.sum(p * (np.log(p) - np.log(q)))))


def vocab_coverage(
    generated_ids: Any, vocab_size: int, *, reference_ids: Any = None
) -> float:
    """Share of the reference's token types that the generated text uses at least once.

    Without ``reference_ids``, the share of all ``vocab_size`` types.

    Examples
    --------
    >>> vocab_coverage([[1, 2, 2]], 10, reference_ids=[[1, 2, 3, 4]])
    0.5
    >>> vocab_coverage([[1, 2, 2]], 10)
    0.2
    """
    generated = as_sequences(generated_ids, "generated_ids")
    _check_vocab(generated, vocab_size, "generated_ids")
    used = np.bincount(_flat(generated), minlength=vocab_size) > 0
    if reference_ids is None:
        return float(used.sum() / vocab_size)
    reference = as_sequences(reference_ids, "reference_ids")
    _check_vocab(reference, vocab_size, "reference_ids")
    types = np.bincount(_flat(reference), minlength=vocab_size) > 0
    if not types.any():
        return float("nan")
    return float((used & types).sum() / types.sum())


def perplexity_quantiles(
    values: Any, qs: Sequence[float] = (5, 50, 95, 99)
) -> dict[str, float]:
    """Percentiles of per-sequence perplexities, keyed ``perplexity_q05`` ... (``nan`` if empty).

    Examples
    --------
    >>> perplexity_quantiles(np.arange(1, 102), qs=(50, 99))
    {'perplexity_q50': 51.0, 'perplexity_q99': 100.0}
    """
    arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values,
                     dtype=np.float64).reshape(-1)
    for q in qs:
        if not 0 <= q <= 100:
            raise ConfigError(f"quantiles are percentages in [0, 100], got {q}")
    keys = [
        f"perplexity_q{int(q):02d}" if float(q).is_integer()
        else "perplexity_q" + f"{q:g}".replace(".", "_")
        for q in qs
    ]
    if arr.size == 0:
        return {k: float("nan") for k in keys}
    vals = np.percentile(arr, list(qs))
    return {k: float(v) for k, v in zip(keys, vals, strict=True)}
