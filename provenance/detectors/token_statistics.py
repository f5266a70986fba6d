"""Per-token statistics of a causal LM over a text: the raw material of the supervised detector.

Zero-shot detectors reduce a text to one number by a fixed formula, and the formula's sign is
an assumption about the generator (Fast-DetectGPT assumes machine text sits *closer* to the
scoring model's expectation than human text). A supervised detector keeps the per-token numbers
and lets labelled data decide what matters and in which direction, so it also works where the
assumption fails (a scorer that memorised the human text, text from much larger models).

:class:`TokenStatistics` is a :class:`~provenance.detectors.zero_shot.CausalLMDetector` whose
per-position terms are the observed log-probability, the expected log-probability and its
variance under the model (Fast-DetectGPT's terms; with one model, Binoculars' cross-perplexity
is the entropy, ``-mu``) and the log-rank of the observed token. Its own criterion is
Fast-DetectGPT's, so it can stand in for one where a single number is wanted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from provenance.detectors.lm_statistics import (
    fast_detectgpt_criterion,
    sampling_discrepancy_terms,
)
from provenance.detectors.zero_shot import FastDetectGPT

if TYPE_CHECKING:
    import torch

#: Column order of :meth:`TokenStatistics.position_terms`.
TOKEN_COLUMNS = ("logp", "mu", "var", "log_rank")


def token_statistic_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position ``log p(x_t)``, ``mu_t``, ``var_t`` and ``log(1 + rank_t)``, as (T, 4).

    ``rank_t`` counts the vocabulary entries the model found strictly more likely than the
    observed token (0 = the model's top choice). Float32 whatever the model's dtype.

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    >>> terms = token_statistic_terms(logits, torch.tensor([0, 1]))
    >>> [round(float(v), 4) for v in terms[:, 3]]     # ranks 0 and 1
    [0.0, 0.6931]
    """
    import torch

    terms = sampling_discrepancy_terms(logits, labels)
    observed = logits.gather(-1, labels[:, None])
    rank = (logits > observed).sum(-1).float()
    return torch.cat([terms, torch.log1p(rank)[:, None]], dim=-1)


class TokenStatistics(FastDetectGPT):
    """The per-token statistics of one causal LM; criterion = Fast-DetectGPT's.

    Takes :class:`~provenance.detectors.zero_shot.FastDetectGPT`'s arguments.
    :meth:`token_terms` returns a (T, 4) float64 array per text, columns
    :data:`TOKEN_COLUMNS`.
    """

    kind = "token-statistics"

    def position_terms(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return token_statistic_terms(logits[0], labels)

    def criterion(self, terms: np.ndarray) -> float:
        return fast_detectgpt_criterion(terms[:, :3])

    def scorer_id(self) -> str:
        """What the per-token numbers depend on: model file digest, dtype, length limits.

        Two scorers with one id produce the same numbers, so cached statistics and a trained
        detector's weights can be reused exactly when the ids match.
        """
        from provenance.detectors.files import model_digest

        return (f"{model_digest(self.lm)}/{self.spec()['dtype']}/max{self.max_tokens}"
                f"/min{self.min_tokens}/prefix{len(self.prefix_ids)}")

    def score_terms(self, texts: list
                    ) -> tuple[list[np.ndarray | None], list[str | None], list[int]]:
        """(per-token arrays, reasons, token counts): the ``score`` a token store calls."""
        terms, scores = self.token_terms(texts)
        return terms, scores.reasons, [int(n) for n in scores.n_tokens]
