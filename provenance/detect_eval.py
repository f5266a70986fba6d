"""Run a detector over a labelled corpus and report how good it is: ``tailguard detect-eval``.

A detector's numbers only mean something on data like the data it will tag, so this takes any
labelled corpus tailguard can read (label field ``human`` / ``machine`` / ``synthetic`` or
booleans) and reports AUROC, TPR at 1% and 0.1% FPR, the confusion matrix at the calibrated
threshold, and the same per generator and per domain.

The detector is either a saved, calibrated detector folder, or a zero-shot method by name
(``fast-detectgpt``, ``loglik``) with a causal LM. An uncalibrated zero-shot detector gets its
threshold from the human part of the labelled corpus at the target FPR; that is in-sample, and the
report says so. With ``calibration_share`` (``--calibration-share 0.5``) a seeded draw of that
share of the human documents sets the threshold and is left out of the evaluation, so every
number in the report is measured on documents the threshold never saw.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.atomic import atomic_path
from provenance.corpus import read_corpus
from provenance.errors import ConfigError, InputError
from provenance.models import DEFAULT_MODEL

ZERO_SHOT = ("fast-detectgpt", "loglik")


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
    if not Path(detector).exists():
        raise InputError(
            f"no saved detector here; pass a detector folder or one of {', '.join(ZERO_SHOT)}",
            file=detector,
        )
    calibrated = detectors.load_detector(detector, device=device)
    return calibrated, calibrated.threshold


def evaluate_labelled(
    corpus: str | os.PathLike,
    *,
    detector: str = "fast-detectgpt",
    model: str = DEFAULT_MODEL,
    label_field: str = "label",
    group_fields: tuple[str, ...] = ("generator", "domain"),
    text_field: str = "text",
    id_field: str = "id",
    target_fpr: float = 0.01,
    max_tokens: int = 512,
    device: str = "auto",
    output: str | os.PathLike | None = None,
    calibration_share: float = 0.0,
    seed: int = 0,
) -> DetectEvalResult:
    """Score every document of a labelled corpus and evaluate the detector on it."""
    from provenance.evaluate import calibrate_threshold, evaluate_detector

    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if not 0.0 <= calibration_share < 1.0:
        raise ConfigError(f"calibration_share must be in [0, 1), got {calibration_share}")
    data = read_corpus(corpus, id_field=id_field, text_field=text_field)
    frame = data.frame
    if label_field not in frame.columns:
        raise InputError(f"no label column {label_field!r}; set --label-field", file=str(corpus))
    scorer, threshold = _detector(detector, model, device, max_tokens)
    start = time.perf_counter()
    texts = frame.get_column(text_field).to_list()
    scores = np.asarray(scorer.detect(texts).criterion if threshold is not None
                        else scorer.score(texts), dtype=float)
    seconds = time.perf_counter() - start
    labels = frame.get_column(label_field).to_list()
    scored = ~np.isnan(scores)
    is_human = np.array([str(lb).lower() in ("human", "0", "false") for lb in labels])
    threshold_source = "saved calibration"
    if threshold is None:
        calibration = scored & is_human
        if calibration_share:
            candidates = np.flatnonzero(calibration)
            rng = np.random.default_rng(seed)
            chosen = rng.permutation(candidates)[: int(round(calibration_share * len(candidates)))]
            calibration = np.zeros_like(scored)
            calibration[chosen] = True
            scored = scored & ~calibration  # evaluated on documents the threshold never saw
            threshold_source = (f"held-out: {len(chosen)} human documents of this corpus at FPR "
                                f"{target_fpr}, excluded from every number below")
        else:
            threshold_source = f"in-sample: human documents of this corpus at FPR {target_fpr}"
        if not calibration.any():
            raise InputError("no scored human documents to calibrate the threshold on",
                             file=os.fspath(corpus))
        threshold = calibrate_threshold(scores[calibration], target_fpr)
    kept_labels = [lb for lb, ok in zip(labels, scored, strict=True) if ok]
    groups = {
        g: [v for v, ok in zip(frame.get_column(g).to_list(), scored, strict=True) if ok]
        for g in group_fields if g in frame.columns
    }
    result = evaluate_detector(kept_labels, scores[scored], threshold, groups=groups)
    report = {
        "corpus": os.fspath(corpus),
        "detector": detector,
        "model": model if detector in ZERO_SHOT else None,
        "threshold_source": threshold_source,
        "documents": frame.height,
        "unscored": int(np.isnan(scores).sum()),
        "evaluated": int(scored.sum()),
        "rejected_rows": data.counts.rejected,
        "seconds": round(seconds, 2),
        "docs_per_s": round(frame.height / seconds, 2) if seconds else None,
        **result.as_dict(),
    }
    if output is not None:
        with atomic_path(output) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return DetectEvalResult(report=report, scores=scores)
