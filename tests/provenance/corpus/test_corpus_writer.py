"""Corpus writing: atomic files, one schema across batches, the old file kept on failure."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from provenance.corpus import CorpusWriter, read_corpus, write_corpus
from provenance.errors import InputError


@pytest.mark.parametrize("name", ["out.parquet", "out.jsonl", "out.jsonl.gz"])
def test_write_round_trip(tmp_path: Path, name: str) -> None:
    frame = pl.DataFrame({"id": ["1", "2"], "text": ["é", "b"], "n": [1, 2]})
    path = write_corpus(frame, tmp_path / name)
    back = read_corpus(path).frame
    assert back.select("id", "text", "n").equals(frame)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_streaming_writer_unifies_batches_with_different_schemas(tmp_path: Path) -> None:
    with CorpusWriter(tmp_path / "o.parquet") as writer:
        writer.write(pl.DataFrame({"id": ["1"], "text": ["a"], "n": [1]}))
        writer.write(pl.DataFrame({"id": ["2"], "text": ["b"], "n": [2.5], "extra": ["e"]}))
    back = pl.read_parquet(tmp_path / "o.parquet")
    assert back.get_column("n").to_list() == [1.0, 2.5]
    assert back.get_column("extra").to_list() == [None, "e"]
    assert writer.rows == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.parquet"]


def test_failed_write_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    pl.DataFrame({"id": ["old"], "text": ["old"]}).write_parquet(out)
    with pytest.raises(RuntimeError), CorpusWriter(out) as writer:
        writer.write(pl.DataFrame({"id": ["new"], "text": ["new"]}))
        raise RuntimeError("killed mid-run")
    assert pl.read_parquet(out).get_column("id").to_list() == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.parquet"]


def test_unsupported_output_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="name the output .parquet, .jsonl or .jsonl.gz"):
        CorpusWriter(tmp_path / "out.csv")


