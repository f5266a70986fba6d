"""The watermark tests' world: the shared tiny LM (``tiny_gpt2``, tests/conftest.py), a key for
its tokenizer and 20 watermarked generations of 96 tokens (no downloads, seconds once the model
is built).

The tokenizer is a byte-level BPE (1,000 tokens) trained on standard-library docstrings; the
model is a two-layer GPT-2 briefly trained on half of them, still unsure enough of the next
token for the watermark bias to show (the lowest z of the 20 generations measured 5.7; the tests
ask 4). What is tested is the plumbing a real model uses too: keys, transformers'
generation-time watermark, re-tokenizing decoded text, batching and tagging. Built once per
session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from provenance.demo import stdlib_paragraphs
from provenance.devices import torch_threads
from provenance.watermark import WatermarkKey, WatermarkScorer, generate_watermarked

N_WATERMARKED = 20
NEW_TOKENS = 96  # after prompts of at most PROMPT_TOKENS: together the model's 128 positions
PROMPT_TOKENS = 32


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """A tiny model gains nothing from threads, and on a busy machine they make it 4x
    slower: every test in this folder runs torch on one thread."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def world(tiny_gpt2: Any) -> dict:
    paragraphs = stdlib_paragraphs()
    tokenizer, tok_dir, model = tiny_gpt2.tokenizer, tiny_gpt2.path, tiny_gpt2.load_model()
    vocab = len(tokenizer)
    key = WatermarkKey.generate(str(tok_dir), vocab_size=vocab, seed=3)
    assert PROMPT_TOKENS + NEW_TOKENS <= model.config.n_positions
    first_sentences = (p.split(". ")[0] for p in paragraphs)
    prompts = [s for s in first_sentences
               if len(tokenizer(s)["input_ids"]) <= PROMPT_TOKENS][:N_WATERMARKED]
    with torch_threads(1):
        generated = generate_watermarked(
            model, tokenizer, prompts, key, max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS, seed=0, batch_size=N_WATERMARKED,
        )
    return {
        "n_watermarked": N_WATERMARKED,
        "tokenizer": tokenizer,
        "tok_dir": tok_dir,
        "model": model,
        "key": key,
        "generated": generated,
        "human": paragraphs[100:400],
    }


@pytest.fixture(scope="session")
def scorer(world: dict) -> WatermarkScorer:
    return WatermarkScorer(world["key"], world["tokenizer"])


