"""One fixed-length vector per document from its per-token statistics.

A linear model needs the same columns for a 40-token tweet and a 500-token essay, so every
per-token series (the LM's log-probability, entropy, variance and rank, the n-gram models'
log-probabilities, and differences between them) is summarised by its mean, spread, quantiles
and extremes over the document and over sliding windows (a paragraph pasted from a model into a
human text shows in the window extremes before it moves the mean). A few whole-document
criteria (Fast-DetectGPT's, Binoculars' ratio with one model, the length) are added as they are.
"""

from __future__ import annotations

import math

import numpy as np

from provenance.detectors.lm_statistics import fast_detectgpt_criterion

#: Per-token series built by :func:`token_series`, in column order.
SERIES = (
    "logp", "entropy", "var", "log_rank", "discrepancy",
    "unigram", "bigram", "trigram", "logp_minus_trigram", "logp_minus_unigram",
)
#: Summaries of each series, in order.
SUMMARIES = ("mean", "std", "q10", "q25", "q50", "q75", "q90", "min", "max",
             "window_mean_min", "window_mean_max")
#: Whole-document criteria appended after the summaries.
DOCUMENT = ("fast_detectgpt", "binoculars_ratio", "log_tokens")
WINDOW = 16


def feature_names() -> list[str]:
    """Column names of :func:`document_vector`, ``series.summary`` then the document criteria."""
    return [f"{s}.{m}" for s in SERIES for m in SUMMARIES] + list(DOCUMENT)


def token_series(lm_terms: np.ndarray, ngram_logp: np.ndarray) -> np.ndarray:
    """(T, len(SERIES)) per-token series from the LM's (T, 4) terms and the n-grams' (T, 3).

    Examples
    --------
    >>> lm = np.array([[-1.0, -2.0, 1.0, 0.0], [-3.0, -2.0, 4.0, 1.0]])
    >>> ng = np.array([[-5.0, -4.0, -3.0], [-6.0, -5.0, -4.0]])
    >>> token_series(lm, ng)[:, 4].tolist()                # (logp - mu) / sqrt(var)
    [1.0, -0.5]
    """
    logp, mu, var, log_rank = (lm_terms[:, i] for i in range(4))
    uni, bi, tri = (ngram_logp[:, i] for i in range(3))
    discrepancy = (logp - mu) / np.sqrt(np.maximum(var, 1e-8))
    return np.stack([logp, -mu, var, log_rank, discrepancy, uni, bi, tri, logp - tri,
                     logp - uni], axis=1)


def _summaries(series: np.ndarray) -> np.ndarray:
    q = np.quantile(series, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0)
    width = min(WINDOW, len(series))
    kernel = np.ones(width) / width
    windows = np.stack([np.convolve(series[:, j], kernel, mode="valid")
                        for j in range(series.shape[1])], axis=1)
    parts = [series.mean(0), series.std(0), *q, series.min(0), series.max(0),
             windows.min(0), windows.max(0)]
    return np.stack(parts, axis=1).ravel()  # series-major: s0.mean, s0.std, ..., s1.mean ...


def document_vector(lm_terms: np.ndarray, ngram_logp: np.ndarray) -> np.ndarray:
    """The fixed-length feature vector of one document (see :func:`feature_names`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lm = np.column_stack([-rng.random(40), -rng.random(40), rng.random(40) + .1,
    ...                       rng.random(40)])
    >>> v = document_vector(lm, -rng.random((40, 3)))
    >>> v.shape == (len(feature_names()),), bool(np.isfinite(v).all())
    (True, True)
    """
    n = min(len(lm_terms), len(ngram_logp))
    lm_terms, ngram_logp = lm_terms[:n], ngram_logp[:n]
    series = token_series(lm_terms, ngram_logp)
    entropy = float(-lm_terms[:, 1].mean())
    ratio = float(-lm_terms[:, 0].mean() / entropy) if entropy > 0 else 0.0
    fdg = fast_detectgpt_criterion(lm_terms[:, :3])
    fdg = 0.0 if math.isnan(fdg) else fdg
    return np.concatenate([_summaries(series), [fdg, ratio, math.log(n + 1)]])
