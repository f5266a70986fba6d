"""The KV-cache sampler: shapes, seeds, greedy limit, a no-cache reference, watermarks, beams."""

from __future__ import annotations

import pytest
import torch

from collapse_eval.text.sampling import CachedGreenlists, beam_generate, sample_continuations
from provenance.errors import ConfigError, InputError
from provenance.watermark import WatermarkKey, WatermarkScorer

PROMPT = 4
NEW = 28  # prompt + new = the tiny model's 32 positions


@pytest.fixture(scope="module")
def prompts(tiny_lm) -> torch.Tensor:
    return tiny_lm.train[::37, :PROMPT][:40]


@pytest.fixture(scope="module")
def key(tiny_lm) -> WatermarkKey:
    return WatermarkKey.generate("tiny-bpe", vocab_size=512, seed=11)


def greedy_reference(model, prompts: torch.Tensor, steps: int) -> torch.Tensor:
    ids = prompts.clone()
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return ids


def test_shape_prompts_and_seeded_determinism(tiny_lm, prompts) -> None:
    out = sample_continuations(tiny_lm.model, prompts, NEW, seed=5)
    assert out.shape == (len(prompts), PROMPT + NEW) and out.dtype == torch.long
    assert torch.equal(out[:, :PROMPT], prompts)
    assert int(out.min()) >= 0 and int(out.max()) < 512
    assert torch.equal(out, sample_continuations(tiny_lm.model, prompts, NEW, seed=5))
    assert not torch.equal(out, sample_continuations(tiny_lm.model, prompts, NEW, seed=6))


def test_rows_do_not_depend_on_batch_size_or_length(tiny_lm, prompts) -> None:
    out = sample_continuations(tiny_lm.model, prompts, NEW, seed=5, batch_size=256)
    assert torch.equal(out, sample_continuations(tiny_lm.model, prompts, NEW, seed=5,
                                                 batch_size=7))
    shorter = sample_continuations(tiny_lm.model, prompts[:9], 10, seed=5)
    assert torch.equal(shorter, out[:9, : PROMPT + 10])


def test_a_tiny_temperature_is_greedy(tiny_lm, prompts) -> None:
    expected = greedy_reference(tiny_lm.model, prompts[:8], 12)
    got = sample_continuations(tiny_lm.model, prompts[:8], 12, temperature=1e-4, seed=1)
    assert torch.equal(got, expected)
    assert torch.equal(sample_continuations(tiny_lm.model, prompts[:8], 12, top_k=1, seed=2),
                       expected)


def test_top_k_draws_the_same_with_and_without_processors(tiny_lm, prompts) -> None:
    plain = sample_continuations(tiny_lm.model, prompts, 12, top_k=20, seed=9)
    identity = sample_continuations(tiny_lm.model, prompts, 12, top_k=20, seed=9,
                                    logits_processors=[lambda ids, scores: scores])
    assert torch.equal(plain, identity)
    with torch.no_grad():
        logits = tiny_lm.model(plain[:, :PROMPT]).logits[:, -1]
    allowed = torch.topk(logits, 20, dim=-1).indices
    assert (allowed == plain[:, PROMPT : PROMPT + 1]).any(dim=1).all()


def test_the_kv_cache_matches_recomputing_everything(tiny_lm, prompts, key) -> None:
    processor = key.generation_config().construct_processor(512, "cpu")
    for procs in ((), (processor,)):
        cached = sample_continuations(tiny_lm.model, prompts[:12], 10, seed=3,
                                      logits_processors=procs)
        plain = sample_continuations(tiny_lm.model, prompts[:12], 10, seed=3,
                                     logits_processors=procs, use_cache=False)
        assert torch.equal(cached, plain)


def test_sampling_follows_the_model_distribution(tiny_lm) -> None:
    prompt = tiny_lm.train[:1, :PROMPT].repeat(4000, 1)
    out = sample_continuations(tiny_lm.model, prompt, 1, seed=0, batch_size=1000)
    with torch.no_grad():
        probs = torch.softmax(tiny_lm.model(prompt[:1]).logits[0, -1], dim=-1)
    freq = torch.bincount(out[:, -1], minlength=512).double() / 4000
    top = torch.topk(probs, 5).indices
    # Binomial standard error at 4000 draws is at most 0.008.
    assert torch.allclose(freq[top], probs[top].double(), atol=0.03)


@pytest.mark.parametrize("cache_mb", [64.0, 0.001])  # the full table; a 2-entry LRU
def test_cached_green_lists_equal_the_processor(key, cache_mb) -> None:
    processor = key.generation_config().construct_processor(512, "cpu")
    cached = CachedGreenlists(processor, cache_mb=cache_mb)
    assert cached.dense == (cache_mb == 64.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        ids = torch.randint(0, 512, (16, 5), generator=gen)
        ids[8:, -1] = ids[0, -1]  # repeated contexts come from the cache
        scores = torch.randn(16, 512, generator=gen)
        assert torch.equal(cached(ids, scores), processor(ids, scores))
    wide = WatermarkKey.generate("t", 512, seed=1, context_width=2).generation_config()
    processor = wide.construct_processor(512, "cpu")
    ids = torch.randint(0, 512, (16, 5), generator=gen)
    scores = torch.randn(16, 512, generator=gen)
    assert torch.equal(CachedGreenlists(processor)(ids, scores), processor(ids, scores))
    # The sampler wraps the processor itself; a processor it cannot recognise runs as is.
    with pytest.raises(ConfigError, match="lefthash"):
        CachedGreenlists(WatermarkKey.generate("t", 512, seed=1, seeding_scheme="selfhash")
                         .generation_config().construct_processor(512, "cpu"))


def test_the_wrapped_and_unwrapped_watermark_sample_the_same(tiny_lm, prompts, key) -> None:
    processor = key.generation_config().construct_processor(512, "cpu")
    fast = sample_continuations(tiny_lm.model, prompts, NEW, seed=4,
                                logits_processors=[processor])
    slow = sample_continuations(tiny_lm.model, prompts, NEW, seed=4,
                                logits_processors=[lambda ids, s: processor(ids, s)])
    assert torch.equal(fast, slow)


def test_watermarked_samples_are_detected_and_plain_ones_are_not(tiny_lm, prompts, key) -> None:
    tok = tiny_lm.tokenizer
    processor = key.generation_config().construct_processor(512, "cpu")
    scorer = WatermarkScorer(key, tok, min_tokens=16)
    marked = sample_continuations(tiny_lm.model, prompts, NEW, seed=8,
                                  logits_processors=[processor])
    plain = sample_continuations(tiny_lm.model, prompts, NEW, seed=8)
    # Texts are scored as a user would: decoded, then re-tokenized by the scorer.
    marked_texts = tok.batch_decode(marked[:, PROMPT:], skip_special_tokens=True)
    plain_texts = tok.batch_decode(plain[:, PROMPT:], skip_special_tokens=True)
    # 28 tokens at the default bias of 2 are at the edge of z = 4 (the scorer's exact test
    # flags about half of them); every one shows the excess of green tokens, ...
    assert all(r.z_score > 2.5 for r in scorer.score(marked_texts))
    # ... and four continuations together (~110 tokens) are always detected.
    joined_marked = [" ".join(marked_texts[i : i + 4]) for i in range(0, len(prompts), 4)]
    joined_plain = [" ".join(plain_texts[i : i + 4]) for i in range(0, len(prompts), 4)]
    assert all(r.detected for r in scorer.score(joined_marked))
    assert not any(r.detected for r in scorer.score(plain_texts + joined_plain))
    assert max(r.z_score for r in scorer.score(joined_plain)) < 3


def test_beam_search_generates_exactly_the_requested_tokens(tiny_lm, prompts) -> None:
    out = beam_generate(tiny_lm.model, prompts[:6], 12, num_beams=5, batch_size=4)
    assert out.shape == (6, PROMPT + 12) and torch.equal(out[:, :PROMPT], prompts[:6])
    assert torch.equal(out, beam_generate(tiny_lm.model, prompts[:6], 12, batch_size=6))
    one_beam = beam_generate(tiny_lm.model, prompts[:6], 12, num_beams=1)
    assert torch.equal(one_beam, greedy_reference(tiny_lm.model, prompts[:6], 12))
    assert tiny_lm.model.generation_config.eos_token_id == 0  # restored after the call


def test_beam_search_does_not_stop_at_the_end_of_text_token(tiny_lm, prompts) -> None:
    def eot_then_five(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, -1e9)
        forced[:, 0 if ids.shape[1] == PROMPT else 5] = 0.0
        return forced

    out = beam_generate(tiny_lm.model, prompts[:2], 6, logits_processors=[eot_then_five])
    assert out[:, PROMPT:].tolist() == [[0, 5, 5, 5, 5, 5]] * 2


def test_bad_arguments_are_refused(tiny_lm, prompts) -> None:
    with pytest.raises(ConfigError, match="exceeds the model's 32 positions"):
        sample_continuations(tiny_lm.model, prompts, 29)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        sample_continuations(tiny_lm.model, prompts, 4, temperature=0)
    with pytest.raises(InputError, match="2-D LongTensor"):
        sample_continuations(tiny_lm.model, prompts[0], 4)
    with pytest.raises(InputError, match=r"must be in \[0, 512\)"):
        sample_continuations(tiny_lm.model, prompts + 512, 4)
