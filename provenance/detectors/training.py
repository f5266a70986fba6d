"""Train the supervised detector: ``tailguard detect-train`` and :func:`train`.

The recipe (Ghostbuster, Verma et al. NAACL 2024, with an offline scorer): per-token statistics
of a causal LM (cached in a :class:`~.token_store.TokenStore`) and token n-gram models of the
training set's human text, *stacked out-of-fold* (a document's n-gram features never come from
a model that counted it), summarised per document and fed to a small network
(:class:`~.supervised.MLPHead`) that learns the direction of every feature. The hashed
character n-gram classifier is fitted too, as the cascade's cheap first stage.

What makes the result trustworthy is how it is checked, not how it is fitted:

* **Grouped cross-validation.** Leave-one-generator-out, leave-one-domain-out and
  leave-one-dataset-out AUROC and TPR at the target FPR, each split refitting everything
  (n-gram models, character classifier, head) on the other groups only. A detector that only
  knows its training generators shows it here.
* **Honest calibration.** The threshold for ``target_fpr`` is set on out-of-fold scores of the
  human documents (optionally the worst group's, ``calibrate_by``), the Platt map on
  out-of-fold scores of both classes, and an abstention band keeps the undecided middle
  ``unknown``.
* **A cascade band** for the character classifier's first stage, chosen on the out-of-fold
  scores so AUROC drops by at most ``max_auroc_loss``.

The saved folder holds ``detector.json`` (spec, scorer id, threshold, calibration), one
safetensors file, ``training_report.json`` and ``DATA_CARD.md``; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from provenance.detectors.base import reason_counts
from provenance.detectors.human_reference import (
    MIN_REFERENCE_TEXTS,
    HumanReference,
    against_sources,
    by_source,
)
from provenance.detectors.ngram import NgramClassifier, NgramParams
from provenance.detectors.supervised import (
    HEAD_SEEDS,
    MLPHead,
    Stage1,
    SupervisedDetector,
    collapse_whitespace,
    head_features,
)
from provenance.detectors.token_ngrams import TokenNgramModel
from provenance.errors import ConfigError, InputError, TailguardWarning
from provenance.labels import corpus_labels

if TYPE_CHECKING:
    from provenance.thresholds import Guarantee

GROUPINGS = ("generator", "domain", "dataset")
#: Candidate L2 penalties of the head (see :meth:`Trainer.choose_alpha`). The stronger two
#: came from ``benchmarks/ablate_detect_head.py``: held out, a penalty of 10 scored 0.749 mean
#: AUROC over the four labelled files against 0.738 at 3; training picks among them itself.
HEAD_ALPHAS = (0.3, 3.0, 10.0, 30.0)


@dataclass
class LabelledTexts:
    """Training documents: whitespace-collapsed texts, 0/1 labels and their groups."""

    texts: list[str]
    y: np.ndarray
    groups: dict[str, np.ndarray]  # generator, domain, dataset (input file) per document
    files: list[dict[str, Any]]  # path, sha256, rows used, rows refused


def read_labelled(
    paths: Sequence[str | os.PathLike],
    *,
    text_field: str = "text",
    label_field: str = "label",
    generator_field: str = "generator",
    domain_field: str = "domain",
) -> LabelledTexts:
    """Every labelled corpus in ``paths`` (any format tailguard reads), whitespace collapsed.

    A file without the label field is refused naming it; rows the reader rejects are counted
    per file in :attr:`LabelledTexts.files` (never silently dropped).
    """
    from provenance.corpus import read_corpus

    texts: list[str] = []
    labels: list[Any] = []
    groups: dict[str, list[str]] = {g: [] for g in GROUPINGS}
    files = []
    for path in paths:
        corpus = read_corpus(path, text_field=text_field, origins=True)
        frame = corpus.frame
        if label_field not in frame.columns:
            raise InputError(f"no label field {label_field!r} (fields: "
                             f"{', '.join(frame.columns)}); set --label-field", file=str(path))
        n = frame.height
        y = corpus_labels(corpus, label_field).astype(np.int64)
        labels.extend(y.tolist())
        texts.extend(collapse_whitespace(t) for t in frame.get_column(text_field).to_list())
        for name, field in (("generator", generator_field), ("domain", domain_field)):
            values = (frame.get_column(field).cast(str).fill_null("unspecified").to_list()
                      if field in frame.columns else ["unspecified"] * n)
            groups[name].extend(values)
        groups["generator"][-n:] = ["human" if lab == 0 else g for lab, g in
                                    zip(y.tolist(), groups["generator"][-n:], strict=True)]
        groups["dataset"].extend([Path(str(path)).stem] * n)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() \
            else None
        files.append({"path": str(path), "sha256": digest, "rows": n,
                      "rejected": corpus.counts.rejected})
    y = np.asarray(labels, dtype=np.int64)
    if len(set(y.tolist())) < 2:
        raise InputError("training needs both human and machine documents")
    return LabelledTexts(texts, y, {k: np.asarray(v) for k, v in groups.items()}, files)


@dataclass
class FeatureTable:
    """Per-document inputs that no fold changes: LM statistics, token ids, char n-grams."""

    lm_terms: list[np.ndarray | None]
    reasons: list[str | None]
    ids: list[list[int] | None]  # the scored (truncated) token ids, aligned with lm_terms
    full_ids: list[list[int]]  # every token, for fitting the n-gram models
    char_matrix: Any  # sparse, one row per document
    vocab_size: int

    @property
    def scored(self) -> np.ndarray:
        return np.array([t is not None for t in self.lm_terms])


def build_table(data: LabelledTexts, scorer: Any, store: Any, char: NgramClassifier,
                progress: Callable[[int], None] | None = None) -> FeatureTable:
    """Score every document once (the store resumes a killed run) and tokenise it."""
    terms, reasons, _ = store.terms(scorer.scorer_id(), data.texts, scorer.score_terms,
                                    progress=progress)
    ids, _ = scorer.encode([t if isinstance(t, str) else "" for t in data.texts])
    full = scorer.tokenizer([t if isinstance(t, str) else "" for t in data.texts],
                            add_special_tokens=False)["input_ids"]
    good = [t if isinstance(t, str) and t.strip() else " " for t in data.texts]
    return FeatureTable(terms, reasons, ids, list(full), char.features(good),
                        len(scorer.tokenizer))


@dataclass
class Stacked:
    """Head inputs of the rows a fold is applied to, and the char score of each."""

    x: np.ndarray
    char_raw: np.ndarray


@dataclass
class ReferenceFit:
    """A fitted reference head with the human references of its training sources."""

    head: MLPHead
    own: dict[str, HumanReference]
    pooled: HumanReference

    def log_odds(self, x: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """Each row against its source's reference (the pooled one for an unknown source)."""
        return self.head.log_odds(against_sources(x, sources, self.own, self.pooled))


class Trainer:
    """Fits the layers on one set of documents and applies them to another.

    Examples are in the tests: this is the machinery behind :func:`train`.
    """

    def __init__(self, table: FeatureTable, y: np.ndarray, char_params: NgramParams,
                 *, inner_folds: int = 3, seed: int = 0,
                 head_alphas: Sequence[float] = HEAD_ALPHAS, groups: np.ndarray | None = None,
                 ngram_buckets: int = 2**19, head_seeds: int = HEAD_SEEDS,
                 token_ngrams: bool = True) -> None:
        self.table, self.y = table, y
        self.groups = groups
        self.char_params = char_params
        self.inner_folds = inner_folds
        self.seed = seed
        self.head_alphas = tuple(head_alphas)
        #: networks each head averages (:meth:`~.supervised.MLPHead.fit`)
        self.head_seeds = head_seeds
        #: a fixed L2 penalty for every fit (None: each fit chooses among ``head_alphas``)
        self.alpha: float | None = None
        self.ngram_buckets = ngram_buckets
        #: False: the token n-gram models count nothing, so their columns are constant and the
        #: head reads the language model's columns only (see :func:`fit_detector`)
        self.token_ngrams = token_ngrams

    def ngram_model(self, rows: np.ndarray) -> TokenNgramModel:
        human = ([self.table.full_ids[i] for i in rows if self.y[i] == 0] if self.token_ngrams
                 else [])
        return TokenNgramModel(self.table.vocab_size, self.ngram_buckets).fit(human)

    def char_model(self, rows: np.ndarray) -> NgramClassifier:
        return NgramClassifier(self.char_params).fit_matrix(self.table.char_matrix[rows],
                                                             self.y[rows])

    def apply(self, ngrams: TokenNgramModel, char: NgramClassifier | None, rows: np.ndarray
              ) -> Stacked:
        """Head inputs for ``rows`` (all scored) from the fitted n-gram models, and the char
        model's raw score (the first stage's input) of each (NaN without a char model)."""
        raw = (self.table.char_matrix[rows] @ char.coef + char.intercept if char is not None
               else np.full(len(rows), np.nan))
        x = np.stack([head_features(ngrams, self.table.lm_terms[i], self.table.ids[i])
                      for i in rows]) if len(rows) else np.zeros((0, 1))
        return Stacked(x, np.asarray(raw))

    def stacked_train(self, rows: np.ndarray, *, with_char: bool = False) -> Stacked:
        """Out-of-fold head inputs for the training rows (no row sees a model that counted it).

        ``with_char`` adds each row's out-of-fold char score (NaN without): the head does not
        read it, so only an experiment that puts it back into the head needs the extra fits.
        """
        folds = fold_ids(self.y[rows], self.inner_folds, self.seed)
        x = None
        raw = np.zeros(len(rows))
        for f in range(self.inner_folds):
            inside, outside = rows[folds != f], rows[folds == f]
            char = self.char_model(inside) if with_char else None
            part = self.apply(self.ngram_model(inside), char, outside)
            if x is None:
                x = np.zeros((len(rows), part.x.shape[1]))
            x[folds == f], raw[folds == f] = part.x, part.char_raw
        return Stacked(x, raw)

    def fit(self, rows: np.ndarray, *, with_char: bool = True
            ) -> tuple[TokenNgramModel, NgramClassifier | None, MLPHead, Stacked]:
        """Everything fitted on ``rows``, and those rows' out-of-fold head inputs.

        The head's L2 penalty is :attr:`alpha` when set, else chosen on ``rows``
        (:meth:`choose_alpha`). ``with_char=False`` skips the character classifier (the
        first stage), which a cross-validation split that only measures the head never reads.
        """
        inner = self.stacked_train(rows)
        alpha = self.alpha if self.alpha is not None else self.choose_alpha(inner.x, rows)
        head = self.fit_head(inner.x, self.y[rows], alpha)
        char = self.char_model(rows) if with_char else None
        return self.ngram_model(rows), char, head, inner

    def fit_head(self, x: np.ndarray, y: np.ndarray, alpha: float) -> MLPHead:
        """A head with this trainer's seed and number of averaged networks."""
        return MLPHead.fit(x, y, alpha=alpha, seed=self.seed, seeds=self.head_seeds)

    def choose_alpha(self, x: np.ndarray, rows: np.ndarray) -> float:
        """The head's regularisation, chosen for generalising across groups, not fitting them.

        Each candidate is scored by the mean AUROC over leave-one-group-out splits of the
        training rows (``groups``: the input file each came from) — the question the detector
        faces on a new crawl — or over stratified folds when there is one group.
        """
        from provenance.evaluate import roc_auc

        if len(self.head_alphas) == 1:
            return self.head_alphas[0]
        y = self.y[rows]
        groups = None if self.groups is None else self.groups[rows]
        if groups is None or len(set(groups.tolist())) < 2:
            groups = fold_ids(y, self.inner_folds, self.seed)
        held = [g for g in sorted(set(groups.tolist()))
                if len(set(y[groups == g].tolist())) == 2
                and len(set(y[groups != g].tolist())) == 2]
        if not held:
            return self.head_alphas[len(self.head_alphas) // 2]
        best, best_score = self.head_alphas[0], -1.0
        for alpha in self.head_alphas:
            score = float(np.mean([
                roc_auc(y[groups == g], self.fit_head(x[groups != g], y[groups != g], alpha)
                        .log_odds(x[groups == g]))
                for g in held]))
            if score > best_score + 1e-9:
                best, best_score = alpha, score
        return best

    def fix_alpha(self, rows: np.ndarray) -> float:
        """Choose the head's penalty once on ``rows`` and keep it for every later fit.

        Choosing it again inside each of the dozens of cross-validation splits would multiply
        the training time by candidates times datasets, for one scalar.
        """
        self.alpha = None
        self.alpha = self.choose_alpha(self.stacked_train(rows).x, rows)
        return self.alpha

    def predict(self, train_rows: np.ndarray, test_rows: np.ndarray, *, with_char: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """(head log-odds, char raw score) of ``test_rows`` from a fit on ``train_rows``."""
        head, char, _ = self.predict_all(train_rows, test_rows, with_char=with_char,
                                         reference=False)
        return head, char

    def predict_all(self, train_rows: np.ndarray, test_rows: np.ndarray, *,
                    with_char: bool = True, reference: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`predict`, and the reference head's log-odds where one can be fitted (None
        otherwise): each test row measured against the human training rows of its own source,
        as a crawl is against the human text it was recalibrated on."""
        ngrams, char, head, inner = self.fit(train_rows, with_char=with_char)
        applied = self.apply(ngrams, char, test_rows)
        fitted = self.reference_head(inner.x, train_rows) if reference else None
        with_ref = None if fitted is None else fitted.log_odds(applied.x,
                                                               self.groups[test_rows])
        return head.log_odds(applied.x), applied.char_raw, with_ref

    def reference_head(self, inner_x: np.ndarray, rows: np.ndarray) -> ReferenceFit | None:
        """The reference head fitted on ``rows`` (their out-of-fold inputs ``inner_x``), or
        None where fewer than two sources (``groups``) have enough human rows to differ."""
        if self.groups is None:
            return None
        x, own, pooled = by_source(inner_x, self.y[rows], self.groups[rows])
        if len(own) < 2:
            return None
        alpha = self.alpha if self.alpha is not None else self.choose_alpha(inner_x, rows)
        return ReferenceFit(self.fit_head(x, self.y[rows], alpha), own, pooled)


def reference_calibration(criterion: np.ndarray, rows: np.ndarray, y: np.ndarray,
                          sources: np.ndarray, target_fpr: float,
                          guarantee: Guarantee = "expected") -> dict[str, Any]:
    """What a recalibration that adapts the inputs takes from training: the reference head's
    Platt map (its log-odds are on another scale than the plain head's), and its out-of-fold
    AUROC and TPR / FPR at a threshold set as the plain head's is (``target_fpr`` under
    ``guarantee``), each row measured against its own source's human rows."""
    from provenance.detectors.calibration import fit_platt
    from provenance.evaluate import roc_auc
    from provenance.thresholds import calibrate_threshold

    human, machine = rows[y[rows] == 0], rows[y[rows] == 1]
    a, b = fit_platt(criterion[human], criterion[machine])
    threshold = calibrate_threshold(criterion[human], target_fpr, guarantee=guarantee)
    return {"platt": [float(a), float(b)],
            "auroc": float(roc_auc(y[rows], criterion[rows])),
            "tpr": float(np.mean(criterion[machine] >= threshold)),
            "fpr": float(np.mean(criterion[human] >= threshold)),
            "sources": sorted(set(np.asarray(sources)[rows].tolist())),
            "min_reference_texts": MIN_REFERENCE_TEXTS}


def held_out_dataset_scores(trainer: Trainer, rows: np.ndarray, datasets: np.ndarray,
                            head: np.ndarray, char: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(head log-odds, char raw score) of every row from a fit on the *other* datasets.

    Rows of a dataset that cannot be held out (its complement lacks a class) keep ``head`` and
    ``char`` (their out-of-fold scores).
    """
    head, char = head.copy(), char.copy()
    y = trainer.y
    for name in sorted(set(datasets[rows].tolist())):
        test, train = rows[datasets[rows] == name], rows[datasets[rows] != name]
        if len(set(y[train].tolist())) == 2:
            head[test], char[test] = trainer.predict(train, test)
    return head, char


def first_stage(trainer: Trainer, rows: np.ndarray, datasets: np.ndarray, head: np.ndarray,
                char: np.ndarray, max_auroc_loss: float
                ) -> tuple[Stage1 | None, tuple[float, float, float, float] | None, str]:
    """The cascade's first stage from out-of-fold scores: (Stage1 or None, band, basis).

    The char score's Platt map comes from the out-of-fold scores (``head``, ``char``: every
    row's). The first stage settles documents of a crawl unlike the training files, so its band
    is chosen on scores of held-out *datasets* where there are several (``basis``
    ``leave-one-dataset-out``): in distribution the character classifier knows each file's
    vocabulary and looks far better than it transfers.
    """
    from provenance.detectors.calibration import fit_platt

    y = trainer.y
    a, b = fit_platt(char[rows][y[rows] == 0], char[rows][y[rows] == 1])
    basis = "out-of-fold"
    if math.isfinite(max_auroc_loss) and len(set(datasets[rows].tolist())) > 1:
        head, char = held_out_dataset_scores(trainer, rows, datasets, head, char)
        basis = "leave-one-dataset-out"
    band = choose_band(a * char[rows] + b, head[rows], y[rows], max_auroc_loss)
    return (None if band is None else Stage1(a, b, band[0], band[1])), band, basis


def fold_ids(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number per row, stratified by label and seeded.

    >>> fold_ids(np.array([0, 0, 0, 1, 1, 1]), 3, 0).tolist().count(0)
    2
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y), dtype=np.int64)
    for label in (0, 1):
        where = np.flatnonzero(y == label)
        out[rng.permutation(where)] = np.arange(len(where)) % k
    return out


def grouped_splits(data: LabelledTexts, scored: np.ndarray, grouping: str
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(group, train rows, test rows) for leaving each group out.

    Generators: the test set is the generator's documents plus a seeded half of the human
    documents of the datasets it appears in (humans nobody trained on); the other half stays in
    training, so a single-dataset corpus still has humans on both sides. Domains and datasets:
    the group's documents.
    """
    values = data.groups[grouping]
    held_out_half = np.random.default_rng(len(values)).random(len(values)) < 0.5
    out = []
    for value in sorted(set(values.tolist())):
        if grouping == "generator":
            if value == "human":
                continue
            machine = (values == value) & (data.y == 1)
            datasets = set(data.groups["dataset"][machine].tolist())
            humans = (data.y == 0) & np.isin(data.groups["dataset"], list(datasets))
            humans &= held_out_half
            test = (machine | humans) & scored
            train = ~(machine | humans) & scored
        else:
            test = (values == value) & scored
            train = ~(values == value) & scored
        if len(set(data.y[test].tolist())) < 2 or len(set(data.y[train].tolist())) < 2:
            continue
        out.append((str(value), np.flatnonzero(train), np.flatnonzero(test)))
    return out


def quality(y: np.ndarray, scores: np.ndarray, target_fpr: float) -> dict[str, Any]:
    """AUROC and TPR at ``target_fpr``: the ROC point :func:`~provenance.evaluate.tpr_at_fpr`
    reads (its threshold set on these humans, so an upper bound on a new crawl), the same
    reading as every benchmark's TPR@FPR column. A split with too few humans to resolve the
    target is not warned about per split: ``n_human`` beside it says so.

    >>> quality(np.array([0, 0, 0, 0, 1, 1]), np.array([1.0, 2, 3, 4, 3.5, 5]), 0.25)  # 4 flagged
    {'n_human': 4, 'n_machine': 2, 'auroc': 0.875, 'tpr_at_fpr': 1.0}
    """
    from provenance.evaluate import roc_auc, tpr_at_fpr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TailguardWarning)
        point = tpr_at_fpr(y, scores, target_fpr)
    return {"n_human": int((y == 0).sum()), "n_machine": int((y == 1).sum()),
            "auroc": round(float(roc_auc(y, scores)), 4),
            "tpr_at_fpr": round(point.tpr, 4)}


def choose_band(stage1: np.ndarray, head: np.ndarray, y: np.ndarray, max_loss: float
                ) -> tuple[float, float, float, float] | None:
    """(low, high, settled share, AUROC loss) of the widest first-stage band within budget.

    ``stage1`` and ``head`` are out-of-fold log-odds of the same documents. A document whose
    first-stage probability is below ``low`` or above ``high`` is settled by it; the band
    settling the most documents while the combined AUROC stays within ``max_loss`` of the
    head's wins. ``None`` when no band settles anything within budget.
    """
    from provenance.evaluate import roc_auc

    base = roc_auc(y, head)
    p = 1.0 / (1.0 + np.exp(-stage1))
    best = None
    for low in (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4):
        for high in (0.9995, 0.999, 0.998, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.7, 0.6):
            settled = (p < low) | (p > high)
            loss = float(base - roc_auc(y, np.where(settled, stage1, head)))
            share = float(settled.mean())
            if loss <= max_loss and share > 0 and (best is None or share > best[2]):
                best = (low, high, share, loss)
    return best


def fit_detector(
    data: LabelledTexts,
    scorer: Any,
    store: Any,
    *,
    target_fpr: float = 0.01,
    calibrate_by: str | None = None,
    min_group_size: int | None = None,
    guarantee: Guarantee = "expected",
    cv: Sequence[str] = GROUPINGS,
    outer_folds: int = 5,
    inner_folds: int = 3,
    max_auroc_loss: float = 0.005,
    human_below: float = 0.1,
    char_params: NgramParams | None = None,
    seed: int = 0,
    head_seeds: int = HEAD_SEEDS,
    token_ngrams: bool = True,
    progress: bool = True,
    jobs: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """Fit, cross-validate and calibrate on labelled texts: (CalibratedDetector, report).

    The in-memory core of :func:`train` (which reads files and saves the result); the LM loop
    calls it on the ledger's known synthetic documents and held-out human text. ``scorer`` is a
    :class:`~provenance.detectors.token_statistics.TokenStatistics`, ``store`` a
    :class:`~provenance.detectors.token_store.TokenStore`. ``jobs`` processes run the
    cross-validation splits (each split refits everything, so they are independent; the
    results do not depend on ``jobs``).

    ``token_ngrams=False`` leaves the token n-gram models empty, so the head learns from the
    language model's columns only. For human text of a few topics: n-gram models of human text
    learn its vocabulary, and then any human text on other topics looks as unlike it as machine
    text does. Measured on the LM loop's trained detector (humans from one held-out article,
    machine text of a model trained on the others, target FPR 5%): 12.5-13.0% of the web's
    human documents flagged with the n-gram columns, 2.7-3.3% without, every synthetic
    document caught either way (three seeds).
    """
    from tqdm.auto import tqdm

    from provenance.detectors.calibrated import CalibratedDetector
    from provenance.detectors.calibration import fit_platt
    from provenance.detectors.recalibration import undecided_below
    from provenance.evaluate import roc_auc
    from provenance.thresholds import threshold_for

    cv = tuple(cv)
    unknown = sorted(set(cv) - set(GROUPINGS))
    if unknown:
        raise ConfigError(f"cv groupings must be among {', '.join(GROUPINGS)}; got {unknown}")
    if calibrate_by is not None and calibrate_by not in GROUPINGS:
        raise ConfigError(f"calibrate_by must be one of {', '.join(GROUPINGS)}")
    char_params = char_params or NgramParams(min_tokens=1)
    with tqdm(total=len(data.texts), desc="scoring tokens", unit="doc",
              disable=not progress) as bar:
        table = build_table(data, scorer, store, NgramClassifier(char_params), bar.update)
    scored = table.scored
    rows = np.flatnonzero(scored)
    y = data.y
    counts = np.bincount(y[rows], minlength=2)
    if counts.min() < outer_folds:
        raise InputError(f"too few scorable documents of each class ({counts[0]} human, "
                         f"{counts[1]} machine) for {outer_folds}-fold training")
    trainer = Trainer(table, y, char_params, inner_folds=inner_folds, seed=seed,
                      groups=data.groups["dataset"], head_seeds=head_seeds,
                      token_ngrams=token_ngrams)
    trainer.fix_alpha(rows)  # one penalty, by leave-one-dataset-out AUROC, for every fit below

    # Out-of-fold scores of every scorable document: calibration and the cascade band (the
    # char scores only where a band may be had: -inf allows none, as in the LM loop).
    cascade = max_auroc_loss != -math.inf
    head_oof, char_oof, ref_oof = np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y))
    folds = fold_ids(y[rows], outer_folds, seed)
    for f in tqdm(range(outer_folds), desc="out-of-fold scores", disable=not progress):
        test = rows[folds == f]
        head_oof[test], char_oof[test], with_ref = trainer.predict_all(
            rows[folds != f], test, with_char=cascade, reference=ref_oof is not None)
        if with_ref is None:
            ref_oof = None  # a fold without two sources: no reference head at all
        elif ref_oof is not None:
            ref_oof[test] = with_ref
    stage1, band, band_basis = (first_stage(trainer, rows, data.groups["dataset"], head_oof,
                                            char_oof, max_auroc_loss) if cascade
                                else (None, None, "none"))
    criterion = head_oof.copy()
    if stage1 is not None:
        stage1_oof = stage1.log_odds(char_oof)
        settled = stage1.settles(stage1_oof)
        criterion[settled] = stage1_oof[settled]
        if ref_oof is not None:
            ref_oof[settled] = stage1_oof[settled]
    human_rows, machine_rows = rows[y[rows] == 0], rows[y[rows] == 1]
    threshold = threshold_for(criterion[human_rows],
                              data.groups[calibrate_by][human_rows] if calibrate_by else None,
                              target_fpr, min_group_size=min_group_size, guarantee=guarantee)
    a, b = fit_platt(criterion[human_rows], criterion[machine_rows])
    calibration = {
        "n_human": int(len(human_rows)),
        "n_machine": int(len(machine_rows)),
        "n_unscored": int((~scored).sum()),
        "fpr": float(np.mean(criterion[human_rows] >= threshold)),
        "tpr": float(np.mean(criterion[machine_rows] >= threshold)),
        "auroc": float(roc_auc(y[rows], criterion[rows])),
        "auroc_second_stage_only": float(roc_auc(y[rows], head_oof[rows])),
        "platt": [float(a), float(b)],
        "prior": 0.5,
        "human_quantiles": [float(v) for v in np.quantile(criterion[human_rows],
                                                         np.linspace(0, 1, 1001))],
        "measured_on": f"out-of-fold scores ({outer_folds} folds) of the training documents",
        "calibrated_by": calibrate_by,
        "fpr_guarantee": guarantee,
        "head_alpha": trainer.alpha,
        "undecided_below": undecided_below({"platt": [a, b], "human_below": human_below},
                                           threshold),
        "human_below": human_below,
        "cascade": None if band is None else {
            "low": band[0], "high": band[1], "settled_share": round(band[2], 4),
            "auroc_loss": round(band[3], 4), "chosen_on": band_basis},
        "reference": None if ref_oof is None else reference_calibration(
            ref_oof, rows, y, trainer.groups, target_fpr, guarantee),
    }
    cv_report = {}
    for grouping in cv:
        splits = grouped_splits(data, scored, grouping)
        results = dict(zip([name for name, _, _ in splits],
                           _run_splits(trainer, splits, y, target_fpr, jobs,
                                       desc=f"leave one {grouping} out", progress=progress),
                           strict=True))
        aurocs = [r["auroc"] for r in results.values()]
        cv_report[grouping] = {"groups": results,
                               "worst_auroc": min(aurocs) if aurocs else None,
                               "mean_auroc": round(float(np.mean(aurocs)), 4) if aurocs else None}
    ngrams, char, head, inner = trainer.fit(rows)
    fitted = trainer.reference_head(inner.x, rows) if ref_oof is not None else None
    detector = SupervisedDetector(
        scorer_spec=scorer.spec(), scorer_digest=scorer.scorer_id().split("/")[0],
        ngrams=ngrams, char=char, head=head, stage1=stage1, scorer=scorer,
        reference_head=None if fitted is None else fitted.head,
        meta={"training": {"files": data.files, "seed": seed, "head_seeds": head_seeds,
                           "token_ngrams": token_ngrams,
                           "outer_folds": outer_folds,
                           "inner_folds": inner_folds, "target_fpr": target_fpr,
                           "max_auroc_loss": max_auroc_loss, "calibrate_by": calibrate_by,
                           "min_group_size": min_group_size, "fpr_guarantee": guarantee,
                           "human_below": human_below, "max_tokens": scorer.max_tokens,
                           "min_tokens": scorer.min_tokens,
                           "char": char_params.as_dict()}},
    )
    report = {"calibration": {k: v for k, v in calibration.items() if k != "human_quantiles"},
              "threshold": float(threshold), "target_fpr": target_fpr,
              "cross_validation": cv_report,
              "documents": {"total": len(y), "scored": int(scored.sum()),
                            "unscored_reasons": reason_counts(table.reasons)},
              "files": data.files}
    return CalibratedDetector(detector, float(threshold), target_fpr, calibration), report


def train(
    labelled: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model: str = "smollm2-135m",
    max_tokens: int = 256,
    min_tokens: int = 16,
    device: str = "auto",
    batch_size: int = 8,
    cache: str | os.PathLike | None = None,
    label_field: str = "label",
    text_field: str = "text",
    cv: Sequence[str] | None = GROUPINGS,
    **options: Any,
) -> dict[str, Any]:
    """Train, cross-validate, calibrate and save a supervised detector; returns the report.

    ``labelled`` are corpora with a label field (human/machine, human/synthetic or 0/1) and,
    where present, ``generator`` and ``domain`` fields for the grouped cross-validation
    (``cv``: any of generator, domain, dataset = input file; empty for none). The threshold
    holds ``target_fpr`` on out-of-fold human scores, for the worst ``calibrate_by`` group when
    given; a document whose P(synthetic) lies between ``human_below`` and the threshold's is
    ``unknown`` (not decisive). The token statistics are cached in ``cache`` (default
    ``~/.cache/tailguard/token-terms.sqlite``), so a killed run resumes and a retrain is quick.
    ``options`` go to :func:`fit_detector` (target_fpr, calibrate_by, min_group_size (groups
    smaller are held together: :func:`~provenance.thresholds.worst_group_threshold`), guarantee
    (what the threshold promises about new human text:
    :func:`~provenance.thresholds.calibrate_threshold`),
    outer_folds, inner_folds, max_auroc_loss, human_below, char_params, seed, head_seeds
    (networks averaged in each head: :meth:`~.supervised.MLPHead.fit`), token_ngrams,
    progress).

    Examples
    --------
    See ``tests/provenance/detectors/test_training.py``; from the shell::

        tailguard detect-train human_and_machine.jsonl -o my-detector
        tailguard tag crawl.parquet --detector my-detector -o tagged.parquet
    """
    from provenance.detectors.token_statistics import TokenStatistics
    from provenance.detectors.token_store import TokenStore
    from provenance.models import cache_dir
    from provenance.outputs import check_output, staged_folder

    out = check_output(out_dir, labelled, folder=True)
    data = read_labelled(labelled, text_field=text_field, label_field=label_field)
    scorer = TokenStatistics(model, max_tokens=max_tokens, min_tokens=min_tokens,
                             batch_size=batch_size, device=device)
    store = TokenStore(cache or cache_dir() / "token-terms.sqlite")
    calibrated, report = fit_detector(data, scorer, store,
                                      cv=GROUPINGS if cv is None else cv, **options)
    calibrated.detector.meta["training"]["model"] = model
    with staged_folder(out) as staged:
        calibrated.save(staged)
        (staged / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staged / "DATA_CARD.md").write_text(data_card(data, report))
    return report


def labelled_texts(human: Sequence[str], machine: Sequence[str]) -> LabelledTexts:
    """In-memory training data without groups (one ``dataset`` group, no files).

    >>> labelled_texts(["a b", "c d"], ["e f"]).y.tolist()
    [0, 0, 1]
    """
    texts = [collapse_whitespace(t) for t in [*human, *machine]]
    y = np.r_[np.zeros(len(human), dtype=np.int64), np.ones(len(machine), dtype=np.int64)]
    generator = np.array(["human"] * len(human) + ["machine"] * len(machine))
    same = np.array(["unspecified"] * len(texts))
    return LabelledTexts(texts, y, {"generator": generator, "domain": same, "dataset": same}, [])


def _split_quality(trainer: Trainer, train_rows: np.ndarray, test_rows: np.ndarray,
                   y: np.ndarray, target_fpr: float) -> dict[str, Any]:
    scores, _ = trainer.predict(train_rows, test_rows, with_char=False)
    return quality(y[test_rows], scores, target_fpr)


def _run_splits(trainer: Trainer, splits: list, y: np.ndarray, target_fpr: float, jobs: int,
                *, desc: str, progress: bool) -> list[dict[str, Any]]:
    """Each split's quality, in ``jobs`` processes (joblib) or in this one."""
    from tqdm.auto import tqdm

    if jobs <= 1 or len(splits) < 2:
        return [_split_quality(trainer, tr, te, y, target_fpr)
                for _, tr, te in tqdm(splits, desc=desc, disable=not progress)]
    from joblib import Parallel, delayed

    calls = (delayed(_split_quality)(trainer, tr, te, y, target_fpr) for _, tr, te in splits)
    return list(Parallel(n_jobs=jobs, verbose=0)(calls))


def data_card(data: LabelledTexts, report: dict[str, Any]) -> str:
    """A short Markdown card: what the detector was trained on and how well it generalised."""
    from provenance.thresholds import guarantee_text

    lines = ["# Detector data card", "", "## Training data", "",
             "| file | sha256 | rows | rejected |", "|---|---|---|---|"]
    for f in data.files:
        lines.append(f"| {Path(f['path']).name} | {(f['sha256'] or '')[:12]} | {f['rows']} | "
                     f"{f['rejected']} |")
    gens = sorted(set(data.groups["generator"].tolist()) - {"human"})
    lines += ["", f"{int((data.y == 0).sum())} human and {int((data.y == 1).sum())} machine "
              f"documents; {len(gens)} generators ({', '.join(gens)}); "
              f"{len(set(data.groups['domain'].tolist()))} domains.", "",
              "## Calibration (out-of-fold)", ""]
    cal = report["calibration"]
    lines.append(f"Threshold {report['threshold']:.3f} for FPR {report['target_fpr']:g} "
                 f"({guarantee_text(cal['fpr_guarantee'])}"
                 + (f", worst {cal['calibrated_by']} group" if cal["calibrated_by"] else "")
                 + f"): FPR {cal['fpr']:.4f}, TPR {cal['tpr']:.3f}, AUROC {cal['auroc']:.3f}")
    if cal.get("cascade"):
        c = cal["cascade"]
        lines.append(f"Cascade: the character n-gram stage settles {c['settled_share']:.0%} of "
                     f"documents (P < {c['low']} or > {c['high']}), AUROC loss {c['auroc_loss']} "
                     f"on {c.get('chosen_on', 'out-of-fold')} scores.")
    else:
        lines.append("Cascade: off (no band of the character n-gram stage kept the AUROC "
                     "within budget).")
    ref = cal.get("reference")
    lines.append(
        f"Reference head: trained on {len(ref['sources'])} sources (out-of-fold AUROC "
        f"{ref['auroc']:.3f}, TPR {ref['tpr']:.3f} at FPR {ref['fpr']:.4f}, each document "
        "measured against its own source's human text); it "
        "scores once `tailguard detect-calibrate` gives it human text of the crawl."
        if ref else "Reference head: none (fewer than two training files with "
        f"{MIN_REFERENCE_TEXTS} human documents each).")
    lines += ["", "## Grouped cross-validation (AUROC)", ""]
    for grouping, result in report["cross_validation"].items():
        lines.append(f"- leave one {grouping} out: worst {result['worst_auroc']}, mean "
                     f"{result['mean_auroc']}")
        for name, q in sorted(result["groups"].items(), key=lambda kv: kv[1]["auroc"]):
            lines.append(f"  - {name}: AUROC {q['auroc']}, TPR@FPR {q['tpr_at_fpr']} "
                         f"({q['n_human']} human, {q['n_machine']} machine)")
    lines += ["", "## Limits", "",
              "Trained on English text only; non-English and binary-looking input is returned "
              "unknown. Published detectors flag non-native English writers more often "
              "(Liang et al. 2023): check `tailguard detect-eval --group-field` on your own "
              "data before trusting a threshold."]
    return "\n".join(lines) + "\n"
