"""Detection: our generations found, human text never flagged, counts equal to transformers'."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from packaging.version import Version

from provenance.errors import ConfigError
from provenance.schema import Label
from provenance.watermark import (
    REASON_ABSENT,
    REASON_DETECTED,
    REASON_EMPTY,
    WatermarkKey,
    WatermarkScorer,
    generate_watermarked,
    normal_tail,
)

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


def test_watermarked_generations_are_detected(world: dict, scorer: WatermarkScorer) -> None:
    results = scorer.score(world["generated"])
    assert len(results) == world["n_watermarked"]
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


def test_vocabulary_mismatch_is_a_config_error(world: dict) -> None:
    key = WatermarkKey.generate("other-tokenizer", vocab_size=1200, seed=1)
    with pytest.raises(ConfigError, match=r"1000 tokens.*1200-token"):
        WatermarkScorer(key, world["tokenizer"])
    with pytest.raises(ConfigError, match="1000 tokens.*1200"):
        generate_watermarked(world["model"], world["tokenizer"], ["hello"], key)


