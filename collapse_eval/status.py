"""What ``tailguard collapse status`` says about a run of any family, as a library call.

A VAE on full MNIST or a GMM with hundreds of generations runs for hours like the LM does, so
every run folder answers the same questions: how far each chain has got, whether a process
still works on it (and how to go on if none does). :func:`run_status` reads the family from
the folder's ``config.json`` and asks the family's world for its report; a world that has no
report of its own gets the engine's, counted from the folder as the progress bar counts it
(the LM's adds epochs, metrics, time left, disk room and ``--export``). It never writes into
the run folder.

Examples
--------
>>> import tempfile
>>> from collapse_eval.engine import run_collapse
>>> from collapse_eval.loop import CollapseConfig
>>> folder = tempfile.mkdtemp() + "/run"
>>> config = CollapseConfig("gaussian", ("replace",), generations=2, samples=20, seeds=(0,))
>>> _ = run_collapse(config, folder, device="cpu", progress=False, plots=False)
>>> run_status(folder).lines[0].endswith("3 of 3 policy-generations done (finished)")
True
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapse_eval.run_lock import RunHolder, run_holder
from provenance.errors import ConfigError, InputError

__all__ = ["RunStatus", "chain_status", "run_status", "running_line"]


@dataclass(frozen=True)
class RunStatus:
    """The report on a run: ``lines`` to print, ``summary`` for ``--json``."""

    lines: list[str]
    summary: dict[str, Any]


def run_status(run_dir: str | os.PathLike, export_dir: str | os.PathLike | None = None
               ) -> RunStatus:
    """Read the run in ``run_dir`` (safe while it runs): its family's report, or the engine's.

    ``export_dir``: also export what the run has finished, for families that can (the LM).
    """
    from collapse_eval.family_registry import family_spec
    from collapse_eval.run_config import collapse_config

    folder = Path(run_dir)
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: not a collapse run folder (no config.json; "
                         "`tailguard collapse run ... -o FOLDER` writes one)")
    config = collapse_config(None, {}, folder / "config.json")
    own = family_spec(config.family).world_class.status(folder, config, export_dir)
    return own if own is not None else chain_status(folder, config, export_dir)


def running_line(run_dir: str | os.PathLike, holder: RunHolder | None, family: str) -> str:
    """Whether a process still works on an unfinished run, and how to go on if none does."""
    again = f"continue with `tailguard collapse run {family} -o {run_dir} --resume` and its options"
    if holder is None:
        return f"no process is recorded as running it: {again}"
    if holder.alive is None:
        return f"started by {holder.describe()}: cannot tell from this host whether it runs"
    if not holder.alive:
        return f"not running: {holder.describe()} stopped before the end; {again}"
    return f"running: {holder.describe()}, --jobs {holder.options.get('jobs', 1)}"


def chain_status(run_dir: Path, config: Any, export_dir: str | os.PathLike | None = None
                 ) -> RunStatus:
    """The engine's report: each chain's finished generations, read from the folder through
    the family's world (as ``run_collapse``'s progress bar counts them), and the run's holder."""
    from collapse_eval.engine import progress_counts, world_for

    if export_dir is not None:
        raise ConfigError(f"--export: a {config.family} run writes its results when it ends; "
                          "only the LM exports a run still going")
    world = world_for(config, run_dir, "cpu", write=False)
    try:
        shared, chains = progress_counts(world)
    finally:
        world.close()
    done = shared["done"] + sum(c["done"] for c in chains)
    total = shared["total"] + sum(c["total"] for c in chains)
    finished = done == total
    lines = [f"{run_dir}: {done} of {total} policy-generations done"
             + (" (finished)" if finished else "")]
    width = max(len(c["chain"]) for c in chains) if chains else 0
    lines += [f"  {c['chain']:<{width}}  {c['done']}/{c['total']}" for c in chains]
    holder = run_holder(run_dir)
    if not finished:
        lines.append(running_line(run_dir, holder, config.family))
    summary = {"family": config.family, "done": done, "total": total, "finished": finished,
               "shared": shared, "chains": chains,
               "running": None if holder is None else dataclasses.asdict(holder)}
    return RunStatus(lines, summary)
