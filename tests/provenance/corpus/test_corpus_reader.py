"""Corpus reading on real files: every bad-input case ends in a reject, never a loss."""

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
    Reject,
    RejectReason,
    content_id,
    read_corpus,
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


def test_unicode_line_separators_inside_text_do_not_split_a_record(tmp_path: Path) -> None:
    text = "first\u2028second\u0085third\x0cfourth"
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"id": "u", "text": text}, ensure_ascii=False) + "\n")
    corpus = read_corpus(path)
    assert corpus.frame.get_column("text").to_list() == [text]
    assert corpus.counts.rejected == 0


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_byte_order_mark_at_the_start_does_not_cost_the_first_row(
    tmp_path: Path, suffix: str
) -> None:
    data = b"\xef\xbb\xbf" + b'{"id": "a", "text": "first"}\n{"id": "b", "text": "second"}\n'
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    corpus = read_corpus(path)
    assert corpus.frame.get_column("id").to_list() == ["a", "b"]
    assert corpus.counts.rejected == 0


def test_a_byte_order_mark_inside_the_file_is_data(tmp_path: Path) -> None:
    path = tmp_path / "mid.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n\xef\xbb\xbf{"id": "b", "text": "y"}\n')
    corpus = read_corpus(path)
    assert corpus.frame.get_column("id").to_list() == ["a"]
    assert [(r.reason.value, r.line) for r in corpus.rejects] == [("malformed_json", 2)]
