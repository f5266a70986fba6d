"""``collapse run`` killed with SIGKILL, resumed, killed again: the results of an unbroken run.

A small gaussian run (two policies, two seeds) is killed once a seeded number of generation
checkpoints exist, its ``--resume`` is killed the same way, and a last ``--resume`` must end
with ``results.parquet`` equal, value for value, to an uninterrupted run's (made alongside, in
the background). After each kill every checkpoint on disk is whole (a resume loads them) and
``results.parquet`` is absent or complete; after the last resume no work file is left in the
run folder.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from safetensors import safe_open

if TYPE_CHECKING:
    from conftest import Checks, KillPoint, Tailguard

GENERATIONS = 20
CHECKPOINTS = 2 * (GENERATIONS + 1)  # one file per policy and generation
ORDER = ["policy", "seed", "generation", "metric"]


def run_args(out: Path, *, resume: bool = False) -> tuple[str | Path, ...]:
    return ("collapse", "run", "gaussian", "--policy", "replace", "--policy", "retain:0.1",
            "--seeds", "2", "--generations", str(GENERATIONS), "--no-plots", "-o", out, "-q",
            *(("--resume",) if resume else ()))


def results(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "results.parquet").sort(ORDER)


def checkpoints_whole(out: Path) -> None:
    """Every checkpoint a resume would load opens (a torn write would not)."""
    for file in (out / "checkpoints").rglob("*.safetensors") if out.is_dir() else ():
        if not file.name.startswith("."):
            with safe_open(file, framework="numpy") as opened:
                assert list(opened.keys()), f"{file} holds no tensors"


def kill_points(tailguard: Tailguard, out: Path, rng: random.Random, extra: int
                ) -> list[Callable[[], KillPoint]]:
    """A seeded checkpoint count in the first run and in its resume; with ``extra`` seeded
    times after a resume's first new checkpoint. Each is made just before its run starts."""
    return [
        lambda: tailguard.new_files(out, rng.randint(5, CHECKPOINTS // 2), "*.safetensors"),
        lambda: tailguard.new_files(out, rng.randint(3, CHECKPOINTS // 4), "*.safetensors"),
        *[lambda: tailguard.later(tailguard.new_files(out, 1, "*.safetensors"),
                                  rng.uniform(0.0, 0.3))] * extra,
    ]


def kill_and_check(tailguard: Tailguard, check: Checks, tmp_path: Path, rng: random.Random,
                   extra: int) -> None:
    reference = tmp_path / "reference"
    uninterrupted = tailguard.start(*run_args(reference))
    out = tmp_path / "run"
    landed = 0
    for number, point in enumerate(kill_points(tailguard, out, rng, extra)):
        # A gaussian run writes its checkpoints in well under a second: on a loaded machine the
        # watcher can be descheduled until the first run has ended. That run must then be
        # complete and right; it is started over (at most twice) so that a kill still lands.
        for attempt in range(3 if number == 0 else 1):
            hit = tailguard.kill_when(run_args(out, resume=number > 0), point())
            landed += hit
            check.counts.outputs_checked += 1
            checkpoints_whole(out)
            if (out / "results.parquet").exists():  # written last: complete, or not there
                uninterrupted.finish()
                assert_frame_equal(results(out), results(reference))
            if hit or attempt == 2 or number > 0:
                break
            shutil.rmtree(out)
    assert landed, "every run ended before its kill point"
    tailguard.ok(*run_args(out, resume=True))
    uninterrupted.finish()
    check.counts.outputs_checked += 1
    assert_frame_equal(results(out), results(reference), check_exact=True)
    check.no_leftovers(out, also=tailguard.systemp)


def test_killed_collapse_run_resumes_to_the_same_results(
        tailguard: Tailguard, check: Checks, tmp_path: Path, seeded: random.Random) -> None:
    kill_and_check(tailguard, check, tmp_path, seeded, extra=0)


@pytest.mark.slow
def test_killed_collapse_run_at_many_points(tailguard: Tailguard, check: Checks,
                                            tmp_path: Path) -> None:
    kill_and_check(tailguard, check, tmp_path, random.Random(7), extra=8)
