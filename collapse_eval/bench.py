"""The mitigation benchmark: every family under every policy, plus a detection-quality sweep.

"How much does provenance filtering preserve the tails?" is one command away: ``run_bench``
runs each family's recursion under the same policies and seeds (one :func:`run_collapse` folder
per family, so a rerun resumes), then :mod:`collapse_eval.report` turns the results into the
report. The sweep runs the noisy tagger at a fixed false-positive rate and rising recall, to show
how good detection must be before filtering stops collapse.

Sizes are chosen so that collapse is visible: the Gaussian uses 20 samples per generation (its
log-variance falls by about 0.054 per generation), the GMM 500.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from collapse_eval.loop import CollapseConfig, run_collapse
from provenance.atomic import atomic_path
from provenance.errors import ConfigError

DEFAULT_POLICIES = (
    "replace", "retain:0.1", "accumulate", "scrape", "filter:oracle",
    "filter:noisy(tpr=0.9,fpr=0.05)", "filter:discriminator", "reweight",
)
SWEEP_FPR = 0.05
SWEEP_TPRS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
#: the families the sweep runs on (cheap enough for many policies)
SWEEP_FAMILIES = ("gaussian",)

# Per family: settings of the quick (README main job, <= 10 min on 2 cores in all) and full runs.
FAMILY_PLANS: dict[str, dict[str, dict[str, Any]]] = {
    "gaussian": {
        "quick": {"generations": 60, "samples": 20, "seeds": 32},
        "full": {"generations": 200, "samples": 20, "seeds": 128},
    },
    "gmm": {
        "quick": {"generations": 30, "samples": 500, "seeds": 8},
        "full": {"generations": 200, "samples": 1000, "seeds": 32},
    },
}
FAMILIES = tuple(FAMILY_PLANS)


def sweep_policies(tprs: Sequence[float] = SWEEP_TPRS, fpr: float = SWEEP_FPR) -> tuple[str, ...]:
    """The noisy-tagger filters of the detection-quality sweep."""
    return tuple(f"filter:noisy(tpr={t:g},fpr={fpr:g})" for t in tprs)


@dataclass(frozen=True)
class BenchFamily:
    """One family's part of the benchmark: its run folder and configuration."""

    family: str
    folder: str
    config: CollapseConfig


def bench_plan(*, quick: bool = False, families: Sequence[str] = FAMILIES,
               policies: Sequence[str] = DEFAULT_POLICIES, seeds: int | None = None,
               generations: int | None = None) -> list[BenchFamily]:
    """The runs of a benchmark; policies always include ``scrape`` and ``filter:oracle`` (the
    two ends of the headline ratio), and sweep families add the sweep's filters."""
    unknown = [f for f in families if f not in FAMILY_PLANS]
    if unknown:
        raise ConfigError(f"unknown families: {', '.join(unknown)}; choose from "
                          f"{', '.join(FAMILY_PLANS)}")
    if not families:
        raise ConfigError("give at least one family")
    plan = []
    for family in families:
        settings = dict(FAMILY_PLANS[family]["quick" if quick else "full"])
        if seeds is not None:
            settings["seeds"] = seeds
        if generations is not None:
            settings["generations"] = generations
        wanted = list(dict.fromkeys([*policies, "scrape", "filter:oracle"]))
        if family in SWEEP_FAMILIES:
            wanted += [p for p in sweep_policies() if p not in wanted]
        config = CollapseConfig(family, tuple(wanted), generations=settings["generations"],
                                samples=settings["samples"],
                                seeds=tuple(range(settings["seeds"])))
        plan.append(BenchFamily(family, family, config))
    return plan


@dataclass
class BenchResult:
    out_dir: Path
    results: pl.DataFrame
    seconds: dict[str, float]


def run_bench(out_dir: str | os.PathLike, *, quick: bool = False,
              families: Sequence[str] = FAMILIES, policies: Sequence[str] = DEFAULT_POLICIES,
              seeds: int | None = None, generations: int | None = None, device: str = "auto",
              progress: bool = True, report: bool = True) -> BenchResult:
    """Run (or resume) the benchmark into ``out_dir`` and write the combined results and report.

    Each family runs in ``out_dir/<family>`` with resume on, so rerunning after an interruption
    only computes what is missing. A family whose settings changed since the last run is an
    error (use a new folder).
    """
    out = Path(out_dir)
    plan = bench_plan(quick=quick, families=families, policies=policies, seeds=seeds,
                      generations=generations)
    out.mkdir(parents=True, exist_ok=True)
    frames, seconds = [], {}
    for part in plan:
        started = time.perf_counter()
        run = run_collapse(part.config, out / part.folder, device=device, resume=True,
                           progress=progress)
        seconds[part.family] = round(time.perf_counter() - started, 2)
        frames.append(run.results)
    results = pl.concat(frames)
    with atomic_path(out / "results.parquet") as tmp:
        results.write_parquet(tmp)
    bench_info = {"quick": quick, "families": [p.family for p in plan],
                  "folders": {p.family: p.folder for p in plan},
                  "seconds_this_invocation": seconds, "sweep_fpr": SWEEP_FPR,
                  "sweep_tprs": list(SWEEP_TPRS), "sweep_families": list(SWEEP_FAMILIES)}
    with atomic_path(out / "bench.json") as tmp:
        tmp.write_text(json.dumps(bench_info, indent=2) + "\n", encoding="utf-8")
    if report:
        from collapse_eval.report import write_report

        write_report(out)
    return BenchResult(out, results, seconds)
