"""The mitigation benchmark: every family under every policy, plus a detection-quality sweep.

"How much does provenance filtering preserve the tails?" is one command away: ``run_bench``
runs each family's recursion under the same policies and seeds (one run folder per family, so a
rerun resumes), then :mod:`collapse_eval.report` turns the results into the report. Every
family runs through :func:`~collapse_eval.engine.run_collapse` (:mod:`collapse_eval.families`
says what each family is). The sweep runs the noisy tagger at a fixed false-positive rate and
rising recall, to show how good detection must be before filtering stops collapse.

Sizes are chosen so that collapse is visible: the Gaussian uses 20 samples per generation (its
log-variance falls by about 0.054 per generation), the GMM 500. The quick plan (the README's main
job, at most 10 minutes on 2 CPU cores in all) shrinks the two neural families: a narrower VAE
trained for a fixed 400 steps, and a one-layer GPT-2 on 4,000 short Wikipedia documents, each
for two generations, two seeds and the policies that tell the story (replace, retain:0.1,
scrape, filter:oracle; for the LM also the watermark filter). The full plan runs every family
at its defaults; the LM's ledger filter is left to it, because in the LM loop the ledger holds
every document a model published and matches each exactly, so ``filter:ledger`` keeps the very
mixture ``filter:oracle`` keeps and trains the same models again: measured on the quick plan,
equal to the last digit in every metric of both seeds, and 4 of the LM's 26 generations. With
it the main job took 589 s on a 2-core VM (626 s in CI), without it and with faster text
metrics 503 s (553 s in CI).

The families are independent, and with ``jobs > 1`` they run at once, each in a worker
process on one torch thread (the costliest, the LM, also spreads its chains over ``jobs``
processes).
Each family writes only its own run folder; the combined results are read from those folders
once every family has ended, so they do not depend on ``jobs``. The quick plan runs on every
usable core by default, which pays for the LM's second seed: one after another, the quick
families took about 6 minutes of one core with one LM seed; two LM seeds add about 3 minutes
of CPU, spread over both cores.

Policies that do not apply to a family are skipped for it, not an error: the noisy tagger
(``filter:noisy(...)``) needs numbers it can flip at a known rate, so the LM skips it; the
ledger, watermark and detector need documents, so the numeric families skip them.
``bench.json`` lists what each family skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm.auto import tqdm

from collapse_eval.engine import run_collapse, steps_done, total_steps
from collapse_eval.family_registry import FAMILIES as REGISTERED
from collapse_eval.family_registry import family_spec
from collapse_eval.policies import parse_policy
from collapse_eval.process_pool import exit_on_sigterm, refuse_while_importing_main, run_in_pool
from collapse_eval.run_lock import claim_run_dir
from provenance.atomic import atomic_path
from provenance.errors import (
    BenchFamilyError,
    ConfigError,
    TailguardError,
    one_line_warnings,
    one_line_warnings_active,
)

#: the benchmark's policies for the tensor families (the LM runs its family's default policies)
BENCH_POLICIES = (
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
# Per family: settings of the quick (README main job, <= 10 min on 2 cores in all) and full runs.
# "policies" is the family's policy list (the bench's --policy replaces it; without it:
# BENCH_POLICIES for the tensor families, the family's own defaults otherwise); "settings" are
# the family's settings (as ``tailguard collapse run`` takes them). The full LM is its defaults.
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
                  "settings": {"family_options": {"width": 16, "steps": 400, "lr": 3e-3}}},
        "full": {"generations": 10, "samples": 4000, "seeds": 4},
    },
    "lm": {
        # two seeds: the headline's LM rows get intervals (one seed gives point estimates);
        # no filter:ledger: it is filter:oracle's run again here (see the module's docstring)
        "quick": {"generations": 2, "seeds": 2,
                  "policies": (*QUICK_NEURAL_POLICIES, "filter:watermark"),
                  "settings": {"max_articles": 20, "max_train_docs": 4000,
                               "recipe": QUICK_LM_RECIPE}},
        "full": {"generations": 10, "seeds": 1},
    },
}
FAMILIES = tuple(f for f in FAMILY_PLANS if f in REGISTERED)
#: The families, costliest first (the quick plan on 2 cores, one after another: lm 209 s with
#: one seed, vae 113 s, gmm 27 s, gaussian 11 s): with ``jobs > 1`` the pool hands them out in
#: this order, so that it does not end on one long family while the other workers idle.
COSTLIEST_FIRST = ("lm", "vae", "gmm", "gaussian")


def sweep_policies(tprs: Sequence[float] = SWEEP_TPRS, fpr: float = SWEEP_FPR) -> tuple[str, ...]:
    """The noisy-tagger filters of the detection-quality sweep."""
    return tuple(f"filter:noisy(tpr={t:g},fpr={fpr:g})" for t in tprs)


def _applies(policy: str, family: str) -> bool:
    tagger = parse_policy(policy).tagger
    return (None if tagger is None else tagger.kind) in family_spec(family).taggers


def _default_policies(family: str) -> tuple[str, ...]:
    spec = family_spec(family)
    return BENCH_POLICIES if spec.family_path else spec.defaults["policies"]


@dataclass(frozen=True)
class BenchFamily:
    """One family's part of the benchmark: its run folder, configuration (the family's config,
    see :mod:`collapse_eval.families`) and the policies it skipped."""

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
        config = family_spec(family).make_config({
            **settings.get("settings", {}), "policies": tuple(wanted),
            "generations": settings["generations"], "seeds": tuple(range(settings["seeds"])),
            **({"samples": settings["samples"]} if "samples" in settings else {})})
        plan.append(BenchFamily(family, family, config, skipped))
    return plan


@dataclass
class BenchResult:
    out_dir: Path
    results: pl.DataFrame
    #: each family's wall seconds in this invocation
    seconds: dict[str, float]
    #: families run at once (see :func:`run_bench`)
    jobs: int = 1
    #: the whole invocation's wall seconds
    wall_seconds: float = 0.0
    #: the report written (None with ``report=False``)
    report: Any = None

    def summary(self) -> tuple[dict[str, Any], list[str]]:
        """The benchmark as a command prints it: a JSON-able summary and its lines (each
        family's seconds, the headline table, where the report is)."""
        families = list(self.seconds)
        data = {"out_dir": str(self.out_dir), "families": families, "seconds": self.seconds,
                "jobs": self.jobs, "wall_seconds": self.wall_seconds,
                "rows": self.results.height}
        lines = [f"benchmark: {', '.join(families)} ({self.results.height:,} result rows); "
                 + ", ".join(f"{f} {s:.0f} s" for f, s in self.seconds.items())
                 + f"; {self.wall_seconds:.0f} s in all with --jobs {self.jobs}"]
        if self.report is not None:
            data.update(report_md=str(self.report.markdown), report_html=str(self.report.html))
            lines += self.report.lines()
        return data, lines


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the system has one (a
    container or ``taskset`` may allow fewer than the machine has), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _run_family(part: BenchFamily, folder: Path, device: str, progress: bool,
                threads: int | None, jobs: int = 1, plots: bool = True) -> None:
    """One family's run (resumed where it stopped) into ``folder``, its chains ``jobs`` at
    a time."""
    run_collapse(part.config, folder, device=device, resume=True, progress=progress,
                 threads=threads, jobs=jobs, plots=plots)


def _plan_line(number: int, part: BenchFamily, parts: int) -> str:
    config = part.config
    return (f"bench {number}/{parts}: {part.family}, {len(config.policies)} policies x "
            f"{len(config.seeds)} seeds x {config.generations + 1} generations"
            + (f" (skipping {', '.join(part.skipped)})" if part.skipped else ""))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _family_error(family: str, error: BaseException, *, worker: bool) -> BenchFamilyError:
    """The one line that names a failed family: a tailguard error's own (first) line, or for
    an unexpected error its type and message."""
    kept = "finished generations are kept: run the same command again to resume"
    if isinstance(error, BrokenProcessPool):
        message = (f"bench family {family}: its worker process died (killed, or out of "
                   f"memory? lower --jobs); {kept}")
    elif isinstance(error, TailguardError):
        message = f"bench family {family}: {_first_line(error)}"
    else:
        where = " in its worker process" if worker else ""
        message = (f"bench family {family} failed{where}: {type(error).__name__}: "
                   f"{_first_line(error)}; {kept}")
    return BenchFamilyError(message, family=family)


def _run_here(plan: Sequence[BenchFamily], out: Path, device: str, threads: int | None,
              jobs: int, progress: bool, plots: bool) -> dict[str, float]:
    """The families one after another in this process (each with its own progress bar)."""
    seconds = {}
    for number, part in enumerate(plan, 1):
        if progress:
            print(_plan_line(number, part, len(plan)), file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            _run_family(part, out / part.folder, device, progress, threads, jobs, plots)
        except Exception as error:
            raise _family_error(part.family, error, worker=False) from error
        seconds[part.family] = round(time.perf_counter() - started, 2)
    return seconds


def _family_worker(work: tuple[BenchFamily, dict[str, Any]]) -> float:
    """In a worker process: run one family into its folder; returns its wall seconds."""
    part, task = work
    shown = one_line_warnings() if task["one_line_warnings"] else contextlib.nullcontext()
    started = time.perf_counter()
    with shown:
        _run_family(part, Path(task["out"]) / part.folder, task["device"], task["progress"],
                    task["threads"], task["jobs"], task["plots"])
    return round(time.perf_counter() - started, 2)


def _run_in_workers(plan: Sequence[BenchFamily], out: Path, device: str, threads: int,
                    jobs: int, progress: bool, plots: bool) -> dict[str, float]:
    """The families ``jobs`` at a time in worker processes, the costliest first; one bar
    for all of them, moved by what their folders hold (on no terminal: a line as each ends,
    and the LM's line per generation)."""
    rank = {family: k for k, family in enumerate(COSTLIEST_FIRST)}
    order = sorted(range(len(plan)), key=lambda i: rank.get(plan[i].family, 0))
    workers = min(jobs, len(plan))
    terminal = progress and sys.stderr.isatty()
    if progress:
        for number, part in enumerate(plan, 1):
            print(_plan_line(number, part, len(plan)), file=sys.stderr, flush=True)
    task = {"out": str(out), "device": device, "threads": threads, "jobs": jobs,
            "plots": plots, "progress": progress and not terminal,
            "one_line_warnings": one_line_warnings_active()}
    seconds: dict[str, float] = {}
    shown = [0] * len(plan)
    with tqdm(total=sum(total_steps(part.config) for part in plan), unit="gen", dynamic_ncols=True,
              desc=f"bench {len(plan)} families, {workers} at once",
              disable=None if terminal else True) as bar:

        def poll() -> None:
            for i, part in enumerate(plan):
                now = steps_done(out / part.folder, part.config)
                bar.update(max(0, now - shown[i]))
                shown[i] = max(shown[i], now)

        def done(k: int, wall: float) -> None:
            family = plan[order[k]].family
            seconds[family] = wall
            if progress:
                tqdm.write(f"bench: {family} done in {wall:.0f} s", file=sys.stderr)

        poll()
        # The costliest family is the run's long pole: it also spreads its chains over
        # ``jobs`` processes, to use the cores the others leave when they end. The others run
        # their chains in their own worker (more processes would only share the same cores).
        tasks = [(plan[i], {**task, "jobs": jobs if k == 0 else 1}) for k, i in enumerate(order)]
        run_in_pool(_family_worker, tasks, workers, poll=poll,
                    done=done, initializer=exit_on_sigterm,
                    failed=lambda k, error: _family_error(plan[order[k]].family, error,
                                                          worker=True))
    return {part.family: seconds[part.family] for part in plan}


def environment(threads: int | None = None, jobs: int = 1) -> dict[str, Any]:
    """Where the benchmark ran: interpreter, platform, cores, torch's threads (per process)
    and the families run at once."""
    return {"python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "usable_cpus": usable_cores(), "torch": torch.__version__,
            "torch_threads": threads or torch.get_num_threads(), "jobs": jobs,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_bench(out_dir: str | os.PathLike, *, quick: bool = False,
              families: Sequence[str] = FAMILIES, policies: Sequence[str] | None = None,
              seeds: int | None = None, generations: int | None = None, device: str = "auto",
              threads: int | None = 1, jobs: int | None = None, progress: bool = True,
              report: bool = True, plots: bool = True,
              plan: Sequence[BenchFamily] | None = None) -> BenchResult:
    """Run (or resume) the benchmark into ``out_dir`` and write the combined results and report.

    Each family runs in ``out_dir/<family>`` with resume on, so rerunning after an interruption
    only computes what is missing. A family whose settings changed since the last run is an
    error (use a new folder). ``policies`` defaults to each family's plan (see
    :func:`bench_plan`); ``plan`` replaces that plan altogether (e.g. one with smaller
    settings, for tests). On a CPU, torch runs on ``threads`` threads (None: torch's default):
    the models are small, and where the cores are shared more threads wait on each other (the
    VAE's tests measured up to 30x slower steps with two threads than with one).

    ``jobs`` families run at once, each in a worker process of its own with ``threads``
    torch threads (1 when None), the costliest first (:data:`COSTLIEST_FIRST`); that one, the
    run's long pole, also runs its chains ``jobs`` at a time (see
    :func:`~collapse_eval.engine.run_collapse`). Default (None): for ``quick``, the
    usable cores (:func:`usable_cores`), at most one per family; else 1. A family writes
    only its own folder, and this process reads each folder's ``results.parquet`` once all
    have ended, in the plan's order: the results are those of ``jobs=1`` (for the same
    ``threads``). A family that fails stops the others and raises
    :class:`~provenance.errors.BenchFamilyError`, one line naming it; the combined results
    are written only when every family has ended, and what the families finished stays for
    the rerun. Workers import the caller's main module, so a script must call this
    under ``if __name__ == "__main__":`` (see :mod:`collapse_eval.process_pool`).

    ``plots=False`` skips each family's own PNGs (``<family>/plots``), about half of a small
    run's time; the results do not change, and the report still draws its figures from them
    (it only lacks the run plots it would have copied, such as the LM's perplexity histograms).
    """
    from provenance.devices import resolve_device

    wall = time.perf_counter()
    out = Path(out_dir)
    threads = threads if resolve_device(device) == "cpu" else None
    if plan is None:
        plan = bench_plan(quick=quick, families=families, policies=policies, seeds=seeds,
                          generations=generations)
    if jobs is None:
        jobs = min(usable_cores(), len(plan)) if quick else 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer or None, got {jobs!r}")
    if jobs > 1:  # before it touches the folder
        refuse_while_importing_main("run_bench(jobs > 1)")
    parallel = min(jobs, len(plan)) > 1
    threads = (threads or 1) if parallel else threads  # workers: 1 torch thread unless told
    out.mkdir(parents=True, exist_ok=True)
    with claim_run_dir(out, jobs=jobs, threads=threads, device=device):
        if parallel:
            seconds = _run_in_workers(plan, out, device, threads, jobs, progress, plots)
        else:
            seconds = _run_here(plan, out, device, threads, jobs, progress, plots)
        # each family's results as it wrote them, in the plan's order, however they were run
        results = pl.concat([pl.read_parquet(out / part.folder / "results.parquet")
                             for part in plan])
        with atomic_path(out / "results.parquet") as tmp:
            results.write_parquet(tmp)
        wall_seconds = round(time.perf_counter() - wall, 2)
        bench_info = {"quick": quick, "families": [p.family for p in plan],
                      "folders": {p.family: p.folder for p in plan},
                      "skipped_policies": {p.family: list(p.skipped) for p in plan if p.skipped},
                      "seconds_this_invocation": seconds, "wall_seconds": wall_seconds,
                      "sweep_fpr": SWEEP_FPR, "sweep_tprs": list(SWEEP_TPRS),
                      "sweep_families": list(SWEEP_FAMILIES),
                      "environment": environment(threads, jobs)}
        with atomic_path(out / "bench.json") as tmp:
            tmp.write_text(json.dumps(bench_info, indent=2) + "\n", encoding="utf-8")
        written = None
        if report:
            from collapse_eval.report import write_report

            written = write_report(out)
    return BenchResult(out, results, seconds, jobs, wall_seconds, written)
