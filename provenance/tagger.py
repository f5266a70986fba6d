"""Tag a corpus: run the evidence fusion of :mod:`provenance.fusion` over its documents.

:func:`tag` returns a DataFrame for in-memory use; :func:`tag_corpus` streams a corpus of any
size from files to a tagged file plus a rejects file, and is what ``tailguard tag`` calls. With
``engine="ray"`` it hands the same work to :mod:`provenance.ray_tagger`, which runs the same
:class:`~provenance.fusion.Tagger` on Ray workers and writes the same output.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

from provenance.corpus import (
    DEFAULT_BATCH_SIZE,
    CorpusReader,
    CorpusWriter,
    Reject,
    RejectsWriter,
    progress_bar,
    rejects_path_for,
)
from provenance.declared import DEFAULT_RULES, DeclaredRule
from provenance.engines import resolve_engine
from provenance.errors import TailguardWarning
from provenance.fusion import (
    DEFAULT_NEAR_THRESHOLD,
    Tagger,
    TagReport,
    build_signals,
    check_tag_output,
    corpus_prevalence,
    opened_ledger,
    prevalence_detector,
    tagged_schema,
)
from provenance.ledger import Ledger
from provenance.ray_tagger import tag_corpus_ray
from provenance.schema import ID, TEXT
from provenance.signals import Signal

__all__ = ["iter_tagged", "tag", "tag_corpus"]


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
    ray_engine = resolve_engine(engine, ray_address)
    if ray_engine is not None:
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
            prevalence_detector(tagger)
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
    extra = {"prevalence": corpus_prevalence(tagger)} if estimate_prevalence else {}
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
