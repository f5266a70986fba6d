"""What a detection threshold promises, and how it is read off known-human scores.

A threshold for "at most 1% of human texts flagged" is a promise about *new* human text, and
reading it off known human scores in-sample breaks it: just above the third highest of 200
scores, 1% of them are flagged but 1.5% of new texts are, on average. :func:`calibrate_threshold`
places it so that the *expected* FPR on new text from the same source is at most the target
(split conformal), or so that it is with a chosen confidence; and it cannot be set from too few
texts (99 for 1% on average, 230 for 1% with 90% confidence): it warns and says how many are
needed. :func:`worst_group_threshold` keeps the promise in every group (domain, site, first
language), not only on average over them.

Conventions (as in :mod:`provenance.evaluate`): higher scores mean "more likely synthetic"; a
document is flagged when ``score >= threshold``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from provenance.errors import ConfigError, InputError, TailguardWarning

__all__ = [
    "Guarantee",
    "calibrate_threshold",
    "checked_scores",
    "flagged_allowed",
    "group_keys",
    "guarantee_text",
    "texts_needed",
    "threshold_for",
    "worst_group_threshold",
]

Guarantee = str | float
"""What a calibrated threshold promises about the false positive rate (see
:func:`calibrate_threshold`): ``"expected"``, ``"these"`` or a confidence in (0, 1)."""


def calibrate_threshold(human_scores: Sequence[float], target_fpr: float, *,
                        guarantee: Guarantee = "expected") -> float:
    """The lowest threshold that keeps the false positive rate at ``target_fpr``, as promised.

    A threshold is read off known-human scores, but it is used on *new* human texts, and the
    share of the calibration scores it flags understates their rate: placed just above the
    ``(k+1)``-th highest of ``n`` scores, it flags a new text of the same source with probability
    ``(k+1)/(n+1)`` on average, not ``k/n`` (with 100 scores and a 1% target, the in-sample rule
    would flag 2% of new texts). ``guarantee`` says which promise is kept:

    * ``"expected"`` (default; split conformal, Vovk et al. 2005): the expected FPR on new human
      text from the same source is at most ``target_fpr``, so ``k = floor(target_fpr (n+1)) - 1``.
    * a confidence ``c`` in (0, 1) (training-conditional, Vovk 2012): the FPR on new human text
      is at most ``target_fpr`` with probability ``c`` over the draw of the calibration texts;
      the rate of a threshold above the ``(k+1)``-th highest score is Beta(k+1, n-k)
      distributed, and ``k`` is the largest whose Beta CDF at ``target_fpr`` reaches ``c``.
      Stricter: 0.9 needs at least 230 human texts for 1%.
    * ``"these"``: at most ``target_fpr`` of *these* scores (``k = floor(target_fpr n)``); a
      reading of the ROC curve (what :func:`tpr_at_fpr` reports), not a promise about new text.

    The threshold is the next float above the ``(k+1)``-th highest score, so ties there are left
    unflagged. Where even a threshold above every score cannot keep the promise (too few human
    texts: fewer than ``1/target_fpr - 1`` for ``"expected"``), it is set above every score and a
    :class:`TailguardWarning` says how many human texts the promise needs.

    Examples
    --------
    >>> humans = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    >>> t = calibrate_threshold(humans, 0.2)  # a new text beats 0.9 with probability 2/11
    >>> 0.9 < t < 0.9001, sum(h >= t for h in humans)
    (True, 1)
    >>> sum(h >= calibrate_threshold(humans, 0.2, guarantee="these") for h in humans)
    2
    """
    h = checked_scores(human_scores)
    if len(h) == 0:
        raise InputError("calibrate_threshold needs at least one known-human score")
    if not (isinstance(target_fpr, int | float) and 0.0 < target_fpr < 1.0):
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    n = len(h)
    allowed = flagged_allowed(n, target_fpr, guarantee)
    if allowed is None:
        warnings.warn(
            f"{n} human scores cannot keep an FPR of {target_fpr:g} "
            f"({guarantee_text(guarantee)}): the threshold is set above every human score, "
            f"which only shows an FPR below ~{3 / n:.2g} (rule of three); calibrate on at least "
            f"{texts_needed(target_fpr, guarantee):,} human texts",
            TailguardWarning,
            stacklevel=2,
        )
    descending = np.sort(h)[::-1]
    return float(np.nextafter(descending[allowed or 0], np.inf))


def flagged_allowed(n: int, target_fpr: float, guarantee: Guarantee = "expected") -> int | None:
    """How many of ``n`` calibration scores may lie above the threshold under ``guarantee``
    (see :func:`calibrate_threshold`), or None when not even a threshold above all keeps it.

    >>> flagged_allowed(1000, 0.01), flagged_allowed(1000, 0.01, "these")
    (9, 10)
    >>> flagged_allowed(1000, 0.01, 0.9), flagged_allowed(50, 0.01)
    (5, None)
    """
    if guarantee == "these":
        k = math.floor(round(target_fpr * n, 9))
        return k if k >= 1 else None
    if guarantee == "expected":
        k = math.floor(round(target_fpr * (n + 1), 9)) - 1
        return k if k >= 0 else None
    confidence = _confidence(guarantee)
    from scipy.stats import beta

    ks = np.arange(0, min(n, math.ceil(target_fpr * (n + 1)) + 1))
    kept = ks[beta.cdf(target_fpr, ks + 1, n - ks) >= confidence]
    return int(kept.max()) if len(kept) else None


def texts_needed(target_fpr: float, guarantee: Guarantee = "expected") -> int:
    """The fewest human texts that can keep ``target_fpr`` under ``guarantee``.

    >>> texts_needed(0.01), texts_needed(0.01, 0.9), texts_needed(0.01, "these")
    (99, 230, 100)
    """
    if guarantee == "these":
        return math.ceil(round(1 / target_fpr, 9))
    if guarantee == "expected":
        return math.ceil(round(1 / target_fpr, 9)) - 1
    confidence = _confidence(guarantee)
    return math.ceil(math.log1p(-confidence) / math.log1p(-target_fpr))


def guarantee_text(guarantee: Guarantee) -> str:
    """The promise in words, for reports and warnings.

    >>> guarantee_text("expected"), guarantee_text(0.9)
    ('expected on new human text', 'on new human text with 90% confidence')
    """
    if guarantee == "these":
        return "on these human scores"
    if guarantee == "expected":
        return "expected on new human text"
    return f"on new human text with {_confidence(guarantee):.0%} confidence"


def _confidence(guarantee: Any) -> float:
    if (isinstance(guarantee, bool) or not isinstance(guarantee, int | float)
            or not 0.0 < guarantee < 1.0):
        raise ConfigError("guarantee must be 'expected', 'these' or a confidence in (0, 1), "
                          f"got {guarantee!r}")
    return float(guarantee)


def worst_group_threshold(
    human_scores: Sequence[float],
    groups: Sequence[Any],
    target_fpr: float,
    *,
    min_group_size: int | None = None,
    guarantee: Guarantee = "expected",
) -> float:
    """The one threshold that flags at most ``target_fpr`` of the human scores of *every* group.

    It is the highest of the groups' :func:`calibrate_threshold` thresholds (each under
    ``guarantee``), so the promise "at most ``target_fpr`` of human texts flagged" holds for the
    worst group, not only on average; the price is a lower TPR in the groups that needed less.

    A group with fewer than ``1 / target_fpr`` human texts cannot show the target alone: held
    alone it would put the threshold above all its scores, and with many such groups (19
    domains of 40 texts) the detector would flag almost nothing. So groups smaller than
    ``min_group_size`` (default: the ``1 / target_fpr`` that resolves the target) are held
    *together*, as one group, never merged into a large one (a small group of non-native
    writers is not diluted by a large native one). ``min_group_size=1`` holds each alone.
    A :class:`TailguardWarning` names the groups pooled, and one names any group (or pool)
    still too small to resolve the target.

    Examples
    --------
    >>> native = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    >>> non_native = [s + 0.3 for s in native]  # scored as "more synthetic"
    >>> scores, groups = native + non_native, ["native"] * 10 + ["non-native"] * 10
    >>> pooled = calibrate_threshold(scores, 0.2)
    >>> sum(h >= pooled for h in non_native)  # 3 of 20 overall, all of them non-native
    3
    >>> t = worst_group_threshold(scores, groups, 0.2)
    >>> sum(h >= t for h in native), sum(h >= t for h in non_native)
    (0, 1)
    """
    h = checked_scores(human_scores)
    if len(h) == 0:
        raise InputError("worst_group_threshold needs at least one known-human score")
    if not (isinstance(target_fpr, int | float) and 0.0 < target_fpr < 1.0):
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    resolving = math.ceil(round(1.0 / target_fpr, 9))
    smallest = resolving if min_group_size is None else min_group_size
    if not (isinstance(smallest, int) and smallest >= 1):
        raise ConfigError(f"min_group_size must be a whole number >= 1, got {min_group_size!r}")
    keys = group_keys("groups", groups, len(h))
    sizes = {value: int(np.sum(keys == value)) for value in sorted(set(keys.tolist()))}
    small = [value for value, n in sizes.items() if n < smallest]
    held = {value: keys == value for value in sizes if value not in small}
    if len(small) > 1:
        pool = f"the {len(small)} small groups held together"
        held[pool] = np.isin(keys, small)
        warnings.warn(
            f"group(s) {_named_sizes(small, sizes)} have fewer than {smallest:,} human texts: "
            f"held to target_fpr {target_fpr:g} together ({int(held[pool].sum()):,} texts), "
            "not each alone (min_group_size=1 holds each alone)",
            TailguardWarning,
            stacklevel=2,
        )
    elif small:
        held[small[0]] = keys == small[0]
    thresholds, unresolved = [], []
    for value, member in held.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TailguardWarning)  # said once below, per group
            thresholds.append(calibrate_threshold(h[member], target_fpr, guarantee=guarantee))
        if flagged_allowed(int(member.sum()), target_fpr, guarantee) is None:
            shown = repr(value) if value in sizes else value
            unresolved.append(f"{shown} ({int(member.sum())})")
    if unresolved:
        warnings.warn(
            f"too few human texts to keep an FPR of {target_fpr:g} "
            f"({guarantee_text(guarantee)}) in {', '.join(unresolved)}: the threshold is set "
            "above every human score of each, which only shows an FPR below ~3/n there (rule of "
            f"three); calibrate on at least {texts_needed(target_fpr, guarantee):,} human texts "
            "per group",
            TailguardWarning,
            stacklevel=2,
        )
    return max(thresholds)


def threshold_for(
    human_scores: Sequence[float],
    groups: Sequence[Any] | None,
    target_fpr: float,
    *,
    min_group_size: int | None = None,
    guarantee: Guarantee = "expected",
) -> float:
    """The threshold every command sets: held in every group when ``groups`` are given
    (:func:`worst_group_threshold`), over all the scores otherwise (:func:`calibrate_threshold`).

    >>> threshold_for([0.1, 0.2, 0.3], None, 0.5) == calibrate_threshold([0.1, 0.2, 0.3], 0.5)
    True
    """
    if groups is None:
        return calibrate_threshold(human_scores, target_fpr, guarantee=guarantee)
    return worst_group_threshold(human_scores, groups, target_fpr,
                                 min_group_size=min_group_size, guarantee=guarantee)


def _named_sizes(values: list[str], sizes: dict[str, int], shown: int = 8) -> str:
    """``'a' (40), 'b' (38)``, the first ``shown`` and how many more.

    >>> _named_sizes(["a", "b", "c"], {"a": 4, "b": 3, "c": 2}, shown=2)
    "'a' (4), 'b' (3) and 1 more"
    """
    named = ", ".join(f"{v!r} ({sizes[v]})" for v in values[:shown])
    return named + (f" and {len(values) - shown} more" if len(values) > shown else "")


def checked_scores(scores: Sequence[float] | np.ndarray, n: int | None = None) -> np.ndarray:
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



def group_keys(name: str, values: Sequence[Any], n: int) -> np.ndarray:
    keys = np.asarray(["None" if v is None else str(getattr(v, "value", v)) for v in values])
    if len(keys) != n:
        raise InputError(f"group {name!r} has {len(keys)} values for {n} documents")
    return keys
