"""Corpus reading and writing on real files: every bad-input case ends in a reject, never a loss."""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from pathlib import Path

import datasets
import polars as pl
import pytest

from provenance.corpus import (
    CorpusReader,
    CorpusWriter,
    Reject,
    RejectReason,
    RejectsWriter,
    content_id,
    read_corpus,
    rejects_path_for,
    resolve_inputs,
    write_corpus,
)
from provenance.errors import InputError


def write_lines(path: Path, lines: list[bytes | str]) -> Path:
    data = b"".join((ln.encode() if isinstance(ln, str) else ln) + b"\n" for ln in lines)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def rec(**fields) -> str:
    return json.dumps(fields)


BAD_LINES: list[tuple[bytes | str, RejectReason]] = [
    ('{"id": "m", "text": "unterminated', RejectReason.MALFORMED_JSON),
    ('["a", "list"]', RejectReason.NOT_AN_OBJECT),
    (b'{"id": "u", "text": "caf\xe9 au lait"}', RejectReason.INVALID_UTF8),
    (rec(id="n"), RejectReason.MISSING_TEXT),
    (rec(id="z", text=None), RejectReason.MISSING_TEXT),
    (rec(id="i", text=42), RejectReason.TEXT_NOT_STRING),
    (rec(id="e", text="   \n "), RejectReason.EMPTY_TEXT),
    (rec(id="a", text="a second document claiming id a"), RejectReason.DUPLICATE_ID),
    (rec(id={"nested": 1}, text="object id"), RejectReason.BAD_ID),
    ('{"id": "s", "text": "lone \\ud800 surrogate"}', RejectReason.INVALID_UTF8),
]


@pytest.fixture
def dirty_jsonl(tmp_path: Path) -> Path:
    good = [rec(id="a", text="first good document"), rec(id="b", text="second", lang="en")]
    lines = good[:1] + [line for line, _ in BAD_LINES] + good[1:] + ["", "   "]
    return write_lines(tmp_path / "dirty.jsonl", lines)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_every_bad_line_is_rejected_with_its_reason_and_line(tmp_path: Path, suffix: str) -> None:
    good = [rec(id="a", text="first good document"), rec(id="b", text="second", lang="en")]
    lines = good[:1] + [line for line, _ in BAD_LINES] + good[1:]
    path = write_lines(tmp_path / f"dirty{suffix}", lines)

    corpus = read_corpus(path)

    assert corpus.frame.get_column("id").to_list() == ["a", "b"]
    assert corpus.counts.read == len(lines)
    assert corpus.counts.accepted + corpus.counts.rejected == corpus.counts.read
    got = [(r.line, r.reason) for r in corpus.rejects]
    want = [(i + 2, reason) for i, (_, reason) in enumerate(BAD_LINES)]
    assert got == want
    assert corpus.counts.by_reason == Counter(r.value for _, r in BAD_LINES)


def test_blank_lines_are_not_documents(dirty_jsonl: Path) -> None:
    corpus = read_corpus(dirty_jsonl)
    assert corpus.counts.read == 2 + len(BAD_LINES)


def test_reject_keeps_the_raw_record_exactly(dirty_jsonl: Path) -> None:
    rejects: dict[RejectReason, Reject] = {}
    for reject in read_corpus(dirty_jsonl).rejects:
        rejects.setdefault(reject.reason, reject)
    bad_utf8 = rejects[RejectReason.INVALID_UTF8]
    assert base64.b64decode(bad_utf8.raw_base64) == b'{"id": "u", "text": "caf\xe9 au lait"}'
    assert rejects[RejectReason.MALFORMED_JSON].raw == '{"id": "m", "text": "unterminated'
    assert rejects[RejectReason.TEXT_NOT_STRING].raw == {"id": "i", "text": 42}
    assert rejects[RejectReason.TEXT_NOT_STRING].field == "text"
    assert rejects[RejectReason.DUPLICATE_ID].field == "id"


def test_strict_raises_on_first_bad_row_naming_file_line_and_reason(dirty_jsonl: Path) -> None:
    with pytest.raises(InputError, match=r"dirty\.jsonl, line 2: malformed_json") as info:
        read_corpus(dirty_jsonl, strict=True)
    assert info.value.line == 2
    assert str(info.value).count("\n") == 0


def test_strict_names_the_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [rec(id=1, body="x")])
    with pytest.raises(InputError, match=r"c\.jsonl, line 1, field 'text': missing_text"):
        read_corpus(path, strict=True)


def test_custom_id_and_text_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [rec(doc="d1", body="hello"), rec(doc=7, body="x")])
    frame = read_corpus(path, id_field="doc", text_field="body").frame
    assert frame.columns[:2] == ["doc", "body"]
    assert frame.get_column("doc").to_list() == ["d1", "7"]


def test_missing_ids_are_derived_from_content_and_stable(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl", [rec(text="same text"), rec(text="other"), rec(text="same text")]
    )
    first = read_corpus(path)
    again = read_corpus(path)
    ids = first.frame.get_column("id").to_list()
    base = content_id("same text")
    assert ids == [base, content_id("other"), f"{base}-2"]
    assert ids == again.frame.get_column("id").to_list()
    assert first.counts.ids_derived == 3


def test_fields_with_mixed_types_survive_as_json(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl",
        [rec(id="1", text="a", meta={"k": 1}), rec(id="2", text="b", meta="plain")],
    )
    frame = read_corpus(path).frame
    assert frame.get_column("meta").to_list() == ['{"k": 1}', '"plain"']


def test_batches_respect_batch_size(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [rec(id=str(i), text=f"doc {i}") for i in range(25)])
    reader = CorpusReader(path, batch_size=10)
    assert [b.height for b in reader] == [10, 10, 5]
    assert reader.estimated_rows() == 25


# ---- parquet, folders, globs, datasets, frames --------------------------------------------


@pytest.fixture
def dirty_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ["a", "b", None, "a", "c", "d"],
            "text": ["alpha", None, "gamma", "dup of a", "  ", "delta"],
            "source": ["web"] * 6,
        }
    )


def check_dirty_frame_result(reader: CorpusReader, frames: list[pl.DataFrame]) -> None:
    out = pl.concat(frames)
    assert out.get_column("id").to_list() == ["a", content_id("gamma"), "d"]
    assert out.get_column("source").to_list() == ["web"] * 3
    assert reader.counts.read == 6 and reader.counts.rejected == 3
    assert sorted((r.row, r.reason.value) for r in reader.rejects) == [
        (1, "missing_text"),
        (3, "duplicate_id"),
        (4, "empty_text"),
    ]


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_parquet_rows_are_validated_with_row_numbers(
    tmp_path: Path, dirty_frame: pl.DataFrame, batch_size: int
) -> None:
    path = tmp_path / "c.parquet"
    dirty_frame.write_parquet(path)
    reader = CorpusReader(path, batch_size=batch_size)
    frames = list(reader)
    check_dirty_frame_result(reader, frames)
    assert reader.estimated_rows() == 6


def test_dataframe_lazyframe_and_hf_dataset_sources(dirty_frame: pl.DataFrame) -> None:
    for source in (dirty_frame, dirty_frame.lazy(), datasets.Dataset.from_polars(dirty_frame)):
        reader = CorpusReader(source, batch_size=2)
        check_dirty_frame_result(reader, list(reader))


def test_save_to_disk_folder(tmp_path: Path, dirty_frame: pl.DataFrame) -> None:
    datasets.Dataset.from_polars(dirty_frame).save_to_disk(str(tmp_path / "ds"))
    reader = CorpusReader(tmp_path / "ds")
    check_dirty_frame_result(reader, list(reader))


def test_dataset_dict_folder_names_a_split(tmp_path: Path, dirty_frame: pl.DataFrame) -> None:
    ds = datasets.Dataset.from_polars(dirty_frame)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match="splits train, test; pass one split's folder"):
        read_corpus(tmp_path / "dd")


def test_binary_text_column_with_invalid_utf8(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": ["x", "y"], "text": [b"fine", b"\xff\xfebad"]})
    frame.write_parquet(tmp_path / "b.parquet")
    corpus = read_corpus(tmp_path / "b.parquet")
    assert corpus.frame.get_column("text").to_list() == ["fine"]
    (reject,) = corpus.rejects
    assert (reject.reason, reject.row) == (RejectReason.INVALID_UTF8, 1)
    assert base64.b64decode(reject.raw_base64) == b"\xff\xfebad"


def test_non_string_text_column_rejects_every_row(tmp_path: Path) -> None:
    pl.DataFrame({"id": ["a", "b"], "text": [1, 2]}).write_parquet(tmp_path / "n.parquet")
    corpus = read_corpus(tmp_path / "n.parquet")
    assert corpus.frame.height == 0 and corpus.counts.by_reason == {"text_not_string": 2}


def test_parquet_without_the_text_column_is_one_clear_error(tmp_path: Path) -> None:
    pl.DataFrame({"id": ["a"], "body": ["x"]}).write_parquet(tmp_path / "n.parquet")
    with pytest.raises(InputError, match="no column 'text' \\(columns: id, body\\); name the"):
        read_corpus(tmp_path / "n.parquet")


def test_folder_and_glob_read_all_shards_in_order(tmp_path: Path) -> None:
    (tmp_path / "shards" / "sub").mkdir(parents=True)
    pl.DataFrame({"id": ["p1"], "text": ["one"]}).write_parquet(tmp_path / "shards/a.parquet")
    write_lines(tmp_path / "shards/sub/b.jsonl", [rec(id="j1", text="two")])
    write_lines(tmp_path / "shards/c.jsonl.gz", [rec(id="p1", text="dup across files")])
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
    write_lines(tmp_path / "a.jsonl", [rec(text="x")])
    write_lines(tmp_path / "out.parquet.rejects.jsonl", [rec(text="y")])
    assert [p.name for _, p in resolve_inputs(tmp_path)] == ["a.jsonl"]


# ---- writing --------------------------------------------------------------------------------


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


def test_rejects_writer_creates_file_only_when_needed(tmp_path: Path, dirty_jsonl: Path) -> None:
    out = rejects_path_for(tmp_path / "tagged.parquet")
    assert out.name == "tagged.parquet.rejects.jsonl"
    out.write_text("stale\n")
    with RejectsWriter(out) as sink:
        pass
    assert not out.exists()
    with RejectsWriter(out) as sink:
        read_corpus(dirty_jsonl, on_reject=sink)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(BAD_LINES) == sink.count
    assert {"file", "line", "row", "reason", "field", "message", "raw"} <= set(rows[0])
    assert rows[0]["reason"] == "malformed_json" and rows[0]["line"] == 2


def test_unsupported_output_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="name the output .parquet, .jsonl or .jsonl.gz"):
        CorpusWriter(tmp_path / "out.csv")


def test_unicode_line_separators_inside_text_do_not_split_a_record(tmp_path: Path) -> None:
    text = "first\u2028second\u0085third\x0cfourth"
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"id": "u", "text": text}, ensure_ascii=False) + "\n")
    corpus = read_corpus(path)
    assert corpus.frame.get_column("text").to_list() == [text]
    assert corpus.counts.rejected == 0
