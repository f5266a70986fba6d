"""Rejects: a jsonl file beside the output, made only when a row was rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance.corpus import RejectsWriter, read_corpus, rejects_path_for
from provenance.errors import OutputError


def test_rejects_writer_creates_file_only_when_needed(tmp_path: Path) -> None:
    dirty = tmp_path / "dirty.jsonl"
    dirty.write_text('{"id": "a", "text": "good"}\n{broken\n{"id": "b", "text": "fine"}\n'
                     '{"id": "c"}\n')
    out = rejects_path_for(tmp_path / "tagged.parquet")
    assert out.name == "tagged.parquet.rejects.jsonl"
    out.write_text("stale\n")
    with RejectsWriter(out) as sink:
        pass
    assert not out.exists()
    with RejectsWriter(out) as sink:
        corpus = read_corpus(dirty, on_reject=sink)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 == sink.count == corpus.counts.rejected
    assert corpus.counts.read == 4 and corpus.frame.height == 2
    assert [r["reason"] for r in rows] == ["malformed_json", "missing_text"]
    assert {"file", "line", "row", "reason", "field", "message", "raw"} <= set(rows[0])
    assert rows[0]["reason"] == "malformed_json" and rows[0]["line"] == 2


def test_a_rejects_file_that_cannot_be_written_is_not_blamed_on_the_input(
    tmp_path: Path, readonly_dir: Path
) -> None:
    dirty = tmp_path / "bom.jsonl"
    dirty.write_text('{"id": "a", "text": "good"}\n{broken\n')
    out = readonly_dir / "tagged.jsonl.rejects.jsonl"
    with pytest.raises(OutputError) as info, RejectsWriter(out) as sink:
        read_corpus(dirty, on_reject=sink)
    assert str(info.value).startswith(f"{out}: cannot write: read-only file system")
    assert "bom.jsonl" not in str(info.value)
