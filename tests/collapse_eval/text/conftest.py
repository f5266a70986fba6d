"""A tiny slice of the default corpus, its tokenizer and a briefly trained model, built once.

Ten Wikipedia articles, a 512-token BPE, 32-token blocks and a one-layer GPT-2 trained for two
epochs: a few seconds on one CPU thread, and enough for the model to beat the n-gram baselines.
Torch runs on one thread in these tests (see ``torch_threads``): on shared cores, more threads
wait on each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from collapse_eval.text.data import TextCorpus, load_text_corpus
from collapse_eval.text.model import LMRecipe, TrainReport, new_model, train_lm
from collapse_eval.text.tokenizer import encode_blocks, train_tokenizer
from provenance.devices import torch_threads

BLOCK = 32
TINY_RECIPE = LMRecipe(
    vocab_size=512, n_positions=BLOCK, n_embd=64, n_layer=1, n_head=2, block=BLOCK,
    batch_size=16, epochs=2, lr=1e-2,
)


@dataclass
class TinyLM:
    corpus: TextCorpus
    tokenizer: Any
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    recipe: LMRecipe
    model: Any
    report: TrainReport
    initial_valid_ppl: float


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_corpus() -> TextCorpus:
    return load_text_corpus(max_articles=10)


@pytest.fixture(scope="session")
def tiny_lm(tiny_corpus: TextCorpus) -> TinyLM:
    from collapse_eval.text.model import perplexity

    with torch_threads(1):
        tokenizer = train_tokenizer(tiny_corpus.train, TINY_RECIPE.vocab_size)
        train = encode_blocks(tokenizer, tiny_corpus.train, BLOCK)
        valid = encode_blocks(tokenizer, tiny_corpus.valid, BLOCK)
        test = encode_blocks(tokenizer, tiny_corpus.test, BLOCK)
        model = new_model(TINY_RECIPE, seed=0)
        initial = perplexity(model, valid)
        report = train_lm(model, train, recipe=TINY_RECIPE, seed=0, valid_blocks=valid)
    return TinyLM(tiny_corpus, tokenizer, train, valid, test, TINY_RECIPE, model, report,
                  initial)
