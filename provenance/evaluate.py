"""How good is a detector, at which threshold, and how much of a corpus is really synthetic?

Three questions come up every time a provenance signal is used on real data, and each has a
well-known wrong answer that this module avoids:

* **Quality.** AUROC summarises ranking, but a tagger is used at one threshold, in the region
  where almost no human text is flagged; so reports give the true positive rate at 1% and 0.1%
  false positive rate, and per group (generator, domain), because an average hides the model or
  the domain a detector misses (:func:`evaluate_detector`, :func:`group_report`).
* **Fairness.** A detector's average FPR hides its worst group: published detectors flag
  non-native English writers far more often than native ones (Liang et al. 2023). Per-group
  FPRs, AUROCs with bootstrap intervals (:func:`group_report`) show it, and a threshold that
  holds the FPR in every group (:func:`worst_group_threshold`) promises the worst group's rate,
  not the average.
* **Thresholds.** A threshold is a promise about *new* human text; read off known human scores
  in-sample it breaks it, and it cannot be read off too few of them
  (:mod:`provenance.thresholds`: :func:`calibrate_threshold`, :func:`worst_group_threshold`,
  re-exported here).
* **Prevalence.** The share of flagged documents is not the share of synthetic ones: a detector
  with TPR 0.8 and FPR 0.05 flags 5% of a purely human corpus. The Rogan-Gladen estimator
  corrects for both rates, and its interval must include the error of the *measured* TPR and FPR
  (usually from a few hundred labelled texts), which dominates the sampling error of a large
  corpus (:func:`estimate_prevalence`).

Conventions: label 1 (or ``True``, ``"synthetic"``, ``"machine"``) is a synthetic document, the
positive class; higher scores mean "more likely synthetic"; a document is flagged when
``score >= threshold``.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from provenance.errors import ConfigError, InputError, TailguardWarning
from provenance.labels import binary_labels
from provenance.thresholds import (  # the two threshold functions stay importable from here
    calibrate_threshold,
    checked_scores,
    group_keys,
    worst_group_threshold,
)

__all__ = [
    "EvaluationReport",
    "OperatingPoint",
    "PrevalenceEstimate",
    "calibrate_threshold",
    "confusion",
    "estimate_prevalence",
    "evaluate_detector",
    "group_report",
    "roc_auc",
    "rogan_gladen",
    "tpr_at_fpr",
    "worst_group_threshold",
]


# --------------------------------------------------------------------------- inputs


def _labelled(labels: Any, scores: Any, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    y = binary_labels(labels)
    s = checked_scores(scores, len(y))
    if need_both and (y.all() or not y.any()):
        raise InputError(
            f"need both synthetic and human examples, got {int(y.sum())} synthetic and "
            f"{int((~y).sum())} human"
        )
    return y, s


def _rate(name: str, value: float) -> float:
    if not (isinstance(value, int | float | np.floating | np.integer) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a rate in [0, 1], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- quality


def roc_auc(labels: Sequence[Any], scores: Sequence[float]) -> float:
    """Area under the ROC curve: P(a random synthetic text outscores a random human one).

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from sklearn.metrics import roc_auc_score

    y, s = _labelled(labels, scores)
    return float(roc_auc_score(y, s))


class OperatingPoint(NamedTuple):
    """A threshold and what it does: ``tpr`` and the achieved ``fpr`` on the data it came from.

    ``resolved`` is False when ``target_fpr`` was below ``1 / n_negatives``: the threshold then
    sits above every negative score and the achieved FPR of 0 only bounds the true rate by about
    ``3 / n_negatives`` (the rule of three, 95%).
    """

    tpr: float
    threshold: float
    fpr: float
    target_fpr: float
    n_negatives: int

    @property
    def resolved(self) -> bool:
        return self.target_fpr * self.n_negatives >= 1.0 - 1e-9


def tpr_at_fpr(labels: Sequence[Any], scores: Sequence[float], fpr: float) -> OperatingPoint:
    """The true positive rate at the threshold calibrated on the negatives for ``fpr``.

    The threshold comes from :func:`calibrate_threshold` on the human scores with
    ``guarantee="these"`` (the empirical FPR is at most ``fpr``: a point of the ROC curve, and
    the same resolution warning applies).

    Examples
    --------
    >>> point = tpr_at_fpr([0, 0, 0, 0, 1, 1, 1, 1], [1, 2, 3, 4, 2.5, 3.5, 5, 6], fpr=0.25)
    >>> point.tpr, point.fpr, point.threshold > 3
    (0.75, 0.25, True)
    """
    y, s = _labelled(labels, scores)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threshold = calibrate_threshold(s[~y], fpr, guarantee="these")
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return OperatingPoint(
        tpr=float(np.mean(s[y] >= threshold)),
        threshold=threshold,
        fpr=float(np.mean(s[~y] >= threshold)),
        target_fpr=float(fpr),
        n_negatives=int((~y).sum()),
    )


def confusion(labels: Sequence[Any], predictions: Sequence[Any]) -> dict[str, int]:
    """Counts of true/false positives/negatives (predictions take the same forms as labels).

    Examples
    --------
    >>> confusion([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    {'tp': 1, 'fp': 1, 'tn': 2, 'fn': 1}
    """
    y = binary_labels(labels)
    p = binary_labels(predictions)
    if len(y) != len(p):
        raise InputError(f"got {len(y)} labels but {len(p)} predictions")
    return {
        "tp": int(np.sum(y & p)),
        "fp": int(np.sum(~y & p)),
        "tn": int(np.sum(~y & ~p)),
        "fn": int(np.sum(y & ~p)),
    }


@dataclass
class EvaluationReport:
    """A detector's quality on labelled data: ranking, low-FPR operating points, the given
    threshold, and the same per group (each group's synthetic texts against all human ones)."""

    n_synthetic: int
    n_human: int
    auroc: float
    tpr_at_1pct_fpr: OperatingPoint
    tpr_at_01pct_fpr: OperatingPoint
    threshold: float
    confusion: dict[str, int]
    tpr: float
    fpr: float
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("tpr_at_1pct_fpr", "tpr_at_01pct_fpr"):
            point: OperatingPoint = getattr(self, name)
            out[name] = {**point._asdict(), "resolved": point.resolved}
        return out


def evaluate_detector(
    labels: Sequence[Any],
    scores: Sequence[float],
    threshold: float,
    groups: Mapping[str, Sequence[Any]] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> EvaluationReport:
    """Evaluate scores against labels, overall and per group.

    ``groups`` maps a grouping's name to one value per document, e.g.
    ``{"generator": [...], "domain": [...]}``; ``report.groups[name][value]`` is that value's
    row of :func:`group_report` (``n``, ``n_synthetic``, ``n_human``, ``tpr``/``tp`` and
    ``fpr``/``fp`` at ``threshold``, ``auroc`` with a bootstrap interval from ``n_boot``
    resamples seeded with ``seed``). One :class:`TailguardWarning` is given if there are too
    few human documents to resolve 1% or 0.1% FPR (see :func:`calibrate_threshold`).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:  # 3 humans cannot resolve 1% FPR
    ...     report = evaluate_detector(
    ...         [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.7, 0.9, 0.3], threshold=0.5,
    ...         groups={"generator": ["h", "h", "h", "gpt2", "gpt2", "llama"]})
    >>> len(caught)
    1
    >>> report.confusion
    {'tp': 2, 'fp': 1, 'tn': 2, 'fn': 1}
    >>> report.groups["generator"]["gpt2"]["auroc"], report.groups["generator"]["llama"]["tpr"]
    (1.0, 0.0)
    """
    y, s = _labelled(labels, scores)
    _check_threshold(threshold)
    keys_by_group = {
        name: group_keys(name, values, len(y)) for name, values in (groups or {}).items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TailguardWarning)
        at_1 = tpr_at_fpr(y, s, 0.01)
        at_01 = tpr_at_fpr(y, s, 0.001)
    if not at_01.resolved:
        n_human = int((~y).sum())
        warnings.warn(
            f"{n_human} human documents cannot resolve "
            f"{'1% or ' if not at_1.resolved else ''}0.1% FPR (smallest non-zero rate 1/n = "
            f"{1 / n_human:.2g}); the TPR reported there is at a threshold above every human "
            "score. Evaluate on at least 3,000 human documents for 0.1%",
            TailguardWarning,
            stacklevel=2,
        )
    flagged = s >= threshold
    report = EvaluationReport(
        n_synthetic=int(y.sum()),
        n_human=int((~y).sum()),
        auroc=roc_auc(y, s),
        tpr_at_1pct_fpr=at_1,
        tpr_at_01pct_fpr=at_01,
        threshold=float(threshold),
        confusion=confusion(y, flagged),
        tpr=float(np.mean(flagged[y])),
        fpr=float(np.mean(flagged[~y])),
    )
    for name, keys in keys_by_group.items():
        rows = _group_breakdown(keys, y, s, flagged, n_boot=n_boot, seed=seed)
        report.groups[name] = {row["group"]: row for row in rows}
    return report


def group_report(
    labels: Sequence[Any],
    scores: Sequence[float],
    groups: Sequence[Any],
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """A detector's quality in each group of documents (e.g. native and non-native writers).

    Why: an average hides the group a detector fails. Published detectors flag non-native
    English writers far more often than native ones (Liang et al. 2023: 61% average FPR on
    TOEFL essays) while their pooled FPR looks fine; a small group can be flagged at several
    times the target rate and barely move the average. So each group gets its own numbers.

    One row per group value (sorted), with ``group``, ``n``, ``n_synthetic``, ``n_human``;
    ``tp`` and ``tpr`` (synthetic documents flagged, ``score >= threshold``) and ``fp`` and
    ``fpr`` (human documents flagged), each rate ``None`` when the group has no document of
    that class; and ``auroc`` with a percentile bootstrap interval ``auroc_low``,
    ``auroc_high`` (``confidence``; ``n_boot`` resamples, stratified: the synthetic and the
    human documents are resampled separately, so every resample has both; seeded by ``seed``
    and the group's name, so a group's interval does not depend on the other groups).

    ``auroc_humans`` says which human documents the AUROC compares with: ``"group"``, the
    group's own, when it has both classes; ``"all"``, every human document, when it has only
    synthetic ones (a generator has no humans of its own); ``None`` with no AUROC and no
    interval when the group has no synthetic document or there is no human one at all.
    ``n_boot=0`` leaves the intervals ``None``.

    Examples
    --------
    >>> rows = group_report(
    ...     [0, 0, 0, 1, 1, 0, 0, 0, 1, 1],
    ...     [0.1, 0.2, 0.3, 0.8, 0.9, 0.5, 0.6, 0.7, 0.8, 0.9],
    ...     ["native"] * 5 + ["non-native"] * 5, threshold=0.55)
    >>> [(r["group"], r["fp"], r["n_human"], round(r["fpr"], 3)) for r in rows]
    [('native', 0, 3, 0.0), ('non-native', 2, 3, 0.667)]
    >>> r = rows[1]
    >>> r["auroc"], r["auroc_low"] <= r["auroc"] <= r["auroc_high"], r["tpr"]
    (1.0, True, 1.0)
    """
    y, s = _labelled(labels, scores, need_both=False)
    _check_threshold(threshold)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ConfigError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    keys = group_keys("groups", groups, len(y))
    return _group_breakdown(keys, y, s, s >= threshold, n_boot=n_boot, seed=seed,
                            confidence=confidence)


def _check_threshold(threshold: Any) -> None:
    if not (isinstance(threshold, int | float | np.floating) and math.isfinite(threshold)):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")


def _group_breakdown(
    keys: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    flagged: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    humans = s[~y]
    out: list[dict[str, Any]] = []
    for value in sorted(set(keys.tolist())):
        member = keys == value
        pos, neg = member & y, member & ~y
        auroc = low = high = against = None
        if pos.any() and len(humans):
            against = "group" if neg.any() else "all"
            negatives = s[neg] if neg.any() else humans
            auroc = _mann_whitney_auc(s[pos], negatives)
            if n_boot:
                rng = np.random.default_rng([seed, zlib.crc32(value.encode())])
                draws = _bootstrap_auc(s[pos], negatives, n_boot, rng)
                tail = (1 - confidence) / 2
                low, high = (float(q) for q in np.quantile(draws, [tail, 1 - tail]))
        tp, fp = int(flagged[pos].sum()), int(flagged[neg].sum())
        out.append({
            "group": value,
            "n": int(member.sum()),
            "n_synthetic": int(pos.sum()),
            "n_human": int(neg.sum()),
            "tp": tp,
            "tpr": tp / int(pos.sum()) if pos.any() else None,
            "fp": fp,
            "fpr": fp / int(neg.sum()) if neg.any() else None,
            "auroc": auroc,
            "auroc_low": low,
            "auroc_high": high,
            "auroc_humans": against,
        })
    return out


def _mann_whitney_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(pos == neg) / 2: the AUROC, ties counted half (as roc_auc does)."""
    ordered = np.sort(neg)
    below = np.searchsorted(ordered, pos, "left") + np.searchsorted(ordered, pos, "right")
    return float(below.sum() / (2.0 * len(pos) * len(neg)))


def _bootstrap_auc(pos: np.ndarray, neg: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """AUROCs of ``n_boot`` stratified resamples (``pos`` and ``neg`` each drawn with
    replacement at its own size), in O(n_boot * (m + n)) without sorting each resample.

    A resample is a count per original document: ``w`` for the m synthetic, ``v`` for the n
    human ones (sorted). The AUROC is ``sum_i w_i * (v below pos_i + v tied / 2) / (m n)``, and
    the counts below come from cumulative sums of ``v`` at each positive's place in the sorted
    negatives, found once.
    """
    m, n = len(pos), len(neg)
    ordered = np.sort(neg)
    left = np.searchsorted(ordered, pos, "left")
    right = np.searchsorted(ordered, pos, "right")
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // (m + n))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        rows = np.arange(b)[:, None]
        v = np.bincount((rows * n + rng.integers(0, n, (b, n))).ravel(), minlength=b * n)
        w = np.bincount((rows * m + rng.integers(0, m, (b, m))).ravel(), minlength=b * m)
        cum = np.zeros((b, n + 1))
        np.cumsum(v.reshape(b, n), axis=1, out=cum[:, 1:])
        below = cum[:, left] + cum[:, right]
        out[start:start + b] = (w.reshape(b, m) * below).sum(axis=1) / (2.0 * m * n)
    return out


# --------------------------------------------------------------------------- prevalence


def rogan_gladen(observed_positive_rate: float, tpr: float, fpr: float) -> float:
    """Prevalence corrected for the detector's errors: ``(p_obs - fpr) / (tpr - fpr)`` in [0, 1].

    Examples
    --------
    >>> round(rogan_gladen(0.275, tpr=0.8, fpr=0.05), 6)  # 30% synthetic, 27.5% flagged
    0.3
    >>> rogan_gladen(0.03, tpr=0.8, fpr=0.05)  # fewer flags than false positives alone: 0
    0.0
    """
    p = _rate("observed_positive_rate", observed_positive_rate)
    t, f = _rate("tpr", tpr), _rate("fpr", fpr)
    _check_better_than_chance(t, f)
    return float(min(max((p - f) / (t - f), 0.0), 1.0))


def _check_better_than_chance(tpr: float, fpr: float) -> None:
    if tpr <= fpr:
        raise ConfigError(
            f"the detector is no better than chance (tpr {tpr:g} <= fpr {fpr:g}), so its flags "
            "say nothing about prevalence; use a better detector or threshold"
        )


@dataclass(frozen=True)
class PrevalenceEstimate:
    """Estimated share of synthetic documents with a ``confidence`` interval [low, high]."""

    estimate: float
    low: float
    high: float
    observed_rate: float
    tpr: float
    fpr: float
    confidence: float = 0.95
    method: str = "delta"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_prevalence(
    n_flagged: int,
    n_total: int,
    tpr: float,
    fpr: float,
    n_pos_calibration: int,
    n_neg_calibration: int,
    confidence: float = 0.95,
    *,
    method: str = "delta",
    n_bootstrap: int = 4000,
    seed: int = 0,
) -> PrevalenceEstimate:
    """Rogan-Gladen prevalence of synthetic documents with an interval for all three errors.

    ``tpr`` and ``fpr`` are the detector's rates measured on ``n_pos_calibration`` synthetic and
    ``n_neg_calibration`` human labelled documents; the interval accounts for the binomial
    sampling error of the observed flag rate *and* of both measured rates.

    ``method="delta"`` (default): the delta-method normal interval, with variance
    ``[Var(p) + pi^2 Var(tpr) + (1 - pi)^2 Var(fpr)] / (tpr - fpr)^2``. Each binomial variance
    uses the Agresti-Coull adjusted rate, so a rate measured as exactly 0 or 1 (e.g. no false
    positive among 500 human texts) still carries its uncertainty instead of none.
    ``method="bootstrap"``: a parametric bootstrap (``n_bootstrap`` draws of the three binomials
    from a :func:`numpy.random.default_rng` seeded with ``seed``; percentile interval), better
    when ``tpr - fpr`` is small and the ratio is skewed. Both are clipped to [0, 1].

    Examples
    --------
    >>> est = estimate_prevalence(27_500, 100_000, tpr=0.8, fpr=0.05,
    ...                           n_pos_calibration=1000, n_neg_calibration=1000)
    >>> round(est.estimate, 3), round(est.low, 3), round(est.high, 3)
    (0.3, 0.283, 0.317)
    """
    for name, value in (("n_flagged", n_flagged), ("n_total", n_total),
                        ("n_pos_calibration", n_pos_calibration),
                        ("n_neg_calibration", n_neg_calibration)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    if n_total < 1 or n_pos_calibration < 1 or n_neg_calibration < 1:
        raise ConfigError(
            "n_total, n_pos_calibration and n_neg_calibration must be >= 1, got "
            f"{n_total}, {n_pos_calibration}, {n_neg_calibration}"
        )
    if n_flagged > n_total:
        raise ConfigError(f"n_flagged ({n_flagged}) cannot exceed n_total ({n_total})")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if method not in ("delta", "bootstrap"):
        raise ConfigError(f"method must be 'delta' or 'bootstrap', got {method!r}")
    t, f = _rate("tpr", tpr), _rate("fpr", fpr)
    _check_better_than_chance(t, f)
    p = n_flagged / n_total
    estimate = rogan_gladen(p, t, f)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    if method == "delta":
        var_p = _adjusted_variance(p, n_total, z)
        var_t = _adjusted_variance(t, n_pos_calibration, z)
        var_f = _adjusted_variance(f, n_neg_calibration, z)
        se = math.sqrt(var_p + estimate**2 * var_t + (1 - estimate) ** 2 * var_f) / (t - f)
        centre = (p - f) / (t - f)
        low, high = centre - z * se, centre + z * se
    else:
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 100:
            raise ConfigError(f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}")
        rng = np.random.default_rng(seed)
        p_b = rng.binomial(n_total, p, n_bootstrap) / n_total
        t_b = rng.binomial(n_pos_calibration, t, n_bootstrap) / n_pos_calibration
        f_b = rng.binomial(n_neg_calibration, f, n_bootstrap) / n_neg_calibration
        ok = t_b > f_b
        if ok.mean() < 0.99:
            warnings.warn(
                f"in {1 - ok.mean():.0%} of bootstrap draws the detector was no better than "
                "chance (tpr <= fpr); the interval is unreliable. Measure tpr and fpr on more "
                "labelled documents",
                TailguardWarning,
                stacklevel=2,
            )
        draws = np.clip((p_b[ok] - f_b[ok]) / (t_b[ok] - f_b[ok]), 0.0, 1.0)
        tail = (1 - confidence) / 2
        low, high = (float(q) for q in np.quantile(draws, [tail, 1 - tail]))
    return PrevalenceEstimate(
        estimate=estimate,
        low=float(min(max(low, 0.0), 1.0)),
        high=float(min(max(high, 0.0), 1.0)),
        observed_rate=p,
        tpr=t,
        fpr=f,
        confidence=float(confidence),
        method=method,
    )


def _adjusted_variance(rate: float, n: int, z: float) -> float:
    """Binomial variance of a rate measured on ``n`` trials, at the Agresti-Coull rate."""
    n_adj = n + z * z
    adjusted = (rate * n + z * z / 2) / n_adj
    return adjusted * (1 - adjusted) / n_adj
