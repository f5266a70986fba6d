"""Calibration: thresholds that hold their false-positive rate, held-out rates, save and reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from provenance.detectors import calibrate, load_detector
from provenance.errors import ConfigError, InputError


def test_calibrated_threshold_holds_its_false_positive_rate(tiny, fdg) -> None:
    from scipy.stats import binom

    human = tiny.held_out
    calibration, held_out = human[:224], human[224:]
    target = 0.05
    calibrated = calibrate(fdg, calibration, target, tiny.samples[:30])
    info = calibrated.calibration
    assert info["n_human"] + info["n_human_unscored"] == 224 and info["fpr"] <= target
    assert info["n_machine"] + info["n_machine_unscored"] == 30
    assert info["tpr"] > info["fpr"] and info["platt"][0] > 0

    flagged = calibrated.detect(held_out).flagged
    allowed = binom.ppf(0.999, len(held_out), target) / len(held_out)
    assert flagged.mean() <= allowed

    proba = calibrated.predict_proba(tiny.samples[30:] + held_out[:30] + ["short"])
    assert np.isnan(proba[-1]) and ((proba[:-1] >= 0) & (proba[:-1] <= 1)).all()
    assert np.nanmean(proba[: len(tiny.samples) - 30]) > np.nanmean(proba[-31:-1])


def test_calibrated_lm_detector_reloads_from_its_folder(tiny, fdg, tmp_path: Path) -> None:
    calibrated = calibrate(fdg, tiny.held_out[:100], 0.05)
    assert not calibrated.has_probability
    with pytest.raises(ConfigError, match="machine_texts"):
        calibrated.predict_proba(tiny.samples[:2])
    p_values = calibrated.detect(tiny.samples[:5] + tiny.held_out[100:105]).p_value
    assert ((p_values > 0) & (p_values <= 1)).all()
    # samples of the scoring model sit further into the human tail than human text does
    assert np.median(p_values[:5]) < np.median(p_values[5:])
    folder = calibrated.save(tmp_path / "det")
    assert [p.name for p in folder.iterdir()] == ["detector.json"]
    saved = json.loads((folder / "detector.json").read_text())
    assert saved["detector"]["model"] == str(tiny.path.resolve())
    reloaded = load_detector(folder, device="cpu")
    texts = tiny.samples[:5]
    np.testing.assert_allclose(reloaded.detect(texts).criterion, calibrated.detect(texts).criterion)
    assert reloaded.threshold == calibrated.threshold


def test_held_out_calibration_measures_rates_on_texts_the_threshold_never_saw(
        tiny, fdg) -> None:
    human, machine = tiny.held_out[:224], tiny.samples[:40]
    in_sample = calibrate(fdg, human, 0.05, machine)
    held = calibrate(fdg, human, 0.05, machine, holdout=0.5, seed=3)
    info = held.calibration
    assert info["measured_on"].startswith("held-out 0.5")
    assert info["n_human"] == in_sample.calibration["n_human"] // 2 + (
        in_sample.calibration["n_human"] % 2)
    assert info["n_machine"] == 20
    # the rates' counts are the held-out texts they were measured on (prevalence uses them)
    assert info["n_human_measured"] == 224 - info["n_human_unscored"] - info["n_human"]
    assert info["n_machine_measured"] == 40 - info["n_machine_unscored"] - info["n_machine"]
    # the held-out FPR is an honest estimate: computed from the held-out scores directly
    scores = fdg.score(human)
    scores = scores[~np.isnan(scores)]
    order = np.random.default_rng([3, len(scores), len("human")]).permutation(len(scores))
    out = scores[order[len(scores) - round(0.5 * len(scores)):]]
    assert info["fpr"] == pytest.approx(float(np.mean(out >= held.threshold)))
    assert calibrate(fdg, human, 0.05, machine, holdout=0.5, seed=3).threshold == held.threshold
    with pytest.raises(ConfigError, match="holdout must be in"):
        calibrate(fdg, human, 0.05, holdout=1.0)
    with pytest.raises(InputError, match="too few scored human"):
        calibrate(fdg, human[:1], 0.05, holdout=0.5)


def test_detect_eval_can_hold_out_its_zero_shot_calibration(tiny, tmp_path: Path) -> None:
    from provenance.detect_eval import evaluate_labelled

    rows = [{"id": f"h{i}", "text": t, "label": "human"} for i, t in enumerate(tiny.held_out)]
    rows += [{"id": f"m{i}", "text": t, "label": "machine"} for i, t in enumerate(tiny.samples)]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = {"detector": "fast-detectgpt", "model": str(tiny.path), "device": "cpu",
              "max_tokens": tiny.max_tokens, "target_fpr": 0.05}
    in_sample = evaluate_labelled(labelled, **common).report
    held = evaluate_labelled(labelled, calibration_share=0.5, **common).report
    assert in_sample["threshold_source"].startswith("in-sample")
    assert held["threshold_source"].startswith("held-out")
    scored_human = in_sample["n_human"]
    assert held["n_human"] == scored_human - round(0.5 * scored_human)
    assert held["n_synthetic"] == in_sample["n_synthetic"]
