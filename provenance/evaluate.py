"""How good is a detector, at which threshold, and how much of a corpus is really synthetic?

Three questions come up every time a provenance signal is used on real data, and each has a
well-known wrong answer that this module avoids:

* **Quality.** AUROC summarises ranking, but a tagger is used at one threshold, in the region
  where almost no human text is flagged; so reports give the true positive rate at 1% and 0.1%
  false positive rate, and per group (generator, domain), because an average hides the model or
  the domain a detector misses (:func:`evaluate_detector`).
* **Thresholds.** A threshold for "at most 0.1% of human texts flagged" must be read off known
  human scores conservatively, and it cannot be read off 200 of them: with ``n`` human texts the
  smallest non-zero false positive rate that can be observed is ``1/n``
  (:func:`calibrate_threshold` warns when asked for less).
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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from provenance.errors import ConfigError, InputError, TailguardWarning

__all__ = [
    "EvaluationReport",
    "OperatingPoint",
    "PrevalenceEstimate",
    "calibrate_threshold",
    "confusion",
    "estimate_prevalence",
    "evaluate_detector",
    "roc_auc",
    "rogan_gladen",
    "tpr_at_fpr",
]

_POSITIVE = {"1", "true", "synthetic", "machine", "generated", "machine-generated"}
_NEGATIVE = {"0", "false", "human"}


# --------------------------------------------------------------------------- inputs


def _binary_labels(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Labels as a bool array (True = synthetic), accepting bools, 0/1 and label names."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise InputError(f"labels must be one-dimensional, got shape {labels.shape}")
        if labels.dtype == bool:
            return labels
        if np.issubdtype(labels.dtype, np.number):
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if bad.size:
                raise InputError(
                    f"numeric labels must be 0 (human) or 1 (synthetic), got {labels[bad[0]]!r}",
                    row=int(bad[0]),
                )
            return labels == 1
        labels = labels.tolist()
    values = list(labels)
    out = np.empty(len(values), dtype=bool)
    for row, value in enumerate(values):
        out[row] = _binary_label(value, row)
    return out


def _binary_label(value: Any, row: int) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.number) and not isinstance(value, str):
        if value in (0, 1):
            return value == 1
        raise InputError(f"numeric labels must be 0 (human) or 1 (synthetic), got {value!r}",
                         row=row)
    # getattr(.., "value"): Label members are str subclasses whose str() is "Label.HUMAN".
    name = str(getattr(value, "value", value)).strip().lower()
    if name in _POSITIVE:
        return True
    if name in _NEGATIVE:
        return False
    raise InputError(
        f"label {value!r} is neither synthetic (1, true, synthetic, machine) nor human "
        "(0, false, human)",
        row=row,
    )


def _scores(scores: Sequence[float] | np.ndarray, n: int | None = None) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise InputError(f"scores must be one-dimensional, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise InputError(f"got {n} labels but {len(array)} scores; pass one score per label")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise InputError(
            f"scores must be finite numbers, got {array[bad[0]]}; drop or impute documents "
            "without a score first",
            row=int(bad[0]),
        )
    return array


def _labelled(labels: Any, scores: Any, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    y = _binary_labels(labels)
    s = _scores(scores, len(y))
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


def calibrate_threshold(human_scores: Sequence[float], target_fpr: float) -> float:
    """The smallest threshold that flags at most ``target_fpr`` of the known-human scores.

    With ``n`` human scores at most ``k = floor(target_fpr * n)`` may reach the threshold, so it
    is placed just above (the next float after) the ``(k+1)``-th highest human score; ties at
    that score are all left unflagged, which keeps the rate at or below the target. The
    resolution limit: the smallest non-zero rate ``n`` scores can show is ``1/n``. Below it
    (``target_fpr < 1/n``) the threshold goes above every human score, which demonstrates a rate
    of at most ~``3/n``, not ``target_fpr``; a :class:`TailguardWarning` says how many human
    texts the target needs.

    Examples
    --------
    >>> humans = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    >>> t = calibrate_threshold(humans, 0.2)  # 2 of 10 may be flagged: 0.9 and 1.0
    >>> 0.8 < t < 0.8001, sum(h >= t for h in humans)
    (True, 2)
    """
    h = _scores(human_scores)
    if len(h) == 0:
        raise InputError("calibrate_threshold needs at least one known-human score")
    if not (isinstance(target_fpr, int | float) and 0.0 < target_fpr < 1.0):
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    n = len(h)
    allowed = math.floor(round(target_fpr * n, 9))
    if allowed == 0:
        warnings.warn(
            f"target_fpr {target_fpr:g} is below 1/n = {1 / n:.3g} for {n} human scores: the "
            f"threshold is set above every human score, which only shows an FPR below ~{3 / n:.2g}"
            f" (rule of three); calibrate on at least {math.ceil(3 / target_fpr):,} human texts",
            TailguardWarning,
            stacklevel=2,
        )
    descending = np.sort(h)[::-1]
    return float(np.nextafter(descending[allowed], np.inf))


def tpr_at_fpr(labels: Sequence[Any], scores: Sequence[float], fpr: float) -> OperatingPoint:
    """The true positive rate at the threshold calibrated on the negatives for ``fpr``.

    The threshold comes from :func:`calibrate_threshold` on the human scores (so the empirical
    FPR is at most ``fpr``, and the same resolution warning applies).

    Examples
    --------
    >>> point = tpr_at_fpr([0, 0, 0, 0, 1, 1, 1, 1], [1, 2, 3, 4, 2.5, 3.5, 5, 6], fpr=0.25)
    >>> point.tpr, point.fpr, point.threshold > 3
    (0.75, 0.25, True)
    """
    y, s = _labelled(labels, scores)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threshold = calibrate_threshold(s[~y], fpr)
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
    y = _binary_labels(labels)
    p = _binary_labels(predictions)
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
) -> EvaluationReport:
    """Evaluate scores against labels, overall and per group.

    ``groups`` maps a grouping's name to one value per document, e.g.
    ``{"generator": [...], "domain": [...]}``. For each value the report gives ``n``,
    ``n_synthetic``, ``n_human``, ``tpr`` and ``fpr`` at ``threshold`` (each ``None`` when the
    group has no document of that class) and ``auroc`` of the group's synthetic documents
    against *all* human documents: a generator has no humans of its own, and a per-domain FPR
    is reported separately. One :class:`TailguardWarning` is given if there are too few human
    documents to resolve 1% or 0.1% FPR (see :func:`calibrate_threshold`).

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
    if not (isinstance(threshold, int | float | np.floating) and math.isfinite(threshold)):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    group_keys = {
        name: _group_keys(name, values, len(y)) for name, values in (groups or {}).items()
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
    for name, keys in group_keys.items():
        report.groups[name] = _group_breakdown(keys, y, s, flagged)
    return report


def _group_keys(name: str, values: Sequence[Any], n: int) -> np.ndarray:
    keys = np.asarray(["None" if v is None else str(getattr(v, "value", v)) for v in values])
    if len(keys) != n:
        raise InputError(f"group {name!r} has {len(keys)} values for {n} documents")
    return keys


def _group_breakdown(
    keys: np.ndarray, y: np.ndarray, s: np.ndarray, flagged: np.ndarray
) -> dict[str, dict[str, Any]]:
    humans = s[~y]
    out: dict[str, dict[str, Any]] = {}
    for value in sorted(set(keys.tolist())):
        member = keys == value
        pos, neg = member & y, member & ~y
        auroc = None
        if pos.any() and len(humans):
            both = np.concatenate([s[pos], humans])
            truth = np.concatenate([np.ones(pos.sum(), bool), np.zeros(len(humans), bool)])
            auroc = roc_auc(truth, both)
        out[value] = {
            "n": int(member.sum()),
            "n_synthetic": int(pos.sum()),
            "n_human": int(neg.sum()),
            "tpr": float(np.mean(flagged[pos])) if pos.any() else None,
            "fpr": float(np.mean(flagged[neg])) if neg.any() else None,
            "auroc": auroc,
        }
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
