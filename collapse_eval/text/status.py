"""What ``tailguard collapse status`` says about an LM run, as a library call.

A monitoring job or a notebook gets the same report as the command line: :func:`lm_status`
returns the lines a person reads and the summary ``--json`` prints (progress per chain, the
process running it and each chain's worker, the time left, the disk's room and, with
``export_dir``, what was exported for ``tailguard report``). It never writes into the run folder.
"""

from __future__ import annotations

import dataclasses
import os

from collapse_eval.run_lock import run_holder
from collapse_eval.status import RunStatus, running_line
from collapse_eval.text.progress import (
    LMRunProgress,
    disk_room,
    export_lm_progress,
    lm_run_progress,
)

__all__ = ["lm_status"]

#: The metrics each chain's row shows (the newest generation's).
SHOWN = ("test_perplexity", "rare_ngram_recall", "distinct_2", "synthetic_share")


def lm_status(run_dir: str | os.PathLike, export_dir: str | os.PathLike | None = None
              ) -> RunStatus:
    """Read the LM run in ``run_dir`` (safe while it runs) and, with ``export_dir``, export what
    it has finished (see :func:`collapse_eval.text.progress.export_lm_progress`)."""
    progress = lm_run_progress(run_dir)
    exported = [] if export_dir is None else export_lm_progress(run_dir, export_dir)
    lines = [f"{run_dir}: {progress.done} of {progress.total} policy-generations done"
             + (" (finished)" if progress.finished else "")]
    lines += _chain_lines(progress)
    holder = run_holder(run_dir)
    jobs = int(holder.options.get("jobs", 1)) if holder is not None and holder.alive else None
    wall = None if jobs is None else progress.wall_seconds_left(jobs)
    free, needed = disk_room(run_dir)
    if not progress.finished:
        lines.append(running_line(run_dir, holder, "lm"))
        lines += _time_left_lines(progress.seconds_left(), wall, jobs)
        lines.append(f"disk: {free / 1024**3:.1f} GiB free, a generation needs "
                     f"{needed / 1024**3:.1f} GiB to start"
                     + ("; too little: the run stops before its next generation"
                        if free < needed else ""))
    summary = {**progress.as_dict(), "disk": {"free_bytes": free, "generation_needs": needed},
               "running": None if holder is None else dataclasses.asdict(holder)}
    if jobs is not None:
        summary["wall_seconds_left"] = wall
    if export_dir is not None:
        through = progress.finished_through()
        summary["exported"] = {"folder": str(export_dir), "through": through,
                               "files": [str(p) for p in exported]}
        plots = sum(1 for path in exported if path.suffix == ".png")
        lines.append(f"exported to {export_dir}: results.parquet and {plots} plots, through "
                     "generation " + ", ".join(f"{g} ({p})" for p, g in through.items())
                     + f"; `tailguard report {export_dir}` compares them")
    return RunStatus(lines, summary)


def _chain_lines(progress: LMRunProgress) -> list[str]:
    """Generation 0 of each seed, then a row per chain: done, minutes per generation, the
    newest metrics, the epochs the generation in training has saved and its worker."""
    lines = []
    for seed, first in progress.first.items():
        state = (f"done in {first['seconds'] / 60:.1f} min, test perplexity "
                 f"{first['metrics']['test_perplexity']:.1f}" if first["done"] else "not done")
        if first["worker_pid"] is not None:
            state += f", in training by pid {first['worker_pid']}"
        lines.append(f"seed {seed} generation 0: {state}")
    width = max(len(c.policy) for c in progress.chains)
    lines.append(f"  {'seed':>4} {'policy':<{width}} {'done':>7} {'min/gen':>8}"
                 + "".join(f"{m:>19}" for m in SHOWN) + "  training")
    for chain in progress.chains:
        minutes = (f"{sum(chain.seconds) / len(chain.seconds) / 60:.1f}" if chain.seconds
                   else "-")
        cells = (chain.latest.get(m) for m in SHOWN)
        training = ("" if chain.training is None else
                    "  gen {}: {}/{} epochs saved".format(*chain.training))
        if chain.worker_pid is not None:
            training += f"{',' if training else ' '} pid {chain.worker_pid}"
        lines.append(f"  {chain.seed:>4} {chain.policy:<{width}} "
                     f"{f'{chain.done}/{chain.total}':>7} {minutes:>8}"
                     + "".join(f"{'-' if v is None else format(v, '.4g'):>19}" for v in cells)
                     + training)
    return lines


def _time_left_lines(left: float | None, wall: float | None, jobs: int | None) -> list[str]:
    if not left:
        return []
    if wall is not None and jobs is not None:
        return [f"left: about {wall / 3600:.1f} h with its {jobs} chain"
                f"{'s' if jobs > 1 else ''} at a time ({left / 3600:.1f} h in one "
                "process) at the means so far; a growing training set at its growth"]
    return [f"left: about {left / 3600:.1f} h in one process at the means so far "
            "(divide by --jobs; a growing training set at its growth so far)"]
