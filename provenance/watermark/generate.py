"""Watermarked generation through ``model.generate``, seeded and checked against the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from provenance.errors import ConfigError, InputError
from provenance.watermark.key import WatermarkKey
from provenance.watermark.scorer import check_tokenizer


def generate_watermarked(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    key: WatermarkKey,
    *,
    max_new_tokens: int = 128,
    min_new_tokens: int | None = None,
    seed: int = 0,
    do_sample: bool = True,
    batch_size: int = 16,
    **generate_kwargs: Any,
) -> list[str]:
    """Watermarked continuations of ``prompts`` (the generated text only, prompt removed).

    Prompts are left-padded into batches of ``batch_size``. Sampling is seeded per batch
    (``seed + batch index``) inside :func:`torch.random.fork_rng`, so the caller's global random
    state is left as it was; the same prompts, batch size and seed give the same texts.
    ``min_new_tokens`` keeps the model from stopping early (a watermark needs tokens to show).
    Extra keyword arguments go to ``model.generate`` (``temperature``, ``top_p`` ...).
    """
    import torch

    if isinstance(prompts, str):
        raise InputError("prompts must be a sequence of strings, not one string; wrap it")
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if min_new_tokens is not None and not 0 <= min_new_tokens <= max_new_tokens:
        raise ConfigError(
            f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}"
        )
    config = key.generation_config()
    model_vocab = model.config.get_text_config().vocab_size
    if model_vocab != key.vocab_size:
        raise ConfigError(
            f"the model's vocabulary has {model_vocab} tokens but the watermark key was made for "
            f"{key.vocab_size}; make a key for this model (WatermarkKey.generate(..., "
            f"vocab_size={model_vocab}))"
        )
    check_tokenizer(key, tokenizer)
    device = next(model.parameters()).device
    if device.type != key.rng_device:
        raise ConfigError(
            f"the model is on {device.type} but the key's green lists are drawn on "
            f"{key.rng_device}; move the model or make a key with rng_device={device.type!r}"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id
    )
    if pad_id is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token to pad prompts with")
    encoded = tokenizer(list(prompts))["input_ids"]
    for row, ids in enumerate(encoded):
        if len(ids) < key.context_width:
            raise InputError(
                f"prompt has {len(ids)} tokens; the watermark needs at least "
                f"{key.context_width} to seed its first green list",
                row=row,
            )
    outputs: list[str] = []
    rng_devices = [device] if device.type == "cuda" else []
    for b, start in enumerate(range(0, len(encoded), batch_size)):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, ids in enumerate(chunk):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids) :] = 1
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            torch.manual_seed(seed + b)
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                watermarking_config=config,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                do_sample=do_sample,
                pad_token_id=pad_id,
                **generate_kwargs,
            )
        outputs.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return outputs
