"""Detection metrics and prevalence estimation checked against known truths.

Score distributions are simulated with a known answer: two unit normals ``d`` apart have AUROC
``Phi(d / sqrt(2))`` and a threshold for FPR ``a`` at ``Phi^-1(1 - a)``; a simulated tagger with
known TPR and FPR flags a corpus of known prevalence.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm

from provenance.errors import ConfigError, InputError, TailguardWarning
from provenance.evaluate import (
    OperatingPoint,
    calibrate_threshold,
    confusion,
    estimate_prevalence,
    evaluate_detector,
    group_report,
    roc_auc,
    rogan_gladen,
    tpr_at_fpr,
    worst_group_threshold,
)
from provenance.schema import Label


def two_normals(d: float, n_pos: int, n_neg: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)])
    labels = np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])
    return labels, scores


def auroc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return math.sqrt(var)


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0])
def test_auroc_of_two_normals_matches_theory(d: float) -> None:
    labels, scores = two_normals(d, 3000, 3000, seed=int(d * 10))
    expected = norm.cdf(d / math.sqrt(2))
    se = auroc_standard_error(expected, 3000, 3000)
    assert abs(roc_auc(labels, scores) - expected) < 4 * se


def test_auroc_is_the_probability_a_synthetic_text_outscores_a_human_one() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(labels, scores) == pytest.approx(pairs)


def test_labels_accept_bools_numbers_and_names() -> None:
    scores = [0.1, 0.9, 0.4, 0.7]
    expected = roc_auc([0, 1, 0, 1], scores)
    assert roc_auc([False, True, False, True], scores) == expected
    assert roc_auc(["human", "machine", "human", "synthetic"], scores) == expected
    assert roc_auc([Label.HUMAN, Label.SYNTHETIC, "Human", "SYNTHETIC"], scores) == expected


def test_tpr_at_fpr_on_a_hand_checked_example() -> None:
    # humans 1..10; 2 of 10 may be flagged at 20% -> threshold just above 8.
    humans = list(range(1, 11))
    synthetic = [2, 7, 8.5, 9, 12]
    labels = [0] * 10 + [1] * 5
    point = tpr_at_fpr(labels, humans + synthetic, fpr=0.2)
    assert isinstance(point, OperatingPoint)
    assert 8 < point.threshold < 8 + 1e-9
    assert point.tpr == pytest.approx(3 / 5) and point.fpr == pytest.approx(0.2)
    assert point.resolved and point.n_negatives == 10


def test_ties_at_the_threshold_stay_unflagged() -> None:
    # Allowing 2 of 5 would need to split the tie at 3: both stay below, FPR 1/5 <= 2/5.
    point = tpr_at_fpr([0, 0, 0, 0, 0, 1], [1, 2, 3, 3, 4, 3.5], fpr=0.4)
    assert point.fpr == pytest.approx(0.2) and point.tpr == 1.0
    assert 3 < point.threshold < 3.5


def test_confusion_counts() -> None:
    assert confusion([1, 1, 1, 0, 0], [True, False, True, True, False]) == {
        "tp": 2, "fp": 1, "tn": 1, "fn": 1,
    }


def test_evaluation_report_overall_and_per_group() -> None:
    rng = np.random.default_rng(7)
    n_human, n_each = 4000, 2000
    human = rng.normal(0, 1, n_human)
    easy = rng.normal(3, 1, n_each)
    hard = rng.normal(0.5, 1, n_each)
    scores = np.concatenate([human, easy, hard])
    labels = [0] * n_human + [1] * (2 * n_each)
    generator = ["human"] * n_human + ["easy-model"] * n_each + ["hard-model"] * n_each
    domain = (["news", "forum"] * (n_human // 2)) + (["news"] * (2 * n_each))
    threshold = norm.ppf(0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4000 humans resolve 0.1%: no warning
        report = evaluate_detector(
            labels, scores, threshold, groups={"generator": generator, "domain": domain}
        )
    assert report.n_human == n_human and report.n_synthetic == 2 * n_each
    assert report.fpr == pytest.approx(0.01, abs=0.005)
    assert report.tpr_at_1pct_fpr.fpr <= 0.01 and report.tpr_at_01pct_fpr.fpr <= 0.001
    assert report.confusion["fp"] + report.confusion["tn"] == n_human
    by_gen = report.groups["generator"]
    for name, d in (("easy-model", 3.0), ("hard-model", 0.5)):
        expected = norm.cdf(d / math.sqrt(2))
        se = auroc_standard_error(expected, n_each, n_human)
        assert abs(by_gen[name]["auroc"] - expected) < 4 * se
        assert by_gen[name]["tpr"] == pytest.approx(norm.sf(threshold - d), abs=0.03)
        assert by_gen[name]["n"] == n_each and by_gen[name]["fpr"] is None
    assert by_gen["human"]["auroc"] is None and by_gen["human"]["tpr"] is None
    assert set(report.groups["domain"]) == {"forum", "news"}
    assert report.groups["domain"]["forum"]["n_synthetic"] == 0
    record = json.loads(json.dumps(report.as_dict()))
    assert record["tpr_at_01pct_fpr"]["resolved"] is True


def test_evaluation_warns_once_when_humans_are_too_few() -> None:
    labels, scores = two_normals(2.0, 300, 300)
    with pytest.warns(TailguardWarning) as caught:
        report = evaluate_detector(labels, scores, threshold=2.0)
    assert len(caught) == 1 and "300 human documents" in str(caught[0].message)
    assert not report.tpr_at_01pct_fpr.resolved


def test_bad_inputs_are_input_errors() -> None:
    with pytest.raises(InputError, match="neither human nor synthetic"):
        roc_auc(["human", "maybe"], [0.1, 0.2])
    with pytest.raises(InputError, match="label 2 is neither"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="finite"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(InputError, match="2 labels but 3 scores"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="both synthetic and human"):
        tpr_at_fpr([1, 1], [0.1, 0.2], 0.01)
    with pytest.raises(ConfigError, match="target_fpr must be in"):
        calibrate_threshold([0.1], 0)
    with pytest.raises(InputError, match="group 'domain' has 1 values for 2"):
        evaluate_detector([0, 1], [0.1, 0.9], 0.5, groups={"domain": ["a"]})


# --------------------------------------------------------------------------- fairness


def shifted_groups(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two groups of 4000 human and 2000 synthetic texts; the detector scores the "non-native"
    group's human texts one unit higher (a known bias), so at a threshold ``t`` the groups'
    FPRs are ``sf(t)`` and ``sf(t - 1)``, and a pooled threshold for ``a`` has their mean at
    ``a``."""
    rng = np.random.default_rng(seed)
    native_h, other_h = rng.normal(0, 1, 4000), rng.normal(1, 1, 4000)
    native_m, other_m = rng.normal(2.5, 1, 2000), rng.normal(3, 1, 2000)
    scores = np.concatenate([native_h, other_h, native_m, other_m])
    labels = np.repeat([0, 0, 1, 1], [4000, 4000, 2000, 2000])
    groups = np.repeat(["native", "non-native", "native", "non-native"], [4000, 4000, 2000, 2000])
    return labels, scores, groups


def test_a_pooled_threshold_hides_the_worst_group_and_the_worst_group_threshold_holds_it() -> None:
    labels, scores, groups = shifted_groups()
    human = labels == 0
    target = 0.01
    pooled = calibrate_threshold(scores[human], target)
    rows = {r["group"]: r for r in group_report(labels, scores, groups, pooled, n_boot=0)}
    assert rows["native"]["fpr"] + rows["non-native"]["fpr"] <= 2 * target  # the average holds
    # ... but nearly all false positives are non-native: in theory sf(t - 1) against sf(t)
    t = pooled
    assert rows["non-native"]["fpr"] == pytest.approx(norm.sf(t - 1), abs=0.006)
    assert rows["non-native"]["fpr"] > 1.5 * target  # nearly twice the promise ...
    assert rows["native"]["fpr"] < target / 5  # ... and ten times the other group's
    assert rows["non-native"]["fp"] == round(rows["non-native"]["fpr"] * 4000)

    fair = worst_group_threshold(scores[human], groups[human], target)
    assert fair == pytest.approx(1 + norm.ppf(1 - target), abs=0.15)  # the shifted quantile
    rows = {r["group"]: r for r in group_report(labels, scores, groups, fair, n_boot=0)}
    assert rows["native"]["fpr"] <= target and rows["non-native"]["fpr"] <= target
    assert rows["non-native"]["fpr"] == pytest.approx(target, abs=0.003)  # it sets the threshold
    assert fair == max(calibrate_threshold(scores[human & (groups == g)], target)
                       for g in ("native", "non-native"))
    assert rows["native"]["tpr"] < rows["non-native"]["tpr"]  # the price: a lower TPR


def test_group_auroc_interval_covers_the_point_is_seeded_and_is_as_wide_as_theory() -> None:
    labels, scores, groups = shifted_groups()
    first = group_report(labels, scores, groups, 2.0, seed=3)
    assert first == group_report(labels, scores, groups, 2.0, seed=3)  # reproducible
    other = group_report(labels, scores, groups, 2.0, seed=4)
    assert [r["auroc"] for r in other] == [r["auroc"] for r in first]
    assert [r["auroc_low"] for r in other] != [r["auroc_low"] for r in first]
    for row, shift in zip(first, (2.5, 2.0), strict=True):  # within-group: d = 2.5 and 3 - 1
        group = groups == row["group"]
        assert row["auroc_humans"] == "group"
        assert row["auroc"] == pytest.approx(roc_auc(labels[group], scores[group]), abs=1e-12)
        assert row["auroc_low"] < row["auroc"] < row["auroc_high"]
        expected = norm.cdf(shift / math.sqrt(2))
        se = auroc_standard_error(expected, 2000, 4000)
        assert abs(row["auroc"] - expected) < 4 * se
        width = row["auroc_high"] - row["auroc_low"]
        assert width == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_a_group_with_one_class_gets_rates_but_no_within_group_auroc() -> None:
    labels = [0, 0, 0, 1, 1, 0, 1, 1]
    scores = [0.1, 0.6, 0.3, 0.9, 0.4, 0.2, 0.8, 0.7]
    groups = ["forum", "forum", "forum", "gpt", "gpt", "news", "news", "news"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = {r["group"]: r for r in group_report(labels, scores, groups, threshold=0.5)}
    forum = rows["forum"]  # humans only: FPR, no AUROC
    assert (forum["n"], forum["n_human"], forum["n_synthetic"]) == (3, 3, 0)
    assert (forum["fp"], forum["fpr"]) == (1, pytest.approx(1 / 3))
    assert forum["tpr"] is None and forum["tp"] == 0
    assert forum["auroc"] is forum["auroc_low"] is forum["auroc_high"] is forum["auroc_humans"]
    assert forum["auroc"] is None
    gpt = rows["gpt"]  # synthetic only: TPR, AUROC against every human document
    assert (gpt["tp"], gpt["tpr"], gpt["fpr"]) == (1, 0.5, None)
    assert gpt["auroc_humans"] == "all"
    assert gpt["auroc"] == roc_auc([1, 1, 0, 0, 0, 0], [0.9, 0.4, 0.1, 0.6, 0.3, 0.2])
    assert gpt["auroc_low"] <= gpt["auroc"] <= gpt["auroc_high"]
    assert rows["news"]["auroc"] == 1.0 and rows["news"]["auroc_humans"] == "group"
    only_humans = group_report([0, 0], [0.1, 0.7], ["a", "b"], threshold=0.5)
    assert [(r["auroc"], r["fpr"]) for r in only_humans] == [(None, 0.0), (None, 1.0)]
    json.dumps(rows)  # plain numbers and None: the report can be written as JSON


def test_evaluate_detector_groups_carry_the_intervals() -> None:
    labels, scores, groups = shifted_groups()
    report = evaluate_detector(labels, scores, 2.0, groups={"writer": groups}, seed=1)
    rows = report.groups["writer"]
    assert rows == {r["group"]: r for r in group_report(labels, scores, groups, 2.0, seed=1)}
    assert rows["native"]["auroc_low"] < rows["native"]["auroc"] < rows["native"]["auroc_high"]


def test_fairness_input_errors() -> None:
    with pytest.raises(InputError, match="group 'groups' has 1 values for 2"):
        group_report([0, 1], [0.1, 0.9], ["a"], 0.5)
    with pytest.raises(ConfigError, match="n_boot must be"):
        group_report([0, 1], [0.1, 0.9], ["a", "a"], 0.5, n_boot=-1)
    with pytest.raises(ConfigError, match="threshold must be a finite"):
        group_report([0, 1], [0.1, 0.9], ["a", "a"], float("nan"))
    with pytest.raises(ConfigError, match="target_fpr must be in"):
        worst_group_threshold([0.1], ["a"], 1.0)
    with pytest.raises(InputError, match="at least one known-human"):
        worst_group_threshold([], [], 0.1)


# --------------------------------------------------------------------------- prevalence


def simulate(seed: int, prevalence: float, n_docs: int = 100_000, tpr: float = 0.8,
             fpr: float = 0.05, n_cal: int = 1000) -> tuple[int, float, float]:
    """A tagger with known rates on a corpus of known prevalence, and its calibration."""
    rng = np.random.default_rng(seed)
    synthetic = rng.binomial(n_docs, prevalence)
    flagged = rng.binomial(synthetic, tpr) + rng.binomial(n_docs - synthetic, fpr)
    tpr_hat = rng.binomial(n_cal, tpr) / n_cal
    fpr_hat = rng.binomial(n_cal, fpr) / n_cal
    return int(flagged), tpr_hat, fpr_hat


def test_rogan_gladen_recovers_a_known_prevalence_from_a_simulated_tagger() -> None:
    rng = np.random.default_rng(11)
    truth = rng.random(100_000) < 0.3
    flagged = np.where(truth, rng.random(truth.size) < 0.8, rng.random(truth.size) < 0.05)
    observed = flagged.mean()
    assert abs(observed - 0.3) > 0.02  # the raw flag rate is biased ...
    assert rogan_gladen(observed, 0.8, 0.05) == pytest.approx(0.3, abs=0.006)  # ... corrected
    est = estimate_prevalence(int(flagged.sum()), truth.size, 0.8, 0.05, 1000, 1000)
    assert est.low <= truth.mean() <= est.high
    assert est.observed_rate == observed and est.method == "delta"


@pytest.mark.parametrize("method", ["delta", "bootstrap"])
@pytest.mark.parametrize("prevalence", [0.3, 0.02])
def test_interval_coverage_is_close_to_95_percent(method: str, prevalence: float) -> None:
    hits = naive_hits = 0
    sims = 200
    for seed in range(sims):
        flagged, tpr_hat, fpr_hat = simulate(seed, prevalence)
        est = estimate_prevalence(
            flagged, 100_000, tpr_hat, fpr_hat, 1000, 1000, method=method, n_bootstrap=2000,
            seed=seed,
        )
        hits += est.low <= prevalence <= est.high
        # An interval for the flag rate's sampling error alone misses most of the time:
        p = flagged / 100_000
        centre = (p - fpr_hat) / (tpr_hat - fpr_hat)
        half = 1.96 * math.sqrt(p * (1 - p) / 100_000) / (tpr_hat - fpr_hat)
        naive_hits += centre - half <= prevalence <= centre + half
    assert 0.90 <= hits / sims <= 0.99
    assert naive_hits / sims < 0.6


def test_a_rate_measured_as_zero_still_has_uncertainty() -> None:
    est = estimate_prevalence(500, 100_000, tpr=0.9, fpr=0.0, n_pos_calibration=200,
                              n_neg_calibration=200)
    assert est.low < est.estimate < est.high
    assert est.high - est.estimate > 0.01  # 0 of 200 humans flagged allows FPR up to ~1.5%


def test_bootstrap_is_seeded() -> None:
    args = (27_500, 100_000, 0.8, 0.05, 500, 500)
    first = estimate_prevalence(*args, method="bootstrap", seed=1)
    assert estimate_prevalence(*args, method="bootstrap", seed=1) == first
    assert estimate_prevalence(*args, method="bootstrap", seed=2) != first


def test_prevalence_errors() -> None:
    with pytest.raises(ConfigError, match="no better than chance"):
        rogan_gladen(0.2, tpr=0.05, fpr=0.05)
    with pytest.raises(ConfigError, match="no better than chance"):
        estimate_prevalence(10, 100, 0.1, 0.3, 100, 100)
    with pytest.raises(ConfigError, match="tpr must be a rate"):
        rogan_gladen(0.2, tpr=1.2, fpr=0.05)
    with pytest.raises(ConfigError, match="cannot exceed"):
        estimate_prevalence(101, 100, 0.8, 0.05, 100, 100)
    with pytest.raises(ConfigError, match="n_neg_calibration must be >= 1"):
        estimate_prevalence(10, 100, 0.8, 0.05, 100, 0)
    with pytest.raises(ConfigError, match="confidence"):
        estimate_prevalence(10, 100, 0.8, 0.05, 100, 100, confidence=95)
