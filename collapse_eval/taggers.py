"""Taggers for numeric samples: what a filter or reweight policy believes is synthetic.

Text has real evidence (ledger, watermark, detector). Numeric samples have none, so the
experiments bracket reality with three taggers:

* ``oracle`` — the truth; the best any provenance system can do.
* ``noisy(tpr, fpr)`` — the truth seen through a tagger with known error rates, the knob of the
  "how good must detection be?" sweep. A document's tag is decided once, from a keyed hash of
  (chain seed, sample id), so the same sample keeps its tag in every generation, as a tag stored
  next to a scraped document would.
* ``discriminator`` — a learned detector: logistic regression on quadratic features (the Bayes
  form for Gaussian-vs-Gaussian), trained per chain on the original data (known human) against
  the newest generation's samples (what the defender's own model produces), re-trained every
  generation. It fails when the model is still good, as real detectors do.

Every tagger returns labels (0 human, 1 synthetic) and scores P(synthetic), shape (chains, n).
"""

from __future__ import annotations

import numpy as np
import torch

from collapse_eval.policies import TaggerSpec
from collapse_eval.rng import derive_seed
from collapse_eval.tensor_mix import ORIGIN_GENERATED
from mixers.sampling import key_uniform, xxh64_int_ids


def quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """[x, x_i x_j for i <= j] of (chains, n, d) samples: enough to separate two Gaussians."""
    d = x.shape[-1]
    i, j = torch.triu_indices(d, d, device=x.device)
    return torch.cat([x, x[..., i] * x[..., j]], dim=-1)


def oracle_tags(origin: np.ndarray, chains: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.broadcast_to((origin == ORIGIN_GENERATED).astype(np.int8), (chains, origin.size))
    return label.copy(), label.astype(np.float64)


def noisy_tags(origin: np.ndarray, uid: np.ndarray, chain_seeds: list[int], tpr: float,
               fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """Tags with the given error rates, fixed per (chain, sample) across generations."""
    seeds = np.array([derive_seed(s, "noisy-tagger") for s in chain_seeds], dtype=np.uint64)
    keys = xxh64_int_ids(np.broadcast_to(uid, (len(chain_seeds), uid.size)), seeds, "tag\x1f")
    u = key_uniform(keys)
    generated = (origin == ORIGIN_GENERATED)[None, :]
    label = np.where(generated, u < tpr, u < fpr).astype(np.int8)
    return label, label.astype(np.float64)


class LogisticDiscriminator:
    """Per-chain L2-regularised logistic regression, fitted by batched Newton steps.

    Features are standardised on the training set; classes are weighted to balance, so the
    decision threshold 0.5 means "more likely generated than original" whatever the pool sizes.
    """

    def __init__(self, l2: float = 1e-3, steps: int = 30) -> None:
        self.l2 = l2
        self.steps = steps
        self.weights: torch.Tensor | None = None
        self.center: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None

    def _design(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.center) / self.scale
        return torch.cat([torch.ones_like(z[..., :1]), z], dim=-1)

    def fit(self, human: torch.Tensor, generated: torch.Tensor) -> LogisticDiscriminator:
        """``human`` (C, n0, f) and ``generated`` (C, n1, f) features, float64 inside."""
        h, g = human.double(), generated.double()
        both = torch.cat([h, g], dim=1)
        self.center = both.mean(dim=1, keepdim=True)
        self.scale = both.std(dim=1, keepdim=True).clamp_min(1e-12)
        x = self._design(both)
        y = torch.cat([torch.zeros(h.shape[:2], dtype=x.dtype, device=x.device),
                       torch.ones(g.shape[:2], dtype=x.dtype, device=x.device)], dim=1)
        sample_weight = torch.cat([
            torch.full(h.shape[:2], 0.5 / h.shape[1], dtype=x.dtype, device=x.device),
            torch.full(g.shape[:2], 0.5 / g.shape[1], dtype=x.dtype, device=x.device),
        ], dim=1)
        chains, _, p = x.shape
        w = torch.zeros(chains, p, dtype=x.dtype, device=x.device)
        ridge = self.l2 * torch.eye(p, dtype=x.dtype, device=x.device)
        ridge[0, 0] = 0.0  # the intercept is not penalised
        for _ in range(self.steps):
            prob = torch.sigmoid(torch.einsum("cnp,cp->cn", x, w))
            grad = torch.einsum("cnp,cn->cp", x, (prob - y) * sample_weight) + w @ ridge
            curvature = (prob * (1 - prob) * sample_weight).clamp_min(1e-12)
            hessian = torch.einsum("cnp,cn,cnq->cpq", x, curvature, x) + ridge
            step = torch.linalg.solve(hessian, grad.unsqueeze(-1)).squeeze(-1)
            w = w - step
            if float(step.abs().max()) < 1e-10:
                break
        self.weights = w
        return self

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """P(generated) per sample, (C, n)."""
        if self.weights is None:
            raise RuntimeError("fit the discriminator first")
        return torch.sigmoid(torch.einsum("cnp,cp->cn", self._design(features.double()),
                                          self.weights))


def discriminator_tags(features: torch.Tensor, human: torch.Tensor,
                       generated: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Train on (human, generated) features, then tag ``features`` (all (C, n, f))."""
    score = LogisticDiscriminator().fit(human, generated).score(features)
    score_np = score.cpu().numpy()
    return (score_np > 0.5).astype(np.int8), score_np


def tagger_rates(label: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth TPR and FPR of ``label`` per chain (NaN where a class is absent)."""
    generated = (origin == ORIGIN_GENERATED)[None, :]
    flagged = label == 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (flagged & generated).sum(axis=1) / generated.sum()
        fpr = (flagged & ~generated).sum(axis=1) / (~generated).sum()
    return tpr.astype(np.float64), fpr.astype(np.float64)


def describe(tagger: TaggerSpec) -> str:
    """One line for reports: what this tagger stands for."""
    if tagger.kind == "noisy":
        return f"truth seen with TPR {tagger.tpr:g} and FPR {tagger.fpr:g}"
    return {"oracle": "the truth", "discriminator": "logistic regression, original vs newest"}.get(
        tagger.kind, tagger.kind)
