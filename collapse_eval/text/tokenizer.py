"""A byte-level BPE tokenizer trained on the training split, and fixed-length token blocks.

The tokenizer is GPT-2's scheme at a small vocabulary (4,096 by default): bytes are mapped to
printable characters, so any text encodes without unknown tokens and decodes back exactly, and
BPE merges are learned from the training documents with :mod:`tokenizers` (Rust, multi-threaded;
the learned merges do not depend on the thread count). The one special token, ``<|endoftext|>``,
has id 0 (:data:`EOT_ID`); it ends every document in a block stream. The result is wrapped as a
:class:`transformers.PreTrainedTokenizerFast`, so ``save_pretrained`` / ``AutoTokenizer`` and
everything else in the Hugging Face world (the watermark scorer included) can use it.

Training is deterministic: the same documents and vocabulary size give the same merges.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from provenance.errors import ConfigError, InputError

__all__ = ["EOT", "EOT_ID", "encode_blocks", "load_tokenizer", "save_tokenizer", "train_tokenizer"]

EOT = "<|endoftext|>"
#: The end-of-text token's id: the first special token comes first in the vocabulary.
EOT_ID = 0


def train_tokenizer(
    texts: Sequence[str], vocab_size: int = 4096, *, min_frequency: int = 2
) -> Any:
    """Train a byte-level BPE on ``texts`` and wrap it for transformers.

    ``vocab_size`` counts the 256 byte symbols and ``<|endoftext|>``; on a tiny corpus the
    vocabulary can stop short of it (no pair left that occurs ``min_frequency`` times), so size
    models by ``len(tokenizer)``, never assume ``vocab_size``.

    Examples
    --------
    >>> tok = train_tokenizer(["the cat sat on the mat", "the dog sat"], vocab_size=270)
    >>> len(tok) <= 270, tok.eos_token_id
    (True, 0)
    >>> tok.decode(tok.encode("the cat, the café!"))
    'the cat, the café!'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if isinstance(texts, str):
        raise InputError("texts must be a sequence of documents, not one string; wrap it")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 258:
        raise ConfigError(
            f"vocab_size must be an integer >= 258 (256 bytes, {EOT} and one merge), "
            f"got {vocab_size!r}"
        )
    if not any(t.strip() for t in texts):
        raise InputError("cannot train a tokenizer on empty texts")
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
    return wrap(raw)


def wrap(raw: Any) -> Any:
    """A :class:`transformers.PreTrainedTokenizerFast` around a ``tokenizers.Tokenizer``."""
    from transformers import PreTrainedTokenizerFast

    if raw.token_to_id(EOT) != EOT_ID:
        raise ConfigError(f"the tokenizer's {EOT} must have id {EOT_ID}")
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000_000,
    )


def save_tokenizer(tokenizer: Any, folder: str | os.PathLike) -> Path:
    """Write ``tokenizer.json`` and its config to ``folder`` (``save_pretrained``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return folder


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """Read a tokenizer written by :func:`save_tokenizer` (or any ``tokenizer.json`` folder)."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / "tokenizer.json").exists():
        raise InputError("no tokenizer.json in this folder", file=str(folder))
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def encode_blocks(
    tokenizer: Any, texts: Sequence[str], block: int = 64, *, eot_id: int | None = None
) -> torch.Tensor:
    """The documents as one token stream cut into blocks: LongTensor ``(n_blocks, block)``.

    Each document's tokens are followed by the end-of-text token (so it also stands between
    documents); the stream is cut into consecutive blocks and a last partial block is dropped.
    Deterministic, and independent of how the encoder batches.

    Examples
    --------
    >>> tok = train_tokenizer(["one two three four five six seven"], vocab_size=270)
    >>> blocks = encode_blocks(tok, ["one two three", "four five six seven"], block=4)
    >>> blocks.shape[1], blocks.dtype
    (4, torch.int64)
    >>> int((blocks == tok.eos_token_id).sum())
    1
    """
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of documents, not one string; wrap it")
    if isinstance(block, bool) or not isinstance(block, int) or block < 2:
        raise ConfigError(f"block must be an integer >= 2, got {block!r}")
    eot = tokenizer.eos_token_id if eot_id is None else eot_id
    if eot is None:
        raise ConfigError("the tokenizer has no end-of-text (eos) token; pass eot_id")
    texts = list(texts)
    if not texts:
        return torch.empty((0, block), dtype=torch.long)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    stream = np.empty(int(lengths.sum()), dtype=np.int64)
    ends = np.cumsum(lengths)
    for ids, end, n in zip(encoded, ends, lengths, strict=True):
        stream[end - n : end - 1] = ids
    stream[ends - 1] = eot
    n_blocks = len(stream) // block
    return torch.from_numpy(stream[: n_blocks * block].reshape(n_blocks, block).copy())
