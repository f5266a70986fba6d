"""Registering and looking up whole corpora against a real SQLite ledger."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from provenance.errors import ConfigError, InputError, LedgerError
from provenance.ledger import Ledger
from provenance.ledger_ops import add_corpus, lookup_corpus

TEXTS = [" ".join(f"tok{(7 * i + j) % 500}" for j in range(60)) for i in range(30)]


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    lines = [json.dumps({"id": f"g{i}", "text": t}) for i, t in enumerate(TEXTS)]
    lines.insert(4, "not json")
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_add_counts_rejects_and_is_idempotent(tmp_path: Path, generated: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    first = add_corpus(ledger, generated, generator="m", generation=4, batch_size=7)
    assert first.results == {"added": 30, "already_present": 0}
    assert first.counts.read == 31 and first.counts.rejected == 1
    rejects = Path(first.rejects_file).read_text().splitlines()
    assert json.loads(rejects[0])["line"] == 5
    again = add_corpus(ledger, generated, generator="m", generation=4)
    assert again.results == {"added": 0, "already_present": 30}
    with Ledger(ledger, create=False) as db:
        stats = db.stats()
        assert stats.records == 30 and stats.by_generation == {4: 30}
        match = db.lookup_exact([TEXTS[3]])[0]
    assert match.record.doc_id == "g3" and match.record.generator == "m"


def test_add_rejects_negative_generation(tmp_path: Path, generated: Path) -> None:
    with pytest.raises(ConfigError, match="generation must be >= 0, got -1"):
        add_corpus(tmp_path / "l.sqlite", generated, generation=-1)


def test_lookup_reports_exact_near_and_none(tmp_path: Path, generated: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    add_corpus(ledger, generated, generator="m")
    near = TEXTS[1].split()
    near[30] = "changed"
    queries = pl.DataFrame(
        {"id": ["e", "n", "x"], "text": [TEXTS[0], " ".join(near), "nothing like the ledger"]}
    )
    out = tmp_path / "matches.jsonl"
    report, matches = lookup_corpus(ledger, queries, threshold=0.7, output=out)
    assert matches.get_column("match").to_list() == ["exact", "near", "none"]
    assert matches.get_column("matched_doc_id").to_list() == ["g0", "g1", None]
    assert 0.7 <= matches.get_column("similarity")[1] < 1.0
    assert report.results["matches"] == {"exact": 1, "near": 1, "none": 1}
    assert pl.read_ndjson(out).height == 3

    _, exact_only = lookup_corpus(ledger, queries, threshold=None)
    assert exact_only.get_column("match").to_list() == ["exact", "none", "none"]


def test_lookup_needs_an_existing_ledger(tmp_path: Path, generated: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        lookup_corpus(tmp_path / "missing.sqlite", generated)
    assert not (tmp_path / "missing.sqlite").exists()


def test_missing_input_does_not_create_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        add_corpus(tmp_path / "l.sqlite", tmp_path / "typo.jsonl")
    assert list(tmp_path.iterdir()) == []
