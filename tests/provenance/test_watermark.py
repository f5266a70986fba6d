"""Green-list watermarks with a tiny model trained and initialised here (no downloads, seconds).

The tokenizer is a byte-level BPE (1,000 tokens) trained on standard-library docstrings; the
model is a randomly initialised one-layer GPT-2, whose near-uniform next-token distribution makes
the watermark bias clearly visible. What is tested is the plumbing a real model uses too: keys,
transformers' generation-time watermark, re-tokenizing decoded text, batching and tagging.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import transformers
from packaging.version import Version

from provenance.demo import stdlib_paragraphs
from provenance.errors import ConfigError, TailguardWarning
from provenance.schema import Label
from provenance.tagger import Tagger
from provenance.watermark import (
    REASON_ABSENT,
    REASON_DETECTED,
    REASON_EMPTY,
    WatermarkKey,
    WatermarkScorer,
    WatermarkSignal,
    generate_watermarked,
    normal_tail,
)

N_WATERMARKED = 20
NEW_TOKENS = 128

#: transformers' WatermarkDetector merges repeated n-grams (``ignore_repeated_ngrams=True``) only
#: from 5.19 on. Before, ``_score_ngrams_in_passage`` counted n-grams in
#: ``collections.Counter(ngram_tensors[batch_idx])``, whose keys are tensors, which hash by
#: identity: no two n-grams were ever the same key, so every n-gram was scored, repeats included
#: (5.19 keys the Counter on ``tuple(ngram) for ngram in ngram_tensors[batch_idx].tolist()``).
#: The green lists are drawn by the same WatermarkLogitsProcessor code in 5.17 to 5.24.
DETECTOR_MERGES_REPEATS = Version(transformers.__version__).release >= (5, 19)


def detector_counts(detector, ids: list[int]) -> tuple[float, float, float]:
    """(tokens scored, green tokens, z) of transformers' ``WatermarkDetector`` on one text.

    Where the installed detector cannot merge repeated n-grams (transformers < 5.19, see
    ``DETECTOR_MERGES_REPEATS``), the distinct n-grams are listed here and each is still judged
    by the detector itself (``_get_ngram_score``: is the n-gram's last token in the green list
    transformers draws after its prefix), and z comes from its ``_compute_z_score``.
    """
    if DETECTOR_MERGES_REPEATS or not detector.ignore_repeated_ngrams:
        out = detector(torch.tensor([ids]), return_dict=True)
        return out.num_tokens_scored[0], out.num_green_tokens[0], out.z_score[0]
    processor = detector.processor
    selfhash = processor.seeding_scheme == "selfhash"
    n = processor.context_width + 1 - int(selfhash)
    # The reason for listing them here, checked rather than assumed from the version number.
    every = detector(torch.tensor([ids]), return_dict=True).num_tokens_scored[0]
    assert every == len(ids) - n + 1, "this transformers merges repeats: update the version gate"
    grams = {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}
    green = sum(
        bool(detector._get_ngram_score(torch.tensor(g if selfhash else g[:-1]), g[-1]))
        for g in grams
    )
    z = detector._compute_z_score(np.array([green]), np.array([len(grams)]))[0]
    return len(grams), green, z


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """A one-layer model gains nothing from threads, and on a busy machine they make it 4x
    slower; the caller's setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    with one_thread():
        generated = generate_watermarked(
            model, tokenizer, prompts, key, max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS, seed=0, batch_size=N_WATERMARKED,
        )
    return {
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


def test_watermarked_generations_are_detected(world: dict, scorer: WatermarkScorer) -> None:
    results = scorer.score(world["generated"])
    assert len(results) == N_WATERMARKED
    for result in results:
        assert result.tokens_scored >= 64
        assert result.z_score >= 4.0
        assert result.p_value <= normal_tail(4.0)
        assert result.label is Label.SYNTHETIC and result.reason == REASON_DETECTED


def test_human_text_is_never_flagged_and_never_called_human(
    world: dict, scorer: WatermarkScorer
) -> None:
    results = scorer.score(world["human"])
    scored = [r for r in results if r.z_score is not None]
    assert len(scored) > 250
    assert max(r.z_score for r in scored) < 4.0
    assert all(r.label is Label.UNKNOWN for r in results)
    assert {r.reason for r in scored} == {REASON_ABSENT}
    # Under no watermark z is close to standard normal.
    mean = sum(r.z_score for r in scored) / len(scored)
    assert abs(mean) < 0.5


def test_another_key_does_not_detect(world: dict) -> None:
    other = WatermarkKey.generate(str(world["tok_dir"]), vocab_size=world["key"].vocab_size, seed=4)
    results = WatermarkScorer(other, world["tokenizer"]).score(world["generated"])
    assert not any(r.detected for r in results)
    assert max(r.z_score for r in results) < 4.0


def test_batched_equals_one_at_a_time(world: dict) -> None:
    texts = (
        world["generated"][:6] + world["human"][:10] + ["short text", "", "  \n"]
        + world["generated"][6:9]
    )
    batched = WatermarkScorer(world["key"], world["tokenizer"], batch_size=7).score(texts)
    for text, result in zip(texts, batched, strict=True):
        alone = WatermarkScorer(world["key"], world["tokenizer"], batch_size=1).score([text])
        assert alone == [result]


@pytest.mark.parametrize("ignore_repeated", [True, False])
def test_counts_equal_transformers_detector_and_exclude_padding(
    world: dict, ignore_repeated: bool
) -> None:
    from transformers import PretrainedConfig, WatermarkDetector

    tok, key = world["tokenizer"], world["key"]
    detector = WatermarkDetector(
        PretrainedConfig(vocab_size=key.vocab_size, bos_token_id=tok.bos_token_id),
        "cpu",
        key.generation_config(),
        ignore_repeated_ngrams=ignore_repeated,
    )
    texts = world["generated"][:4] + world["human"][:4]
    ours = WatermarkScorer(key, tok, ignore_repeated_ngrams=ignore_repeated).score(texts)
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    for ids, result in zip(rows, ours, strict=True):
        scored, green, z = detector_counts(detector, ids)
        assert scored == result.tokens_scored
        assert green == result.green_tokens
        assert math.isclose(z, result.z_score, rel_tol=1e-9, abs_tol=1e-12)
    # Run on a padded batch, the detector also scores the padding: why we count per row.
    width = max(map(len, rows))
    padded = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids in rows])
    counted = detector(padded, return_dict=True).num_tokens_scored
    if not ignore_repeated:
        assert list(counted) == [width - 1] * len(rows)
        assert any(c != r.tokens_scored for c, r in zip(counted, ours, strict=True))


@pytest.mark.parametrize(
    ("scheme", "width"), [("lefthash", 2), ("selfhash", 1), ("selfhash", 3)]
)
def test_other_seeding_schemes_match_transformers(world: dict, scheme: str, width: int) -> None:
    from transformers import PretrainedConfig, WatermarkDetector

    key = WatermarkKey.generate(
        "tiny", vocab_size=world["key"].vocab_size, seed=5, seeding_scheme=scheme,
        context_width=width,
    )
    detector = WatermarkDetector(
        PretrainedConfig(vocab_size=key.vocab_size, bos_token_id=0), "cpu",
        key.generation_config(), ignore_repeated_ngrams=True,
    )
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, key.vocab_size, (n,), generator=generator).tolist() for n in (40, 9)]
    rows.append(rows[0][:20] * 3)  # repeated n-grams
    ours = WatermarkScorer(key, world["tokenizer"], min_tokens=1).score_token_ids(rows)
    for ids, result in zip(rows, ours, strict=True):
        scored, green, _ = detector_counts(detector, ids)
        assert (scored, green) == (result.tokens_scored, result.green_tokens)


def test_short_and_empty_texts_are_unknown_with_a_reason(
    world: dict, scorer: WatermarkScorer
) -> None:
    short = world["generated"][0][:30]
    results = scorer.score([short, "", "   \n\t"])
    n = results[0].tokens_scored
    assert 0 < n < 16
    assert results[0].reason == f"too few tokens: {n} < 16"
    assert results[0].z_score is None and results[0].p_value is None
    assert [r.reason for r in results[1:]] == [REASON_EMPTY, REASON_EMPTY]
    assert all(r.label is Label.UNKNOWN for r in results)
    assert scorer.score([]) == []


def test_key_saved_without_secret_cannot_detect(world: dict, tmp_path: Path) -> None:
    key = world["key"]
    public = key.save(tmp_path / "key.json")
    text = public.read_text()
    assert str(key.hashing_key) not in text
    record = json.loads(text)
    assert record["key_fingerprint"] == key.key_fingerprint and "hashing_key" not in record

    loaded = WatermarkKey.load(public)
    assert not loaded.has_secret and loaded.key_fingerprint == key.key_fingerprint
    with pytest.raises(ConfigError, match="saved without its secret.*hashing_key="):
        WatermarkScorer(loaded, world["tokenizer"])

    assert WatermarkKey.load(public, hashing_key=key.hashing_key) == key
    assert WatermarkKey.load(public, hashing_key=str(key.hashing_key)) == key  # from an env var
    with pytest.raises(ConfigError, match="does not match"):
        WatermarkKey.load(public, hashing_key=key.hashing_key + 1)

    private = key.save(tmp_path / "secret.json", include_secret=True)
    assert WatermarkKey.load(private) == key
    with pytest.raises(ConfigError, match="does not match"):
        WatermarkKey.load(private, hashing_key=key.hashing_key + 1)


def test_loaded_key_finds_its_tokenizer_by_name(world: dict, tmp_path: Path) -> None:
    path = world["key"].save(tmp_path / "key.json", include_secret=True)
    scorer = WatermarkScorer(WatermarkKey.load(path))  # the tokenizer is loaded from key.tokenizer
    assert all(r.detected for r in scorer.score(world["generated"][:3]))


def test_a_torch_that_draws_other_green_lists_warns(world: dict, tmp_path: Path) -> None:
    path = world["key"].save(tmp_path / "key.json")
    record = json.loads(path.read_text())
    record["greenlist_check"] = "0" * 16
    path.write_text(json.dumps(record))
    with pytest.warns(TailguardWarning, match="different green lists"):
        WatermarkKey.load(path, hashing_key=world["key"].hashing_key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        world["key"].save(path)
        WatermarkKey.load(path, hashing_key=world["key"].hashing_key)


def test_vocabulary_mismatch_is_a_config_error(world: dict) -> None:
    key = WatermarkKey.generate("other-tokenizer", vocab_size=1200, seed=1)
    with pytest.raises(ConfigError, match=r"1000 tokens.*1200-token"):
        WatermarkScorer(key, world["tokenizer"])
    with pytest.raises(ConfigError, match="1000 tokens.*1200"):
        generate_watermarked(world["model"], world["tokenizer"], ["hello"], key)


def test_invalid_settings_name_the_fix(world: dict) -> None:
    key, tok = world["key"], world["tokenizer"]
    with pytest.raises(ConfigError, match=r"z_threshold must be > 0, got -1"):
        WatermarkScorer(key, tok, z_threshold=-1)
    with pytest.raises(ConfigError, match="min_tokens must be an integer >= 1"):
        WatermarkScorer(key, tok, min_tokens=0)
    with pytest.raises(ConfigError, match="greenlist_ratio must be in"):
        WatermarkKey(5, "tok", 1000, greenlist_ratio=1.5)
    with pytest.raises(ConfigError, match="seeding_scheme"):
        WatermarkKey(5, "tok", 1000, seeding_scheme="hash")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            WatermarkScorer(key, tok, device="cuda")
    cuda_key = WatermarkKey(5, "tok", 1000, rng_device="cuda")
    with pytest.raises(ConfigError, match="different green lists"):
        WatermarkScorer(cuda_key, tok, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU|machine with a CUDA GPU"):
            WatermarkScorer(cuda_key, tok)


def test_generation_is_seeded_and_leaves_global_random_state(world: dict) -> None:
    args = (world["model"], world["tokenizer"], ["The module", "A function"], world["key"])
    state = torch.random.get_rng_state()
    with one_thread():
        first = generate_watermarked(*args, max_new_tokens=8, seed=11)
        assert torch.equal(state, torch.random.get_rng_state())
        assert generate_watermarked(*args, max_new_tokens=8, seed=11) == first
        assert generate_watermarked(*args, max_new_tokens=8, seed=12) != first


def test_signal_decides_watermarked_documents_in_the_tagger(
    world: dict, scorer: WatermarkScorer
) -> None:
    generated, human = world["generated"][:5], world["human"][:5]
    batch = pl.DataFrame({
        "id": [f"g{i}" for i in range(5)] + [f"h{i}" for i in range(5)],
        "text": generated + human,
    })
    signal = WatermarkSignal(scorer, generator="tiny-gpt2")
    tagged = Tagger([signal]).tag_batch(batch)
    marked = tagged.filter(pl.col("id").str.starts_with("g"))
    assert set(marked["prov_label"]) == {"synthetic"}
    assert set(marked["prov_evidence"]) == {"watermark"}
    assert set(marked["prov_generator"]) == {"tiny-gpt2"}
    assert marked["prov_score"].min() > 0.999
    detail = json.loads(marked["prov_detail"][0])
    assert set(detail) == {"z", "p_value", "tokens_scored", "key_fingerprint"}
    assert detail["z"] >= 4 and detail["key_fingerprint"] == world["key"].key_fingerprint
    others = tagged.filter(pl.col("id").str.starts_with("h"))
    assert set(others["prov_label"]) == {"unknown"} and set(others["prov_evidence"]) == {"none"}
    assert signal.stats.examined == 10 and signal.stats.decided == 5
