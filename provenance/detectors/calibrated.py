"""A detector with its threshold and probability map: what is saved, loaded and tagged with.

:class:`CalibratedDetector` saves to a folder (JSON, plus safetensors for a trained classifier)
that :func:`load_detector` reads back; :func:`detector_from_spec` rebuilds the bare detector a
saved JSON describes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.detectors.base import Detector
from provenance.detectors.files import (
    DETECTOR_FILE,
    FORMAT,
    FORMAT_VERSION,
    file_sha256,
    read_json,
    tool_versions,
    write_json,
)
from provenance.detectors.ngram import NgramClassifier
from provenance.detectors.supervised import SupervisedDetector
from provenance.detectors.zero_shot import (
    Binoculars,
    CausalLMDetector,
    FastDetectGPT,
    LogLikelihood,
)
from provenance.errors import ConfigError, InputError

#: The detector tailguard ships (trained on public human/machine text; see its DATA_CARD.md).
DEFAULT_DETECTOR = Path(__file__).parent / "default"


@dataclass
class Detection:
    """What a calibrated detector says about each text."""

    criterion: np.ndarray
    proba: np.ndarray  # NaN everywhere when calibrated without machine text
    p_value: np.ndarray  # share of calibration human texts scoring at least as high
    flagged: np.ndarray
    reasons: list[str | None]
    n_tokens: np.ndarray
    undecided: np.ndarray | None = None  # below the threshold but not clearly human

    def __post_init__(self) -> None:
        if self.undecided is None:
            self.undecided = np.zeros(len(self.reasons), dtype=bool)


class CalibratedDetector:
    """A detector with a threshold for a known false-positive rate, and a probability map.

    ``calibration`` holds ``n_human``, ``fpr`` and ``human_quantiles`` (the human criterion
    distribution, for p-values) and, when machine text was given, ``n_machine``, ``tpr``,
    ``auroc`` and ``platt`` = (a, b), the map to P(synthetic). Build one with :func:`calibrate`;
    save it with :meth:`save`.
    """

    def __init__(
        self, detector: Detector, threshold: float, target_fpr: float, calibration: dict[str, Any]
    ) -> None:
        if not math.isfinite(threshold):
            raise ConfigError(f"threshold must be a finite number, got {threshold}")
        if not calibration.get("human_quantiles") and not calibration.get("platt"):
            raise ConfigError("calibration needs 'platt' (a, b) or 'human_quantiles'")
        self.detector = detector
        self.threshold = float(threshold)
        self.target_fpr = float(target_fpr)
        self.calibration = calibration

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def has_probability(self) -> bool:
        """Whether machine text was calibrated on, so that P(synthetic) can be given."""
        return bool(self.calibration.get("platt"))

    def proba_from_criterion(self, criterion: np.ndarray) -> np.ndarray:
        """P(synthetic) for raw criterion values via the Platt map (NaN without one)."""
        x = np.asarray(criterion, dtype=np.float64)
        if not self.has_probability:
            return np.full(x.shape, np.nan)
        a, b = self.calibration["platt"]
        return 1.0 / (1.0 + np.exp(-(a * x + b)))

    def p_value_from_criterion(self, criterion: np.ndarray) -> np.ndarray:
        """Share of the calibration human texts with a criterion at least ``criterion``.

        Read off the stored human quantiles; never below ``1 / (n_human + 1)``, since a sample
        of ``n_human`` cannot show a smaller tail.
        """
        x = np.asarray(criterion, dtype=np.float64)
        quantiles = np.asarray(self.calibration.get("human_quantiles") or [], dtype=np.float64)
        if len(quantiles) == 0:
            return np.full(x.shape, np.nan)
        levels = np.linspace(0.0, 1.0, len(quantiles))
        floor = 1.0 / (int(self.calibration.get("n_human", len(quantiles))) + 1)
        tail = 1.0 - np.interp(x, quantiles, levels, left=0.0, right=1.0)
        return np.where(np.isnan(x), np.nan, np.maximum(tail, floor))

    def detect(self, texts: Sequence[str]) -> Detection:
        """Criterion, probability, p-value, verdict (criterion >= threshold) and reasons."""
        scores = self.detector.score_detailed(texts)
        with np.errstate(invalid="ignore"):
            flagged = scores.values >= self.threshold
            below = self.calibration.get("undecided_below")
            undecided = (~flagged & (scores.values >= below) if below is not None
                         else np.zeros(len(flagged), dtype=bool))
        return Detection(
            criterion=scores.values,
            proba=self.proba_from_criterion(scores.values),
            p_value=self.p_value_from_criterion(scores.values),
            flagged=flagged,
            reasons=scores.reasons,
            n_tokens=scores.n_tokens,
            undecided=undecided,
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(synthetic) per text; NaN where a text cannot be scored.

        Needs a calibration with machine text (see :func:`calibrate`).
        """
        if not self.has_probability:
            raise ConfigError(
                "this detector was calibrated on human text only, which gives a threshold and "
                "p-values but no probability; pass machine_texts to calibrate()"
            )
        return self.detect(texts).proba

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``detector.json`` (and the classifier's safetensors) into ``folder``.

        The JSON is written last, so a folder with a ``detector.json`` is complete.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.detector.save_weights(folder)
        spec = self.detector.spec()
        if "weights" in spec:
            spec["sha256"] = file_sha256(folder / spec["weights"])
        write_json(
            folder / DETECTOR_FILE,
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "name": self.name,
                "detector": spec,
                "threshold": self.threshold,
                "target_fpr": self.target_fpr,
                "calibration": self.calibration,
                "versions": tool_versions(),
            },
        )
        return folder

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: str = "auto", dtype: str | None = None
    ) -> CalibratedDetector:
        """Rebuild a detector saved by :meth:`save` (``path``: its folder or ``detector.json``).

        Models load in the dtype they were calibrated in unless ``dtype`` says otherwise (the
        threshold belongs to the numbers the model produced then).
        """
        path = Path(path)
        file = path / DETECTOR_FILE if path.is_dir() else path
        data = read_json(file)
        try:
            detector = detector_from_spec(data["detector"], file.parent, device=device, dtype=dtype)
            return cls(detector, data["threshold"], data["target_fpr"], data["calibration"])
        except KeyError as exc:
            raise InputError(
                f"not a saved detector: no {exc.args[0]!r} entry", file=str(file)
            ) from exc


def load_detector(
    path: str | os.PathLike, *, device: str = "auto", dtype: str | None = None
) -> CalibratedDetector:
    """Load a calibrated detector folder (what ``tailguard tag --detector PATH`` reads).

    ``"default"`` (when no such folder exists here) is the detector tailguard ships,
    :data:`DEFAULT_DETECTOR`.
    """
    if str(path) == "default" and not Path(path).exists():
        path = DEFAULT_DETECTOR
    return CalibratedDetector.load(path, device=device, dtype=dtype)


def detector_from_spec(
    spec: dict[str, Any], folder: Path, *, device: str = "auto", dtype: str | None = None
) -> Detector:
    """The detector a :meth:`Detector.spec` describes (weights read from ``folder``)."""
    kind = spec.get("kind")
    if kind == NgramClassifier.kind:
        return NgramClassifier.from_spec(spec, folder)
    if kind == SupervisedDetector.kind:
        _check_weights(spec, folder)
        return SupervisedDetector.from_spec(spec, folder, device=device, dtype=dtype)
    lm_kinds: dict[str, type[CausalLMDetector]] = {
        FastDetectGPT.kind: FastDetectGPT,
        LogLikelihood.kind: LogLikelihood,
        Binoculars.kind: Binoculars,
    }
    if kind not in lm_kinds:
        raise InputError(f"unknown detector kind {kind!r}; expected one of "
                         f"{sorted([*lm_kinds, NgramClassifier.kind, SupervisedDetector.kind])}")
    options = {
        "device": device,
        "dtype": dtype or spec.get("dtype", "auto"),
        "batch_size": spec.get("batch_size", 8),
        "max_tokens": spec.get("max_tokens", 512),
        "min_tokens": spec.get("min_tokens", 16),
        "prefix": spec.get("prefix", ""),
    }
    if kind == Binoculars.kind:
        return Binoculars(spec["observer"], spec["performer"], **options)
    return lm_kinds[kind](spec["model"], **options)


def _check_weights(spec: dict[str, Any], folder: Path) -> None:
    """Refuse weights that are not the ones the JSON was saved with (swapped, half-copied)."""
    weights = folder / str(spec.get("weights", ""))
    if not weights.is_file():
        raise InputError("detector weights are missing", file=str(weights))
    expected = spec.get("sha256")
    if expected and file_sha256(weights) != expected:
        raise InputError("detector weights do not match their JSON (sha256 differs)",
                         file=str(weights))
