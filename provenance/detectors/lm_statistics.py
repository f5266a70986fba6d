"""The per-position statistics of the zero-shot detectors, as pure tensor functions.

Kept apart from the models so the formulas can be checked against hand computations (the
doctests) without loading anything.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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
