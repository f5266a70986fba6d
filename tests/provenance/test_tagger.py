"""Evidence fusion on a real SQLite ledger and real files."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from provenance.corpus import rejects_path_for
from provenance.errors import (
    ConfigError,
    InputError,
    LedgerError,
    OutputError,
    TailguardWarning,
)
from provenance.fusion import Tagger, TagOptions, build_signals, tagged_schema
from provenance.ledger import Ledger
from provenance.schema import TAG_COLUMNS, Evidence, Label, Tag
from provenance.signals import Signal
from provenance.tagger import tag, tag_corpus

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


def test_one_set_of_checked_options_serves_every_call(world: dict, tmp_path: Path) -> None:
    crawl = tmp_path / "crawl.jsonl"
    write_dirty_crawl(crawl, world["rows"])
    options = TagOptions.create(ledger=world["ledger"], near_threshold=None, batch_size=7)
    by_keywords = tag_corpus(crawl, tmp_path / "a.parquet", ledger=world["ledger"],
                             near_threshold=None, batch_size=7)
    by_options = tag_corpus(crawl, tmp_path / "b.parquet", options=options)
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.read_parquet(tmp_path / "b.parquet"))
    assert by_options.by_evidence == by_keywords.by_evidence
    assert "ledger_near" not in by_options.signals and by_options.by_evidence["none"] == 15
    with pytest.raises(ConfigError, match=r"give options= or keywords \(strict\), not both"):
        tag_corpus(crawl, tmp_path / "c.parquet", options=options, strict=True)
    with pytest.raises(ConfigError, match="unknown tagging option 'near'"):
        tag(pl.DataFrame(world["rows"]), near=0.5)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        tag_corpus(crawl, tmp_path / "d.parquet", batch_size=0)
    assert not (tmp_path / "c.parquet").exists() and not (tmp_path / "d.parquet").exists()


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


# ---- where the output goes: checked first, failures one line, nothing left behind -------------


def small_crawl(folder: Path, rows: int = 3) -> Path:
    path = folder / "c.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i}"}) + "\n"
                            for i in range(rows)) + "{broken\n")
    return path


@pytest.mark.parametrize("name", ["out.parquet", "out.jsonl", "out.jsonl.gz"])
def test_a_read_only_output_is_refused_before_any_work(
    tmp_path: Path, readonly_dir: Path, name: str
) -> None:
    with pytest.raises(OutputError) as info:
        tag_corpus(small_crawl(tmp_path), readonly_dir / name)
    assert str(info.value).startswith(f"{readonly_dir / name}: cannot write: read-only file")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda p: "", "the output path is empty"),
        (lambda p: p / "c.jsonl", "the output is the input"),
        (lambda p: (p / "n.txt").write_text("") or p / "n.txt" / "o.parquet", "is a file, not"),
        (lambda p: p, "the output holds the input"),
    ],
)
def test_outputs_that_would_harm_an_input_or_cannot_exist_are_refused(
    tmp_path: Path, output, message: str
) -> None:
    crawl = small_crawl(tmp_path)
    before = crawl.read_bytes()
    with pytest.raises(OutputError, match=message):
        tag_corpus(crawl, output(tmp_path))
    assert crawl.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} <= {"c.jsonl", "n.txt"}


def test_an_output_inside_an_input_folder_or_on_the_ledger_is_refused(
    world: dict, tmp_path: Path
) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    small_crawl(folder)
    with pytest.raises(OutputError, match="lies inside the input"):
        tag_corpus(folder, folder / "tagged.parquet")
    with pytest.raises(OutputError, match="is the input"):
        tag_corpus(folder, world["ledger"], ledger=world["ledger"])


def test_a_full_disk_is_one_line_and_leaves_no_output_and_no_work_files(
    tmp_path: Path, tiny_disk: Path
) -> None:
    crawl = tmp_path / "big.jsonl"
    crawl.write_text("".join(json.dumps({"id": str(i), "text": secrets.token_hex(24)}) + "\n"
                             for i in range(20_000)) + "{broken\n")
    for name in ("out.parquet", "out.jsonl"):
        with pytest.raises(OutputError) as info:
            tag_corpus(crawl, tiny_disk / name, batch_size=2_000)
        assert "no space left on device" in str(info.value) and "\n" not in str(info.value)
        assert str(info.value).startswith(str(tiny_disk / name))
        assert list(tiny_disk.iterdir()) == []


def test_a_rejects_file_that_fills_the_disk_is_named_not_the_input(
    tmp_path: Path, tiny_disk: Path
) -> None:
    crawl = tmp_path / "bom.jsonl"
    crawl.write_text("".join(f'{{"id": "{i}", "text": "{secrets.token_hex(24)}"\n'
                             for i in range(10_000)))  # every line broken: all rejected
    with pytest.raises(OutputError) as info:
        tag_corpus(crawl, tiny_disk / "out.jsonl")
    assert str(info.value).startswith(f"{tiny_disk / 'out.jsonl.rejects.jsonl'}: cannot write")
    assert list(tiny_disk.iterdir()) == []


def test_an_empty_tagged_corpus_has_every_column_and_mixes(tmp_path: Path) -> None:
    from mixers.build import build_mixture
    from mixers.spec import build_spec

    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"id": "blank", "text": "  "}) + "\n")
    report = tag_corpus(empty, tmp_path / "e.parquet")
    assert report.counts.read == 1 and report.counts.accepted == 0
    assert pl.read_parquet(tmp_path / "e.parquet").schema == pl.Schema(tagged_schema())
    rows = [{"id": f"g{i}", "text": f"doc {i}", "is_synthetic": i % 2 == 0} for i in range(20)]
    good = tmp_path / "g.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tag_corpus(good, tmp_path / "g.parquet")
    spec = build_spec(tagged=[tmp_path / "e.parquet", tmp_path / "g.parquet"], target_docs=10,
                      synthetic_ratio=0.5)
    manifest = build_mixture(spec, tmp_path / "mix")
    assert sum(manifest.as_dict()["achieved"]["documents_by_pool"].values()) == 10


# ---- a killed `tailguard tag`: nothing it leaves is read as data, and a rerun cleans up ---------


def tailguard(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})


def kill_when_working(args: list[str], cwd: Path, folder: Path, parts: int = 2) -> None:
    """Start ``tailguard tag``, SIGKILL it once its work folder holds ``parts`` part files."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(folder.glob(".tailguard-work.*/part-*.parquet"))) >= parts:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "tag ended before it could be killed; give it more rows"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_killed_tag_leaves_nothing_a_later_run_reads_and_a_rerun_gives_the_same_bytes(
    tmp_path: Path,
) -> None:
    rows = 60_000
    lines = [json.dumps({"id": f"d{i}", "text": f"doc {i} of the crawl"}) for i in range(rows)]
    lines.insert(3, "{broken")  # a rejects file is open when the run is killed
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    args = ["tag", "big.jsonl", "-o", "tk/out.parquet", "-q", "--batch-size", "1000"]
    assert tailguard(*args, cwd=tmp_path).returncode == 0
    reference = (tmp_path / "tk" / "out.parquet").read_bytes()

    kill_when_working(args, tmp_path, tmp_path / "tk")
    left = sorted(p.name for p in (tmp_path / "tk").iterdir())
    assert any(n.startswith(".tailguard-work.") for n in left)  # what kill -9 leaves...
    assert any(n.startswith(".out.parquet.rejects.jsonl.") for n in left)
    assert (tmp_path / "tk" / "out.parquet").read_bytes() == reference  # ...the old output kept

    again = tailguard("tag", "tk", "-o", "again.parquet", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["read"] == rows  # ...is never read as data
    assert pl.read_parquet(tmp_path / "again.parquet").height == rows

    assert tailguard(*args, cwd=tmp_path).returncode == 0  # the rerun sweeps the leftovers
    assert sorted(p.name for p in (tmp_path / "tk").iterdir()) == [
        "out.parquet", "out.parquet.rejects.jsonl"]
    assert (tmp_path / "tk" / "out.parquet").read_bytes() == reference


def test_a_write_failure_through_the_cli_is_one_line_naming_the_output(
    tmp_path: Path, readonly_dir: Path
) -> None:
    crawl = tmp_path / "bom.jsonl"
    crawl.write_bytes(b"\xef\xbb\xbf" + small_crawl(tmp_path).read_bytes())
    for output, cause in ((readonly_dir / "out.jsonl", "cannot write: read-only file system"),
                          ("", "the output path is empty")):
        done = tailguard("tag", str(crawl), "-o", str(output), cwd=tmp_path)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: {output}: {cause}" if output else f"error: {cause}")
