"""The mitigation benchmark: every family under every policy, plus a detection-quality sweep.

"How much does provenance filtering preserve the tails?" is one command away: ``run_bench``
runs each family's recursion under the same policies and seeds (one run folder per family, so a
rerun resumes), then :mod:`collapse_eval.report` turns the results into the report. The numeric
families (gaussian, gmm, vae) run :func:`~collapse_eval.loop.run_collapse`, the language model
:func:`~collapse_eval.text.loop.run_lm_collapse`. The sweep runs the noisy tagger at a fixed
false-positive rate and rising recall, to show how good detection must be before filtering stops
collapse.

Sizes are chosen so that collapse is visible: the Gaussian uses 20 samples per generation (its
log-variance falls by about 0.054 per generation), the GMM 500. The quick plan (the README's main
job, at most 10 minutes on 2 CPU cores in all) shrinks the two neural families: a narrower VAE
trained for a fixed 400 steps, and a one-layer GPT-2 on 4,000 short Wikipedia documents, each
for two generations and the policies that tell the story (replace, retain:0.1, scrape,
filter:oracle; for the LM also the watermark and ledger filters). The full plan runs every
family at its defaults.

Policies that do not apply to a family are skipped for it, not an error: the noisy tagger
(``filter:noisy(...)``) needs numbers it can flip at a known rate, so the LM skips it; the
ledger, watermark and detector need documents, so the numeric families skip them.
``bench.json`` lists what each family skipped.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from collapse_eval.loop import CollapseConfig, run_collapse
from collapse_eval.policies import NUMERIC_TAGGERS, TEXT_TAGGERS, parse_policy
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
#: always run: the two ends of the headline ratio
ANCHOR_POLICIES = ("scrape", "filter:oracle")
QUICK_NEURAL_POLICIES = ("replace", "retain:0.1", "scrape", "filter:oracle")
#: the small GPT-2 of the quick plan (as the LM loop's tests): about 10-15 s a generation on
#: one CPU thread with 4,000 documents of 48 tokens
QUICK_LM_RECIPE = {"vocab_size": 512, "n_positions": 64, "n_embd": 64, "n_layer": 1,
                   "n_head": 2, "block": 64, "batch_size": 16, "epochs": 3, "lr": 1e-2}
#: taggers each kind of family can run (None: no tagger, e.g. replace or scrape)
_TAGGERS = {"numeric": {None, *NUMERIC_TAGGERS},
            "lm": {None, "oracle", "discriminator", *TEXT_TAGGERS}}

# Per family: settings of the quick (README main job, <= 10 min on 2 cores in all) and full runs.
# "policies" is the family's default policy list (the bench's --policy replaces it; without it:
# DEFAULT_POLICIES, and the LM's own defaults for lm); "options" are family options (numeric) or
# LMCollapseConfig fields (lm). The full LM is LMCollapseConfig's defaults.
FAMILY_PLANS: dict[str, dict[str, dict[str, Any]]] = {
    "gaussian": {
        "quick": {"generations": 60, "samples": 20, "seeds": 32},
        "full": {"generations": 200, "samples": 20, "seeds": 128},
    },
    "gmm": {
        "quick": {"generations": 30, "samples": 500, "seeds": 8},
        "full": {"generations": 200, "samples": 1000, "seeds": 32},
    },
    "vae": {
        # width 16 and 400 Adam steps: about a fifth of the default VAE's cost, recall 0.63 at
        # generation 0 (0.74 at the defaults) and the same collapse under replace
        "quick": {"generations": 2, "samples": 4000, "seeds": 2,
                  "policies": QUICK_NEURAL_POLICIES,
                  "options": {"width": 16, "steps": 400, "lr": 3e-3}},
        "full": {"generations": 10, "samples": 4000, "seeds": 4},
    },
    "lm": {
        "quick": {"generations": 2, "seeds": 1,
                  "policies": (*QUICK_NEURAL_POLICIES, "filter:watermark", "filter:ledger"),
                  "options": {"max_articles": 20, "max_train_docs": 4000,
                              "recipe": QUICK_LM_RECIPE}},
        "full": {"generations": 10, "seeds": 1},
    },
}
FAMILIES = tuple(FAMILY_PLANS)


def sweep_policies(tprs: Sequence[float] = SWEEP_TPRS, fpr: float = SWEEP_FPR) -> tuple[str, ...]:
    """The noisy-tagger filters of the detection-quality sweep."""
    return tuple(f"filter:noisy(tpr={t:g},fpr={fpr:g})" for t in tprs)


def _applies(policy: str, family: str) -> bool:
    tagger = parse_policy(policy).tagger
    kind = None if tagger is None else tagger.kind
    return kind in _TAGGERS["lm" if family == "lm" else "numeric"]


def _default_policies(family: str) -> tuple[str, ...]:
    if family == "lm":
        from collapse_eval.text.loop import DEFAULT_LM_POLICIES

        return DEFAULT_LM_POLICIES
    return DEFAULT_POLICIES


@dataclass(frozen=True)
class BenchFamily:
    """One family's part of the benchmark: its run folder, configuration (a
    :class:`~collapse_eval.loop.CollapseConfig`, or for ``lm`` an
    :class:`~collapse_eval.text.loop.LMCollapseConfig`) and the policies it skipped."""

    family: str
    folder: str
    config: Any
    skipped: tuple[str, ...] = ()


def bench_plan(*, quick: bool = False, families: Sequence[str] = FAMILIES,
               policies: Sequence[str] | None = None, seeds: int | None = None,
               generations: int | None = None) -> list[BenchFamily]:
    """The runs of a benchmark.

    ``policies`` (default: each family's plan) apply to every family that can run them; the
    others are skipped for that family (see the module's docstring). ``scrape`` and
    ``filter:oracle`` (the two ends of the headline ratio) are always added, and sweep families
    add the sweep's filters. ``seeds`` and ``generations`` override every family's plan.
    """
    if not families:
        raise ConfigError("give at least one family")
    unknown = [f for f in families if f not in FAMILY_PLANS]
    if unknown:
        raise ConfigError(f"unknown families: {', '.join(unknown)}; choose from "
                          f"{', '.join(FAMILY_PLANS)}")
    plan = []
    for family in dict.fromkeys(families):
        settings = dict(FAMILY_PLANS[family]["quick" if quick else "full"])
        if seeds is not None:
            settings["seeds"] = seeds
        if generations is not None:
            settings["generations"] = generations
        asked = [parse_policy(p).name for p in (policies or settings.get("policies")
                                                  or _default_policies(family))]
        wanted = list(dict.fromkeys([*asked, *ANCHOR_POLICIES]))
        if family in SWEEP_FAMILIES:
            wanted += [p for p in sweep_policies() if p not in wanted]
        skipped = tuple(p for p in wanted if not _applies(p, family))
        wanted = [p for p in wanted if p not in skipped]
        seed_list = tuple(range(settings["seeds"]))
        options = dict(settings.get("options", {}))
        if family == "lm":
            from collapse_eval.text.loop import LMCollapseConfig

            config: Any = LMCollapseConfig(policies=tuple(wanted),
                                           generations=settings["generations"],
                                           seeds=seed_list, **options)
        else:
            config = CollapseConfig(family, tuple(wanted), generations=settings["generations"],
                                    samples=settings["samples"], seeds=seed_list,
                                    family_options=options)
        plan.append(BenchFamily(family, family, config, skipped))
    return plan


@dataclass
class BenchResult:
    out_dir: Path
    results: pl.DataFrame
    seconds: dict[str, float]


def _run_family(part: BenchFamily, folder: Path, device: str, progress: bool,
                threads: int | None) -> pl.DataFrame:
    """One family's run (resumed where it stopped); returns its long-format results."""
    from collapse_eval.text.model import torch_threads

    if part.family == "lm":
        from collapse_eval.text.loop import run_lm_collapse

        return run_lm_collapse(part.config, folder, device=device, resume=True,
                               progress=progress, threads=threads).results
    with torch_threads(threads):
        return run_collapse(part.config, folder, device=device, resume=True,
                            progress=progress).results


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the benchmark ran: interpreter, platform, cores and torch's threads."""
    return {"python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": threads or torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_bench(out_dir: str | os.PathLike, *, quick: bool = False,
              families: Sequence[str] = FAMILIES, policies: Sequence[str] | None = None,
              seeds: int | None = None, generations: int | None = None, device: str = "auto",
              threads: int | None = 1, progress: bool = True, report: bool = True,
              plan: Sequence[BenchFamily] | None = None) -> BenchResult:
    """Run (or resume) the benchmark into ``out_dir`` and write the combined results and report.

    Each family runs in ``out_dir/<family>`` with resume on, so rerunning after an interruption
    only computes what is missing. A family whose settings changed since the last run is an
    error (use a new folder). ``policies`` defaults to each family's plan (see
    :func:`bench_plan`); ``plan`` replaces that plan altogether (e.g. one with smaller
    settings, for tests). On a CPU, torch runs on ``threads`` threads (None: torch's default):
    the models are small, and where the cores are shared more threads wait on each other (the
    VAE's tests measured up to 30x slower steps with two threads than with one).
    """
    from provenance.models import resolve_device

    out = Path(out_dir)
    threads = threads if resolve_device(device) == "cpu" else None
    if plan is None:
        plan = bench_plan(quick=quick, families=families, policies=policies, seeds=seeds,
                          generations=generations)
    out.mkdir(parents=True, exist_ok=True)
    frames, seconds = [], {}
    for number, part in enumerate(plan, 1):
        if progress:
            config = part.config
            print(f"bench {number}/{len(plan)}: {part.family}, {len(config.policies)} policies x "
                  f"{len(config.seeds)} seeds x {config.generations + 1} generations"
                  + (f" (skipping {', '.join(part.skipped)})" if part.skipped else ""),
                  file=sys.stderr, flush=True)
        started = time.perf_counter()
        frames.append(_run_family(part, out / part.folder, device, progress, threads))
        seconds[part.family] = round(time.perf_counter() - started, 2)
    results = pl.concat(frames)
    with atomic_path(out / "results.parquet") as tmp:
        results.write_parquet(tmp)
    bench_info = {"quick": quick, "families": [p.family for p in plan],
                  "folders": {p.family: p.folder for p in plan},
                  "skipped_policies": {p.family: list(p.skipped) for p in plan if p.skipped},
                  "seconds_this_invocation": seconds, "sweep_fpr": SWEEP_FPR,
                  "sweep_tprs": list(SWEEP_TPRS), "sweep_families": list(SWEEP_FAMILIES),
                  "environment": environment(threads)}
    with atomic_path(out / "bench.json") as tmp:
        tmp.write_text(json.dumps(bench_info, indent=2) + "\n", encoding="utf-8")
    if report:
        from collapse_eval.report import write_report

        write_report(out)
    return BenchResult(out, results, seconds)
