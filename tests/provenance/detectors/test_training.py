"""The supervised detector, trained here on text with a known truth.

The hard case of the LM loop: the scoring model was *trained on* the human text, so a
zero-shot criterion cannot tell it from the model's own samples (both are "likely"). A
supervised detector must learn from the labels what differs and separate the two on documents
it never saw.
"""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from provenance.demo import stdlib_paragraphs
from provenance.detectors import DetectorSignal, FastDetectGPT, load_detector, train
from provenance.detectors.ngram import NgramParams
from provenance.detectors.training import read_labelled
from provenance.errors import InputError
from provenance.fusion import Tagger

MAX_TOKENS = 96  # what the tiny model is scored up to (conftest.MAX_TOKENS)


@pytest.fixture(scope="module")
def memorised(tiny) -> dict[str, list[str]]:
    """Human documents the scorer was trained on (pairs of paragraphs) and its own samples."""
    seen = stdlib_paragraphs()[::2]
    human = [f"{a} {b}" for a, b in zip(seen[::2], seen[1::2], strict=False)]
    return {"human": human[:90], "machine": tiny.samples}


@pytest.fixture(scope="module")
def trained(tiny, memorised, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("train")
    rows = []
    human, machine = memorised["human"], memorised["machine"]
    for i, text in enumerate(human[:60]):
        rows.append({"id": f"h{i}", "text": text, "label": "human", "generator": "human",
                     "domain": "docs" if i % 2 else "manual"})
    for i, text in enumerate(machine[:32]):
        rows.append({"id": f"m{i}", "text": text, "label": "machine",
                     "generator": "tiny-a" if i % 2 else "tiny-b",
                     "domain": "docs" if i % 2 else "manual"})
    data = root / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "detector"
    report = train([data], out, model=str(tiny.path), max_tokens=MAX_TOKENS, min_tokens=16,
                   cv=("generator", "domain"), outer_folds=3, inner_folds=2, progress=False,
                   char_params=NgramParams(n_features=2**12, min_tokens=1), human_below=0.2,
                   cache=root / "terms.sqlite", device="cpu", target_fpr=0.05)
    return out, report


def test_learns_what_zero_shot_misses(tiny, memorised, trained, auroc) -> None:
    out, report = trained
    human_new, machine_new = memorised["human"][60:90], tiny.samples[32:]
    assert len(machine_new) >= 10
    zero_shot = FastDetectGPT(tiny.lm, max_tokens=MAX_TOKENS, min_tokens=16)
    zero_shot_auroc = auroc(zero_shot.score(machine_new), zero_shot.score(human_new))
    detector = load_detector(out, device="cpu")
    learned = auroc(detector.detector.score(machine_new), detector.detector.score(human_new))
    # Zero-shot measured 0.54 here (the memorised human text looks as "likely" as samples);
    # the supervised detector reads the same statistics and measured 0.92 on unseen documents.
    assert learned > 0.85 and learned > zero_shot_auroc + 0.2, (learned, zero_shot_auroc)
    assert report["calibration"]["auroc"] > 0.8


def test_without_token_ngrams_the_head_reads_the_language_model_alone(
        tiny, memorised, trained, auroc) -> None:
    """``token_ngrams=False`` (the LM loop's detector): the n-gram models count nothing, the
    choice is recorded in the folder, and the LM's columns still separate what zero-shot
    cannot."""
    out, _ = trained
    lean = out.parent / "no-token-ngrams"
    train([out.parent / "labelled.jsonl"], lean, model=str(tiny.path), max_tokens=MAX_TOKENS,
          min_tokens=16, cv=(), outer_folds=3, inner_folds=2, progress=False,
          char_params=NgramParams(n_features=2**12, min_tokens=1), human_below=0.2,
          cache=out.parent / "terms.sqlite", device="cpu", target_fpr=0.05,
          token_ngrams=False)
    detector = load_detector(lean, device="cpu").detector
    assert detector.ngrams.unigram.sum() == 0 and detector.ngrams.trigram.sum() == 0
    spec = json.loads((lean / "detector.json").read_text())["detector"]
    assert spec["training"]["token_ngrams"] is False
    with_ngrams = load_detector(out, device="cpu").detector
    assert with_ngrams.ngrams.unigram.sum() > 0 and with_ngrams.meta["training"]["token_ngrams"]
    human_new, machine_new = memorised["human"][60:90], tiny.samples[32:]
    assert auroc(detector.score(machine_new), detector.score(human_new)) > 0.8


def test_saved_folder_reports_cross_validation_and_holds_no_pickle(trained) -> None:
    out, report = trained
    names = sorted(p.name for p in out.iterdir())
    assert names == ["DATA_CARD.md", "detector.json", "supervised.safetensors",
                     "training_report.json"]
    for path in out.iterdir():
        with pytest.raises(Exception):  # noqa: B017 - any failure: it is not a pickle
            list(pickletools.genops(path.read_bytes()))
    saved = json.loads((out / "detector.json").read_text())
    assert saved["detector"]["kind"] == "supervised"
    assert saved["detector"]["training"]["files"][0]["sha256"]
    cv = report["cross_validation"]
    assert set(cv["generator"]["groups"]) == {"tiny-a", "tiny-b"}
    assert set(cv["domain"]["groups"]) == {"docs", "manual"}
    assert 0.5 < cv["generator"]["worst_auroc"] <= 1.0
    assert "leave one generator out" in (out / "DATA_CARD.md").read_text()
    assert report["calibration"]["fpr"] <= 0.05 + 1e-9
    assert report["calibration"]["fpr_guarantee"] == "expected"
    assert saved["detector"]["training"]["fpr_guarantee"] == "expected"
    assert "expected on new human text" in (out / "DATA_CARD.md").read_text()


def test_bad_input_is_unknown_with_a_reason(trained) -> None:
    out, _ = trained
    detector = load_detector(out, device="cpu")
    texts = ["", "Too short.", "Это предложение написано по-русски и оно довольно длинное, " * 3,
             "\x00\x01\x02\x03 \x04\x05\x06 junk \x07\x08\x0b\x0c\x0e\x0f", None]
    batch = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})
    tagged = Tagger([DetectorSignal(detector)]).tag_batch(batch)
    assert tagged.get_column("prov_label").to_list() == ["unknown"] * len(texts)
    reasons = [json.loads(d)["reason"] for d in tagged.get_column("prov_detail")]
    assert reasons[0] == "empty text" and reasons[1].startswith("too few tokens")
    assert reasons[2].startswith("not English") and reasons[3].startswith("looks binary")


def test_tags_carry_verdict_band_and_stage(tiny, memorised, trained) -> None:
    out, _ = trained
    detector = load_detector(out, device="cpu")
    texts = memorised["human"][60:75] + tiny.samples[32:]
    result = detector.detect(texts)
    assert np.isfinite(result.criterion).all()
    flagged, undecided = result.flagged, result.undecided
    assert not (flagged & undecided).any()
    assert flagged[15:].mean() > flagged[:15].mean()
    _, stage = detector.detector.score_stages(texts)
    assert set(stage.tolist()) <= {1, 2}


def test_another_scorer_or_version_is_refused_in_one_line(trained, tmp_path) -> None:
    out, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    saved = json.loads((copy / "detector.json").read_text())
    saved["detector"]["scorer_digest"] = "0123456789abcdef"
    (copy / "detector.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="weights 0123456789abcdef.*has weights [0-9a-f]{16}"):
        load_detector(copy, device="cpu")
    saved["version"] = 99
    (copy / "detector.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="newer tailguard"):
        load_detector(copy, device="cpu")
    (copy / "supervised.safetensors").write_bytes(b"not the weights")
    saved["version"] = 1
    (copy / "detector.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="sha256"):
        load_detector(copy, device="cpu")


def test_a_bad_label_is_one_line_naming_file_line_and_field(tmp_path) -> None:
    data = tmp_path / "labelled.jsonl"
    data.write_text('{"id": "a", "text": "some words here", "label": "human"}\n'
                    '{not json\n'  # rejected: the bad label below is on line 3, not row 1
                    '{"id": "b", "text": "more words here", "label": "maybe"}\n')
    with pytest.raises(InputError, match=r"labelled.jsonl, line 3, field 'label': label 'maybe'"):
        train([data], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_labels_read_as_evaluation_reads_them(tmp_path) -> None:
    data = tmp_path / "labelled.parquet"
    pl.DataFrame({"text": ["some words here", "more words here", "and a third"],
                  "label": [0.0, 1.0, 1.0]}).write_parquet(data)
    assert read_labelled([data]).y.tolist() == [0, 1, 1]
