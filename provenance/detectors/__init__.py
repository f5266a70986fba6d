"""Detectors: evidence about a document that was never registered anywhere.

Declared metadata, ledgers and watermarks only catch generated text whose producer cooperated.
Everything else needs a detector that looks at the text itself. Three kinds are here:

* :class:`FastDetectGPT` (Bao et al., ICLR 2024), zero-shot: a model's own samples sit close to
  the model's expected log-probability at every position, while human text keeps surprising it.
  The analytic sampling discrepancy measures this in one forward pass.
* :class:`Binoculars` (Hans et al., 2024), zero-shot with two related models: the perplexity of
  the text relative to how surprised one model expects to be by the other's predictions.
* :class:`SupervisedDetector` (trained with :func:`train`, ``tailguard detect-train``): the
  language model's per-token statistics and token n-gram models of human text, summarised per
  document, with a small network that learns their direction from labelled data, behind the
  n-gram classifier as a cheap first stage. The one tailguard ships (``DEFAULT_DETECTOR``,
  ``--detector default``) was trained on four public human/machine sets (its ``DATA_CARD.md``
  says which and how well).
* :class:`NgramClassifier`, supervised: hashed character n-grams and a logistic regression, for
  when labelled examples of the generators you care about exist. Nothing is fitted except the
  linear weights, which are saved as safetensors (never pickle).

A :class:`Detector` returns a raw criterion (higher = more machine-like; NaN with a reason where a
text cannot be scored). The raw number means nothing until it is calibrated on text known to be
human: :func:`calibrate` sets the threshold for a target false-positive rate and, given machine
text too, a Platt map to P(synthetic) and the measured TPR/FPR that prevalence correction needs.
A :class:`CalibratedDetector` saves to a folder (JSON, plus safetensors for the classifier) that
:func:`load_detector` reads back, and :class:`DetectorSignal` puts it into the tagger. A
threshold holds only on human text like its calibration set: :func:`recalibrate` (``tailguard
detect-calibrate``) re-sets a saved detector's on human text from the crawl it will tag.

One module per part: ``base`` (the interface), ``lm_statistics`` (the formulas), ``zero_shot``,
``ngram``, ``calibration``, ``recalibration``, ``calibrated`` (save/load), ``files`` (the
on-disk format), ``signal`` and the supervised detector's ``training``, ``supervised``,
``document_features``, ``token_statistics``, ``token_ngrams``, ``token_store``. Import from
here.
"""

from provenance.detectors.base import Detector, Scores
from provenance.detectors.calibrated import (
    DEFAULT_DETECTOR,
    CalibratedDetector,
    Detection,
    detector_from_spec,
    load_detector,
)
from provenance.detectors.calibration import calibrate, fit_platt
from provenance.detectors.files import DETECTOR_FILE
from provenance.detectors.lm_statistics import (
    binoculars_terms,
    fast_detectgpt_criterion,
    sampling_discrepancy_terms,
)
from provenance.detectors.ngram import NgramClassifier, NgramParams
from provenance.detectors.recalibration import recalibrate
from provenance.detectors.signal import DetectorSignal
from provenance.detectors.supervised import SupervisedDetector
from provenance.detectors.token_statistics import TokenStatistics
from provenance.detectors.training import train
from provenance.detectors.zero_shot import (
    Binoculars,
    CausalLMDetector,
    FastDetectGPT,
    LogLikelihood,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTOR_FILE",
    "Binoculars",
    "CalibratedDetector",
    "CausalLMDetector",
    "Detection",
    "Detector",
    "DetectorSignal",
    "FastDetectGPT",
    "LogLikelihood",
    "NgramClassifier",
    "NgramParams",
    "Scores",
    "SupervisedDetector",
    "TokenStatistics",
    "binoculars_terms",
    "calibrate",
    "detector_from_spec",
    "fast_detectgpt_criterion",
    "fit_platt",
    "load_detector",
    "recalibrate",
    "sampling_discrepancy_terms",
    "train",
]
