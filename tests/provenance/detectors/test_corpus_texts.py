"""Reading calibration texts from real files: each row goes where its label says, nothing is
taken for human that a label calls machine, and the report learns what each file held."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from provenance.detectors.corpus_texts import read_texts
from provenance.errors import InputError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_labelled_rows_are_split_and_groups_follow_the_human_rows(tmp_path: Path) -> None:
    rows = [{"text": "one  human\ntext", "label": "human", "site": "a"},
            {"text": "a machine text", "label": "machine", "site": "b"},
            {"text": "another human text", "label": 0, "site": "b"}]
    jsonl = write_jsonl(tmp_path / "mixed.jsonl", [{**r, "label": str(r["label"])}
                                                   for r in rows[:2]])
    parquet = tmp_path / "more.parquet"
    pl.DataFrame([{**rows[2], "label": "human"}]).write_parquet(parquet)
    read = read_texts([jsonl, parquet], group_field="site", label_field="label")
    assert read.human == ["one human text", "another human text"]  # whitespace collapsed
    assert read.machine == ["a machine text"] and read.groups == ["a", "b"]
    first = read.files[0]
    assert first["sha256"] == hashlib.sha256(jsonl.read_bytes()).hexdigest()
    assert (first["rows"], first["human"], first["machine"], first["rejected"]) == (2, 1, 1, 0)


def test_a_label_that_disagrees_is_refused_and_bad_lines_are_counted(tmp_path: Path) -> None:
    labelled = write_jsonl(tmp_path / "l.jsonl", [{"text": "x y z", "label": "machine"}])
    with pytest.raises(InputError, match=r"l\.jsonl, field 'label': 1 rows are labelled "
                                         r"machine; pass --label-field label"):
        read_texts([labelled])
    with pytest.raises(InputError, match="no field 'site'"):
        read_texts([labelled], group_field="site", label_field="label")
    mislabelled = write_jsonl(tmp_path / "m.jsonl", [{"text": "x y z", "label": "human"},
                                                     {"text": "", "label": "human"},
                                                     {"text": "a b c", "label": "other"}])
    with pytest.raises(InputError, match=r"m\.jsonl, line 3, field 'label': label 'other'"):
        read_texts([mislabelled], label_field="label")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine human text"}\n{not json\n')
    read = read_texts([broken])
    assert read.human == ["fine human text"]
    assert read.files[0]["rejected"] == 1 and read.files[0]["first_reject"].startswith("line 2")
