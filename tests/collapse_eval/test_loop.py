"""The recursive loop: reproducible, resumable after a real kill, policies ordered as theory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from collapse_eval.engine import run_collapse
from collapse_eval.loop import CollapseConfig, collect_results
from collapse_eval.metrics import METRICS
from collapse_eval.run_lock import RUNNING_FILE, claim_run_dir
from provenance.errors import ConfigError, OutputError

ROOT = Path(__file__).resolve().parents[2]


def _metric(results: pl.DataFrame, policy: str, metric: str, generation: int) -> np.ndarray:
    return results.filter((pl.col("policy") == policy) & (pl.col("metric") == metric)
                          & (pl.col("generation") == generation)).sort("seed")["value"].to_numpy()


def test_same_config_same_results_and_chains_do_not_depend_on_their_neighbours(
    tmp_path: Path,
) -> None:
    policies = ("replace", "filter:noisy(tpr=0.8,fpr=0.05)", "reweight")
    config = CollapseConfig("gaussian", policies, generations=6, samples=50, seeds=(0, 1, 2, 3))
    a = run_collapse(config, tmp_path / "a", progress=False, plots=False)
    b = run_collapse(config, tmp_path / "b", progress=False, plots=False)
    assert_frame_equal(a.results, b.results)
    assert (tmp_path / "a" / "results.parquet").read_bytes() == (
        tmp_path / "b" / "results.parquet").read_bytes()
    alone = run_collapse(CollapseConfig("gaussian", policies, generations=6, samples=50,
                                        seeds=(2,)), tmp_path / "alone", progress=False,
                         plots=False)
    among = a.results.filter(pl.col("seed") == 2).drop("run_id")
    assert_frame_equal(alone.results.drop("run_id"), among)
    assert set(a.results["metric"].unique()) <= set(METRICS)


def test_a_killed_run_resumes_to_identical_results(tmp_path: Path) -> None:
    args = ["gaussian", "--policy", "replace", "--policy", "filter:noisy(tpr=0.9,fpr=0.01)",
            "--generations", "60", "--samples", "100", "--seeds", "32", "--no-plots", "-q"]
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from cli import main; main()", "collapse",
                             "run", *args, "-o", str(killed)], cwd=ROOT, env=env)
    target = killed / "checkpoints" / "replace" / "generation-000010.safetensors"
    deadline = time.monotonic() + 120
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run never reached generation 10"
    assert not (killed / "results.parquet").exists(), "the run finished before it was killed"

    config = CollapseConfig("gaussian", ("replace", "filter:noisy(tpr=0.9,fpr=0.01)"),
                            generations=60, samples=100, seeds=tuple(range(32)))
    with pytest.raises(ConfigError, match="--resume"):
        run_collapse(config, killed, progress=False, plots=False)
    resumed = run_collapse(config, killed, resume=True, progress=False, plots=False)
    assert resumed.resumed_generations >= 11
    fresh = run_collapse(config, tmp_path / "fresh", progress=False, plots=False)
    assert_frame_equal(resumed.results, fresh.results)


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    config = CollapseConfig("gaussian", ("replace",), generations=2, samples=20, seeds=(0,))
    run_collapse(config, tmp_path / "r", progress=False, plots=False)
    other = CollapseConfig("gaussian", ("replace",), generations=2, samples=30, seeds=(0,))
    with pytest.raises(ConfigError, match=r"different settings \(samples\)"):
        run_collapse(other, tmp_path / "r", resume=True, progress=False, plots=False)
    again = run_collapse(config, tmp_path / "r", resume=True, progress=False, plots=False)
    assert again.resumed_generations == 3
    assert_frame_equal(again.results, collect_results(tmp_path / "r", config))


def test_a_folder_another_live_process_runs_is_refused_even_with_overwrite(
        tmp_path: Path) -> None:
    config = CollapseConfig("gaussian", ("replace",), generations=2, samples=20, seeds=(0,))
    out = tmp_path / "run"
    run_collapse(config, out, progress=False, plots=False)
    with claim_run_dir(out):  # this process stands in for another live run of the folder
        for flags in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(ConfigError, match="is being run by pid"):
                run_collapse(config, out, progress=False, plots=False, **flags)
        assert (out / "results.parquet").exists()  # --overwrite deleted nothing
    again = run_collapse(config, out, resume=True, progress=False, plots=False)
    assert again.resumed_generations == 3 and not (out / RUNNING_FILE).exists()


def test_filtering_with_the_truth_stops_collapse_and_scraping_does_not(tmp_path: Path) -> None:
    # M = 10 samples per generation collapses fast: E ln s2 after 40 fits is about -4.6.
    policies = ("replace", "scrape", "retain:0.5", "filter:oracle",
                "filter:noisy(tpr=0.95,fpr=0.05)")
    config = CollapseConfig("gaussian", policies, generations=39, samples=10,
                            seeds=tuple(range(64)))
    results = run_collapse(config, tmp_path / "o", progress=False).results
    median = {p: float(np.median(_metric(results, p, "log_variance", 39))) for p in policies}
    assert median["replace"] < -3
    assert median["replace"] < median["scrape"] < median["filter:oracle"]
    assert median["replace"] < median["retain:0.5"]
    assert abs(median["filter:oracle"]) < 0.5
    assert (_metric(results, "filter:oracle", "synthetic_share", 39) == 0).all()
    assert _metric(results, "scrape", "synthetic_share", 39).mean() > 0.9
    tpr = _metric(results, "filter:noisy(tpr=0.95,fpr=0.05)", "tagger_tpr", 39)
    fpr = _metric(results, "filter:noisy(tpr=0.95,fpr=0.05)", "tagger_fpr", 39)
    assert abs(tpr.mean() - 0.95) < 0.01 and abs(fpr.mean() - 0.05) < 0.03
    assert len(list((tmp_path / "o" / "plots").glob("*.png"))) >= 10


def test_the_discriminator_filter_reports_its_rates_in_the_loop(tmp_path: Path) -> None:
    config = CollapseConfig("gaussian", ("filter:discriminator",), generations=5, samples=20,
                            seeds=tuple(range(8)), original_size=200)
    results = run_collapse(config, tmp_path / "d", progress=False, plots=False).results
    tpr = results.filter(pl.col("metric") == "tagger_tpr")
    assert tpr["generation"].min() == 1 and tpr.height == 5 * 8
    assert results.filter(pl.col("metric").is_in(["tagger_tpr", "tagger_fpr"]))["value"].is_between(
        0, 1).all()


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown policy 'shuffle'"):
        CollapseConfig("gaussian", ("shuffle",))
    with pytest.raises(ConfigError, match="policy given twice"):
        CollapseConfig("gaussian", ("retain:0.1", "retain:0.10"))
    with pytest.raises(ConfigError, match="unknown family 'cauchy'"):
        CollapseConfig("cauchy", ("replace",))
    with pytest.raises(ConfigError, match="numeric families support oracle"):
        run_collapse(CollapseConfig("gaussian", ("filter:watermark",), generations=1,
                                    samples=10), tmp_path / "w", progress=False, plots=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty; use --overwrite"):
        run_collapse(CollapseConfig("gaussian", ("replace",), generations=1, samples=10),
                     tmp_path / "busy", progress=False, plots=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_a_resume_may_continue_a_run_for_more_generations(tmp_path: Path) -> None:
    short = CollapseConfig("gaussian", ("replace", "retain:0.1"), generations=4, samples=20,
                           seeds=(0, 1))
    longer = CollapseConfig("gaussian", ("replace", "retain:0.1"), generations=9, samples=20,
                            seeds=(0, 1))
    run_collapse(short, tmp_path / "r", progress=False, plots=False)
    extended = run_collapse(longer, tmp_path / "r", resume=True, progress=False, plots=False)
    assert extended.resumed_generations == 2 * 5
    fresh = run_collapse(longer, tmp_path / "fresh", progress=False, plots=False)
    assert_frame_equal(extended.results, fresh.results)
    with pytest.raises(ConfigError, match="may only raise --generations"):
        run_collapse(short, tmp_path / "r", resume=True, progress=False, plots=False)


def test_a_run_folder_that_cannot_be_written_is_one_line_before_any_work(
        tmp_path: Path, readonly_dir: Path) -> None:
    from collapse_eval.text.config import LMCollapseConfig

    config = CollapseConfig("gaussian", ("replace",), generations=1, samples=10)
    with pytest.raises(OutputError, match="the output path is empty"):
        run_collapse(config, "", progress=False, plots=False)
    lm = LMCollapseConfig(policies=("replace",), generations=1, seeds=(0,))
    with pytest.raises(OutputError, match="read-only file system"):
        run_collapse(lm, readonly_dir / "lm", progress=False, plots=False)
    data = tmp_path / "digits"
    data.mkdir()
    vae = CollapseConfig("vae", ("replace",), generations=1, samples=10,
                         family_options={"data": str(data)})
    with pytest.raises(OutputError, match="the output lies inside the input"):
        run_collapse(vae, data / "run", progress=False, plots=False)
    assert list(data.iterdir()) == []

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", "from cli import main; main()", "collapse",
                           "run", "gaussian", "--generations", "1", "-o",
                           str(readonly_dir / "run")], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {readonly_dir / 'run'}: cannot write: read-only file system")
