"""Fuse evidence into one provenance label per document.

Signals are applied in order of reliability — declared > ledger exact > watermark > ledger near >
detector (the order of :class:`~provenance.schema.Evidence`) — and the first one with evidence
about a document decides it; later signals only see what is still undecided, so an expensive
detector never runs on documents the metadata or the ledger already settled. What decided each
document, and its numbers, are kept in ``prov_evidence`` and ``prov_detail``. Documents nothing
decided are ``unknown`` with evidence ``none``: absence of evidence is not read as human.

:class:`Tagger` does the fusion on one batch; the functions here build its signals, check a
run's output and report what it decided. Running it over a corpus is :mod:`provenance.tagger`'s
(this process) and :mod:`provenance.ray_tagger`'s (a Ray cluster), with the same results.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from provenance.corpus import CorpusCounts, rejects_path_for
from provenance.declared import DEFAULT_RULES, DeclaredRule, DeclaredSignal
from provenance.errors import ConfigError
from provenance.ledger import Ledger
from provenance.outputs import check_output
from provenance.schema import (
    ID,
    TAG_COLUMNS,
    TAG_SCHEMA,
    TEXT,
    UNTAGGED,
    Evidence,
    Label,
    Tag,
    tags_frame,
)
from provenance.signals import LedgerExactSignal, LedgerNearSignal, Signal

__all__ = [
    "DEFAULT_NEAR_THRESHOLD",
    "TagReport",
    "Tagger",
    "build_signals",
    "check_tag_output",
    "corpus_prevalence",
    "opened_ledger",
    "prevalence_detector",
    "tagged_schema",
]

DEFAULT_NEAR_THRESHOLD = 0.8


class Tagger:
    """Apply signals in fusion order to batches and keep running totals.

    Examples
    --------
    >>> import polars as pl
    >>> tagger = Tagger([DeclaredSignal()])
    >>> batch = pl.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "is_synthetic": [True, None]})
    >>> tagger.tag_batch(batch).get_column("prov_label").to_list()
    ['synthetic', 'unknown']
    """

    def __init__(self, signals: Iterable[Signal]) -> None:
        self.signals = sorted(signals, key=lambda s: s.evidence.priority)
        kinds = [s.evidence for s in self.signals]
        repeated = {k.value for k in kinds if kinds.count(k) > 1}
        if repeated:
            raise ConfigError(f"one signal per kind of evidence; got several for {repeated}")
        self.by_label: Counter = Counter()
        self.by_evidence: Counter = Counter()
        self.by_evidence_label: Counter = Counter()

    def tag_batch(self, batch: pl.DataFrame, text_field: str = TEXT) -> pl.DataFrame:
        """``batch`` with the provenance columns set (existing ones are replaced)."""
        tags: list[Tag | None] = [None] * batch.height
        pending = list(range(batch.height))
        for signal in self.signals:
            if not pending:
                break
            subset = batch if len(pending) == batch.height else batch[pending]
            still_pending = []
            for index, tag in zip(pending, signal.run(subset, text_field), strict=True):
                if tag is None:
                    still_pending.append(index)
                else:
                    tags[index] = tag
            pending = still_pending
        final = [UNTAGGED if t is None else t for t in tags]
        self.by_label.update(t.label.value for t in final)
        self.by_evidence.update(t.evidence.value for t in final)
        self.by_evidence_label.update((t.evidence.value, t.label.value) for t in final)
        kept = batch.drop([c for c in TAG_COLUMNS if c in batch.columns])
        return kept.hstack(tags_frame(final))

    def signal_stats(self) -> dict[str, dict[str, float]]:
        return {s.name: s.stats.as_dict() for s in self.signals}


@contextlib.contextmanager
def opened_ledger(ledger: Ledger | str | os.PathLike | None) -> Iterator[Ledger | None]:
    """The ledger to tag against; a path is opened read-only (tagging never writes to it) and
    closed on exit, a :class:`Ledger` object stays open for its owner."""
    if ledger is None or isinstance(ledger, Ledger):
        yield ledger
        return
    with Ledger(ledger, create=False, read_only=True) as opened:
        yield opened


def build_signals(
    *,
    ledger: Ledger | None = None,
    declared: Sequence[DeclaredRule | str] | None = DEFAULT_RULES,
    near_threshold: float | None = DEFAULT_NEAR_THRESHOLD,
    watermark: Any = None,
    detector: Any = None,
) -> list[Signal]:
    """The standard signals for the evidence given.

    ``declared=None`` (or empty) ignores metadata; ``near_threshold=None`` turns near matching
    off. Rules may be given in their CLI form (see :meth:`DeclaredRule.parse`). A ledger given
    as a path must be opened by the caller (see :func:`opened_ledger`). ``watermark`` is a
    :class:`~provenance.watermark.WatermarkKey` (with its secret) or scorer; ``detector`` a
    :class:`~provenance.detectors.CalibratedDetector` or a saved detector's folder.
    """
    signals: list[Signal] = []
    if declared:
        rules = [DeclaredRule.parse(r) if isinstance(r, str) else r for r in declared]
        signals.append(DeclaredSignal(rules))
    if ledger is not None:
        if not isinstance(ledger, Ledger):
            raise ConfigError("build_signals needs an open Ledger; wrap a path in opened_ledger()")
        signals.append(LedgerExactSignal(ledger))
        if near_threshold is not None:
            signals.append(LedgerNearSignal(ledger, near_threshold))
    if watermark is not None:
        from provenance.watermark import WatermarkSignal

        signals.append(watermark if isinstance(watermark, Signal) else WatermarkSignal(watermark))
    if detector is not None:
        from provenance.detectors import DetectorSignal, load_detector

        if isinstance(detector, (str, os.PathLike)):
            detector = load_detector(detector)
        signals.append(detector if isinstance(detector, Signal) else DetectorSignal(detector))
    return signals


@dataclass
class TagReport:
    """What a tagging run read, decided, rejected and wrote."""

    input: str
    output: str | None
    rejects_file: str | None
    counts: CorpusCounts
    by_label: dict[str, int]
    by_evidence: dict[str, int]
    signals: dict[str, dict[str, float]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.counts.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rejects_file": self.rejects_file,
            **self.counts.as_dict(),
            "by_label": self.by_label,
            "by_evidence": self.by_evidence,
            "signals": self.signals,
            "seconds": round(self.seconds, 3),
            "docs_per_s": round(self.docs_per_s, 1),
            **self.extra,
        }


def check_tag_output(input: Any, output: str | os.PathLike, *, ledger: Any = None,
                     watermark: Any = None, detector: Any = None) -> None:
    """Refuse, before any work, an output (or its rejects file) that cannot be written or that
    is, holds or lies inside what the run reads: the corpus, the ledger, a watermark key file,
    the detector (see :func:`provenance.outputs.check_output`).

    Examples
    --------
    >>> check_tag_output("crawl/", "crawl/tagged.parquet")
    Traceback (most recent call last):
    ...
    provenance.errors.OutputError: crawl/tagged.parquet: the output lies inside the input ...
    """
    reads = [input, ledger.path if isinstance(ledger, Ledger) else ledger, detector, watermark]
    inputs = [r for r in reads if isinstance(r, (str, os.PathLike))]
    for path in (output, rejects_path_for(output) if str(output).strip() else None):
        check_output(path, inputs, folder=False)


def tagged_schema(id_field: str = ID, text_field: str = TEXT) -> dict[str, pl.DataType]:
    """The columns every tagged corpus has, with their dtypes: what an empty one holds.

    Examples
    --------
    >>> list(tagged_schema())
    ['id', 'text', 'prov_label', 'prov_score', 'prov_evidence', 'prov_generator', \
'prov_generation', 'prov_detail']
    """
    return {id_field: pl.String(), text_field: pl.String(), **TAG_SCHEMA}


def prevalence_detector(tagger: Tagger) -> Any:
    for signal in tagger.signals:
        if signal.evidence is Evidence.DETECTOR:
            calibration = signal.detector.calibration
            if "tpr" not in calibration:
                raise ConfigError(
                    "estimate_prevalence needs the detector's true-positive rate: calibrate it "
                    "with machine_texts as well as human texts"
                )
            return signal
    raise ConfigError("estimate_prevalence needs a calibrated detector (--detector PATH)")


def corpus_prevalence(tagger: Tagger) -> dict[str, Any]:
    """Synthetic share of the corpus: decided evidence counted, the detector's part corrected.

    Documents settled by declared metadata, the ledger or the watermark are counted as labelled.
    Among the documents the detector scored, the flagged share is corrected for its measured TPR
    and FPR (Rogan-Gladen), with an interval that includes their calibration error. Documents
    nobody could score widen the corpus interval (all human to all synthetic).
    """
    from provenance.evaluate import estimate_prevalence

    cal = prevalence_detector(tagger).detector.calibration
    pairs = tagger.by_evidence_label
    detector = Evidence.DETECTOR.value
    flagged = pairs[(detector, Label.SYNTHETIC.value)]
    scored = flagged + pairs[(detector, Label.HUMAN.value)]
    total = sum(pairs.values())
    synthetic_elsewhere = sum(
        n for (ev, lb), n in pairs.items() if lb == Label.SYNTHETIC.value and ev != detector
    )
    decided_elsewhere = sum(
        n for (ev, _), n in pairs.items() if ev not in (detector, Evidence.NONE.value)
    )
    unresolved = total - decided_elsewhere - scored
    result: dict[str, Any] = {"documents": total, "detector_scored": scored,
                              "detector_flagged": flagged, "unresolved": unresolved}
    if scored:
        est = estimate_prevalence(flagged, scored, cal["tpr"], cal["fpr"],
                                  cal["n_machine"], cal["n_human"])
        result["among_detector_scored"] = est.as_dict()
        result["corpus"] = {
            "estimate": (synthetic_elsewhere + est.estimate * scored) / total,
            "low": (synthetic_elsewhere + est.low * scored) / total,
            "high": (synthetic_elsewhere + est.high * scored + unresolved) / total,
        }
    return result
