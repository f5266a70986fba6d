"""Run a detector over a labelled corpus and report how good it is: ``tailguard detect-eval``.

A detector's numbers only mean something on data like the data it will tag, so this takes any
labelled corpus tailguard can read (label field ``human`` / ``machine`` / ``synthetic`` or
booleans) and reports AUROC, TPR at 1% and 0.1% FPR, the confusion matrix at the calibrated
threshold, and the same per generator and per domain (when the corpus has those fields) and per
any other field named in ``group_fields``: n, AUROC with a bootstrap 95% interval, TPR and FPR.
A detector's average FPR hides its worst group (published detectors flag non-native English
writers far more often than native ones), so the report names the worst group's FPR for each
grouping.

The detector is either a saved, calibrated detector folder, or a zero-shot method by name
(``fast-detectgpt``, ``loglik``) with a causal LM. An uncalibrated zero-shot detector gets its
threshold from the human part of the labelled corpus at the target FPR; that is in-sample, and the
report says so. With ``calibration_share`` (``--calibration-share 0.5``) a seeded draw of that
share of the human documents sets the threshold and is left out of the evaluation, so every
number in the report is measured on documents the threshold never saw. With ``calibrate_by``
(``--calibrate-by domain``) the threshold is the highest of the per-group thresholds, so that every
group's FPR is at most the target on the calibration documents: the worst group's rate is what a
user is promised, not the average. Either option also re-sets a saved detector's threshold on this
corpus (the saved one is kept in the report).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from provenance.atomic import atomic_path
from provenance.corpus import read_corpus
from provenance.errors import ConfigError, InputError
from provenance.labels import corpus_labels
from provenance.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from provenance.thresholds import Guarantee

ZERO_SHOT = ("fast-detectgpt", "loglik")
DEFAULT_GROUPS = ("generator", "domain")  # broken down by whenever the corpus has them


@dataclass
class DetectEvalResult:
    report: dict[str, Any]
    scores: np.ndarray


def _detector(detector: str, model: str, device: str, max_tokens: int) -> tuple[Any, float | None]:
    """(raw detector, saved threshold or None)."""
    from provenance import detectors

    if detector in ZERO_SHOT:
        cls = detectors.FastDetectGPT if detector == "fast-detectgpt" else detectors.LogLikelihood
        return cls(model, device=device, max_tokens=max_tokens), None
    if detector != "default" and not Path(detector).exists():
        raise InputError(
            f"no saved detector here; pass a detector folder, default (the shipped one) or one "
            f"of {', '.join(ZERO_SHOT)}",
            file=detector,
        )
    calibrated = detectors.load_detector(detector, device=device)
    return calibrated, calibrated.threshold


def evaluate_labelled(
    corpus: str | os.PathLike,
    *,
    detector: str = "default",
    model: str = DEFAULT_MODEL,
    label_field: str = "label",
    group_fields: tuple[str, ...] = (),
    text_field: str = "text",
    id_field: str = "id",
    target_fpr: float = 0.01,
    max_tokens: int = 512,
    device: str = "auto",
    output: str | os.PathLike | None = None,
    calibration_share: float = 0.0,
    seed: int = 0,
    calibrate_by: str | None = None,
    min_group_size: int | None = None,
    guarantee: Guarantee = "expected",
    n_boot: int = 1000,
) -> DetectEvalResult:
    """Score every document of a labelled corpus and evaluate the detector on it.

    The report is broken down by ``generator`` and ``domain`` when the corpus has them, and by
    every field of ``group_fields`` and ``calibrate_by``, which must exist. ``seed`` draws the
    ``calibration_share`` and seeds the ``n_boot`` bootstrap resamples of each group's AUROC.
    A threshold set here keeps ``target_fpr`` under ``guarantee`` (see
    :func:`provenance.thresholds.calibrate_threshold`).
    """
    from provenance.evaluate import evaluate_detector
    from provenance.thresholds import guarantee_text, threshold_for

    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if not 0.0 <= calibration_share < 1.0:
        raise ConfigError(f"calibration_share must be in [0, 1), got {calibration_share}")
    data = read_corpus(corpus, id_field=id_field, text_field=text_field, origins=True)
    frame = data.frame
    if label_field not in frame.columns:
        raise InputError(f"no label column {label_field!r}; set --label-field", file=str(corpus))
    synthetic = corpus_labels(data, label_field)  # refused here, before any text is scored
    fields = list(dict.fromkeys((*DEFAULT_GROUPS, *group_fields,
                                 *([calibrate_by] if calibrate_by else []))))
    for name in fields:
        if name not in frame.columns and (name == calibrate_by or name not in DEFAULT_GROUPS):
            purpose = "calibrate by (--calibrate-by)" if name == calibrate_by else "group by"
            raise InputError(f"no such field to {purpose}; the corpus has "
                             f"{', '.join(frame.columns)}", file=os.fspath(corpus), field=name)
    fields = [name for name in fields if name in frame.columns]
    scorer, saved_threshold = _detector(detector, model, device, max_tokens)
    start = time.perf_counter()
    texts = frame.get_column(text_field).to_list()
    scores = np.asarray(scorer.detect(texts).criterion if saved_threshold is not None
                        else scorer.score(texts), dtype=float)
    seconds = time.perf_counter() - start
    scored = ~np.isnan(scores)
    is_human = ~synthetic
    threshold, threshold_source = saved_threshold, "saved calibration"
    if saved_threshold is None or calibration_share or calibrate_by:
        calibration = scored & is_human
        if calibration_share:
            candidates = np.flatnonzero(calibration)
            rng = np.random.default_rng(seed)
            chosen = rng.permutation(candidates)[: int(round(calibration_share * len(candidates)))]
            calibration = np.zeros_like(scored)
            calibration[chosen] = True
            scored = scored & ~calibration  # evaluated on documents the threshold never saw
            threshold_source = (f"held-out: {len(chosen)} human documents of this corpus at FPR "
                                f"{target_fpr} ({guarantee_text(guarantee)}), excluded from "
                                "every number below")
        else:
            threshold_source = (f"in-sample: human documents of this corpus at FPR {target_fpr} "
                                f"({guarantee_text(guarantee)})")
        if not calibration.any():
            raise InputError("no scored human documents to calibrate the threshold on",
                             file=os.fspath(corpus))
        by = (np.asarray(frame.get_column(calibrate_by).to_list(), dtype=object)[calibration]
              if calibrate_by else None)
        threshold = threshold_for(scores[calibration], by, target_fpr,
                                  min_group_size=min_group_size, guarantee=guarantee)
        if calibrate_by:
            threshold_source += f", the highest of the per-{calibrate_by} thresholds"
        if saved_threshold is not None:
            threshold_source += f", replacing the saved threshold {saved_threshold:.4g}"
    groups = {
        g: [v for v, ok in zip(frame.get_column(g).to_list(), scored, strict=True) if ok]
        for g in fields
    }
    result = evaluate_detector(synthetic[scored], scores[scored], threshold, groups=groups,
                               n_boot=n_boot, seed=seed)
    report = {
        "corpus": os.fspath(corpus),
        "detector": detector,
        "model": model if detector in ZERO_SHOT else None,
        "threshold_source": threshold_source,
        "saved_threshold": saved_threshold,
        "calibrated_by": calibrate_by,
        "min_group_size": min_group_size,
        "fpr_guarantee": guarantee,
        "documents": frame.height,
        "unscored": int(np.isnan(scores).sum()),
        "evaluated": int(scored.sum()),
        "rejected_rows": data.counts.rejected,
        "seconds": round(seconds, 2),
        "docs_per_s": round(frame.height / seconds, 2) if seconds else None,
        **result.as_dict(),
        "worst_group_fpr": _worst_groups(result.groups),
    }
    if output is not None:
        with atomic_path(output) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return DetectEvalResult(report=report, scores=scores)


def _worst_groups(groups: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per grouping, the group with the highest FPR (most human documents flagged) at the
    threshold: ``group``, ``fpr``, ``fp``, ``n_human``; groupings without human documents are
    left out."""
    out = {}
    for name, rows in groups.items():
        with_humans = [row for row in rows.values() if row["fpr"] is not None]
        if with_humans:
            row = max(with_humans, key=lambda r: r["fpr"])
            out[name] = {k: row[k] for k in ("group", "fpr", "fp", "n_human")}
    return out
