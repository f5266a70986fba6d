"""Collapse metrics: how far a generation's model and samples have drifted from the original.

Model collapse shows first in the tails (rare modes, extreme values, rare classes disappear) and
then in the variance. The metrics here measure exactly that, with closed forms where the model
family has one (Gaussians, Gaussian mixtures) and sample-based estimates otherwise.

An experiment runs many independent chains side by side, so every function is batched over a
leading chain dimension ``C`` and written in torch: inputs may live on CPU or CUDA and be float32
or float64; results are float64 tensors of shape ``(C,)`` on the inputs' device. A reference
(the original distribution or held-out original data) may be given without the chain dimension and
is then shared by all chains.

:data:`METRICS` lists every metric name the experiment engine writes to its long-format parquet
(``metric``, ``value`` columns) with a one-line definition; the engine validates names against it
and the report prints it.

Examples
--------
Two 1-D Gaussians: the squared Wasserstein-2 distance is ``(mu_a - mu_b)^2 + (s_a - s_b)^2``.

>>> import torch
>>> mean_a, var_a = torch.tensor([[0.0]]), torch.tensor([[[1.0]]])
>>> mean_b, var_b = torch.tensor([[1.0]]), torch.tensor([[[4.0]]])
>>> gaussian_w2_squared(mean_a, var_a, mean_b, var_b)
tensor([2.], dtype=torch.float64)
>>> class_frequency_metrics(torch.tensor([[0, 1, 1, 1]]), n_classes=3)["rarest_class_frequency"]
tensor([0.], dtype=torch.float64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from collapse_eval.rng import ChainRandom
from provenance.errors import ConfigError, InputError

METRICS: dict[str, str] = {
    "mean": "fitted mean mu of the generation's 1-D Gaussian model (no collapse: mu_0)",
    "variance": "fitted variance sigma^2 of the generation's 1-D Gaussian model (no collapse: "
    "sigma_0^2)",
    "log_variance": "natural log of the fitted variance, ln sigma^2 (no collapse: the original's "
    "ln sigma_0^2)",
    "mean_sq_error": "(mu - mu_0)^2: squared distance of the fitted mean from the original mean "
    "(no collapse: 0)",
    "w2_squared": "closed-form squared Wasserstein-2 distance between the fitted and the original "
    "Gaussian: |mu - mu_0|^2 + tr(S + S_0 - 2 (S_0^1/2 S S_0^1/2)^1/2) (no collapse: 0)",
    "kl_from_original": "KL(original || fitted) in nats, closed form between Gaussians "
    "(no collapse: 0)",
    "log_l2_distance": "ln of integral (p - p_0)^2 dx, the closed-form squared L2 distance between "
    "the fitted (p) and original (p_0) mixture densities (natural log; no collapse: -inf)",
    "component_std": "mean over the fitted mixture's components k of sqrt(tr(S_k) / d) "
    "(no collapse: the original's component std, 1 by default)",
    "component_std_min": "smallest over the fitted mixture's components k of sqrt(tr(S_k) / d) "
    "(no collapse: the original's smallest component std, 1 by default)",
    "w2_sample": "squared Wasserstein-2 distance between the generation's samples and held-out "
    "original samples: exact between the empirical distributions in 1-D, sliced for d > 1 "
    "(no collapse: the distance between two original samples of these sizes, near 0)",
    "tail_mass_3sigma": "share of generated samples outside the 3-sigma Mahalanobis ellipsoid of "
    "every component of the original distribution (the gaussian family: its exact probability "
    "under the fitted model; no collapse: the original's share, 0.0027 for one Gaussian)",
    "em_iterations": "EM iterations the fit of this generation took (per chain; a cost, no "
    "reference value)",
    "tail_mass_ratio": "tail_mass_3sigma divided by the same share for the original distribution "
    "(no collapse: 1); it counts mass moved outside the original's ellipsoid by a drifting mean "
    "as tail, so it rises under collapse too: tail_recall is the tail metric",
    "tail_recall": "share of the original's tail events (draws of the true distribution below "
    "its 5% density quantile) inside the fitted model's own 99% highest-density region, over the "
    "same share for the original itself, 0.8 (the gmm measures it with the same Monte Carlo "
    "draws). No collapse: 1; 0: no tail event covered; above 1: wider than the original, which "
    "is not tail loss",
    "tail_loglik_gap": "mean over the original's tail events (as in tail_recall) of "
    "ln p_original(x) - ln p_model(x), in nats (no collapse: 0; positive: the model underrates "
    "the original's tails, negative: it overrates them)",
    "heldout_loglik": "mean log-likelihood (nats per example) of held-out original data under the "
    "fitted model (no collapse: minus the original's entropy)",
    "minority_weight": "smallest mixture weight of the fitted model (no collapse: the original's, "
    "0.3 by default)",
    "precision": "improved precision (Kynkaanniemi et al. 2019, k = 3): share of generated samples "
    "inside at least one real sample's k-NN ball in feature space (no collapse: a fresh original "
    "sample's value, near but below 1)",
    "recall": "improved recall (Kynkaanniemi et al. 2019, k = 3): share of real samples inside at "
    "least one generated sample's k-NN ball in feature space (no collapse: a fresh original "
    "sample's value, near but below 1)",
    "coverage": "coverage (Naeem et al. 2020, k = 3): share of real samples whose k-NN ball "
    "contains at least one generated sample (no collapse: a fresh original sample's value, "
    "1 - 2^-k = 0.875 in the large-sample limit)",
    "rarest_class_frequency": "smallest class frequency among the predicted classes of generated "
    "samples (0 when a class is never generated; no collapse: the original's rarest frequency)",
    "class_entropy": "entropy in nats of the predicted-class distribution of generated samples "
    "(maximum ln n_classes; no collapse: the original's class entropy)",
    "classes_below_2pct": "number of classes whose frequency among the predicted classes of "
    "generated samples is below 2 % (no collapse: the original's count, 0 for balanced digits)",
    "encoder_std": "std of the generation-0 encoder's latent means over the generated samples, "
    "averaged over latent dimensions (no collapse: the same std over original data)",
    "heldout_elbo": "mean ELBO (nats per example) of held-out original data under the fitted VAE "
    "(no collapse: generation 0's value)",
    "synthetic_share": "share of the generation's training set that is model-generated "
    "(ground truth, not a tagger's estimate; a setting of the policy, not a collapse measure)",
    "training_size": "number of examples in the generation's training set (a setting of the "
    "policy, not a collapse measure)",
    "tagger_tpr": "share of the model-generated items in the generation's pool that the filter's "
    "tagger flags as synthetic (ground truth; a perfect tagger: 1)",
    "tagger_fpr": "share of the original items in the generation's pool that the filter's tagger "
    "flags as synthetic (ground truth; a perfect tagger: 0)",
    "log_variance_ratio": "ln(var / var(original)): the fitted variance for the gaussian family, "
    "else the unbiased variance of generated samples averaged over dimensions (no collapse: 0; "
    "negative = collapse)",
}

_ELEMENT_BUDGET = 1 << 24  # elements per intermediate tensor when chunking (128 MiB in float64)
_DIRECTIONS_SEED = 0x5EED_51CE  # fixed key of the sliced-W2 directions: same directions forever


# --------------------------------------------------------------------------- shape helpers


def _f64(x: Tensor) -> Tensor:
    return x.to(torch.float64)


def _batched(x: Tensor, event_dims: int, name: str) -> Tensor:
    """``x`` with a leading chain dimension: an unbatched reference gets a broadcastable 1."""
    if x.ndim == event_dims:
        return x.unsqueeze(0)
    if x.ndim != event_dims + 1:
        raise InputError(
            f"expected {event_dims + 1} dimensions (chains first) or {event_dims}, "
            f"got shape {tuple(x.shape)}", field=name,
        )
    return x


def _chains(*tensors: Tensor) -> int:
    """The common chain count of batched tensors (a leading 1 broadcasts)."""
    sizes = {t.shape[0] for t in tensors} - {1}
    if len(sizes) > 1:
        raise InputError(f"chain dimensions disagree: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _check_dim(expected: int, x: Tensor, name: str) -> None:
    if x.shape[-1] != expected:
        raise InputError(f"dimension {x.shape[-1]} != {expected}", field=name)


def _rows_per_chunk(elements_per_row: int) -> int:
    return max(1, _ELEMENT_BUDGET // max(1, elements_per_row))


# --------------------------------------------------------------------------- Gaussians


def _gaussian_args(mean: Tensor, cov: Tensor, side: str) -> tuple[Tensor, Tensor]:
    mean, cov = _batched(_f64(mean), 1, f"mean_{side}"), _batched(_f64(cov), 2, f"cov_{side}")
    d = mean.shape[-1]
    if cov.shape[-2:] != (d, d):
        raise InputError(f"covariance shape {tuple(cov.shape)} does not match d = {d}",
                         field=f"cov_{side}")
    return mean, cov


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Symmetric square root of PSD matrices; tiny negative eigenvalues (rounding) count as 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt().unsqueeze(-2)) @ vectors.mT


def gaussian_w2_squared(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> Tensor:
    """Squared Wasserstein-2 distance between Gaussians, in closed form (Bures metric).

    Shapes: means ``(C, d)``, covariances ``(C, d, d)`` (``d = 1`` for 1-D); either side may omit
    ``C``. ``|m_a - m_b|^2 + tr(A + B - 2 (A^1/2 B A^1/2)^1/2)`` with eigen-decomposition square
    roots, which stay real and symmetric for singular (collapsed) covariances.
    """
    mean_a, cov_a = _gaussian_args(mean_a, cov_a, "a")
    mean_b, cov_b = _gaussian_args(mean_b, cov_b, "b")
    _check_dim(mean_a.shape[-1], mean_b, "mean_b")
    root_a = _psd_sqrt(cov_a)
    cross = root_a @ cov_b @ root_a
    cross = 0.5 * (cross + cross.mT)
    cross_trace = torch.linalg.eigvalsh(cross).clamp(min=0).sqrt().sum(-1)
    traces = cov_a.diagonal(dim1=-2, dim2=-1).sum(-1) + cov_b.diagonal(dim1=-2, dim2=-1).sum(-1)
    shift = (mean_a - mean_b).square().sum(-1)
    return (shift + traces - 2.0 * cross_trace).clamp(min=0)


def gaussian_kl(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> Tensor:
    """KL(N_a || N_b) in nats, in closed form; shapes as in :func:`gaussian_w2_squared`.

    For ``kl_from_original`` pass the original as ``a``: it then measures how badly the fitted
    model covers the original's mass, which is what tail loss does. Covariances must be positive
    definite (a Cholesky factorisation is used).
    """
    mean_a, cov_a = _gaussian_args(mean_a, cov_a, "a")
    mean_b, cov_b = _gaussian_args(mean_b, cov_b, "b")
    _check_dim(mean_a.shape[-1], mean_b, "mean_b")
    d = mean_a.shape[-1]
    chol_a, chol_b = torch.linalg.cholesky(cov_a), torch.linalg.cholesky(cov_b)
    mixed = torch.linalg.solve_triangular(chol_b, chol_a, upper=False)  # L_b^-1 L_a
    trace_term = mixed.square().sum((-2, -1))  # tr(B^-1 A)
    diff = (mean_b - mean_a).unsqueeze(-1)
    maha = torch.linalg.solve_triangular(chol_b, diff, upper=False).square().sum((-2, -1))
    logdet_a = 2.0 * chol_a.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_b = 2.0 * chol_b.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return (0.5 * (trace_term + maha - d + logdet_b - logdet_a)).clamp(min=0)


# --------------------------------------------------------------------------- mixtures


def _mixture_args(
    weights: Tensor, means: Tensor, covs: Tensor, side: str
) -> tuple[Tensor, Tensor, Tensor]:
    weights = _batched(_f64(weights), 1, f"w_{side}")
    means = _batched(_f64(means), 2, f"mu_{side}")
    covs = _batched(_f64(covs), 3, f"cov_{side}")
    k, d = means.shape[-2:]
    if weights.shape[-1] != k or covs.shape[-3:] != (k, d, d):
        raise InputError(
            f"mixture shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
            f"covs {tuple(covs.shape)}", field=f"cov_{side}",
        )
    return weights, means, covs


def _overlap(
    w1: Tensor, mu1: Tensor, cov1: Tensor, w2: Tensor, mu2: Tensor, cov2: Tensor
) -> Tensor:
    """``sum_ij w1_i w2_j N(mu1_i; mu2_j, S1_i + S2_j)``: the integral of the product density."""
    d = mu1.shape[-1]
    cov = cov1.unsqueeze(-3) + cov2.unsqueeze(-4)  # (C, k1, k2, d, d)
    diff = (mu1.unsqueeze(-2) - mu2.unsqueeze(-3)).unsqueeze(-1)  # (C, k1, k2, d, 1)
    chol = torch.linalg.cholesky(cov)
    maha = torch.linalg.solve_triangular(chol, diff, upper=False).square().sum((-2, -1))
    log_norm = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + 0.5 * d * math.log(2 * math.pi)
    density = torch.exp(-0.5 * maha - log_norm)
    return (w1.unsqueeze(-1) * w2.unsqueeze(-2) * density).sum((-2, -1))


def gmm_l2_distance_squared(
    w_a: Tensor, mu_a: Tensor, cov_a: Tensor, w_b: Tensor, mu_b: Tensor, cov_b: Tensor
) -> Tensor:
    """``integral (p_a - p_b)^2 dx`` between two Gaussian mixtures, in closed form.

    Unlike KL, this has a closed form for mixtures and stays finite when a fitted component
    collapses. Shapes: weights ``(C, k)``, means ``(C, k, d)``, covariances ``(C, k, d, d)``; either
    side may omit ``C`` and the two may have different ``k``. Weights are used as given (they
    should sum to 1). Computed in float64 and clamped at 0 against rounding; the engine reports
    the log (``log_l2_distance``).
    """
    w_a, mu_a, cov_a = _mixture_args(w_a, mu_a, cov_a, "a")
    w_b, mu_b, cov_b = _mixture_args(w_b, mu_b, cov_b, "b")
    _check_dim(mu_a.shape[-1], mu_b, "mu_b")
    aa = _overlap(w_a, mu_a, cov_a, w_a, mu_a, cov_a)
    ab = _overlap(w_a, mu_a, cov_a, w_b, mu_b, cov_b)
    bb = _overlap(w_b, mu_b, cov_b, w_b, mu_b, cov_b)
    return (aa - 2.0 * ab + bb).clamp(min=0)


# --------------------------------------------------------------------------- Wasserstein on samples


def _w2_sorted_1d(a: Tensor, b: Tensor) -> Tensor:
    """Exact W2^2 between empirical distributions given as sorted values along the last dim.

    W2^2 is the integral over t in (0, 1] of (F_a^-1(t) - F_b^-1(t))^2. Both quantile functions are
    step functions, with steps at i/n and j/m; on the merged breakpoints (integers in units of
    1/(n m), so no rounding decides which step a point falls in) both are constant.
    """
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return (a - b).square().mean(-1)
    device = a.device
    steps_a = torch.arange(1, n + 1, device=device, dtype=torch.int64) * m
    steps_b = torch.arange(1, m + 1, device=device, dtype=torch.int64) * n
    ends = torch.unique(torch.cat((steps_a, steps_b)))  # sorted, duplicates removed
    index_a = (ends + m - 1) // m - 1  # step of a containing the interval ending at `ends`
    index_b = (ends + n - 1) // n - 1
    widths = torch.diff(ends, prepend=ends.new_zeros(1)).to(torch.float64) / (n * m)
    return ((a[..., index_a] - b[..., index_b]).square() * widths).sum(-1)


def projection_directions(d: int, projections: int = 64) -> Tensor:
    """The fixed unit directions (``(P, d)`` float64, CPU) of the sliced W2 for dimension ``d``.

    ``d == 1``: the single direction 1. ``d == 2``: ``projections`` evenly spaced angles on the half
    circle (``pi p / P``), so the mean of ``(t . u)^2`` is exactly ``|t|^2 / 2``. ``d > 2``:
    normalised Gaussian directions from a fixed counter-based key, identical on every machine and
    torch version, so that results are comparable across runs.
    """
    if d < 1 or projections < 1:
        raise ConfigError(f"need d >= 1 and projections >= 1, got d={d}, projections={projections}")
    if d == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    if d == 2:
        angles = torch.arange(projections, dtype=torch.float64) * (math.pi / projections)
        return torch.stack((angles.cos(), angles.sin()), dim=-1)
    raw = ChainRandom([_DIRECTIONS_SEED]).normal(0, "sliced_w2_directions", (projections, d))[0]
    return raw / raw.norm(dim=-1, keepdim=True)


def empirical_w2_squared(samples: Tensor, reference: Tensor, projections: int = 64) -> Tensor:
    """Squared Wasserstein-2 distance between samples and reference samples (``w2_sample``).

    Shapes: ``samples`` ``(C, N, d)``, ``reference`` ``(C, M, d)`` or ``(M, d)``. For ``d == 1`` the
    result is the EXACT W2^2 between the two empirical distributions, also for ``N != M``. For
    ``d > 1`` it is the SLICED W2^2: the mean, over the fixed unit directions of
    :func:`projection_directions`, of the exact 1-D W2^2 between the projections. Sliced W2 is a
    lower bound on W2 that reacts to lost tails and variance the same way and costs only sorts:
    ``C * P`` sorts of ``N`` values (and ``P`` of ``M``): subsample when ``N`` is in the millions.
    """
    if projections < 1:
        raise ConfigError(f"projections must be >= 1, got {projections}")
    samples = _f64(samples)
    if samples.ndim != 3:
        raise InputError(f"expected (C, N, d), got shape {tuple(samples.shape)}", field="samples")
    reference = _batched(_f64(reference), 2, "reference")
    _check_dim(samples.shape[-1], reference, "reference")
    chains = _chains(samples, reference)
    d = samples.shape[-1]
    directions = projection_directions(d, projections).to(samples.device)
    n, m = samples.shape[1], reference.shape[1]
    chunk = _rows_per_chunk(chains * (n + m))
    total = samples.new_zeros(chains)
    for start in range(0, directions.shape[0], chunk):
        block = directions[start : start + chunk].T  # (d, p)
        proj_a = (samples @ block).mT.sort(dim=-1).values  # (C, p, N)
        proj_b = (reference @ block).mT.sort(dim=-1).values  # (C or 1, p, M)
        total = total + _w2_sorted_1d(proj_a, proj_b).sum(-1)
    return total / directions.shape[0]


# --------------------------------------------------------------------------- tails and variance


def tail_mass(samples: Tensor, means: Tensor, covs: Tensor, k_sigma: float) -> Tensor:
    """Share of samples outside the ``k_sigma`` Mahalanobis ellipsoid of EVERY reference component.

    A sample counts as tail when it is far from all components, so a mixture's gaps between modes
    do not count as tail. ``samples`` ``(C, N, d)``, ``means`` ``(k, d)`` or ``(C, k, d)``, ``covs``
    ``(k, d, d)`` or ``(C, k, d, d)``. For one 1-D Gaussian this is ``P(|x - mu| > k sigma)``; for a
    correct model and one component it estimates :func:`gaussian_tail_mass_expected`.
    """
    if not k_sigma > 0:
        raise ConfigError(f"k_sigma must be > 0, got {k_sigma}")
    samples = _f64(samples)
    if samples.ndim != 3:
        raise InputError(f"expected (C, N, d), got shape {tuple(samples.shape)}", field="samples")
    means, covs = _batched(_f64(means), 2, "means"), _batched(_f64(covs), 3, "covs")
    k, d = means.shape[-2:]
    _check_dim(d, samples, "samples")
    if covs.shape[-3:] != (k, d, d):
        raise InputError(f"covs shape {tuple(covs.shape)} does not match means", field="covs")
    chains = _chains(samples, means, covs)
    chol = torch.linalg.cholesky(covs)
    eye = torch.eye(d, dtype=torch.float64, device=chol.device).expand_as(chol)
    whiten = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1: (C, k, d, d)
    threshold = float(k_sigma) ** 2
    chunk = _rows_per_chunk(chains * k * d)
    outside = torch.zeros(chains, dtype=torch.int64, device=samples.device)
    for start in range(0, samples.shape[1], chunk):
        block = samples[:, start : start + chunk]  # (C, n, d)
        diff = block.unsqueeze(2) - means.unsqueeze(1)  # (C, n, k, d)
        maha = torch.einsum("ckij,cnkj->cnki", whiten, diff).square().sum(-1)  # (C, n, k)
        outside = outside + (maha > threshold).all(dim=-1).sum(dim=-1)
    return _f64(outside) / samples.shape[1]


def gaussian_tail_mass_expected(d: int, k_sigma: float) -> float:
    """``P(chi2_d > k^2)``: the tail mass a correct model has for one ``d``-dim Gaussian component.

    The denominator of ``tail_mass_ratio`` for a single-Gaussian original (regularised upper
    incomplete gamma ``Q(d/2, k^2/2)``).
    """
    if d < 1 or not k_sigma >= 0:
        raise ConfigError(f"need d >= 1 and k_sigma >= 0, got d={d}, k_sigma={k_sigma}")
    half_d = torch.tensor(d / 2.0, dtype=torch.float64)
    half_k2 = torch.tensor(float(k_sigma) ** 2 / 2.0, dtype=torch.float64)
    return float(torch.special.gammaincc(half_d, half_k2))


def log_variance_ratio(samples: Tensor, reference_var: float | Tensor) -> Tensor:
    """``ln(var(samples) / reference_var)``: 0 while variance is kept, negative as it collapses.

    ``samples`` ``(C, N, d)`` (or ``(C, N)`` for 1-D); the unbiased variance along ``N`` is averaged
    over dimensions. ``reference_var`` is a number or a ``(C,)`` tensor (the original's variance,
    averaged over dimensions the same way).
    """
    samples = _f64(samples)
    if samples.ndim == 2:
        samples = samples.unsqueeze(-1)
    if samples.ndim != 3 or samples.shape[1] < 2:
        raise InputError(f"expected (C, N, d) with N >= 2, got {tuple(samples.shape)}",
                         field="samples")
    variance = samples.var(dim=1).mean(dim=-1)
    reference = torch.as_tensor(reference_var, dtype=torch.float64, device=samples.device)
    return torch.log(variance / reference)


# --------------------------------------------------------------------------- the original's tails


#: the original's tail: the share of its mass with the lowest density (below its 5% quantile)
TAIL_LEVEL = 0.05
#: what a model "treats as plausible": its own highest-density region of this mass
HDR_MASS = 0.99
#: the share of the original's tail events inside the original's own 99% HDR: the band between
#: its 1% and 5% density quantiles over its 5% tail, (0.05 - 0.01) / 0.05 = 0.8 exactly (the
#: literal, so that the original's recall divides to exactly 1.0)
TAIL_RECALL_REFERENCE = 0.8
_TAIL_Z = NormalDist().inv_cdf(1.0 - TAIL_LEVEL / 2)  # 1.95996: |z| beyond it is the 5% tail
_HDR_Z = NormalDist().inv_cdf(1.0 - (1.0 - HDR_MASS) / 2)  # 2.57583: the 99% HDR is |z| < it


@dataclass(frozen=True)
class TailEvents:
    """The original's tail events, shared by every chain: ``points`` ``(n, d)`` drawn from the
    original and lying below its 5% density quantile, and its ``log_density`` there ``(n,)``."""

    points: Tensor
    log_density: Tensor


def log_density_quantile(log_density: Tensor, level: float) -> Tensor:
    """The ``level`` quantile of log-densities along the last axis, ``(C, n)`` -> ``(C,)``.

    Log-densities of a distribution's own draws: the ``level`` quantile is the density level
    whose super-level set holds ``1 - level`` of the mass, the edge of the highest-density region
    of that mass. The empirical quantile is the ``ceil(level n)``-th smallest value (a sort, not
    interpolation, so any size works).

    >>> log_density_quantile(torch.arange(100.0)[None], 0.05)
    tensor([4.], dtype=torch.float64)
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must lie in (0, 1), got {level}")
    n = log_density.shape[-1]
    if n == 0:
        raise InputError("no log-densities to take a quantile of", field="log_density")
    rank = min(n, max(1, math.ceil(level * n)))
    return _f64(log_density).kthvalue(rank, dim=-1).values


def original_tail_events(points: Tensor, log_density: Tensor, threshold: float | Tensor,
                         ) -> TailEvents:
    """The draws ``points`` ``(n, d)`` of the original whose ``log_density`` ``(n,)`` is below
    ``threshold`` (the original's 5% log-density quantile, from other draws or a closed form).

    >>> events = original_tail_events(torch.tensor([[0.0], [3.0]]), torch.tensor([-1.0, -5.0]), -4)
    >>> events.points.tolist(), events.log_density.tolist()
    ([[3.0]], [-5.0])
    """
    keep = _f64(log_density) < torch.as_tensor(threshold, dtype=torch.float64)
    return TailEvents(_f64(points)[keep], _f64(log_density)[keep])


def tail_recall(model_log_density: Tensor, model_threshold: Tensor,
                reference: float | Tensor = TAIL_RECALL_REFERENCE) -> Tensor:
    """``tail_recall``: how many of the original's rare events the model still finds plausible.

    ``model_log_density`` ``(C, n)``: each chain's model at the original's tail events;
    ``model_threshold`` ``(C,)``: the edge of that model's own 99% highest-density region, its
    1% log-density quantile (:func:`log_density_quantile` of its own draws). The share of tail
    events inside the region, divided by ``reference``, the share for the original itself:
    :data:`TAIL_RECALL_REFERENCE` (0.8) exactly, or the original's share measured with the same
    Monte Carlo draws, so that their error cancels. The original scores 1 and a model that forgot
    every rare event 0 (the paper's "improbable events vanish"). A model narrower than the
    original or shifted away from it scores below 1; one wider scores above 1 (up to 1.25):
    over-covering the tails is not tail loss. Normalised rather than raw because the headline's
    tail loss is then ``1 - recall``, the share of the original's own tail coverage that is lost.

    >>> tail_recall(torch.tensor([[-1.0, -9.0, -2.0, -3.0, -4.0]]), torch.tensor([-5.0]))
    tensor([1.], dtype=torch.float64)
    """
    inside = _f64(model_log_density) >= _f64(model_threshold).unsqueeze(-1)
    return _f64(inside).mean(dim=-1) / reference


def tail_loglik_gap(original_log_density: Tensor, model_log_density: Tensor) -> Tensor:
    """``tail_loglik_gap``: mean of ``ln p_original - ln p_model`` over the original's tail events.

    ``original_log_density`` ``(n,)``, ``model_log_density`` ``(C, n)``, in nats. 0 for the
    original itself; positive when the model underrates the original's tails (narrower or
    shifted), negative when it overrates them (wider). Unlike :func:`tail_recall` it says by how
    much, not only whether, so it keeps moving after every tail event has left the model's HDR.

    >>> tail_loglik_gap(torch.tensor([-4.0, -6.0]), torch.tensor([[-5.0, -9.0]]))
    tensor([2.], dtype=torch.float64)
    """
    return (_f64(original_log_density) - _f64(model_log_density)).mean(dim=-1)


def _standardised(mean: Tensor, var: Tensor, original_mean: float, original_std: float,
                  ) -> tuple[Tensor, Tensor]:
    """The model N(mean, var) in the original's standard units: (shift m, scale s)."""
    shift = (_f64(mean) - original_mean) / original_std
    scale = _f64(var).clamp_min(1e-300).sqrt() / original_std
    return shift, scale


def gaussian_1d_tail_recall(mean: Tensor, var: Tensor, original_mean: float = 0.0,
                            original_std: float = 1.0) -> Tensor:
    """:func:`tail_recall` of 1-D Gaussians N(mean, var) ``(C,)`` in closed form (no sampling).

    In the original's units the tail is ``|z| > 1.96`` and the model's 99% HDR is
    ``m +- 2.576 s``; the recall is the original's probability of their intersection over 0.05,
    then over 0.8. The original (m = 0, s = 1) scores exactly 1.

    >>> gaussian_1d_tail_recall(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.25]))
    tensor([1.0000, 0.0000], dtype=torch.float64)
    """
    shift, scale = _standardised(mean, var, original_mean, original_std)
    low, high = shift - _HDR_Z * scale, shift + _HDR_Z * scale
    cdf = torch.special.ndtr
    left = (cdf(high.clamp(max=-_TAIL_Z)) - cdf(low)).clamp(min=0)
    right = (cdf(high) - cdf(low.clamp(min=_TAIL_Z))).clamp(min=0)
    return (left + right) / TAIL_LEVEL / TAIL_RECALL_REFERENCE


def gaussian_1d_tail_loglik_gap(mean: Tensor, var: Tensor, original_mean: float = 0.0,
                                original_std: float = 1.0) -> Tensor:
    """:func:`tail_loglik_gap` of 1-D Gaussians N(mean, var) ``(C,)`` in closed form.

    In the original's units, ``ln p_0 - ln p = ln s + (z - m)^2 / (2 s^2) - z^2 / 2``; over the
    tail ``|z| > c`` (c = 1.96) ``E[z] = 0`` and ``E[z^2] = 1 + 2 c phi(c) / 0.05``, so the gap is
    ``ln s + (E[z^2] + m^2) / (2 s^2) - E[z^2] / 2``: exactly 0 for the original.

    >>> gaussian_1d_tail_loglik_gap(torch.tensor([0.0]), torch.tensor([1.0]))
    tensor([0.], dtype=torch.float64)
    """
    shift, scale = _standardised(mean, var, original_mean, original_std)
    density = math.exp(-0.5 * _TAIL_Z**2) / math.sqrt(2 * math.pi)
    second = 1.0 + 2.0 * _TAIL_Z * density / TAIL_LEVEL
    return scale.log() + (second + shift.square()) / (2 * scale.square()) - second / 2


# --------------------------------------------------------------------------- manifold metrics


def _feature_args(real: Tensor, fake: Tensor, k: int) -> tuple[Tensor, Tensor]:
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    dtype = torch.promote_types(torch.promote_types(real.dtype, fake.dtype), torch.float32)
    real, fake = _batched(real.to(dtype), 2, "real"), _batched(fake.to(dtype), 2, "fake")
    _check_dim(real.shape[-1], fake, "fake")
    _chains(real, fake)
    for name, points in (("real", real), ("fake", fake)):
        if points.shape[1] <= k:
            raise ConfigError(f"{name} needs more than k = {k} points, got {points.shape[1]}")
    return real, fake


def _knn_radii(points: Tensor, k: int) -> Tensor:
    """Distance of each point to its k-th nearest OTHER point, ``(C, N)``; cdist in row chunks.

    The point itself is at distance 0, the smallest, so the k-th other neighbour is the
    (k+1)-th smallest distance (ties included).
    """
    n = points.shape[1]
    chunk = _rows_per_chunk(points.shape[0] * n)
    radii = []
    for start in range(0, n, chunk):
        dist = torch.cdist(points[:, start : start + chunk], points)
        radii.append(dist.topk(k + 1, dim=-1, largest=False).values[..., k])
    return torch.cat(radii, dim=1)


def _manifold(real: Tensor, fake: Tensor, k: int, with_recall: bool) -> dict[str, Tensor]:
    """Precision, coverage (and recall) in one pass over the fake-to-real distance matrix."""
    chains = _chains(real, fake)
    n, m = real.shape[1], fake.shape[1]
    real_radii = _knn_radii(real, k)  # (C or 1, N)
    fake_radii = _knn_radii(fake, k) if with_recall else None
    inside_real_ball = torch.zeros(chains, dtype=torch.int64, device=fake.device)
    real_ball_hit = torch.zeros(chains, n, dtype=torch.bool, device=fake.device)
    real_in_fake_ball = torch.zeros(chains, n, dtype=torch.bool, device=fake.device)
    chunk = _rows_per_chunk(chains * n)
    for start in range(0, m, chunk):
        dist = torch.cdist(fake[:, start : start + chunk], real)  # (C, m', N)
        in_real = dist <= real_radii.unsqueeze(1)
        inside_real_ball = inside_real_ball + in_real.any(dim=-1).sum(dim=-1)
        real_ball_hit |= in_real.any(dim=1)
        if fake_radii is not None:
            in_fake = dist <= fake_radii[:, start : start + chunk].unsqueeze(-1)
            real_in_fake_ball |= in_fake.any(dim=1)
    out = {
        "precision": _f64(inside_real_ball) / m,
        "coverage": _f64(real_ball_hit).mean(dim=-1),
    }
    if with_recall:
        out["recall"] = _f64(real_in_fake_ball).mean(dim=-1)
    return out


def precision_recall_coverage(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, Tensor]:
    """``precision``, ``recall`` and ``coverage`` from one pass over the distances.

    The engine reports all three; computing them together saves the largest distance matrix.
    Shapes and definitions as in :func:`precision_recall` and :func:`coverage`.
    """
    real, fake = _feature_args(real, fake, k)
    return _manifold(real, fake, k, with_recall=True)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) in a feature space.

    Each real point gets a ball of radius its distance to its k-th nearest other real point;
    precision is the share of fake points inside at least one real ball (fidelity). Recall is the
    same with the roles swapped (fake balls from fake k-NN): the share of the real distribution the
    model still reaches, which drops as modes and tails are lost. ``real`` ``(C, N, f)`` or
    ``(N, f)``, ``fake`` ``(C, M, f)``; distances in chunks, so N = M = 10,000 with f = 128 needs
    well under 2 GB.
    """
    out = precision_recall_coverage(real, fake, k)
    return out["precision"], out["recall"]


def coverage(real: Tensor, fake: Tensor, k: int = 3) -> Tensor:
    """Coverage (Naeem et al. 2020): share of real k-NN balls holding at least one fake point.

    Unlike recall it uses only real balls, so a few outlying fake points cannot inflate it.
    Shapes as in :func:`precision_recall`.
    """
    real, fake = _feature_args(real, fake, k)
    return _manifold(real, fake, k, with_recall=False)["coverage"]


# --------------------------------------------------------------------------- classes


def _below_name(below: float) -> str:
    """``classes_below_2pct`` for the default 0.02; other thresholds get their own name."""
    percent = f"{below * 100:g}".replace(".", "p")
    return f"classes_below_{percent}pct"


def class_frequency_metrics(
    labels: Tensor, n_classes: int, below: float = 0.02
) -> dict[str, Tensor]:
    """Per-class frequency metrics of generated samples' predicted classes, ``labels`` ``(C, N)``.

    Rare classes are the discrete tail: they vanish first. Returns ``rarest_class_frequency``,
    ``class_entropy`` (nats, at most ``ln n_classes``) and the count of classes with frequency below
    ``below``, keyed ``classes_below_2pct`` for the default (``classes_below_5pct`` for 0.05).
    """
    if n_classes < 1:
        raise ConfigError(f"n_classes must be >= 1, got {n_classes}")
    labels = _batched(labels, 1, "labels")
    if labels.is_floating_point() or labels.is_complex() or labels.shape[1] == 0:
        raise InputError("labels must be a non-empty integer tensor", field="labels")
    labels = labels.to(torch.int64)
    if bool((labels < 0).any()) or bool((labels >= n_classes).any()):
        raise InputError(f"labels must lie in [0, {n_classes})", field="labels")
    counts = torch.zeros(labels.shape[0], n_classes, dtype=torch.float64, device=labels.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
    freq = counts / labels.shape[1]
    return {
        "rarest_class_frequency": freq.min(dim=-1).values,
        "class_entropy": -torch.special.xlogy(freq, freq).sum(dim=-1),
        _below_name(below): (freq < below).sum(dim=-1).to(torch.float64),
    }
