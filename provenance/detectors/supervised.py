"""The supervised detector: a small network over language-model and n-gram features.

Zero-shot criteria assume which way machine text leans (Fast-DetectGPT: closer to the scoring
model's expectations). That assumption fails on text from models much larger than the scorer,
and fails outright where the scorer memorised the human text (the LM loop's generation-0
model). Following Ghostbuster (Verma et al., NAACL 2024) with an offline scorer, this detector
keeps the scorer's per-token statistics, adds token n-gram models of human text (stacked
out-of-fold at training time), summarises them into one vector per document
(:mod:`.document_features`) and lets a one-hidden-layer network (:class:`MLPHead`) learn the
direction and weight of each from labelled data.

It is also a two-stage cascade: the character n-gram classifier (thousands of documents a
second) settles the documents it is sure of, with its own out-of-fold Platt map, and only the
rest are read by the language model. The band that decides "sure" is chosen at training time so
the cascade loses at most a set amount of AUROC on held-out data.

The criterion is the log-odds of P(synthetic) at a 50% prior from whichever stage decided.
Train one with :func:`provenance.detectors.train`; everything is saved as JSON plus one
safetensors file, never pickle.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.detectors.base import Detector, Scores, as_texts, text_problem
from provenance.detectors.document_features import document_vector, feature_names
from provenance.detectors.files import weights_digest
from provenance.detectors.human_reference import HumanReference, with_reference
from provenance.detectors.language import other_language
from provenance.detectors.ngram import NgramClassifier, NgramParams
from provenance.detectors.token_ngrams import TokenNgramModel
from provenance.errors import ConfigError, InputError

WEIGHTS = "supervised.safetensors"
#: Tensor-name prefix of the reference head in :data:`WEIGHTS`.
REFERENCE = "reference_head"
#: Hidden units of each network the head averages (:class:`MLPHead`).
HIDDEN = 32
#: Networks the head averages, each from its own seed (:meth:`MLPHead.fit`).
HEAD_SEEDS = 5


def _cell_weights(y: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Per-row weights giving each (cell, class) pair present the same total, mean weight 1.

    >>> _cell_weights(np.array([0, 0, 0, 1]), np.zeros(4, dtype=np.int64)).tolist()
    [0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0]
    """
    key = cells * 2 + y
    counts = np.bincount(key)
    present = int(np.count_nonzero(counts))
    return len(y) / (present * counts[key])


@dataclass
class MLPHead:
    """Standardise, then a one-hidden-layer perceptron: the log-odds of P(synthetic).

    ``relu(z @ w1 + b1) @ w2 + b2`` with ``z = clip((x - mean) / scale, -20, 20)``; evaluated
    with numpy, so scoring needs no torch and the weights are four plain arrays.

    Why not a logistic regression: measured leave-one-dataset-out on the four labelled files
    (train on three, test on the fourth, same inputs; ``benchmarks/bench_detect_lodo.py``), the
    network's mean held-out AUROC was 0.765 against 0.718 (five averaged; one: 0.757): higher
    on PubMed, OUTFOX and SeqXGPT, lower on L2R. The benchmark keeps the logistic head as an
    ablation.

    A fitted head is the mean log-odds of :data:`HEAD_SEEDS` networks, stored as one network
    with all their hidden units (:meth:`average`): the same four arrays, the same format. One
    network's threshold crossings depend on its random start; the average's much less.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3)); y = (x[:, 0] * x[:, 1] > 0).astype(int)
    >>> head = MLPHead.fit(x, y, alpha=0.01)
    >>> bool(np.mean((head.log_odds(x) > 0) == y) > 0.8)       # a sign no linear model has
    True
    """

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray  # (features, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden,)
    b2: float

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(x, dtype=np.float64) - self.mean) / self.scale, -20, 20)
        return np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @classmethod
    def average(cls, heads: Sequence[MLPHead]) -> MLPHead:
        """One network whose log-odds are the mean of ``heads``' (same standardisation).

        Their hidden units side by side, each output weight divided by the count: the mean is
        exact, so an averaged head is saved, loaded and evaluated like any other.

        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 3)); y = (x[:, 0] > 0).astype(int)
        >>> a, b = (MLPHead.fit(x, y, seed=s, seeds=1) for s in (0, 1))
        >>> both = MLPHead.average([a, b])
        >>> both.w1.shape, bool(np.allclose(both.log_odds(x), (a.log_odds(x) + b.log_odds(x)) / 2))
        ((3, 64), True)
        """
        first = heads[0]
        if any(not np.array_equal(h.mean, first.mean) or not np.array_equal(h.scale, first.scale)
               for h in heads):
            raise ValueError("heads to average must share their standardisation")
        return cls(first.mean, first.scale, np.concatenate([h.w1 for h in heads], axis=1),
                   np.concatenate([h.b1 for h in heads]),
                   np.concatenate([h.w2 for h in heads]) / len(heads),
                   float(np.mean([h.b2 for h in heads])))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float = 1.0, *, hidden: int = HIDDEN,
            seed: int = 0, seeds: int = HEAD_SEEDS, groups: np.ndarray | None = None,
            blas_threads: int | None = 1) -> MLPHead:
        """Fit on standardised columns, classes weighted equally, L2 penalty ``alpha``.

        ``seeds`` networks (random starts ``seed``, ``seed + 1``, ...) are fitted and
        averaged (:meth:`average`). Why: on the LM loop's trained detector, three single
        networks from seeds 0-2 flagged 9.8-14% of new human documents at a 5% target, five
        averaged 12.5-13% on the same three base seeds; leave-one-dataset-out on the four
        labelled files the mean AUROC moved 0.757 -> 0.765 (``benchmarks/bench_detect_lodo.py``).
        It costs ``seeds`` times the fit (seconds).

        With ``groups`` (e.g. each row's input file), every (group, class) cell weighs the
        same instead, so that the largest file does not set the direction alone
        (``benchmarks/ablate_detect_head.py`` measures what that does across files).

        The fit runs on ``blas_threads`` BLAS threads: one, whatever the machine, unless told
        otherwise (None: as many as BLAS is allowed). Its matrices are small, so more threads
        only add overhead (3,953 x 113 inputs, five networks: 11.7 s on one thread, 24.8 s on two,
        ``benchmarks/bench_detect_head.py``); and a thread count changes the order of every
        sum, which the fit amplifies: a 1e-7 relative change of the inputs moves the fitted
        head's log-odds by up to 0.9 (leave-one-file-out on the four labelled files). On one
        thread, the same data and seed give the same head on a laptop and on a 64-core server.
        """
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        from threadpoolctl import threadpool_limits

        if seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {seeds}")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y)
        mean = x.mean(0)
        scale = x.std(0)
        scale[scale < 1e-9] = 1.0
        z = np.clip((x - mean) / scale, -20, 20)
        weight = _cell_weights(y, np.zeros(len(y), dtype=np.int64) if groups is None
                               else np.unique(np.asarray(groups), return_inverse=True)[1])
        heads = []
        with warnings.catch_warnings(), threadpool_limits(blas_threads):
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds the time
            for start in range(seed, seed + seeds):
                # L-BFGS on the whole set: deterministic, and seconds for thousands of documents
                model = MLPClassifier((hidden,), alpha=alpha, solver="lbfgs", max_iter=300,
                                      random_state=start).fit(z, y, sample_weight=weight)
                heads.append(cls(mean, scale, model.coefs_[0], model.intercepts_[0],
                                 model.coefs_[1].ravel(), float(model.intercepts_[1][0])))
        return heads[0] if seeds == 1 else cls.average(heads)

    def tensors(self, prefix: str = "head") -> dict[str, np.ndarray]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.scale": self.scale,
                f"{prefix}.w1": self.w1, f"{prefix}.b1": self.b1, f"{prefix}.w2": self.w2,
                f"{prefix}.b2": np.array([self.b2])}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], prefix: str = "head") -> MLPHead:
        return cls(*(t[f"{prefix}.{k}"] for k in ("mean", "scale", "w1", "b1", "w2")),
                   float(t[f"{prefix}.b2"][0]))


@dataclass
class Stage1:
    """The cheap first stage: the char n-gram score's Platt map and the band it defers."""

    a: float
    b: float
    low: float  # P(synthetic) below which stage 1 settles "human"
    high: float  # ... above which it settles "synthetic"

    def log_odds(self, raw: np.ndarray) -> np.ndarray:
        return self.a * np.asarray(raw, dtype=np.float64) + self.b

    def settles(self, log_odds: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-log_odds))
        return (p < self.low) | (p > self.high)


def collapse_whitespace(text: Any) -> Any:
    """One space for every run of whitespace, for training and scoring alike.

    Some corpora lost their newlines upstream (L2R's human texts) while others keep them, so a
    detector that saw raw whitespace would learn "has newlines" as "is machine text"; the
    detector is trained on collapsed text and therefore must score collapsed text too.

    >>> collapse_whitespace("a\\n\\n b\\t c")
    'a b c'
    """
    return " ".join(text.split()) if isinstance(text, str) else text


def language_problem(text: str) -> str | None:
    """Why a text is not the English prose the detector was trained on, or ``None``.

    Binary-looking input (control characters, few letters), text whose letters are mostly
    outside the Latin script, and text in another Latin-script language
    (:func:`~provenance.detectors.language.other_language`) are refused with a reason rather
    than given a number the training data never justified.

    Examples
    --------
    >>> language_problem("An ordinary English sentence about the weather.") is None
    True
    >>> language_problem("Это предложение написано по-русски и довольно длинное.")
    'not English (0% of letters are Latin); the detector was trained on English text'
    >>> language_problem("El martes el comité se reunió en el ayuntamiento para discutir el "
    ...     "presupuesto del próximo año. Después de un largo debate sobre las carreteras y las "
    ...     "escuelas, los miembros llegaron a un acuerdo, y la alcaldesa prometió más dinero "
    ...     "para el transporte público en los próximos meses.")
    'not English (Spanish 1.00); the detector was trained on English text'
    >>> language_problem("\\x00\\x01\\x02 binary junk \\x03\\x04\\x05\\x06\\x07\\x08\\x0b\\x0c")
    'looks binary (11 control characters)'
    """
    control = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t\r")
    if control > max(2, len(text) // 100):
        return f"looks binary ({control} control characters)"
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) < 0.4 * len(text.strip()):
        return f"too few letters for prose ({len(letters)} of {len(text.strip())} characters)"
    latin = sum(1 for ch in letters if ch.isascii() or "LATIN" in unicodedata.name(ch, ""))
    if latin < 0.7 * len(letters):
        return (f"not English ({round(100 * latin / len(letters))}% of letters are Latin); "
                "the detector was trained on English text")
    other = other_language(text)
    if other is not None:
        return f"not English ({other}); the detector was trained on English text"
    return None


class SupervisedDetector(Detector):
    """LM + n-gram features and a small network, behind a char n-gram first stage.

    Build it with :func:`provenance.detectors.train`; load it with
    :func:`provenance.detectors.load_detector`. ``scorer`` is a
    :class:`~provenance.detectors.token_statistics.TokenStatistics` (loaded lazily from
    ``scorer_spec`` the first time a document reaches stage 2, so a corpus the first stage
    settles never loads the model).

    ``reference_head``, where training had several sources, reads the inputs measured against
    human text of the document's own source (:mod:`.human_reference`); it scores once a
    ``reference`` is set (:meth:`with_reference`, done by ``tailguard detect-calibrate`` from
    the crawl's human text). Without one the plain ``head`` scores.
    """

    kind = "supervised"

    def __init__(
        self,
        *,
        scorer_spec: dict[str, Any],
        scorer_digest: str,
        ngrams: TokenNgramModel,
        char: NgramClassifier,
        head: MLPHead,
        stage1: Stage1 | None,
        meta: dict[str, Any] | None = None,
        scorer: Any = None,
        device: str = "auto",
        dtype: str | None = None,
        reference_head: MLPHead | None = None,
        reference: HumanReference | None = None,
    ) -> None:
        self.scorer_spec = dict(scorer_spec)
        self.scorer_digest = scorer_digest
        self.ngrams = ngrams
        self.char = char
        self.head = head
        self.stage1 = stage1
        self.meta = dict(meta or {})
        self.min_tokens = int(scorer_spec.get("min_tokens", 16))
        self._scorer = scorer
        self._device = device
        self._dtype = dtype
        self.reference_head = reference_head
        self.reference = reference
        if head.n_features != len(feature_names()):
            raise InputError(f"the head takes {head.n_features} features; this version "
                             f"computes {len(feature_names())}")
        if reference is not None and reference_head is None:
            raise ConfigError("a human reference needs a detector trained with a reference "
                              "head (several training files with human text)")

    def with_reference(self, reference: HumanReference | None) -> SupervisedDetector:
        """A copy that scores with the reference head against ``reference`` (None: the plain
        head); the scorer, n-gram models and weights are shared, not copied."""
        import copy

        twin = copy.copy(self)
        if reference is not None and self.reference_head is None:
            raise ConfigError("this detector has no reference head (it was trained on one "
                              "source); it can only be given a threshold")
        twin.reference = reference
        return twin

    @property
    def scorer(self) -> Any:
        """The causal-LM scorer, loaded and checked against the training scorer on first use."""
        if self._scorer is None:
            self._scorer = load_scorer(self.scorer_spec, self.scorer_digest,
                                       device=self._device, dtype=self._dtype)
        return self._scorer

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.scorer_spec.get('model', '?')}"

    def score_detailed(self, texts: Sequence[str]) -> Scores:
        return self.score_stages(texts)[0]

    def score_stages(self, texts: Sequence[str], *, inputs: np.ndarray | None = None
                     ) -> tuple[Scores, np.ndarray]:
        """The scores and, per text, the stage that decided (0 = not scored, 1, 2).

        ``inputs`` (from :meth:`head_inputs` on the same texts) spares the language model:
        a recalibration scores the same texts with two heads.
        """
        texts = [collapse_whitespace(t) for t in as_texts(texts)]
        scores, good = self._checked(texts)
        stage = np.zeros(len(texts), dtype=np.int8)
        if not good:
            return scores, stage
        rest = good
        if self.stage1 is not None:
            char_raw = self.char.features([texts[i] for i in good]) @ self.char.coef \
                + self.char.intercept
            first = self.stage1.log_odds(char_raw)
            sure = self.stage1.settles(first)
            for k in np.flatnonzero(sure):
                scores.values[good[k]] = first[k]
                stage[good[k]] = 1
            rest = [i for i, s in zip(good, sure, strict=True) if not s]
        if rest:
            if inputs is None:
                rows, where = self._lm_inputs(texts, rest, scores)
            else:
                where = [i for i in rest if np.isfinite(inputs[i]).all()]
                rows = inputs[where]
                for i in set(rest) - set(where):
                    scores.reasons[i] = "no head inputs"
            if where:
                scores.values[where] = self.log_odds(np.asarray(rows))
            stage[[i for i in rest if scores.reasons[i] is None]] = 2
        return scores, stage

    def log_odds(self, inputs: np.ndarray) -> np.ndarray:
        """The second stage's criterion for head inputs: the reference head against
        :attr:`reference` when one is set, else the plain head."""
        if self.reference is None:
            return self.head.log_odds(inputs)
        return self.reference_head.log_odds(with_reference(inputs, self.reference))

    def head_inputs(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
        """Every text's head inputs (a NaN row where it cannot be scored) and the reasons:
        what a human reference is measured on. Reads every scorable text with the language
        model, the first stage notwithstanding."""
        texts = [collapse_whitespace(t) for t in as_texts(texts)]
        scores, good = self._checked(texts)
        out = np.full((len(texts), len(feature_names())), np.nan)
        if good:
            rows, where = self._lm_inputs(texts, good, scores)
            if where:
                out[where] = rows
        return out, scores.reasons

    def _checked(self, texts: list) -> tuple[Scores, list[int]]:
        """Empty scores with the reasons of texts neither stage may score, and the rest."""
        scores = Scores.empty(len(texts))
        for i, text in enumerate(texts):
            scores.reasons[i] = text_problem(text) or language_problem(text)
        self._check_length(texts, scores)
        return scores, [i for i, r in enumerate(scores.reasons) if r is None]

    @property
    def tokenizer(self) -> Any:
        """The scorer's tokenizer (without loading the model while only stage 1 is needed)."""
        if self._scorer is not None:
            return self._scorer.tokenizer
        if getattr(self, "_tokenizer", None) is None:
            from transformers import AutoTokenizer

            from provenance.models import model_path

            self._tokenizer = AutoTokenizer.from_pretrained(model_path(self.scorer_spec["model"]))
        return self._tokenizer

    def _check_length(self, texts: list, scores: Scores) -> None:
        """Texts below the scorer's token minimum are refused by both stages alike."""
        todo = [i for i, r in enumerate(scores.reasons) if r is None]
        if not todo:
            return
        counts = self.tokenizer([texts[i] for i in todo], add_special_tokens=False)["input_ids"]
        for i, ids in zip(todo, counts, strict=True):
            scores.n_tokens[i] = len(ids)
            if len(ids) < self.min_tokens:
                scores.reasons[i] = f"too few tokens: {len(ids)} < {self.min_tokens}"

    def _lm_inputs(self, texts: list, rest: list[int], scores: Scores
                   ) -> tuple[list[np.ndarray], list[int]]:
        """Head inputs of ``texts[rest]`` from the language model, and where they go; the
        texts it refuses get their reason in ``scores``."""
        terms, lm_scores = self.scorer.token_terms([texts[i] for i in rest])
        ids, _ = self.scorer.encode([texts[i] for i in rest])
        rows, where = [], []
        for k, i in enumerate(rest):
            scores.n_tokens[i] = lm_scores.n_tokens[k]
            if terms[k] is None:
                scores.reasons[i] = lm_scores.reasons[k]
                continue
            rows.append(head_features(self.ngrams, terms[k], ids[k]))
            where.append(i)
        return rows, where


    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "weights": WEIGHTS,
            "scorer": self.scorer_spec,
            "scorer_digest": self.scorer_digest,
            "ngrams": self.ngrams.spec(),
            "char": self.char.params.as_dict(),
            "features": feature_names(),
            "head": {"kind": "mlp", "hidden": len(self.head.b1)},
            "reference_head": None if self.reference_head is None else
            {"kind": "mlp", "hidden": len(self.reference_head.b1)},
            "reference": None if self.reference is None else self.reference.as_dict(),
            "stage1": None if self.stage1 is None else self.stage1.__dict__,
            **self.meta,
        }

    def save_weights(self, folder: Path) -> None:
        from provenance.tensor_files import save_numpy

        tensors = {f"ngrams.{k}": v for k, v in self.ngrams.tensors().items()}
        tensors.update({
            "char.coef": self.char.coef.astype(np.float32),
            "char.intercept": np.array([self.char.intercept]),
            **self.head.tensors(),
            **({} if self.reference_head is None else self.reference_head.tensors(REFERENCE)),
        })
        save_numpy(tensors, folder / WEIGHTS, {"format": "tailguard-detector", "kind": self.kind})

    @classmethod
    def from_spec(cls, spec: dict[str, Any], folder: Path, *, device: str = "auto",
                  dtype: str | None = None) -> SupervisedDetector:
        """Rebuild a saved detector (the weights' sha256 is checked by the caller)."""
        from safetensors.numpy import load_file

        weights = folder / str(spec.get("weights", WEIGHTS))
        if not weights.exists():
            raise InputError("detector weights are missing", file=str(weights))
        t = load_file(str(weights))
        ngrams = TokenNgramModel(**{k: spec["ngrams"][k] for k in
                                    ("vocab_size", "buckets", "smoothing")})
        for name in ngrams.tensors():
            setattr(ngrams, name, t[f"ngrams.{name}"].astype(np.int32))
        char = NgramClassifier(NgramParams.from_dict(spec["char"]))
        char.coef, char.intercept = t["char.coef"].astype(np.float64), float(t["char.intercept"][0])
        if spec.get("features") != feature_names() or "head.w1" not in t:
            raise InputError("detector was trained with other features than this tailguard "
                             "version computes; retrain it with tailguard detect-train",
                             file=str(weights))
        head = MLPHead.from_tensors(t)
        reference_head = (MLPHead.from_tensors(t, REFERENCE) if spec.get("reference_head")
                          else None)
        if reference_head is not None and reference_head.n_features != 2 * head.n_features:
            raise InputError("the reference head does not match the head's features",
                             file=str(weights))
        reference = (HumanReference.from_dict(spec["reference"]) if spec.get("reference")
                     else None)
        stage1 = Stage1(**spec["stage1"]) if spec.get("stage1") else None
        check_scorer(spec["scorer"], spec["scorer_digest"])
        meta = {k: v for k, v in spec.items() if k in ("training", "sha256_training_data")}
        return cls(scorer_spec=spec["scorer"], scorer_digest=spec["scorer_digest"],
                   ngrams=ngrams, char=char, head=head, stage1=stage1, meta=meta,
                   device=device, dtype=dtype, reference_head=reference_head,
                   reference=reference)


def head_features(ngrams: TokenNgramModel, lm_terms: np.ndarray, ids: Sequence[int]
                  ) -> np.ndarray:
    """The head's input for one document: the LM's and the token n-grams' summaries.

    One function for training and scoring, so the two can never compute different columns.
    The character n-gram classifier's score is *not* an input (it is the first stage only):
    measured leave-one-dataset-out, adding it to the head lowered the mean held-out AUROC from
    0.765 to 0.679, on three of the four labelled files (it learns each file's vocabulary,
    which does not transfer).
    """
    return document_vector(lm_terms, ngrams.log_probs(ids))


def check_scorer(spec: dict[str, Any], digest: str) -> None:
    """Refuse, in one line naming both, a scorer whose weights are not the training scorer's.

    Only the weight files are hashed; the model itself is loaded later, when a document first
    reaches the second stage.
    """
    available = weights_digest(spec["model"])
    if available != digest:
        raise InputError(
            f"detector was trained with scorer {spec['model']} (weights {digest}) but the "
            f"model available here has weights {available}; retrain it or install that model"
        )


def load_scorer(spec: dict[str, Any], digest: str, *, device: str = "auto",
                dtype: str | None = None) -> Any:
    """The training scorer (checked with :func:`check_scorer`)."""
    from provenance.detectors.token_statistics import TokenStatistics

    check_scorer(spec, digest)
    options = {k: spec[k] for k in ("max_tokens", "min_tokens", "batch_size", "prefix")
               if k in spec}
    return TokenStatistics(spec["model"], device=device,
                           dtype=dtype or spec.get("dtype", "auto"), **options)


def logit(p: float) -> float:
    """``log(p / (1 - p))``, for turning a probability band into criterion values."""
    if not 0.0 < p < 1.0:
        raise ConfigError(f"probability must be in (0, 1), got {p}")
    return math.log(p / (1.0 - p))
