"""Detectors: evidence about a document that was never registered anywhere.

Declared metadata, ledgers and watermarks only catch generated text whose producer cooperated.
Everything else needs a detector that looks at the text itself. Three kinds are here:

* :class:`FastDetectGPT` (Bao et al., ICLR 2024), zero-shot: a model's own samples sit close to
  the model's expected log-probability at every position, while human text keeps surprising it.
  The analytic sampling discrepancy measures this in one forward pass.
* :class:`Binoculars` (Hans et al., 2024), zero-shot with two related models: the perplexity of
  the text relative to how surprised one model expects to be by the other's predictions.
* :class:`NgramClassifier`, supervised: hashed character n-grams and a logistic regression, for
  when labelled examples of the generators you care about exist. Nothing is fitted except the
  linear weights, which are saved as safetensors (never pickle).

A :class:`Detector` returns a raw criterion (higher = more machine-like; NaN with a reason where a
text cannot be scored). The raw number means nothing until it is calibrated on text known to be
human: :func:`calibrate` sets the threshold for a target false-positive rate and, given machine
text too, a Platt map to P(synthetic) and the measured TPR/FPR that prevalence correction needs.
A :class:`CalibratedDetector` saves to a folder (JSON, plus safetensors for the classifier) that
:func:`load_detector` reads back, and :class:`DetectorSignal` puts it into the tagger.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from provenance.atomic import atomic_path
from provenance.errors import ConfigError, InputError, TailguardWarning
from provenance.models import DEFAULT_MODEL, LoadedModel, load_causal_lm
from provenance.schema import Evidence, Label, Tag
from provenance.signals import Signal

if TYPE_CHECKING:
    import polars as pl
    import torch

FORMAT = "tailguard-detector"
FORMAT_VERSION = 1
DETECTOR_FILE = "detector.json"
NGRAM_JSON = "ngram.json"
NGRAM_WEIGHTS = "ngram.safetensors"

_MACHINE_LABELS = {"machine", "synthetic", "generated", "ai", "1", "true"}
_HUMAN_LABELS = {"human", "0", "false"}


# --------------------------------------------------------------------------------------------
# Scores and the detector interface
# --------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Raw criterion values for a list of texts, and why any of them could not be scored.

    ``values[i]`` is NaN exactly when ``reasons[i]`` is set, so a batch never fails because one
    document is empty, too short or not a string.
    """

    values: np.ndarray
    reasons: list[str | None]
    n_tokens: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Scores:
        return cls(np.full(n, np.nan), [None] * n, np.zeros(n, dtype=np.int64))


class Detector(ABC):
    """Scores texts by how machine-like they look: higher = more likely generated.

    Subclasses implement :meth:`score_detailed` and :meth:`spec` (the JSON that rebuilds them,
    see :func:`detector_from_spec`).
    """

    kind: ClassVar[str]
    min_tokens: int

    @property
    def name(self) -> str:
        return self.kind

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """The raw criterion of each text (float64; NaN where it cannot be scored)."""
        return self.score_detailed(texts).values

    @abstractmethod
    def score_detailed(self, texts: Sequence[str]) -> Scores:
        """Criterion values with the reason for every NaN and the token count used."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable parameters that :func:`detector_from_spec` rebuilds it from."""

    def save_weights(self, folder: Path) -> None:  # noqa: B027 - optional hook
        """Write any learned weights next to the spec (zero-shot detectors have none)."""


def _as_texts(texts: Sequence[str]) -> list[Any]:
    if isinstance(texts, (str, bytes)):
        raise InputError("expected a list of texts, got a single string; wrap it in a list")
    return list(texts)


def _text_problem(text: Any) -> str | None:
    if not isinstance(text, str):
        return f"not a string ({type(text).__name__})"
    if not text.strip():
        return "empty text"
    return None


def _check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Per-position statistics (pure tensor functions: the formulas, testable without a model)
# --------------------------------------------------------------------------------------------


def sampling_discrepancy_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position ``log p(x_t)``, ``mu_t`` and ``var_t`` of Fast-DetectGPT, as a (T, 3) tensor.

    ``logits`` (T, V) are the model's predictions for the T tokens ``labels``. Under the model's
    own next-token distribution p, ``mu_t = sum_v p_v log p_v`` is the expected log-probability
    of a sampled token and ``var_t`` its variance; the criterion compares the observed
    ``log p(x_t)`` with them (see :func:`fast_detectgpt_criterion`). Computed in float32 whatever
    the model's dtype; the variance is centred to avoid cancellation.

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> terms = sampling_discrepancy_terms(logits, torch.tensor([0, 1]))
    >>> [round(float(v), 4) for v in terms[0]]   # log p(x), mu, var at position 0
    [-0.2395, -0.6656, 0.6706]
    """
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    observed = logp.gather(-1, labels[:, None]).squeeze(-1)
    probs = logp.exp()
    mean = (probs * logp).sum(-1)
    var = (probs * (logp - mean[:, None]).square()).sum(-1)
    return torch.stack([observed, mean, var], dim=-1)


def fast_detectgpt_criterion(terms: np.ndarray) -> float:
    """``(sum log p(x_t) - sum mu_t) / sqrt(sum var_t)`` over positions (rows of ``terms``).

    A model's own samples give about 0 (observed log-probabilities scatter around their
    expectation); human text, which the model finds more surprising than its own samples, gives
    large negative values. NaN when the variance is zero (nothing to compare against).

    Examples
    --------
    >>> import numpy as np
    >>> fast_detectgpt_criterion(np.array([[-1.0, -2.0, 1.0], [-1.0, -2.0, 3.0]]))
    1.0
    """
    total = np.asarray(terms, dtype=np.float64).sum(axis=0)
    if not total[2] > 0:
        return math.nan
    return float((total[0] - total[1]) / math.sqrt(total[2]))


def binoculars_terms(
    observer_logits: torch.Tensor, performer_logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per-position performer log-loss and observer/performer cross-entropy, as a (T, 2) tensor.

    Following the authors' reference implementation: the log-perplexity uses the performer, and
    the cross-perplexity term is ``-sum_v p_observer(v) log p_performer(v)``, the performer's
    log-loss averaged over what the observer would predict.

    Examples
    --------
    >>> import torch
    >>> same = torch.tensor([[0.0, 0.0]])    # uniform over 2 tokens for both models
    >>> [round(float(v), 4) for v in binoculars_terms(same, same, torch.tensor([1]))[0]]
    [0.6931, 0.6931]
    """
    import torch

    width = min(observer_logits.shape[-1], performer_logits.shape[-1])
    observer = torch.log_softmax(observer_logits[:, :width].float(), dim=-1)
    performer = torch.log_softmax(performer_logits[:, :width].float(), dim=-1)
    loss = -performer.gather(-1, labels[:, None]).squeeze(-1)
    cross = -(observer.exp() * performer).sum(-1)
    return torch.stack([loss, cross], dim=-1)


# --------------------------------------------------------------------------------------------
# Causal-LM detectors
# --------------------------------------------------------------------------------------------


def _load(model: str | os.PathLike | LoadedModel, device: str, dtype: str) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    return load_causal_lm(model, device=device, dtype=dtype)


def _model_ref(lm: LoadedModel) -> str:
    """The name to save: an existing local path is made absolute so a reload finds it."""
    path = Path(os.path.expanduser(lm.name))
    return str(path.resolve()) if path.exists() else lm.name


def _dtype_name(lm: LoadedModel) -> str:
    return str(getattr(lm.model, "dtype", "float32")).removeprefix("torch.")


class CausalLMDetector(Detector):
    """Shared machinery of detectors that read a causal LM's next-token distributions.

    Texts are tokenised with truncation to ``max_tokens``, sorted by length so a batch carries
    little padding, run through the model with right padding and an attention mask, and each
    row's statistics are taken over its real (unpadded) positions only. The first token has no
    prediction (no BOS is added unless the tokenizer adds one), so ``n`` tokens give ``n - 1``
    scored positions. A ``prefix`` (a BOS token, a chat template's assistant header ...) is read
    before every text in place of the tokenizer's special tokens and is never scored; the text's
    first token is then scored too.
    """

    def __init__(
        self,
        *,
        device: str,
        dtype: str,
        batch_size: int,
        max_tokens: int,
        min_tokens: int,
        prefix: str = "",
    ) -> None:
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.max_tokens = _check_positive_int("max_tokens", max_tokens, 2)
        self.min_tokens = _check_positive_int("min_tokens", min_tokens, 2)
        if self.min_tokens > self.max_tokens:
            raise ConfigError(
                f"min_tokens ({min_tokens}) exceeds max_tokens ({max_tokens}); lower min_tokens"
            )
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a string, got {type(prefix).__name__}")
        self.device = device
        self.dtype = dtype
        self.prefix = prefix
        self._prefix_ids: list[int] | None = None

    @property
    def prefix_ids(self) -> list[int]:
        """Token ids of :attr:`prefix` (read before every text, never scored)."""
        if self._prefix_ids is None:
            encoded = self.tokenizer(self.prefix, add_special_tokens=False)["input_ids"]
            self._prefix_ids = list(encoded) if self.prefix else []
        return self._prefix_ids

    @property
    @abstractmethod
    def models(self) -> list[LoadedModel]:
        """The loaded models, the first one's tokenizer being the one used."""

    @property
    def tokenizer(self) -> Any:
        return self.models[0].tokenizer

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int] | None], list[str | None]]:
        """Token ids per text (truncated), or ``None`` with the reason it cannot be scored."""
        texts = _as_texts(texts)
        reasons = [_text_problem(t) for t in texts]
        good = [i for i, r in enumerate(reasons) if r is None]
        ids: list[list[int] | None] = [None] * len(texts)
        if good:
            encoded = self.tokenizer(
                [texts[i] for i in good],
                truncation=True,
                max_length=self.max_tokens,
                add_special_tokens=not self.prefix,
            )["input_ids"]
            for i, row in zip(good, encoded, strict=True):
                if len(row) < self.min_tokens:
                    reasons[i] = f"too few tokens: {len(row)} < {self.min_tokens}"
                else:
                    ids[i] = self.prefix_ids + list(row)
        return ids, reasons

    def batches(self, ids: list[list[int] | None]) -> Iterator[list[int]]:
        """Indices of scorable texts in batches of similar length (longest first)."""
        order = sorted(
            (i for i, row in enumerate(ids) if row is not None), key=lambda i: -len(ids[i])
        )
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _padded(self, rows: list[list[int]], device: str) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            input_ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[k, : len(row)] = 1
        return input_ids.to(device), mask.to(device)

    def token_terms(self, texts: Sequence[str]) -> tuple[list[np.ndarray | None], Scores]:
        """Per-position statistics of every text (rows = scored positions), batched.

        Returns the per-text arrays (``None`` where unscorable) and a :class:`Scores` with the
        reasons and token counts filled in and ``values`` still NaN.
        """
        import torch

        ids, reasons = self.encode(texts)
        scores = Scores.empty(len(ids))
        scores.reasons = reasons
        terms: list[np.ndarray | None] = [None] * len(ids)
        with torch.inference_mode():
            for batch in self.batches(ids):
                rows = [ids[i] for i in batch]
                input_ids, mask = self._padded(rows, self.models[0].device)
                logits = self._all_logits(input_ids, mask)
                for k, i in enumerate(batch):
                    n = len(rows[k])
                    first = max(len(self.prefix_ids), 1)  # first scored position
                    labels = input_ids[k, first:n]
                    per_model = [lg[k, first - 1 : n - 1] for lg in logits]
                    terms[i] = self.position_terms(per_model, labels).double().cpu().numpy()
                    scores.n_tokens[i] = n - len(self.prefix_ids)
        return terms, scores

    def _all_logits(self, input_ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Each model's logits for the batch; a model listed twice runs once."""
        done: dict[int, torch.Tensor] = {}
        for lm in self.models:
            if id(lm) not in done:
                ids, attention = input_ids.to(lm.device), mask.to(lm.device)
                done[id(lm)] = lm.model(input_ids=ids, attention_mask=attention).logits
        return [done[id(lm)].to(input_ids.device) for lm in self.models]

    @abstractmethod
    def position_terms(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Per-position statistics (T, k) from each model's logits for one text."""

    @abstractmethod
    def criterion(self, terms: np.ndarray) -> float:
        """The text's criterion from its per-position statistics."""

    def score_detailed(self, texts: Sequence[str]) -> Scores:
        terms, scores = self.token_terms(texts)
        for i, t in enumerate(terms):
            if t is None:
                continue
            value = self.criterion(t)
            if math.isnan(value):
                scores.reasons[i] = "criterion undefined (the model is certain of every token)"
            scores.values[i] = value
        return scores

    def _common_spec(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "min_tokens": self.min_tokens,
            "batch_size": self.batch_size,
            "dtype": _dtype_name(self.models[0]),
            "prefix": self.prefix,
        }


class FastDetectGPT(CausalLMDetector):
    """Fast-DetectGPT's analytic sampling discrepancy, one model for scoring and sampling.

    Parameters
    ----------
    model : name, path or LoadedModel, default ``smollm2-135m``
        The causal LM (see :func:`provenance.models.load_causal_lm`).
    device, dtype : str
        Passed to the loader; ``auto`` = GPU in bfloat16 where there is one, else CPU float32.
    batch_size : int
        Texts per forward pass (padded to the longest of the batch).
    max_tokens : int
        Texts are truncated to this many tokens: cost grows with length, evidence with its
        square root.
    min_tokens : int
        Shorter texts are not scored (NaN, reason ``too few tokens``): a dozen tokens say too
        little to decide anything at a low false-positive rate.
    prefix : str
        Text read before every document and not scored (default none, as in the paper).
    """

    kind = "fast-detectgpt"

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_tokens: int = 512,
        min_tokens: int = 16,
        prefix: str = "",
    ) -> None:
        super().__init__(
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            prefix=prefix,
        )
        self.lm = _load(model, device, dtype)

    @property
    def models(self) -> list[LoadedModel]:
        return [self.lm]

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.lm.name}"

    def position_terms(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return sampling_discrepancy_terms(logits[0], labels)

    def criterion(self, terms: np.ndarray) -> float:
        return fast_detectgpt_criterion(terms)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": _model_ref(self.lm), **self._common_spec()}


class LogLikelihood(FastDetectGPT):
    """Mean log-probability of the text's tokens: the naive zero-shot baseline.

    Generated text is likely under language models, but so is simple, formulaic human text; the
    sampling discrepancy of :class:`FastDetectGPT` normalises by what the model expects at each
    position and is usually much better. Kept for comparison.
    """

    kind = "loglik"

    def criterion(self, terms: np.ndarray) -> float:
        return float(np.mean(terms[:, 0]))


class Binoculars(CausalLMDetector):
    """Binoculars: performer log-perplexity over observer/performer cross-perplexity, negated.

    Low perplexity alone flags simple human text; dividing by how surprised the performer is
    expected to be by the observer's predictions calibrates for how predictable the *context*
    makes the next token. Lower ratios are machine-like, so :meth:`score` returns the negated
    ratio to keep "higher = machine". Both models must share one tokenizer vocabulary (e.g. a
    base model and its instruct variant).
    """

    kind = "binoculars"

    def __init__(
        self,
        observer: str | os.PathLike | LoadedModel,
        performer: str | os.PathLike | LoadedModel,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_tokens: int = 512,
        min_tokens: int = 16,
        prefix: str = "",
    ) -> None:
        super().__init__(
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            prefix=prefix,
        )
        self.observer = _load(observer, device, dtype)
        same = not isinstance(performer, LoadedModel) and str(performer) == self.observer.name
        self.performer = self.observer if same else _load(performer, device, dtype)
        _check_same_vocab(self.observer, self.performer)

    @property
    def models(self) -> list[LoadedModel]:
        return [self.observer, self.performer]

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.observer.name}+{self.performer.name}"

    def position_terms(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return binoculars_terms(logits[0], logits[1], labels)

    def criterion(self, terms: np.ndarray) -> float:
        loss, cross = terms.mean(axis=0)
        return float(-loss / cross) if cross > 0 else math.nan

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "observer": _model_ref(self.observer),
            "performer": _model_ref(self.performer),
            **self._common_spec(),
        }


def _check_same_vocab(a: LoadedModel, b: LoadedModel) -> None:
    if a is b:
        return
    va, vb = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    if va != vb:
        differing = len(set(va.items()) ^ set(vb.items()))
        raise ConfigError(
            f"Binoculars needs observer and performer with one tokenizer vocabulary; "
            f"{a.name} has {len(va)} tokens, {b.name} has {len(vb)} ({differing} entries "
            "differ): use two models of one family, e.g. a base model and its instruct variant"
        )


# --------------------------------------------------------------------------------------------
# Supervised n-gram classifier
# --------------------------------------------------------------------------------------------


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
        _check_positive_int("n_features", self.n_features, 16)
        _check_positive_int("min_tokens", self.min_tokens, 1)
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


def _labels_to_int(labels: Sequence[Any]) -> np.ndarray:
    out = []
    for i, label in enumerate(labels):
        key = str(label.value if isinstance(label, Label) else label).strip().lower()
        if key in _MACHINE_LABELS:
            out.append(1)
        elif key in _HUMAN_LABELS:
            out.append(0)
        else:
            raise InputError(
                f"label {label!r} is neither human nor machine; use human/machine, "
                "human/synthetic or 0/1",
                row=i,
            )
    return np.asarray(out, dtype=np.int64)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        from sklearn.linear_model import LogisticRegression

        texts = _as_texts(texts)
        y = _labels_to_int(labels)
        if len(texts) != len(y):
            raise InputError(f"{len(texts)} texts but {len(y)} labels; pass one label per text")
        bad = [i for i, t in enumerate(texts) if _text_problem(t)]
        if bad:
            raise InputError(f"cannot train on {_text_problem(texts[bad[0]])}", row=bad[0])
        if len(set(y.tolist())) < 2:
            raise InputError("training needs both human and machine examples")
        model = LogisticRegression(C=self.params.C, max_iter=2000, class_weight="balanced")
        model.fit(self.features(texts), y)
        self.coef = model.coef_.ravel().astype(np.float64)
        self.intercept = float(model.intercept_[0])
        return self

    def _check_fitted(self) -> np.ndarray:
        if self.coef is None:
            raise ConfigError("the n-gram classifier is not trained; call fit() or load() first")
        return self.coef

    def score_detailed(self, texts: Sequence[str]) -> Scores:
        coef = self._check_fitted()
        texts = _as_texts(texts)
        scores = Scores.empty(len(texts))
        for i, text in enumerate(texts):
            problem = _text_problem(text)
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
        from safetensors.numpy import save_file

        coef = self._check_fitted()
        tensors = {"coef": coef, "intercept": np.array([self.intercept], dtype=np.float64)}
        with atomic_path(folder / NGRAM_WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "kind": self.kind})

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``ngram.safetensors`` and ``ngram.json`` into ``folder`` (no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder)
        spec = {**self.spec(), "sha256": _sha256(folder / NGRAM_WEIGHTS)}
        _write_json(folder / NGRAM_JSON, {"format": FORMAT, "version": FORMAT_VERSION, **spec})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> NgramClassifier:
        """Rebuild a classifier written by :meth:`save`."""
        folder = Path(folder)
        spec = _read_json(folder / NGRAM_JSON)
        return cls.from_spec(spec, folder)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], folder: Path) -> NgramClassifier:
        from safetensors.numpy import load_file

        weights = folder / str(spec.get("weights", NGRAM_WEIGHTS))
        if not weights.exists():
            raise InputError("classifier weights are missing", file=str(weights))
        expected = spec.get("sha256")
        if expected and _sha256(weights) != expected:
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


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def fit_platt(
    human: np.ndarray, machine: np.ndarray, prior: float | None = 0.5
) -> tuple[float, float]:
    """``(a, b)`` such that ``sigmoid(a * criterion + b)`` estimates P(synthetic).

    Platt's smoothed targets keep the fit finite when the two sets are separable. With
    ``prior`` set, the classes are reweighted so the probability is for a corpus with that
    share of machine text (0.5: the evidence alone); ``None`` uses the calibration set's mix.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = fit_platt(np.array([-3.0, -2.0, -1.0, 0.5]), np.array([-0.5, 1.0, 2.0, 3.0]))
    >>> a > 0 and abs(b) < 0.1
    True
    """
    from scipy.optimize import minimize

    human = np.asarray(human, dtype=np.float64)
    machine = np.asarray(machine, dtype=np.float64)
    n_h, n_m = len(human), len(machine)
    if n_h == 0 or n_m == 0:
        raise InputError("Platt scaling needs at least one scored human and one machine text")
    x = np.concatenate([human, machine])
    target = np.concatenate([np.full(n_h, 1.0 / (n_h + 2)), np.full(n_m, (n_m + 1.0) / (n_m + 2))])
    if prior is None:
        weight = np.ones_like(x)
    else:
        weight = np.concatenate([np.full(n_h, (1 - prior) / n_h), np.full(n_m, prior / n_m)])
        weight *= len(x)
    centre, spread = x.mean(), x.std() or 1.0
    z = (x - centre) / spread

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logit = theta[0] * z + theta[1]
        # log(1 + e^l) - t*l is the cross-entropy with soft target t, written stably.
        value = np.sum(weight * (np.logaddexp(0.0, logit) - target * logit))
        resid = weight * (1.0 / (1.0 + np.exp(-logit)) - target)
        return float(value), np.array([np.sum(resid * z), np.sum(resid)])

    theta = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B").x
    a = theta[0] / spread
    return float(a), float(theta[1] - a * centre)


def _human_quantiles(human: np.ndarray, points: int = 1001) -> list[float]:
    k = min(len(human), points)
    return [float(v) for v in np.quantile(human, np.linspace(0.0, 1.0, k))]


def calibrate(
    detector: Detector,
    human_texts: Sequence[str],
    target_fpr: float = 0.01,
    machine_texts: Sequence[str] | None = None,
    *,
    prior: float | None = 0.5,
    holdout: float = 0.0,
    seed: int = 0,
) -> CalibratedDetector:
    """Fix a detector's threshold for ``target_fpr`` on text known to be human.

    The threshold is what makes "flagged" mean something: at most ``target_fpr`` of human text
    like the calibration set is flagged. Calibrate on human text from the domain you will tag;
    a threshold from news will not hold on code comments. With ``machine_texts`` too, a Platt
    map turns the criterion into P(synthetic) (for a corpus with ``prior`` machine share) and
    the measured TPR/FPR are kept for prevalence correction. Without them there is no
    probability (a human sample says nothing about what machine text scores): verdicts and
    p-values under the human distribution are still available, ``prov_score`` stays empty.

    The TPR and FPR measured on the texts the threshold was chosen on are optimistic (the
    threshold is fitted to them), and a prevalence corrected with them inherits the bias. With
    ``holdout`` (e.g. 0.5) that share of the human and of the machine texts, drawn with
    ``seed``, is kept out of the fit: threshold, quantiles and Platt map come from the rest and
    the stored ``fpr``/``tpr`` are measured on the held-out texts (``measured_on`` says which).

    Examples
    --------
    >>> clf = NgramClassifier(n_features=2**10, min_tokens=1).fit(
    ...     ["the cat sat", "a dog ran", "As an AI model", "As an AI language model"],
    ...     ["human", "human", "machine", "machine"])
    >>> detector = calibrate(clf, ["the cat ran", "a dog sat", "my cat", "the dog"],
    ...                      target_fpr=0.25, machine_texts=["As an AI", "an AI model"])
    >>> detector.calibration["fpr"] <= 0.25, detector.calibration["tpr"]
    (True, 1.0)
    >>> detector.detect(["As an AI language model", "the cat"]).flagged.tolist()
    [True, False]
    """
    from provenance.evaluate import calibrate_threshold

    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if prior is not None and not 0.0 < prior < 1.0:
        raise ConfigError(f"prior must be in (0, 1) or None, got {prior}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    raw_human = detector.score(human_texts)
    human, human_out = _split(raw_human[~np.isnan(raw_human)], holdout, seed, "human")
    if len(human) == 0:
        raise InputError("none of the human calibration texts could be scored (too short?)")
    # calibrate_threshold warns when there are too few human texts to resolve target_fpr.
    threshold = float(calibrate_threshold(human, target_fpr))
    calibration: dict[str, Any] = {
        "n_human": int(len(human)),
        "n_human_unscored": int(len(raw_human) - np.count_nonzero(~np.isnan(raw_human))),
        "fpr": float(np.mean((human_out if holdout else human) >= threshold)),
        "human_quantiles": _human_quantiles(human),
        "measured_on": (f"held-out {holdout:g} of the calibration texts ({len(human_out)} "
                        "human)" if holdout else "calibration texts (in-sample)"),
    }
    if machine_texts is not None:
        calibration.update(_machine_calibration(detector, human, human_out, machine_texts,
                                                threshold, prior, holdout, seed))
    return CalibratedDetector(detector, threshold, target_fpr, calibration)


def _split(scores: np.ndarray, holdout: float, seed: int, name: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) parts of the scores; a seeded draw, so a recalibration repeats."""
    if not holdout:
        return scores, scores[:0]
    order = np.random.default_rng([seed, len(scores), len(name)]).permutation(len(scores))
    cut = len(scores) - int(round(holdout * len(scores)))
    if cut < 1 or cut == len(scores):
        raise InputError(f"too few scored {name} calibration texts ({len(scores)}) to hold "
                         f"out {holdout:g} of them")
    return scores[order[:cut]], scores[order[cut:]]


def _machine_calibration(
    detector: Detector,
    human: np.ndarray,
    human_out: np.ndarray,
    machine_texts: Sequence[str],
    threshold: float,
    prior: float | None,
    holdout: float,
    seed: int,
) -> dict[str, Any]:
    from provenance.evaluate import roc_auc

    raw = detector.score(machine_texts)
    if np.isnan(raw).all():
        raise InputError("none of the machine calibration texts could be scored (too short?)")
    machine, machine_out = _split(raw[~np.isnan(raw)], holdout, seed, "machine")
    measured_h, measured_m = (human_out, machine_out) if holdout else (human, machine)
    labels = np.concatenate([np.zeros(len(measured_h)), np.ones(len(measured_m))])
    auroc = float(roc_auc(labels, np.concatenate([measured_h, measured_m])))
    a, b = fit_platt(human, machine, prior)
    if a <= 0:
        warnings.warn(
            f"the detector ranks machine text below human text on these calibration sets "
            f"(AUROC {auroc:.2f}); its verdicts are not evidence here",
            TailguardWarning,
            stacklevel=3,
        )
    return {
        "n_machine": int(len(machine)),
        "n_machine_unscored": int(np.isnan(raw).sum()),
        "tpr": float(np.mean(measured_m >= threshold)),
        "auroc": auroc,
        "platt": [a, b],
        "prior": prior,
    }


@dataclass
class Detection:
    """What a calibrated detector says about each text."""

    criterion: np.ndarray
    proba: np.ndarray  # NaN everywhere when calibrated without machine text
    p_value: np.ndarray  # share of calibration human texts scoring at least as high
    flagged: np.ndarray
    reasons: list[str | None]
    n_tokens: np.ndarray


class CalibratedDetector:
    """A detector with a threshold for a known false-positive rate, and a probability map.

    ``calibration`` holds ``n_human``, ``fpr`` and ``human_quantiles`` (the human criterion
    distribution, for p-values) and, when machine text was given, ``n_machine``, ``tpr``,
    ``auroc`` and ``platt`` = (a, b), the map to P(synthetic). Build one with :func:`calibrate`;
    save it with :meth:`save`.
    """

    def __init__(
        self, detector: Detector, threshold: float, target_fpr: float, calibration: dict[str, Any]
    ) -> None:
        if not math.isfinite(threshold):
            raise ConfigError(f"threshold must be a finite number, got {threshold}")
        if not calibration.get("human_quantiles") and not calibration.get("platt"):
            raise ConfigError("calibration needs 'platt' (a, b) or 'human_quantiles'")
        self.detector = detector
        self.threshold = float(threshold)
        self.target_fpr = float(target_fpr)
        self.calibration = calibration

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def has_probability(self) -> bool:
        """Whether machine text was calibrated on, so that P(synthetic) can be given."""
        return bool(self.calibration.get("platt"))

    def proba_from_criterion(self, criterion: np.ndarray) -> np.ndarray:
        """P(synthetic) for raw criterion values via the Platt map (NaN without one)."""
        x = np.asarray(criterion, dtype=np.float64)
        if not self.has_probability:
            return np.full(x.shape, np.nan)
        a, b = self.calibration["platt"]
        return 1.0 / (1.0 + np.exp(-(a * x + b)))

    def p_value_from_criterion(self, criterion: np.ndarray) -> np.ndarray:
        """Share of the calibration human texts with a criterion at least ``criterion``.

        Read off the stored human quantiles; never below ``1 / (n_human + 1)``, since a sample
        of ``n_human`` cannot show a smaller tail.
        """
        x = np.asarray(criterion, dtype=np.float64)
        quantiles = np.asarray(self.calibration.get("human_quantiles") or [], dtype=np.float64)
        if len(quantiles) == 0:
            return np.full(x.shape, np.nan)
        levels = np.linspace(0.0, 1.0, len(quantiles))
        floor = 1.0 / (int(self.calibration.get("n_human", len(quantiles))) + 1)
        tail = 1.0 - np.interp(x, quantiles, levels, left=0.0, right=1.0)
        return np.where(np.isnan(x), np.nan, np.maximum(tail, floor))

    def detect(self, texts: Sequence[str]) -> Detection:
        """Criterion, probability, p-value, verdict (criterion >= threshold) and reasons."""
        scores = self.detector.score_detailed(texts)
        with np.errstate(invalid="ignore"):
            flagged = scores.values >= self.threshold
        return Detection(
            criterion=scores.values,
            proba=self.proba_from_criterion(scores.values),
            p_value=self.p_value_from_criterion(scores.values),
            flagged=flagged,
            reasons=scores.reasons,
            n_tokens=scores.n_tokens,
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(synthetic) per text; NaN where a text cannot be scored.

        Needs a calibration with machine text (see :func:`calibrate`).
        """
        if not self.has_probability:
            raise ConfigError(
                "this detector was calibrated on human text only, which gives a threshold and "
                "p-values but no probability; pass machine_texts to calibrate()"
            )
        return self.detect(texts).proba

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``detector.json`` (and the classifier's safetensors) into ``folder``.

        The JSON is written last, so a folder with a ``detector.json`` is complete.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.detector.save_weights(folder)
        spec = self.detector.spec()
        if "weights" in spec:
            spec["sha256"] = _sha256(folder / spec["weights"])
        _write_json(
            folder / DETECTOR_FILE,
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "name": self.name,
                "detector": spec,
                "threshold": self.threshold,
                "target_fpr": self.target_fpr,
                "calibration": self.calibration,
                "versions": _versions(),
            },
        )
        return folder

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: str = "auto", dtype: str | None = None
    ) -> CalibratedDetector:
        """Rebuild a detector saved by :meth:`save` (``path``: its folder or ``detector.json``).

        Models load in the dtype they were calibrated in unless ``dtype`` says otherwise (the
        threshold belongs to the numbers the model produced then).
        """
        path = Path(path)
        file = path / DETECTOR_FILE if path.is_dir() else path
        data = _read_json(file)
        try:
            detector = detector_from_spec(data["detector"], file.parent, device=device, dtype=dtype)
            return cls(detector, data["threshold"], data["target_fpr"], data["calibration"])
        except KeyError as exc:
            raise InputError(
                f"not a saved detector: no {exc.args[0]!r} entry", file=str(file)
            ) from exc


def load_detector(
    path: str | os.PathLike, *, device: str = "auto", dtype: str | None = None
) -> CalibratedDetector:
    """Load a calibrated detector folder (what ``tailguard tag --detector PATH`` reads)."""
    return CalibratedDetector.load(path, device=device, dtype=dtype)


def detector_from_spec(
    spec: dict[str, Any], folder: Path, *, device: str = "auto", dtype: str | None = None
) -> Detector:
    """The detector a :meth:`Detector.spec` describes (weights read from ``folder``)."""
    kind = spec.get("kind")
    if kind == NgramClassifier.kind:
        return NgramClassifier.from_spec(spec, folder)
    lm_kinds: dict[str, type[CausalLMDetector]] = {
        FastDetectGPT.kind: FastDetectGPT,
        LogLikelihood.kind: LogLikelihood,
        Binoculars.kind: Binoculars,
    }
    if kind not in lm_kinds:
        raise InputError(f"unknown detector kind {kind!r}; expected one of "
                         f"{sorted([*lm_kinds, NgramClassifier.kind])}")
    options = {
        "device": device,
        "dtype": dtype or spec.get("dtype", "auto"),
        "batch_size": spec.get("batch_size", 8),
        "max_tokens": spec.get("max_tokens", 512),
        "min_tokens": spec.get("min_tokens", 16),
        "prefix": spec.get("prefix", ""),
    }
    if kind == Binoculars.kind:
        return Binoculars(spec["observer"], spec["performer"], **options)
    return lm_kinds[kind](spec["model"], **options)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("tailguard", "torch", "transformers", "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError("saved detector not found (expected a folder written by save())",
                         file=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a tailguard detector file (format is not {FORMAT!r})",
                         file=str(path))
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"written by a newer tailguard (format version {data['version']}); upgrade",
            file=str(path),
        )
    return data


# --------------------------------------------------------------------------------------------
# The tagger signal
# --------------------------------------------------------------------------------------------


class DetectorSignal(Signal):
    """A calibrated detector as the last, least reliable evidence of the tagger.

    Every document it sees gets a tag: ``synthetic`` when the criterion reaches the threshold,
    ``human`` below it (a calibrated detector's "no" is evidence of human writing, unlike a
    ledger miss), and ``unknown`` with the reason when the text cannot be scored. The score is
    the calibrated P(synthetic) in both cases (empty when the detector was calibrated on human
    text only); ``prov_detail`` keeps the criterion, threshold and p-value.
    """

    evidence = Evidence.DETECTOR

    def __init__(self, detector: CalibratedDetector) -> None:
        super().__init__()
        if not isinstance(detector, CalibratedDetector):
            raise ConfigError(
                "DetectorSignal needs a calibrated detector: calibrate(detector, human_texts) "
                "or load_detector(path)"
            )
        self.detector = detector

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        result = self.detector.detect(batch.get_column(text_field).to_list())
        return [self._tag(result, i) for i in range(len(result.reasons))]

    def _tag(self, result: Detection, i: int) -> Tag:
        name = self.detector.name
        if result.reasons[i] is not None or math.isnan(result.criterion[i]):
            reason = result.reasons[i] or "not scored"
            return Tag(Label.UNKNOWN, None, self.evidence, detail={"reason": reason,
                                                                    "detector": name})
        proba = result.proba[i]
        return Tag(
            label=Label.SYNTHETIC if result.flagged[i] else Label.HUMAN,
            score=None if math.isnan(proba) else float(np.clip(proba, 0.0, 1.0)),
            evidence=self.evidence,
            detail={
                "criterion": float(result.criterion[i]),
                "threshold": self.detector.threshold,
                "target_fpr": self.detector.target_fpr,
                "p_value": round(float(result.p_value[i]), 6),
                "detector": name,
                "n_tokens": int(result.n_tokens[i]),
            },
        )


__all__ = [
    "Binoculars",
    "CalibratedDetector",
    "CausalLMDetector",
    "Detection",
    "Detector",
    "DetectorSignal",
    "FastDetectGPT",
    "LogLikelihood",
    "NgramClassifier",
    "NgramParams",
    "Scores",
    "binoculars_terms",
    "calibrate",
    "detector_from_spec",
    "fast_detectgpt_criterion",
    "fit_platt",
    "load_detector",
    "sampling_discrepancy_terms",
]
