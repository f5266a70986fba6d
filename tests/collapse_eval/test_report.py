"""The report: headline shares on known losses, a real benchmark rendered, and a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from collapse_eval.bench import run_bench
from collapse_eval.report import mean_interval, prevented_shares, sweep_points


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


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run_bench(out, quick=True, families=["gaussian"], seeds=4, generations=4,
              policies=("replace", "retain:0.1"), progress=False)
    return out


def test_a_benchmark_writes_results_and_a_self_contained_report(bench_dir: Path) -> None:
    results = pl.read_parquet(bench_dir / "results.parquet")
    assert {"replace", "retain:0.1", "scrape", "filter:oracle"} <= set(results["policy"])
    md = (bench_dir / "report.md").read_text()
    assert "| gaussian | retain:0.1 |" in md and "Detection-quality sweep" in md
    assert "Against theory and the paper" in md and "after 5 fits" in md
    html = (bench_dir / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(images) == len(list((bench_dir / "report_files").glob("*.png"))) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html


def test_rerunning_the_benchmark_resumes(bench_dir: Path) -> None:
    before = pl.read_parquet(bench_dir / "results.parquet")
    result = run_bench(bench_dir, quick=True, families=["gaussian"], seeds=4, generations=4,
                       policies=("replace", "retain:0.1"), progress=False, report=False)
    assert result.results.equals(before)


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_html_renders_in_a_headless_browser_with_every_image(bench_dir: Path,
                                                                    tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    probe = tmp_path / "probe.html"
    check = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
             "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
             "document.body.setAttribute('data-images',ok+'/'+imgs.length);});</script>")
    probe.write_text((bench_dir / "report.html").read_text().replace("</body>",
                                                                      check + "</body>"))
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'data-images="(\d+)/(\d+)"', proc.stdout)
    assert match, proc.stderr[-2000:]
    loaded, total = int(match.group(1)), int(match.group(2))
    assert total >= 3 and loaded == total
