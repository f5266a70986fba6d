"""The ledger on real SQLite files: lookups, idempotence, concurrent writers, killed writers."""

from __future__ import annotations

import doctest
import json
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import provenance.ledger as ledger_module
import provenance.ledger.store as ledger_store
from provenance.errors import ConfigError, InputError, LedgerError, TailguardWarning
from provenance.ledger import Ledger, LedgerMatch, RegisterResult
from provenance.ledger.schema import CANDIDATES_SQL
from provenance.minhash import lsh_params, normalize

BANDS, _ = lsh_params(0.5, 128)  # the default configuration's banding (25 bands)


# --------------------------------------------------------------------------- helpers


def random_doc(rng: random.Random, words: int = 200) -> str:
    """Words from a vocabulary large enough that two documents share (almost) no 5-gram."""
    return " ".join(
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))
        for _ in range(words)
    )


def edit(text: str, rng: random.Random, changes: int) -> str:
    """``text`` with ``changes`` words replaced at distinct random positions."""
    words = text.split()
    for pos in rng.sample(range(len(words)), changes):
        words[pos] = f"edited{pos}x"
    return " ".join(words)


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    """True Jaccard similarity of the word 5-gram sets, computed independently of MinHash."""

    def grams(text: str) -> set[tuple[str, ...]]:
        words = normalize(text).split()
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    sa, sb = grams(a), grams(b)
    return len(sa & sb) / len(sa | sb)


def band_counts(path: Path) -> tuple[dict[int, int], set[int]]:
    """Band rows per record id, and the set of record ids, read with plain sqlite3."""
    with sqlite3.connect(path) as conn:
        per_record = dict(conn.execute("SELECT record_id, COUNT(*) FROM bands GROUP BY record_id"))
        ids = {r[0] for r in conn.execute("SELECT id FROM records")}
    return per_record, ids


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def docs() -> list[str]:
    rng = random.Random(7)
    return [random_doc(rng) for _ in range(30)]


# --------------------------------------------------------------------------- exact lookups


def test_exact_lookup_finds_whitespace_case_and_nfkc_variants(path: Path) -> None:
    texts = [
        "The ﬁrst generated paragraph talks about rivers.",
        "Second document: ＦＵＬＬ width letters and tabs\there.",
        "third one\nwraps\n  over lines",
    ]
    variants = [
        "the FIRST generated   paragraph talks about rivers.",  # ligature ﬁ == fi under NFKC
        "  second DOCUMENT: full width letters and tabs here.  ",
        "Third One wraps over lines",
    ]
    with Ledger(path) as ledger:
        assert ledger.register(texts, generator="m") == RegisterResult(added=3, already_present=0)
        found = ledger.lookup_exact([*variants, "a text nobody registered"])
    assert found[3] is None
    for match, original in zip(found[:3], texts, strict=True):
        assert isinstance(match, LedgerMatch)
        assert match.exact and match.similarity == 1.0
        assert match.record.content_hash == ledger_module.content_hash(original).hex()
    assert [m.record.record_id for m in found[:3]] == [1, 2, 3]


def test_register_twice_is_idempotent(path: Path, docs: list[str]) -> None:
    with Ledger(path) as ledger:
        first = ledger.register(docs, generator="m", generation=2)
        again = ledger.register(docs, generator="m", generation=2, batch_size=7)
        assert first == RegisterResult(added=len(docs), already_present=0)
        assert again == RegisterResult(added=0, already_present=len(docs))
        # Duplicates inside one call, and the same text with no doc_id, count once.
        assert ledger.register(["dup text", "DUP  text"]) == RegisterResult(1, 1)
        assert ledger.register(["dup text"]) == RegisterResult(0, 1)
        # Another generator, generation or id is another record; '' is not None.
        assert ledger.register(docs[:2], generator="other", generation=2).added == 2
        assert ledger.register(docs[:2], generator="m", generation=3).added == 2
        assert ledger.register(["dup text"], doc_ids=[""]).added == 1
        assert ledger.stats().records == len(docs) + 6
    per_record, ids = band_counts(path)
    assert set(per_record) == ids and set(per_record.values()) == {BANDS}


def test_record_fields_round_trip(path: Path) -> None:
    texts = ["generated text number one here", "generated text number two here"]
    with Ledger(path) as ledger:
        ledger.register(
            texts,
            generator="gpt-x",
            generation=4,
            doc_ids=["d1", "d2"],
            parent_ids=[["p1", "p2"], []],
            metadata=[{"prompt": "écris", "temp": 0.7}, {"nested": {"k": [1, 2]}}],
        )
        ledger.register(["shared metadata doc"], metadata={"run": "r9"})
        one, two, three = ledger.lookup_exact([*texts, "shared metadata doc"])
        records = list(ledger.iter_records(batch_size=2))
    assert (one.record.doc_id, one.record.generator, one.record.generation) == ("d1", "gpt-x", 4)
    assert one.record.parent_ids == ["p1", "p2"] and two.record.parent_ids == []
    assert one.record.metadata == {"prompt": "écris", "temp": 0.7}
    assert two.record.metadata == {"nested": {"k": [1, 2]}}
    assert three.record.metadata == {"run": "r9"} and three.record.generator is None
    assert three.record.generation is None and three.record.doc_id is None
    assert [r.record_id for r in records] == [1, 2, 3]
    assert records[0] == one.record
    assert 0 < records[0].created_at <= time.time()


def test_exact_lookup_returns_earliest_record(path: Path) -> None:
    with Ledger(path) as ledger:
        ledger.register(["other"], generator="x")
        ledger.register(["same words"], generator="first-model")
        ledger.register(["Same  WORDS"], generator="second-model")
        [match] = ledger.lookup_exact(["SAME words"])
    assert match.record.generator == "first-model" and match.record.record_id == 2


def test_lookup_exact_many_queries_crosses_chunks(path: Path) -> None:
    texts = [f"document number {i} of a larger lookup" for i in range(2000)]
    with Ledger(path) as ledger:
        ledger.register(texts[::2], doc_ids=[str(i) for i in range(0, 2000, 2)])
        found = ledger.lookup_exact(texts)
    assert [m is not None for m in found] == [i % 2 == 0 for i in range(2000)]
    assert all(m.record.doc_id == str(i) for i, m in enumerate(found) if m is not None)


def test_stats(path: Path) -> None:
    with Ledger(path, num_perm=64, lsh_threshold=0.6) as ledger:
        ledger.register(["a b c d e f", "g h i j k l"], generator="m1", generation=1)
        ledger.register(["a b c d e f"], generator="m2", generation=1)
        ledger.register(["x y z"], generation=2)
        stats = ledger.stats()
    assert stats.records == 4 and stats.distinct_contents == 3
    assert stats.by_generator == {"m1": 2, "m2": 1, None: 1}
    assert stats.by_generation == {1: 3, 2: 1}
    assert stats.config["num_perm"] == 64 and stats.config["lsh_threshold"] == 0.6
    assert (stats.config["bands"], stats.config["rows"]) == lsh_params(0.6, 64)
    assert stats.file_bytes >= path.stat().st_size > 0
    as_json = json.loads(json.dumps(stats.as_dict()))
    assert as_json["by_generator"] == {"m1": 2, "m2": 1, "null": 1}
    assert as_json["by_generation"] == {"1": 3, "2": 1}


# --------------------------------------------------------------------------- near lookups


def test_lookup_near_finds_edited_copies_with_accurate_similarity(
    path: Path, docs: list[str]
) -> None:
    rng = random.Random(11)
    queries = [edit(doc, rng, changes=rng.randint(1, 4)) for doc in docs]
    unrelated = [random_doc(rng) for _ in range(10)]
    with Ledger(path) as ledger:
        ledger.register(docs, doc_ids=[f"d{i}" for i in range(len(docs))])
        found = ledger.lookup_near(queries + unrelated, threshold=0.7)
    for i, (match, query) in enumerate(zip(found[: len(docs)], queries, strict=True)):
        truth = shingle_jaccard(query, docs[i])
        assert truth >= 0.75
        assert match is not None and match.record.doc_id == f"d{i}"
        assert not match.exact
        assert abs(match.similarity - truth) < 0.1, (i, match.similarity, truth)
    assert found[len(docs) :] == [None] * len(unrelated)


def test_lookup_near_returns_the_most_similar_candidate(path: Path) -> None:
    rng = random.Random(3)
    base = random_doc(rng)
    far, mid, close = (edit(base, random.Random(s), c) for s, c in ((1, 5), (2, 3), (3, 1)))
    with Ledger(path) as ledger:
        # The best candidate is registered last, so "first candidate" would be wrong.
        ledger.register([far, mid, close], doc_ids=["far", "mid", "close"])
        [match] = ledger.lookup_near([base], threshold=0.5)
        [none] = ledger.lookup_near([base], threshold=0.99)
    assert match.record.doc_id == "close"
    assert abs(match.similarity - shingle_jaccard(base, close)) < 0.1
    assert shingle_jaccard(base, close) > shingle_jaccard(base, mid) > shingle_jaccard(base, far)
    assert none is None


def test_lookup_near_marks_exact_content_as_exact(path: Path, docs: list[str]) -> None:
    with Ledger(path) as ledger:
        ledger.register(docs[:5])
        found = ledger.lookup_near([docs[2].upper(), docs[4]], threshold=0.9)
    assert [(m.record.record_id, m.exact, m.similarity) for m in found] == [
        (3, True, 1.0),
        (5, True, 1.0),
    ]


def test_near_candidates_probe_the_bands_primary_key(path: Path, docs: list[str]) -> None:
    with Ledger(path) as ledger:
        ledger.register(docs)
        ledger.lookup_near(docs[:1])  # creates the per-connection query table
        plan = [
            row[-1]
            for row in ledger._conn.execute("EXPLAIN QUERY PLAN " + CANDIDATES_SQL)
        ]
    assert any("SEARCH b USING PRIMARY KEY (band=? AND key=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN b") for step in plan), plan
    assert any("USING INTEGER PRIMARY KEY" in step for step in plan), plan


def test_low_threshold_warns_and_bad_threshold_is_refused(path: Path, docs: list[str]) -> None:
    with Ledger(path) as ledger:
        ledger.register(docs[:3])
        with pytest.warns(TailguardWarning, match=r"below the ledger's lsh_threshold 0\.5"):
            ledger.lookup_near(docs[:1], threshold=0.3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ledger.lookup_near(docs[:1], threshold=0.5)
        for bad in (0, 1.5, -0.2, "0.8"):
            with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\]"):
                ledger.lookup_near(docs[:1], threshold=bad)


# --------------------------------------------------------------------------- configuration


def test_reopen_uses_stored_configuration(path: Path) -> None:
    with Ledger(path, num_perm=64, ngram=3, seed=9, lsh_threshold=0.6) as ledger:
        ledger.register(["one two three four five six seven"])
    with Ledger(path, create=False) as ledger:
        assert (ledger.hasher.num_perm, ledger.hasher.ngram, ledger.hasher.seed) == (64, 3, 9)
        assert ledger.config["lsh_threshold"] == 0.6
        [match] = ledger.lookup_near(["one two three four five six seven eight"], threshold=0.6)
    assert match is not None


@pytest.mark.parametrize(
    ("option", "value", "stored"),
    [
        ("num_perm", 256, "128"),
        ("seed", 2, "1"),
        ("lsh_threshold", 0.8, "0.5"),
        ("hash", "xxh32", "'sha1'"),
    ],
)
def test_config_mismatch_is_refused(path: Path, option: str, value: object, stored: str) -> None:
    Ledger(path).close()
    with pytest.raises(LedgerError, match=rf"created with {option}={stored} but {option}="):
        Ledger(path, **{option: value})
    Ledger(path, **{option: ledger_module.DEFAULT_CONFIG[option]}).close()  # same value is fine


def test_pickled_ledger_reopens_in_the_receiver(path: Path, docs: list[str]) -> None:
    with Ledger(path) as ledger:
        ledger.register(docs[:2])
    with Ledger(path, read_only=True) as reader:
        clone = pickle.loads(pickle.dumps(reader))
    with clone:
        assert clone.read_only and clone.lookup_exact(docs[:1])[0].record.record_id == 1


# --------------------------------------------------------------------------- errors


def test_non_ledger_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a database\n" * 100)
    with pytest.raises(LedgerError, match=rf"{text}.*not an SQLite database"):
        Ledger(text)
    assert text.read_text() == "this is not a database\n" * 100

    other = tmp_path / "other_app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(LedgerError, match=rf"{other} is an SQLite database but not a tailguard"):
        Ledger(other)
    with sqlite3.connect(other) as conn:  # untouched: no ledger tables were added
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert names == ["users"]


def test_missing_ledger_without_create(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    for kwargs in ({"create": False}, {"read_only": True}):
        with pytest.raises(
            LedgerError,
            match=r"no ledger at .*nope\.sqlite; create one with "
            r"`tailguard ledger add`",
        ):
            Ledger(missing, **kwargs)
    assert not missing.exists()


def test_read_only_ledger_refuses_writes(path: Path, docs: list[str]) -> None:
    with Ledger(path) as ledger:
        ledger.register(docs[:2])
    with Ledger(path, read_only=True) as ledger:
        with pytest.raises(LedgerError, match="read-only"):
            ledger.register(docs[2:4])
        assert ledger.lookup_exact(docs[:1])[0] is not None
        assert ledger.lookup_near(docs[:1])[0] is not None
        assert ledger.stats().records == 2
    with Ledger(path) as ledger:
        assert ledger.stats().records == 2


# --------------------------------------------------------------------------- read-only folders


@pytest.fixture
def readonly_ledger(tmp_path: Path, docs: list[str], readonly_copy_of) -> Path:
    """A ledger of ``docs[:20]``, closed, in a folder nobody can write to (a real read-only
    bind mount as root): SQLite cannot create the -wal/-shm files a WAL ledger needs there."""
    folder = tmp_path / "built"
    with Ledger(folder / "ledger.sqlite") as ledger:
        ledger.register(docs[:20], generator="m", generation=2)
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.sqlite"]  # WAL checkpointed
    return readonly_copy_of(folder) / "ledger.sqlite"


def test_a_ledger_in_a_read_only_folder_is_read(readonly_ledger: Path, docs: list[str]) -> None:
    with Ledger(readonly_ledger, read_only=True) as ledger:
        assert ledger.stats().records == 20
        assert ledger.lookup_exact(docs[3:4])[0].record.doc_id is None
        assert ledger.lookup_exact(docs[25:26]) == [None]
        near = ledger.lookup_near([edit(docs[5], random.Random(1), 5)], threshold=0.7)[0]
        assert near is not None and near.record.record_id == 6
        assert len(list(ledger.iter_records(batch_size=7))) == 20
        clone = pickle.loads(pickle.dumps(ledger))  # reopens the same way
    with clone:
        assert clone.stats().records == 20
    assert sorted(p.name for p in readonly_ledger.parent.iterdir()) == ["ledger.sqlite"]


def test_writing_to_a_ledger_in_a_read_only_folder_says_why(readonly_ledger: Path) -> None:
    cause = "read-only file system" if os.geteuid() == 0 else "permission denied"
    for kwargs in ({}, {"create": False}):
        with pytest.raises(LedgerError) as caught:
            Ledger(readonly_ledger, **kwargs)
        message = str(caught.value)
        assert message == (
            f"cannot write to ledger {readonly_ledger}: its folder is not writable ({cause}), "
            "and SQLite must create the -wal and -shm files there; look it up as it is (ledger "
            "lookup, ledger stats, tag --ledger), or copy it to a writable folder to add to it"
        )
        assert "not a tailguard ledger" not in message and "\n" not in message


def test_unsaved_writes_in_a_read_only_folder_are_refused_not_ignored(
    tmp_path: Path, docs: list[str], readonly_copy_of
) -> None:
    """A ledger whose -wal still holds commits (its writer was killed): reading the main file
    alone would miss them, so a folder where SQLite cannot recover them is refused."""
    live, copy = tmp_path / "live" / "ledger.sqlite", tmp_path / "copy"
    copy.mkdir()
    with Ledger(live) as ledger:
        ledger.register(docs[:3])
        wal = live.with_name("ledger.sqlite-wal")
        assert wal.stat().st_size > 0
        for part in (live, wal):  # the files a killed writer leaves, less the -shm
            shutil.copy(part, copy / part.name)
    readonly = readonly_copy_of(copy) / "ledger.sqlite"
    with pytest.raises(LedgerError, match="ledger.sqlite-wal holds writes not yet copied into "
                                          "it.*copy the ledger together with its -wal file"):
        Ledger(readonly, read_only=True)


def test_a_non_database_in_a_read_only_folder_is_still_not_a_ledger(
    tmp_path: Path, readonly_copy_of
) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.sqlite").write_text("not a database\n" * 100)
    junk = readonly_copy_of(tmp_path / "junk") / "notes.sqlite"
    with pytest.raises(LedgerError, match="not a tailguard ledger \\(not an SQLite database"):
        Ledger(junk, read_only=True)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"doc_ids": ["a"]}, "doc_ids"),
        ({"parent_ids": [["p"], ["q"], ["r"]]}, "parent_ids"),
        ({"metadata": [{}]}, "metadata"),
    ],
)
def test_parallel_sequences_must_match_texts(path: Path, kwargs: dict, name: str) -> None:
    with Ledger(path) as ledger:
        with pytest.raises(ConfigError, match=rf"^{name} has \d entries but there are 2 texts"):
            ledger.register(["one", "two"], **kwargs)
        assert ledger.stats().records == 0


def test_bad_values_are_refused_before_anything_is_written(path: Path) -> None:
    texts = [f"text {i}" for i in range(10)]
    bad_calls = [
        (
            ConfigError,
            r"metadata\[7\] is not JSON-serialisable",
            {"metadata": [{}] * 7 + [{"x": object()}] + [{}] * 2},
        ),
        (ConfigError, r"parent_ids\[0\] must be a list", {"parent_ids": ["p"] * 10}),
        (ConfigError, "generation must be a non-negative integer", {"generation": -1}),
        (ConfigError, "batch_size must be a positive integer", {"batch_size": 0}),
    ]
    with Ledger(path) as ledger:
        for error, message, kwargs in bad_calls:
            with pytest.raises(error, match=message):
                ledger.register(texts, batch_size=kwargs.pop("batch_size", 3), **kwargs)
        with pytest.raises(InputError, match=r"texts\[1\] is NoneType"):
            ledger.register(["fine", None])
        with pytest.raises(InputError, match="not a single string"):
            ledger.lookup_exact("one string")
        assert ledger.stats().records == 0


def test_empty_calls_do_nothing(path: Path) -> None:
    with Ledger(path) as ledger:
        assert ledger.register([]) == RegisterResult(added=0, already_present=0)
        assert ledger.lookup_exact([]) == [] and ledger.lookup_near([]) == []
        assert ledger.lookup_near(["nothing registered yet at all"]) == [None]
        assert list(ledger.iter_records()) == []


def test_writer_waits_busy_timeout_then_names_the_fix(path: Path) -> None:
    Ledger(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        with Ledger(path, busy_timeout_s=0.3) as ledger:
            start = time.monotonic()
            with pytest.raises(LedgerError, match="longer busy_timeout_s"):
                ledger.register(["blocked document"])
            assert time.monotonic() - start >= 0.25
            blocker.execute("ROLLBACK")
            assert ledger.register(["blocked document"]).added == 1
    finally:
        blocker.close()


def test_wal_is_cut_back_after_a_checkpoint_while_another_connection_keeps_it(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_store, "WAL_SIZE_LIMIT_BYTES", 64 * 1024)
    wal = path.with_name(path.name + "-wal")
    rng = random.Random(3)
    with Ledger(path) as ledger:
        # A second open connection keeps SQLite from deleting the WAL, as in a long run with a
        # tagger reading beside the generator.
        reader = sqlite3.connect(path)
        try:
            # Past SQLite's 1000-page automatic checkpoint, which runs after this commit.
            ledger.register([random_doc(rng) for _ in range(5000)])
            grown = wal.stat().st_size
            ledger.register([random_doc(rng)])  # the checkpointed log restarts here: cut back
            assert grown > 1000 * 4096
            # Not below the limit: the log keeps what this last commit wrote (about 100 KB).
            assert wal.stat().st_size < 256 * 1024
            assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 5001
        finally:
            reader.close()


def test_closed_ledger_says_so(path: Path) -> None:
    ledger = Ledger(path)
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="is closed"):
        ledger.lookup_exact(["x"])


# --------------------------------------------------------------------------- processes


def _worker_docs(worker: int, batch: int, n: int) -> list[str]:
    rng = random.Random(worker * 1000 + batch)
    return [f"worker {worker} batch {batch} doc {i} " + random_doc(rng, 20) for i in range(n)]


def _register_worker(path: str, worker: int, batches: int, per_batch: int, barrier) -> None:
    with Ledger(path) as ledger:  # both processes may be the one creating the ledger
        barrier.wait(timeout=300)
        for b in range(batches):
            docs = _worker_docs(worker, b, per_batch)
            assert ledger.register(docs, generator=f"w{worker}").added == per_batch


def test_concurrent_writer_processes(path: Path) -> None:
    batches, per_batch = 20, 200
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_register_worker, args=(str(path), w, batches, per_batch, barrier))
        for w in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=300)
    finally:  # a writer that never reached the barrier must not leave the other waiting forever
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0]

    with Ledger(path, create=False) as ledger:
        stats = ledger.stats()
        assert stats.records == 2 * batches * per_batch
        assert stats.by_generator == {"w0": batches * per_batch, "w1": batches * per_batch}
        for w in range(2):
            texts = [t for b in range(batches) for t in _worker_docs(w, b, per_batch)]
            found = ledger.lookup_exact(texts)
            assert all(m is not None and m.record.generator == f"w{w}" for m in found)
        times = {
            g: sorted(r.created_at for r in ledger.iter_records() if r.generator == g)
            for g in ("w0", "w1")
        }
    # The writers really overlapped (each committed while the other was still running).
    assert times["w0"][0] < times["w1"][-1] and times["w1"][0] < times["w0"][-1]
    per_record, ids = band_counts(path)
    assert set(per_record) == ids and set(per_record.values()) == {BANDS}


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys, time
    from provenance.ledger import Ledger

    path, progress, committed, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def docs(batch, n):
        return [f"batch {batch} doc {i} " + " ".join(f"w{(i * 7 + j) % 997}" for j in range(30))
                for i in range(n)]

    ledger = Ledger(path)
    for b in range(committed):
        ledger.register(docs(b, size), batch_size=size)
        with open(progress, "a") as fh:
            fh.write(f"committed {b}\\n")

    # Then a long batch: stop (and get killed) in the middle of its transaction. A tiny page
    # cache makes SQLite spill uncommitted pages into the WAL file before the kill.
    conn = ledger._conn
    conn.execute("PRAGMA cache_size = 20")
    calls = 0

    def inside_transaction():
        global calls
        if conn.in_transaction:
            calls += 1
            if calls == 5000:
                with open(progress, "a") as fh:
                    fh.write("in flight\\n")
                time.sleep(600)
        return 0

    conn.set_progress_handler(inside_transaction, 100)
    ledger.register(docs(99, 3000), batch_size=3000)
    """
)


def test_killed_writer_leaves_only_whole_batches(path: Path, tmp_path: Path) -> None:
    progress = tmp_path / "progress.txt"
    committed, size = 3, 100
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CRASHING_WRITER,
            str(path),
            str(progress),
            str(committed),
            str(size),
        ],
    )
    try:
        deadline = time.monotonic() + 90
        while "in flight" not in (progress.read_text() if progress.exists() else ""):
            assert proc.poll() is None, "writer exited before its long batch"
            assert time.monotonic() < deadline, "writer never reached its long batch"
            time.sleep(0.05)
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > 0
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with Ledger(path, create=False) as ledger:
        assert ledger._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert ledger.stats().records == committed * size
        ids = [r.record_id for r in ledger.iter_records()]
    per_record, record_ids = band_counts(path)
    assert set(per_record) == record_ids == set(ids)  # no record without bands, no orphan band
    assert set(per_record.values()) == {BANDS}


def test_module_examples() -> None:
    result = doctest.testmod(ledger_store)
    assert result.attempted > 0 and result.failed == 0
