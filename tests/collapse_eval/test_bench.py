"""The benchmark's plan: which families run what, and how the CLI reaches it; the families run
at once in worker processes (``--jobs``) with the results of one process, a failing family named
in one line, and a terminated run that leaves no process and no data behind
(tests/collapse_eval/test_report.py runs every family through the benchmark and its report)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import cli as cli_module
from cli import main
from collapse_eval.bench import (
    FAMILIES,
    SWEEP_FAMILIES,
    BenchFamily,
    BenchResult,
    bench_plan,
    run_bench,
    sweep_policies,
    usable_cores,
)
from collapse_eval.loop import CollapseConfig
from collapse_eval.run_lock import run_holder
from collapse_eval.text.config import LMCollapseConfig
from provenance.errors import BenchFamilyError, ConfigError
from provenance.processes import process_alive
from tests.collapse_eval.text.lm_settings import LM_TINY

ANCHORS = {"replace", "retain:0.1", "scrape", "filter:oracle"}


def _plan(**kwargs) -> dict:
    return {part.family: part for part in bench_plan(**kwargs)}


def test_every_family_is_in_the_quick_plan_with_the_policies_that_tell_the_story() -> None:
    plan = _plan(quick=True)
    assert tuple(plan) == FAMILIES == ("gaussian", "gmm", "vae", "lm")
    for family, part in plan.items():
        assert ANCHORS <= set(part.config.policies), family
        assert isinstance(part.config, LMCollapseConfig if family == "lm" else CollapseConfig)
        assert part.folder == family and part.skipped == ()
    assert "filter:watermark" in plan["lm"].config.policies
    # the ledger matches every published document exactly in the LM loop: it would rerun
    # filter:oracle, so the quick plan leaves it to the full one
    assert "filter:ledger" not in plan["lm"].config.policies
    assert set(sweep_policies()) <= set(plan["gaussian"].config.policies)
    assert SWEEP_FAMILIES == ("gaussian",)
    vae, lm = plan["vae"].config, plan["lm"].config
    assert len(vae.policies) == 4 and vae.generations <= 3 and len(vae.seeds) <= 2
    assert vae.family_options["width"] < 64  # a narrower VAE than the paper's
    # two LM seeds: its headline rows get intervals (issue 25)
    assert lm.generations <= 3 and len(lm.seeds) == 2 and lm.max_train_docs == 4000


def test_the_full_plan_runs_each_family_at_its_defaults() -> None:
    plan = _plan()
    lm = plan["lm"].config
    defaults = LMCollapseConfig()
    assert (lm.policies, lm.generations, lm.recipe, lm.max_train_docs) == (
        defaults.policies, defaults.generations, defaults.recipe, defaults.max_train_docs)
    vae = plan["vae"].config
    assert vae.family_options == {} and vae.samples == 4000
    assert "filter:noisy(tpr=0.9,fpr=0.05)" in vae.policies


def test_policies_that_do_not_apply_to_a_family_are_skipped_for_it() -> None:
    asked = ["replace", "filter:noisy(tpr=0.9,fpr=0.05)", "filter:watermark"]
    plan = _plan(quick=True, families=["gmm", "lm"], policies=asked, seeds=3, generations=2)
    assert plan["lm"].skipped == ("filter:noisy(tpr=0.9,fpr=0.05)",)
    assert plan["lm"].config.policies == ("replace", "filter:watermark", "scrape",
                                          "filter:oracle")
    assert plan["gmm"].skipped == ("filter:watermark",)
    assert plan["gmm"].config.policies == ("replace", "filter:noisy(tpr=0.9,fpr=0.05)",
                                           "scrape", "filter:oracle")
    for part in plan.values():
        assert len(part.config.seeds) == 3 and part.config.generations == 2


@pytest.mark.parametrize("families", [[], ["gaussian", "bert"]])
def test_unknown_or_no_families_are_an_error(families: list[str]) -> None:
    with pytest.raises(ConfigError, match="family|families"):
        bench_plan(families=families)


def test_the_command_lists_the_four_families_and_rejects_an_unknown_one(tmp_path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["bench", "--help"]).output
    assert "gaussian,gmm,vae,lm" in help_text and "skipped" in help_text
    result = runner.invoke(main, ["bench", "--families", "gaussian,bert", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "unknown families: bert" in result.output


# ---- families in worker processes (--jobs) -------------------------------------------------------
# Real runs at toy sizes (test_report's LM; a smaller GMM): the numeric families and the LM,
# whose policy chains run in worker processes of its own inside its family's worker.

#: timings, not results: the LM's training speed, the seconds of each family and in all
VOLATILE_METRICS = ("train_tokens_per_s",)
VOLATILE_INFO = ("seconds_this_invocation", "wall_seconds")
TOY_SIZES = {"gaussian": {}, "gmm": {"samples": 200, "heldout": 200}, "lm": LM_TINY}


def _toy_plan(families: tuple[str, ...]) -> list[BenchFamily]:
    plan = bench_plan(quick=True, families=families, policies=["replace"], seeds=2,
                      generations=1)
    return [dataclasses.replace(part, config=dataclasses.replace(part.config,
                                                                 **TOY_SIZES[part.family]))
            for part in plan]


def _results(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "results.parquet").filter(
        ~pl.col("metric").is_in(VOLATILE_METRICS))


def _bench_info(out: Path) -> dict:
    info = json.loads((out / "bench.json").read_text())
    assert info["environment"].pop("jobs") >= 1
    return {k: v for k, v in info.items() if k not in VOLATILE_INFO}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    out = tmp_path_factory.mktemp("bench-jobs") / "one"
    return run_bench(out, plan=_toy_plan(("gaussian", "gmm", "lm")), jobs=1, progress=False,
                     report=False, plots=False)


@pytest.mark.slow  # ~45 s: a second bench of three families (pytest -m slow; CI runs it)
def test_two_workers_give_the_results_of_one_process(one_process: BenchResult, tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "two"
    two = run_bench(out, plan=_toy_plan(("gaussian", "gmm", "lm")), jobs=2, progress=True,
                    report=False, plots=False)
    assert two.jobs == 2 and one_process.jobs == 1
    assert list(two.seconds) == list(one_process.seconds) == ["gaussian", "gmm", "lm"]
    # the same rows in the same order, every value to the bit
    assert _results(out).equals(_results(one_process.out_dir))
    assert two.results.equals(pl.read_parquet(out / "results.parquet"))
    assert _bench_info(out) == _bench_info(one_process.out_dir)
    assert json.loads((out / "bench.json").read_text())["environment"]["jobs"] == 2
    err = capfd.readouterr().err  # no terminal: the plan, then a line as each family ends
    assert "bench 3/3: lm, 3 policies x 2 seeds x 2 generations" in err
    assert sorted(re.findall(r"bench: (\w+) done in \d+ s", err)) == ["gaussian", "gmm", "lm"]
    assert "lm seed 1 filter:oracle generation 1/1 done" in err  # the LM's own log lines
    assert not multiprocessing.active_children()
    assert not list(out.rglob(".running.json")) and not list(out.rglob(".worker.json"))


def _break_gaussian(out: Path, plan: list[BenchFamily]) -> Path:
    """The gaussian's run folder as a run leaves it, with a file where its first policy's
    checkpoints go: the family fails in the loop itself, with an error tailguard did not
    mean to raise."""
    gaussian = next(part for part in plan if part.family == "gaussian")
    folder = out / gaussian.folder
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(gaussian.config.as_dict()))
    blocker = folder / "checkpoints" / "replace"
    blocker.write_text("a file where a folder goes\n")
    return blocker


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_family_is_one_line_naming_it_and_a_rerun_resumes(
        one_process: BenchResult, tmp_path: Path, jobs: int) -> None:
    plan = _toy_plan(("gaussian", "gmm"))
    out = tmp_path / "bench"
    blocker = _break_gaussian(out, plan)
    where = " in its worker process" if jobs > 1 else ""
    with pytest.raises(BenchFamilyError, match=rf"^bench family gaussian failed{where}: "
                       r"FileExistsError: .*replace'; finished generations are kept: run the "
                       r"same command again to resume$") as info:
        run_bench(out, plan=plan, jobs=jobs, progress=False, plots=False)
    assert info.value.family == "gaussian" and "\n" not in str(info.value)
    # the other family was stopped (or had finished), and nothing reads as the bench's data
    assert not multiprocessing.active_children()
    assert not list(out.rglob(".running.json"))
    assert not {"results.parquet", "bench.json", "report.md"} & {p.name for p in out.iterdir()}
    blocker.unlink()
    again = run_bench(out, plan=plan, jobs=jobs, progress=False, report=False, plots=False)
    expected = _results(one_process.out_dir).filter(pl.col("family").is_in(["gaussian", "gmm"]))
    assert _results(out).equals(expected) and again.results.height == expected.height


def test_a_family_error_of_tailguard_keeps_its_own_message(tmp_path: Path) -> None:
    plan = _toy_plan(("gmm", "gaussian"))
    gmm = tmp_path / "gmm"
    gmm.mkdir()
    (gmm / "config.json").write_text(json.dumps({**plan[0].config.as_dict(), "samples": 7}))
    with pytest.raises(BenchFamilyError, match=r"^bench family gmm: .*gmm holds a run with "
                       r"different settings \(samples\); use another -o"):
        run_bench(tmp_path, plan=plan, jobs=2, progress=False, plots=False)


def test_bench_jobs_must_be_a_positive_integer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jobs must be a positive integer or None, got 0"):
        run_bench(tmp_path, plan=_toy_plan(("gaussian",)), jobs=0)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # ~30 s: two worker processes and a report (pytest -m slow; CI runs it,
#                   and CI's main job is this command on every family)
def test_the_command_runs_families_at_once_by_default_with_quick(tmp_path: Path) -> None:
    runner = CliRunner()
    assert "--jobs" in runner.invoke(main, ["bench", "--help"]).output
    bad = runner.invoke(main, ["bench", "--jobs", "0", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "Invalid value for '--jobs'" in bad.output
    args = ["bench", "--quick", "--families", "gaussian,gmm", "--policy", "replace", "--seeds",
            "2", "--generations", "1", "--no-plots", "--json", "-o", str(tmp_path / "b")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "b").glob("*/plots"))  # --no-plots: no family drew its PNGs
    assert (tmp_path / "b" / "report.md").exists()  # the report still draws its own
    summary = json.loads(result.output)
    assert summary["jobs"] == min(len(os.sched_getaffinity(0)), 2) == usable_cores() and (
        summary["wall_seconds"] > 0 and list(summary["seconds"]) == ["gaussian", "gmm"])
    # a rerun with --jobs 1 resumes the same folder: nothing left to compute, same results
    before = pl.read_parquet(tmp_path / "b" / "results.parquet")
    again = runner.invoke(main, [*args, "--jobs", "1"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["jobs"] == 1
    assert pl.read_parquet(tmp_path / "b" / "results.parquet").equals(before)


@pytest.mark.slow  # a real kill, ~25-40 s (pytest -m slow; CI runs it)
def test_a_terminated_bench_stops_its_workers_and_leaves_no_data(tmp_path: Path) -> None:
    """SIGTERM (a scheduler's limit, ``kill``) ends the command; the workers, told the same,
    end their families through their ``finally`` blocks: no process left, no claim left,
    and no combined results."""
    out = tmp_path / "bench"
    args = ["bench", "--families", "gmm,gaussian", "--policy", "replace", "--seeds", "2",
            "--generations", "200", "--jobs", "2", "-q", "-o", str(out)]
    root = Path(cli_module.__file__).resolve().parent
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=root,
                            stderr=subprocess.PIPE, text=True)
    workers: dict[str, int] = {}  # each family's worker, as it claims the family's folder
    deadline = time.monotonic() + 120
    while len(workers) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no workers started"
        for family in ("gmm", "gaussian"):
            holder = run_holder(out / family)
            if holder is not None:
                workers[family] = holder.pid
        time.sleep(0.1)
    assert os.getpid() not in workers.values() and len(set(workers.values())) == 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    deadline = time.monotonic() + 10
    while any(map(process_alive, workers.values())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(process_alive, workers.values()))
    assert not list(out.rglob(".running.json"))
    assert not (out / "results.parquet").exists() and not (out / "bench.json").exists()
