"""Which head of the supervised detector transfers to a dataset it never saw?

Leave one ``../shared/data/detect`` file out; fit the token n-gram models and the stacked head
inputs on the other three once (as :class:`provenance.detectors.training.Trainer` does), then
fit heads that differ in one respect and score the held-out file:

* **columns**: all features (the shipped recipe), the language model's only, the token n-gram
  models' only, the per-document centre and spread only, no window extremes;
* **weights**: classes balanced (the shipped recipe) or every (input file, class) cell
  balanced, so that the largest file does not set the direction alone;
* **penalty**: the L2 ``alpha`` of the network (training picks one of ``HEAD_ALPHAS`` by
  leave-one-file-out inside its files, and chose 30 for the shipped detector; here each is
  fixed, to compare like with like);
* **seeds**: one network, or the mean log-odds of five (what ``train`` fits since
  ``HEAD_SEEDS``; every other variant here is one network, to compare like with like);
* **more inputs**: GLTR's rank buckets (share of tokens the scorer ranked first, in its top 4,
  11, 101, below 1,000: Gehrmann et al. 2019) and surface style (sentence-length spread, word
  length, type-token ratio, function words, punctuation, digits, capitals per word or
  character), and the rhythm of the log-probability series (its power spectrum in five bands
  and spectral entropy, FourierGPT: Xu et al. 2024; autocorrelation at lags 1, 2, 4; the
  multiscale diversity entropy of Lastde, Xu et al. 2025), of the raw log-probability and of
  Fast-DetectGPT's per-token discrepancy, appended to every column;
* **invariant columns**: only the columns whose direction (AUROC above or below 0.5) agrees on
  every training file, a domain-generalisation heuristic: a column that flips between the
  files it was fitted on need not hold on the next one.

No threshold, no cascade: AUROC only, the number the head decides. A variant that wins here is a
candidate for :func:`provenance.detectors.train`, to be confirmed by
``bench_detect_lodo.py`` (which trains the whole recipe) before it ships. The held-out files are
the only ones there are, so a small gain here can be noise: compare the mean *and* each file.

Per-token statistics come from the token store (as ``bench_detect_lodo.py``): a few minutes
once it holds every document.

    python benchmarks/ablate_detect_head.py
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)
from bench_detect_lodo import DATA, labelled_table  # noqa: E402

from provenance.detectors.document_features import DOCUMENT, feature_names  # noqa: E402
from provenance.detectors.supervised import MLPHead  # noqa: E402
from provenance.detectors.training import Trainer  # noqa: E402
from provenance.evaluate import roc_auc  # noqa: E402

LM_SERIES = ("logp", "entropy", "var", "log_rank", "discrepancy")
NGRAM_SERIES = ("unigram", "bigram", "trigram", "logp_minus_trigram", "logp_minus_unigram")


def columns(keep: Callable[[str], bool]) -> np.ndarray:
    return np.array([i for i, name in enumerate(feature_names()) if keep(name)])


ALL = columns(lambda n: True)


def gltr_buckets(lm_terms: np.ndarray) -> list[float]:
    """Shares of tokens at rank 0, < 4, < 11, < 101 and >= 1,000 (rank = exp(log_rank) - 1)."""
    rank = np.expm1(lm_terms[:, 3])
    return [float(np.mean(rank < 0.5)), float(np.mean(rank < 3.5)), float(np.mean(rank < 10.5)),
            float(np.mean(rank < 100.5)), float(np.mean(rank >= 999.5))]


_FUNCTION_WORDS = frozenset("the a an of to in and or but is are was were be been it this that "
                            "with for on as by at from".split())


def style(text: str) -> list[float]:
    """Surface style that needs no model: sentence and word lengths, vocabulary, punctuation."""
    words = re.findall(r"[A-Za-z']+", text)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    lengths = np.array([len(re.findall(r"[A-Za-z']+", s)) for s in sentences] or [0])
    word_len = np.array([len(w) for w in words] or [0])
    n, chars = max(len(words), 1), max(len(text), 1)
    first = [w.lower() for w in words[:200]]
    return [math.log1p(lengths.mean()), lengths.std() / max(lengths.mean(), 1.0),
            word_len.mean(), word_len.std(), len(set(first)) / max(len(first), 1),
            sum(w in _FUNCTION_WORDS for w in first) / max(len(first), 1),
            *(text.count(c) / n for c in ",;:(\"-!?"),
            sum(ch.isdigit() for ch in text) / chars, sum(ch.isupper() for ch in text) / chars]


def spectrum(series: np.ndarray, length: int = 128) -> list[float]:
    """Shares of the standardised series' power in five frequency bands, and its spectral
    entropy: a human text's surprise comes in bursts, a model's more evenly (FourierGPT)."""
    z = (series - series.mean()) / (series.std() + 1e-8)
    power = np.abs(np.fft.rfft(np.pad(z[:length], (0, max(0, length - len(z)))))) ** 2
    share = power[1:] / (power[1:].sum() + 1e-12)
    bands = [float(share[a - 1:b - 1].sum()) for a, b in ((1, 4), (4, 8), (8, 16), (16, 32),
                                                         (32, length // 2 + 1))]
    return [*bands, float(-(share * np.log(share + 1e-12)).sum())]


def autocorrelation(series: np.ndarray, lags: tuple[int, ...] = (1, 2, 4)) -> list[float]:
    z = series - series.mean()
    denominator = float((z * z).sum()) + 1e-12
    return [float((z[:-lag] * z[lag:]).sum() / denominator) if len(z) > lag else 0.0
            for lag in lags]


def diversity_entropy(series: np.ndarray, scale: int, dim: int = 3, bins: int = 10) -> float:
    """Lastde's diversity entropy: the normalised entropy of the cosine similarities between
    consecutive ``dim``-token patterns of the series averaged over ``scale`` tokens."""
    s = np.convolve(series, np.ones(scale) / scale, "valid")[::scale]
    if len(s) < dim + 2:
        return 0.0
    patterns = np.stack([s[i:len(s) - dim + 1 + i] for i in range(dim)], axis=1)
    patterns -= patterns.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(patterns, axis=1) + 1e-8
    cosine = (patterns[:-1] * patterns[1:]).sum(axis=1) / (norms[:-1] * norms[1:])
    counts, _ = np.histogram(cosine, bins=bins, range=(-1.0, 1.0))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(bins))


def rhythm(lm_terms: np.ndarray) -> list[float]:
    """How surprise moves through the document: spectrum, autocorrelation and diversity
    entropy of the log-probability and of the per-token Fast-DetectGPT discrepancy."""
    logp, mu, var = lm_terms[:, 0], lm_terms[:, 1], lm_terms[:, 2]
    discrepancy = (logp - mu) / np.sqrt(np.maximum(var, 1e-8))
    return [v for s in (logp, discrepancy)
            for v in (*spectrum(s), *autocorrelation(s),
                      *(diversity_entropy(s, scale) for scale in (1, 2, 3)))]


RHYTHM_WIDTH = 2 * (6 + 3 + 3)


def invariant_columns(x: np.ndarray, y: np.ndarray, files: np.ndarray) -> np.ndarray:
    """Columns whose AUROC is on the same side of 0.5 in every training file."""
    per_file = np.stack([[roc_auc(y[files == f], x[files == f, j]) for j in range(x.shape[1])]
                         for f in np.unique(files)])
    return np.flatnonzero((per_file > 0.5).all(0) | (per_file < 0.5).all(0))


@dataclass(frozen=True)
class Variant:
    """One head: which columns (None: all; a function of the training inputs, labels and
    files), what penalty, cells balanced by file, seeds, extra inputs."""

    cols: np.ndarray | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    alpha: float = 30.0
    by_file: bool = False
    seeds: int = 1
    extra: tuple[str, ...] = ()


#: The shipped detector's head is alpha 30 on all columns (``train`` chose it among
#: ``HEAD_ALPHAS`` by leave-one-dataset-out AUROC on the four files), five networks averaged
#: (``five_seeds``); the baseline is one network, as every other variant.
BASE = "alpha30_one_network"
VARIANTS: dict[str, Variant] = {
    BASE: Variant(),
    "alpha3": Variant(alpha=3.0),
    "alpha10": Variant(alpha=10.0),
    "alpha100": Variant(alpha=100.0),
    "lm_columns_only": Variant(cols=columns(lambda n: n.split(".")[0] in LM_SERIES
                                            or n in DOCUMENT)),
    "ngram_columns_only": Variant(cols=columns(lambda n: n.split(".")[0] in NGRAM_SERIES
                                               or n == "log_tokens")),
    "centre_and_spread_only": Variant(cols=columns(lambda n: n.split(".")[-1] in
                                                   ("mean", "std", "q50") or n in DOCUMENT)),
    "no_window_extremes": Variant(cols=columns(lambda n: "window" not in n)),
    "five_seeds": Variant(seeds=5),
    "file_balanced": Variant(by_file=True),
    "file_balanced_five_seeds": Variant(by_file=True, seeds=5),
    "plus_gltr_buckets": Variant(extra=("gltr",)),
    "plus_style": Variant(extra=("style",)),
    "plus_rhythm": Variant(extra=("rhythm",)),
    "invariant_columns": Variant(cols=invariant_columns),
}


def extra_inputs(data: Any, table: Any) -> dict[str, np.ndarray]:
    """The appended inputs of every document (zeros where it was not scored)."""
    gltr = np.array([gltr_buckets(t) if t is not None else [0.0] * 5 for t in table.lm_terms])
    surface = np.array([style(t) if isinstance(t, str) else [0.0] * 16 for t in data.texts])
    moves = np.array([rhythm(t) if t is not None else [0.0] * RHYTHM_WIDTH
                      for t in table.lm_terms])
    return {"gltr": gltr, "style": surface, "rhythm": moves}


def held_out_aurocs(name: str, data: Any, trainer: Trainer, scored: np.ndarray,
                    extras: dict[str, np.ndarray]) -> dict[str, float]:
    """AUROC on file ``name`` of every variant, fitted on the other files."""
    y, files = data.y, data.groups["dataset"]
    test = np.flatnonzero((files == name) & scored)
    train = np.flatnonzero((files != name) & scored)
    inner = trainer.stacked_train(train)
    applied = trainer.apply(trainer.ngram_model(train), None, test)
    out = {}
    for label, v in VARIANTS.items():
        x_train = np.column_stack([inner.x, *(extras[e][train] for e in v.extra)])
        x_test = np.column_stack([applied.x, *(extras[e][test] for e in v.extra)])
        cols = (v.cols(inner.x, y[train], files[train]) if callable(v.cols)
                else np.r_[ALL if v.cols is None else v.cols,
                           np.arange(inner.x.shape[1], x_train.shape[1])])
        log_odds = MLPHead.fit(x_train[:, cols], y[train], alpha=v.alpha, seeds=v.seeds,
                               groups=files[train] if v.by_file else None
                               ).log_odds(x_test[:, cols])
        out[label] = round(float(roc_auc(y[test], log_odds)), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--max-tokens", type=int, default=128,
                        help="the scorer's token limit (the shipped detector's: 128)")
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "ablate_detect_head.json")
    args = parser.parse_args()
    start = time.perf_counter()
    files, data, table, trainer = labelled_table(args.data, args.max_tokens, "cpu")
    extras = extra_inputs(data, table)
    per_file = {}
    for path in files:
        t0 = time.perf_counter()
        per_file[path.stem] = held_out_aurocs(path.stem, data, trainer, table.scored, extras)
        print(f"held out {path.stem} ({time.perf_counter() - t0:.0f} s)", flush=True)
    means = {v: round(float(np.mean([f[v] for f in per_file.values()])), 4) for v in VARIANTS}
    base = BASE
    print(f"\n{'variant':<36}" + "".join(f"{n[:10]:>11}" for n in per_file) + f"{'mean':>8}"
          f"{'vs base':>12}")
    for variant in VARIANTS:
        print(f"{variant:<36}" + "".join(f"{f[variant]:>11.3f}" for f in per_file.values())
              + f"{means[variant]:>8.3f}{means[variant] - means[base]:>+12.3f}")
    write_result(args.output, {
        "benchmark": "ablate_detect_head", "unit": "AUROC on the held-out file",
        "results": per_file, "mean": means,
        "params": {"max_tokens": args.max_tokens, "hidden": 32, "baseline": BASE,
                   "seconds": round(time.perf_counter() - start, 1)},
        "machine": machine()})


if __name__ == "__main__":
    main()
