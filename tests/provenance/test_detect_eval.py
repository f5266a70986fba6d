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


def test_a_bad_label_is_refused_before_any_text_is_scored(tmp_path: Path) -> None:
    corpus = tmp_path / "labelled.jsonl"
    corpus.write_text('{"text": "a human text here", "label": "human"}\n\n'
                      '{"text": "a model text here", "label": "Machine-Generated"}\n'
                      '{"text": "nobody knows", "label": "unknown"}\n')
    # the detector does not exist: the label on line 4 is refused before it is looked for
    with pytest.raises(InputError, match=r"labelled.jsonl, line 4, field 'label': label "
                                         r"'unknown' is neither human nor synthetic"):
        evaluate_labelled(corpus, detector=str(tmp_path / "no-detector"))


def test_cli_detect_eval_prints_a_table(world: dict) -> None:
    result = CliRunner().invoke(main, ["detect-eval", str(world["labelled"]), "--detector",
                                       str(world["root"] / "detector")])
    assert result.exit_code == 0, result.output
    assert "AUROC" in result.stdout and "by generator:" in result.stdout


@pytest.fixture(scope="module")
def writers(world: dict) -> dict:
    """The world's corpus with a ``writer`` field whose "non-native" group is the quarter of
    the human documents that the detector scores highest: a known, strong bias against it."""
    detector = str(world["root"] / "detector")
    scores = evaluate_labelled(world["labelled"], detector=detector, n_boot=0).scores
    rows = [json.loads(line) for line in world["labelled"].read_text().splitlines()]
    human = [i for i, r in enumerate(rows) if r["label"] == "human"]
    top = set(sorted(human, key=lambda i: scores[i])[-len(human) // 4:])
    for i, r in enumerate(rows):  # synthetic documents: half each
        r["writer"] = "non-native" if (i in top if r["label"] == "human" else i % 2) else "native"
    path = world["root"] / "writers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"path": path, "detector": detector, "n_non_native": len(top)}


def test_detect_eval_breaks_down_by_any_field_and_calibrates_for_the_worst_group(
        writers: dict) -> None:
    common = {"detector": writers["detector"], "target_fpr": 0.05}
    pooled = evaluate_labelled(writers["path"], group_fields=("writer",), **common).report
    assert pooled["threshold_source"] == "saved calibration"  # nothing asked: saved threshold
    assert set(pooled["groups"]) == {"generator", "domain", "writer"}
    # re-set on this corpus's humans, pooled: every false positive is a non-native writer
    pooled = evaluate_labelled(writers["path"], calibration_share=0.5, group_fields=("writer",),
                               seed=1, **common).report
    assert "replacing the saved threshold" in pooled["threshold_source"]
    assert pooled["saved_threshold"] is not None and pooled["calibrated_by"] is None
    by_writer = pooled["groups"]["writer"]
    assert by_writer["native"]["fp"] == 0
    assert by_writer["non-native"]["fpr"] > 0.1  # ~4x the 5% target
    assert pooled["worst_group_fpr"]["writer"]["group"] == "non-native"
    row = by_writer["native"]
    assert row["auroc_humans"] == "group" and row["auroc_low"] <= row["auroc"] <= row["auroc_high"]

    fair = evaluate_labelled(writers["path"], calibrate_by="writer", **common).report
    assert fair["calibrated_by"] == "writer"
    assert "highest of the per-writer thresholds" in fair["threshold_source"]
    assert fair["threshold"] > pooled["threshold"]
    assert all(r["fpr"] <= 0.05 for r in fair["groups"]["writer"].values())  # in-sample
    worst = fair["worst_group_fpr"]["writer"]
    assert worst["fpr"] == max(r["fpr"] for r in fair["groups"]["writer"].values())
    assert worst["n_human"] == fair["groups"]["writer"][worst["group"]]["n_human"]


def test_missing_group_fields_are_one_line_errors(writers: dict) -> None:
    for option in (["--calibrate-by", "first_language"], ["--group-field", "first_language"]):
        result = CliRunner().invoke(main, ["detect-eval", str(writers["path"]), "--detector",
                                           writers["detector"], *option])
        assert result.exit_code == 1
        message = result.stderr.strip()
        assert "\n" not in message and str(writers["path"]) in message
        assert "field 'first_language'" in message and "writer" in message  # what there is


def test_cli_detect_eval_reports_the_worst_group(writers: dict, tmp_path: Path) -> None:
    args = ["detect-eval", str(writers["path"]), "--detector", writers["detector"],
            "--target-fpr", "0.05", "--calibrate-by", "writer", "-o", str(tmp_path / "r.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    worst = report["worst_group_fpr"]["writer"]
    assert f"calibrated by writer: worst-group FPR {worst['fpr']:.3f} (group {worst['group']}" \
        in result.stdout
    assert "by writer:" in result.stdout and "by generator:" in result.stdout
    as_json = json.loads(CliRunner().invoke(main, [*args[:-2], "--json"]).stdout)
    assert as_json["calibrated_by"] == "writer"
    assert as_json["groups"]["writer"] == report["groups"]["writer"]  # seeded intervals
    assert report["fpr_guarantee"] == "expected"
    confident = json.loads(CliRunner().invoke(
        main, [*args[:-2], "--fpr-confidence", "0.9", "--json"]).stdout)
    assert confident["fpr_guarantee"] == 0.9
    assert "with 90% confidence" in confident["threshold_source"]
    assert confident["threshold"] >= report["threshold"]


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


def test_the_summary_says_why_documents_stayed_unknown(world: dict, tmp_path: Path) -> None:
    """A detector that looked and could not score (or decide) a document did not decide it:
    the summary counts it under "unknown, because", not under "deciding evidence"."""
    crawl = tmp_path / "crawl.jsonl"
    crawl.write_text(world["labelled"].read_text() + json.dumps({"id": "e", "text": "Too short."})
                     + "\n")
    result = CliRunner().invoke(main, ["tag", str(crawl), "-o", str(tmp_path / "t.parquet"),
                                       "--detector", str(world["root"] / "detector"), "-q"])
    assert result.exit_code == 0, result.output
    tagged = pl.read_parquet(tmp_path / "t.parquet")
    decided = tagged.filter((pl.col("prov_label") != "unknown")
                            & (pl.col("prov_evidence") == "detector")).height
    assert f"  detector  {decided:>10,}" in result.output.split("unknown, because")[0]
    assert "unknown, because:\n  detector: too few tokens" in result.output
    report = tag_corpus(crawl, tmp_path / "again.parquet",
                        detector=world["root"] / "detector")
    unknown = tagged.filter(pl.col("prov_label") == "unknown").height
    assert sum(report.unknown_by_evidence["detector"].values()) == unknown >= 1
    assert report.unknown_by_evidence["detector"]["too few tokens"] == 1


def test_prevalence_needs_a_detector(world: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a calibrated detector"):
        tag_corpus(world["labelled"], tmp_path / "t.parquet", estimate_prevalence=True)
