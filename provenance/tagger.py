"""Tag a corpus: run the evidence fusion of :mod:`provenance.fusion` over its documents.

:func:`tag` returns a DataFrame for in-memory use; :func:`tag_corpus` streams a corpus of any
size from files to a tagged file plus a rejects file, and is what ``tailguard tag`` calls. Both
take the same keywords, checked once into a :class:`~provenance.fusion.TagOptions`: the evidence
options of the registered kinds (:mod:`provenance.registry`) and how to read the documents.
``tag_corpus(..., engine="ray")`` hands those options to :mod:`provenance.ray_tagger`, whose
workers build their readers and signals from them and tag with the same batch code
(:func:`~provenance.fusion.iter_tagged`), so the output is the same.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import polars as pl

from provenance.corpus import CorpusWriter, Reject, RejectsWriter, rejects_path_for
from provenance.engines import RayEngine, resolve_engine
from provenance.errors import ConfigError, TailguardWarning
from provenance.fusion import (
    TagOptions,
    TagReport,
    check_tag_output,
    corpus_prevalence,
    iter_tagged,
    nested_counts,
    opened_ledger,
    prevalence_detector,
    tagged_schema,
)
from provenance.ray_tagger import tag_corpus_ray

__all__ = ["check_tag_output", "iter_tagged", "tag", "tag_corpus"]


def _options(options: TagOptions | None, keywords: dict[str, Any]) -> TagOptions:
    if options is None:
        return TagOptions.create(**keywords)
    if keywords:
        raise ConfigError(f"give options= or keywords ({', '.join(sorted(keywords))}), not both")
    return options


def tag(
    source: Any,
    *,
    on_reject: Callable[[Reject], None] | None = None,
    progress: bool = False,
    options: TagOptions | None = None,
    **keywords: Any,
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
    **evidence
        The options of any other registered kind of evidence
        (:func:`provenance.registry.signal_options`).
    signals : sequence of Signal, optional
        Use exactly these signals instead of building them from the evidence options.
    id_field, text_field : str, default "id", "text"
        The id and text fields.
    strict : bool, default False
        Stop at the first bad row instead of rejecting it.
    batch_size : int, default 10000
        Documents per batch.
    on_reject : callable, optional
        Receives rows that could not be read. Without it, rejected rows are counted in a
        warning; use :func:`tag_corpus` to write them to a file.
    options : TagOptions, optional
        All of the above at once (instead of the keywords).

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
    opts = _options(options, keywords)
    rejects: list[Reject] = []
    reader = opts.reader(source, on_reject or rejects.append)
    with opened_ledger(opts.ledger) as db:
        frames = list(iter_tagged(reader, opts.tagger(db), progress=progress))
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
    return pl.DataFrame(schema=tagged_schema(opts.id_field, opts.text_field))


def tag_corpus(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    engine: str | RayEngine = "local",
    ray_address: str | None = None,
    estimate_prevalence: bool = False,
    progress: bool = False,
    options: TagOptions | None = None,
    **keywords: Any,
) -> TagReport:
    """Tag a corpus file by file and batch by batch into ``output`` (parquet or jsonl).

    Memory stays bounded by the batch size. Rows that cannot be read go to
    ``<output>.rejects.jsonl`` (created only if there are any), so that output rows + rejected
    rows = input rows. Both files appear atomically: an interrupted run leaves no partial output.
    The keywords (evidence and reading options) are those of :func:`tag`. With
    ``estimate_prevalence`` (needs a detector calibrated on human and machine text), the report
    adds the share of synthetic documents corrected for the detector's measured error rates
    (Rogan-Gladen, 95% interval).

    ``engine="ray"`` (or a :class:`~provenance.engines.RayEngine`) tags the shards on a Ray
    cluster (``ray_address``, default: a local Ray) with the same output; see
    :mod:`provenance.ray_tagger`. Needs ``pip install "tailguard[ray]"``.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "crawl.jsonl").write_text(
    ...     json.dumps({"id": "a", "text": "hi", "is_synthetic": True}) + "\\n{broken\\n")
    >>> report = tag_corpus(folder / "crawl.jsonl", folder / "tagged.parquet", batch_size=100)
    >>> report.counts.accepted, report.counts.rejected, report.by_evidence
    (1, 1, {'declared': 1})
    >>> import shutil; shutil.rmtree(folder)
    """
    opts = _options(options, keywords)
    ray_engine = resolve_engine(engine, ray_address)
    if ray_engine is not None:
        return tag_corpus_ray(input, output, opts, engine=ray_engine,
                              estimate_prevalence=estimate_prevalence, progress=progress)
    check_tag_output(input, output, **opts.reads())
    start = time.perf_counter()
    rejects_file = rejects_path_for(output)
    with (
        opened_ledger(opts.ledger) as db,
        RejectsWriter(rejects_file) as sink,
        CorpusWriter(output, schema=tagged_schema(opts.id_field, opts.text_field)) as writer,
    ):
        tagger = opts.tagger(db)
        if estimate_prevalence:
            prevalence_detector(tagger)
        reader = opts.reader(input, sink)
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
        unknown_by_evidence=nested_counts(tagger.unknown_why),
        signals=tagger.signal_stats(),
        seconds=time.perf_counter() - start,
    )
