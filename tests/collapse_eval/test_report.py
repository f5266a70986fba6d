"""The report: headline shares on known losses, real benchmarks rendered (the numeric families,
and the VAE and language model at toy sizes), and a real browser."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from collapse_eval.bench import BenchFamily, bench_plan, run_bench
from collapse_eval.report import mean_interval, prevented_shares, sweep_points, write_report
from tests.collapse_eval.text.lm_settings import LM_TINY

#: toy sizes: a width-8 VAE trained for 20 steps on 200 digits; a 1-layer GPT-2 with 32-token
#: blocks on 300 documents of 16 tokens for one epoch (seconds per generation on one thread)
VAE_TINY = {"width": 8, "steps": 20, "classifier_epochs": 1}
def _losses(means: dict[str, float], seeds: int = 40, noise: float = 0.05) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"policy": p, "seed": s, "loss": m + noise * rng.standard_normal()}
            for p, m in means.items() for s in range(seeds)]
    return pl.DataFrame(rows)


def test_shares_on_known_losses() -> None:
    losses = _losses({"scrape": 1.0, "filter:oracle": 0.0, "filter:noisy(tpr=0.5,fpr=0.05)": 0.5,
                      "replace": 2.0})
    shares = prevented_shares(losses, "scrape")
    assert shares["scrape"].estimate == pytest.approx(0.0)
    assert shares["filter:oracle"].estimate == pytest.approx(1.0)
    half = shares["filter:noisy(tpr=0.5,fpr=0.05)"]
    assert abs(half.estimate - 0.5) < 0.05 and half.low < 0.5 < half.high
    assert shares["replace"].estimate == pytest.approx(-1.0, abs=0.05)
    vs_replace = prevented_shares(losses, "replace")
    assert vs_replace["scrape"].estimate == pytest.approx(0.5, abs=0.05)
    points = sweep_points(losses)
    assert [(t, f) for t, f, _ in points] == [(0.5, 0.05)]


def test_no_share_when_the_baseline_loses_no_more_than_the_oracle() -> None:
    losses = _losses({"scrape": 0.01, "filter:oracle": 0.0, "replace": 1.0}, noise=0.2)
    assert all(np.isnan(s.estimate) for s in prevented_shares(losses, "scrape").values())
    assert prevented_shares(losses, "scrape")["replace"].text() == "n/a"


def test_mean_interval_covers_the_mean() -> None:
    share = mean_interval(np.arange(100.0))
    assert share.estimate == 49.5 and share.low < 49.5 < share.high


def test_one_seed_gives_point_estimates_without_intervals() -> None:
    losses = _losses({"scrape": 1.0, "filter:oracle": 0.0, "replace": 1.5}, seeds=1, noise=0.0)
    shares = prevented_shares(losses, "scrape")
    assert shares["replace"].estimate == pytest.approx(-0.5) and math.isnan(shares["replace"].low)
    assert shares["replace"].text() == "-0.50 (1 seed)"
    assert mean_interval(np.array([0.25])).text() == "0.25 (1 seed)"


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run_bench(out, quick=True, families=["gaussian"], seeds=4, generations=4,
              policies=("replace", "retain:0.1"), progress=False, plots=False)
    return out


def test_a_benchmark_writes_results_and_a_self_contained_report(bench_dir: Path) -> None:
    results = pl.read_parquet(bench_dir / "results.parquet")
    assert {"replace", "retain:0.1", "scrape", "filter:oracle"} <= set(results["policy"])
    md = (bench_dir / "report.md").read_text()
    assert "| gaussian | retain:0.1 |" in md and "Detection-quality sweep" in md
    assert "Against theory and the paper" in md and "after 5 fits" in md
    # the headline reads the tails from the original's side; the variance is the theory check
    assert "Tail metric: `tail_recall`" in md and "tail loss: 1 - tail_recall." in md
    html = (bench_dir / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(images) == len(list((bench_dir / "report_files").glob("*.png"))) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html


def test_rerunning_the_benchmark_resumes(bench_dir: Path) -> None:
    before = pl.read_parquet(bench_dir / "results.parquet")
    result = run_bench(bench_dir, quick=True, families=["gaussian"], seeds=4, generations=4,
                       policies=("replace", "retain:0.1"), progress=False, report=False,
                       plots=False)
    assert result.results.equals(before)


def _tiny(part: BenchFamily) -> BenchFamily:
    if part.family == "lm":  # one seed: the report's point-estimate path
        config = dataclasses.replace(part.config, seeds=(0,), **LM_TINY)
    else:
        config = dataclasses.replace(part.config, samples=200, heldout=100,
                                     family_options=VAE_TINY)
    return dataclasses.replace(part, config=config)


#: The VAE and LM benchmark behind the report tests of the neural families: ~1.5 min of toy runs,
#: so they run with the slow tests (pytest -m slow; CI runs them)
NEURAL = pytest.mark.slow


@pytest.fixture(scope="module")
def neural_bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick plan's VAE and LM parts (their policies, 2 seeds, 1 generation) at toy sizes."""
    out = tmp_path_factory.mktemp("neural-bench")
    plan = [_tiny(p) for p in bench_plan(quick=True, families=["vae", "lm"], seeds=2,
                                         generations=1)]
    run_bench(out, plan=plan, progress=False)
    return out


@NEURAL
def test_the_vae_and_the_language_model_run_through_the_benchmark(neural_bench_dir: Path) -> None:
    results = pl.read_parquet(neural_bench_dir / "results.parquet")
    policies = {f: set(results.filter(pl.col("family") == f)["policy"]) for f in ("vae", "lm")}
    assert policies["vae"] == {"replace", "retain:0.1", "scrape", "filter:oracle"}
    assert policies["lm"] == policies["vae"] | {"filter:watermark"}
    assert (neural_bench_dir / "lm" / "ledger.sqlite").exists()  # the LM loop ran
    assert (neural_bench_dir / "vae" / "checkpoints").is_dir()  # the numeric loop ran
    bench = json.loads((neural_bench_dir / "bench.json").read_text())
    assert bench["folders"] == {"vae": "vae", "lm": "lm"} and bench["environment"]["cpus"]


@NEURAL
def test_the_report_covers_the_vae_and_the_language_model(neural_bench_dir: Path) -> None:
    md = (neural_bench_dir / "report.md").read_text()
    for row in ("| vae | retain:0.1 |", "| lm | filter:watermark |"):
        assert row in md
    assert "(1 seed)" in md  # the LM ran one seed: point estimates, no made-up interval
    rates = md.split("## What the filters achieved")[1].split("##")[0]
    assert "| lm | filter:watermark |" in rates and "| lm | filter:oracle |" in rates
    theory = md.split("## Against theory and the paper")[1].split("\n## ")[0]
    assert "| vae | encoder std" in theory and "paper: qualitative" in theory
    assert "| lm | test perplexity, generation 0 -> 1, replace vs retain:0.1 |" in theory
    assert "300 documents per generation" in md and "2 seeds, 200 samples per generation" in md
    assert "`rare_ngram_recall`" in md and "tail loss: 1 - rare_ngram_recall" in md
    assert "report_files/lm-data_perplexity_histograms.png" in md
    assert "report_files/lm-test_perplexity.png" in md and "report_files/vae-recall.png" in md
    # the LM's numbers by generation: generation 0 once, then each policy's generation 1,
    # read by column name, so that a reordered column cannot pass or fail unnoticed
    lm = pl.read_parquet(neural_bench_dir / "lm" / "results.parquet")
    table = _md_table_rows(md.split("By generation")[1].split("\n\n")[1])
    assert [(r["policy"], r["generation"]) for r in table] == [("all (shared)", "0")] + [
        (p, "1") for p in ("replace", "retain:0.1", "scrape", "filter:oracle",
                           "filter:watermark")]
    row = {r["policy"]: r for r in table}

    def value(policy: str, metric: str) -> float:
        at = lm.filter((pl.col("policy") == policy) & (pl.col("generation") == 1)
                       & (pl.col("metric") == metric))
        assert at.height == 1, (policy, metric)  # one seed
        return at["value"][0]

    assert row["replace"]["rare-bigram recall"] == f"{value('replace', 'rare_ngram_recall'):.3f}"
    assert row["replace"]["synthetic share"] == "1.00"  # all synthetic
    tpr = value("filter:watermark", "tagger_tpr")
    assert row["filter:watermark"]["filter TPR"] == f"{tpr:.3f}"  # what its tagger achieved
    assert row["replace"]["filter TPR"] == ""  # no filter, no TPR


def _md_table_rows(block: str) -> list[dict[str, str]]:
    """The rows of a markdown table (header, separator, rows) as {column name: cell}."""
    lines = block.strip().splitlines()

    def cells(line: str) -> list[str]:
        assert line.startswith("|") and line.endswith("|"), line
        return [c.strip() for c in line[1:-1].split("|")]

    header = cells(lines[0])
    assert len(set(header)) == len(header), header
    assert set(lines[1]) <= set("|-: ") and lines[1].count("|") == len(header) + 1, lines[1]
    return [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]


@NEURAL
def test_rerunning_the_neural_benchmark_resumes(neural_bench_dir: Path) -> None:
    before = pl.read_parquet(neural_bench_dir / "results.parquet")
    plan = [_tiny(p) for p in bench_plan(quick=True, families=["vae", "lm"], seeds=2,
                                         generations=1)]
    result = run_bench(neural_bench_dir, plan=plan, progress=False, report=False)
    assert result.results.equals(before)
    assert json.loads((neural_bench_dir / "lm" / "run.json").read_text())[
        "resumed_generations"] == 1 + 5  # generation 0 and one per policy: nothing retrained


@NEURAL
def test_a_single_lm_run_folder_reports_too(neural_bench_dir: Path, tmp_path: Path) -> None:
    """`tailguard report` on a `collapse run lm` folder (its config.json names no family)."""
    run = tmp_path / "lm"
    shutil.copytree(neural_bench_dir / "lm", run)
    written = write_report(run)
    assert "## lm" in written.markdown.read_text() and len(written.images) >= 7


#: injected at the top of <head>: counts console errors, script errors and resources that fail to
#: load (error events do not bubble, so they are caught on the capture phase)
_WATCH = ("<script>window.__errors=[];const e=console.error.bind(console);"
          "console.error=(...a)=>{window.__errors.push(a.join(' '));e(...a)};"
          "window.addEventListener('error',ev=>window.__errors.push(String(ev.message||"
          "(ev.target&&ev.target.tagName))),true);</script>")
_PROBE = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
          "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
          "document.body.setAttribute('data-images',ok+'/'+imgs.length);"
          "document.body.setAttribute('data-errors',window.__errors.length);});</script>")


def _colours(png: Path) -> int:
    """How many distinct colours a screenshot has (1: a blank page)."""
    from PIL import Image

    with Image.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [])


@pytest.mark.parametrize("folder", ["bench_dir", pytest.param("neural_bench_dir", marks=NEURAL)])
def test_report_html_renders_in_a_headless_browser_with_every_image(
        folder: str, request: pytest.FixtureRequest, tmp_path: Path,
        browser: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    bench_dir: Path = request.getfixturevalue(folder)
    page = (bench_dir / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + _WATCH, 1)
                     .replace("</body>", _PROBE + "</body>"))
    proc = browser("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), timeout=120)
    match = re.search(r'data-images="(\d+)/(\d+)"', proc.stdout)
    assert match, proc.stderr[-2000:]
    loaded, total = int(match.group(1)), int(match.group(2))
    assert total == len(list((bench_dir / "report_files").glob("*.png"))) >= 3
    assert loaded == total
    assert 'data-errors="0"' in proc.stdout, proc.stderr[-2000:]
    # the first screen: title, the generated paragraph and the contents, drawn (not blank)
    shot = tmp_path / "first-screen.png"
    browser(f"--screenshot={shot}", "--window-size=1280,900", (bench_dir / "report.html").as_uri(),
            timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _colours(shot) > 16
