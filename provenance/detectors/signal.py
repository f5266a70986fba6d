"""A calibrated detector as a signal of the tagger: the last, least reliable evidence."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from provenance.detectors.calibrated import CalibratedDetector, Detection
from provenance.errors import ConfigError
from provenance.schema import Evidence, Label, Tag
from provenance.signals import Signal

if TYPE_CHECKING:
    import polars as pl


class DetectorSignal(Signal):
    """A calibrated detector as the last, least reliable evidence of the tagger.

    Every document it sees gets a tag: ``synthetic`` when the criterion reaches the threshold,
    ``human`` below it (a calibrated detector's "no" is evidence of human writing, unlike a
    ledger miss), and ``unknown`` with the reason when the text cannot be scored. The score is
    the calibrated P(synthetic) in both cases (empty when the detector was calibrated on human
    text only); ``prov_detail`` keeps the criterion, threshold and p-value.
    """

    evidence = Evidence.DETECTOR

    def __init__(self, detector: CalibratedDetector) -> None:
        super().__init__()
        if not isinstance(detector, CalibratedDetector):
            raise ConfigError(
                "DetectorSignal needs a calibrated detector: calibrate(detector, human_texts) "
                "or load_detector(path)"
            )
        self.detector = detector

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        result = self.detector.detect(batch.get_column(text_field).to_list())
        return [self._tag(result, i) for i in range(len(result.reasons))]

    def _tag(self, result: Detection, i: int) -> Tag:
        name = self.detector.name
        if result.reasons[i] is not None or math.isnan(result.criterion[i]):
            reason = result.reasons[i] or "not scored"
            return Tag(Label.UNKNOWN, None, self.evidence, detail={"reason": reason,
                                                                    "detector": name})
        proba = result.proba[i]
        if result.undecided is not None and result.undecided[i]:
            return Tag(Label.UNKNOWN, None if math.isnan(proba) else float(proba),
                       self.evidence, detail={
                           "reason": "not decisive: P(synthetic) between the human band and "
                                     "the threshold",
                           "criterion": float(result.criterion[i]),
                           "threshold": self.detector.threshold, "detector": name})
        return Tag(
            label=Label.SYNTHETIC if result.flagged[i] else Label.HUMAN,
            score=None if math.isnan(proba) else float(np.clip(proba, 0.0, 1.0)),
            evidence=self.evidence,
            detail={
                "criterion": float(result.criterion[i]),
                "threshold": self.detector.threshold,
                "target_fpr": self.detector.target_fpr,
                "p_value": round(float(result.p_value[i]), 6),
                "detector": name,
                "n_tokens": int(result.n_tokens[i]),
            },
        )
