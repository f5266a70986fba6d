"""Gaussian mixtures fitted by batched EM: the paper's second case study.

Shumailov et al. fit a 2-component GMM to 1000 samples, sample 1000 from the fit, refit, for 2000
generations with no original data: the components narrow (sigma about 0.9 -> 0.01) and the
mixture drifts away from the truth. The default truth here is two unit-variance components in
2-D at (-2, 0) and (2, 0) with weights 0.7 / 0.3, so the rarer mode is the tail that goes first.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch

from collapse_eval.families.base import MetricContext, NumericFamily, Params
from collapse_eval.gmm_em import GMMParams, fit_gmm, gmm_log_density, sample_gmm
from collapse_eval.metrics import (
    HDR_MASS,
    TAIL_LEVEL,
    TailEvents,
    empirical_w2_squared,
    gmm_l2_distance_squared,
    log_density_quantile,
    original_tail_events,
    tail_loglik_gap,
    tail_mass,
    tail_recall,
)
from collapse_eval.rng import ChainRandom

DEFAULT_WEIGHTS = (0.7, 0.3)
DEFAULT_MEANS = ((-2.0, 0.0), (2.0, 0.0))
#: the fixed key of every Monte Carlo draw of the tail metrics: same events, same numbers forever
TAIL_SEED = 0x7A11_5EED
#: draws of the original for its 5% density quantile, and draws that keep ~5% as tail events
TAIL_THRESHOLD_DRAWS = 1 << 20
TAIL_EVENT_DRAWS = 1 << 18
#: draws of each fitted model for the edge of its own 99% HDR: its level then has a Monte Carlo
#: error of 0.00055 (sd), 0.014 on a raw tail_recall, well below a 500-sample fit's own spread;
#: every chain and the original use the same keys, so for models near the original it cancels
#: in the normalised recall. 2^15 draws cost ~30 ms a generation for 8 chains on one CPU thread.
HDR_DRAWS = 1 << 15


def mixture_tail_events(truth: GMMParams, draws: int = TAIL_EVENT_DRAWS,
                        threshold_draws: int = TAIL_THRESHOLD_DRAWS) -> TailEvents:
    """The original mixture's tail events: its draws below its own 5% density quantile.

    ``truth`` is one mixture (one chain). The quantile comes from ``threshold_draws`` draws and
    the events from ``draws`` others (about 5% of them are kept), all keyed by :data:`TAIL_SEED`.

    >>> one = GMMParams(torch.ones(1, 1), torch.zeros(1, 1, 1), torch.ones(1, 1, 1, 1))
    >>> events = mixture_tail_events(one.to(dtype=torch.float64), 4000, 4000)
    >>> 150 < len(events.points) < 250 and bool((events.points.abs() > 1.9).all())
    True
    """
    rng = ChainRandom([TAIL_SEED], truth.means.device)
    reference = sample_gmm(truth, threshold_draws, rng, 0, "tail/threshold")
    threshold = log_density_quantile(gmm_log_density(truth, reference), TAIL_LEVEL)
    points = sample_gmm(truth, draws, rng, 0, "tail/events")
    return original_tail_events(points[0], gmm_log_density(truth, points)[0], threshold[0])


def mixture_hdr_threshold(fitted: GMMParams, draws: int = HDR_DRAWS) -> torch.Tensor:
    """The edge of each fitted mixture's own 99% HDR: its 1% log-density quantile, ``(C,)``.

    Estimated from ``draws`` draws of each model; every chain uses the same keys (common random
    numbers), so a chain's value depends only on its own model.
    """
    rng = ChainRandom([TAIL_SEED] * fitted.chains, fitted.means.device)
    own = sample_gmm(fitted, draws, rng, 0, "tail/hdr")
    return log_density_quantile(gmm_log_density(fitted, own), 1.0 - HDR_MASS)


def mixture_tail_metrics(fitted: GMMParams, truth: GMMParams, events: TailEvents,
                         draws: int = HDR_DRAWS) -> dict[str, torch.Tensor]:
    """``tail_recall`` and ``tail_loglik_gap`` of fitted mixtures ``(C,)`` on the tail events of
    the original mixture ``truth`` (one chain; events from :func:`mixture_tail_events`).

    The recall is normalised by the original's own share measured with the same draws, so the
    original scores exactly 1 and, for models near it, the Monte Carlo error of the HDR edge
    (sd 0.014 at :data:`HDR_DRAWS`) mostly cancels. Reference values under no collapse: recall
    1, gap 0 (both exact for the original itself).

    >>> one = GMMParams(torch.ones(1, 1), torch.zeros(1, 1, 1), torch.ones(1, 1, 1, 1))
    >>> one = one.to(dtype=torch.float64)
    >>> out = mixture_tail_metrics(one, one, mixture_tail_events(one, 20000, 20000), 20000)
    >>> out["tail_recall"].item(), out["tail_loglik_gap"].item()
    (1.0, 0.0)
    """
    original = gmm_log_density(truth, events.points)
    own_share = tail_recall(original, mixture_hdr_threshold(truth, draws), reference=1.0)
    model = gmm_log_density(fitted, events.points)
    return {"tail_recall": tail_recall(model, mixture_hdr_threshold(fitted, draws), own_share),
            "tail_loglik_gap": tail_loglik_gap(events.log_density, model)}


class GMMFamily(NumericFamily):
    """k-component, d-dimensional full-covariance mixtures; EM as scikit-learn does it."""

    name = "gmm"
    #: of the original's rare events, the share the fitted mixture still finds plausible
    tail_metric = "tail_recall"
    summary_metrics = ("tail_recall", "tail_loglik_gap", "component_std", "log_l2_distance",
                       "tail_mass_ratio", "minority_weight", "heldout_loglik", "synthetic_share")
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

    @cached_property
    def tail_events(self) -> TailEvents:
        """The true mixture's tail events (drawn once, with a fixed key, on first use)."""
        return mixture_tail_events(self.truth)

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
            **mixture_tail_metrics(fitted, truth, self.tail_events),
            "heldout_loglik": gmm_log_density(fitted, heldout.double()).mean(dim=1),
            "minority_weight": fitted.weights.min(dim=1).values,
            "em_iterations": params["n_iter"].double(),
        }
