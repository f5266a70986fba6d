"""Tagging on a real local Ray: the same tagged rows, rejects and counts as the local engine.

The tests that run Ray take the ``ray_local`` fixture, which skips them without Ray installed;
the others (snapshot, engine arguments, the install hint) run everywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest

from provenance.corpus import rejects_path_for
from provenance.engines import RayEngine, resolve_engine
from provenance.errors import ConfigError, InputError, OutputError
from provenance.fusion import tagged_schema
from provenance.ledger import Ledger
from provenance.ray_tagger import ledger_snapshot, open_snapshot
from provenance.tagger import tag_corpus

VOCAB = [f"w{i}" for i in range(800)]


def words(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def near_copy(text: str) -> str:
    tokens = text.split()
    tokens[10] = "EDITED"
    return " ".join(tokens)


@pytest.fixture(scope="module")
def crawl(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four shards (parquet and jsonl) with every kind of evidence and every id case: exact and
    near ledger copies, declared rows, rows without id (the same text in several shards), ids
    repeated within a shard and across shards, and rows to reject."""
    root = tmp_path_factory.mktemp("crawl")
    rng = random.Random(3)
    generated = [words(rng) for _ in range(40)]
    with Ledger(root / "ledger.sqlite") as ledger:
        ledger.register(generated, generator="gen-model", generation=1,
                        doc_ids=[f"g{i}" for i in range(40)])
    shards = root / "shards"
    shards.mkdir()
    for s in range(3):
        rows = []
        for i in range(50):
            text = (generated[i % 40] if i % 5 == 0 else near_copy(generated[i % 40])
                    if i % 5 == 1 else words(rng))
            rows.append({"id": f"s{s}-{i}", "text": text,
                         "is_synthetic": True if i % 7 == 3 else False if i % 7 == 4 else None})
        rows += [{"id": None, "text": "a document without id"},
                 {"id": "s0-2", "text": "an id from the first shard"},
                 {"id": f"s{s}-9", "text": "an id repeated in its own shard"},
                 {"id": f"s{s}-blank", "text": "   "}]
        pl.DataFrame(rows).write_parquet(shards / f"part-{s}.parquet")
    lines = [json.dumps({"id": f"j{i}", "text": words(rng)}) for i in range(30)]
    lines += ['{"id": "broken', json.dumps({"text": "a document without id"}),
              json.dumps({"id": "s1-7", "text": "an id from a parquet shard"}),
              json.dumps({"id": 17, "text": generated[3]})]
    with gzip.open(shards / "web.jsonl.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return {"root": root, "shards": shards, "ledger": root / "ledger.sqlite"}


def sorted_sha256(path: Path) -> str:
    frame = pl.read_parquet(path)
    return hashlib.sha256(frame.sort("id").write_ndjson().encode()).hexdigest()


def rejects(output: Path) -> list[dict]:
    path = rejects_path_for(output)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_ray_tags_exactly_like_the_local_engine(crawl: dict, tmp_path: Path, ray_local) -> None:
    local = tag_corpus(crawl["shards"], tmp_path / "local.parquet", ledger=crawl["ledger"])
    on_ray = tag_corpus(crawl["shards"], tmp_path / "ray.parquet", ledger=crawl["ledger"],
                        engine="ray")
    expected = pl.read_parquet(tmp_path / "local.parquet")
    got = pl.read_parquet(tmp_path / "ray.parquet")
    # Same rows, all tag columns (prov_detail too), in the same order.
    assert got.equals(expected)
    assert sorted_sha256(tmp_path / "ray.parquet") == sorted_sha256(tmp_path / "local.parquet")
    # Every kind of evidence and id case is exercised.
    assert set(expected["prov_evidence"]) == {"declared", "ledger_exact", "ledger_near", "none"}
    derived = expected.filter(pl.col("text") == "a document without id")["id"].to_list()
    assert derived == [derived[0], f"{derived[0]}-2", f"{derived[0]}-3", f"{derived[0]}-4"]
    assert rejects(tmp_path / "ray.parquet") == rejects(tmp_path / "local.parquet")
    assert on_ray.counts == local.counts
    assert on_ray.counts.read == on_ray.counts.accepted + on_ray.counts.rejected
    assert on_ray.counts.by_reason["duplicate_id"] == 7  # in their shard, across shards
    assert on_ray.by_label == local.by_label and on_ray.by_evidence == local.by_evidence
    assert on_ray.unknown_by_evidence == local.unknown_by_evidence != {}
    assert on_ray.extra["engine"] == "ray" and on_ray.extra["failed_shards"] == []


def test_a_bad_shard_does_not_lose_the_others(crawl: dict, tmp_path: Path, ray_local) -> None:
    shards, good = tmp_path / "shards", tmp_path / "good"
    shards.mkdir()
    good.mkdir()
    for path in crawl["shards"].glob("part-*.parquet"):
        (shards / path.name).write_bytes(path.read_bytes())
        (good / path.name).write_bytes(path.read_bytes())
    (shards / "part-1b.parquet").write_bytes(b"PAR1 not really a parquet file PAR1")
    data = gzip.compress(b"".join(
        json.dumps({"id": f"t{i}", "text": f"document {i} of a shard cut short"}).encode() + b"\n"
        for i in range(2000)))
    (shards / "part-2b.jsonl.gz").write_bytes(data[: len(data) // 2])

    report = tag_corpus(shards, tmp_path / "ray.parquet", ledger=crawl["ledger"],
                        engine=RayEngine(workers=2), batch_size=500)
    failed = {Path(f["file"]).name for f in report.extra["failed_shards"]}
    assert failed == {"part-1b.parquet", "part-2b.jsonl.gz"}
    unreadable = [r for r in rejects(tmp_path / "ray.parquet") if r["reason"] == "unreadable_file"]
    assert sorted(Path(r["file"]).name for r in unreadable) == sorted(failed)
    counts = report.counts
    assert counts.read == counts.accepted + counts.rejected
    assert counts.by_reason["unreadable_file"] == 2 and counts.files == 5
    # The good shards are all there, tagged as the local engine tags them on their own...
    tag_corpus(good, tmp_path / "local.parquet", ledger=crawl["ledger"])
    tagged = pl.read_parquet(tmp_path / "ray.parquet")
    expected = pl.read_parquet(tmp_path / "local.parquet")
    assert tagged.filter(~pl.col("id").str.starts_with("t")).equals(expected)
    # ... and so are the batches of the cut shard that were read before the cut.
    cut = tagged.filter(pl.col("id").str.starts_with("t"))
    assert cut.height > 0 and cut.height % 500 == 0
    assert cut["id"].to_list() == [f"t{i}" for i in range(cut.height)]
    # The local engine stops at the first unreadable shard.
    with pytest.raises(InputError, match="part-1b.parquet"):
        tag_corpus(shards, tmp_path / "local-all.parquet")


def test_strict_stops_at_the_first_bad_row_with_the_local_message(
    crawl: dict, tmp_path: Path, ray_local
) -> None:
    with pytest.raises(InputError) as local:
        tag_corpus(crawl["shards"], tmp_path / "a.parquet", strict=True)
    with pytest.raises(InputError) as on_ray:
        tag_corpus(crawl["shards"], tmp_path / "b.parquet", strict=True, engine="ray")
    assert str(on_ray.value) == str(local.value)
    assert "duplicate_id" in str(local.value) or "empty_text" in str(local.value)
    assert not (tmp_path / "b.parquet").exists()


def test_detectors_load_once_per_worker_and_tag_the_same(
    crawl: dict, tmp_path: Path, ray_local
) -> None:
    from provenance.detectors import NgramClassifier, calibrate

    rng = random.Random(5)
    human = [words(rng, 30) for _ in range(60)]
    machine = [" ".join(["model", "output"] + words(rng, 28).split()) for _ in range(60)]
    clf = NgramClassifier(n_features=2**12, min_tokens=1).fit(
        human[:40] + machine[:40], [0] * 40 + [1] * 40)
    calibrate(clf, human[40:], target_fpr=0.1, machine_texts=machine[40:]).save(
        tmp_path / "detector")
    options = {"ledger": crawl["ledger"], "detector": tmp_path / "detector",
               "estimate_prevalence": True}
    local = tag_corpus(crawl["shards"], tmp_path / "local.parquet", **options)
    on_ray = tag_corpus(crawl["shards"], tmp_path / "ray.parquet", engine="ray", **options)
    tagged = pl.read_parquet(tmp_path / "ray.parquet")
    assert tagged.equals(pl.read_parquet(tmp_path / "local.parquet"))
    assert "detector" in set(tagged["prov_evidence"])
    assert on_ray.extra["prevalence"] == local.extra["prevalence"]
    assert on_ray.extra["gpus_per_worker"] == 0  # no GPU in this Ray


def test_the_ledger_snapshot_is_a_consistent_read_only_copy(crawl: dict, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(crawl["ledger"].read_bytes())
    data = ledger_snapshot(path)
    with Ledger(path) as writer:
        writer.register(["registered after the snapshot was taken, so not in it"])
        snapshot = open_snapshot(data)
        try:
            assert snapshot.read_only and not snapshot.path.exists()
            assert snapshot.stats().records == writer.stats().records - 1
            assert snapshot.lookup_exact(["registered after the snapshot was taken, so not in it"]
                                         ) == [None]
        finally:
            snapshot.close()


def test_engine_arguments_are_checked_and_ray_is_optional(monkeypatch, tmp_path: Path) -> None:
    assert resolve_engine("local") is None
    assert resolve_engine("ray", "auto") == RayEngine(address="auto")
    with pytest.raises(ConfigError, match="engine must be one of local, ray, got 'spark'"):
        tag_corpus(tmp_path, tmp_path / "out.parquet", engine="spark")
    with pytest.raises(ConfigError, match="ray_address is only used with engine='ray'"):
        tag_corpus(tmp_path, tmp_path / "out.parquet", ray_address="auto")
    with pytest.raises(ConfigError, match="workers must be a positive integer, got 0"):
        RayEngine(workers=0)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"install tailguard\[ray\]"):
        tag_corpus(tmp_path, tmp_path / "out.parquet", engine="ray")


def test_snapshots_leave_nothing_behind_and_sweep_what_a_killed_run_left(
    crawl: dict, tmp_path: Path, monkeypatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname().replace(".", "-") or "host"

    def killed_inside(purpose: str) -> None:  # what a kill -9 inside ledger_snapshot leaves
        left = temp / f".tailguard-work.{purpose}.{host}.{dead}.1.0123abcd"
        left.mkdir()
        (left / "ledger.sqlite").write_bytes(b"stale")

    killed_inside("snapshot")
    data = ledger_snapshot(crawl["ledger"])
    assert list(temp.iterdir()) == []
    killed_inside("ledger")
    snapshot = open_snapshot(data)
    try:
        assert list(temp.iterdir()) == [] and snapshot.stats().records == 40
    finally:
        snapshot.close()


def test_ray_refuses_an_output_inside_its_input_before_starting(crawl: dict) -> None:
    pytest.importorskip("ray", reason='needs Ray: pip install "tailguard[ray]"')
    with pytest.raises(OutputError, match="lies inside the input"):
        tag_corpus(crawl["shards"], crawl["shards"] / "tagged.parquet", engine="ray")


def test_an_empty_corpus_on_ray_has_every_column(tmp_path: Path, ray_local) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"id": "blank", "text": " "}) + "\n")
    report = tag_corpus(empty, tmp_path / "e.parquet", engine="ray")
    assert report.counts.rejected == 1
    assert pl.read_parquet(tmp_path / "e.parquet").schema == pl.Schema(tagged_schema())
