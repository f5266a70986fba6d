"""Calibration: the threshold that gives a known false-positive rate, and P(synthetic).

A raw criterion becomes evidence only here. :func:`calibrate` fixes the threshold on text known
to be human and, given machine text too, fits a Platt map to a probability and measures the
TPR/FPR that prevalence correction needs (optionally on held-out texts, so they are honest).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from provenance.detectors.base import Detector
from provenance.detectors.calibrated import CalibratedDetector
from provenance.errors import ConfigError, InputError, TailguardWarning

if TYPE_CHECKING:
    from provenance.thresholds import Guarantee


def fit_platt(
    human: np.ndarray, machine: np.ndarray, prior: float | None = 0.5
) -> tuple[float, float]:
    """``(a, b)`` such that ``sigmoid(a * criterion + b)`` estimates P(synthetic).

    Platt's smoothed targets keep the fit finite when the two sets are separable. With
    ``prior`` set, the classes are reweighted so the probability is for a corpus with that
    share of machine text (0.5: the evidence alone); ``None`` uses the calibration set's mix.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = fit_platt(np.array([-3.0, -2.0, -1.0, 0.5]), np.array([-0.5, 1.0, 2.0, 3.0]))
    >>> a > 0 and abs(b) < 0.1
    True
    """
    from scipy.optimize import minimize

    human = np.asarray(human, dtype=np.float64)
    machine = np.asarray(machine, dtype=np.float64)
    n_h, n_m = len(human), len(machine)
    if n_h == 0 or n_m == 0:
        raise InputError("Platt scaling needs at least one scored human and one machine text")
    x = np.concatenate([human, machine])
    target = np.concatenate([np.full(n_h, 1.0 / (n_h + 2)), np.full(n_m, (n_m + 1.0) / (n_m + 2))])
    if prior is None:
        weight = np.ones_like(x)
    else:
        weight = np.concatenate([np.full(n_h, (1 - prior) / n_h), np.full(n_m, prior / n_m)])
        weight *= len(x)
    centre, spread = x.mean(), x.std() or 1.0
    z = (x - centre) / spread

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logit = theta[0] * z + theta[1]
        # log(1 + e^l) - t*l is the cross-entropy with soft target t, written stably.
        value = np.sum(weight * (np.logaddexp(0.0, logit) - target * logit))
        resid = weight * (1.0 / (1.0 + np.exp(-logit)) - target)
        return float(value), np.array([np.sum(resid * z), np.sum(resid)])

    theta = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B").x
    a = theta[0] / spread
    return float(a), float(theta[1] - a * centre)


def _human_quantiles(human: np.ndarray, points: int = 1001) -> list[float]:
    k = min(len(human), points)
    return [float(v) for v in np.quantile(human, np.linspace(0.0, 1.0, k))]


def calibrate(
    detector: Detector,
    human_texts: Sequence[str],
    target_fpr: float = 0.01,
    machine_texts: Sequence[str] | None = None,
    *,
    prior: float | None = 0.5,
    holdout: float = 0.0,
    seed: int = 0,
    guarantee: Guarantee = "expected",
) -> CalibratedDetector:
    """Fix a detector's threshold for ``target_fpr`` on text known to be human.

    The threshold is what makes "flagged" mean something: at most ``target_fpr`` of new human
    text like the calibration set is flagged, on average or with a confidence (``guarantee``:
    :func:`~provenance.thresholds.calibrate_threshold`). Calibrate on human text from the domain
    you will tag; a threshold from news will not hold on code comments. With ``machine_texts``
    too, a Platt map turns the criterion into P(synthetic) (for a corpus with ``prior`` machine
    share) and the measured TPR/FPR are kept for prevalence correction. Without them there is no
    probability (a human sample says nothing about what machine text scores): verdicts and
    p-values under the human distribution are still available, ``prov_score`` stays empty.

    The TPR and FPR measured on the texts the threshold was chosen on are optimistic (the
    threshold is fitted to them), and a prevalence corrected with them inherits the bias. With
    ``holdout`` (e.g. 0.5) that share of the human and of the machine texts, drawn with
    ``seed``, is kept out of the fit: threshold, quantiles and Platt map come from the rest and
    the stored ``fpr``/``tpr`` are measured on the held-out texts (``measured_on`` says which).

    Examples
    --------
    >>> from provenance.detectors import NgramClassifier
    >>> clf = NgramClassifier(n_features=2**10, min_tokens=1).fit(
    ...     ["the cat sat", "a dog ran", "As an AI model", "As an AI language model"],
    ...     ["human", "human", "machine", "machine"])
    >>> detector = calibrate(clf, ["the cat ran", "a dog sat", "my cat", "the dog"],
    ...                      target_fpr=0.25, machine_texts=["As an AI", "an AI model"])
    >>> detector.calibration["fpr"] <= 0.25, detector.calibration["tpr"]
    (True, 1.0)
    >>> detector.detect(["As an AI language model", "the cat"]).flagged.tolist()
    [True, False]
    """
    from provenance.thresholds import calibrate_threshold

    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if prior is not None and not 0.0 < prior < 1.0:
        raise ConfigError(f"prior must be in (0, 1) or None, got {prior}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    raw_human = detector.score(human_texts)
    human, human_out = _split(raw_human[~np.isnan(raw_human)], holdout, seed, "human")
    if len(human) == 0:
        raise InputError("none of the human calibration texts could be scored (too short?)")
    # calibrate_threshold warns when there are too few human texts to resolve target_fpr.
    threshold = float(calibrate_threshold(human, target_fpr, guarantee=guarantee))
    calibration: dict[str, Any] = {
        "fpr_guarantee": guarantee,
        "n_human": int(len(human)),
        "n_human_unscored": int(len(raw_human) - np.count_nonzero(~np.isnan(raw_human))),
        "fpr": float(np.mean((human_out if holdout else human) >= threshold)),
        "n_human_measured": int(len(human_out if holdout else human)),
        "human_quantiles": _human_quantiles(human),
        "measured_on": (f"held-out {holdout:g} of the calibration texts ({len(human_out)} "
                        "human)" if holdout else "calibration texts (in-sample)"),
    }
    if machine_texts is not None:
        calibration.update(_machine_calibration(detector, human, human_out, machine_texts,
                                                threshold, prior, holdout, seed))
    return CalibratedDetector(detector, threshold, target_fpr, calibration)


def _split(scores: np.ndarray, holdout: float, seed: int, name: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) parts of the scores; a seeded draw, so a recalibration repeats."""
    if not holdout:
        return scores, scores[:0]
    order = np.random.default_rng([seed, len(scores), len(name)]).permutation(len(scores))
    cut = len(scores) - int(round(holdout * len(scores)))
    if cut < 1 or cut == len(scores):
        raise InputError(f"too few scored {name} calibration texts ({len(scores)}) to hold "
                         f"out {holdout:g} of them")
    return scores[order[:cut]], scores[order[cut:]]


def _machine_calibration(
    detector: Detector,
    human: np.ndarray,
    human_out: np.ndarray,
    machine_texts: Sequence[str],
    threshold: float,
    prior: float | None,
    holdout: float,
    seed: int,
) -> dict[str, Any]:
    from provenance.evaluate import roc_auc

    raw = detector.score(machine_texts)
    if np.isnan(raw).all():
        raise InputError("none of the machine calibration texts could be scored (too short?)")
    machine, machine_out = _split(raw[~np.isnan(raw)], holdout, seed, "machine")
    measured_h, measured_m = (human_out, machine_out) if holdout else (human, machine)
    labels = np.concatenate([np.zeros(len(measured_h)), np.ones(len(measured_m))])
    auroc = float(roc_auc(labels, np.concatenate([measured_h, measured_m])))
    a, b = fit_platt(human, machine, prior)
    if a <= 0:
        warnings.warn(
            f"the detector ranks machine text below human text on these calibration sets "
            f"(AUROC {auroc:.2f}); its verdicts are not evidence here",
            TailguardWarning,
            stacklevel=3,
        )
    return {
        "n_machine": int(len(machine)),
        "n_machine_unscored": int(np.isnan(raw).sum()),
        "tpr": float(np.mean(measured_m >= threshold)),
        "n_machine_measured": int(len(measured_m)),
        "auroc": auroc,
        "platt": [a, b],
        "prior": prior,
    }
