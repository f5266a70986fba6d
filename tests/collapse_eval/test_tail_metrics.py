"""Tail metrics from the original's point of view, checked on known truths.

``tail_recall`` (reference 1: the original itself) and ``tail_loglik_gap`` (reference 0): the
1-D Gaussian's closed forms against scipy and against the Monte Carlo path the mixtures use;
then a 2-component mixture whose fitted model is the truth, narrower, shifted, wider, or has lost
its rare mode. Monte Carlo tolerances are stated where used: every draw has a fixed key, so each
test is deterministic, and the tolerance is about 3 standard deviations of the estimate.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from collapse_eval.families.base import MetricContext
from collapse_eval.families.gaussian import GaussianFamily
from collapse_eval.families.gmm import GMMFamily, mixture_tail_events, mixture_tail_metrics
from collapse_eval.gmm_em import GMMParams
from collapse_eval.metrics import (
    HDR_MASS,
    METRICS,
    TAIL_LEVEL,
    TAIL_RECALL_REFERENCE,
    gaussian_1d_tail_loglik_gap,
    gaussian_1d_tail_recall,
    log_density_quantile,
    original_tail_events,
    tail_loglik_gap,
    tail_recall,
)
from collapse_eval.profiles import family_profile
from provenance.errors import ConfigError, InputError

F64 = torch.float64
#: (shift in original sds, scale) of 1-D models: truth, narrower, much narrower, shifted, wider
MODELS_1D = [(0.0, 1.0), (0.0, 0.7), (0.0, 0.3), (0.5, 1.0), (1.5, 0.8), (0.0, 2.0)]


def _scipy_recall(shift: float, scale: float) -> float:
    """P(|z| > c and z in the model's 99% HDR) / 0.05 / 0.8, by numerical integration."""
    c, q = stats.norm.ppf(1 - TAIL_LEVEL / 2), stats.norm.ppf(1 - (1 - HDR_MASS) / 2)
    low, high = shift - q * scale, shift + q * scale
    left = max(0.0, stats.norm.cdf(min(high, -c)) - stats.norm.cdf(low))
    right = max(0.0, stats.norm.cdf(high) - stats.norm.cdf(max(low, c)))
    return (left + right) / TAIL_LEVEL / TAIL_RECALL_REFERENCE


def _scipy_gap(shift: float, scale: float) -> float:
    """E[ln p_0(z) - ln p(z) | |z| > c] by quadrature over both tails."""
    c = stats.norm.ppf(1 - TAIL_LEVEL / 2)

    def integrand(z: float) -> float:
        diff = stats.norm.logpdf(z) - stats.norm.logpdf(z, shift, scale)
        return diff * stats.norm.pdf(z)

    total = integrate.quad(integrand, -np.inf, -c)[0] + integrate.quad(integrand, c, np.inf)[0]
    return total / TAIL_LEVEL


def _gaussian(mean: float, std: float) -> GMMParams:
    """A 1-D Gaussian as a one-component mixture (one chain)."""
    return GMMParams(torch.ones(1, 1, dtype=F64), torch.full((1, 1, 1), mean, dtype=F64),
                     torch.full((1, 1, 1, 1), std**2, dtype=F64))


def _stack(models: list[GMMParams]) -> GMMParams:
    return GMMParams(*(torch.cat(parts) for parts in zip(
        *((m.weights, m.means, m.covariances) for m in models), strict=True)))


# --------------------------------------------------------------------------- building blocks


def test_the_reference_is_the_band_between_the_hdr_and_the_tail() -> None:
    assert TAIL_RECALL_REFERENCE == pytest.approx((TAIL_LEVEL - (1 - HDR_MASS)) / TAIL_LEVEL)
    assert TAIL_RECALL_REFERENCE == 0.8


def test_log_density_quantile_is_an_order_statistic() -> None:
    values = torch.arange(200.0).flip(0).reshape(2, 100)
    torch.testing.assert_close(log_density_quantile(values, 0.01),
                               torch.tensor([100.0, 0.0], dtype=F64))
    with pytest.raises(ConfigError):
        log_density_quantile(values, 1.0)
    with pytest.raises(InputError):
        log_density_quantile(torch.zeros(2, 0), 0.5)


def test_recall_and_gap_on_a_hand_made_case() -> None:
    events = original_tail_events(torch.tensor([[0.0], [2.5], [-3.0]]),
                                  torch.tensor([-1.0, -4.0, -5.0]), threshold=-3.0)
    assert events.points.tolist() == [[2.5], [-3.0]]
    model = torch.tensor([[-4.5, -7.0], [-3.0, -4.0]])  # two chains
    recall = tail_recall(model, torch.tensor([-6.0, -5.0]))
    torch.testing.assert_close(recall, torch.tensor([0.5, 1.0], dtype=F64) / 0.8)
    gap = tail_loglik_gap(events.log_density, model)
    torch.testing.assert_close(gap, torch.tensor([1.25, -1.0], dtype=F64))


# --------------------------------------------------------------------------- 1-D Gaussian


@pytest.mark.parametrize(("shift", "scale"), MODELS_1D)
def test_gaussian_closed_forms_match_scipy(shift: float, scale: float) -> None:
    mean, var = torch.tensor([3.0 + 2.0 * shift]), torch.tensor([(2.0 * scale) ** 2])
    recall = gaussian_1d_tail_recall(mean, var, original_mean=3.0, original_std=2.0)
    gap = gaussian_1d_tail_loglik_gap(mean, var, original_mean=3.0, original_std=2.0)
    assert recall.item() == pytest.approx(_scipy_recall(shift, scale), abs=1e-8)
    assert gap.item() == pytest.approx(_scipy_gap(shift, scale), rel=1e-7, abs=1e-9)


def test_gaussian_truth_scores_the_reference_exactly_and_collapse_lowers_it() -> None:
    shift = torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0])
    scale = torch.tensor([1.0, 0.9, 0.6, 1.0, 1.0, 1.5, 3.0])
    recall = gaussian_1d_tail_recall(shift, scale.square())
    gap = gaussian_1d_tail_loglik_gap(shift, scale.square())
    assert recall[0].item() == pytest.approx(1.0, abs=1e-12) and gap[0].item() == pytest.approx(0)
    assert 1.0 > recall[1] > recall[2] and 0 < gap[1] < gap[2]  # narrower: lower, then lower
    assert 1.0 > recall[3] > recall[4] and 0 < gap[3] < gap[4]  # shifted: lower, then lower
    assert bool((recall[5:] >= 1.0).all()) and bool((gap[5:] < 0).all())  # wider: no tail loss
    assert recall[6].item() == pytest.approx(1 / TAIL_RECALL_REFERENCE, abs=1e-6)


def test_the_monte_carlo_path_agrees_with_the_gaussian_closed_forms() -> None:
    """The mixtures' path (sampled tail events and HDR edge) on one-component 1-D mixtures.

    Tolerances: ~13,000 tail events give the recall a sd of 0.0045, the model's HDR edge from
    2^16 draws 0.01; the gap's sd is under 1% of its size for these models.
    """
    truth = _gaussian(0.0, 1.0)
    events = mixture_tail_events(truth)
    assert len(events.points) == pytest.approx(TAIL_LEVEL * (1 << 18), rel=0.03)
    models = _stack([_gaussian(s, c) for s, c in MODELS_1D])
    out = mixture_tail_metrics(models, truth, events, draws=1 << 16)
    shift = torch.tensor([s for s, _ in MODELS_1D], dtype=F64)
    var = torch.tensor([c**2 for _, c in MODELS_1D], dtype=F64)
    torch.testing.assert_close(out["tail_recall"], gaussian_1d_tail_recall(shift, var),
                               atol=0.04, rtol=0)
    torch.testing.assert_close(out["tail_loglik_gap"], gaussian_1d_tail_loglik_gap(shift, var),
                               atol=0.02, rtol=0.02)
    assert out["tail_loglik_gap"][0].item() == pytest.approx(0.0, abs=1e-12)  # the same density


def test_the_gaussian_family_reports_both_metrics_per_chain() -> None:
    family = GaussianFamily(mean=1.0, std=2.0)
    params = {"mean": torch.tensor([1.0, 1.0, 2.0]), "var": torch.tensor([4.0, 1.0, 4.0])}
    context = MetricContext(torch.zeros(3, 5, 1), {}, 0)
    out = family.metrics(params, torch.zeros(3, 5, 1), context)
    assert set(out) <= set(METRICS)
    assert out["tail_recall"][0].item() == pytest.approx(1.0)
    assert out["tail_loglik_gap"][0].item() == pytest.approx(0.0, abs=1e-12)
    assert bool((out["tail_recall"][1:] < 1).all()) and bool((out["tail_loglik_gap"][1:] > 0).all())


# --------------------------------------------------------------------------- mixtures


@pytest.fixture(scope="module")
def gmm() -> GMMFamily:
    return GMMFamily()


def _variants(truth: GMMParams) -> dict[str, GMMParams]:
    w, mu, cov = truth.weights, truth.means, truth.covariances
    shift = torch.tensor([1.0, 0.0], dtype=F64)
    forgot = torch.tensor([[0.995, 0.005]], dtype=F64)
    return {"truth": truth, "narrower": GMMParams(w, mu, 0.5 * cov),
            "shifted": GMMParams(w, mu + shift, cov), "wider": GMMParams(w, mu, 3.0 * cov),
            "rare mode forgotten": GMMParams(forgot, mu, cov)}


def test_a_mixture_scores_its_reference_and_loses_tail_when_it_narrows_or_drifts(
    gmm: GMMFamily,
) -> None:
    """The default 2-D mixture (0.7 / 0.3 at (-2, 0) and (2, 0)). The truth's recall is 1 by
    construction (normalised by its own share under the same draws)."""
    variants = _variants(gmm.truth)
    out = mixture_tail_metrics(_stack(list(variants.values())), gmm.truth, gmm.tail_events)
    recall = dict(zip(variants, out["tail_recall"].tolist(), strict=True))
    gap = dict(zip(variants, out["tail_loglik_gap"].tolist(), strict=True))
    assert recall["truth"] == pytest.approx(1.0, abs=1e-12)
    assert gap["truth"] == pytest.approx(0.0, abs=1e-12)  # the same density: 0 up to rounding
    for lost in ("narrower", "shifted", "rare mode forgotten"):
        assert recall[lost] < recall["truth"] - 0.15 and gap[lost] > 0.3, lost
    assert recall["wider"] > 1.0 and gap["wider"] < 0  # wider: over-covered, not tail loss


def test_mixture_metrics_are_per_chain(gmm: GMMFamily) -> None:
    models = _stack(list(_variants(gmm.truth).values()))
    batched = mixture_tail_metrics(models, gmm.truth, gmm.tail_events)
    for chain in (1, 3):
        single = mixture_tail_metrics(models.select([chain]), gmm.truth, gmm.tail_events)
        for name, value in single.items():
            torch.testing.assert_close(batched[name][chain : chain + 1], value)


def test_the_gmm_family_writes_the_tail_metrics_beside_the_others(gmm: GMMFamily) -> None:
    chains = 2
    truth = gmm.truth
    params = {"weights": truth.weights.expand(chains, -1).float(),
              "means": truth.means.expand(chains, -1, -1).float(),
              "covariances": truth.covariances.expand(chains, -1, -1, -1).float(),
              "n_iter": torch.ones(chains, dtype=torch.int64)}
    x = torch.randn(chains, 200, 2, generator=torch.Generator().manual_seed(0))
    out = gmm.metrics(params, x, MetricContext(x, {}, 0))
    assert {"tail_recall", "tail_loglik_gap", "tail_mass_ratio"} <= set(out) <= set(METRICS)
    torch.testing.assert_close(out["tail_recall"], torch.ones(chains, dtype=F64))
    assert out["tail_loglik_gap"].abs().max().item() < 1e-5  # float32 parameters


# --------------------------------------------------------------------------- the headline


@pytest.mark.parametrize("family", ["gaussian", "gmm"])
def test_the_headline_reads_tail_recall_as_a_share_kept(family: str) -> None:
    profile = family_profile(family)
    assert profile.tail_metric == "tail_recall" and profile.loss_text == "1 - tail_recall"
    np.testing.assert_allclose(profile.tail_loss(np.array([1.0, 0.25, 1.2])), [0.0, 0.75, -0.2])
    assert "No collapse: 1" in profile.describe("tail_recall")
    assert {"tail_recall", "tail_loglik_gap", "tail_mass_ratio"} <= set(profile.summary_metrics)


def test_the_gaussian_keeps_its_variance_as_the_closed_form_check() -> None:
    assert "log_variance_ratio" in family_profile("gaussian").summary_metrics
