"""Read and write corpora without losing a document.

A corpus is jsonl, jsonl.gz, parquet (a file, a folder of files or a glob), a folder written by
``datasets.Dataset.save_to_disk``, or an in-memory polars / ``datasets`` table. Whatever it is,
it comes out as polars batches with a string ``id`` column and a string ``text`` column (named
by the caller), plus every other field the documents carry.

Web corpora are dirty, so every row read ends up either in a batch or as a :class:`Reject` with a
reason, and :class:`CorpusCounts` says how many of each: ``read == accepted + rejected`` always
holds. ``strict=True`` turns the first bad row into an :class:`~provenance.errors.InputError`
naming file, line (or row) and field instead.

``iter_*`` functions stream; ``read_*`` functions materialise (polars naming). One module per
part: ``formats`` (what a path means), ``batch_sources``, ``reader``, ``rejects`` and ``writer``;
import from here.
"""

from provenance.corpus.formats import (
    DEFAULT_BATCH_SIZE,
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    output_format,
    resolve_inputs,
)
from provenance.corpus.reader import (
    Corpus,
    CorpusIds,
    CorpusReader,
    Origin,
    already_read,
    content_id,
    iter_corpus,
    progress_bar,
    read_corpus,
)
from provenance.corpus.rejects import (
    CorpusCounts,
    Reject,
    RejectReason,
    RejectsWriter,
    rejects_path_for,
)
from provenance.corpus.writer import CorpusWriter, write_corpus

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "JSONL_SUFFIXES",
    "PARQUET_SUFFIXES",
    "Corpus",
    "CorpusCounts",
    "CorpusIds",
    "CorpusReader",
    "CorpusWriter",
    "Origin",
    "Reject",
    "RejectReason",
    "RejectsWriter",
    "already_read",
    "content_id",
    "iter_corpus",
    "output_format",
    "progress_bar",
    "read_corpus",
    "rejects_path_for",
    "resolve_inputs",
    "write_corpus",
]
