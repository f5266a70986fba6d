"""The supervised detector: hashed n-grams and a logistic regression.

For when labelled examples of the generators you care about exist. Nothing is fitted except the
linear weights, which are saved as safetensors (never pickle) next to a JSON of the parameters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.detectors.base import Detector, Scores, as_texts, check_positive_int, text_problem
from provenance.detectors.files import (
    FORMAT,
    FORMAT_VERSION,
    NGRAM_JSON,
    NGRAM_WEIGHTS,
    file_sha256,
    read_json,
    write_json,
)
from provenance.errors import ConfigError, InputError
from provenance.labels import binary_labels


@dataclass(frozen=True)
class NgramParams:
    """Everything that defines the hashed features; stored as JSON, nothing fitted in it."""

    features: str = "char"  # "char" or "word+char"
    n_features: int = 2**18
    char_ngrams: tuple[int, int] = (1, 4)
    word_ngrams: tuple[int, int] = (1, 2)
    lowercase: bool = False
    sublinear_tf: bool = True
    C: float = 10.0
    min_tokens: int = 16  # whitespace-separated words here; shorter texts are not scored

    def validate(self) -> NgramParams:
        if self.features not in ("char", "word+char"):
            raise ConfigError(f"features must be 'char' or 'word+char', got {self.features!r}")
        check_positive_int("n_features", self.n_features, 16)
        check_positive_int("min_tokens", self.min_tokens, 1)
        for name in ("char_ngrams", "word_ngrams"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ConfigError(f"{name} must be (low, high) with 1 <= low <= high")
        if not self.C > 0:
            raise ConfigError(f"C (inverse regularisation) must be > 0, got {self.C}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NgramParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("char_ngrams", "word_ngrams"):
            if name in known:
                known[name] = tuple(known[name])
        return cls(**known).validate()


class NgramClassifier(Detector):
    """Hashed character (or word + character) n-grams and a logistic regression.

    The supervised baseline: strong on the generators and domains it was trained on, weak
    elsewhere. ``HashingVectorizer`` has no vocabulary, so the only learned state is one weight
    per hashed feature plus an intercept, saved as safetensors next to a JSON of the
    parameters. The criterion is the regression's log-odds.

    Examples
    --------
    >>> clf = NgramClassifier(n_features=2**10, min_tokens=1).fit(
    ...     ["the cat sat", "a dog ran", "As an AI model", "As an AI language model"],
    ...     ["human", "human", "machine", "machine"])
    >>> bool(clf.score(["As an AI"])[0] > clf.score(["the dog sat"])[0])
    True
    """

    kind = "ngram"

    def __init__(self, params: NgramParams | None = None, **kwargs: Any) -> None:
        base = params or NgramParams()
        self.params = NgramParams.from_dict({**base.as_dict(), **kwargs})
        self.min_tokens = self.params.min_tokens
        self.coef: np.ndarray | None = None
        self.intercept: float = 0.0

    def _vectorizers(self) -> list[Any]:
        from sklearn.feature_extraction.text import HashingVectorizer

        p = self.params
        common = {"n_features": p.n_features, "alternate_sign": False, "norm": None,
                  "lowercase": p.lowercase, "dtype": np.float64}
        out = [HashingVectorizer(analyzer="char_wb", ngram_range=p.char_ngrams, **common)]
        if p.features == "word+char":
            out.append(HashingVectorizer(analyzer="word", ngram_range=p.word_ngrams, **common))
        return out

    def features(self, texts: Sequence[str]) -> Any:
        """The sparse feature matrix: log(1 + count) (if ``sublinear_tf``), L2-normalised."""
        import scipy.sparse as sp
        from sklearn.preprocessing import normalize

        texts = list(texts)
        blocks = [v.transform(texts) for v in self._vectorizers()]
        matrix = sp.hstack(blocks).tocsr() if len(blocks) > 1 else blocks[0].tocsr()
        if self.params.sublinear_tf:
            matrix.data = np.log1p(matrix.data)
        return normalize(matrix)

    def fit(self, texts: Sequence[str], labels: Sequence[Any]) -> NgramClassifier:
        """Fit on labelled texts (human/machine, human/synthetic or 0/1)."""
        texts = as_texts(texts)
        y = binary_labels(labels).astype(np.int64)
        if len(texts) != len(y):
            raise InputError(f"{len(texts)} texts but {len(y)} labels; pass one label per text")
        bad = [i for i, t in enumerate(texts) if text_problem(t)]
        if bad:
            raise InputError(f"cannot train on {text_problem(texts[bad[0]])}", row=bad[0])
        if len(set(y.tolist())) < 2:
            raise InputError("training needs both human and machine examples")
        return self.fit_matrix(self.features(texts), y)

    def fit_matrix(self, features: Any, y: np.ndarray) -> NgramClassifier:
        """Fit on rows of :meth:`features` already computed (0/1 labels), e.g. one fold's.

        Vectorising is most of the cost of :meth:`fit`; cross-validation computes the matrix
        once and fits on row subsets.
        """
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.params.C, max_iter=2000, class_weight="balanced")
        model.fit(features, y)
        self.coef = model.coef_.ravel().astype(np.float64)
        self.intercept = float(model.intercept_[0])
        return self

    def _check_fitted(self) -> np.ndarray:
        if self.coef is None:
            raise ConfigError("the n-gram classifier is not trained; call fit() or load() first")
        return self.coef

    def score_detailed(self, texts: Sequence[str]) -> Scores:
        coef = self._check_fitted()
        texts = as_texts(texts)
        scores = Scores.empty(len(texts))
        for i, text in enumerate(texts):
            problem = text_problem(text)
            n = 0 if problem else len(text.split())
            scores.n_tokens[i] = n
            if problem is None and n < self.min_tokens:
                problem = f"too few tokens: {n} < {self.min_tokens}"
            scores.reasons[i] = problem
        good = [i for i, r in enumerate(scores.reasons) if r is None]
        if good:
            scores.values[good] = self.features([texts[i] for i in good]) @ coef + self.intercept
        return scores

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The regression's own P(machine) (uncalibrated: reflects the training mix)."""
        return 1.0 / (1.0 + np.exp(-self.score(texts)))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params.as_dict(), "weights": NGRAM_WEIGHTS}

    def save_weights(self, folder: Path) -> None:
        from provenance.tensor_files import save_numpy

        coef = self._check_fitted()
        tensors = {"coef": coef, "intercept": np.array([self.intercept], dtype=np.float64)}
        save_numpy(tensors, folder / NGRAM_WEIGHTS, {"format": FORMAT, "kind": self.kind})

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``ngram.safetensors`` and ``ngram.json`` into ``folder`` (no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder)
        spec = {**self.spec(), "sha256": file_sha256(folder / NGRAM_WEIGHTS)}
        write_json(folder / NGRAM_JSON, {"format": FORMAT, "version": FORMAT_VERSION, **spec})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> NgramClassifier:
        """Rebuild a classifier written by :meth:`save`."""
        folder = Path(folder)
        spec = read_json(folder / NGRAM_JSON)
        return cls.from_spec(spec, folder)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], folder: Path) -> NgramClassifier:
        from safetensors.numpy import load_file

        weights = folder / str(spec.get("weights", NGRAM_WEIGHTS))
        if not weights.exists():
            raise InputError("classifier weights are missing", file=str(weights))
        expected = spec.get("sha256")
        if expected and file_sha256(weights) != expected:
            raise InputError(
                "classifier weights do not match their JSON (sha256 differs); save again",
                file=str(weights),
            )
        tensors = load_file(str(weights))
        clf = cls(NgramParams.from_dict(spec.get("params", {})))
        coef = tensors["coef"].astype(np.float64)
        expected_width = clf.params.n_features * (2 if clf.params.features == "word+char" else 1)
        if coef.shape != (expected_width,):
            raise InputError(
                f"classifier has {coef.shape} weights, parameters need ({expected_width},)",
                file=str(weights),
            )
        clf.coef, clf.intercept = coef, float(tensors["intercept"][0])
        return clf
