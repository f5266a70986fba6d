"""The zero-shot detectors against per-position computations done here, on the tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse_eval.text.tokenizer import train_tokenizer
from provenance.detectors import (
    Binoculars,
    CalibratedDetector,
    FastDetectGPT,
    LogLikelihood,
    calibrate,
)
from provenance.errors import ConfigError, InputError
from provenance.models import LoadedModel


def slow_criterion(lm: LoadedModel, ids: list[int]) -> tuple[float, float]:
    """Fast-DetectGPT and mean log-likelihood, one position at a time in float64."""
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    observed = expected = variance = 0.0
    for t in range(1, len(ids)):
        row = logits[t - 1]
        logp = row - row.max() - math.log(np.exp(row - row.max()).sum())
        p = np.exp(logp)
        mu = float((p * logp).sum())
        observed += float(logp[ids[t]])
        expected += mu
        variance += float((p * logp**2).sum()) - mu**2
    return (observed - expected) / math.sqrt(variance), observed / (len(ids) - 1)


def test_criterion_matches_an_explicit_per_position_computation(tiny, fdg) -> None:
    texts = [tiny.held_out[3], tiny.samples[0]]
    ids, _ = fdg.encode(texts)
    loglik = LogLikelihood(tiny.lm, max_tokens=tiny.max_tokens)
    for text, row in zip(texts, ids, strict=True):
        expected_fdg, expected_ll = slow_criterion(tiny.lm, row)
        assert fdg.score([text])[0] == pytest.approx(expected_fdg, rel=1e-5, abs=1e-5)
        assert loglik.score([text])[0] == pytest.approx(expected_ll, rel=1e-5)


def test_a_prefix_is_read_but_not_scored(tiny) -> None:
    eos = tiny.lm.tokenizer.eos_token
    with_prefix = FastDetectGPT(tiny.lm, max_tokens=tiny.max_tokens, prefix=eos, batch_size=4)
    text = tiny.held_out[7]
    ids, _ = with_prefix.encode([text])
    assert ids[0][0] == tiny.lm.tokenizer.eos_token_id
    scores = with_prefix.score_detailed([text, tiny.held_out[8][:150], tiny.samples[2]])
    assert scores.n_tokens[0] == len(ids[0]) - 1  # text tokens, all of them scored
    assert scores.values[0] == pytest.approx(slow_criterion(tiny.lm, ids[0])[0], rel=1e-5)
    one = [with_prefix.score([t])[0] for t in (text, tiny.held_out[8][:150], tiny.samples[2])]
    np.testing.assert_allclose(scores.values, one, atol=1e-4)


def test_batched_scores_equal_one_at_a_time(tiny, fdg) -> None:
    # Different lengths, so the batch is padded; shorter texts must not see the padding.
    texts = [tiny.held_out[i][: 100 + 25 * i] for i in range(6)] + tiny.samples[:4]
    batched = fdg.score(texts)
    single = np.array([fdg.score([t])[0] for t in texts])
    assert np.isfinite(batched).all()
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)


def test_samples_of_the_model_score_higher_than_held_out_human_text(tiny, fdg, auroc) -> None:
    machine = fdg.score(tiny.samples)
    human = fdg.score(tiny.human_docs[:120])
    assert auroc(machine, human) > 0.8
    # Human text surprises the model more than its own samples do (those sit a little below 0
    # rather than at it: decoding and re-tokenising a sample changes some of its tokens).
    assert np.nanmedian(human) < np.nanmedian(machine) - 2


def test_unscorable_texts_are_nan_with_a_reason_and_do_not_break_the_batch(tiny, fdg) -> None:
    texts = [tiny.held_out[0], "Too short.", "", None, "Ünïcødé 中文 текст " * 8, tiny.samples[0]]
    scores = fdg.score_detailed(texts)
    assert np.isfinite(scores.values[[0, 4, 5]]).all()
    assert np.isnan(scores.values[[1, 2, 3]]).all()
    assert scores.reasons[1].startswith("too few tokens:") and "< 16" in scores.reasons[1]
    assert scores.reasons[2] == "empty text"
    assert scores.reasons[3] == "not a string (NoneType)"
    assert [r is None for r in scores.reasons] == [True, False, False, False, True, True]
    with pytest.raises(InputError, match="single string"):
        fdg.score("one text")


def test_missing_model_path_is_a_one_line_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        FastDetectGPT(str(tmp_path / "no-such-model"))
    assert "\n" not in str(info.value)


def test_bad_parameters_name_the_fix(tiny) -> None:
    with pytest.raises(ConfigError, match="min_tokens"):
        FastDetectGPT(tiny.lm, max_tokens=8, min_tokens=16)
    with pytest.raises(ConfigError, match="batch_size"):
        FastDetectGPT(tiny.lm, batch_size=0)


def test_binoculars_matches_its_definition_and_checks_the_vocabulary(tiny) -> None:
    bino = Binoculars(tiny.other, tiny.lm, max_tokens=tiny.max_tokens, batch_size=4)
    texts = [tiny.held_out[5], tiny.samples[1], tiny.held_out[6][:120]]
    ids, _ = bino.encode(texts)
    with torch.inference_mode():
        obs = tiny.other.model(input_ids=torch.tensor([ids[0]])).logits[0, :-1].double()
        perf = tiny.lm.model(input_ids=torch.tensor([ids[0]])).logits[0, :-1].double()
    log_perf = torch.log_softmax(perf, -1)
    ppl = -log_perf.gather(-1, torch.tensor(ids[0][1:])[:, None]).mean()
    x_ppl = -(torch.softmax(obs, -1) * log_perf).sum(-1).mean()
    scores = bino.score(texts)
    assert scores[0] == pytest.approx(float(-ppl / x_ppl), rel=1e-5)
    np.testing.assert_allclose(scores, [bino.score([t])[0] for t in texts], atol=1e-5)

    other_tokenizer = train_tokenizer(tiny.held_out[:200], 500)  # another BPE, another vocabulary
    mismatched = LoadedModel("other-vocab", tiny.other.model, other_tokenizer, "cpu")
    with pytest.raises(ConfigError, match="one tokenizer vocabulary"):
        Binoculars(tiny.lm, mismatched)


@pytest.mark.slow
def test_smollm2_on_real_documents(shared_data: Path, auroc) -> None:
    rows = [json.loads(line) for line in
            (shared_data / "detect" / "seqxgpt_doc.jsonl").read_text().splitlines()]
    human = [r["text"] for r in rows if r["label"] == "human"][:8]
    machine = [r["text"] for r in rows if r["generator"] in ("gpt2", "gptneo")][:8]
    detector = FastDetectGPT(max_tokens=128, device="cpu")
    scores_h, scores_m = detector.score(human), detector.score(machine)
    assert np.isfinite(scores_h).all() and np.isfinite(scores_m).all()
    assert auroc(scores_m, scores_h) > 0.7
    assert isinstance(calibrate(detector, human, 0.2), CalibratedDetector)


