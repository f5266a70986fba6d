"""Batched EM for Gaussian mixtures: scikit-learn's arithmetic, known truths, independent chains."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from collapse_eval.gmm_em import GMMParams, fit_gmm, gmm_log_density, sample_gmm
from collapse_eval.rng import ChainRandom
from provenance.errors import GMMInputError, TailguardWarning

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second thread only adds synchronisation, and stalls for
    milliseconds per operation when other processes hold the other core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mixture(weights, means, covariances, chains: int, dtype=F64) -> GMMParams:
    """The same mixture for every chain."""
    w = torch.tensor(weights, dtype=dtype)
    m = torch.tensor(means, dtype=dtype)
    s = torch.tensor(covariances, dtype=dtype)
    return GMMParams(w.expand(chains, -1), m.expand(chains, -1, -1), s.expand(chains, -1, -1, -1))


TRUTH_2D = (
    [0.6, 0.4],
    [[-2.0, -1.0], [2.0, 1.5]],
    [[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]],
)


def overlapping_data(chains: int, n: int, d: int, k: int, seed: int) -> torch.Tensor:
    """k overlapping clusters, so that EM needs a few dozen iterations (a real test of equality)."""
    rng = ChainRandom([seed * 100 + c for c in range(chains)])
    centres = torch.linspace(-1.5, 1.5, k, dtype=F64)
    means = torch.zeros(k, d, dtype=F64)
    means[:, 0] = centres
    if d > 1:
        means[:, 1] = centres.flip(0) * 0.5
    covs = torch.stack([torch.eye(d, dtype=F64) * (0.5 + 0.4 * j) for j in range(k)])
    weights = torch.linspace(1.0, 2.0, k, dtype=F64)
    truth = GMMParams((weights / weights.sum()).expand(chains, -1), means.expand(chains, -1, -1),
                      covs.expand(chains, -1, -1, -1))
    return sample_gmm(truth, n, rng, generation=0)


def sklearn_fit(x: np.ndarray, init: GMMParams, c: int, tol: float, max_iter: int,
                reg_covar: float) -> GaussianMixture:
    gm = GaussianMixture(
        init.components, covariance_type="full", tol=tol, max_iter=max_iter, reg_covar=reg_covar,
        weights_init=init.weights[c].numpy(), means_init=init.means[c].numpy(),
        precisions_init=np.linalg.inv(init.covariances[c].numpy()),
    )
    # one BLAS thread: on 2 x 2 problems more only add synchronisation (and stall on a busy machine)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(x)


# ------------------------------------------------------------------------------------------------
# scikit-learn equality


@pytest.mark.parametrize(
    ("d", "k", "init", "seed"),
    [(1, 2, "kmeans++", 0), (2, 2, "kmeans++", 1), (2, 3, "kmeans++", 2), (2, 2, "random", 3),
     (1, 3, "random", 4)],
)
def test_em_equals_sklearn_from_the_same_start(d, k, init, seed):
    chains, tol, reg = 4, 1e-5, 1e-6
    x = overlapping_data(chains, 400, d, k, seed)
    rng = ChainRandom(range(seed, seed + chains))
    start = fit_gmm(x, k, init=init, rng=rng, max_iter=0).params
    ours = fit_gmm(x, k, init=start, tol=tol, max_iter=2000, reg_covar=reg)
    for c in range(chains):
        ref = sklearn_fit(x[c].numpy(), start, c, tol, 2000, reg)
        assert int(ours.n_iter[c]) == ref.n_iter_
        assert bool(ours.converged[c]) == ref.converged_
        np.testing.assert_allclose(ours.params.weights[c].numpy(), ref.weights_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.params.means[c].numpy(), ref.means_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.params.covariances[c].numpy(), ref.covariances_, rtol=0,
                                   atol=1e-10)
        assert abs(float(ours.lower_bound[c]) - ref.lower_bound_) < 1e-10
    assert int(ours.n_iter.sum()) >= 20, "the cases should take EM through many iterations"


def test_max_iter_cut_and_zero_match_sklearn():
    x = overlapping_data(3, 300, 2, 2, seed=5)
    start = fit_gmm(x, 2, init="random", rng=ChainRandom([1, 2, 3]), max_iter=0).params
    with pytest.warns(TailguardWarning, match="did not converge within max_iter=3 on 3 of 3"):
        ours = fit_gmm(x, 2, init=start, max_iter=3)
    assert ours.n_iter.tolist() == [3, 3, 3] and not ours.converged.any()
    for c in range(3):
        ref = sklearn_fit(x[c].numpy(), start, c, 1e-5, 3, 1e-6)
        assert not ref.converged_
        np.testing.assert_allclose(ours.params.means[c].numpy(), ref.means_, atol=1e-12)
    zero = fit_gmm(x, 2, init=start, max_iter=0)
    assert torch.equal(zero.n_iter, torch.zeros(3, dtype=torch.int64))
    torch.testing.assert_close(zero.params.means, start.means, rtol=0, atol=1e-14)
    assert torch.isinf(zero.lower_bound).all()


# ------------------------------------------------------------------------------------------------
# Known truth, independence, determinism


def match_components(fitted: GMMParams, c: int) -> torch.Tensor:
    """Fitted components ordered like the truth's (by the first coordinate of the mean)."""
    return fitted.means[c, :, 0].argsort()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_recovers_a_known_mixture(dtype):
    truth = mixture(*TRUTH_2D, chains=8, dtype=dtype)
    rng = ChainRandom(range(8))
    x = sample_gmm(truth, 5000, rng, generation=0)
    fit = fit_gmm(x, 2, rng=rng, generation=1)
    assert fit.params.means.dtype == dtype and fit.converged.all()
    for c in range(8):
        order = match_components(fit.params, c)
        w, m = fit.params.weights[c, order], fit.params.means[c, order]
        s = fit.params.covariances[c, order]
        torch.testing.assert_close(w, truth.weights[c], rtol=0, atol=0.03)
        torch.testing.assert_close(m, truth.means[c], rtol=0, atol=0.1)
        torch.testing.assert_close(s, truth.covariances[c], rtol=0, atol=0.12)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_chains_are_independent_of_their_neighbours(init):
    seeds = [11, 22, 33]
    rng = ChainRandom(seeds)
    x = overlapping_data(3, 500, 2, 3, seed=7)
    together = fit_gmm(x, 3, init=init, rng=rng, generation=4)
    assert len(set(together.n_iter.tolist())) > 1, "chains should stop at different iterations"
    for c in range(3):
        alone = fit_gmm(x[c : c + 1], 3, init=init, rng=rng.subset([c]), generation=4)
        assert alone.n_iter[0] == together.n_iter[c]
        for got, want in zip(alone.params.tensors().values(),
                             together.params.select([c]).tensors().values(), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_initialisations_are_deterministic_and_keyed_by_generation():
    x = overlapping_data(4, 300, 2, 3, seed=8)
    for init in ("kmeans++", "random"):
        a = fit_gmm(x, 3, init=init, rng=ChainRandom([1, 2, 3, 4]), generation=2, max_iter=0)
        b = fit_gmm(x, 3, init=init, rng=ChainRandom([1, 2, 3, 4]), generation=2, max_iter=0)
        c = fit_gmm(x, 3, init=init, rng=ChainRandom([1, 2, 3, 4]), generation=3, max_iter=0)
        assert torch.equal(a.params.means, b.params.means)
        assert not torch.equal(a.params.means, c.params.means)


def test_random_init_fits_separated_clusters():
    """Random responsibilities start all components at the data mean (a saddle, as in
    scikit-learn); EM leaves it slowly, so a small tol is needed to get to the clusters."""
    truth = mixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [np.eye(2).tolist()] * 2, chains=4)
    rng = ChainRandom(range(4))
    x = sample_gmm(truth, 2000, rng, 0)
    fit = fit_gmm(x, 2, init="random", rng=rng, generation=1, tol=1e-10)
    assert fit.converged.all()
    means = fit.params.means[..., 0].sort(dim=1).values
    torch.testing.assert_close(means, torch.tensor([[-3.0, 3.0]] * 4, dtype=F64), atol=0.15,
                               rtol=0)


@pytest.mark.filterwarnings("ignore:EM did not converge")
def test_float32_stays_accurate_when_components_narrow():
    """The collapsed regime of the recursion: sigma 0.01, components 4 apart, mean far off 0."""
    truth = mixture([0.7, 0.3], [[98.0, 0.0], [102.0, 0.0]],
                    [(1e-4 * np.eye(2)).tolist()] * 2, chains=4)
    rng = ChainRandom(range(4))
    x = sample_gmm(truth, 1000, rng, 0)
    start = fit_gmm(x, 2, rng=rng, generation=1, max_iter=0).params
    f64 = fit_gmm(x, 2, init=start, max_iter=1)
    f32 = fit_gmm(x.float(), 2, init=start.to(dtype=torch.float32), max_iter=1)
    rel = (f32.params.covariances.double() - f64.params.covariances).abs().amax(dim=(-1, -2))
    rel = rel / f64.params.covariances.diagonal(dim1=-2, dim2=-1).amax(dim=-1)
    assert float(rel.max()) < 1e-3
    torch.testing.assert_close(f32.lower_bound.double(), f64.lower_bound, rtol=0, atol=1e-4)


def test_degenerate_chain_stops_without_stopping_the_others():
    x = overlapping_data(3, 200, 2, 2, seed=9)
    x[1] = torch.tensor([1.0, 2.0], dtype=F64)  # one point repeated: zero covariance
    x[1, :5] = 3.0
    with pytest.warns(TailguardWarning, match="not positive definite"):
        fit = fit_gmm(x, 2, rng=ChainRandom([1, 2, 3]), reg_covar=0.0)
    assert torch.isnan(fit.lower_bound[1]) and not fit.converged[1]
    assert fit.converged[[0, 2]].all() and torch.isfinite(fit.lower_bound[[0, 2]]).all()


# ------------------------------------------------------------------------------------------------
# Sampling and density


def test_sample_matches_the_parameters():
    n = 20_000
    weights = [[0.3, 0.7], [0.8, 0.2]]
    means = torch.tensor([[[-10.0, 0.0], [10.0, 5.0]], [[-10.0, -5.0], [10.0, 0.0]]], dtype=F64)
    covs = torch.tensor([[[2.0, 0.5], [0.5, 1.0]], [[0.5, -0.2], [-0.2, 0.3]]], dtype=F64)
    params = GMMParams(torch.tensor(weights, dtype=F64), means, covs.expand(2, -1, -1, -1))
    x = sample_gmm(params, n, ChainRandom([5, 6]), generation=3)
    assert x.shape == (2, n, 2) and x.dtype == F64
    for c in range(2):
        component = (x[c, :, 0] > 0).long()  # the components are 20 sigma apart
        for j in range(2):
            p = weights[c][j]
            share = float((component == j).double().mean())
            assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / n)
            pts = x[c, component == j]
            nj, cov = len(pts), covs[j]
            se_mean = torch.sqrt(cov.diagonal() / nj)
            assert ((pts.mean(0) - means[c, j]).abs() < 4 * se_mean).all()
            se_cov = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None] + cov**2) / nj)
            assert ((torch.cov(pts.T) - cov).abs() < 4 * se_cov).all()


def test_sample_is_deterministic_and_independent_of_neighbours():
    params = mixture(*TRUTH_2D, chains=3)
    rng = ChainRandom([7, 8, 9])
    a = sample_gmm(params, 100, rng, generation=1)
    assert torch.equal(a, sample_gmm(params, 100, rng, generation=1))
    assert not torch.equal(a, sample_gmm(params, 100, rng, generation=2))
    assert not torch.equal(a, sample_gmm(params, 100, rng, generation=1, stream="other"))
    alone = sample_gmm(params.select([2]), 100, rng.subset([2]), generation=1)
    assert torch.equal(alone[0], a[2])
    f32 = sample_gmm(params.to(dtype=torch.float32), 100, rng, generation=1)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), a, rtol=0, atol=1e-5)


def scipy_log_density(params: GMMParams, c: int, x: np.ndarray) -> np.ndarray:
    terms = []
    for j in range(params.components):
        mean, cov = params.means[c, j].numpy(), params.covariances[c, j].numpy()
        component = multivariate_normal(mean, cov)
        terms.append(np.log(params.weights[c, j].item()) + component.logpdf(x))
    return logsumexp(np.stack(terms), axis=0)


def test_log_density_matches_scipy():
    params = mixture(*TRUTH_2D, chains=2)
    params.means = params.means + torch.tensor([[[0.0]], [[1.0]]], dtype=F64)
    points = torch.tensor([[0.0, 0.0], [-2.0, -1.0], [5.0, -4.0], [30.0, 30.0]], dtype=F64)
    shared = gmm_log_density(params, points)
    batched = gmm_log_density(params, points.expand(2, -1, -1))
    assert shared.shape == (2, 4)
    torch.testing.assert_close(shared, batched)
    for c in range(2):
        np.testing.assert_allclose(shared[c].numpy(), scipy_log_density(params, c, points.numpy()),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fit_and_sample_match_cpu():
    x = overlapping_data(4, 500, 2, 2, seed=10)
    cpu = fit_gmm(x, 2, rng=ChainRandom(range(4)), generation=1)
    gpu = fit_gmm(x.cuda(), 2, rng=ChainRandom(range(4), "cuda"), generation=1)
    assert gpu.params.means.is_cuda and torch.equal(gpu.n_iter.cpu(), cpu.n_iter)
    torch.testing.assert_close(gpu.params.covariances.cpu(), cpu.params.covariances, rtol=0,
                               atol=1e-10)
    on_gpu = sample_gmm(gpu.params, 100, ChainRandom(range(4), "cuda"), generation=2)
    on_cpu = sample_gmm(cpu.params, 100, ChainRandom(range(4)), generation=2)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-9)
    torch.testing.assert_close(gmm_log_density(gpu.params, on_gpu).cpu(),
                               gmm_log_density(cpu.params, on_cpu), rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Containers and validation


def test_params_round_trip_and_select():
    params = mixture(*TRUTH_2D, chains=3)
    again = GMMParams.from_tensors(params.tensors())
    assert all(t.is_contiguous() for t in params.tensors().values())
    assert torch.equal(again.covariances, params.covariances)
    picked = params.select(torch.tensor([2, 0]))
    assert picked.chains == 2 and torch.equal(picked.means[1], params.means[0])
    assert params.to(dtype=torch.float32).weights.dtype == torch.float32
    with pytest.raises(ValueError, match="exactly the keys"):
        GMMParams.from_tensors({**params.tensors(), "n_iter": torch.zeros(3)})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, rng: fit_gmm(x, 4, rng=rng), "k=4 components need at least 4 samples"),
        (lambda x, rng: fit_gmm(x[0], 2, rng=rng), r"shape \(chains, samples, dims\)"),
        (lambda x, rng: fit_gmm(x.long(), 2, rng=rng), "float32 or float64"),
        (lambda x, rng: fit_gmm(x, 2), "pass rng=ChainRandom"),
        (lambda x, rng: fit_gmm(x, 2, rng=ChainRandom([1])), "1 chain seed"),
        (lambda x, rng: fit_gmm(x, 2, init="kmeans", rng=rng), "init must be one of"),
        (lambda x, rng: fit_gmm(x, 0, rng=rng), "int >= 1"),
        (lambda x, rng: fit_gmm(x, 2, rng=rng, tol=-1.0), "tol must be >= 0"),
        (lambda x, rng: fit_gmm(x * torch.nan, 2, rng=rng), "NaN"),
        (lambda x, rng: fit_gmm(x, 2, init=mixture(*TRUTH_2D, chains=1), rng=rng),
         "init parameters are for 1 chains"),
        (lambda x, rng: sample_gmm(mixture(*TRUTH_2D, chains=1), 0, rng, 0), "n .samples"),
        (lambda x, rng: gmm_log_density(mixture(*TRUTH_2D, chains=2), x[..., :1]), "dims=2"),
        (lambda x, rng: GMMParams(torch.ones(2, 2), torch.ones(2, 3, 2), torch.ones(2, 3, 2, 2)),
         "shapes disagree"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    x = torch.randn(2, 3, 2, dtype=F64)
    with pytest.raises(GMMInputError, match=message) as info:
        call(x, ChainRandom([1, 2]))
    assert isinstance(info.value, ValueError)
