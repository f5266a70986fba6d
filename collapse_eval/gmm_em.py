"""Gaussian mixtures fitted by EM, batched over many independent chains, on CPU or GPU.

The paper's GMM experiment (Shumailov et al.) fits a 2-component mixture to 1000 points, samples
1000 points from the fit, refits, for 2000 generations -- per seed. One scikit-learn fit of that
size spends most of its time in Python and in tiny (2 x 2) linear algebra, so here one call fits
C chains at once, and each EM step is a handful of tensor kernels over all chains.

Batched formulation
-------------------
Every tensor has the chain axis C first and the sample axis N last (innermost). The tiny axes --
k components, d dimensions -- sit in between, so a reduction over them is a vectorised loop over
contiguous rows of N values, and every matrix product has N either as its long output axis or as
its contiguous contraction axis (a dot product). Tiny reductions over a size-2 innermost axis,
which dominate a straight port of scikit-learn, never occur.

* The data are stored once per fit as ``xt`` (C, d, N), centred on each chain's mean.
* E-step. With ``S_k = L_k L_k^T`` (one batched Cholesky of the (C, k, d, d) covariances per
  iteration), the whitened residuals ``y = L_k^{-1} x - L_k^{-1} mu_k`` of all k components are
  one batched matmul (C, k*d, d) @ (C, d, N); squaring and summing each component's d rows is a
  second matmul with a constant block of ones, which also adds ``log w_k - log det L_k``. The
  log-sum-exp over k (dim 1) gives the per-sample log-likelihood and the responsibilities
  (C, k, N).
* M-step. ``N_k`` is a sum over the contiguous axis; the means are ``resp @ x^T`` and the scatter
  matrices ``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T`` are ``(r * D) @ D^T`` with the centred
  ``D = x - mu_k`` (C, k, d, N): both contract over N.
* Convergence is per chain, with scikit-learn's rule. A chain that stops is written to the
  output and dropped from the batch (``index_select``), so late iterations only pay for the
  chains still running.

This is the arithmetic scikit-learn's ``GaussianMixture(covariance_type="full")`` does, term for
term (same whitened E-step, same two-pass covariances, ``N_k + 10 eps``, weights ``N_k / sum N_k``,
``reg_covar`` on the diagonal, lower bound = mean log-likelihood, stop when its change is below
``tol``), so from the same initial parameters it reaches the same fit to rounding (~1e-14 in
float64).

Why not the one-matmul form with features ``[1, x, x x^T]`` (E-step: features @ quadratic-form
coefficients; M-step: ``E[x x^T] - mu mu^T``)? It cancels terms of size ``(|x - c| / sigma)^2``
(c: the chain mean), and in the recursion the components narrow (sigma 1 -> 0.01 while they stay
4 apart). Measured in float32 against float64, one EM step from the same start: at sigma 0.1 its
covariances are off by 3e-4 (relative) and its lower bound by 2e-5 -- already above
``tol=1e-5``, so the stopping rule reads rounding noise; at sigma 0.01, 3e-2 and 3e-3. The
whitened, two-pass form here loses only ``|x - c| / sigma`` (as scikit-learn does): 7e-7 / 6e-7
at sigma 0.1, 7e-6 / 2e-6 at sigma 0.01. It costs ~1.1x (32 chains) to ~1.5x (256 chains) the
feature form per EM iteration on CPU.

Randomness (k-means++ seeding, random responsibilities, sampling) comes from
:class:`~collapse_eval.rng.ChainRandom`, so a chain's fit and samples are a pure function of its
seed and generation, whichever chains run beside it.

Examples
--------
>>> import torch
>>> from collapse_eval.rng import ChainRandom
>>> rng = ChainRandom([1, 2, 3])
>>> truth = GMMParams(torch.tensor([[0.6, 0.4]]).expand(3, 2),
...                   torch.tensor([[[-3.0, 0.0], [3.0, 0.0]]]).expand(3, 2, 2),
...                   torch.eye(2).expand(3, 2, 2, 2))
>>> x = sample_gmm(truth, 2000, rng, generation=0)
>>> fit = fit_gmm(x, 2, rng=rng, generation=1)
>>> x.shape, fit.params.means.shape, bool(fit.converged.all())
(torch.Size([3, 2000, 2]), torch.Size([3, 2, 2]), True)
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import torch

from collapse_eval.rng import ChainRandom
from provenance.errors import GMMInputError, TailguardWarning

__all__ = [
    "GMMFit",
    "GMMParams",
    "fit_gmm",
    "gmm_log_density",
    "sample_gmm",
]

#: Lloyd iterations after k-means++ seeding at most (a chain stops once no assignment changes).
LLOYD_MAX_ITER = 30
INITS = ("kmeans++", "random")


@dataclass
class GMMParams:
    """Parameters of C mixtures (one per chain), each with k full-covariance components in d-D.

    Attributes
    ----------
    weights : torch.Tensor
        (C, k) mixing weights, summing to 1 per chain.
    means : torch.Tensor
        (C, k, d) component means.
    covariances : torch.Tensor
        (C, k, d, d) component covariances (symmetric positive definite).
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    def __post_init__(self) -> None:
        w, m, s = self.weights, self.means, self.covariances
        if w.ndim != 2 or m.ndim != 3 or s.ndim != 4:
            raise GMMInputError(
                "GMMParams needs weights (C, k), means (C, k, d) and covariances (C, k, d, d), "
                f"got shapes {tuple(w.shape)}, {tuple(m.shape)}, {tuple(s.shape)}"
            )
        c, k, d = m.shape
        if tuple(w.shape) != (c, k) or tuple(s.shape) != (c, k, d, d):
            raise GMMInputError(
                f"GMMParams shapes disagree: means {tuple(m.shape)} imply weights {(c, k)} and "
                f"covariances {(c, k, d, d)}, got {tuple(w.shape)} and {tuple(s.shape)}"
            )

    @property
    def chains(self) -> int:
        return self.means.shape[0]

    @property
    def components(self) -> int:
        return self.means.shape[1]

    @property
    def dims(self) -> int:
        return self.means.shape[2]

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> GMMParams:
        """The same parameters on another device and/or in another floating dtype."""
        return GMMParams(*(t.to(device=device, dtype=dtype) for t in self._fields()))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Contiguous tensors by name, as safetensors checkpoints want them."""
        return {"weights": self.weights.contiguous(), "means": self.means.contiguous(),
                "covariances": self.covariances.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> GMMParams:
        """Inverse of :meth:`tensors` (extra keys are an error: they would be silently lost)."""
        expected = {"weights", "means", "covariances"}
        if set(tensors) != expected:
            raise GMMInputError(
                f"GMMParams.from_tensors needs exactly the keys {sorted(expected)}, "
                f"got {sorted(tensors)}"
            )
        return cls(tensors["weights"], tensors["means"], tensors["covariances"])

    def select(self, index: torch.Tensor | list[int]) -> GMMParams:
        """The mixtures of some chains only, in the order of ``index``."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.means.device)
        return GMMParams(*(t.index_select(0, index) for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weights, self.means, self.covariances


@dataclass
class GMMFit:
    """What :func:`fit_gmm` returns for each chain.

    Attributes
    ----------
    params : GMMParams
        The parameters after the last M-step (what scikit-learn keeps).
    n_iter : torch.Tensor
        (C,) int64 EM iterations run (scikit-learn's ``n_iter_``).
    converged : torch.Tensor
        (C,) bool: the lower bound changed by less than ``tol`` before ``max_iter``.
    lower_bound : torch.Tensor
        (C,) mean log-likelihood per sample at the last E-step (scikit-learn's ``lower_bound_``);
        NaN where a covariance stopped being positive definite (the chain was stopped there).
    """

    params: GMMParams
    n_iter: torch.Tensor
    converged: torch.Tensor
    lower_bound: torch.Tensor


@dataclass
class _Model:
    """Parameters in the form the E-step needs, for the chains still iterating (A of them)."""

    weights: torch.Tensor  # (A, k)
    means: torch.Tensor  # (A, k, d), in centred coordinates
    covariances: torch.Tensor  # (A, k, d, d)
    chol: torch.Tensor  # (A, k, d, d) lower Cholesky factors of the covariances
    ok: torch.Tensor  # (A,) bool: every covariance of the chain is positive definite

    def select(self, index: torch.Tensor) -> _Model:
        return _Model(*(t.index_select(0, index) for t in (
            self.weights, self.means, self.covariances, self.chol, self.ok)))


# --------------------------------------------------------------------------------------------
# Validation (once, at the boundary)


def _is_int(value: object) -> bool:
    """Python and numpy integers, not bools (a bool k or n is a bug upstream)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_data(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise GMMInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3:
        raise GMMInputError(
            f"{name} must have shape (chains, samples, dims), got {x.ndim} dimension(s) "
            f"{tuple(x.shape)}; add a chain axis with x[None] or a dims axis with x[..., None]"
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise GMMInputError(f"{name} must be float32 or float64, got {x.dtype}; use .double()")
    if 0 in x.shape:
        raise GMMInputError(f"{name} is empty: shape {tuple(x.shape)}")


def _check_fit_args(x: torch.Tensor, k: int, tol: float, max_iter: int,
                    reg_covar: float) -> None:
    _check_data(x)
    n = x.shape[1]
    if not _is_int(k) or k < 1:
        raise GMMInputError(f"k (components) must be an int >= 1, got {k!r}")
    if k > n:
        raise GMMInputError(
            f"k={k} components need at least {k} samples per chain, got {n}; use fewer components"
        )
    if not _is_int(max_iter) or max_iter < 0:
        raise GMMInputError(f"max_iter must be an int >= 0, got {max_iter!r}")
    if not tol >= 0:
        raise GMMInputError(f"tol must be >= 0, got {tol!r}")
    if not reg_covar >= 0:
        raise GMMInputError(f"reg_covar must be >= 0, got {reg_covar!r}")


def _check_finite(centre: torch.Tensor) -> None:
    """NaN or infinity anywhere in a chain makes its mean non-finite: one cheap check."""
    if not bool(torch.isfinite(centre).all()):
        raise GMMInputError(
            "x contains NaN or infinite values (or values too large for its dtype); "
            "drop or impute them before EM"
        )


def _check_rng(rng: ChainRandom | None, chains: int, what: str) -> ChainRandom:
    if rng is None:
        raise GMMInputError(
            f"{what} draws random numbers: pass rng=ChainRandom(seeds) with one seed per chain"
        )
    if rng.chains != chains:
        raise GMMInputError(f"rng has {rng.chains} chain seed(s) but the data have {chains} chains")
    return rng


def _check_params_fit(params: GMMParams, x: torch.Tensor, k: int) -> GMMParams:
    c, _, d = x.shape
    if (params.chains, params.components, params.dims) != (c, k, d):
        raise GMMInputError(
            f"init parameters are for {params.chains} chains x {params.components} components "
            f"x {params.dims} dims, the fit is for {c} x {k} x {d}"
        )
    return params.to(device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------------------------
# E-step and M-step on centred, transposed data xt (A, d, N)


@dataclass(frozen=True)
class _Consts:
    """Small constants every iteration needs, made once per call rather than once per step."""

    eye: torch.Tensor  # (d, d)
    blocks: torch.Tensor  # (k, k*d) block of ones: sums each component's d squared residuals
    log_2pi_term: float  # d/2 log(2 pi)
    exp_floor: float  # exp() of anything lower is floored (see _log_norm_and_resp)

    @classmethod
    def make(cls, k: int, d: int, dtype: torch.dtype, device: torch.device) -> _Consts:
        eye = torch.eye(d, dtype=dtype, device=device)
        blocks = torch.eye(k, dtype=dtype, device=device).repeat_interleave(d, dim=1)
        return cls(eye, blocks, 0.5 * d * math.log(2 * math.pi),
                   math.log(torch.finfo(dtype).tiny) + 10.0)


def _cholesky(covariances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower Cholesky factors and, per chain, whether all components factorised.

    ``cholesky_ex`` does not raise: one degenerate chain must not abort the others.
    """
    chol, info = torch.linalg.cholesky_ex(covariances)
    return chol, (info == 0).all(dim=-1)


def _model(weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor) -> _Model:
    chol, ok = _cholesky(covariances)
    return _Model(weights, means, covariances, chol, ok)


def _weighted_log_prob(xt: torch.Tensor, model: _Model, consts: _Consts) -> torch.Tensor:
    """log w_k + log N(x_n | mu_k, S_k), shape (A, k, N).

    As scikit-learn: y = L^-1 x - L^-1 mu, log N = -(d log 2 pi + |y|^2) / 2 - log det L. Both the
    residuals of all components and the per-component sums of squares are single batched matmuls.
    """
    a, d, _ = xt.shape
    k = model.weights.shape[1]
    inv_chol = torch.linalg.solve_triangular(model.chol, consts.eye.expand_as(model.chol),
                                             upper=False)
    offset = (inv_chol @ model.means.unsqueeze(-1)).reshape(a, k * d, 1)
    y = torch.baddbmm(offset, inv_chol.reshape(a, k * d, d), xt, beta=-1).square_()
    log_det = model.chol.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)  # log det L, (A, k)
    const = model.weights.log() - log_det - consts.log_2pi_term
    return torch.baddbmm(const.unsqueeze(-1), consts.blocks.expand(a, k, k * d), y, alpha=-0.5)


def _log_norm_and_resp(weighted: torch.Tensor,
                       consts: _Consts) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x_n) (A, N) and responsibilities (A, k, N): a log-sum-exp over the k axis.

    Differences to the best component are floored at ``log(tiny) + 10`` before ``exp``: torch's
    CPU ``exp`` is 3-40x slower on inputs whose result underflows (subnormal or zero), and far-away
    points give such inputs on every iteration. The floor raises a responsibility that is anyway
    below 3e-34 (float32) / 5e-304 (float64) to that value: invisible in any sum it enters.
    """
    peak = weighted.amax(dim=1, keepdim=True)
    resp = (weighted - peak).clamp_(min=consts.exp_floor).exp_()
    total = resp.sum(dim=1, keepdim=True)
    resp.div_(total)
    return (peak + total.log()).squeeze(1), resp


def _m_step(xt: torch.Tensor, resp: torch.Tensor, reg_covar: float, consts: _Consts,
            n_for_weights: int | None = None) -> tuple[torch.Tensor, ...]:
    """Weights, means and covariances from responsibilities, as scikit-learn estimates them.

    ``n_for_weights``: scikit-learn's initialisation divides N_k by N, its M-step by sum N_k.
    """
    nk = resp.sum(dim=-1) + 10 * torch.finfo(resp.dtype).eps  # (A, k)
    means = torch.bmm(resp, xt.mT) / nk.unsqueeze(-1)  # (A, k, d), contraction over N
    centred = xt.unsqueeze(1) - means.unsqueeze(-1)  # (A, k, d, N)
    scatter = (centred * resp.unsqueeze(2)) @ centred.mT  # (A, k, d, d), contraction over N
    covariances = scatter / nk[..., None, None] + reg_covar * consts.eye
    total = nk.sum(dim=1, keepdim=True) if n_for_weights is None else n_for_weights
    return nk / total, means, covariances


# --------------------------------------------------------------------------------------------
# Initialisation


def _kmeanspp_centres(xt: torch.Tensor, k: int, rng: ChainRandom, generation: int) -> torch.Tensor:
    """Greedy k-means++ seeding (as scikit-learn's ``kmeans_plusplus``), centres (C, k, d).

    Each new centre is the best of ``2 + log k`` candidates drawn with probability proportional
    to the squared distance to the nearest centre so far; candidates are picked by comparing a
    uniform with the cumulative sum of those distances.
    """
    c, d, n = xt.shape
    trials = 2 + int(math.log(k))
    device = xt.device
    draws = rng.uniform(generation, "gmm/init/kmeans++", (1 + (k - 1) * trials,)).to(device)
    index = (draws[:, :1] * n).long().clamp_(max=n - 1)  # (C, 1): the first centre, uniformly
    centres = [xt.gather(2, index.unsqueeze(1).expand(c, d, 1))]  # each (C, d, 1)
    closest = (xt - centres[0]).square_().sum(dim=1)  # (C, N)
    for j in range(1, k):
        u = draws[:, 1 + (j - 1) * trials: 1 + j * trials].to(xt.dtype)  # (C, T)
        cumulative = closest.cumsum(dim=1)
        index = torch.searchsorted(cumulative, u * cumulative[:, -1:]).clamp_(max=n - 1)
        candidates = xt.gather(2, index.unsqueeze(1).expand(c, d, trials))  # (C, d, T)
        dist = (xt.unsqueeze(1) - candidates.mT.unsqueeze(-1)).square_().sum(dim=2)  # (C, T, N)
        dist = torch.minimum(dist, closest.unsqueeze(1))
        best = dist.sum(dim=2).argmin(dim=1)  # (C,)
        closest = dist[torch.arange(c, device=device), best]
        centres.append(candidates.gather(2, best.view(c, 1, 1).expand(c, d, 1)))
    return torch.cat(centres, dim=2).mT.contiguous()


def _nearest(xt: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Hard responsibilities (C, k, N): 1 for the nearest centre (argmin of |c|^2 - 2 c.x).

    Built from a comparison with the minimum: ``argmin`` over the k axis (not the innermost) is
    ~200x slower on CPU (torch 2.13). An exact tie (probability ~0) shares the point equally.
    """
    scores = torch.baddbmm(centres.square().sum(dim=-1, keepdim=True), centres, xt, alpha=-2.0)
    nearest = torch.empty_like(scores)  # written by eq directly: bool -> float is 5x slower
    torch.eq(scores, scores.amin(dim=1, keepdim=True), out=nearest)
    return nearest.div_(nearest.sum(dim=1, keepdim=True))


def _centroids(xt: torch.Tensor, resp: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Means of the hard clusters (C, k, d); an empty cluster keeps its centre."""
    counts = resp.sum(dim=-1, keepdim=True)  # (C, k, 1)
    sums = torch.bmm(resp, xt.mT)  # (C, k, d), contraction over N
    return torch.where(counts > 0, sums / torch.where(counts > 0, counts, 1.0), centres)


def _lloyd(xt: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Lloyd iterations, per chain until no assignment changes: hard responsibilities (C, k, N).

    As in EM, a chain that stops leaves the batch, so the batch does not wait for its slowest
    chain and a chain's result never depends on its neighbours.
    """
    c, k, n = xt.shape[0], centres.shape[1], xt.shape[2]
    out = torch.empty(c, k, n, dtype=xt.dtype, device=xt.device)
    ids = torch.arange(c, device=xt.device)
    resp = _nearest(xt, centres)
    for step in range(LLOYD_MAX_ITER + 1):
        if step == LLOYD_MAX_ITER:
            stable, new = torch.ones_like(ids, dtype=torch.bool), resp
        else:
            centres = _centroids(xt, resp, centres)
            new = _nearest(xt, centres)
            stable = (new == resp).flatten(1).all(dim=1)
        if step == LLOYD_MAX_ITER or bool(stable.any()):
            done, keep = stable.nonzero().squeeze(1), (~stable).nonzero().squeeze(1)
            out.index_copy_(0, ids[done], new.index_select(0, done))
            if keep.numel() == 0:
                return out
            ids, xt, centres = ids[keep], xt.index_select(0, keep), centres.index_select(0, keep)
            new = new.index_select(0, keep)
        resp = new
    return out


def _random_resp(xt: torch.Tensor, k: int, rng: ChainRandom, generation: int) -> torch.Tensor:
    """Uniform responsibilities normalised per sample (scikit-learn's ``init_params="random"``)."""
    c, _, n = xt.shape
    u = rng.uniform(generation, "gmm/init/random", (n, k)).to(xt.device, xt.dtype)
    u = u.mT.contiguous()  # (C, k, N)
    return u / u.sum(dim=1, keepdim=True)


def _initial_model(xt: torch.Tensor, k: int, init: str | GMMParams, centre: torch.Tensor,
                   rng: ChainRandom | None, generation: int, reg_covar: float,
                   consts: _Consts) -> _Model:
    c, _, n = xt.shape
    if isinstance(init, GMMParams):
        return _model(init.weights, init.means - centre, init.covariances)
    if init not in INITS:
        raise GMMInputError(f"init must be one of {INITS} or a GMMParams, got {init!r}")
    rng = _check_rng(rng, c, f"init={init!r}")
    if init == "kmeans++":
        resp = _lloyd(xt, _kmeanspp_centres(xt, k, rng, generation))
    else:
        resp = _random_resp(xt, k, rng, generation)
    return _model(*_m_step(xt, resp, reg_covar, consts, n_for_weights=n))


# --------------------------------------------------------------------------------------------
# The EM loop


@dataclass
class _Output:
    """Per-chain results, filled in as chains stop."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    lower_bound: torch.Tensor

    @classmethod
    def empty(cls, x: torch.Tensor, k: int) -> _Output:
        c, _, d = x.shape
        opts = {"dtype": x.dtype, "device": x.device}
        return cls(
            torch.empty(c, k, **opts), torch.empty(c, k, d, **opts),
            torch.empty(c, k, d, d, **opts),
            torch.zeros(c, dtype=torch.int64, device=x.device),
            torch.zeros(c, dtype=torch.bool, device=x.device),
            torch.full((c,), -math.inf, **opts),
        )

    def store(self, ids: torch.Tensor, model: _Model, n_iter: int, converged: torch.Tensor,
              lower_bound: torch.Tensor) -> None:
        self.weights.index_copy_(0, ids, model.weights)
        self.means.index_copy_(0, ids, model.means)
        self.covariances.index_copy_(0, ids, model.covariances)
        self.n_iter.index_fill_(0, ids, n_iter)
        self.converged.index_copy_(0, ids, converged)
        self.lower_bound.index_copy_(0, ids, lower_bound)


def _em(xt: torch.Tensor, model: _Model, out: _Output, tol: float, max_iter: int,
        reg_covar: float, consts: _Consts) -> None:
    """Run EM on all chains; a chain leaves the batch at the iteration where it stops.

    All chains still in the batch have run the same number of iterations, so ``n_iter`` is a
    Python int; the only host synchronisation per iteration is "did any chain stop?". A chain
    stops when its lower bound moved by less than ``tol`` (scikit-learn's rule), at ``max_iter``,
    or when a covariance is not positive definite (scikit-learn raises; here the other chains go
    on and this one reports a NaN lower bound). Chains whose initial covariances already fail
    never start.
    """
    ids = torch.arange(xt.shape[0], device=xt.device)
    lower_bound = torch.where(model.ok, -math.inf, math.nan).to(out.lower_bound.dtype)
    converged = torch.zeros_like(model.ok)
    stop = ~model.ok
    for n_iter in range(max_iter + 1):
        if n_iter == max_iter:
            stop = torch.ones_like(stop)
        if n_iter == max_iter or bool(stop.any()):
            done, keep = stop.nonzero().squeeze(1), (~stop).nonzero().squeeze(1)
            out.store(ids[done], model.select(done), n_iter, converged[done], lower_bound[done])
            if keep.numel() == 0:
                return
            ids, xt, model = ids[keep], xt.index_select(0, keep), model.select(keep)
            lower_bound = lower_bound.index_select(0, keep)
        log_norm, resp = _log_norm_and_resp(_weighted_log_prob(xt, model, consts), consts)
        previous, lower_bound = lower_bound, log_norm.mean(dim=1)
        model = _model(*_m_step(xt, resp, reg_covar, consts))
        converged = ((lower_bound - previous).abs() < tol) & model.ok
        stop = converged | ~model.ok
        lower_bound = torch.where(model.ok, lower_bound, math.nan)


def _warn_unconverged(fit: GMMFit, max_iter: int) -> None:
    """One warning per fit (not per chain): the loop may run thousands of generations."""
    failed = int(fit.lower_bound.isnan().sum())
    slow = int((~fit.converged).sum()) - failed
    if failed:
        warnings.warn(
            f"EM stopped early on {failed} of {fit.n_iter.numel()} chains: a component's "
            "covariance is not positive definite (a component collapsed on too few points); "
            "increase reg_covar, use fewer components, or pass float64 data",
            TailguardWarning, stacklevel=3,
        )
    if slow and max_iter > 0:
        warnings.warn(
            f"EM did not converge within max_iter={max_iter} on {slow} of "
            f"{fit.n_iter.numel()} chains; increase max_iter or tol",
            TailguardWarning, stacklevel=3,
        )


def fit_gmm(x: torch.Tensor, k: int, *, init: str | GMMParams = "kmeans++",
            rng: ChainRandom | None = None, generation: int = 0, tol: float = 1e-5,
            max_iter: int = 2000, reg_covar: float = 1e-6) -> GMMFit:
    """Fit a k-component full-covariance Gaussian mixture to every chain by EM.

    Parameters
    ----------
    x : torch.Tensor
        (C, N, d) samples, float32 or float64, on any device; results have its dtype and device.
    k : int
        Components per mixture (``k <= N``).
    init : {"kmeans++", "random"} or GMMParams, default "kmeans++"
        "kmeans++": greedy k-means++ seeding, Lloyd iterations to a fixed point, then the
        parameters of the hard clusters (scikit-learn's default ``init_params="kmeans"`` does the
        same with its own random numbers). "random": uniform random responsibilities (as
        scikit-learn's ``init_params="random"``). GMMParams: start from these parameters (the
        first E-step uses them, as scikit-learn's ``weights_init``/``means_init``/
        ``precisions_init``).
    rng : ChainRandom, optional
        One seed per chain; needed by the random initialisations.
    generation : int, default 0
        Keys the random numbers of the initialisation, so each generation draws afresh.
    tol : float, default 1e-5
        A chain stops when its lower bound (mean log-likelihood per sample) changes by less.
    max_iter : int, default 2000
        EM iterations at most (0: return the initial parameters).
    reg_covar : float, default 1e-6
        Added to the covariances' diagonals so that they stay positive definite.

    Returns
    -------
    GMMFit
        Parameters, iterations, convergence flags and lower bounds per chain. Chains that did
        not converge, or whose covariance lost positive definiteness (lower bound NaN), draw one
        :class:`~provenance.errors.TailguardWarning` per call.

    Examples
    --------
    >>> import torch
    >>> x = torch.cat([torch.randn(1, 200, 1) - 5, torch.randn(1, 300, 1) + 5], dim=1).double()
    >>> fit = fit_gmm(x, 2, rng=ChainRandom([0]))
    >>> sorted(round(w, 1) for w in fit.params.weights[0].tolist())
    [0.4, 0.6]
    """
    _check_fit_args(x, k, tol, max_iter, reg_covar)
    k, max_iter = int(k), int(max_iter)
    if isinstance(init, GMMParams):
        init = _check_params_fit(init, x, k)
    with torch.no_grad():
        centre = x.mean(dim=1, keepdim=True)  # (C, 1, d)
        _check_finite(centre)
        xt = (x - centre).mT.contiguous()  # (C, d, N): the sample axis innermost
        consts = _Consts.make(k, x.shape[2], x.dtype, x.device)
        model = _initial_model(xt, k, init, centre, rng, generation, reg_covar, consts)
        out = _Output.empty(x, k)
        _em(xt, model, out, tol, max_iter, reg_covar, consts)
    params = GMMParams(out.weights, out.means + centre, out.covariances)
    fit = GMMFit(params, out.n_iter, out.converged, out.lower_bound)
    _warn_unconverged(fit, max_iter)
    return fit


# --------------------------------------------------------------------------------------------
# Sampling and density


def _check_params(params: GMMParams) -> None:
    if not isinstance(params, GMMParams):
        raise GMMInputError(f"params must be a GMMParams, got {type(params).__name__}")
    if params.means.dtype not in (torch.float32, torch.float64):
        raise GMMInputError(f"params must be float32 or float64, got {params.means.dtype}")


def _factor(covariances: torch.Tensor) -> torch.Tensor:
    chol, ok = _cholesky(covariances)
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(1).tolist()
        raise GMMInputError(f"covariances of chain(s) {bad[:10]} are not positive definite")
    return chol


def sample_gmm(params: GMMParams, n: int, rng: ChainRandom, generation: int,
               stream: str = "sample") -> torch.Tensor:
    """Draw ``n`` samples per chain, (C, n, d), in the parameters' dtype and on their device.

    The component of each sample comes from comparing a uniform (stream ``{stream}/component``)
    with the cumulative weights; the point is ``mean + L z`` with ``L`` the Cholesky factor of the
    component's covariance and ``z`` standard normals (stream ``{stream}/normal``). Both are keyed
    by (chain seed, generation), so a chain draws the same points whatever runs beside it.
    """
    _check_params(params)
    if not _is_int(n) or n < 1:
        raise GMMInputError(f"n (samples per chain) must be an int >= 1, got {n!r}")
    n = int(n)
    c, k, d = params.means.shape
    rng = _check_rng(rng, c, "sample_gmm")
    device, dtype = params.means.device, params.means.dtype
    with torch.no_grad():
        cumulative = params.weights.to(torch.float64).cumsum(dim=1)
        cumulative = cumulative / cumulative[:, -1:]  # exactly 1 at the end
        u = rng.uniform(generation, f"{stream}/component", (n,)).to(device)  # (C, n)
        # the component is the number of cumulative weights the uniform exceeds: (C, n)
        component = (u.unsqueeze(1) > cumulative[:, :-1, None]).sum(dim=1)
        z = rng.normal(generation, f"{stream}/normal", (d, n), dtype=dtype).to(device)
        chol = _factor(params.covariances)
        # every component's mean + L z in one matmul, sample axis innermost: (C, k*d, n)
        points = torch.baddbmm(params.means.reshape(c, k * d, 1), chol.reshape(c, k * d, d), z)
        pick = component.view(c, 1, 1, n).expand(c, 1, d, n)
        return points.view(c, k, d, n).gather(1, pick).squeeze(1).mT.contiguous()


def gmm_log_density(params: GMMParams, x: torch.Tensor) -> torch.Tensor:
    """log p(x) under each chain's mixture, (C, M), for x (C, M, d) or (M, d) shared by all.

    Computed in the parameters' dtype, as the E-step does (whitened residuals, log-sum-exp).
    """
    _check_params(params)
    c, _, d = params.means.shape
    if isinstance(x, torch.Tensor) and x.ndim == 2:
        x = x.unsqueeze(0).expand(c, -1, -1)
    _check_data(x)
    if x.shape[0] != c or x.shape[2] != d:
        raise GMMInputError(
            f"x must be (chains={c}, points, dims={d}) or (points, {d}), got {tuple(x.shape)}"
        )
    dtype, device = params.means.dtype, params.means.device
    with torch.no_grad():
        xt = x.to(device=device, dtype=dtype).mT.contiguous()
        model = _Model(params.weights, params.means, params.covariances,
                       _factor(params.covariances), torch.ones(c, dtype=torch.bool, device=device))
        consts = _Consts.make(params.components, d, dtype, device)
        log_norm, _ = _log_norm_and_resp(_weighted_log_prob(xt, model, consts), consts)
    return log_norm
