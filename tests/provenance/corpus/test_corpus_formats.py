"""What a corpus path means: folders, globs, shards in order; one-line errors for the rest."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from provenance.corpus import RejectReason, read_corpus, resolve_inputs
from provenance.errors import InputError


def jsonl(path: Path, *records: dict) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def test_folder_and_glob_read_all_shards_in_order(tmp_path: Path) -> None:
    (tmp_path / "shards" / "sub").mkdir(parents=True)
    pl.DataFrame({"id": ["p1"], "text": ["one"]}).write_parquet(tmp_path / "shards/a.parquet")
    jsonl(tmp_path / "shards/sub/b.jsonl", {"id": "j1", "text": "two"})
    jsonl(tmp_path / "shards/c.jsonl.gz", {"id": "p1", "text": "dup across files"})
    (tmp_path / "shards/notes.txt").write_text("ignored")
    corpus = read_corpus(tmp_path / "shards")
    assert corpus.frame.get_column("id").to_list() == ["p1", "j1"]
    assert [r.reason for r in corpus.rejects] == [RejectReason.DUPLICATE_ID]
    assert corpus.counts.files == 3
    globbed = read_corpus(str(tmp_path / "shards" / "*.parquet"))
    assert globbed.frame.get_column("id").to_list() == ["p1"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.jsonl", "missing.jsonl: no such file or folder"),
        (lambda p: (p / "x.csv").write_text("a,b") and p / "x.csv", "unsupported input format"),
        (lambda p: str(p / "*.nothing"), "glob pattern matched no file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "folder holds no .jsonl"),
        (
            lambda p: (p / "bad.parquet").write_text("not parquet") and p / "bad.parquet",
            "not a readable parquet file",
        ),
        (
            lambda p: (p / "t.jsonl.gz").write_bytes(b"not gzip") and p / "t.jsonl.gz",
            "cannot read file",
        ),
    ],
)
def test_unusable_inputs_are_one_line_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        read_corpus(make(tmp_path))
    assert "\n" not in str(info.value)


def test_resolve_inputs_skips_rejects_files(tmp_path: Path) -> None:
    jsonl(tmp_path / "a.jsonl", {"text": "x"})
    jsonl(tmp_path / "out.parquet.rejects.jsonl", {"text": "y"})
    assert [p.name for _, p in resolve_inputs(tmp_path)] == ["a.jsonl"]


def test_hidden_names_below_a_folder_or_glob_are_never_data(tmp_path: Path) -> None:
    """A killed run's work files ('.'), markers and metadata ('_'), at any depth, are skipped:
    reading them would duplicate or corrupt the corpus."""
    root = tmp_path / "tk"
    for name in ("a.parquet", ".out.parquet.parts.x/part-000000.parquet",
                 ".tailguard-work.corpus.h.1.2.ab/part-000000.parquet", "_tmp/b.parquet",
                 "sub/.c.parquet", "sub/d.parquet", "sub/_e/f.parquet"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"id": [name], "text": ["x"]}).write_parquet(root / name)
    kept = ["a.parquet", "sub/d.parquet"]
    assert [p.relative_to(root).as_posix() for _, p in resolve_inputs(root)] == kept
    for pattern in ("**/*.parquet", "*/*.parquet", "*"):
        found = [p.relative_to(root).as_posix() for _, p in resolve_inputs(f"{root}/{pattern}")]
        assert not any("/_" in f"/{f}" or "/." in f"/{f}" for f in found), pattern
    # A hidden name the user spells out is read: it was asked for.
    assert [p.name for _, p in resolve_inputs(root / "_tmp")] == ["b.parquet"]
    assert [p.name for _, p in resolve_inputs(f"{root}/_tmp/*.parquet")] == ["b.parquet"]
    assert read_corpus(root).counts.read == 2
