"""Token n-gram language models fitted on human text: what "ordinary" text predicts.

Ghostbuster's insight (Verma et al., NAACL 2024) is that a large LM's probabilities mean more
next to a weak model's: a token the LM finds likely but a unigram or trigram model of human text
does not is a sign of the LM's own style. :class:`TokenNgramModel` counts unigrams, bigrams and
trigrams of the scorer's token ids over human text and gives every position its log-probability
under each order, so the features line up with the LM's per-token statistics.

Bigrams and trigrams are hashed into a fixed number of buckets (no vocabulary to store, a
bounded size on disk); collisions only blur rare n-grams, which the interpolation with the lower
orders absorbs. Counts are saved as safetensors, never pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from provenance.atomic import atomic_path
from provenance.errors import ConfigError, InputError

#: Column order of :meth:`TokenNgramModel.log_probs`.
NGRAM_COLUMNS = ("unigram", "bigram", "trigram")
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hash(*columns: np.ndarray, buckets: int) -> np.ndarray:
    """A bucket per row of token-id columns (a multiplicative hash, stable across runs)."""
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in columns:
            h = (h ^ col.astype(np.uint64)) * _MIX
            h ^= h >> np.uint64(29)
    return (h % np.uint64(buckets)).astype(np.int64)


class TokenNgramModel:
    """Interpolated unigram / bigram / trigram probabilities of token ids, from human text.

    ``p_uni`` is add-one smoothed; the bigram and trigram estimates are Witten-Bell style
    interpolations with the order below, ``lambda = c(context) / (c(context) + k * types)``
    approximated by ``c(context) / (c(context) + k)`` (no type counts are kept). Every position
    of a document gets all three, so a document of T tokens gives a (T - 1, 3) array aligned with
    the LM's statistics (position t predicts token t from the tokens before it).

    Examples
    --------
    >>> model = TokenNgramModel(vocab_size=10, buckets=64).fit([[1, 2, 3, 1, 2, 3, 1, 2, 3]])
    >>> lp = model.log_probs([1, 2, 3, 4])
    >>> lp.shape, bool(lp[1, 2] > lp[2, 2])     # "3" after "1 2" is likely, "4" never seen
    ((3, 3), True)
    """

    def __init__(self, vocab_size: int, buckets: int = 2**19, smoothing: float = 2.0) -> None:
        if vocab_size < 2 or buckets < 16:
            raise ConfigError("TokenNgramModel needs vocab_size >= 2 and buckets >= 16")
        self.vocab_size = int(vocab_size)
        self.buckets = int(buckets)
        self.smoothing = float(smoothing)
        self.unigram = np.zeros(self.vocab_size, dtype=np.int32)
        self.bigram = np.zeros(self.buckets, dtype=np.int32)
        self.trigram = np.zeros(self.buckets, dtype=np.int32)
        self.bigram_context = np.zeros(self.buckets, dtype=np.int32)

    def fit(self, documents: Sequence[Sequence[int]]) -> TokenNgramModel:
        """Count the n-grams of token-id sequences (call again to add more)."""
        for doc in documents:
            ids = np.asarray(doc, dtype=np.int64)
            if len(ids) == 0:
                continue
            if ids.min() < 0 or ids.max() >= self.vocab_size:
                raise InputError(f"token id outside the vocabulary of {self.vocab_size}")
            np.add.at(self.unigram, ids, 1)
            if len(ids) >= 2:
                np.add.at(self.bigram, _hash(ids[:-1], ids[1:], buckets=self.buckets), 1)
            if len(ids) >= 3:
                a, b, c = ids[:-2], ids[1:-1], ids[2:]
                np.add.at(self.trigram, _hash(a, b, c, buckets=self.buckets), 1)
                np.add.at(self.bigram_context, _hash(a, b, buckets=self.buckets), 1)
        return self

    def log_probs(self, ids: Sequence[int]) -> np.ndarray:
        """(T - 1, 3) log-probabilities of tokens 1..T-1 under each order (see class doc)."""
        ids = np.clip(np.asarray(ids, dtype=np.int64), 0, self.vocab_size - 1)
        if len(ids) < 2:
            return np.zeros((0, 3))
        total = self.unigram.sum()
        k = self.smoothing
        target, prev = ids[1:], ids[:-1]
        p_uni = (self.unigram[target] + 1.0) / (total + self.vocab_size)
        c_prev = self.unigram[prev].astype(np.float64)
        c_bi = self.bigram[_hash(prev, target, buckets=self.buckets)]
        lam2 = c_prev / (c_prev + k)
        p_bi = lam2 * c_bi / np.maximum(c_prev, 1.0) + (1 - lam2) * p_uni
        p_tri = p_bi.copy()
        if len(ids) >= 3:
            a, b, c = ids[:-2], ids[1:-1], ids[2:]
            c_ctx = self.bigram_context[_hash(a, b, buckets=self.buckets)].astype(np.float64)
            c_tri = self.trigram[_hash(a, b, c, buckets=self.buckets)]
            lam3 = c_ctx / (c_ctx + k)
            p_tri[1:] = lam3 * np.minimum(c_tri, c_ctx) / np.maximum(c_ctx, 1.0) \
                + (1 - lam3) * p_bi[1:]
        return np.log(np.stack([p_uni, p_bi, p_tri], axis=1))

    def tensors(self) -> dict[str, np.ndarray]:
        """The counts, for safetensors."""
        return {"unigram": self.unigram, "bigram": self.bigram, "trigram": self.trigram,
                "bigram_context": self.bigram_context}

    def spec(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "buckets": self.buckets,
                "smoothing": self.smoothing}

    def save(self, path: Path) -> None:
        """Write the counts as safetensors, atomically."""
        from safetensors.numpy import save_file

        with atomic_path(path) as tmp:
            save_file(self.tensors(), str(tmp))

    @classmethod
    def load(cls, path: Path, spec: dict[str, Any]) -> TokenNgramModel:
        """Counts written by :meth:`save`, checked against the spec's shapes."""
        from safetensors.numpy import load_file

        model = cls(int(spec["vocab_size"]), int(spec["buckets"]), float(spec["smoothing"]))
        tensors = load_file(str(path))
        for name, array in model.tensors().items():
            if name not in tensors or tensors[name].shape != array.shape:
                raise InputError(f"n-gram counts {name!r} missing or of the wrong shape",
                                 file=str(path))
            setattr(model, name, tensors[name].astype(np.int32))
        return model
