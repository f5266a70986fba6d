"""Recalibration on a crawl's own human text: the threshold moves, nothing else, and the FPR it
promises is measured on texts it never saw.

The detector here is a real character n-gram classifier trained on standard-library docstring
paragraphs against samples of a word-trigram model fitted to them (``provenance.demo``), so it
is fast and every number is recomputed independently from the saved folders.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from cli import main
from provenance.demo import TrigramModel, stdlib_paragraphs
from provenance.detectors import NgramClassifier, calibrate, load_detector
from provenance.detectors.recalibration import held_out_mask, recalibrate, recalibrate_files
from provenance.errors import ConfigError, InputError
from provenance.evaluate import calibrate_threshold
from provenance.fusion import prevalence_calibration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A calibrated detector folder, and a 'crawl' of human paragraphs it never saw, in two
    groups: ``hot`` (the ones it scores highest, a domain it flags too often) and ``plain``."""
    paragraphs = stdlib_paragraphs()
    train_human, calib_human, crawl = paragraphs[:300], paragraphs[300:500], paragraphs[500:]
    machine = TrigramModel().fit(train_human).sample(360, random.Random(0), words=(40, 90))
    clf = NgramClassifier(n_features=2**16, min_tokens=1).fit(
        train_human + machine[:300], ["human"] * 300 + ["machine"] * 300)
    folder = tmp_path_factory.mktemp("recalibration") / "trained"
    calibrate(clf, calib_human, target_fpr=0.05, machine_texts=machine[300:330]).save(folder)
    scores = load_detector(folder).detector.score(crawl)
    order = np.argsort(-scores)
    hot = [crawl[i] for i in order[:60]]
    plain = [crawl[i] for i in order[60:][::3][:120]]
    return {"folder": folder, "hot": hot, "plain": plain, "machine": machine[330:]}


def crawl_file(world: dict, path: Path, **extra: object) -> Path:
    rows = ([{"text": t, "site": "hot"} for t in world["hot"]]
            + [{"text": t, "site": "plain"} for t in world["plain"]])
    path.write_text("".join(json.dumps({**r, **extra}) + "\n" for r in rows))
    return path


def test_the_threshold_holds_in_every_group_and_is_measured_on_held_out_text(
        world: dict, tmp_path: Path) -> None:
    texts = world["hot"] + world["plain"]
    groups = ["hot"] * len(world["hot"]) + ["plain"] * len(world["plain"])
    trained = load_detector(world["folder"])
    out = recalibrate(trained, texts, groups=groups, target_fpr=0.05, holdout=0.5, seed=3)
    new = out.detector

    # recomputed from scratch: the same held-out draw, scores from the saved detectors
    scores = trained.detector.score(texts)
    held = held_out_mask(groups, 0.5, seed=3)
    keys = np.asarray(groups)
    for group in ("hot", "plain"):
        fit = (keys == group) & ~held
        assert np.mean(scores[fit] >= new.threshold) <= 0.05
        assert out.report["groups"][group]["fpr_after"] == pytest.approx(
            np.mean(scores[(keys == group) & held] >= new.threshold), abs=1e-4)
    before = out.report["groups"]["hot"]["fpr_before"]
    assert before == pytest.approx(np.mean(scores[(keys == "hot") & held] >= trained.threshold),
                                   abs=1e-4)
    assert before >= 0.3 and out.report["groups"]["hot"]["fpr_after"] <= before / 3
    after = out.report["held_out"]["after"]
    assert after["fpr"] <= after["fpr_upper_95"] < 1 and after["n"] == held.sum()
    assert out.report["worst_group"]["before"]["group"] == "hot"
    n = len(texts)
    assert out.report["human"] == {"texts": n, "scored": n, "fit": n - held.sum(),
                                   "held_out": held.sum(), "unscored": {}}

    # only the threshold and the human reference moved
    assert new.detector is trained.detector and new.threshold > trained.threshold
    assert new.calibration["platt"] == trained.calibration["platt"]
    assert new.calibration["n_human"] == n - held.sum()
    assert new.calibration["n_human_measured"] == held.sum()
    assert new.p_value_from_criterion(np.array([new.threshold]))[0] <= 0.05 + 1e-9
    previous = new.calibration["recalibration"]["previous"]
    assert previous["threshold"] == trained.threshold and previous["tpr"] > 0


def test_many_small_groups_are_held_together_unless_asked_otherwise(world: dict) -> None:
    """Six sites of 10 fitted texts cannot each show 5%: held alone they push the threshold
    above all their texts; by default they are held together, and the report says so."""
    texts = world["plain"]
    groups = [f"site{i % 6}" for i in range(len(texts))]
    trained = load_detector(world["folder"])
    together = recalibrate(trained, texts, groups=groups, target_fpr=0.05, seed=3)
    alone = recalibrate(trained, texts, groups=groups, target_fpr=0.05, seed=3,
                        min_group_size=1)
    assert any("6 small groups" in w or "held to target_fpr 0.05 together" in w
               for w in together.report["warnings"])
    assert any("too few human texts to keep" in w for w in alone.report["warnings"])
    scores = trained.detector.score(texts)
    held = held_out_mask(groups, 0.5, seed=3)
    small = ~held
    assert np.mean(scores[small] >= together.detector.threshold) <= 0.05
    assert alone.detector.threshold > scores[small].max()
    assert together.detector.threshold < alone.detector.threshold
    assert together.report["min_group_size"] is None and alone.report["min_group_size"] == 1


def test_without_machine_text_the_tpr_is_dropped_not_carried_over(world: dict) -> None:
    trained = load_detector(world["folder"])
    plain = recalibrate(trained, world["hot"] + world["plain"], holdout=0.5)
    assert "tpr" not in plain.detector.calibration and "machine" not in plain.report
    with pytest.raises(ConfigError, match="true-positive rate"):
        prevalence_calibration(plain.detector.calibration)

    with_machine = recalibrate(trained, world["hot"] + world["plain"], holdout=0.5,
                               machine_texts=world["machine"])
    scores = trained.detector.score(world["machine"])
    tpr = float(np.mean(scores >= with_machine.detector.threshold))
    assert with_machine.detector.calibration["tpr"] == pytest.approx(tpr)
    assert with_machine.report["machine"]["tpr_after"] == pytest.approx(tpr, abs=1e-4)
    assert prevalence_calibration(with_machine.detector.calibration)["n_machine"] == 30


def test_unscorable_texts_are_counted_and_nothing_scorable_is_an_error(world: dict) -> None:
    trained = load_detector(world["folder"])
    out = recalibrate(trained, world["plain"] + ["", "   ", None], holdout=0.0)
    human = out.report["human"]
    assert human["texts"] == human["scored"] + sum(human["unscored"].values()) \
        == len(world["plain"]) + 3
    assert out.report["measured_on"].startswith("the fitted texts")
    with pytest.raises(InputError, match=r"none of the 2 human texts could be scored \(empty"):
        recalibrate(trained, ["", None])
    with pytest.raises(InputError, match="no human texts to calibrate on"):
        recalibrate(trained, [])
    with pytest.raises(ConfigError, match="holdout"):
        recalibrate(trained, world["plain"], holdout=1.0)


def test_the_command_writes_a_new_folder_that_tags_with_the_new_threshold(
        world: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    crawl = crawl_file(world, tmp_path / "crawl.jsonl")
    out = tmp_path / "mine"
    result = CliRunner().invoke(main, [
        "detect-calibrate", str(crawl), "--detector", str(world["folder"]), "--calibrate-by",
        "site", "--target-fpr", "0.05", "--min-group-size", "20", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "Worst site: hot" in result.output and f"wrote {out}" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "DATA_CARD.md", "calibration_report.json", "detector.json", "ngram.safetensors"]
    report = json.loads((out / "calibration_report.json").read_text())
    saved = load_detector(out)
    assert saved.threshold == report["threshold"] > report["threshold_before"]
    assert report["files"]["human"][0]["rows"] == len(world["hot"]) + len(world["plain"])
    assert saved.calibration["recalibration"]["group_field"] == "site"
    assert saved.calibration["calibrated_by"] == "site" and report["min_group_size"] == 20
    assert "## Recalibration" in (out / "DATA_CARD.md").read_text()
    texts = world["hot"] + world["plain"]
    np.testing.assert_array_equal(saved.detect(texts).flagged,
                                  load_detector(world["folder"]).detector.score(texts)
                                  >= report["threshold"])


def test_a_confident_threshold_is_set_recorded_and_kept_by_the_next_recalibration(
        world: dict, tmp_path: Path) -> None:
    """--fpr-confidence 0.9: the threshold is calibrate_threshold's Beta rule on the fitted
    half (recomputed here from the saved detector's scores), at or above the default rule's,
    recorded in the report and the calibration, and inherited by a later recalibration."""
    from click.testing import CliRunner

    crawl = crawl_file(world, tmp_path / "crawl.jsonl")
    out = tmp_path / "confident"
    result = CliRunner().invoke(main, [
        "detect-calibrate", str(crawl), "--detector", str(world["folder"]), "--target-fpr",
        "0.05", "--fpr-confidence", "0.9", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "(on new human text with 90% confidence)" in result.output
    report = json.loads((out / "calibration_report.json").read_text())
    texts = world["hot"] + world["plain"]
    scores = load_detector(world["folder"]).detector.score(texts)
    fit = scores[~held_out_mask(["all"] * len(texts), 0.5, seed=0)]
    assert report["fpr_guarantee"] == 0.9
    assert report["threshold"] == calibrate_threshold(fit, 0.05, guarantee=0.9)
    assert report["threshold"] >= calibrate_threshold(fit, 0.05)
    saved = load_detector(out)
    assert saved.calibration["fpr_guarantee"] == 0.9
    again = recalibrate(saved, texts, seed=1)
    assert again.report["fpr_guarantee"] == 0.9
    assert recalibrate(saved, texts, seed=1, guarantee="expected").report[
        "fpr_guarantee"] == "expected"


def test_the_command_refuses_what_would_harm_an_input_or_mislabel_text(
        world: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    def run(*args: str):
        return CliRunner().invoke(main, ["detect-calibrate", *args, "-q"])

    crawl = crawl_file(world, tmp_path / "crawl.jsonl")
    trained = str(world["folder"])
    before = sorted((p.name, p.stat().st_mtime_ns) for p in Path(trained).iterdir())
    result = run(str(crawl), "--detector", trained, "-o", trained)
    assert result.exit_code == 1 and "is the input" in result.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(trained).iterdir()) == before

    result = run(str(crawl), "--detector", trained, "--calibrate-by", "domain",
                 "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "crawl.jsonl" in result.output
    assert "field 'domain'" in result.output and not (tmp_path / "x").exists()

    labelled = crawl_file(world, tmp_path / "labelled.jsonl", label="human")
    lines = labelled.read_text().splitlines()
    lines[:10] = [json.dumps({"text": t, "site": "hot", "label": "machine"})
                  for t in world["machine"][:10]]
    labelled.write_text("\n".join(lines) + "\n")
    result = run(str(labelled), "--detector", trained, "-o", str(tmp_path / "y"))
    assert result.exit_code == 1 and "10 rows are labelled machine" in result.output
    assert "--label-field label" in result.output

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "unterminated\n')
    result = run(str(broken), "--detector", trained, "-o", str(tmp_path / "z"))
    assert result.exit_code == 1 and "broken.jsonl" in result.output
    assert "refused all 1 rows (first: line 1: malformed_json)" in result.output

    result = run(str(crawl), "--detector", trained, "--machine", str(labelled),
                 "-o", str(tmp_path / "y"))
    assert result.exit_code == 1 and "rows are labelled human" in result.output
    assert "a --machine corpus holds machine text only" in result.output

    result = run(str(labelled), "--detector", trained, "--label-field", "label",
                 "-o", str(tmp_path / "y"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["human"]["texts"] == len(lines) - 10 and report["machine"]["scored"] == 10


def test_recalibrating_the_shipped_detector_keeps_its_weights(tmp_path: Path) -> None:
    from provenance.detectors import DEFAULT_DETECTOR

    texts = [p for p in stdlib_paragraphs() if len(p.split()) > 60][:12]
    out = recalibrate_files([_jsonl(tmp_path / "h.jsonl", texts)], tmp_path / "mine",
                            holdout=0.0, device="cpu", progress=False)
    assert out["human"]["scored"] == 12
    source = json.loads((DEFAULT_DETECTOR / "detector.json").read_text())
    saved = json.loads((tmp_path / "mine" / "detector.json").read_text())
    assert saved["detector"]["sha256"] == source["detector"]["sha256"]
    assert saved["threshold"] == out["threshold"]
    band = saved["calibration"]["undecided_below"]
    assert band is None or band < saved["threshold"]
    assert load_detector(tmp_path / "mine", device="cpu").detector.kind == "supervised"


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_prevalence_uses_the_counts_the_rates_were_measured_on(world: dict) -> None:
    from provenance.evaluate import estimate_prevalence
    from provenance.fusion import prevalence

    trained = load_detector(world["folder"])
    cal = recalibrate(trained, world["hot"] + world["plain"], holdout=0.8,
                      machine_texts=world["machine"]).detector.calibration
    assert cal["n_human_measured"] > 3 * cal["n_human"]  # 80% held out, 20% fitted
    pairs = {("detector", "synthetic"): 30, ("detector", "human"): 70}
    got = prevalence(cal, pairs)["among_detector_scored"]
    want = estimate_prevalence(30, 100, cal["tpr"], cal["fpr"], cal["n_machine_measured"],
                               cal["n_human_measured"]).as_dict()
    fit_counts = estimate_prevalence(30, 100, cal["tpr"], cal["fpr"], cal["n_machine"],
                                     cal["n_human"]).as_dict()
    assert got == want and got["high"] - got["low"] < fit_counts["high"] - fit_counts["low"]
