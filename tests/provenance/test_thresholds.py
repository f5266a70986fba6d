"""Thresholds read off known-human scores, and what they promise on new human text.

Human scores are simulated from a unit normal, so the true FPR of any threshold is known (the
normal tail above it) and each promise can be checked over many calibration draws.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import norm

from provenance.errors import ConfigError, TailguardWarning
from provenance.evaluate import tpr_at_fpr
from provenance.thresholds import (
    calibrate_threshold,
    flagged_allowed,
    guarantee_text,
    texts_needed,
    worst_group_threshold,
)


def test_calibrated_threshold_is_the_smallest_meeting_the_target() -> None:
    rng = np.random.default_rng(3)
    for n, target in [(50, 0.1), (200, 0.01), (1000, 0.005), (777, 0.03)]:
        humans = np.round(rng.normal(size=n), 2)  # rounding makes ties
        for guarantee in ("these", "expected", 0.9):
            allowed = flagged_allowed(n, target, guarantee)
            if allowed is None:  # 200 texts cannot promise 1% with 90% confidence
                assert (n, guarantee) == (200, 0.9)
                continue
            threshold = calibrate_threshold(humans, target, guarantee=guarantee)
            assert np.sum(humans >= threshold) <= allowed
            below = humans[humans < threshold]
            assert np.sum(humans >= below.max()) > allowed


def test_each_guarantee_holds_on_new_human_text() -> None:
    """The promise is about new text: over 4,000 calibration draws of 250 normal human scores,
    the true FPR of the threshold (the normal tail above it) is at most the target on average
    ("expected"), exceeds it in at most 10% of draws (confidence 0.9), while the in-sample
    reading ("these") overshoots by half."""
    rng = np.random.default_rng(11)
    target, draws = 0.01, rng.normal(size=(4000, 250))
    true_fpr = {g: norm.sf([calibrate_threshold(d, target, guarantee=g) for d in draws])
                for g in ("these", "expected", 0.9)}
    error = true_fpr["expected"].std() / np.sqrt(len(draws))
    assert true_fpr["expected"].mean() <= target + 3 * error
    assert true_fpr["these"].mean() > 1.1 * target
    assert np.mean(true_fpr[0.9] > target) <= 0.1 + 3 * np.sqrt(0.09 / len(draws))
    assert np.mean(true_fpr["expected"] > target) > 0.2  # on average is not "with confidence"


def test_calibrated_threshold_recovers_the_normal_quantile() -> None:
    humans = np.random.default_rng(4).normal(size=200_000)
    threshold = calibrate_threshold(humans, 0.001)
    assert threshold == pytest.approx(norm.ppf(0.999), abs=0.03)


def test_a_target_below_the_resolution_limit_warns() -> None:
    humans = np.random.default_rng(5).normal(size=200)
    with pytest.warns(TailguardWarning, match=r"200 human scores cannot keep an FPR of 0.001 "
                                              r"\(expected .* at least 999 human"):
        threshold = calibrate_threshold(humans, 0.001)
    assert threshold > humans.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate_threshold(humans, 0.005)
    with pytest.warns(TailguardWarning, match="on these human scores"):
        point = tpr_at_fpr([0] * 200 + [1], list(humans) + [5.0], fpr=0.001)
    assert not point.resolved


def test_worst_group_threshold_names_the_group_too_small_for_the_target() -> None:
    rng = np.random.default_rng(0)
    human = rng.normal(0, 1, 1050)
    groups = ["big"] * 1000 + ["small"] * 50
    with pytest.warns(TailguardWarning, match=r"in 'small' \(50\)") as caught:
        threshold = worst_group_threshold(human, groups, 0.01)
    assert len(caught) == 1 and "'big'" not in str(caught[0].message)
    assert threshold > human[1000:].max()  # above every score of the small group
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worst_group_threshold(human, groups, 0.05)  # 50 texts resolve 5%


def test_small_groups_are_held_together_not_each_above_all_its_scores() -> None:
    """19 groups of 40 human texts cannot each show 1%: held alone, every one puts the
    threshold above all its scores (a detector that flags nothing); held together they can."""
    rng = np.random.default_rng(1)
    human = rng.normal(0, 1, 1000 + 19 * 40)
    groups = ["big"] * 1000 + [f"d{i:02d}" for i in range(19) for _ in range(40)]
    with pytest.warns(TailguardWarning, match=r"have fewer than 100 human texts") as said:
        together = worst_group_threshold(human, groups, 0.01)
    assert "'big'" not in str(said[0].message)  # a large group is never pooled with them
    small = human[1000:]
    assert together == pytest.approx(max(calibrate_threshold(small, 0.01),
                                         calibrate_threshold(human[:1000], 0.01)))
    assert np.mean(small >= together) <= 0.01
    with pytest.warns(TailguardWarning, match="too few human texts to keep"):
        alone = worst_group_threshold(human, groups, 0.01, min_group_size=1)
    assert alone > small.max() > together
    with pytest.raises(ConfigError, match="min_group_size must be"):
        worst_group_threshold(human, groups, 0.01, min_group_size=0)


def test_a_promise_that_is_not_one_is_refused_in_one_line() -> None:
    for bad in ("always", 1.0, 0.0, True):
        with pytest.raises(ConfigError, match="guarantee must be 'expected', 'these' or a "
                                               "confidence in"):
            calibrate_threshold([0.1, 0.2], 0.1, guarantee=bad)
    assert texts_needed(0.05, 0.95) == 59 and flagged_allowed(58, 0.05, 0.95) is None
    assert guarantee_text("these") == "on these human scores"
