"""One reading of a label everywhere: the values training, calibration and evaluation accept
are the same, and a value that is not a label is refused naming where it was read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from provenance.corpus import read_corpus
from provenance.errors import InputError
from provenance.labels import binary_labels, corpus_labels, is_synthetic
from provenance.schema import Label


def test_names_numbers_and_label_members_read_the_same() -> None:
    synthetic = ["machine", " Synthetic", "GENERATED", "machine-generated", "ai", "1", "true",
                 1, 1.0, np.int64(1), np.float32(1.0), True, Label.SYNTHETIC]
    human = ["human", "Human ", "0", "false", 0, 0.0, np.int8(0), False, Label.HUMAN]
    assert [is_synthetic(v) for v in synthetic] == [True] * len(synthetic)
    assert [is_synthetic(v) for v in human] == [False] * len(human)
    for value in ("unknown", Label.UNKNOWN, "robot", "", None, float("nan"), 0.5, 2, "1.0"):
        assert is_synthetic(value) is None, value


def test_binary_labels_refuses_the_first_non_label_by_position() -> None:
    assert binary_labels(np.array([0.0, 1.0, 1.0])).tolist() == [False, True, True]
    assert binary_labels(np.array([True, False])).tolist() == [True, False]
    with pytest.raises(InputError, match=r"row 2: label 2 is neither"):
        binary_labels(np.array([0, 1, 2]))
    with pytest.raises(InputError, match=r"row 1: label 'unknown' is neither"):
        binary_labels(["human", "unknown"])
    with pytest.raises(InputError, match="one-dimensional"):
        binary_labels(np.zeros((2, 2)))


def test_a_bad_label_names_its_line_after_rejected_lines(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join([
        json.dumps({"text": "a human text", "label": "human"}),
        "{not json",
        json.dumps({"text": "   ", "label": "human"}),  # empty text: rejected
        json.dumps({"text": "a model text", "label": "machine"}),
        json.dumps({"text": "who wrote this", "label": "robot"}),
    ]) + "\n")
    corpus = read_corpus(path, origins=True)
    assert corpus.counts.rejected == 2 and corpus.frame.height == 3
    assert [o.line for o in corpus.origins] == [1, 4, 5]
    with pytest.raises(InputError) as caught:
        corpus_labels(corpus, "label")
    assert (caught.value.file, caught.value.line, caught.value.field) == (str(path), 5, "label")
    assert str(caught.value).startswith(f"{path}, line 5, field 'label': label 'robot'")


def test_a_parquet_of_float_labels_reads_and_a_bad_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "docs.parquet"
    pl.DataFrame({"text": ["one", "", "three", "four"],
                  "label": [0.0, 1.0, 1.0, None]}).write_parquet(path)
    corpus = read_corpus(path, origins=True)
    assert [o.row for o in corpus.origins] == [0, 2, 3]  # row 1 (empty text) was rejected
    with pytest.raises(InputError, match=r"docs.parquet, row 3, field 'label': label None"):
        corpus_labels(corpus, "label")
    good = read_corpus(path.parent / "docs.parquet", origins=True)
    good = type(good)(good.frame.head(2), good.rejects, good.counts, good.origins[:2])
    assert corpus_labels(good, "label").tolist() == [False, True]


def test_without_origins_the_row_of_the_table_is_named() -> None:
    corpus = read_corpus(pl.DataFrame({"text": ["a", "b"], "label": ["human", "maybe"]}))
    assert corpus.origins is None
    with pytest.raises(InputError, match=r"^memory, row 1, field 'label'"):
        corpus_labels(corpus, "label", source="memory")
