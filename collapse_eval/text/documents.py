"""Documents of the language-model recursion: equal-length pieces of text, and token streams.

The mixers count documents, so a generation's training set has the composition its policy asks
for only if human and generated documents are the same size. The human training articles are
therefore cut into pieces of ``doc_tokens`` tokens (never across articles; an article's last
piece keeps its end-of-text token and may be shorter), and each generated document is
``doc_tokens`` sampled tokens continuing a ``prompt_tokens`` prompt taken from the start of a
training document, as Shumailov et al. continue blocks of the training data. With the default
64-token context, 16 + 48 tokens fill it exactly.

Documents travel as text, exactly as a user's pipeline would store scraped pages; a training
set is the documents' tokens concatenated in the mixture's order and cut into blocks. No
separator is inserted between documents: an article's end is marked by its own end-of-text
token, so generation 0 sees the human text as it is, and every generation sees the same kind of
stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from provenance.errors import ConfigError, InputError

__all__ = ["HUMAN_PREFIX", "chunk_documents", "decode_documents", "document_frame",
           "encode_documents", "prompts_from", "token_stream_blocks"]

HUMAN_PREFIX = "human"


def chunk_documents(tokenizer: Any, articles: Sequence[str], doc_tokens: int,
                    *, prefix: str = HUMAN_PREFIX) -> pl.DataFrame:
    """Cut articles into documents of at most ``doc_tokens`` tokens: columns ``id``, ``text``.

    Each article's tokens end with the end-of-text token; pieces never cross articles. Ids are
    ``{prefix}-{article:05d}-{piece:04d}``, stable for a given corpus and tokenizer.

    Examples
    --------
    >>> from collapse_eval.text.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["one two three four five six"], vocab_size=270)
    >>> docs = chunk_documents(tok, ["one two three four five six", "seven"], doc_tokens=8)
    >>> docs.get_column("id").to_list()[:2]
    ['human-00000-0000', 'human-00000-0001']
    >>> "".join(docs.get_column("text").to_list()[:-1]).endswith("<|endoftext|>")
    True
    """
    if isinstance(doc_tokens, bool) or not isinstance(doc_tokens, int) or doc_tokens < 1:
        raise ConfigError(f"doc_tokens must be a positive integer, got {doc_tokens!r}")
    eot = tokenizer.eos_token_id
    encoded = tokenizer(list(articles), add_special_tokens=False, verbose=False)["input_ids"]
    ids: list[str] = []
    pieces: list[list[int]] = []
    for a, tokens in enumerate(encoded):
        tokens = [*tokens, eot]
        for p, start in enumerate(range(0, len(tokens), doc_tokens)):
            ids.append(f"{prefix}-{a:05d}-{p:04d}")
            pieces.append(tokens[start:start + doc_tokens])
    if not pieces:
        raise InputError("no text to cut into documents")
    return document_frame(ids, decode_documents(tokenizer, pieces))


def decode_documents(tokenizer: Any, pieces: Sequence[Sequence[int]] | torch.Tensor) -> list[str]:
    """Token pieces back to text, special tokens kept (the end-of-text marks an article end)."""
    rows = pieces.tolist() if isinstance(pieces, torch.Tensor) else [list(p) for p in pieces]
    return tokenizer.batch_decode(rows, skip_special_tokens=False,
                                  clean_up_tokenization_spaces=False)


def document_frame(ids: Sequence[str], texts: Sequence[str], **columns: Any) -> pl.DataFrame:
    """The ``id``/``text`` table every pipeline step reads (extra columns kept)."""
    return pl.DataFrame({"id": list(ids), "text": list(texts), **columns})


def encode_documents(tokenizer: Any, texts: Sequence[str]) -> list[np.ndarray]:
    """Each document's token ids (no separators added), for metrics and streams."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in encoded]


def token_stream_blocks(pieces: Sequence[np.ndarray], block: int) -> torch.Tensor:
    """The pieces concatenated in order and cut into ``block``-token rows (a short tail dropped)."""
    if not pieces:
        return torch.empty((0, block), dtype=torch.long)
    stream = np.concatenate(pieces)
    n = len(stream) // block
    return torch.from_numpy(stream[: n * block].reshape(n, block).copy())


def prompts_from(pieces: Sequence[np.ndarray], count: int, prompt_tokens: int,
                 fallback: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` prompts: the first ``prompt_tokens`` of pieces spread evenly over ``pieces``.

    A piece shorter than the prompt (an article's last few tokens) is left-filled from
    ``fallback`` (the human stream's first tokens), so every prompt has the same length and the
    sampler needs no padding. Returns the prompts and the index of the piece each came from
    (its lineage parent).
    """
    if not pieces:
        raise InputError("no training documents to take prompts from")
    index = np.arange(count, dtype=np.int64) * len(pieces) // count
    rows = np.empty((count, prompt_tokens), dtype=np.int64)
    for row, i in enumerate(index):
        head = pieces[i][:prompt_tokens]
        if len(head) < prompt_tokens:
            head = np.concatenate([fallback[: prompt_tokens - len(head)], head])
        rows[row] = head
    return torch.from_numpy(rows), index
