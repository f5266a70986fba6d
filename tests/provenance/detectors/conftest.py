"""Tiny language models trained here for the detector tests, so every check has a known truth.

A byte-level BPE tokenizer and a 2-layer GPT-2 are trained for a few seconds on half of the
standard library's docstring paragraphs. Text sampled from that model is, by construction,
machine-generated *by the scoring model*; the other half of the paragraphs is human text it has
never seen. Built once for the whole folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from provenance.demo import stdlib_paragraphs
from provenance.detectors import FastDetectGPT
from provenance.devices import torch_threads
from provenance.models import LoadedModel

MAX_TOKENS = 96


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a machine score beats a human one), ties counted half, unscored (NaN) texts dropped."""
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)


def _train_gpt2(tokenizer: Any, texts: list[str], steps: int, seed: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=2,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    model = GPT2LMHeadModel(config)
    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"]:
        stream += ids + [eos]
    blocks = torch.tensor(stream[: len(stream) // 64 * 64]).view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = blocks[torch.randint(0, len(blocks), (16,))]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@dataclass
class Tiny:
    path: Path
    lm: LoadedModel
    other: LoadedModel  # same tokenizer, differently trained: a Binoculars pair
    samples: list[str]  # sampled from lm: machine text by construction
    held_out: list[str]  # human paragraphs lm never saw
    human_docs: list[str]  # pairs of held-out paragraphs, as long as the samples
    max_tokens: int = MAX_TOKENS  # what the tests score texts up to


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices gain nothing from a second thread, and on a busy machine threads that
    wait for each other make every operation many times slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="package")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    paragraphs = stdlib_paragraphs()
    train, held_out = paragraphs[::2], paragraphs[1::2]
    tokenizer = _train_tokenizer(paragraphs, 1000)
    model = _train_gpt2(tokenizer, train, steps=600, seed=0)
    other = _train_gpt2(tokenizer, train[::-1], steps=60, seed=1)
    path = tmp_path_factory.mktemp("tiny") / "gpt2-tiny"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    torch.manual_seed(2)
    start = torch.full((60, 1), tokenizer.eos_token_id)
    with torch.inference_mode():
        out = model.generate(
            start, attention_mask=torch.ones_like(start), do_sample=True, top_k=0, top_p=1.0,
            temperature=1.0, max_new_tokens=MAX_TOKENS + 8, pad_token_id=tokenizer.eos_token_id,
        )
    decoded = tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)
    samples = [s for s in decoded if len(s.split()) >= 20]  # drop the few that ended at once
    return Tiny(
        path=path,
        lm=LoadedModel(str(path), model, tokenizer, "cpu"),
        other=LoadedModel("gpt2-tiny-other", other, tokenizer, "cpu"),
        samples=samples,
        held_out=held_out,
        human_docs=[f"{a} {b}" for a, b in zip(held_out[::2], held_out[1::2], strict=False)],
    )


@pytest.fixture(scope="package")
def fdg(tiny: Tiny) -> FastDetectGPT:
    return FastDetectGPT(tiny.lm, batch_size=8, max_tokens=MAX_TOKENS, min_tokens=16)




@pytest.fixture(scope="session")
def auroc() -> Callable[[np.ndarray, np.ndarray], float]:
    """The separation the tests ask of a detector, computed here rather than by the library."""
    return _auroc
