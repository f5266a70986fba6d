"""The 1-D Gaussian: the case with closed forms for collapse (Shumailov et al., Theorem 3.1).

Each generation refits a mean and a variance; with no original data the variance follows a
multiplicative random walk, E[ln s2_n] = n[digamma((M-1)/2) + ln(2/(M-1))] for the unbiased
estimator, so it collapses to 0 almost surely even though E[s2_n] stays 1. The tests check the
whole loop against these formulas.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from collapse_eval.families.base import MetricContext, NumericFamily, Params
from collapse_eval.metrics import (
    gaussian_1d_tail_loglik_gap,
    gaussian_1d_tail_recall,
    gaussian_kl,
    gaussian_w2_squared,
)
from collapse_eval.rng import ChainRandom

THREE_SIGMA_MASS = math.erfc(3 / math.sqrt(2))  # P(|Z| > 3) = 0.0026998


class GaussianFamily(NumericFamily):
    """Fit N(mean, var) by sample moments; ``ddof`` 1 (unbiased, the paper's theorem) or 0 (MLE)."""

    name = "gaussian"
    # Read from the original's side: a drifting mean moves mass beyond +-3 sigma_0 even as the
    # model narrows (tail_mass_ratio rises), but it takes the model's HDR away from the original's
    # tail on one side, so tail_recall falls. log_variance_ratio, the quantity the theorem is
    # about, stays as the closed-form check (the report's theory table).
    tail_metric = "tail_recall"
    summary_metrics = ("tail_recall", "tail_loglik_gap", "variance", "log_variance",
                       "log_variance_ratio", "mean_sq_error", "w2_squared", "tail_mass_ratio",
                       "synthetic_share")

    def __init__(self, ddof: int = 1, mean: float = 0.0, std: float = 1.0,
                 dtype: torch.dtype = torch.float64, device: str = "cpu") -> None:
        super().__init__(dtype, device)
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 (MLE) or 1 (unbiased), got {ddof}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.ddof, self.mean, self.std = ddof, float(mean), float(std)

    def options(self) -> dict[str, Any]:
        return {"ddof": self.ddof, "mean": self.mean, "std": self.std}

    def original(self, rng: ChainRandom, n: int, stream: str) -> torch.Tensor:
        return self.mean + self.std * rng.normal(0, stream, (n, 1), dtype=self.dtype)

    def fit(self, x: torch.Tensor, rng: ChainRandom, generation: int) -> Params:
        values = x[..., 0]
        return {"mean": values.mean(dim=1), "var": values.var(dim=1, correction=self.ddof)}

    def sample(self, params: Params, n: int, rng: ChainRandom, generation: int) -> torch.Tensor:
        z = rng.normal(generation, "sample", (n, 1), dtype=self.dtype)
        return params["mean"][:, None, None] + params["var"].sqrt()[:, None, None] * z

    def metrics(self, params: Params, samples: torch.Tensor,
                context: MetricContext) -> dict[str, torch.Tensor]:
        mean, var = params["mean"].double(), params["var"].double()
        ones = torch.ones_like(mean)
        truth_mean, truth_var = self.mean * ones, self.std**2 * ones
        fitted = (mean[:, None], var[:, None, None])
        truth = (truth_mean[:, None], truth_var[:, None, None])
        # P(|X - mu0| > 3 sigma0) under the fitted N(mean, var), in closed form.
        sd = var.clamp_min(1e-300).sqrt()
        edge = 3 * self.std
        upper = torch.special.ndtr((mean - (self.mean + edge)) / sd)
        lower = torch.special.ndtr(((self.mean - edge) - mean) / sd)
        tail = upper + lower
        return {
            "mean": mean,
            "variance": var,
            "log_variance": torch.log(var.clamp_min(1e-300)),
            "log_variance_ratio": torch.log(var.clamp_min(1e-300) / self.std**2),
            "mean_sq_error": (mean - self.mean) ** 2,
            "w2_squared": gaussian_w2_squared(*fitted, *truth),
            "kl_from_original": gaussian_kl(*truth, *fitted),
            "tail_mass_3sigma": tail,
            "tail_mass_ratio": tail / THREE_SIGMA_MASS,
            "tail_recall": gaussian_1d_tail_recall(mean, var, self.mean, self.std),
            "tail_loglik_gap": gaussian_1d_tail_loglik_gap(mean, var, self.mean, self.std),
        }
