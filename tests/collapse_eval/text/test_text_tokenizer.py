"""Byte-level BPE: exact round trips, determinism, files, and token blocks."""

from __future__ import annotations

import pytest
import torch

from collapse_eval.text.tokenizer import (
    EOT,
    EOT_ID,
    encode_blocks,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from provenance.errors import ConfigError, InputError

ODD_TEXTS = [
    "Ünïcödé — “quotes”, emoji 🙂 and 中文.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\n\nlines , spaced punctuation .",
    f"a literal {EOT} inside text",
]


def test_text_round_trips_exactly(tiny_lm) -> None:
    tok = tiny_lm.tokenizer
    for text in tiny_lm.corpus.valid + tiny_lm.corpus.test + ODD_TEXTS[:3]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_the_vocabulary_has_the_requested_size_and_eot_first(tiny_lm) -> None:
    tok = tiny_lm.tokenizer
    assert len(tok) == 512
    assert tok.convert_tokens_to_ids(EOT) == EOT_ID == tok.eos_token_id
    assert tok.encode("hello", add_special_tokens=False)[0] != EOT_ID  # no BOS added


def test_training_is_deterministic(tiny_corpus) -> None:
    docs = tiny_corpus.train[:3]
    a, b = train_tokenizer(docs, 400), train_tokenizer(docs, 400)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_save_and_load_give_the_same_ids(tiny_lm, tmp_path) -> None:
    tok = tiny_lm.tokenizer
    loaded = load_tokenizer(save_tokenizer(tok, tmp_path / "tok"))
    for text in ODD_TEXTS:
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.eos_token_id == EOT_ID and len(loaded) == len(tok)
    with pytest.raises(InputError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_blocks_concatenate_documents_with_eot_between_them(tiny_lm) -> None:
    tok = tiny_lm.tokenizer
    docs = tiny_lm.corpus.valid + tiny_lm.corpus.test
    blocks = encode_blocks(tok, docs, block=16)
    stream = []
    for doc in docs:
        stream += tok.encode(doc, add_special_tokens=False) + [EOT_ID]
    n = len(stream) // 16
    assert blocks.shape == (n, 16) and blocks.dtype == torch.long
    assert blocks.reshape(-1).tolist() == stream[: n * 16]  # the partial last block is dropped
    assert torch.equal(blocks, encode_blocks(tok, docs, block=16))


def test_block_shapes_of_the_fixture(tiny_lm) -> None:
    assert tiny_lm.train.shape[1] == 32 and tiny_lm.train.shape[0] > 1000
    assert int(tiny_lm.train.max()) < 512 and int(tiny_lm.train.min()) >= 0
    assert encode_blocks(tiny_lm.tokenizer, [], block=8).shape == (0, 8)


def test_bad_arguments_are_refused(tiny_lm) -> None:
    with pytest.raises(ConfigError, match="vocab_size must be an integer >= 258"):
        train_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(InputError, match="not one string"):
        train_tokenizer("one string", vocab_size=300)
    with pytest.raises(ConfigError, match="block must be"):
        encode_blocks(tiny_lm.tokenizer, ["x"], block=1)
