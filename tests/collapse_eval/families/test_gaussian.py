"""The whole loop on the 1-D Gaussian, checked against closed forms (Shumailov et al., Thm 3.1).

Each check runs many chains in one batch so that it holds within 4 standard errors. Generation g
is the (g+1)-th fit (generation 0 fits the original data), so "n fits" is generation n - 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.special import digamma, gammaln, polygamma

from collapse_eval.engine import run_collapse
from collapse_eval.loop import CollapseConfig

M = 100
CHAINS = 1000


def _final(tmp_path: Path, policy: str, fits: int, chains: int = CHAINS, **options) -> pl.DataFrame:
    family_options = options.pop("family_options", {})
    config = CollapseConfig("gaussian", (policy,), generations=fits - 1, samples=M,
                            seeds=tuple(range(chains)), family_options=family_options, **options)
    run = run_collapse(config, tmp_path / "run", progress=False, plots=False)
    last = run.results.filter(pl.col("generation") == fits - 1)
    return last.pivot(on="metric", index="seed", values="value")


def _within(values: np.ndarray, expected: float, se: float | None = None) -> None:
    se = se if se is not None else values.std(ddof=1) / math.sqrt(values.size)
    assert abs(values.mean() - expected) < 4 * se, (values.mean(), expected, se)


def test_replace_unbiased_matches_the_theorem(tmp_path: Path) -> None:
    n = 100
    final = _final(tmp_path, "replace", fits=n)
    log_s2 = final["log_variance"].to_numpy()
    mean_ln = n * (digamma((M - 1) / 2) + math.log(2 / (M - 1)))
    var_ln = n * polygamma(1, (M - 1) / 2)
    assert mean_ln == pytest.approx(-1.0135, abs=1e-4) and var_ln == pytest.approx(2.04, abs=0.01)
    _within(log_s2, mean_ln, math.sqrt(var_ln / CHAINS))
    assert abs(log_s2.var(ddof=1) - var_ln) < 4 * var_ln * math.sqrt(2 / (CHAINS - 1))
    median_se = 1.2533 * math.sqrt(var_ln / CHAINS)
    assert abs(math.log(np.median(final["variance"].to_numpy())) - mean_ln) < 4 * median_se
    assert math.exp(mean_ln) == pytest.approx(0.363, abs=1e-3)
    # The mean random-walks: E(mu_n - mu_0)^2 = n / M.
    _within(final["mean_sq_error"].to_numpy(), n / M)
    # E W2^2 = n/M + 2 (1 - c4^n) with c4 the bias factor of the sample standard deviation.
    c4 = math.sqrt(2 / (M - 1)) * math.exp(gammaln(M / 2) - gammaln((M - 1) / 2))
    assert c4 == pytest.approx(0.99748, abs=1e-5)
    expected_w2 = n / M + 2 * (1 - c4**n)
    assert expected_w2 == pytest.approx(1.446, abs=1e-3)
    _within(final["w2_squared"].to_numpy(), expected_w2)


def test_replace_mle_shrinks_the_variance_in_expectation(tmp_path: Path) -> None:
    n = 100
    final = _final(tmp_path, "replace", fits=n, family_options={"ddof": 0})
    s2 = final["variance"].to_numpy()
    assert (1 - 1 / M) ** n == pytest.approx(0.366, abs=1e-3)
    _within(s2, (1 - 1 / M) ** n)  # n = M: the mean of s2 is still safe to test
    mean_ln = n * (digamma((M - 1) / 2) + math.log(2 / M))
    assert mean_ln == pytest.approx(-2 * n / M, rel=0.02)
    _within(final["log_variance"].to_numpy(), mean_ln,
            math.sqrt(n * polygamma(1, (M - 1) / 2) / CHAINS))


def test_accumulating_all_data_stops_the_drift(tmp_path: Path) -> None:
    n = 50
    final = _final(tmp_path, "accumulate", fits=n, chains=800)
    # mu_g = mu_{g-1} + noise / (g + 1): Var(mu_n - mu_0) = (1/M) sum_{i=1..n} 1/i^2.
    expected = sum(1 / i**2 for i in range(1, n + 1)) / M
    assert expected == pytest.approx(0.01625, abs=1e-5)
    _within(final["mean_sq_error"].to_numpy(), expected)
    median_s2 = float(np.median(final["variance"].to_numpy()))
    assert 0.95 < median_s2 < 1.02  # about 0.98, not collapsing
    assert (final["training_size"].to_numpy() == M * n).all()  # original + 49 generations


def test_a_fresh_real_fraction_bounds_the_drift(tmp_path: Path) -> None:
    # retain:g with a pool 20x larger than a generation draws (nearly) fresh real data each time:
    # stationary Var(mu) = 1 / (M g (2 - g)).
    g = 0.2
    final = _final(tmp_path, f"retain:{g}", fits=40, chains=800, original_size=20 * M)
    _within(final["mean_sq_error"].to_numpy(), 1 / (M * g * (2 - g)))
    assert (final["synthetic_share"].to_numpy() == pytest.approx(1 - g))
