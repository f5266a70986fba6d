"""Text corpora: the shipped Wikipedia sample, splits by article, the other source kinds."""

from __future__ import annotations

import json

import polars as pl
import pytest

from collapse_eval.text.data import (
    TextCorpus,
    clean_wiki_text,
    load_text_corpus,
    split_documents,
)
from provenance.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def full_corpus() -> TextCorpus:
    return load_text_corpus()


def test_the_default_corpus_has_the_documented_articles_and_split(full_corpus) -> None:
    stats = full_corpus.stats()
    assert stats["total"]["documents"] == 106
    assert (stats["train"]["documents"], stats["valid"]["documents"],
            stats["test"]["documents"]) == (94, 7, 5)
    total = stats["total"]["chars"]
    assert 2_900_000 < total < 3_000_000
    for split in ("valid", "test"):  # 2.5% each, overshoot at most 1.5x
        assert 0.025 <= stats[split]["chars"] / total <= 0.0375
    assert "CC BY-SA" in full_corpus.license


def test_splits_are_disjoint_by_article_and_cover_the_corpus(full_corpus) -> None:
    ids = full_corpus.ids
    train, valid, test = set(ids["train"]), set(ids["valid"]), set(ids["test"])
    assert not (train & valid or train & test or valid & test)
    assert len(train | valid | test) == 106
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [
        len(full_corpus.train), len(full_corpus.valid), len(full_corpus.test)]
    assert "Anarchism" in train  # the first article of the dump, and titles are the ids


def test_the_split_is_deterministic_and_keyed_by_the_seed(tiny_corpus) -> None:
    again = load_text_corpus(max_articles=10)
    assert again.ids == tiny_corpus.ids and again.train == tiny_corpus.train
    others = [load_text_corpus(max_articles=10, seed=s).ids for s in (1, 2, 3)]
    assert any(o["test"] != tiny_corpus.ids["test"] for o in others)


def test_markup_is_stripped_and_link_sections_dropped(full_corpus) -> None:
    text = "\n".join(full_corpus.train + full_corpus.valid + full_corpus.test)
    assert "'''" not in text and "[[" not in text and "{{" not in text
    assert "== References ==" not in text and "== External links ==" not in text
    assert "\n\n" not in text  # one paragraph per line
    assert "== History ==" in text
    assert not any(title.startswith("Wikipedia:") for title in full_corpus.ids["train"])


def test_clean_wiki_text_stops_at_the_first_trailing_section() -> None:
    raw = "Lead ''text''.\n\n==Life==\nBorn.\n\n== Notes ==\nx\n==Later==\nNot kept."
    assert clean_wiki_text(raw) == "Lead text.\n== Life ==\nBorn."


def test_split_documents_gives_each_held_out_split_a_document() -> None:
    docs = ["a" * 100] * 5
    parts = split_documents(docs, valid_fraction=0.01, test_fraction=0.01)
    assert len(parts["valid"]) == 1 and len(parts["test"]) == 1 and len(parts["train"]) == 3
    with pytest.raises(ConfigError, match="valid_fraction must be in"):
        split_documents(docs, valid_fraction=0.7)


def test_a_text_file_splits_into_documents_on_blank_lines(tmp_path) -> None:
    path = tmp_path / "docs.txt"
    paragraphs = [f"Document {i} line one.\nLine two of {i}." for i in range(40)]
    path.write_text("\n\n \n".join(paragraphs) + "\n")
    corpus = load_text_corpus(path, valid_fraction=0.1, test_fraction=0.1)
    assert sorted(corpus.train + corpus.valid + corpus.test) == sorted(paragraphs)
    stats = corpus.stats()
    for split in ("valid", "test"):
        share = stats[split]["chars"] / stats["total"]["chars"]
        assert 0.1 <= share <= 0.15


def test_jsonl_and_parquet_corpora_use_their_text_field(tmp_path) -> None:
    rows = [{"id": f"d{i}", "body": f"text number {i}"} for i in range(20)]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = load_text_corpus(jsonl, text_field="body")
    assert sorted(corpus.ids["train"] + corpus.ids["valid"] + corpus.ids["test"]) == sorted(
        r["id"] for r in rows)
    parquet = tmp_path / "c.parquet"
    pl.DataFrame(rows).write_parquet(parquet)
    assert load_text_corpus(parquet, text_field="body").ids == corpus.ids


def test_a_missing_text_field_is_named(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 1, "body": "x"}\n' * 3)
    with pytest.raises(InputError, match="text"):
        load_text_corpus(path)


def test_a_datasets_folder_keeps_its_splits(tmp_path) -> None:
    import datasets

    lines = {
        "train": [" = Alpha = ", " first line ", "", " = = Part = = ", " more ",
                  " = Beta = ", " b "],
        "validation": [" = Gamma = ", " g "],
        "test": [" = Delta = ", " d "],
    }
    folder = tmp_path / "wikitext-mini"
    datasets.DatasetDict(
        {k: datasets.Dataset.from_dict({"text": v}) for k, v in lines.items()}
    ).save_to_disk(str(folder))
    corpus = load_text_corpus(folder)
    # WikiText lines are grouped back into articles at the " = Title = " lines.
    assert corpus.train == ["= Alpha =\nfirst line\n= = Part = =\nmore", "= Beta =\nb"]
    assert corpus.valid == ["= Gamma =\ng"] and corpus.test == ["= Delta =\nd"]


def test_a_single_datasets_folder_is_split(tmp_path) -> None:
    import datasets

    folder = tmp_path / "single"
    datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(30)]}).save_to_disk(
        str(folder))
    corpus = load_text_corpus(folder)
    assert len(corpus.train) + len(corpus.valid) + len(corpus.test) == 30


def test_unusable_sources_raise_one_line_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_text_corpus(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="cannot load the hub dataset"):
        load_text_corpus("no-such-user/no-such-dataset:cfg")  # offline in tests
    empty = tmp_path / "empty.txt"
    empty.write_text("one\n\ntwo\n")
    with pytest.raises(InputError, match="need at least 3"):
        load_text_corpus(empty)
    with pytest.raises(ConfigError, match="max_articles"):
        load_text_corpus(max_articles=1)
