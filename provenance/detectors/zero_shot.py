"""Zero-shot detectors that read a causal LM's next-token distributions.

:class:`FastDetectGPT` (Bao et al., ICLR 2024): a model's own samples sit close to the model's
expected log-probability at every position, while human text keeps surprising it; the analytic
sampling discrepancy measures this in one forward pass. :class:`Binoculars` (Hans et al., 2024)
compares one model's perplexity with how surprised it expects to be by a second, related model.
:class:`LogLikelihood` is the plain mean log-likelihood baseline both papers compare against.
"""

from __future__ import annotations

import math
import os
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from provenance.detectors.base import Detector, Scores, as_texts, check_positive_int, text_problem
from provenance.detectors.lm_statistics import (
    binoculars_terms,
    fast_detectgpt_criterion,
    sampling_discrepancy_terms,
)
from provenance.errors import ConfigError
from provenance.models import DEFAULT_MODEL, LoadedModel, load_causal_lm

if TYPE_CHECKING:
    import torch


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
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_tokens: int = 512,
        min_tokens: int = 16,
        prefix: str = "",
    ) -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.max_tokens = check_positive_int("max_tokens", max_tokens, 2)
        self.min_tokens = check_positive_int("min_tokens", min_tokens, 2)
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
        texts = as_texts(texts)
        reasons = [text_problem(t) for t in texts]
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
    **options
        Keyword options every causal-LM detector takes (:class:`Binoculars` too):

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
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.lm = _load(model, self.device, self.dtype)

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
    base model and its instruct variant). The keyword options are :class:`FastDetectGPT`'s.
    """

    kind = "binoculars"

    def __init__(
        self,
        observer: str | os.PathLike | LoadedModel,
        performer: str | os.PathLike | LoadedModel,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.observer = _load(observer, self.device, self.dtype)
        same = not isinstance(performer, LoadedModel) and str(performer) == self.observer.name
        self.performer = self.observer if same else _load(performer, self.device, self.dtype)
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
