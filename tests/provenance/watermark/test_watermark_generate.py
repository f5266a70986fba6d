"""Watermarked generation is seeded and leaves the caller's random state alone."""

from __future__ import annotations

import torch

from provenance.watermark import generate_watermarked


def test_generation_is_seeded_and_leaves_global_random_state(world: dict) -> None:
    args = (world["model"], world["tokenizer"], ["The module", "A function"], world["key"])
    state = torch.random.get_rng_state()
    first = generate_watermarked(*args, max_new_tokens=8, seed=11)
    assert torch.equal(state, torch.random.get_rng_state())
    assert generate_watermarked(*args, max_new_tokens=8, seed=11) == first
    assert generate_watermarked(*args, max_new_tokens=8, seed=12) != first
