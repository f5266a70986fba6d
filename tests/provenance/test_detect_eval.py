"""detect-eval and detector evidence in tagging, with a real classifier trained here."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from cli import main
from provenance.demo import TrigramModel, stdlib_paragraphs
from provenance.detect_eval import evaluate_labelled
from provenance.detectors import NgramClassifier, calibrate
from provenance.errors import ConfigError, InputError
from provenance.tagger import tag_corpus


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("detect")
    human = stdlib_paragraphs()
    random.Random(0).shuffle(human)
    model = TrigramModel().fit(human[:300])
    machine = model.sample(600, random.Random(1), words=(30, 80))
    train_h, cal_h, test_h = human[300:450], human[450:650], human[650:850]
    train_m, cal_m, test_m = machine[:150], machine[150:350], machine[350:550]
    clf = NgramClassifier().fit(train_h + train_m, [0] * len(train_h) + [1] * len(train_m))
    detector = calibrate(clf, cal_h, target_fpr=0.05, machine_texts=cal_m)
    detector.save(root / "detector")
    rows = [{"id": f"h{i}", "text": t, "label": "human", "domain": "docs"}
            for i, t in enumerate(test_h)]
    rows += [{"id": f"m{i}", "text": t, "label": "machine", "generator": "trigram",
              "domain": "docs"} for i, t in enumerate(test_m)]
    labelled = root / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"root": root, "labelled": labelled, "n_h": len(test_h), "n_m": len(test_m)}


def test_detect_eval_on_a_saved_detector(world: dict, tmp_path: Path) -> None:
    result = evaluate_labelled(world["labelled"], detector=str(world["root"] / "detector"),
                               output=tmp_path / "report.json")
    report = result.report
    assert report["auroc"] > 0.8
    assert report["threshold_source"] == "saved calibration"
    assert report["n_human"] == world["n_h"] and report["n_synthetic"] == world["n_m"]
    assert report["fpr"] < 0.15  # calibrated at 5% on other human paragraphs
    assert report["groups"]["generator"]["trigram"]["n"] == world["n_m"]
    assert json.loads((tmp_path / "report.json").read_text())["auroc"] == report["auroc"]


def test_detect_eval_errors(world: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no saved detector here"):
        evaluate_labelled(world["labelled"], detector=str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="no label column 'verdict'"):
        evaluate_labelled(world["labelled"], detector=str(world["root"] / "detector"),
                          label_field="verdict")
    with pytest.raises(ConfigError, match="target_fpr must be in"):
        evaluate_labelled(world["labelled"], target_fpr=0.0)


def test_cli_detect_eval_prints_a_table(world: dict) -> None:
    result = CliRunner().invoke(main, ["detect-eval", str(world["labelled"]), "--detector",
                                       str(world["root"] / "detector")])
    assert result.exit_code == 0, result.output
    assert "AUROC" in result.stdout and "by generator:" in result.stdout


def test_detector_evidence_and_prevalence_in_tagging(world: dict, tmp_path: Path) -> None:
    frame = pl.read_ndjson(world["labelled"], infer_schema_length=None)
    crawl = tmp_path / "crawl.parquet"
    frame.write_parquet(crawl)
    report = tag_corpus(crawl, tmp_path / "tagged.parquet", declared=None,
                        detector=world["root"] / "detector", estimate_prevalence=True)
    tagged = pl.read_parquet(tmp_path / "tagged.parquet")
    assert set(tagged["prov_evidence"]) <= {"detector"}
    detail = json.loads(tagged["prov_detail"][0])
    assert {"criterion", "threshold"} <= set(detail)
    truth = world["n_m"] / (world["n_m"] + world["n_h"])
    corpus = report.extra["prevalence"]["corpus"]
    assert corpus["low"] <= truth <= corpus["high"]
    assert abs(corpus["estimate"] - truth) < 0.1


def test_prevalence_needs_a_detector(world: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a calibrated detector"):
        tag_corpus(world["labelled"], tmp_path / "t.parquet", estimate_prevalence=True)
