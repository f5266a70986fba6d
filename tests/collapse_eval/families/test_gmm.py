"""The GMM family inside the loop: fits the truth at generation 0, drifts under replace."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from collapse_eval.engine import run_collapse
from collapse_eval.loop import CollapseConfig
from collapse_eval.metrics import METRICS


@pytest.fixture(scope="module")
def gmm_results(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    config = CollapseConfig("gmm", ("replace", "filter:oracle"), generations=25, samples=100,
                            seeds=tuple(range(12)), heldout=1000)
    return run_collapse(config, tmp_path_factory.mktemp("gmm"), progress=False,
                        plots=False).results


def _values(results: pl.DataFrame, policy: str, metric: str, generation: int) -> np.ndarray:
    return results.filter((pl.col("policy") == policy) & (pl.col("metric") == metric)
                          & (pl.col("generation") == generation))["value"].to_numpy()


def test_generation_zero_recovers_the_true_mixture(gmm_results: pl.DataFrame) -> None:
    assert set(gmm_results["metric"].unique()) <= set(METRICS)
    std = _values(gmm_results, "replace", "component_std", 0)
    weight = _values(gmm_results, "replace", "minority_weight", 0)
    assert abs(std.mean() - 1.0) < 0.1 and abs(weight.mean() - 0.3) < 0.05
    # Held-out log-likelihood near the truth's: entropy of the two well-separated unit modes.
    entropy = math.log(2 * math.pi * math.e) - (0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert abs(_values(gmm_results, "filter:oracle", "heldout_loglik", 0).mean() + entropy) < 0.1


def test_replace_drifts_away_and_filtering_with_the_truth_does_not(
    gmm_results: pl.DataFrame,
) -> None:
    last = 25
    drift = _values(gmm_results, "replace", "log_l2_distance", last)
    held = _values(gmm_results, "filter:oracle", "log_l2_distance", last)
    assert np.median(drift) > np.median(held) + 1.0
    assert (_values(gmm_results, "replace", "heldout_loglik", last).mean()
            < _values(gmm_results, "filter:oracle", "heldout_loglik", last).mean())
    oracle_std = _values(gmm_results, "filter:oracle", "component_std", last)
    assert abs(oracle_std.mean() - 1.0) < 0.15
