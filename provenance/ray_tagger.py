"""Tag a corpus on Ray: shards fan out to tagging actors, the driver writes the same output.

How it runs (``tag_corpus(..., engine="ray")``, ``tailguard tag --engine ray``):

1. The driver lists the input's shards (:func:`~provenance.corpus.resolve_inputs`) and, when a
   ledger is given, takes a read-only snapshot of it with SQLite's backup API; the snapshot's
   bytes go to Ray's object store once and every worker opens its own copy (``mode=ro``).
2. Ray Data hands the shards to a pool of tagging actors (``map_batches`` with a callable class):
   each actor builds its signals once — ledger, watermark scorer, detector model (on a GPU when
   the actor has one), from the run's :class:`~provenance.fusion.TagOptions` as the local
   engine does — then reads each shard with the local :class:`CorpusReader` (so validation and
   rejects are the same) and tags it with the local batch code,
   :func:`~provenance.fusion.iter_tagged`.
3. The driver receives the tagged batches in input order (Arrow IPC envelopes: shards with
   different schemas never have to be unified inside Ray) and finishes what needs the whole
   corpus with the reader's own :class:`~provenance.corpus.CorpusIds`: ids derived from content
   are numbered across shards and ids already read in an earlier shard are rejected, as one
   reader would. It writes the output and the rejects file atomically with the local engine's
   writers.

Same input, same output: the tagged rows, their order, the rejects and the counts equal the local
engine's. Two differences, both about failure: a shard that cannot be read at all (a corrupt
parquet footer, a truncated gzip) does not stop the run — the rows tagged before the failure are
kept and the rest of the shard is one ``unreadable_file`` reject (``strict`` still stops at the
first problem) — and a document whose id repeats one from an earlier shard was also tagged,
which shows in the signals' ``examined`` counts only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from provenance.corpus import (
    CorpusCounts,
    CorpusIds,
    CorpusReader,
    CorpusWriter,
    Reject,
    RejectReason,
    RejectsWriter,
    already_read,
    content_id,
    rejects_path_for,
    resolve_inputs,
)
from provenance.engines import RayEngine, cluster_workers, import_ray, ray_session
from provenance.errors import ConfigError, InputError, TailguardError
from provenance.fusion import (
    NO_PREVALENCE_DETECTOR,
    TagOptions,
    TagReport,
    check_tag_output,
    iter_tagged,
    nested_counts,
    prevalence,
    prevalence_calibration,
    tagged_schema,
)
from provenance.ledger import Ledger
from provenance.outputs import work_dir
from provenance.schema import PROV_DETAIL, PROV_EVIDENCE, PROV_LABEL, TAG_COLUMNS, why_unknown
from provenance.signals import SignalStats

#: Reject reason of a shard that could not be read (or the unreadable rest of one).
UNREADABLE_FILE = "unreadable_file"
#: Hidden column with each row's 1-based line (jsonl) or 0-based row (tables) in its shard.
_POSITION = "\x00tailguard_position"
#: Prefix of the stand-in a worker gives a document without id; the driver numbers it.
_DERIVED = "\x00tailguard_derived\x00"
_ENVELOPE = pa.schema([
    ("shard", pa.int64()), ("seq", pa.int64()), ("data", pa.large_binary()),
    ("rejects", pa.large_string()), ("summary", pa.large_string()), ("last", pa.bool_()),
])


# ---------------------------------------------------------------------------------------------
# The ledger snapshot


def ledger_snapshot(path: str | os.PathLike) -> bytes:
    """A consistent copy of a ledger's database (SQLite backup API), as bytes.

    The copy is in rollback-journal mode, so a worker can open it read-only from a plain file,
    without the write-ahead log's shared-memory file, while writers keep using the original.
    It is made in a work folder of the system's temporary folder
    (:func:`provenance.outputs.work_dir`): removed on exit, and by the next run if this one is
    killed.
    """
    with work_dir(tempfile.gettempdir(), "snapshot") as tmp:
        copy = tmp / "ledger.sqlite"
        source = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
            source.close()
        return copy.read_bytes()


def open_snapshot(data: bytes) -> Ledger:
    """Open a ledger snapshot read-only from a private temporary file.

    The file is unlinked as soon as SQLite holds it open, so nothing is left behind however
    the worker ends (its descriptor keeps the data readable until the ledger is closed); a
    worker killed before that leaves a work folder that the next one sweeps.
    """
    with work_dir(tempfile.gettempdir(), "ledger") as folder:
        path = folder / "ledger.sqlite"
        path.write_bytes(data)
        return Ledger(path, create=False, read_only=True)


# ---------------------------------------------------------------------------------------------
# Worker side


class _ShardReader(CorpusReader):
    """A :class:`CorpusReader` for one shard of a corpus read by many workers.

    Everything is validated as by the local reader, except what needs the shards before this
    one: a document without id gets a stand-in that the driver replaces with the content id
    numbered across the corpus, and each row carries its line (row) for the driver's duplicate
    check.
    """

    def _derive_id(self, text: str) -> str:
        self.counts.ids_derived += 1
        return f"{_DERIVED}{self.counts.ids_derived}\x00{content_id(text)}"

    def _check_record(self, name: str, record: dict, *, line: int) -> bool:
        kept = super()._check_record(name, record, line=line)
        if kept:
            record[_POSITION] = line
        return kept

    def _with_ids(self, name: str, frame: pl.DataFrame) -> pl.DataFrame:
        return super()._with_ids(name, frame).with_columns(
            pl.col("__row").cast(pl.Int64).alias(_POSITION))


def _ipc(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="lz4")
    return buffer.getvalue()


def _envelope(shard: int, seq: int, *, data: bytes = b"", rejects: Sequence[str] = (),
              summary: dict[str, Any] | None = None) -> pa.Table:
    return pa.table({
        "shard": [shard], "seq": [seq], "data": [data], "rejects": ["\n".join(rejects)],
        "summary": [json.dumps(summary) if summary is not None else ""],
        "last": [summary is not None],
    }, schema=_ENVELOPE)


class ShardTagger:
    """A Ray Data actor: builds the signals once (ledger snapshot, models), then tags shards.

    Called with batches of shard descriptors (``shard``, ``path``); yields one envelope per
    tagged batch and a last one per shard with its counts, signal statistics and, if the shard
    could not be read to the end, the error.
    """

    def __init__(self, options: TagOptions, ledger: list[Any]) -> None:
        self.options = options
        self.ledger = None
        if ledger:
            import ray

            self.ledger = open_snapshot(ray.get(ledger[0]))
        self.tagger = options.tagger(self.ledger)

    def __call__(self, batch: dict[str, Any]) -> Iterator[pa.Table]:
        for shard, path in zip(batch["shard"], batch["path"], strict=True):
            yield from self.tag_shard(int(shard), str(path))

    def tag_shard(self, shard: int, path: str) -> Iterator[pa.Table]:
        for signal in self.tagger.signals:
            signal.stats = SignalStats()
        rejects: list[str] = []
        seq = emitted = 0
        error = None
        reader = None
        try:
            reader = self.options.reader(path, lambda reject: rejects.append(reject.as_json()),
                                         reader=_ShardReader)
            for tagged in iter_tagged(reader, self.tagger):
                yield _envelope(shard, seq, data=_ipc(tagged), rejects=rejects)
                rejects.clear()
                seq += 1
                emitted += tagged.height
        except InputError as exc:
            error = str(exc)
        except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
            error = f"{path}: cannot read file: {type(exc).__name__}: {exc}"
        counts = reader.counts if reader is not None else CorpusCounts()
        summary = {
            "read": counts.read, "rejected": counts.rejected, "emitted": emitted,
            "by_reason": dict(counts.by_reason), "error": error,
            "signals": {s.name: [s.stats.examined, s.stats.decided, s.stats.seconds]
                        for s in self.tagger.signals},
        }
        yield _envelope(shard, seq, rejects=rejects, summary=summary)


# ---------------------------------------------------------------------------------------------
# Driver side


class _RejectLine(str):
    """A reject already serialised by a worker, for :class:`RejectsWriter`."""

    def as_json(self) -> str:
        return str(self)


class _IdChecker:
    """The corpus-wide part of id handling, replayed on the driver in input order with the
    reader's own :class:`~provenance.corpus.CorpusIds`: a stand-in id becomes the content id,
    numbered across the corpus, and a row whose id was already read (in any earlier shard or
    row) is rejected, as by :class:`CorpusReader`.
    """

    def __init__(self, id_field: str, strict: bool) -> None:
        self.id_field = id_field
        self.strict = strict
        self.ids = CorpusIds()
        self.ids_derived = 0
        self.duplicates = 0

    def check(self, frame: pl.DataFrame, file: str, jsonl: bool
              ) -> tuple[pl.DataFrame, list[Reject]]:
        """The rows whose ids are new, with their final ids, and the rejects of the others."""
        ids = frame.get_column(self.id_field).to_list()
        derived = [doc_id.startswith(_DERIVED) for doc_id in ids]
        if any(derived):
            ids = [self.ids.number(doc_id.rsplit("\x00", 1)[1]) if stand_in else doc_id
                   for doc_id, stand_in in zip(ids, derived, strict=True)]
            self.ids_derived += sum(derived)
            frame = frame.with_columns(pl.Series(self.id_field, ids, dtype=pl.String))
        new = self.ids.claim_all(ids)
        if all(new):
            return frame, []
        rejects = [self._reject(frame, index, ids[index], file, jsonl)
                   for index, kept in enumerate(new) if not kept]
        return frame.filter(pl.Series(new)), rejects

    def _reject(self, frame: pl.DataFrame, index: int, doc_id: str, file: str,
                jsonl: bool) -> Reject:
        row = frame.row(index, named=True)
        position = row.pop(_POSITION)
        raw = {k: v for k, v in row.items() if k not in TAG_COLUMNS}
        reject = Reject(
            file=file, reason=RejectReason.DUPLICATE_ID, message=already_read(doc_id),
            line=position if jsonl else None, row=None if jsonl else position,
            field=self.id_field, raw=raw,
        )
        if self.strict:
            raise reject.to_error()
        self.duplicates += 1
        return reject


def _in_reader_order(worker: list[str], found: list[Reject], jsonl: bool) -> list[_RejectLine]:
    """One batch's rejects in the order one reader writes them: by line in a jsonl file; in a
    table batch, the other reasons first, then the duplicate ids by row."""
    lines = [_RejectLine(line) for line in worker] + [_RejectLine(r.as_json()) for r in found]
    if not found:
        return lines
    records = [json.loads(line) for line in lines]
    if jsonl:
        order = sorted(range(len(lines)), key=lambda i: records[i]["line"])
    else:
        def duplicate(i: int) -> bool:
            return records[i]["reason"] == RejectReason.DUPLICATE_ID.value

        order = [i for i in range(len(lines)) if not duplicate(i)] + sorted(
            (i for i in range(len(lines)) if duplicate(i)), key=lambda i: records[i]["row"])
    return [lines[i] for i in order]


def _unreadable(file: str, message: str) -> _RejectLine:
    return _RejectLine(json.dumps({
        "file": file, "line": None, "row": None, "reason": UNREADABLE_FILE, "field": None,
        "message": message, "raw": None,
    }, ensure_ascii=False))


def _tailguard_error(exc: BaseException) -> TailguardError | None:
    """The TailguardError a worker raised, from inside Ray's wrappers (None if there is none)."""
    seen = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TailguardError):
            return current
        stack += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return None


def _detector_calibration(options: TagOptions) -> dict[str, Any]:
    """The calibration of the run's detector, read on the driver without loading its model."""
    from provenance.detectors import DETECTOR_FILE, CalibratedDetector

    for candidate in [options.evidence.get("detector"), *(options.signals or [])]:
        if isinstance(candidate, CalibratedDetector):
            return candidate.calibration
        inner = getattr(candidate, "detector", None)
        if isinstance(inner, CalibratedDetector):
            return inner.calibration
        if isinstance(candidate, (str, os.PathLike)):
            path = Path(candidate)
            file = path / DETECTOR_FILE if path.is_dir() else path
            try:
                return json.loads(file.read_text())["calibration"]
            except (OSError, ValueError, KeyError) as exc:
                raise InputError(f"not a saved detector ({exc})", file=str(file)) from None
    raise ConfigError(NO_PREVALENCE_DETECTOR)


def tag_corpus_ray(
    input: str | os.PathLike,
    output: str | os.PathLike,
    options: TagOptions,
    *,
    engine: RayEngine,
    estimate_prevalence: bool = False,
    progress: bool = False,
) -> TagReport:
    """:func:`~provenance.tagger.tag_corpus` on Ray (see the module notes), with its options.

    The report's ``extra`` adds ``engine``, ``workers``, ``gpus_per_worker`` and
    ``failed_shards`` (the shards that could not be read to the end, with the error).
    """
    start = time.perf_counter()
    import_ray()
    check_tag_output(input, output, **options.reads())
    options.check()
    calibration = None
    if estimate_prevalence:
        calibration = prevalence_calibration(_detector_calibration(options))
    inputs = resolve_inputs(input)
    shards = [str(path) for _, path in inputs]
    kinds = {str(path): kind for kind, path in inputs}
    ledger = options.ledger
    snapshot = None
    if ledger is not None and options.signals is None:
        snapshot = ledger_snapshot(ledger.path if isinstance(ledger, Ledger) else ledger)
    # The workers open the snapshot: the ledger (perhaps an open Ledger) does not travel.
    worker_options = dataclasses.replace(options, evidence={**options.evidence, "ledger": None})
    id_field, text_field = options.id_field, options.text_field
    rejects_file = rejects_path_for(output)
    counts = CorpusCounts()
    by_label: Counter = Counter()
    by_evidence: Counter = Counter()
    by_evidence_label: Counter = Counter()
    unknown_why: Counter = Counter()
    stats: dict[str, SignalStats] = {}
    failed: list[dict[str, str]] = []
    with ray_session(engine) as ray:
        gpus = engine.num_gpus
        if gpus is None:
            gpus = 1.0 if options.wants_gpu and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        have = ray.cluster_resources().get("GPU", 0)
        if gpus and have < gpus:
            raise ConfigError(
                f"num_gpus is {gpus:g} per worker but the Ray cluster has {have:g} GPU(s); "
                "set num_gpus=0 to tag on CPUs, or connect to a cluster with GPUs"
            )
        workers = cluster_workers(ray, engine, len(shards), gpus)
        items = [{"shard": i, "path": path} for i, path in enumerate(shards)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardTagger,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"options": worker_options,
                                   "ledger": [ray.put(snapshot)] if snapshot else []},
            num_cpus=1,
            num_gpus=gpus or None,
        )
        with (
            RejectsWriter(rejects_file) as sink,
            CorpusWriter(output, schema=tagged_schema(id_field, text_field)) as writer,
            _bar(progress) as bar,
        ):
            ids = _IdChecker(id_field, options.strict)
            try:
                for envelope in dataset.iter_rows():
                    file = shards[envelope["shard"]]
                    jsonl = kinds[file] == "jsonl"
                    worker_rejects = [x for x in envelope["rejects"].split("\n") if x]
                    frame, found = pl.DataFrame(), []
                    if envelope["data"]:
                        frame = pl.read_ipc(io.BytesIO(envelope["data"]))
                        frame, found = ids.check(frame, file, jsonl)
                        frame = frame.drop(_POSITION)
                    for reject in _in_reader_order(worker_rejects, found, jsonl):
                        sink(reject)
                    if frame.height:
                        writer.write(frame)
                        labels = frame.get_column(PROV_LABEL).to_list()
                        evidence = frame.get_column(PROV_EVIDENCE).to_list()
                        by_label.update(labels)
                        by_evidence.update(evidence)
                        by_evidence_label.update(zip(evidence, labels, strict=True))
                        unknown = frame.filter(pl.col(PROV_LABEL) == "unknown")
                        unknown_why.update(why_unknown(ev, json.loads(detail)) for ev, detail in
                                           unknown.select(PROV_EVIDENCE, PROV_DETAIL).iter_rows())
                        bar.update(frame.height)
                    if envelope["last"]:
                        _add_shard(json.loads(envelope["summary"]), file, counts, stats, failed,
                                   sink, options.strict)
            except Exception as exc:
                error = _tailguard_error(exc)
                if error is not None and error is not exc:
                    raise error from None
                raise
        if failed and len(failed) == len(shards):
            raise InputError(f"no shard could be read; the first error: {failed[0]['error']}")
    counts.accepted -= ids.duplicates
    counts.rejected += ids.duplicates
    if ids.duplicates:
        counts.by_reason["duplicate_id"] += ids.duplicates
    counts.ids_derived = ids.ids_derived
    extra: dict[str, Any] = {"engine": "ray", "workers": workers, "gpus_per_worker": gpus,
                             "failed_shards": failed}
    if calibration is not None:
        extra["prevalence"] = prevalence(calibration, by_evidence_label)
    return TagReport(
        extra=extra,
        input=os.fspath(input),
        output=os.fspath(output),
        rejects_file=str(rejects_file) if sink.count else None,
        counts=counts,
        by_label=dict(sorted(by_label.items())),
        by_evidence=dict(sorted(by_evidence.items())),
        unknown_by_evidence=nested_counts(unknown_why),
        signals={name: s.as_dict() for name, s in stats.items()},
        seconds=time.perf_counter() - start,
    )


def _add_shard(summary: dict[str, Any], file: str, counts: CorpusCounts,
               stats: dict[str, SignalStats], failed: list[dict[str, str]], sink: Any,
               strict: bool) -> None:
    """Add one shard's counts and signal statistics; a read error rejects the rest of it."""
    error = summary["error"]
    if error is not None and strict:
        raise InputError(error)
    counts.files += 1
    counts.accepted += summary["emitted"]
    counts.rejected += summary["rejected"]
    counts.by_reason.update(summary["by_reason"])
    if error is None:
        counts.read += summary["read"]
    else:
        # Rows read into a batch that was never emitted belong to the unreadable rest, which
        # counts as one rejected row: read == accepted + rejected still holds.
        counts.read += summary["emitted"] + summary["rejected"] + 1
        counts.rejected += 1
        counts.by_reason[UNREADABLE_FILE] += 1
        sink(_unreadable(file, error))
        failed.append({"file": file, "error": error})
    for name, (examined, decided, seconds) in summary["signals"].items():
        total = stats.setdefault(name, SignalStats())
        total.examined += examined
        total.decided += decided
        total.seconds += seconds


@contextlib.contextmanager
def _bar(progress: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(unit="doc", desc="tagging (ray)", disable=None if progress else True,
              dynamic_ncols=True) as bar:
        yield bar


__all__ = ["ShardTagger", "UNREADABLE_FILE", "ledger_snapshot", "open_snapshot",
           "tag_corpus_ray"]
