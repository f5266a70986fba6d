"""Collapse metrics checked against known answers.

Closed forms (1-D Gaussians, commuting covariances, chi-square tails), independent references
(numpy formulas, scipy matrix square roots, numerical integration, brute-force quantile matching
at the lcm size) and hand-computed tiny cases; then every function batched over chains must equal
its per-chain results and accept float32.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import integrate, linalg, stats

from collapse_eval.metrics import (
    METRICS,
    class_frequency_metrics,
    coverage,
    empirical_w2_squared,
    gaussian_kl,
    gaussian_tail_mass_expected,
    gaussian_w2_squared,
    gmm_l2_distance_squared,
    log_variance_ratio,
    precision_recall,
    precision_recall_coverage,
    projection_directions,
    tail_mass,
)
from provenance.errors import ConfigError, InputError

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(d: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """A random well-conditioned SPD matrix (or batch of them)."""
    a = torch.randn(*batch, d, d, generator=_gen(seed), dtype=F64)
    return a @ a.mT + 0.5 * torch.eye(d, dtype=F64)


def _g1(mu: float, var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1-D Gaussian as (C=1, d=1) mean and (1, 1, 1) covariance."""
    return torch.tensor([[mu]], dtype=F64), torch.tensor([[[var]]], dtype=F64)


# --------------------------------------------------------------------------- METRICS


REQUIRED = """mean variance log_variance mean_sq_error w2_squared kl_from_original log_l2_distance
component_std component_std_min w2_sample tail_mass_3sigma tail_mass_ratio heldout_loglik
minority_weight precision recall coverage rarest_class_frequency class_entropy classes_below_2pct
encoder_std heldout_elbo synthetic_share training_size tagger_tpr tagger_fpr
log_variance_ratio tail_recall tail_loglik_gap""".split()


def test_metrics_lists_every_engine_name_with_a_one_line_definition():
    assert set(REQUIRED) <= set(METRICS)
    for name, definition in METRICS.items():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name
        assert definition.strip() and "\n" not in definition, name


def test_class_metric_names_are_listed():
    out = class_frequency_metrics(torch.zeros(1, 5, dtype=torch.int64), n_classes=2)
    assert set(out) <= set(METRICS)
    assert set(precision_recall_coverage(torch.randn(6, 2), torch.randn(1, 6, 2))) <= set(METRICS)


# --------------------------------------------------------------------------- Gaussian W2


def test_gaussian_w2_1d_closed_form():
    mu_a, var_a = _g1(0.5, 4.0)
    mu_b, var_b = _g1(-1.0, 0.25)
    expected = (0.5 + 1.0) ** 2 + (2.0 - 0.5) ** 2
    assert gaussian_w2_squared(mu_a, var_a, mu_b, var_b).item() == pytest.approx(expected, 1e-12)


def test_gaussian_w2_2d_commuting_covariances():
    theta = 0.7
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                       dtype=F64)
    eig_a, eig_b = torch.tensor([4.0, 0.5], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64)
    cov_a, cov_b = rot @ torch.diag(eig_a) @ rot.T, rot @ torch.diag(eig_b) @ rot.T
    mean_a, mean_b = torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([[0.0, -1.0]], dtype=F64)
    expected = 1.0 + 9.0 + float(((eig_a.sqrt() - eig_b.sqrt()) ** 2).sum())
    got = gaussian_w2_squared(mean_a, cov_a[None], mean_b, cov_b[None])
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_gaussian_w2_matches_scipy_sqrtm_general_covariances():
    cov_a, cov_b = _spd(3, 1).numpy(), _spd(3, 2).numpy()
    mean_a, mean_b = np.array([0.3, -1.0, 2.0]), np.array([1.0, 0.0, 0.0])
    root_a = linalg.sqrtm(cov_a).real
    cross = linalg.sqrtm(root_a @ cov_b @ root_a).real
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * cross)
    got = gaussian_w2_squared(torch.tensor(mean_a)[None], torch.tensor(cov_a)[None],
                              torch.tensor(mean_b)[None], torch.tensor(cov_b)[None])
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_gaussian_w2_symmetric_and_zero_for_identical():
    mean_a, mean_b = torch.randn(4, 3, generator=_gen(3), dtype=F64), torch.zeros(4, 3, dtype=F64)
    cov_a, cov_b = _spd(3, 4, (4,)), _spd(3, 5, (4,))
    ab = gaussian_w2_squared(mean_a, cov_a, mean_b, cov_b)
    ba = gaussian_w2_squared(mean_b, cov_b, mean_a, cov_a)
    torch.testing.assert_close(ab, ba, rtol=1e-10, atol=1e-12)
    same = gaussian_w2_squared(mean_a, cov_a, mean_a, cov_a)
    assert bool((same >= 0).all()) and float(same.max()) < 1e-9


def test_gaussian_w2_matches_empirical_w2_of_large_samples():
    n = 200_000
    a = 1.0 + 1.0 * torch.randn(1, n, 1, generator=_gen(6), dtype=F64)
    b = -0.5 + 2.0 * torch.randn(1, n, 1, generator=_gen(7), dtype=F64)
    empirical = empirical_w2_squared(a, b).item()
    closed = gaussian_w2_squared(*_g1(1.0, 1.0), *_g1(-0.5, 4.0)).item()  # 2.25 + 1
    assert empirical == pytest.approx(closed, rel=0.03)  # sampling noise of the two means
    fitted = gaussian_w2_squared(a.mean(1), a.var(1)[..., None], b.mean(1), b.var(1)[..., None])
    assert empirical == pytest.approx(fitted.item(), rel=1e-3)  # same moments: nearly equal


def test_gaussian_w2_handles_a_collapsed_covariance():
    zero = torch.zeros(1, 2, 2, dtype=F64)
    cov = torch.diag(torch.tensor([4.0, 9.0], dtype=F64))[None]
    got = gaussian_w2_squared(torch.zeros(1, 2), zero, torch.zeros(1, 2), cov)
    assert got.item() == pytest.approx(13.0, rel=1e-12)  # W2^2 to a point mass = trace


# --------------------------------------------------------------------------- KL


def test_gaussian_kl_1d_formula():
    mu_a, s_a, mu_b, s_b = 0.3, 1.5, -1.0, 0.7
    expected = math.log(s_b / s_a) + (s_a**2 + (mu_a - mu_b) ** 2) / (2 * s_b**2) - 0.5
    got = gaussian_kl(*_g1(mu_a, s_a**2), *_g1(mu_b, s_b**2))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_gaussian_kl_3d_matches_numpy_formula_and_scipy_monte_carlo():
    cov_a, cov_b = _spd(3, 10).numpy(), _spd(3, 11).numpy()
    mean_a, mean_b = np.array([0.5, 0.0, -0.5]), np.array([-0.2, 1.0, 0.3])
    inv_b = np.linalg.inv(cov_b)
    diff = mean_b - mean_a
    expected = 0.5 * (np.trace(inv_b @ cov_a) + diff @ inv_b @ diff - 3
                      + np.linalg.slogdet(cov_b)[1] - np.linalg.slogdet(cov_a)[1])
    got = gaussian_kl(torch.tensor(mean_a)[None], torch.tensor(cov_a)[None],
                      torch.tensor(mean_b)[None], torch.tensor(cov_b)[None]).item()
    assert got == pytest.approx(expected, rel=1e-10)
    dist_a = stats.multivariate_normal(mean_a, cov_a)
    dist_b = stats.multivariate_normal(mean_b, cov_b)
    x = dist_a.rvs(size=100_000, random_state=np.random.default_rng(0))
    log_ratio = dist_a.logpdf(x) - dist_b.logpdf(x)
    assert abs(log_ratio.mean() - got) < 4 * log_ratio.std() / math.sqrt(len(x))


def test_gaussian_kl_zero_for_identical_and_asymmetric():
    mean, cov = torch.randn(3, 2, generator=_gen(12), dtype=F64), _spd(2, 13, (3,))
    assert float(gaussian_kl(mean, cov, mean, cov).abs().max()) < 1e-12
    wide, narrow = _g1(0.0, 4.0), _g1(0.0, 1.0)
    assert gaussian_kl(*wide, *narrow).item() != pytest.approx(gaussian_kl(*narrow, *wide).item())


# --------------------------------------------------------------------------- GMM L2


def _gmm_1d():
    w_a, mu_a, s_a = [0.3, 0.7], [-1.0, 2.0], [0.5, 1.2]
    w_b, mu_b, s_b = [0.5, 0.2, 0.3], [-0.5, 1.5, 4.0], [1.0, 0.3, 0.8]
    return (w_a, mu_a, s_a), (w_b, mu_b, s_b)


def _as_tensors_1d(w, mu, s):
    return (torch.tensor(w, dtype=F64)[None], torch.tensor(mu, dtype=F64)[None, :, None],
            (torch.tensor(s, dtype=F64) ** 2)[None, :, None, None])


def test_gmm_l2_1d_matches_numerical_integration():
    (w_a, mu_a, s_a), (w_b, mu_b, s_b) = _gmm_1d()

    def density(x, w, mu, s):
        return sum(wi * stats.norm.pdf(x, mi, si) for wi, mi, si in zip(w, mu, s, strict=True))

    def integrand(x):
        return (density(x, w_a, mu_a, s_a) - density(x, w_b, mu_b, s_b)) ** 2

    expected, _ = integrate.quad(integrand, -30, 30, points=[-1, 2, 4], limit=200)
    got = gmm_l2_distance_squared(*_as_tensors_1d(w_a, mu_a, s_a), *_as_tensors_1d(w_b, mu_b, s_b))
    assert got.item() == pytest.approx(expected, rel=1e-8)


def test_gmm_l2_2d_matches_dense_grid():
    w_a, mu_a, cov_a = [0.6, 0.4], [[0.0, 0.0], [2.0, 1.0]], [[[1.0, 0.3], [0.3, 0.5]], np.eye(2)]
    w_b, mu_b, cov_b = [1.0], [[0.5, 0.5]], [[[2.0, -0.4], [-0.4, 1.0]]]
    grid = np.linspace(-9, 11, 801)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    points = np.stack([xx, yy], axis=-1)

    def density(w, mu, cov):
        return sum(wi * stats.multivariate_normal(mi, ci).pdf(points)
                   for wi, mi, ci in zip(w, mu, cov, strict=True))

    cell = (grid[1] - grid[0]) ** 2
    expected = float(((density(w_a, mu_a, cov_a) - density(w_b, mu_b, cov_b)) ** 2).sum() * cell)
    args_a = [torch.tensor(np.asarray(v), dtype=F64) for v in (w_a, mu_a, cov_a)]
    args_b = [torch.tensor(np.asarray(v), dtype=F64) for v in (w_b, mu_b, cov_b)]
    got = gmm_l2_distance_squared(*args_a, *args_b)  # unbatched on both sides
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_gmm_l2_zero_for_identical():
    args = _as_tensors_1d(*_gmm_1d()[0])
    assert gmm_l2_distance_squared(*args, *args).item() == pytest.approx(0.0, abs=1e-15)


def test_gmm_l2_single_component_is_the_gaussian_formula():
    mu_a, s_a, mu_b, s_b = 0.0, 1.0, 1.5, 0.6
    expected = (1 / (2 * math.sqrt(math.pi) * s_a) + 1 / (2 * math.sqrt(math.pi) * s_b)
                - 2 * stats.norm.pdf(mu_a, mu_b, math.hypot(s_a, s_b)))
    got = gmm_l2_distance_squared(*_as_tensors_1d([1.0], [mu_a], [s_a]),
                                  *_as_tensors_1d([1.0], [mu_b], [s_b]))
    assert got.item() == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- empirical W2


def test_empirical_w2_hand_computed_unequal_sizes():
    # Quantiles of {0, 1}: 0 on (0, .5], 1 after; of {0, 0, 1, 1, 2}: 0, 1 from .4, 2 from .8.
    # They differ by 1 on (.4, .5] and on (.8, 1]: W2^2 = 0.1 + 0.2.
    a = torch.tensor([[[1.0], [0.0]]])
    b = torch.tensor([[0.0], [1.0], [2.0], [0.0], [1.0]])
    assert empirical_w2_squared(a, b).item() == pytest.approx(0.3, abs=1e-15)
    assert empirical_w2_squared(b[None], a[0]).item() == pytest.approx(0.3, abs=1e-15)


@pytest.mark.parametrize(("n", "m"), [(6, 10), (7, 5), (1, 4), (12, 12)])
def test_empirical_w2_unequal_sizes_equals_brute_force_at_lcm(n, m):
    a = torch.randn(n, generator=_gen(n), dtype=F64).sort().values
    b = (torch.randn(m, generator=_gen(100 + m), dtype=F64) * 2 + 1).sort().values
    size = math.lcm(n, m)
    expected = (a.repeat_interleave(size // n) - b.repeat_interleave(size // m)).square().mean()
    got = empirical_w2_squared(a[None, :, None], b[:, None])
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_sliced_w2_translation_2d_is_half_the_squared_shift():
    x = torch.randn(2, 300, 2, generator=_gen(20), dtype=F64)
    shift = torch.tensor([3.0, -1.0], dtype=F64)
    got = empirical_w2_squared(x + shift, x)
    torch.testing.assert_close(got, torch.full((2,), 10.0 / 2, dtype=F64))


def test_sliced_w2_translation_3d_is_the_mean_over_its_directions():
    directions = projection_directions(3, 64)
    assert directions.shape == (64, 3)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(64, dtype=F64))
    x = torch.randn(1, 200, 3, generator=_gen(21), dtype=F64)
    shift = torch.tensor([1.0, 2.0, -2.0], dtype=F64)
    expected = (directions @ shift).square().mean()
    assert empirical_w2_squared(x + shift, x).item() == pytest.approx(expected.item(), rel=1e-10)
    assert expected.item() == pytest.approx(9.0 / 3, rel=0.35)  # about |t|^2 / d


def test_sliced_w2_is_deterministic_and_uses_the_projections_argument():
    x = torch.randn(1, 100, 3, generator=_gen(22), dtype=F64)
    y = torch.randn(1, 80, 3, generator=_gen(23), dtype=F64) * 1.5
    first, second = empirical_w2_squared(x, y), empirical_w2_squared(x, y)
    assert torch.equal(first, second)
    assert torch.equal(projection_directions(5, 16), projection_directions(5, 16))
    assert empirical_w2_squared(x, y, projections=8).item() != first.item()


# --------------------------------------------------------------------------- tail mass


def test_tail_mass_standard_normal_within_standard_error():
    n = 200_000
    x = torch.randn(1, n, 1, generator=_gen(30), dtype=F64)
    expected = 2 * stats.norm.sf(3.0)
    got = tail_mass(x, torch.zeros(1, 1), torch.ones(1, 1, 1), 3.0).item()
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_tail_mass_2d_correlated_gaussian_matches_chi_square():
    n = 100_000
    cov = _spd(2, 31)
    mean = torch.tensor([1.0, -2.0], dtype=F64)
    z = torch.randn(1, n, 2, generator=_gen(32), dtype=F64)
    x = mean + z @ torch.linalg.cholesky(cov).T
    expected = gaussian_tail_mass_expected(2, 2.5)
    got = tail_mass(x, mean[None], cov[None], 2.5).item()
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_tail_mass_needs_distance_from_every_component():
    means = torch.tensor([[0.0], [10.0]])
    covs = torch.ones(2, 1, 1)
    x = torch.tensor([[[0.0], [10.0], [5.0], [-4.0], [20.0]]])
    # 0 and 10 sit on a component; 5 is 5 sigma from both; -4 and 20 are far from both.
    assert tail_mass(x, means, covs, 3.0).item() == pytest.approx(3 / 5)


@pytest.mark.parametrize(("d", "k"), [(1, 3.0), (2, 3.0), (3, 2.0), (10, 4.5)])
def test_gaussian_tail_mass_expected_equals_scipy(d, k):
    assert gaussian_tail_mass_expected(d, k) == pytest.approx(stats.chi2.sf(k**2, d), rel=1e-10)


# --------------------------------------------------------------------------- log variance ratio


def test_log_variance_ratio_known_scale():
    x = torch.randn(1, 50_000, 2, generator=_gen(40), dtype=F64) * 0.5
    assert log_variance_ratio(x, 0.25).item() == pytest.approx(0.0, abs=0.03)
    exact = torch.tensor([[0.0, 2.0], [1.0, 3.0]], dtype=F64)  # unbiased var 2 per 1-D chain
    torch.testing.assert_close(log_variance_ratio(exact, torch.tensor([1.0, 4.0])),
                               torch.tensor([math.log(2.0), math.log(0.5)], dtype=F64))


# --------------------------------------------------------------------------- precision / recall


def _two_modes(n_a: int, n_b: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    mode_a = torch.randn(n_a, 2, generator=g, dtype=F64)
    mode_b = torch.randn(n_b, 2, generator=g, dtype=F64) + torch.tensor([12.0, 0.0], dtype=F64)
    return torch.cat([mode_a, mode_b])


def test_precision_recall_identical_sets():
    x = torch.randn(1, 200, 2, generator=_gen(50), dtype=F64)
    precision, recall = precision_recall(x, x)
    assert precision.item() == 1.0 and recall.item() == 1.0
    assert coverage(x, x).item() == 1.0


def test_fake_in_one_mode_keeps_precision_and_loses_recall_and_coverage():
    real = _two_modes(300, 700, 51)  # mode A holds 30 % of the real data
    fake = torch.randn(1, 600, 2, generator=_gen(52), dtype=F64)  # mode A only
    precision, recall = precision_recall(real, fake)
    assert precision.item() > 0.9
    assert 0.25 < recall.item() <= 0.3 + 1e-12
    assert 0.25 < coverage(real, fake).item() <= 0.3 + 1e-12


def test_fake_far_away_scores_zero():
    real = torch.randn(1, 200, 2, generator=_gen(53), dtype=F64)
    fake = torch.randn(1, 150, 2, generator=_gen(54), dtype=F64) + 100.0
    precision, recall = precision_recall(real, fake)
    assert precision.item() == 0.0 and recall.item() == 0.0
    assert coverage(real, fake).item() == 0.0


@pytest.mark.parametrize(
    ("fake", "expected"),
    [
        # real {0, 1, 2, 3}, k = 1: every real radius is 1.
        # fake {0.5, 10, 10.5}: radii 9.5, 0.5, 0.5. Only 0.5 is in a real ball; its huge ball
        # holds every real point; real balls around 0 and 1 hold 0.5.
        ([0.5, 10.0, 10.5], (1 / 3, 1.0, 0.5)),
        # fake {0.5, 0.7, 10}: radii 0.2, 0.2, 9.3. 0.5 and 0.7 lie in real balls; real 1, 2, 3
        # lie in the ball of 10 (distances 9, 8, 7), real 0 (distance 10) in none.
        ([0.5, 0.7, 10.0], (2 / 3, 0.75, 0.5)),
        # fake {4, 6}: radii 2, 2. A ball's boundary counts as inside: 4 is exactly 1 from real 3.
        # The ball of 4 holds real 2 and 3; only the real ball around 3 holds a fake point.
        ([4.0, 6.0], (0.5, 0.5, 0.25)),
    ],
)
def test_manifold_metrics_hand_checked_1d(fake, expected):
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=F64)
    fake_t = torch.tensor(fake, dtype=F64)[None, :, None]
    precision, recall = precision_recall(real, fake_t, k=1)
    cov = coverage(real, fake_t, k=1)
    assert (precision.item(), recall.item(), cov.item()) == pytest.approx(expected, abs=1e-15)


def test_manifold_metrics_chunked_equals_unchunked(monkeypatch):
    import collapse_eval.metrics as metrics

    real = torch.randn(2, 120, 4, generator=_gen(55), dtype=F64)
    fake = torch.randn(2, 90, 4, generator=_gen(56), dtype=F64) * 1.3
    whole = precision_recall_coverage(real, fake)
    monkeypatch.setattr(metrics, "_ELEMENT_BUDGET", 500)  # a few rows per cdist chunk
    chunked = precision_recall_coverage(real, fake)
    for name in whole:
        assert torch.equal(whole[name], chunked[name]), name


def test_manifold_metrics_reject_too_few_points():
    with pytest.raises(ConfigError):
        precision_recall(torch.randn(3, 2), torch.randn(1, 10, 2), k=3)


# --------------------------------------------------------------------------- classes


def test_class_metrics_uniform_labels():
    labels = torch.arange(10).repeat(30)[None]
    out = class_frequency_metrics(labels, n_classes=10)
    assert out["class_entropy"].item() == pytest.approx(math.log(10), rel=1e-12)
    assert out["rarest_class_frequency"].item() == pytest.approx(0.1)
    assert out["classes_below_2pct"].item() == 0.0


def test_class_metrics_missing_and_rare_classes_batched():
    uniform = torch.arange(4).repeat(25)  # 100 labels
    rare = torch.cat([torch.zeros(60), torch.ones(39), torch.full((1,), 2)]).long()  # 3 missing
    out = class_frequency_metrics(torch.stack([uniform, rare]), n_classes=4)
    torch.testing.assert_close(out["rarest_class_frequency"], torch.tensor([0.25, 0.0], dtype=F64))
    torch.testing.assert_close(out["classes_below_2pct"], torch.tensor([0.0, 2.0], dtype=F64))
    p = np.array([0.6, 0.39, 0.01])
    torch.testing.assert_close(out["class_entropy"],
                               torch.tensor([math.log(4), stats.entropy(p)], dtype=F64))
    assert "classes_below_5pct" in class_frequency_metrics(uniform[None], 4, below=0.05)


def test_class_metrics_reject_out_of_range_labels():
    with pytest.raises(InputError):
        class_frequency_metrics(torch.tensor([[0, 3]]), n_classes=3)


# --------------------------------------------------------------------------- batching and dtypes


def _cases() -> dict[str, tuple]:
    """(function, batched args, which args are per-chain) for every metric function."""
    c = 3
    means, covs = torch.randn(c, 2, generator=_gen(60), dtype=F64), _spd(2, 61, (c,))
    ref_mean, ref_cov = torch.zeros(c, 2, dtype=F64), _spd(2, 62, (c,))
    weights = torch.softmax(torch.randn(c, 3, generator=_gen(63), dtype=F64), -1)
    mix_mu, mix_cov = torch.randn(c, 3, 2, generator=_gen(64), dtype=F64), _spd(2, 65, (c, 3))
    ref_w, ref_mu = torch.tensor([0.5, 0.5]), torch.tensor([[0.0, 0], [3, 0]])
    ref_mcov = _spd(2, 66, (2,))
    samples = torch.randn(c, 150, 2, generator=_gen(67), dtype=F64) * 2
    samples_1d = torch.randn(c, 40, 1, generator=_gen(68), dtype=F64)
    ref_1d = torch.randn(c, 25, 1, generator=_gen(69), dtype=F64)
    real = torch.randn(c, 60, 3, generator=_gen(70), dtype=F64)
    fake = torch.randn(c, 50, 3, generator=_gen(71), dtype=F64) * 1.5
    return {
        "w2": (gaussian_w2_squared, (means, covs, ref_mean, ref_cov), (1, 1, 1, 1)),
        "kl": (gaussian_kl, (ref_mean, ref_cov, means, covs), (1, 1, 1, 1)),
        "gmm": (gmm_l2_distance_squared, (weights, mix_mu, mix_cov, ref_w, ref_mu, ref_mcov),
                (1, 1, 1, 0, 0, 0)),
        "emp_1d": (empirical_w2_squared, (samples_1d, ref_1d), (1, 1)),
        "sliced": (empirical_w2_squared, (samples, samples[0] * 0.5 + 1), (1, 0)),
        "tail": (lambda x, m, s: tail_mass(x, m, s, 1.5), (samples, ref_mu, ref_mcov), (1, 0, 0)),
        "logvar": (lambda x: log_variance_ratio(x, 2.0), (samples,), (1,)),
        "precision": (lambda r, f: precision_recall(r, f)[0], (real, fake), (1, 1)),
        "recall": (lambda r, f: precision_recall(r, f)[1], (real, fake), (1, 1)),
        "coverage": (coverage, (real[0], fake), (0, 1)),
        "classes": (lambda y: class_frequency_metrics(y, 5)["class_entropy"],
                    (torch.randint(0, 5, (c, 40), generator=_gen(72)),), (1,)),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_batched_equals_per_chain_and_float32_accepted(case):
    fn, args, per_chain = _cases()[case]
    batched = fn(*args)
    assert batched.dtype == F64 and batched.shape == (3,)
    for chain in range(3):
        pairs = zip(args, per_chain, strict=True)
        single = fn(*[a[chain : chain + 1] if p else a for a, p in pairs])
        torch.testing.assert_close(batched[chain : chain + 1], single, rtol=1e-9, atol=1e-12)
    as32 = [a.float() if a.is_floating_point() else a for a in args]
    low = fn(*as32)
    assert low.dtype == F64
    torch.testing.assert_close(low, batched, rtol=1e-3, atol=1e-3)


def test_mismatched_dimensions_raise_input_error():
    with pytest.raises(InputError):
        gaussian_w2_squared(torch.zeros(1, 2), torch.eye(2)[None], torch.zeros(1, 3),
                            torch.eye(3)[None])
    with pytest.raises(InputError):
        empirical_w2_squared(torch.zeros(2, 5, 2), torch.zeros(3, 5, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", sorted(_cases()))
def test_cuda_equals_cpu(case):
    fn, args, _ = _cases()[case]
    on_gpu = fn(*[a.cuda() for a in args])
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), fn(*args), rtol=1e-7, atol=1e-10)
