"""The reference head: trained on several sources, given a crawl's human text by a
recalibration, saved and reloaded as a spec entry (the weights file does not change).

The detector is trained here with the shared tiny LM on two labelled files whose human text
sits in different places for the scorer: ``seen`` holds paragraphs it was trained on (it finds
them likely), ``unseen`` paragraphs it never read. Every number is recomputed from the saved
folders.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from provenance.detectors import load_detector, train
from provenance.detectors.human_reference import (
    MIN_REFERENCE_TEXTS,
    HumanReference,
    by_source,
    with_reference,
)
from provenance.detectors.ngram import NgramParams
from provenance.detectors.recalibration import (
    can_adapt,
    held_out_mask,
    recalibrate,
    recalibrate_files,
)
from provenance.errors import ConfigError

MAX_TOKENS = 96


def write(path: Path, human: list[str], machine: list[str]) -> Path:
    rows = ([{"text": t, "label": "human"} for t in human]
            + [{"text": t, "label": "machine", "generator": "tiny"} for t in machine])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fit(files: list[Path], out: Path, tiny) -> dict:
    return train(files, out, model=str(tiny.path), max_tokens=MAX_TOKENS, min_tokens=16, cv=(),
                 outer_folds=3, inner_folds=2, progress=False, target_fpr=0.05,
                 char_params=NgramParams(n_features=2**12, min_tokens=1),
                 cache=out.parent / "terms.sqlite", device="cpu",
                 head_seeds=1)  # the reference head is the subject: one network per fit


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("reference")
    seen = [f"{a} {b}" for a, b in zip(tiny_train(tiny)[::2], tiny_train(tiny)[1::2],
                                        strict=False)]
    unseen = tiny.human_docs
    samples = tiny.samples
    files = [write(root / "seen.jsonl", seen[:50], samples[:18]),
             write(root / "unseen.jsonl", unseen[:50], samples[18:36])]
    report = fit(files, root / "two-sources", tiny)
    return {"root": root, "folder": root / "two-sources", "report": report, "files": files,
            "crawl": unseen[50:130], "machine": samples[36:]}


def tiny_train(tiny) -> list[str]:
    from provenance.demo import stdlib_paragraphs

    return stdlib_paragraphs()[::2]  # what tests/conftest.py trains the tiny LM on


def test_reference_is_median_and_spread_and_sources_need_enough_humans() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=(400, 3))
    x[:, 2] = 1.0  # a constant column keeps a finite scale
    ref = HumanReference.of(x)
    np.testing.assert_allclose(ref.centre, np.median(x, 0))
    assert ref.scale[2] == 1.0 and np.isfinite(ref.standardise(x)).all()
    assert HumanReference.from_dict(json.loads(json.dumps(ref.as_dict()))).n == 400
    y = np.array([0, 1] * 200)
    sources = np.array(["a"] * 100 + ["b"] * 300)  # a: 50 humans, b: 150
    rows, own, pooled = by_source(x, y, sources)
    assert sorted(own) == ["a", "b"] and pooled.n == 200
    np.testing.assert_allclose(rows[:100], with_reference(x[:100], own["a"]))
    n_few = 2 * MIN_REFERENCE_TEXTS - 2
    few = np.array(["a"] * n_few + ["b"] * (400 - n_few))
    _, own, _ = by_source(x, y, few)
    assert sorted(own) == ["b"]  # a has MIN - 1 humans: it is measured against the pool


def test_two_sources_train_a_reference_head_that_a_recalibration_switches_on(world) -> None:
    ref = world["report"]["calibration"]["reference"]
    assert ref["sources"] == ["seen", "unseen"] and len(ref["platt"]) == 2
    assert 0 <= ref["fpr"] <= 0.05 and 0 <= ref["tpr"] <= 1  # its threshold on its own humans
    assert f"TPR {ref['tpr']:.3f} at FPR {ref['fpr']:.4f}" in \
        (world["folder"] / "DATA_CARD.md").read_text()
    trained = load_detector(world["folder"], device="cpu")
    assert trained.detector.reference_head is not None and trained.detector.reference is None
    assert can_adapt(trained)

    crawl = world["crawl"]
    assert len(world["machine"]) >= 5
    out = recalibrate(trained, crawl, target_fpr=0.05, holdout=0.5, seed=1,
                      machine_texts=world["machine"])
    adapted = out.detector
    # recomputed: the reference is the median and spread of the fitted texts' head inputs
    x, _ = trained.detector.head_inputs(crawl)
    held = held_out_mask(["all"] * len(crawl), 0.5, seed=1)
    expected = HumanReference.of(x[~held])
    np.testing.assert_allclose(adapted.detector.reference.centre, expected.centre)
    assert out.report["adapted"] == {"reference_texts": int((~held).sum())}
    scores, stage = adapted.detector.score_stages(crawl)
    second = stage == 2
    np.testing.assert_allclose(
        scores.values[second],
        trained.detector.reference_head.log_odds(with_reference(x[second], expected)))
    assert np.mean(scores.values[~held] >= adapted.threshold) <= 0.05
    assert adapted.calibration["platt"] == ref["platt"]
    assert adapted.calibration["recalibration"]["previous"]["platt"] == \
        trained.calibration["platt"]
    assert out.report["machine"]["tpr_after"] == pytest.approx(
        np.mean(adapted.detector.score(world["machine"]) >= adapted.threshold), abs=1e-4)

    plain = recalibrate(trained, crawl, target_fpr=0.05, holdout=0.5, seed=1, adapt=False)
    assert plain.detector.detector.reference is None and plain.report["adapted"] is None
    assert plain.detector.calibration["platt"] == trained.calibration["platt"]
    few = recalibrate(trained, crawl[:2 * MIN_REFERENCE_TEXTS - 2], target_fpr=0.05)
    assert few.report["adapted"] is None and few.detector.detector.reference is None
    assert any("the threshold alone was moved" in w for w in few.report["warnings"])


def test_the_saved_reference_reloads_and_the_weights_do_not_change(world, tmp_path) -> None:
    crawl = tmp_path / "crawl.jsonl"
    crawl.write_text("".join(json.dumps({"text": t}) + "\n" for t in world["crawl"]))
    out = tmp_path / "mine"
    report = recalibrate_files([crawl], out, detector=world["folder"], target_fpr=0.05,
                               progress=False, device="cpu")
    assert report["adapted"]["reference_texts"] == report["human"]["fit"]

    def digest(folder: Path) -> str:
        return hashlib.sha256((folder / "supervised.safetensors").read_bytes()).hexdigest()

    assert digest(out) == digest(world["folder"])
    saved = load_detector(out, device="cpu")
    assert saved.detector.reference.n == report["human"]["fit"]
    again = recalibrate(load_detector(world["folder"], device="cpu"), world["crawl"],
                        target_fpr=0.05, holdout=0.5)
    np.testing.assert_allclose(saved.detector.score(world["crawl"]),
                               again.detector.detector.score(world["crawl"]))
    assert "reference head" in (out / "DATA_CARD.md").read_text()


def test_one_source_trains_no_reference_head_and_recalibrates_the_threshold_only(
        world, tiny) -> None:
    folder = world["root"] / "one-source"
    report = fit([world["files"][0]], folder, tiny)
    assert report["calibration"]["reference"] is None
    trained = load_detector(folder, device="cpu")
    assert trained.detector.reference_head is None and not can_adapt(trained)
    out = recalibrate(trained, world["crawl"], target_fpr=0.05)
    assert out.report["adapted"] is None and out.detector.detector.reference is None
    with pytest.raises(ConfigError, match="no reference head"):
        trained.detector.with_reference(HumanReference.of(np.ones((3, 2))))
    assert "Reference head: none" in (folder / "DATA_CARD.md").read_text()
