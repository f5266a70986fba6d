"""The watermark tests' world: a tiny model trained and initialised here (no downloads, seconds).

The tokenizer is a byte-level BPE (1,000 tokens) trained on standard-library docstrings; the
model is a randomly initialised one-layer GPT-2, whose near-uniform next-token distribution makes
the watermark bias clearly visible. What is tested is the plumbing a real model uses too: keys,
transformers' generation-time watermark, re-tokenizing decoded text, batching and tagging.
Built once per session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from provenance.demo import stdlib_paragraphs
from provenance.devices import torch_threads
from provenance.watermark import WatermarkKey, WatermarkScorer, generate_watermarked

N_WATERMARKED = 20
NEW_TOKENS = 128


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """A one-layer model gains nothing from threads, and on a busy machine they make it 4x
    slower: every test in this folder runs torch on one thread."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    paragraphs = stdlib_paragraphs()
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(paragraphs, trainer)
    special = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=special, eos_token=special, pad_token=special
    )
    tok_dir = tmp_path_factory.mktemp("tiny-tokenizer")
    tokenizer.save_pretrained(tok_dir)
    vocab = len(tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = GPT2Config(
            n_layer=1, n_embd=32, n_head=2, vocab_size=vocab, n_positions=256,
            bos_token_id=0, eos_token_id=0,
        )
        model = GPT2LMHeadModel(config).eval()
    key = WatermarkKey.generate(str(tok_dir), vocab_size=vocab, seed=3)
    prompts = [p.split(". ")[0] for p in paragraphs[:N_WATERMARKED]]
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


