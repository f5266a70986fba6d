"""Gaussian mixtures fitted by batched EM: the paper's second case study.

Shumailov et al. fit a 2-component GMM to 1000 samples, sample 1000 from the fit, refit, for 2000
generations with no original data: the components narrow (sigma about 0.9 -> 0.01) and the
mixture drifts away from the truth. The default truth here is two unit-variance components in
2-D at (-2, 0) and (2, 0) with weights 0.7 / 0.3, so the rarer mode is the tail that goes first.
"""

from __future__ import annotations

from typing import Any

import torch

from collapse_eval.families.base import MetricContext, NumericFamily, Params
from collapse_eval.gmm_em import GMMParams, fit_gmm, gmm_log_density, sample_gmm
from collapse_eval.metrics import empirical_w2_squared, gmm_l2_distance_squared, tail_mass
from collapse_eval.rng import ChainRandom

DEFAULT_WEIGHTS = (0.7, 0.3)
DEFAULT_MEANS = ((-2.0, 0.0), (2.0, 0.0))


class GMMFamily(NumericFamily):
    """k-component, d-dimensional full-covariance mixtures; EM as scikit-learn does it."""

    name = "gmm"
    tail_metric = "tail_mass_ratio"
    summary_metrics = ("component_std", "log_l2_distance", "tail_mass_ratio", "minority_weight",
                       "heldout_loglik", "synthetic_share")
    default_dtype = "float32"

    def __init__(self, components: int = 2, weights: tuple[float, ...] = DEFAULT_WEIGHTS,
                 means: tuple[tuple[float, ...], ...] = DEFAULT_MEANS, std: float = 1.0,
                 init: str = "kmeans++", tol: float = 1e-5, max_iter: int = 2000,
                 dtype: torch.dtype = torch.float32, device: str = "cpu") -> None:
        super().__init__(dtype, device)
        if len(weights) != len(means) or abs(sum(weights) - 1.0) > 1e-9:
            raise ValueError("the true mixture needs one mean per weight and weights summing to 1")
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.components, self.init, self.tol, self.max_iter = components, init, tol, max_iter
        self.true_weights, self.true_means, self.std = tuple(weights), tuple(means), float(std)
        self.dims = len(means[0])
        d = self.dims
        self.truth = GMMParams(
            weights=torch.tensor(weights, dtype=torch.float64)[None],
            means=torch.tensor(means, dtype=torch.float64)[None],
            covariances=(std**2 * torch.eye(d, dtype=torch.float64)).expand(
                1, len(weights), d, d).clone(),
        ).to(device=self.device)

    def options(self) -> dict[str, Any]:
        return {"components": self.components, "weights": list(self.true_weights),
                "means": [list(m) for m in self.true_means], "std": self.std, "init": self.init,
                "tol": self.tol, "max_iter": self.max_iter}

    def original(self, rng: ChainRandom, n: int, stream: str) -> torch.Tensor:
        chains = rng.chains
        truth = GMMParams(self.truth.weights.expand(chains, -1),
                          self.truth.means.expand(chains, -1, -1),
                          self.truth.covariances.expand(chains, -1, -1, -1))
        return sample_gmm(truth, n, rng, generation=0, stream=stream).to(self.dtype)

    def fit(self, x: torch.Tensor, rng: ChainRandom, generation: int) -> Params:
        fitted = fit_gmm(x, self.components, init=self.init, rng=rng, generation=generation,
                         tol=self.tol, max_iter=self.max_iter)
        return {**fitted.params.tensors(), "n_iter": fitted.n_iter.to(torch.int64)}

    def sample(self, params: Params, n: int, rng: ChainRandom, generation: int) -> torch.Tensor:
        return sample_gmm(self._params(params), n, rng, generation=generation)

    def _params(self, params: Params) -> GMMParams:
        return GMMParams.from_tensors({k: v for k, v in params.items() if k != "n_iter"})

    def metrics(self, params: Params, samples: torch.Tensor,
                context: MetricContext) -> dict[str, torch.Tensor]:
        fitted = self._params(params).to(dtype=torch.float64)
        heldout = context.heldout
        truth = self.truth
        covs = fitted.covariances
        stds = torch.sqrt(torch.diagonal(covs, dim1=-2, dim2=-1).sum(-1) / self.dims)
        l2 = gmm_l2_distance_squared(fitted.weights, fitted.means, covs, truth.weights,
                                     truth.means, truth.covariances)
        truth_means, truth_covs = truth.means[0], truth.covariances[0]
        tail = tail_mass(samples.double(), truth_means, truth_covs, 3.0)
        tail_truth = tail_mass(heldout.double(), truth_means, truth_covs, 3.0)
        return {
            "log_l2_distance": torch.log(l2.clamp_min(1e-300)),
            "component_std": stds.mean(dim=1),
            "component_std_min": stds.min(dim=1).values,
            "w2_sample": empirical_w2_squared(samples.double(), heldout.double(), projections=16),
            "tail_mass_3sigma": tail,
            "tail_mass_ratio": tail / tail_truth.clamp_min(1e-12),
            "heldout_loglik": gmm_log_density(fitted, heldout.double()).mean(dim=1),
            "minority_weight": fitted.weights.min(dim=1).values,
            "em_iterations": params["n_iter"].double(),
        }
