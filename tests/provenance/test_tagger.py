"""Evidence fusion on a real SQLite ledger and real files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from provenance.corpus import rejects_path_for
from provenance.errors import ConfigError, InputError, LedgerError, TailguardWarning
from provenance.ledger import Ledger
from provenance.schema import TAG_COLUMNS, Evidence, Label, Tag
from provenance.signals import Signal
from provenance.tagger import Tagger, build_signals, tag, tag_corpus

VOCAB = [f"w{i}" for i in range(3000)]


def words(rng: random.Random, n: int = 200) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def edit(text: str, rng: random.Random, changes: int = 3) -> str:
    toks = text.split()
    for i in rng.sample(range(len(toks)), changes):
        toks[i] = "EDITED"
    return "\n".join(" ".join(toks[i : i + 10]) for i in range(0, len(toks), 10))


@pytest.fixture
def world(tmp_path: Path) -> dict:
    rng = random.Random(7)
    generated = [words(rng) for _ in range(20)]
    human = [words(rng) for _ in range(10)]
    ledger_path = tmp_path / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        ledger.register(generated, generator="gen-model", generation=2,
                        doc_ids=[f"g{i}" for i in range(20)])
    rows = (
        [{"id": f"copy{i}", "text": generated[i].upper(), "truth": "exact"} for i in range(5)]
        + [{"id": f"edit{i}", "text": edit(generated[5 + i], rng), "truth": "near"}
           for i in range(5)]
        + [{"id": f"human{i}", "text": t, "truth": "none"} for i, t in enumerate(human)]
        + [{"id": "declared-human-but-copied", "text": generated[10], "is_synthetic": False,
            "truth": "declared"}]
    )
    return {"ledger": ledger_path, "rows": rows, "generated": generated}


def test_each_document_is_decided_by_the_most_reliable_evidence(world: dict) -> None:
    tagged = tag(pl.DataFrame(world["rows"]), ledger=world["ledger"])
    by_truth = {t: g for t, g in tagged.group_by("truth")}
    exact = by_truth[("exact",)]
    assert set(exact["prov_evidence"]) == {"ledger_exact"}
    assert set(exact["prov_score"]) == {1.0}
    assert set(exact["prov_generator"]) == {"gen-model"} and set(exact["prov_generation"]) == {2}
    near = by_truth[("near",)]
    assert set(near["prov_evidence"]) == {"ledger_near"}
    assert near["prov_score"].min() >= 0.8 and near["prov_score"].max() < 1.0
    human = by_truth[("none",)]
    assert set(human["prov_label"]) == {"unknown"} and set(human["prov_evidence"]) == {"none"}
    assert human["prov_score"].null_count() == human.height
    declared = by_truth[("declared",)]
    assert declared.row(0, named=True)["prov_label"] == "human"
    assert declared.row(0, named=True)["prov_evidence"] == "declared"


def test_detail_records_the_deciding_numbers(world: dict) -> None:
    tagged = tag(pl.DataFrame(world["rows"]), ledger=world["ledger"])
    detail = json.loads(tagged.filter(pl.col("id") == "edit0")["prov_detail"][0])
    assert detail["doc_id"] == "g5"
    assert 0.8 <= detail["similarity"] < 1.0
    assert set(detail) == {"record_id", "doc_id", "content_hash", "similarity"}


def test_later_signals_only_see_undecided_documents(world: dict) -> None:
    with Ledger(world["ledger"], create=False) as ledger:
        tagger = Tagger(build_signals(ledger=ledger))
        tagger.tag_batch(pl.DataFrame(world["rows"]))
    stats = tagger.signal_stats()
    n = len(world["rows"])
    assert stats["declared"]["examined"] == n and stats["declared"]["decided"] == 1
    assert stats["ledger_exact"]["examined"] == n - 1
    assert stats["ledger_near"]["examined"] == n - 1 - 5
    assert stats["ledger_near"]["decided"] == 5


class KeywordWatermark(Signal):
    """A stand-in for the next issue's watermark: decides documents containing a key word."""

    evidence = Evidence.WATERMARK

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        return [
            Tag(Label.SYNTHETIC, 0.99, self.evidence, detail={"z": 9.0}) if "w1 " in t else None
            for t in batch[text_field]
        ]


def test_new_evidence_slots_into_the_fusion_order(world: dict) -> None:
    rows = world["rows"]
    with Ledger(world["ledger"], create=False) as ledger:
        signals = [*build_signals(ledger=ledger), KeywordWatermark()]
        tagged = tag(pl.DataFrame(rows), signals=signals)
    assert [s.evidence for s in Tagger(signals).signals] == [
        Evidence.DECLARED, Evidence.LEDGER_EXACT, Evidence.WATERMARK, Evidence.LEDGER_NEAR
    ]
    for row in tagged.iter_rows(named=True):
        if row["truth"] == "exact":
            assert row["prov_evidence"] == "ledger_exact"  # exact outranks the watermark
        elif "w1 " in row["text"] and row["truth"] != "declared":
            assert row["prov_evidence"] == "watermark"


def test_one_signal_per_kind() -> None:
    with pytest.raises(ConfigError, match="one signal per kind of evidence"):
        Tagger([KeywordWatermark(), KeywordWatermark()])


def test_a_signal_that_loses_rows_is_caught() -> None:
    class Broken(Signal):
        evidence = Evidence.DETECTOR

        def examine(self, batch, text_field):
            return [None]

    with pytest.raises(RuntimeError, match="returned 1 tags for 2 documents"):
        Tagger([Broken()]).tag_batch(pl.DataFrame({"id": ["a", "b"], "text": ["x", "y"]}))


def test_existing_provenance_columns_are_replaced() -> None:
    frame = pl.DataFrame({"id": ["a"], "text": ["x"], "prov_label": ["synthetic"]})
    tagged = Tagger([]).tag_batch(frame)
    assert tagged.columns == ["id", "text", *TAG_COLUMNS]
    assert tagged["prov_label"].to_list() == ["unknown"]


def test_tag_warns_about_rejected_rows() -> None:
    frame = pl.DataFrame({"id": ["a", "b"], "text": ["fine", ""]})
    with pytest.warns(TailguardWarning, match="1 of 2 rows could not be read \\(empty_text: 1\\)"):
        out = tag(frame)
    assert out.height == 1


def test_missing_ledger_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        tag(pl.DataFrame({"id": ["a"], "text": ["x"]}), ledger=tmp_path / "nope.sqlite")


# ---- tag_corpus: files in, files out, nothing lost ------------------------------------------


def write_dirty_crawl(path: Path, rows: list[dict]) -> int:
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"id": "cut", "text": "truncated')
    lines.insert(5, json.dumps({"id": "blank", "text": ""}))
    lines.insert(7, json.dumps({"id": rows[0]["id"], "text": "duplicate id"}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


@pytest.mark.parametrize("output_name", ["tagged.parquet", "tagged.jsonl"])
def test_tag_corpus_writes_tags_and_rejects_that_add_up(
    world: dict, tmp_path: Path, output_name: str
) -> None:
    crawl = tmp_path / "crawl.jsonl"
    n_lines = write_dirty_crawl(crawl, world["rows"])
    out = tmp_path / output_name

    report = tag_corpus(crawl, out, ledger=world["ledger"], batch_size=7)

    tagged = pl.read_parquet(out) if out.suffix == ".parquet" else pl.read_ndjson(out)
    rejects = [json.loads(x) for x in rejects_path_for(out).read_text().splitlines()]
    assert tagged.height + len(rejects) == n_lines == report.counts.read
    assert sorted(r["reason"] for r in rejects) == ["duplicate_id", "empty_text", "malformed_json"]
    assert report.by_label == {"human": 1, "synthetic": 10, "unknown": 10}
    assert report.by_evidence == {"declared": 1, "ledger_exact": 5, "ledger_near": 5, "none": 10}
    assert report.rejects_file == str(rejects_path_for(out))
    assert set(TAG_COLUMNS) <= set(tagged.columns)
    assert report.as_dict()["docs_per_s"] > 0


def test_tag_corpus_is_deterministic(world: dict, tmp_path: Path) -> None:
    crawl = tmp_path / "crawl.jsonl"
    write_dirty_crawl(crawl, world["rows"])
    tag_corpus(crawl, tmp_path / "a.parquet", ledger=world["ledger"])
    tag_corpus(crawl, tmp_path / "b.parquet", ledger=world["ledger"])
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.read_parquet(tmp_path / "b.parquet"))


def test_strict_run_fails_without_leaving_partial_files(world: dict, tmp_path: Path) -> None:
    crawl = tmp_path / "crawl.jsonl"
    write_dirty_crawl(crawl, world["rows"])
    with pytest.raises(InputError, match="crawl.jsonl, line 3: malformed_json"):
        tag_corpus(crawl, tmp_path / "out.parquet", ledger=world["ledger"], strict=True)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ledger.sqlite"))
    assert left == ["crawl.jsonl"]


def test_clean_run_leaves_no_rejects_file(tmp_path: Path) -> None:
    crawl = tmp_path / "c.jsonl"
    crawl.write_text(json.dumps({"id": "a", "text": "hello world"}) + "\n")
    report = tag_corpus(crawl, tmp_path / "o.parquet")
    assert report.rejects_file is None
    assert not rejects_path_for(tmp_path / "o.parquet").exists()
