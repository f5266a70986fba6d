"""Corpus writing: atomic files, one schema across batches, the old file kept on failure."""

from __future__ import annotations

import secrets
from pathlib import Path

import polars as pl
import pytest

from provenance.corpus import CorpusWriter, read_corpus, resolve_inputs, write_corpus
from provenance.errors import InputError, OutputError
from provenance.schema import TAG_SCHEMA


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


def test_parts_wait_in_a_hidden_work_folder_that_readers_skip(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    pl.DataFrame({"id": ["old"], "text": ["old"]}).write_parquet(tmp_path / "data.parquet")
    with CorpusWriter(out) as writer:
        for i in range(3):
            writer.write(pl.DataFrame({"id": [str(i)], "text": ["t"]}))
        work = [p for p in tmp_path.iterdir() if p.is_dir()]
        assert [p.name.startswith(".tailguard-work.corpus.") for p in work] == [True]
        assert len(list(work[0].iterdir())) == 3
        assert [p.name for _, p in resolve_inputs(tmp_path)] == ["data.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "o.parquet"]


@pytest.mark.parametrize("name", ["e.parquet", "e.jsonl", "e.jsonl.gz"])
def test_an_output_without_rows_keeps_its_schema(tmp_path: Path, name: str) -> None:
    schema = {"id": pl.String(), "text": pl.String(), **TAG_SCHEMA}
    with CorpusWriter(tmp_path / name, schema=schema) as writer:
        pass
    assert writer.rows == 0
    if name.endswith(".parquet"):
        assert pl.read_parquet(tmp_path / name).schema == pl.Schema(schema)
    else:
        assert read_corpus(tmp_path / name).counts.read == 0


def test_jsonl_gz_bytes_do_not_depend_on_the_temporary_file(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": ["1"], "text": ["a"]})
    first = write_corpus(frame, tmp_path / "a.jsonl.gz").read_bytes()
    assert write_corpus(frame, tmp_path / "b.jsonl.gz").read_bytes() == first


@pytest.mark.parametrize("name", ["out.parquet", "out.jsonl", "out.jsonl.gz"])
def test_a_full_disk_is_one_output_error_and_leaves_nothing(tiny_disk: Path, name: str) -> None:
    big = pl.DataFrame({"id": [str(i) for i in range(20_000)],
                        "text": [secrets.token_hex(16) for _ in range(20_000)]})
    with pytest.raises(OutputError) as info, CorpusWriter(tiny_disk / name) as writer:
        for start in range(0, big.height, 2_000):
            writer.write(big.slice(start, 2_000))
    assert str(info.value).startswith(f"{tiny_disk / name}: cannot write: no space left")
    assert list(tiny_disk.iterdir()) == []
