"""The detector tests' world: the shared tiny LM (``tiny_gpt2``, tests/conftest.py), a second
model for Binoculars, and text sampled from the first, so every check has a known truth.

The shared model is a 2-layer GPT-2 trained on half of the standard library's docstring
paragraphs. Text sampled from it is, by construction, machine-generated *by the scoring model*;
the other half of the paragraphs is human text it has never seen. Built once for the folder (the
shared model once per run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from provenance.detectors import FastDetectGPT
from provenance.devices import torch_threads
from provenance.models import LoadedModel

MAX_TOKENS = 96


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a machine score beats a human one), ties counted half, unscored (NaN) texts dropped."""
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


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
def tiny(tiny_gpt2: Any) -> Tiny:
    """``tiny_gpt2`` (tests/conftest.py), a Binoculars partner and 60 samples of the model."""
    tokenizer, model = tiny_gpt2.tokenizer, tiny_gpt2.load_model()
    other = tiny_gpt2.train_another(tiny_gpt2.train_texts[::-1], steps=60, seed=1)
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(2)
        start = torch.full((60, 1), tokenizer.eos_token_id)
        out = model.generate(
            start, attention_mask=torch.ones_like(start), do_sample=True, top_k=0, top_p=1.0,
            temperature=1.0, max_new_tokens=MAX_TOKENS + 8, pad_token_id=tokenizer.eos_token_id,
        )
    decoded = tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)
    samples = [s for s in decoded if len(s.split()) >= 20]  # drop the few that ended at once
    held_out = tiny_gpt2.held_out
    return Tiny(
        path=tiny_gpt2.path,
        lm=LoadedModel(str(tiny_gpt2.path), model, tokenizer, "cpu"),
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
