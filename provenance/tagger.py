"""Fuse evidence into one provenance label per document.

Signals are applied in order of reliability — declared > ledger exact > watermark > ledger near >
detector (the order of :class:`~provenance.schema.Evidence`) — and the first one with evidence
about a document decides it; later signals only see what is still undecided, so an expensive
detector never runs on documents the metadata or the ledger already settled. What decided each
document, and its numbers, are kept in ``prov_evidence`` and ``prov_detail``. Documents nothing
decided are ``unknown`` with evidence ``none``: absence of evidence is not read as human.

:func:`tag` returns a DataFrame for in-memory use; :func:`tag_corpus` streams a corpus of any
size from files to a tagged file plus a rejects file, and is what ``tailguard tag`` calls.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from provenance.corpus import (
    DEFAULT_BATCH_SIZE,
    CorpusCounts,
    CorpusReader,
    CorpusWriter,
    Reject,
    RejectsWriter,
    progress_bar,
    rejects_path_for,
)
from provenance.declared import DEFAULT_RULES, DeclaredRule, DeclaredSignal
from provenance.errors import ConfigError, TailguardWarning
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


def iter_tagged(
    reader: CorpusReader, tagger: Tagger, *, progress: bool = False
) -> Iterator[pl.DataFrame]:
    """Tagged batches of a corpus, with a progress bar over documents read."""
    bar = progress_bar(reader, "tagging", progress)
    seen = 0
    with bar:
        for batch in reader:
            yield tagger.tag_batch(batch, reader.text_field)
            bar.update(reader.counts.read - seen)
            seen = reader.counts.read
        bar.update(reader.counts.read - seen)


def tag(
    source: Any,
    *,
    ledger: Ledger | str | os.PathLike | None = None,
    declared: Sequence[DeclaredRule | str] | None = DEFAULT_RULES,
    near_threshold: float | None = DEFAULT_NEAR_THRESHOLD,
    watermark: Any = None,
    detector: Any = None,
    signals: Sequence[Signal] | None = None,
    id_field: str = ID,
    text_field: str = TEXT,
    strict: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_reject: Any = None,
    progress: bool = False,
) -> pl.DataFrame:
    """Tag a corpus (path, polars frame or ``datasets.Dataset``) in memory.

    Parameters
    ----------
    source : path, glob, DataFrame, LazyFrame or datasets.Dataset
        The documents (see :class:`~provenance.corpus.CorpusReader`).
    ledger : Ledger or path, optional
        Known generated content to match exactly and by MinHash.
    declared : sequence of DeclaredRule or str, optional
        Metadata fields that declare provenance (default: the standard vocabularies).
    near_threshold : float or None, default 0.8
        Jaccard similarity for a ledger near match; ``None`` disables near matching.
    watermark : WatermarkKey or WatermarkScorer, optional
        Detect your models' text watermark (the key must carry its secret).
    detector : CalibratedDetector or path, optional
        A calibrated zero-shot or supervised detector for whatever is still undecided.
    signals : sequence of Signal, optional
        Use exactly these signals instead of building them from the arguments above.
    on_reject : callable, optional
        Receives rows that could not be read. Without it, rejected rows are counted in a
        warning; use :func:`tag_corpus` to write them to a file.

    Returns
    -------
    polars.DataFrame
        The input columns plus ``prov_label``, ``prov_score``, ``prov_evidence``,
        ``prov_generator``, ``prov_generation``, ``prov_detail``.

    Examples
    --------
    >>> import polars as pl
    >>> docs = pl.DataFrame({
    ...     "id": ["1", "2", "3"],
    ...     "text": ["a news story", "a model's answer", "a forum post"],
    ...     "language_creators": [["found"], ["machine-generated"], None],
    ... })
    >>> tag(docs).select("id", "prov_label", "prov_evidence").rows()
    [('1', 'human', 'declared'), ('2', 'synthetic', 'declared'), ('3', 'unknown', 'none')]
    """
    rejects: list[Reject] = []
    reader = CorpusReader(
        source,
        id_field=id_field,
        text_field=text_field,
        batch_size=batch_size,
        strict=strict,
        on_reject=on_reject or rejects.append,
    )
    with opened_ledger(ledger) as db:
        if signals is None:
            signals = build_signals(ledger=db, declared=declared, near_threshold=near_threshold,
                                    watermark=watermark, detector=detector)
        frames = list(iter_tagged(reader, Tagger(signals), progress=progress))
    if rejects:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(reader.counts.by_reason.items()))
        warnings.warn(
            f"{len(rejects)} of {reader.counts.read} rows could not be read ({reasons}); pass "
            "on_reject= to collect them, or use tag_corpus() to write a rejects file",
            TailguardWarning,
            stacklevel=2,
        )
    if frames:
        return pl.concat(frames, how="diagonal_relaxed")
    return pl.DataFrame(schema=tagged_schema(id_field, text_field))


def tag_corpus(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    ledger: Ledger | str | os.PathLike | None = None,
    declared: Sequence[DeclaredRule | str] | None = DEFAULT_RULES,
    near_threshold: float | None = DEFAULT_NEAR_THRESHOLD,
    watermark: Any = None,
    detector: Any = None,
    signals: Sequence[Signal] | None = None,
    id_field: str = ID,
    text_field: str = TEXT,
    strict: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    estimate_prevalence: bool = False,
    progress: bool = False,
    engine: Any = "local",
    ray_address: str | None = None,
) -> TagReport:
    """Tag a corpus file by file and batch by batch into ``output`` (parquet or jsonl).

    Memory stays bounded by the batch size. Rows that cannot be read go to
    ``<output>.rejects.jsonl`` (created only if there are any), so that output rows + rejected
    rows = input rows. Both files appear atomically: an interrupted run leaves no partial output.
    Parameters are those of :func:`tag`. With ``estimate_prevalence`` (needs a detector
    calibrated on human and machine text), the report adds the share of synthetic documents
    corrected for the detector's measured error rates (Rogan-Gladen, 95% interval).

    ``engine="ray"`` (or a :class:`~provenance.engines.RayEngine`) tags the shards on a Ray
    cluster (``ray_address``, default: a local Ray) with the same output; see
    :mod:`provenance.ray_tagger`. Needs ``pip install "tailguard[ray]"``.
    """
    from provenance.engines import resolve_engine

    ray_engine = resolve_engine(engine, ray_address)
    if ray_engine is not None:
        from provenance.ray_tagger import tag_corpus_ray

        return tag_corpus_ray(
            input, output, engine=ray_engine, ledger=ledger, declared=declared,
            near_threshold=near_threshold, watermark=watermark, detector=detector,
            signals=signals, id_field=id_field, text_field=text_field, strict=strict,
            batch_size=batch_size, estimate_prevalence=estimate_prevalence, progress=progress,
        )
    check_tag_output(input, output, ledger=ledger, watermark=watermark, detector=detector)
    start = time.perf_counter()
    rejects_file = rejects_path_for(output)
    with (
        opened_ledger(ledger) as db,
        RejectsWriter(rejects_file) as sink,
        CorpusWriter(output, schema=tagged_schema(id_field, text_field)) as writer,
    ):
        if signals is None:
            signals = build_signals(ledger=db, declared=declared, near_threshold=near_threshold,
                                    watermark=watermark, detector=detector)
        tagger = Tagger(signals)
        if estimate_prevalence:
            _prevalence_detector(tagger)
        reader = CorpusReader(
            input,
            id_field=id_field,
            text_field=text_field,
            batch_size=batch_size,
            strict=strict,
            on_reject=sink,
        )
        for batch in iter_tagged(reader, tagger, progress=progress):
            writer.write(batch)
    extra = {"prevalence": _prevalence(tagger)} if estimate_prevalence else {}
    return TagReport(
        extra=extra,
        input=os.fspath(input),
        output=os.fspath(output),
        rejects_file=str(rejects_file) if sink.count else None,
        counts=reader.counts,
        by_label=dict(sorted(tagger.by_label.items())),
        by_evidence=dict(sorted(tagger.by_evidence.items())),
        signals=tagger.signal_stats(),
        seconds=time.perf_counter() - start,
    )


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


def _prevalence_detector(tagger: Tagger) -> Any:
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


def _prevalence(tagger: Tagger) -> dict[str, Any]:
    """Synthetic share of the corpus: decided evidence counted, the detector's part corrected.

    Documents settled by declared metadata, the ledger or the watermark are counted as labelled.
    Among the documents the detector scored, the flagged share is corrected for its measured TPR
    and FPR (Rogan-Gladen), with an interval that includes their calibration error. Documents
    nobody could score widen the corpus interval (all human to all synthetic).
    """
    from provenance.evaluate import estimate_prevalence

    cal = _prevalence_detector(tagger).detector.calibration
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


__all__ = [
    "Tagger",
    "TagReport",
    "build_signals",
    "check_tag_output",
    "iter_tagged",
    "opened_ledger",
    "tag",
    "tag_corpus",
    "tagged_schema",
]
