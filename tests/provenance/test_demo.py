"""The demo: embedded human text, a real trigram model, and tags scored against truth."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from provenance.demo import TrigramModel, build_crawl, light_edit, run_demo, stdlib_paragraphs
from provenance.errors import ConfigError, OutputError


def test_stdlib_paragraphs_are_prose_and_deterministic() -> None:
    paragraphs = stdlib_paragraphs()
    assert len(paragraphs) > 400
    assert paragraphs == stdlib_paragraphs()
    assert all(len(p.split()) >= 20 and ">>>" not in p for p in paragraphs)


def test_trigram_model_samples_reproducibly_from_its_training_text() -> None:
    train = stdlib_paragraphs()[:200]
    model = TrigramModel().fit(train)
    a = model.sample(5, random.Random(1))
    assert a == model.sample(5, random.Random(1)) and a != model.sample(5, random.Random(2))
    vocabulary = {w for t in train for w in t.split()}
    assert all(set(t.split()) <= vocabulary for t in a)
    assert all(80 <= len(t.split()) <= 200 for t in a)


def test_trigram_model_errors() -> None:
    with pytest.raises(ConfigError, match="must be fitted before sampling"):
        TrigramModel().sample(1, random.Random(0))
    with pytest.raises(ConfigError, match="at least 3 words"):
        TrigramModel().fit(["too short"])


def test_light_edit_changes_few_words() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    edited = light_edit(text, random.Random(0))
    changed = sum(a != b for a, b in zip(text.split(), edited.split(), strict=True))
    assert changed == 2 and "\n" in edited


def test_build_crawl_refuses_more_documents_than_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="docs_per_kind=100000 needs"):
        build_crawl(tmp_path, docs_per_kind=100_000)


def test_demo_tags_every_kind_as_expected(tmp_path: Path) -> None:
    result = run_demo(tmp_path, docs_per_kind=30, seed=3, detector=None)
    tagged = pl.read_parquet(tmp_path / "tagged.parquet")
    kind = pl.col("id").str.split("-").list.first().alias("kind")
    groups = tagged.group_by(kind).agg(pl.col("prov_evidence"))
    evidence = {k: Counter(v) for k, v in groups.iter_rows()}
    assert set(evidence["web"]) == {"declared", "none"} and evidence["web"]["declared"] == 30
    assert set(evidence["copy"]) == {"ledger_exact"}
    assert set(evidence["edit"]) <= {"ledger_near", "none"}
    assert evidence["edit"]["ledger_near"] > 15
    assert set(evidence["decl"]) == {"declared"}
    assert set(evidence["other"]) == {"none"}
    assert result.confusion["human"].get("synthetic", 0) == 0
    assert result.report.counts.rejected == 5
    assert tagged.height + 5 == result.report.counts.read


def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(
    tmp_path: Path, readonly_dir: Path
) -> None:
    with pytest.raises(OutputError, match="the output path is empty"):
        run_demo("")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt is a file, not a folder"):
        run_demo(tmp_path / "notes.txt" / "demo")
    done = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "-o", str(readonly_dir / "demo")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {readonly_dir / 'demo'}: cannot write: read-only file system")


def test_demo_with_the_shipped_detector_decides_what_no_other_evidence_reaches(
    tmp_path: Path,
) -> None:
    result = run_demo(tmp_path, docs_per_kind=6, seed=3)  # detector="default"
    tagged = pl.read_parquet(tmp_path / "tagged.parquet")
    reached = tagged.filter(pl.col("id").str.starts_with("other-")
                            | (pl.col("id").str.starts_with("web-")
                               & (pl.col("prov_evidence") != "declared")))
    assert reached.height == 12
    assert set(reached.get_column("prov_evidence")) <= {"detector"}
    details = [json.loads(d) for d in reached.get_column("prov_detail")]
    assert all(d["detector"].startswith("supervised:") for d in details)
    decided = [d for d in details if "criterion" in d]
    assert decided and all("threshold" in d for d in decided)
    assert sum(sum(row.values()) for row in result.confusion.values()) == tagged.height
