"""Fuse evidence into one provenance label per document.

Signals are applied in the fusion order of the registered kinds of evidence
(:mod:`provenance.registry`: declared > ledger exact > watermark > ledger near > detector for the
built-in ones) and the first one with evidence about a document decides it; later signals only
see what is still undecided, so an expensive detector never runs on documents the metadata or the
ledger already settled. What decided each document, and its numbers, are kept in
``prov_evidence`` and ``prov_detail``. Documents nothing decided are ``unknown`` with evidence
``none``: absence of evidence is not read as human.

:class:`Tagger` does the fusion on one batch and :func:`iter_tagged` over a reader's batches;
:class:`TagOptions` says which evidence and how to read, checked once; the other functions build
the signals, check a run's output and report what it decided. Running it over a corpus is
:mod:`provenance.tagger`'s (this process) and :mod:`provenance.ray_tagger`'s (a Ray cluster):
both build their readers and signals from the same :class:`TagOptions` and tag every batch with
:func:`iter_tagged`, so their results are the same.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from provenance import registry
from provenance.corpus import (
    DEFAULT_BATCH_SIZE,
    CorpusCounts,
    CorpusReader,
    Reject,
    progress_bar,
    rejects_path_for,
)
from provenance.errors import ConfigError
from provenance.ledger import Ledger
from provenance.outputs import check_output
from provenance.registry import DEFAULT_NEAR_THRESHOLD
from provenance.schema import (
    ID,
    TAG_COLUMNS,
    TAG_SCHEMA,
    TEXT,
    UNTAGGED,
    Evidence,
    Label,
    Tag,
    evidence_name,
    tags_frame,
    why_unknown,
)
from provenance.signals import Signal

__all__ = [
    "DEFAULT_NEAR_THRESHOLD",
    "TagOptions",
    "TagReport",
    "Tagger",
    "build_signals",
    "check_tag_output",
    "corpus_prevalence",
    "iter_tagged",
    "opened_ledger",
    "prevalence",
    "prevalence_calibration",
    "prevalence_detector",
    "tagged_schema",
]


class Tagger:
    """Apply signals in fusion order to batches and keep running totals.

    The fusion order is that of the registered kinds of evidence (:mod:`provenance.registry`),
    or of ``kinds`` (a run's, which a Ray worker receives with its options).

    Examples
    --------
    >>> import polars as pl
    >>> from provenance.declared import DeclaredSignal
    >>> tagger = Tagger([DeclaredSignal()])
    >>> batch = pl.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "is_synthetic": [True, None]})
    >>> tagger.tag_batch(batch).get_column("prov_label").to_list()
    ['synthetic', 'unknown']
    """

    def __init__(self, signals: Iterable[Signal],
                 kinds: Sequence[registry.SignalKind] | None = None) -> None:
        orders = {kind.name: kind.order for kind in kinds or ()}
        self.signals = sorted(signals, key=lambda s: orders[s.name] if s.name in orders
                              else registry.fusion_order(s.name))
        kinds = [s.name for s in self.signals]
        repeated = {k for k in kinds if kinds.count(k) > 1}
        if repeated:
            raise ConfigError(f"one signal per kind of evidence; got several for {repeated}")
        self.by_label: Counter = Counter()
        self.by_evidence: Counter = Counter()
        self.by_evidence_label: Counter = Counter()
        self.unknown_why: Counter = Counter()

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
        evidence = [evidence_name(t.evidence) for t in final]
        self.by_evidence.update(evidence)
        self.by_evidence_label.update(zip(evidence, (t.label.value for t in final), strict=True))
        self.unknown_why.update(why_unknown(ev, t.detail) for ev, t in zip(evidence, final,
                                                                          strict=True)
                                if t.label is Label.UNKNOWN)
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


def build_signals(**values: Any) -> list[Signal]:
    """The signals of the registered kinds of evidence for these option values.

    ``values`` are evidence keywords of :func:`~provenance.tagger.tag_corpus` (``ledger``,
    ``declared``, ``near_threshold``, ``watermark``, ``detector`` and those of any registered
    kind: :func:`provenance.registry.signal_options`); the others take their defaults.
    ``declared=None`` (or empty) ignores metadata; ``near_threshold=None`` turns near matching
    off. Rules may be given in their CLI form (see :meth:`DeclaredRule.parse`). A ledger given
    as a path must be opened by the caller (see :func:`opened_ledger`). ``watermark`` is a
    :class:`~provenance.watermark.WatermarkKey` (with its secret) or scorer; ``detector`` a
    :class:`~provenance.detectors.CalibratedDetector` or a saved detector's folder.

    Examples
    --------
    >>> [s.name for s in build_signals(declared=["is_synthetic"])]
    ['declared']
    """
    return TagOptions.create(**values).build_signals(values.get("ledger"))


def _unknown_option(name: str, options: Iterable[str]) -> str:
    return (f"unknown tagging option {name!r}; the evidence options are "
            f"{', '.join(options)} (provenance.registry)")


@dataclass(frozen=True)
class TagOptions:
    """How a corpus is tagged: which evidence, and how its documents are read.

    :func:`~provenance.tagger.tag` and :func:`~provenance.tagger.tag_corpus` make one from their
    keywords with :meth:`create`, which checks them, and hand it to the engine that tags. This
    process and every Ray worker build their signals (:meth:`build_signals`) and readers
    (:meth:`reader`) from it, so every engine tags the same way.

    Parameters
    ----------
    evidence : mapping of str to any
        Every evidence option of ``kinds`` (:func:`provenance.registry.signal_options`), with
        its value: ``ledger`` (a :class:`~provenance.ledger.Ledger` or its path), ``declared``,
        ``near_threshold``, ``watermark``, ``detector``, and those of plugins' kinds.
    signals : tuple of Signal, optional
        Exactly these signals instead of those the evidence options build.
    id_field, text_field : str
        The id and text fields of the documents.
    strict : bool
        Stop at the first bad row instead of rejecting it.
    batch_size : int
        Documents per batch.
    kinds : tuple of SignalKind, optional
        The kinds of evidence of the run: the registry's when the options were made, so that a
        Ray worker, whose own registry holds only the built-in kinds, builds the same signals in
        the same order. ``None``: the registry's when used.

    Examples
    --------
    >>> options = TagOptions.create(near_threshold=None, batch_size=500)
    >>> options.evidence["near_threshold"], options.evidence["ledger"], options.batch_size
    (None, None, 500)
    >>> TagOptions.create(ledgr="ledger.sqlite")
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: unknown tagging option 'ledgr'; the evidence options are ...
    """

    evidence: Mapping[str, Any]
    signals: tuple[Signal, ...] | None = None
    id_field: str = ID
    text_field: str = TEXT
    strict: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    kinds: tuple[registry.SignalKind, ...] | None = None

    @classmethod
    def create(
        cls,
        *,
        signals: Sequence[Signal] | None = None,
        id_field: str = ID,
        text_field: str = TEXT,
        strict: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **evidence: Any,
    ) -> TagOptions:
        """The options of ``tag`` / ``tag_corpus``, checked: unknown keywords and a batch size
        below 1 are refused; evidence options not given take their registered defaults."""
        kinds = registry.signal_kinds(fusion=False)
        options = registry.signal_options(kinds)
        unknown = sorted(set(evidence) - set(options))
        if unknown:
            raise ConfigError(_unknown_option(unknown[0], options))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        values = {name: evidence.get(name, option.default) for name, option in options.items()}
        return cls(values, None if signals is None else tuple(signals), id_field, text_field,
                   strict, batch_size, kinds)

    def _kinds(self) -> tuple[registry.SignalKind, ...]:
        return registry.signal_kinds(fusion=False) if self.kinds is None else self.kinds

    @property
    def ledger(self) -> Ledger | str | os.PathLike | None:
        """The ledger the ledger kinds look documents up in (opened by the engine)."""
        return self.evidence.get("ledger")

    def reads(self) -> dict[str, Any]:
        """The evidence options that name files the run reads (the output must not be one)."""
        return {name: self.evidence[name]
                for name, option in registry.signal_options(self._kinds()).items()
                if option.reads and name in self.evidence}

    @property
    def wants_gpu(self) -> bool:
        """Whether the signals compute with models (a Ray worker then asks for a GPU)."""
        return self.signals is not None or any(
            kind.wants_gpu and kind.given(self.evidence) for kind in self._kinds())

    def build_signals(self, ledger: Ledger | None, *, models: bool = True) -> list[Signal]:
        """The run's signals, with ``ledger`` (open, or ``None``) as the ledger; ``models=False``
        leaves out the kinds that load a model."""
        if self.signals is not None:
            return list(self.signals)
        return registry.build_signals({**self.evidence, "ledger": ledger}, kinds=self._kinds(),
                                      models=models)

    def tagger(self, ledger: Ledger | None, *, models: bool = True) -> Tagger:
        """A :class:`Tagger` of the run's signals (:meth:`build_signals`), in its fusion order."""
        return Tagger(self.build_signals(ledger, models=models), self._kinds())

    def check(self) -> None:
        """Build the signals once, models left out, to fail here with their own messages."""
        with opened_ledger(self.ledger) as db:
            self.tagger(db, models=False)

    def reader(self, source: Any, on_reject: Callable[[Reject], None] | None = None, *,
               reader: type[CorpusReader] = CorpusReader) -> CorpusReader:
        """A reader of ``source`` with these options."""
        return reader(source, id_field=self.id_field, text_field=self.text_field,
                      batch_size=self.batch_size, strict=self.strict, on_reject=on_reject)


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
    #: Why documents ended ``unknown``: evidence -> kind of reason -> documents
    #: (see :func:`~provenance.schema.why_unknown`); ``by_evidence`` counts them too.
    unknown_by_evidence: dict[str, dict[str, int]] = field(default_factory=dict)

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
            "unknown_by_evidence": self.unknown_by_evidence,
            "signals": self.signals,
            "seconds": round(self.seconds, 3),
            "docs_per_s": round(self.docs_per_s, 1),
            **self.extra,
        }


def check_tag_output(input: Any, output: str | os.PathLike, **reads: Any) -> None:
    """Refuse, before any work, an output (or its rejects file) that cannot be written or that
    is, holds or lies inside what the run reads: the corpus and the paths among ``reads`` (the
    ledger, a watermark key file, the detector: :meth:`TagOptions.reads`; see
    :func:`provenance.outputs.check_output`).

    Examples
    --------
    >>> check_tag_output("crawl/", "crawl/tagged.parquet")
    Traceback (most recent call last):
    ...
    provenance.errors.OutputError: crawl/tagged.parquet: the output lies inside the input ...
    """
    paths = [input, *(r.path if isinstance(r, Ledger) else r for r in reads.values())]
    inputs = [r for r in paths if isinstance(r, (str, os.PathLike))]
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


#: What estimate_prevalence says when the run has no calibrated detector.
NO_PREVALENCE_DETECTOR = "estimate_prevalence needs a calibrated detector (--detector PATH)"


def prevalence_calibration(calibration: Mapping[str, Any]) -> Mapping[str, Any]:
    """A detector's calibration, checked to hold what :func:`prevalence` needs."""
    if "tpr" not in calibration:
        raise ConfigError(
            "estimate_prevalence needs the detector's true-positive rate: calibrate it "
            "with machine_texts as well as human texts (tailguard detect-calibrate --machine)"
        )
    return calibration


def prevalence_detector(tagger: Tagger) -> Any:
    """The tagger's detector signal, which :func:`corpus_prevalence` needs calibrated on human
    and machine text."""
    for signal in tagger.signals:
        if signal.name == Evidence.DETECTOR.value:
            prevalence_calibration(signal.detector.calibration)
            return signal
    raise ConfigError(NO_PREVALENCE_DETECTOR)


def nested_counts(pairs: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """``{(a, b): n}`` as ``{a: {b: n}}``, sorted, for a report.

    >>> nested_counts({("detector", "too few tokens"): 2, ("detector", "not decisive"): 5})
    {'detector': {'not decisive': 5, 'too few tokens': 2}}
    """
    out: dict[str, dict[str, int]] = {}
    for (a, b), n in sorted(pairs.items()):
        out.setdefault(a, {})[b] = n
    return out


def corpus_prevalence(tagger: Tagger) -> dict[str, Any]:
    """Synthetic share of the corpus: decided evidence counted, the detector's part corrected.

    Documents settled by declared metadata, the ledger or the watermark are counted as labelled.
    Among the documents the detector scored, the flagged share is corrected for its measured TPR
    and FPR (Rogan-Gladen), with an interval that includes their calibration error. Documents
    nobody could score widen the corpus interval (all human to all synthetic).
    """
    return prevalence(prevalence_detector(tagger).detector.calibration,
                      tagger.by_evidence_label)


def prevalence(calibration: Mapping[str, Any], pairs: Mapping[tuple[str, str], int]
               ) -> dict[str, Any]:
    """:func:`corpus_prevalence` from the detector's calibration and the run's counts of
    documents by (deciding evidence, label): what a Ray driver has."""
    from provenance.evaluate import estimate_prevalence

    cal = prevalence_calibration(calibration)
    pairs = Counter(pairs)
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
        # the error rates' binomial uncertainty is that of the texts they were measured on
        # (a held-out share when the calibration held one out)
        est = estimate_prevalence(flagged, scored, cal["tpr"], cal["fpr"],
                                  cal.get("n_machine_measured", cal["n_machine"]),
                                  cal.get("n_human_measured", cal["n_human"]))
        result["among_detector_scored"] = est.as_dict()
        result["corpus"] = {
            "estimate": (synthetic_elsewhere + est.estimate * scored) / total,
            "low": (synthetic_elsewhere + est.low * scored) / total,
            "high": (synthetic_elsewhere + est.high * scored + unresolved) / total,
        }
    return result
