"""Policy chains in worker processes (``jobs``/``--jobs``): the results of one process, a resume
with other jobs, and a failing chain named in the parent. Real runs on the small config of
test_text_loop with a still smaller model (one torch thread per process): what is checked is
that scheduling changes no result, not what the model learns."""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from cli import main
from collapse_eval.engine import CollapseRun, run_collapse
from provenance.errors import ChainWorkerError
from tests.collapse_eval.text.lm_settings import FAST_RECIPE, small_config

POLICIES = ("replace", "retain:0.1", "filter:ledger")
SLUGS = ("replace", "retain_0.1", "filter_ledger")
DOCS, ARTICLES, GENERATIONS = 600, 8, 2
RECIPE = FAST_RECIPE
VOLATILE = ("train_tokens_per_s",)  # a timing, not a result


def _small_config(policies: tuple[str, ...], generations: int, docs: int, articles: int):
    return replace(small_config(policies, generations, docs, articles=articles), recipe=RECIPE)


def _config():
    return _small_config(POLICIES, GENERATIONS, DOCS, articles=ARTICLES)


def _results(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(~pl.col("metric").is_in(VOLATILE))


def _records(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, doc_id, generator, generation, content_hash, parent_ids "
                          "FROM records ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> CollapseRun:
    out = tmp_path_factory.mktemp("lm-jobs") / "one"
    return run_collapse(_config(), out, progress=False, threads=1, device="cpu", plots=False)


@pytest.mark.slow  # ~50 s: a second LM run of four policies (pytest -m slow; CI runs it)
def test_two_workers_give_the_results_of_one_process(one_process, tmp_path: Path):
    out = tmp_path / "two"
    args = ["collapse", "run", "lm", "--generations", str(GENERATIONS), "--max-articles",
            str(ARTICLES), "--max-train-docs", str(DOCS), "--threads", "1", "--jobs", "2",
            "--device", "cpu", "--no-plots", "--json", "-o", str(out)]
    for policy in POLICIES:
        args += ["--policy", policy]
    for key, value in RECIPE.items():
        args += ["--recipe", f"{key}={value}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["resumed_generations"] == 0
    two = pl.read_parquet(out / "results.parquet")
    assert _results(two).equals(_results(one_process.results))  # every metric, every generation
    assert not list(out.rglob(".worker.json"))  # each worker's name left with its generations
    one = one_process.out_dir
    for slug in SLUGS:
        for generation in range(1, GENERATIONS + 1):
            folder = Path("seed-0", slug, f"generation-{generation:06d}")
            published = folder / "published.parquet"
            assert (out / published).read_bytes() == (one / published).read_bytes()
            mixture = folder / "mixture" / "part-00000.parquet"
            assert pl.read_parquet(out / mixture).equals(pl.read_parquet(one / mixture))
    web = Path("seed-0", "filter_ledger", "generation-000002", "web.parquet")
    assert pl.read_parquet(out / web).equals(pl.read_parquet(one / web))  # the ledger's tags
    # the lineage ledger: generation 0's documents, then the chain's own, in the same order
    lineage = Path("seed-0", "filter_ledger", "ledger.sqlite")
    assert _records(out / lineage) == _records(one / lineage)
    assert {r[2] for r in _records(one / lineage)} == {"tailguard-lm/shared/seed-0",
                                                       "tailguard-lm/filter_ledger/seed-0"}
    # the run's ledger holds the same records (in the order the workers happened to register)
    assert sorted(r[1:] for r in _records(out / "ledger.sqlite")) == sorted(
        r[1:] for r in _records(one / "ledger.sqlite"))


@pytest.mark.slow  # ~40 s with the one-process run it shares (pytest -m slow; CI runs it)
def test_a_resume_with_other_jobs_gives_the_same_results(one_process, tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str]):
    copy = tmp_path / "run"
    shutil.copytree(one_process.out_dir, copy)
    # killed mid-run: retain:0.1 in its last generation, filter:ledger in its first
    (copy / "seed-0" / "retain_0.1" / "generation-000002" / "metrics.json").unlink()
    (copy / "seed-0" / "filter_ledger" / "generation-000001" / "metrics.json").unlink()
    resumed = run_collapse(_config(), copy, resume=True, progress=True, threads=1,
                              device="cpu", plots=False, jobs=2)
    assert resumed.resumed_generations == 1 + 2 + 1 + 0
    assert _results(resumed.results).equals(_results(one_process.results))
    # stderr is no terminal here, so no bar: a line per generation the workers finished
    logged = sorted(re.findall(r"lm seed 0 (\S+) generation (\d)/2 done in [0-9.]+ min: test "
                               r"perplexity [0-9.]+, rare-bigram recall 0\.\d{3}",
                               capfd.readouterr().err))
    assert logged == [("filter:ledger", "1"), ("filter:ledger", "2"), ("retain:0.1", "2")]
    lineage = Path("seed-0", "filter_ledger", "ledger.sqlite")  # re-registered, not duplicated
    assert _records(copy / lineage) == _records(one_process.out_dir / lineage)
    # a resume of a complete run does nothing, whatever the jobs
    again = run_collapse(_config(), copy, resume=True, progress=False, threads=1,
                            device="cpu", plots=False, jobs=3)
    assert again.resumed_generations == 1 + len(POLICIES) * GENERATIONS


def _prepared(out: Path, config) -> None:
    """A run folder as prepare_run_dir writes it, for ``resume`` to take over."""
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config.as_dict(), indent=2) + "\n")


def test_a_failing_chain_is_named_and_stops_the_others(tmp_path: Path):
    config = _small_config(("replace", "filter:ledger"), 1, 300, articles=6)
    out = tmp_path / "run"
    _prepared(out, config)
    (out / "seed-0").mkdir()
    (out / "seed-0" / "filter_ledger").write_text("a file where the chain's folder goes\n")
    with pytest.raises(ChainWorkerError, match=r"^lm policy filter:ledger \(seed 0\) failed in its "
                       r"worker process: NotADirectoryError") as info:
        run_collapse(config, out, resume=True, progress=False, threads=1, device="cpu",
                     plots=False, jobs=2)
    assert (info.value.policy, info.value.seed) == ("filter:ledger", 0)
    message = str(info.value)
    assert "continue with --resume" in message.splitlines()[0]
    assert "worker traceback:" in message and "in step" in message  # the worker's own frames
    assert not multiprocessing.active_children()  # no worker left running
    assert (out / "seed-0" / "generation-000000" / "metrics.json").exists()  # kept
    # with the cause gone, --resume continues from what was finished
    (out / "seed-0" / "filter_ledger").unlink()
    run = run_collapse(config, out, resume=True, progress=False, threads=1, device="cpu",
                       plots=False, jobs=2)
    assert run.resumed_generations >= 1
    assert set(run.results.filter(pl.col("generation") == 1)["policy"]) == {"replace",
                                                                           "filter:ledger"}


def test_one_process_logs_the_generations_it_finishes(one_process, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]):
    copy = tmp_path / "run"
    shutil.copytree(one_process.out_dir, copy)
    chain = copy / "seed-0" / "filter_ledger"
    (chain / "generation-000002" / "metrics.json").unlink()
    run = run_collapse(_config(), copy, resume=True, progress=True, threads=1,
                          device="cpu", plots=False)
    assert (chain / "generation-000002" / "metrics.json").exists()
    logged = re.findall(r"lm seed 0 (\S+) generation (\d)/2 done", capfd.readouterr().err)
    assert logged == [("filter:ledger", "2")]  # one process logs what it finished, too
    assert run.resumed_generations == 1 + len(POLICIES) * GENERATIONS - 1
    assert _results(run.results).equals(_results(one_process.results))
    # run.json's seconds are this invocation's; generation_seconds the whole run's, resumed
    info = json.loads((copy / "run.json").read_text())
    timings = [sum(json.loads(p.read_text())["timing"].values())
               for p in copy.rglob("metrics.json")]
    assert len(timings) == 1 + len(POLICIES) * GENERATIONS
    assert info["generation_seconds"] == pytest.approx(sum(timings), abs=0.1)


def test_the_growing_chain_is_handed_out_first():
    from collapse_eval.policies import parse_policies
    from collapse_eval.text.config import LMCollapseConfig
    from collapse_eval.text.world import chain_cost

    policies = parse_policies(LMCollapseConfig().policies)  # the nine defaults
    names = [p.name for p in policies]

    def order(done: dict[str, int]) -> list[str]:  # as the engine hands chains out
        costs = {p.name: chain_cost(p, done.get(p.name, 10), 10) for p in policies}
        return sorted((n for n in names if costs[n] > 0), key=lambda n: -costs[n])

    assert order(dict.fromkeys(names, 0)) == ["accumulate"] + [n for n in names
                                                               if n != "accumulate"]
    # one generation left of a growing chain (generation 10: 11 corpora) still outweighs ten
    # fixed-size ones; finished chains are not handed out at all
    assert order({"accumulate": 9, "replace": 0, "scrape": 10}) == ["accumulate", "replace"]
