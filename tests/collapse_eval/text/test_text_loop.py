"""The language-model recursion end to end: real BPE, real GPT-2 training, real watermark,
ledger, tagger and mixers, on a slice of the default Wikipedia corpus (one torch thread)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import cli as cli_module
from cli import main
from collapse_eval.engine import CollapseRun, run_collapse
from collapse_eval.text.config import LMCollapseConfig
from provenance.errors import ConfigError, TailguardWarning
from tests.collapse_eval.text.lm_settings import FAST_RECIPE, SMALL_RECIPE, small_config

DOCS = 3000
ORDERING_POLICIES = ("replace", "filter:watermark", "retain:0.1")
#: The plumbing run's documents and recipe: FAST_RECIPE with two epochs, so that a run killed
#: mid-generation can have saved one of them.
PLUMBING_DOCS = 600
PLUMBING_RECIPE = {**FAST_RECIPE, "epochs": 2}


@pytest.fixture(scope="module")
def ordering_run(tmp_path_factory: pytest.TempPathFactory) -> CollapseRun:
    """A run whose model learns enough for the policies' order to show (~2.5 min: slow)."""
    out = tmp_path_factory.mktemp("lm") / "run"
    return run_collapse(small_config(ORDERING_POLICIES, 2, DOCS), out, progress=False,
                           threads=1, device="cpu")


@pytest.fixture(scope="module")
def plumbing_run(tmp_path_factory: pytest.TempPathFactory) -> CollapseRun:
    """The same policies and generations, small and fast (~20 s): for what a run writes and
    how its status reads, not for what the model learns."""
    out = tmp_path_factory.mktemp("lm") / "run"
    config = replace(small_config(ORDERING_POLICIES, 2, PLUMBING_DOCS, articles=8),
                     recipe=PLUMBING_RECIPE)
    with warnings.catch_warnings():  # 600 documents: generation 0 does not beat the bigram
        warnings.simplefilter("ignore", TailguardWarning)
        return run_collapse(config, out, progress=False, threads=1, device="cpu")


def _final(results: pl.DataFrame, metric: str, generation: int) -> dict[str, float]:
    rows = results.filter((pl.col("metric") == metric) & (pl.col("generation") == generation))
    return dict(zip(rows["policy"].to_list(), rows["value"].to_list(), strict=True))


@pytest.mark.slow  # the ordering run (pytest -m slow; CI runs it)
def test_replace_collapses_faster_than_watermark_filtering_and_retention(ordering_run):
    results = ordering_run.results
    first = _final(results, "test_perplexity", 0)["replace"]
    assert first < ordering_run.baselines["bigram_ppl"], "generation 0 must beat the bigram"
    ppl = _final(results, "test_perplexity", 2)
    recall = _final(results, "rare_ngram_recall", 2)
    start_recall = _final(results, "rare_ngram_recall", 0)["replace"]
    assert ppl["replace"] - first > 1.5 * (ppl["filter:watermark"] - first)
    assert ppl["replace"] - first > 1.2 * (ppl["retain:0.1"] - first)
    assert start_recall - recall["replace"] > 1.5 * (start_recall - recall["filter:watermark"])
    assert recall["replace"] < recall["retain:0.1"]


@pytest.mark.slow  # the ordering run (pytest -m slow; CI runs it)
def test_the_filter_acts_on_the_watermark_it_measures(ordering_run):
    results = ordering_run.results
    tpr = _final(results, "tagger_tpr", 2)
    fpr = _final(results, "tagger_fpr", 2)
    assert tpr["filter:watermark"] > 0.8 and fpr["filter:watermark"] == 0.0
    share = _final(results, "synthetic_share", 2)
    assert share["replace"] == 1.0
    assert share["retain:0.1"] == pytest.approx(0.9, abs=1e-3)
    # what the filter leaves in is the watermark's misses: about (1 - TPR) of the synthetic docs
    assert share["filter:watermark"] < 0.25
    # the newest part apart: at generation 1 it is the whole synthetic web; at 2, the web's TPR
    # is the mean over its two equal parts (a part's tags do not change once made)
    newest = {g: _final(results, "tagger_tpr_newest", g)["filter:watermark"] for g in (1, 2)}
    assert newest[1] == pytest.approx(_final(results, "tagger_tpr", 1)["filter:watermark"])
    assert tpr["filter:watermark"] == pytest.approx((newest[1] + newest[2]) / 2)
    assert set(_final(results, "tagger_tpr_newest", 2)) == {"filter:watermark"}  # the tagger


def test_every_generation_is_registered_in_the_ledger_with_its_parent(plumbing_run):
    out = plumbing_run.out_dir
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT generator, generation, COUNT(*) FROM records "
                          "GROUP BY generator, generation").fetchall()
        parents = db.execute("SELECT parent_ids FROM records WHERE generation = 2 AND "
                             "generator = 'tailguard-lm/replace/seed-0'").fetchall()
    counts = {(g, n): c for g, n, c in rows}
    assert counts[("tailguard-lm/shared/seed-0", 1)] == PLUMBING_DOCS
    for policy in ("replace", "filter_watermark", "retain_0.1"):
        assert counts[(f"tailguard-lm/{policy}/seed-0", 2)] == PLUMBING_DOCS
    # a generation-2 document's parent is a document generation 1 trained on
    mixture_ids = set(pl.read_parquet(
        out / "seed-0" / "replace" / "generation-000001" / "mixture" / "*.parquet")["id"])
    parent_ids = [json.loads(raw) for (raw,) in parents]
    assert all(len(p) == 1 and p[0] in mixture_ids for p in parent_ids)
    assert len({p[0] for p in parent_ids}) == PLUMBING_DOCS  # every training document prompted one


def test_outputs_and_the_paper_histograms(plumbing_run):
    out = plumbing_run.out_dir
    assert (out / "plots" / "data_perplexity_histograms.png").stat().st_size > 10_000
    assert (out / "plots" / "test_perplexity.png").exists()
    assert not list(out.rglob(".generation-*")), "a finished generation keeps no training state"
    info = json.loads((out / "run.json").read_text())
    assert info["documents_per_generation"] == PLUMBING_DOCS
    assert set(plumbing_run.results["metric"]) >= {
        "test_perplexity", "rare_ngram_recall", "distinct_1", "distinct_2", "distinct_3",
        "unigram_kl", "vocab_coverage", "data_perplexity_q05", "data_perplexity_q99"}
    # generation 0 is shared: one model, the same row under every policy
    gen0 = plumbing_run.results.filter(pl.col("generation") == 0)
    assert gen0.group_by("metric").agg(pl.col("value").n_unique())["value"].max() == 1


def test_status_reads_a_partial_run_and_writes_nothing(plumbing_run, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    from collapse_eval.text.progress import lm_run_progress

    copy = tmp_path / "run"
    shutil.copytree(plumbing_run.out_dir, copy)
    (copy / "seed-0" / "retain_0.1" / "generation-000002" / "metrics.json").unlink()
    # killed while training generation 2, after its first two epochs were saved
    state = copy / "seed-0" / "retain_0.1" / ".generation-000002.training"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"epochs_done": 1}))
    shutil.rmtree(copy / "seed-0" / "filter_watermark")  # not started
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}

    progress = lm_run_progress(copy)
    chains = {c.policy: c for c in progress.chains}
    assert {p: (c.done, c.total) for p, c in chains.items()} == {
        "replace": (2, 2), "filter:watermark": (0, 2), "retain:0.1": (1, 2)}
    assert (progress.done, progress.total, progress.finished) == (3, 6, False)
    assert chains["retain:0.1"].training == (2, 1, PLUMBING_RECIPE["epochs"])
    assert chains["replace"].training is None and chains["filter:watermark"].training is None
    recorded = json.loads((copy / "seed-0" / "replace" / "generation-000002" / "metrics.json")
                          .read_text())
    assert chains["replace"].latest == {"generation": 2, **recorded["metrics"]}
    assert set(recorded["timing"]) == {"tag_and_mix_seconds", "train_seconds", "sample_seconds",
                                       "register_seconds", "metrics_seconds"}
    assert min(recorded["timing"].values()) > 0
    assert chains["replace"].seconds[-1] == pytest.approx(sum(recorded["timing"].values()))
    # Three generations left: filter:watermark's two at the mean of all, retain's one at its own.
    everything = [s for c in progress.chains for s in c.seconds]
    assert progress.seconds_left() == pytest.approx(
        2 * sum(everything) / len(everything) + chains["retain:0.1"].seconds[0])

    result = CliRunner().invoke(main, ["collapse", "status", str(copy)])
    assert result.exit_code == 0, result.output
    assert "3 of 6 policy-generations done" in result.output
    assert "retain:0.1" in result.output and "1/2" in result.output
    assert "gen 2: 1/2 epochs saved" in result.output
    assert "GiB free, a generation needs 0.5 GiB to start\n" in result.output
    monkeypatch.setenv("TAILGUARD_MIN_FREE_GB", "1000000")
    short = CliRunner().invoke(main, ["collapse", "status", str(copy)])
    assert "a generation needs 1000000.0 GiB to start; too little: the run stops before its " \
        "next generation" in short.output
    monkeypatch.delenv("TAILGUARD_MIN_FREE_GB")

    # the curves so far: each policy up to its last finished generation, nothing in the run
    so_far = tmp_path / "so-far"
    exported = CliRunner().invoke(main, ["collapse", "status", str(copy), "--export",
                                         str(so_far), "--json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["exported"]["through"] == {
        "replace": 2, "filter:watermark": 0, "retain:0.1": 1}
    partial = pl.read_parquet(so_far / "results.parquet")
    assert dict(partial.group_by("policy").agg(pl.col("generation").max()).iter_rows()) == {
        "replace": 2, "filter:watermark": 0, "retain:0.1": 1}
    whole = plumbing_run.results.filter(pl.col("policy") == "replace")
    assert partial.filter(pl.col("policy") == "replace").equals(whole)
    assert (so_far / "plots" / "data_perplexity_histograms.png").stat().st_size > 10_000
    assert (so_far / "plots" / "rare_ngram_recall.png").exists()
    # ... and a report comparing generation 1, the last that every started policy reached
    reported = CliRunner().invoke(main, ["report", str(so_far)])
    assert reported.exit_code == 0, reported.output
    markdown = (so_far / "report.md").read_text()
    assert "A run still going" in markdown and "Not started yet, so not in the tables: " \
        "filter:watermark." in markdown
    headline = {row.split(" | ")[1]: row.split(" | ")[2] for row in markdown.splitlines()
                if row.startswith("| lm | ") and "(1 seed)" in row}
    recall = whole_recall_at(plumbing_run.results, generation=1)
    assert headline == {"replace": f"{1 - recall['replace']:.2f} (1 seed)",
                        "retain:0.1": f"{1 - recall['retain:0.1']:.2f} (1 seed)"}
    assert "generation 0 -> 1, replace vs retain:0.1" in markdown
    size = pl.read_parquet(copy / "seed-0" / "generation-000000" / "published.parquet").height
    assert f"1 seed, {size} documents per generation, generations 0..1." in markdown
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before
    inside = CliRunner().invoke(main, ["collapse", "status", str(copy), "--export",
                                       str(copy / "so-far")])
    assert inside.exit_code != 0 and "inside the run folder" in inside.output
    assert not (copy / "so-far").exists()

    whole = CliRunner().invoke(main, ["collapse", "status", str(plumbing_run.out_dir), "--json"])
    assert json.loads(whole.output)["finished"] is True
    not_lm = CliRunner().invoke(main, ["collapse", "status", str(tmp_path)])
    assert not_lm.exit_code != 0 and "not a collapse run folder" in not_lm.output


def test_status_names_the_process_working_on_each_chain(plumbing_run, tmp_path: Path):
    """With --jobs, which worker runs which chain: the pid to renice, pin or profile."""
    from collapse_eval.run_lock import mark_chain_worker
    from collapse_eval.text.progress import lm_run_progress

    copy = tmp_path / "run"
    shutil.copytree(plumbing_run.out_dir, copy)
    (copy / "seed-0" / "retain_0.1" / "generation-000002" / "metrics.json").unlink()
    with mark_chain_worker(copy / "seed-0" / "retain_0.1", generation=2):
        chains = {c.policy: c for c in lm_run_progress(copy).chains}
        assert chains["retain:0.1"].worker_pid == os.getpid()
        assert chains["replace"].worker_pid is None
        shown = CliRunner().invoke(main, ["collapse", "status", str(copy)])
        line = next(row for row in shown.output.splitlines() if " retain:0.1 " in row)
        assert line.endswith(f" pid {os.getpid()}")
        as_json = json.loads(CliRunner().invoke(main, ["collapse", "status", str(copy),
                                                       "--json"]).output)
        assert {c["policy"]: c["worker_pid"] for c in as_json["chains"]} == {
            "replace": None, "filter:watermark": None, "retain:0.1": os.getpid()}
    assert lm_run_progress(copy).chains[0].worker_pid is None


def test_the_status_report_is_a_library_call(plumbing_run, tmp_path: Path):
    """What `collapse status` prints, for a pipeline that watches a run without a shell."""
    from collapse_eval.text.status import lm_status

    status = lm_status(plumbing_run.out_dir, tmp_path / "export")
    assert status.lines[0] == f"{plumbing_run.out_dir}: 6 of 6 policy-generations done (finished)"
    assert not any(line.startswith(("running:", "left:", "disk:")) for line in status.lines)
    assert status.summary["finished"] is True and status.summary["running"] is None
    assert status.summary["exported"]["folder"] == str(tmp_path / "export")
    assert (tmp_path / "export" / "results.parquet").exists()
    json.dumps(status.summary)  # what --json prints
    printed = CliRunner().invoke(main, ["collapse", "status", str(plumbing_run.out_dir)])
    assert printed.output.splitlines() == lm_status(plumbing_run.out_dir).lines


def whole_recall_at(results: pl.DataFrame, generation: int) -> dict[str, float]:
    rows = results.filter((pl.col("metric") == "rare_ngram_recall")
                          & (pl.col("generation") == generation))
    return dict(rows.select("policy", "value").iter_rows())


@pytest.mark.slow  # ~110 s: seven policies, two of them fitting taggers (pytest -m slow; CI)
def test_every_policy_and_tagger_runs(tmp_path: Path, tiny_gpt2):
    policies = ("accumulate", "scrape", "filter:oracle", "filter:ledger", "filter:detector",
                "filter:discriminator", "reweight")
    # The detector's scorer: a tiny LM that never read the run's articles (the default,
    # SmolLM2-135M, is too slow for the default suite on a CPU). The run's own model is
    # FAST_RECIPE's: each policy's tagging is checked here, not what the model learns.
    config = replace(small_config(policies, 1, 600, articles=8,
                                  detector_model=str(tiny_gpt2.path)), recipe=FAST_RECIPE)
    run = run_collapse(config, tmp_path / "all", progress=False, threads=1, device="cpu",
                       plots=False)
    tpr, fpr = _final(run.results, "tagger_tpr", 1), _final(run.results, "tagger_fpr", 1)
    assert tpr["filter:oracle"] == 1.0 and fpr["filter:oracle"] == 0.0
    assert tpr["filter:ledger"] == 1.0 and fpr["filter:ledger"] == 0.0  # exact matches
    # The trained detector learns the direction from generation 1 vs held-out humans, so it
    # catches the synthetic documents. Its scorer here is a tiny LM and its held-out humans one
    # article of 8 (the slow detector test below measures the FPR with an outside scorer).
    assert tpr["filter:detector"] >= 0.9
    assert tpr["filter:discriminator"] > fpr["filter:discriminator"]
    share = _final(run.results, "synthetic_share", 1)
    assert share["accumulate"] == 0.5 and share["filter:oracle"] == 0.0
    assert 0.3 < share["scrape"] < 0.7
    assert "tagger_tpr" not in set(run.results.filter(pl.col("policy") == "scrape")["metric"])


def _detector_run(out: Path, source: str, scorer: str = "generation-0") -> dict[str, float]:
    """One ``filter:detector`` generation through the CLI with ``--detector-source source``
    and ``--detector-model scorer``: the tagger's rates and its AUROC on the web."""
    from provenance.evaluate import roc_auc

    args = ["collapse", "run", "lm", "--policy", "filter:detector", "--generations", "1",
            "--max-articles", "8", "--max-train-docs", "600", "--detector-source", source,
            "--detector-model", scorer, "--threads", "1", "--device", "cpu", "--no-plots",
            "--json", "-o", str(out)]
    for key, value in SMALL_RECIPE.items():
        args += ["--recipe", f"{key}={value}"]
    with warnings.catch_warnings():  # 600 documents: generation 0 does not beat the bigram
        warnings.simplefilter("ignore", TailguardWarning)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["detector_source"], config["detector_model"]) == (source, scorer)
    results = pl.read_parquet(out / "results.parquet")
    tags = pl.concat([pl.read_parquet(out / "seed-0" / "filter_detector" / "tags" / "detector"
                                      / f"{part}.parquet") for part in ("human", "generation-1")],
                     how="diagonal_relaxed").filter(pl.col("prov_score").is_not_nan())
    return {"fpr": _final(results, "tagger_fpr", 1)["filter:detector"],
            "tpr": _final(results, "tagger_tpr", 1)["filter:detector"],
            "auroc": roc_auc((tags["true_origin"] == "synthetic").to_list(),
                             tags["prov_score"].to_list())}


def _outside_scorer(folder: Path) -> Path:
    """A small causal LM trained on articles the runs never read (the 9th to the 40th)."""
    from collapse_eval.text.data import load_text_corpus
    from collapse_eval.text.model import LMRecipe, new_model, save_model, train_lm
    from collapse_eval.text.tokenizer import encode_blocks, train_tokenizer

    read = load_text_corpus(max_articles=8)
    more = load_text_corpus(max_articles=40)
    seen = {*read.train, *read.valid, *read.test}
    articles = [a for a in (*more.train, *more.valid, *more.test) if a not in seen]
    recipe = LMRecipe(**SMALL_RECIPE)
    tokenizer = train_tokenizer(articles, recipe.vocab_size)
    model = new_model(recipe, seed=0, eot_id=tokenizer.eos_token_id)
    train_lm(model, encode_blocks(tokenizer, articles, recipe.block), recipe=recipe, seed=0)
    return save_model(model, folder, tokenizer=tokenizer)


@pytest.mark.slow  # 2 min: three LM runs through the CLI (pytest -m slow)
def test_the_detector_tagger_learns_its_direction_from_what_the_lab_knows(tmp_path: Path):
    """``--detector-source trained`` (the default) fits the supervised detector on generation
    1's documents against the held-out human documents; ``zero-shot`` is Fast-DetectGPT.

    Measured here (8 articles, 600 documents, --detector-fpr 0.05), as FPR on the web's human
    documents / TPR / AUROC on the web: scored by the generation-0 model, zero-shot 0.65 / 0.083
    / 0.14 (the wrong sign: the model finds its own training documents likelier than its
    samples) and trained 0.28 / 0.55 / 0.70 (right sign, but the model trained on those human
    documents, so to it they look like its samples: membership); trained with a scorer that
    never read the run's articles, FPR 0.085 / TPR 1.0 / AUROC 0.9997: within issue 21's 2x of
    the target. The held-out human documents are all one article and the web's a few others:
    with the token n-gram columns (counted on that one article) the FPR was 0.212, 4x the
    target (0.238 with one network instead of five averaged, 0.102 with the logistic head
    before f865600); the loop's detector leaves them out (``token_ngrams=False``).
    """
    zero_shot = _detector_run(tmp_path / "zero-shot", "zero-shot")
    trained = _detector_run(tmp_path / "trained", "trained")
    outside = _detector_run(tmp_path / "outside", "trained",
                            str(_outside_scorer(tmp_path / "scorer")))
    assert zero_shot["auroc"] < 0.5 and zero_shot["tpr"] < zero_shot["fpr"]  # wrong sign
    assert trained["auroc"] > 0.6 and trained["auroc"] > zero_shot["auroc"] + 0.3
    assert outside["auroc"] > 0.9 and outside["tpr"] > 0.9
    assert outside["fpr"] < 0.5 * trained["fpr"]  # the generation-0 scorer's membership
    folder = tmp_path / "trained" / "seed-0" / "filter_detector" / "detector"
    report = json.loads((folder / "generation-000001" / "training_report.json").read_text())
    calibration = report["calibration"]
    # generation 1's 600 documents against every held-out human document, none unscored;
    # out-of-fold FPR on those humans within 2x of --detector-fpr; every document read by the
    # scorer (no character n-gram first stage)
    assert calibration["n_machine"] == 600 and calibration["n_human"] > 600
    assert calibration["n_unscored"] == 0 and calibration["fpr"] <= 2 * 0.05
    assert calibration["cascade"] is None
    # the token statistics are kept beside the chain, so a resumed run does not score again
    with sqlite3.connect(folder / "token-terms.sqlite") as db:
        rows = db.execute("SELECT count(*) FROM token_terms").fetchone()[0]
    assert rows == calibration["n_human"] + calibration["n_machine"]
    # issue 21's promise: FPR on the web's human documents within 2x of its target
    assert outside["fpr"] <= 2 * 0.05, outside


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="tags real text"):
        LMCollapseConfig(policies=("filter:noisy(tpr=0.9,fpr=0.1)",))
    with pytest.raises(ConfigError, match="decoding"):
        LMCollapseConfig(policies=("replace",), decoding="greedy")
    with pytest.raises(ConfigError, match="detector_source must be one of trained, shipped, "
                                          "zero-shot, got 'learned'"):
        LMCollapseConfig(policies=("replace",), detector_source="learned")
    with pytest.raises(ConfigError, match="leaves no room"):
        LMCollapseConfig(policies=("replace",), prompt_tokens=64)
    with pytest.raises(ConfigError, match="unknown LMRecipe fields"):
        LMCollapseConfig(policies=("replace",), recipe={"layers": 3})
    with pytest.raises(ConfigError, match="recipe n_embd, n_layer shape a GPT-2 trained from "
                                          "scratch; some/model brings its own shape"):
        LMCollapseConfig(policies=("replace",), model="some/model",
                         recipe={"n_layer": 4, "n_embd": 256, "lr": 1e-4})


def test_cli_runs_the_lm_family_and_rejects_numeric_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runner = CliRunner()
    bad = runner.invoke(main, ["collapse", "run", "lm", "--samples", "10", "-o",
                               str(tmp_path / "x")])
    assert bad.exit_code == 1 and ("samples applies to the gaussian, gmm and vae families only"
                                   in bad.output)
    bad = runner.invoke(main, ["collapse", "run", "gaussian", "--max-train-docs", "10", "-o",
                               str(tmp_path / "y")])
    assert bad.exit_code == 1 and "max_train_docs applies to the lm family only" in bad.output
    args = ["collapse", "run", "lm", "--policy", "replace", "--generations", "1",
            "--max-articles", "6", "--max-train-docs", "300", "--threads", "1",
            "--device", "cpu", "--no-plots", "--json", "-o", str(tmp_path / "cli")]
    for key, value in SMALL_RECIPE.items():
        args += ["--recipe", f"{key}={value}"]
    # A disk with less free space than a generation needs stops the run before it starts one,
    # with one line that says so; --resume goes on once there is room.
    monkeypatch.setenv("TAILGUARD_MIN_FREE_GB", "1000000")
    full = runner.invoke(main, args)
    assert full.exit_code == 1
    assert full.output.count("\n") == 1 and "GiB free, less than the 1000000.00 GiB " \
        "generation 0 of the shared chain (seed 0) needs" in full.output
    assert not list((tmp_path / "cli").rglob("metrics.json"))
    monkeypatch.delenv("TAILGUARD_MIN_FREE_GB")
    with pytest.warns(TailguardWarning, match="no better than the bigram baseline"):
        result = runner.invoke(main, [*args, "--resume"])  # 300 documents: too few to learn
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    final = {(row["policy"], row["metric"]): row["mean"] for row in report["final"]}
    assert report["family"] == "lm" and final["replace", "synthetic_share"] == 1.0
    assert report["baselines"]["bigram_ppl"] > 1


@pytest.mark.slow  # a real kill, ~35 s (pytest -m slow; CI runs it)
def test_a_running_run_holds_its_folder_and_a_killed_one_is_told_apart(tmp_path: Path):
    """A real run in another process: status names it, a second run into its folder is
    refused; killed, status says it stopped and a resume takes the folder over."""
    out = tmp_path / "run"
    args = ["collapse", "run", "lm", "--policy", "replace", "--generations", "1",
            "--max-articles", "20", "--max-train-docs", "1500", "--threads", "1", "--device",
            "cpu", "--no-plots", "-q", "-o", str(out)]
    for key, value in SMALL_RECIPE.items():
        args += ["--recipe", f"{key}={value}"]
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=Path(cli_module.__file__)
                            .parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        state = out / "seed-0" / ".generation-000000.training" / "state.json"
        while not state.exists():  # killed below after generation 0's first epochs
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        runner = CliRunner()
        status = runner.invoke(main, ["collapse", "status", str(out)])
        assert f"running: pid {proc.pid} on this machine since " in status.output
        assert "--jobs 1" in status.output
        assert f"seed 0 generation 0: not done, in training by pid {proc.pid}" in status.output
        second = runner.invoke(main, [*args, "--resume"])
        assert second.exit_code == 1
        assert f"is being run by pid {proc.pid}" in second.output
    finally:
        proc.kill()
        proc.wait()
    stopped = CliRunner().invoke(main, ["collapse", "status", str(out)])
    assert f"not running: pid {proc.pid} on this machine since " in stopped.output
    assert "in training by" not in stopped.output  # its worker record names a dead process
    assert f"stopped before the end; continue with `tailguard collapse run lm -o {out} " \
        "--resume`" in stopped.output
    with warnings.catch_warnings():  # the bigram warning, if generation 0 is trained again
        warnings.simplefilter("ignore", TailguardWarning)
        resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not (out / ".running.json").exists()
    # generation 0 went on from its saved epochs; its record counts the earlier process's too
    record = json.loads((out / "seed-0" / "generation-000000" / "metrics.json").read_text())
    epochs = [epoch["seconds"] for epoch in record["train"]["history"]]
    assert len(epochs) == SMALL_RECIPE["epochs"]
    assert record["timing"]["train_seconds"] >= round(sum(epochs), 3) - 0.001  # rounded
    assert json.loads(CliRunner().invoke(main, ["collapse", "status", str(out), "--json"])
                      .output)["finished"] is True


@pytest.mark.slow  # ~35 s: beam search over a generation (pytest -m slow; CI runs it)
def test_the_paper_setting_fine_tunes_a_pretrained_folder_with_beam_search(tiny_lm, tmp_path):
    """``--model`` + ``--decoding beam``: every generation fine-tunes the same pretrained
    weights (a model trained here and saved as a folder stands in for OPT-125m) and writes
    its synthetic set by beam search, whose text the generation-0 model finds *likelier* than
    the human text (the paper's histograms move to low perplexity)."""
    from collapse_eval.text.model import save_model

    folder = save_model(tiny_lm.model, tmp_path / "pretrained", tokenizer=tiny_lm.tokenizer)
    args = ["collapse", "run", "lm", "--model", str(folder), "--decoding", "beam",
            "--num-beams", "3", "--prompt-tokens", "8", "--policy", "replace",
            "--policy", "filter:watermark", "--generations", "1", "--max-articles", "8",
            "--max-train-docs", "400", "--recipe", "block=32", "--recipe", "epochs=1",
            "--recipe", "lr=1e-3", "--threads", "1", "--device", "cpu", "--no-plots",
            "--json", "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == str(folder) and config["decoding"] == "beam"
    # the pretrained model and tokenizer are the run's: no BPE is trained, no shape is made up
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"] == {"model": str(folder), "vocab_size": 512, "tokenizer": str(folder),
                             "parameters": sum(p.numel() for p in tiny_lm.model.parameters())}
    assert "n_layer" not in info["recipe"] and info["recipe"]["lr"] == 1e-3
    assert not (tmp_path / "run" / "tokenizer").exists()

    results = pl.read_parquet(tmp_path / "run" / "results.parquet")
    median = _final(results, "data_perplexity_q50", 1)
    human_median = _final(results, "data_perplexity_q50", 0)["replace"]
    assert median["replace"] < 0.7 * human_median
    # beam search is deterministic and the watermark still marks its output
    tpr, fpr = _final(results, "tagger_tpr", 1), _final(results, "tagger_fpr", 1)
    assert tpr["filter:watermark"] > 0.5 and fpr["filter:watermark"] == 0.0
    texts = pl.read_parquet(tmp_path / "run" / "seed-0" / "replace" / "generation-000001"
                            / "published.parquet")["text"]
    assert texts.len() == 400 and texts.str.len_chars().min() > 0
