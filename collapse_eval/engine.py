"""The one recursion engine: a run folder, its config, lock, resume, progress, workers and results.

Every family -- the tensor families (gaussian, gmm, vae) and the language model -- runs through
:func:`run_collapse`. A family brings a *world* (:class:`World`): how its chains are named,
how far one has got (read from the run folder), how to run a chain's remaining generations, and
how to read the results back. The engine owns the rest, the same way for all of them:

* the run folder (refused when it is, holds or lies inside an input), ``config.json`` (a resume
  must match it; it may only raise ``generations``) and the lock that keeps a second process out;
* resume: a chain continues after its last complete generation, with the results an
  uninterrupted run would give;
* ``jobs``: chains are independent once the world's shared work is done (the LM's generation 0),
  so ``jobs > 1`` runs them in worker processes, the costliest first, each rebuilding
  the world from the run folder; the results are those of ``jobs=1`` (for the same ``threads``);
* the progress bar (or, with no terminal for it, a line per finished generation), the results
  table, the plots, ``run.json`` and a summary.

A tensor chain is a policy (all its seeds run as one batch: :mod:`collapse_eval.loop`); a
document chain is a (seed, policy) lineage (:mod:`collapse_eval.text.world`).

Examples
--------
>>> import tempfile
>>> from collapse_eval.loop import CollapseConfig
>>> config = CollapseConfig("gaussian", ("replace", "retain:0.5"), generations=3, samples=20,
...                         seeds=(0, 1), heldout=50)
>>> with tempfile.TemporaryDirectory() as folder:
...     run = run_collapse(config, folder, device="cpu", progress=False, plots=False)
...     sorted(run.summary(["variance"]).get_column("policy").to_list())
['replace', 'retain:0.5']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm.auto import tqdm

from collapse_eval.process_pool import (
    refuse_while_importing_main,
    run_in_pool,
    start_worker_server,
)
from collapse_eval.run_lock import claim_run_dir, refuse_if_running
from provenance.atomic import atomic_path
from provenance.devices import resolve_device, torch_threads
from provenance.errors import (
    ChainWorkerError,
    ConfigError,
    TailguardError,
    one_line_warnings,
    one_line_warnings_active,
)
from provenance.outputs import check_output, writing
from provenance.version import tool_version

__all__ = ["RESULT_COLUMNS", "CollapseRun", "World", "checked_run_dir", "config_hash",
           "plot_results", "prepare_run_dir", "run_collapse", "steps_done", "total_steps",
           "world_for", "write_run_info"]

RESULT_COLUMNS = ("family", "policy", "seed", "generation", "metric", "value", "run_id")


# ------------------------------------------------------------------------------------------------
# what a family gives the engine


class World(ABC):
    """A family's recursion as the engine drives it.

    Built from the run's config, folder and device; ``write=False`` in a worker process, where
    the parent has already written what the world shares (a world must then rebuild the same
    state without writing it again). A chain id must be hashable and pickle (it travels to
    the workers).
    """

    def __init__(self, config: Any, out: Path, device: str, *, write: bool = True) -> None:
        self.config, self.out, self.device, self.write = config, out, device, write

    @abstractmethod
    def chains(self) -> list[Hashable]:
        """The run's chains, in the order a single process runs them."""

    @abstractmethod
    def steps(self, chain: Hashable) -> int:
        """Progress units of a chain (its generations that are not shared)."""

    @abstractmethod
    def steps_done(self, chain: Hashable) -> int:
        """A chain's units finished so far, read from the run folder (another process may
        be working on it)."""

    @abstractmethod
    def run_chain(self, chain: Hashable, finished: Callable[[int], None]) -> None:
        """Run a chain's unfinished generations; ``finished(generation)`` after each."""

    @abstractmethod
    def results(self) -> pl.DataFrame:
        """The run's long-format results (:data:`RESULT_COLUMNS`), read from the folder."""

    @abstractmethod
    def generation_of(self, chain: Hashable, unit: int) -> int:
        """The generation whose end is a chain's ``unit``-th progress unit (1-based)."""

    def label(self, chain: Hashable) -> str:
        """How the progress bar and errors name a chain."""
        return str(chain)

    def chain_policy_seed(self, chain: Hashable) -> tuple[str, int | None]:
        """The policy of a chain, and its seed where a chain is one seed (None: all seeds)."""
        return str(chain), None

    def shared_steps(self) -> int:
        """Progress units of the shared work that precedes the chains (0: none)."""
        return 0

    def shared_done(self) -> int:
        """Units of the shared work finished so far, read from the run folder."""
        return 0

    def run_shared(self, finished: Callable[[str | None], None]) -> int:
        """Do the shared work the chains need before they can run apart (the LM trains each
        seed's generation 0 here); ``finished(log line or None)`` after each unit. Returns the
        units that were already done."""
        return 0

    def cost(self, chain: Hashable) -> float:
        """What the chain's unfinished part costs, relative to the others: the worker pool
        hands out the costliest first, so it does not end on one long chain."""
        return self.steps(chain) - self.steps_done(chain)

    def log_line(self, chain: Hashable, generation: int) -> str | None:
        """A line on a finished generation for logs without a progress bar (None: none)."""
        return None

    def plots(self, results: pl.DataFrame, folder: Path) -> list[Path]:
        """The run's plots: one PNG per metric (a world may add its own)."""
        return plot_results(results, folder)

    def run_info(self) -> dict[str, Any]:
        """What ``run.json`` adds for this family (data sizes, model, baselines...)."""
        return {}

    def details(self) -> dict[str, Any]:
        """What the run's summary adds for this family (e.g. the LM's n-gram baselines)."""
        return {}

    def close(self) -> None:  # noqa: B027 -- a world holding nothing open has nothing to do
        """Release what the world holds open (ledgers, models)."""

    @classmethod
    def status(cls, run_dir: Path, config: Any, export_dir: str | os.PathLike | None) -> Any:
        """The family's own ``collapse status`` report (a
        :class:`~collapse_eval.status.RunStatus`), or None for the engine's (each chain's
        finished generations and the process holding the run)."""
        return None


def world_for(config: Any, out: Path, device: str, *, write: bool = True) -> World:
    """The world of ``config``'s family (see :mod:`collapse_eval.family_registry`)."""
    from collapse_eval.family_registry import family_spec

    return family_spec(config.family).world(config, out, device, write=write)


# ------------------------------------------------------------------------------------------------
# the run's result


@dataclass
class CollapseRun:
    """What :func:`run_collapse` returns: the long-format results and where things went."""

    out_dir: Path
    results: pl.DataFrame
    plots: list[Path]
    seconds: float
    resumed_generations: int
    config: Any = None
    #: what the family adds (the LM: its n-gram baselines on the test tokens)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def baselines(self) -> dict[str, float]:
        """The LM's unigram/bigram perplexities on the test tokens (empty for other families)."""
        return self.details.get("baselines", {})

    def summary(self, metrics: Sequence[str] | None = None) -> pl.DataFrame:
        """Mean and standard error across seeds of each metric at the last generation."""
        last = self.results.filter(pl.col("generation") == pl.col("generation").max())
        if metrics:
            last = last.filter(pl.col("metric").is_in(list(metrics)))
        return (last.group_by("policy", "metric", maintain_order=True)
                .agg(pl.col("value").mean().alias("mean"),
                     (pl.col("value").std() / pl.col("value").count().sqrt()).alias("stderr"))
                .sort("metric", "policy"))

    def report(self) -> tuple[dict[str, Any], list[str]]:
        """The run as a command prints it: a JSON-able summary and the lines of a table of the
        family's summary metrics at the last generation (mean +- standard error by policy)."""
        from collapse_eval.family_registry import family_spec

        spec = family_spec(self.config.family)
        shown = spec.summary_metrics
        summary = self.summary(shown)
        generations = self.config.generations
        data = {
            "family": spec.name, "out_dir": str(self.out_dir),
            "run_id": config_hash(self.config.as_dict()), "seconds": round(self.seconds, 2),
            "resumed_generations": self.resumed_generations, "rows": self.results.height,
            "plots": [str(p) for p in self.plots], **self.details,
            "final": [dict(zip(summary.columns, row, strict=True))
                      for row in summary.iter_rows()],
        }
        lines = [f"{spec.name}: {len(self.config.policies)} policies x "
                 f"{len(self.config.seeds)} seeds x {generations + 1} generations in "
                 f"{self.seconds:.1f} s"
                 + (f" ({self.resumed_generations} resumed from checkpoints)"
                    if self.resumed_generations else "")]
        lines += spec.detail_lines(self)
        lines.append(f"generation {generations}, mean +- standard error across seeds:")
        width = max(len(p) for p in self.config.policies)
        widths = [max(18, len(m) + 2) for m in shown]
        lines.append(f"  {'policy':<{width}}" + "".join(
            f"{m:>{w}}" for m, w in zip(shown, widths, strict=True)))
        values = {(r["policy"], r["metric"]): r for r in data["final"]}
        for policy in self.config.policies:
            cells = []
            for metric, w in zip(shown, widths, strict=True):
                row = values.get((policy, metric))
                cell = f"{row['mean']:.4g} +-{row['stderr'] or 0:<6.2g}" if row else "-"
                cells.append(f"{cell:>{w}}")
            lines.append(f"  {policy:<{width}}" + "".join(cells))
        lines.append(f"results: {self.out_dir / 'results.parquet'} "
                     f"({self.results.height:,} rows)")
        if self.plots:
            lines.append(f"plots: {self.out_dir / 'plots'} ({len(self.plots)} PNG)")
        return data, lines


# ------------------------------------------------------------------------------------------------
# the run folder


def config_hash(settings: dict[str, Any]) -> str:
    """A run's id: a short hash of its settings (the results' ``run_id`` column).

    Examples
    --------
    >>> config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})
    True
    """
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def checked_run_dir(out_dir: str | os.PathLike, inputs: Sequence[Any] = ()) -> Path:
    """The run folder, refused before any work when it cannot be written (read-only, a file on
    its path, an empty name) or is, holds or lies inside a data input (``--data``,
    ``--dataset``, ``--model``); an input that is not a path (a hub name) is not compared.

    Examples
    --------
    >>> checked_run_dir("")
    Traceback (most recent call last):
    ...
    provenance.errors.OutputError: the output path is empty; name a file or folder to write
    """
    paths = [p for p in inputs if isinstance(p, (str, os.PathLike)) and str(p)
             and Path(p).expanduser().exists()]
    return check_output(out_dir, paths, folder=True)


def prepare_run_dir(out_dir: Path, config: Any, resume: bool, overwrite: bool) -> None:
    """Create the run folder and its ``config.json``, or check a resumed one's settings match.

    ``config`` is any run configuration with ``as_dict()``. A resume may raise
    ``generations`` (the run continues where it stopped); any other change is refused. A
    failed write is one :class:`~provenance.errors.OutputError` naming the folder.
    """
    with writing(out_dir):
        _prepare_run_dir(out_dir, config, resume, overwrite)


def _prepare_run_dir(out_dir: Path, config: Any, resume: bool, overwrite: bool) -> None:
    saved = out_dir / "config.json"
    if out_dir.exists() and any(out_dir.iterdir()):
        if resume and saved.exists():
            previous = json.loads(saved.read_text(encoding="utf-8"))
            wanted = config.as_dict()
            changed = sorted(k for k in {*wanted, *previous}
                             if previous.get(k) != wanted.get(k))
            if not changed:
                return
            # A generation's results do not depend on how many follow it, so a run can be
            # continued for more generations; anything else changes what was computed.
            if changed != ["generations"] or wanted["generations"] < previous["generations"]:
                raise ConfigError(f"{out_dir} holds a run with different settings "
                                  f"({', '.join(changed)}); use another -o or --overwrite "
                                  "(a resume may only raise --generations)")
            _write_config(saved, config)
            return
        if not overwrite:
            hint = "--resume to continue it or " if saved.exists() else ""
            raise ConfigError(f"{out_dir} is not empty; use {hint}--overwrite to start over")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_config(saved, config)


def _write_config(path: Path, config: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config.as_dict(), indent=2) + "\n", encoding="utf-8")


def write_run_info(out: Path, config: Any, device: str, seconds: float, resumed: int,
                   **extra: Any) -> None:
    """``run.json``: the run's id, versions, device and wall time (plus a family's ``extra``)."""
    info = {
        "run_id": config_hash(config.as_dict()),
        "family": config.family,
        "tailguard": tool_version(),
        "torch": torch.__version__,
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "seconds": round(seconds, 3),
        "resumed_generations": resumed,
        **extra,
    }
    with writing(out), atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def plot_results(results: pl.DataFrame, folder: Path) -> list[Path]:
    """One PNG per metric: the mean across seeds per policy with a 95% band, by generation."""
    from collapse_eval.plots import plot_metric

    folder.mkdir(parents=True, exist_ok=True)
    return [plot_metric(results, metric, folder / f"{metric}.png")
            for metric in results.get_column("metric").unique(maintain_order=True).to_list()]


# ------------------------------------------------------------------------------------------------
# progress read from a folder (the benchmark follows its families' runs this way)


def total_steps(config: Any) -> int:
    """Progress units of a whole run of ``config`` (policy-generations, shared work once)."""
    from collapse_eval.family_registry import family_spec

    return family_spec(config.family).total_steps(config)


def steps_done(out_dir: str | os.PathLike, config: Any) -> int:
    """Progress units of ``config`` finished in ``out_dir`` so far (0 for a run not started),
    read from the folder: another process may be running it."""
    out = Path(out_dir)
    if not (out / "config.json").is_file():
        return 0
    try:
        world = world_for(config, out, "cpu", write=False)
    except (TailguardError, OSError, ValueError):  # being written
        return 0
    try:
        shared, chains = progress_counts(world)
    finally:
        world.close()
    return shared["done"] + sum(c["done"] for c in chains)


def progress_counts(world: World) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """(shared work's ``done``/``total``, each chain's ``chain`` label, ``done``, ``total``),
    read through ``world`` as the progress bar counts them: what ``collapse status`` prints
    and :func:`steps_done` sums."""
    chains = [{"chain": world.label(c), "done": world.steps_done(c), "total": world.steps(c)}
              for c in world.chains()]
    return {"done": world.shared_done(), "total": world.shared_steps()}, chains


# ------------------------------------------------------------------------------------------------
# the run


def run_collapse(
    config: Any,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
    jobs: int = 1,
    on_generation: Callable[[str, int], None] | None = None,
) -> CollapseRun:
    """Run every policy of ``config`` (any family's config) for every seed; write results,
    checkpoints, plots and ``run.json`` into ``out_dir``.

    With ``resume`` an interrupted run continues after its last complete generation and ends
    with the results an uninterrupted run would have produced. ``threads`` sets torch's CPU
    threads (None: torch's default; small models train fastest on one thread on busy cores).

    With ``jobs > 1``, once the shared work is done here (the LM's generation 0), that many
    chains run at a time, the costliest first, each in a worker process with ``threads``
    torch threads (1 when None; see :mod:`collapse_eval.process_pool`). The results are those
    of ``jobs=1`` for the same ``threads``, and a run may be resumed with other ``jobs``. A
    chain that fails stops the others and raises :class:`~provenance.errors.ChainWorkerError`
    (a :class:`~provenance.errors.TailguardError`) naming it; every finished generation stays
    for ``resume``. Workers import the caller's main module, so a script must call this under
    ``if __name__ == "__main__":``. ``on_generation(chain label, generation)`` hears of each
    generation finished in this process.
    """
    from collapse_eval.family_registry import family_spec

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer, got {jobs!r}")
    if jobs > 1:  # before it touches the run folder (with overwrite, deletes the parent's run)
        refuse_while_importing_main("run_collapse(jobs > 1)")
    spec = family_spec(config.family)
    started = time.perf_counter()
    out = checked_run_dir(out_dir, spec.inputs(config))
    device = resolve_device(device)
    refuse_if_running(out)  # before --overwrite could delete what another process works on
    prepare_run_dir(out, config, resume, overwrite)
    with (claim_run_dir(out, jobs=jobs, threads=threads, device=device),
          torch_threads(threads)):
        world = spec.world(config, out, device)
        try:
            resumed = _drive(world, spec.name, jobs, threads, progress, on_generation)
            results = world.results()
            with writing(out):
                with atomic_path(out / "results.parquet") as tmp:
                    results.write_parquet(tmp)
                made = world.plots(results, out / "plots") if plots else []
            seconds = time.perf_counter() - started
            write_run_info(out, config, device, seconds, resumed, **world.run_info(),
                           # torch's thread count changes floating-point sums: a rerun must
                           # match it to repeat bit for bit
                           threads={"requested": threads, "jobs": jobs,
                                    "torch_default": torch.get_num_threads()})
            details = world.details()
        finally:
            world.close()
    return CollapseRun(out, results, made, seconds, resumed, config, details)


def _drive(world: World, family: str, jobs: int, threads: int | None, progress: bool,
           on_generation: Callable[[str, int], None] | None) -> int:
    """Run the world's shared work, then its chains (here or in workers); returns the units
    that were already done."""
    chains = world.chains()
    total = world.shared_steps() + sum(world.steps(c) for c in chains)
    # disable=None: shown on a terminal only, so pipeline logs stay free of carriage returns
    with tqdm(total=total, desc=family, unit="gen", disable=None if progress else True,
              dynamic_ncols=True) as bar:
        logging = progress and bool(bar.disable)  # no terminal for the bar: a line per gen

        def log(chain: Hashable, generation: int) -> None:
            line = world.log_line(chain, generation) if logging else None
            if line is not None:
                print(line, file=sys.stderr, flush=True)

        def shared_finished(line: str | None) -> None:
            bar.update(1)
            if logging and line is not None:
                print(line, file=sys.stderr, flush=True)

        if jobs > 1 and sum(world.steps_done(c) < world.steps(c) for c in chains) > 1:
            start_worker_server()  # its imports overlap the shared work below
        bar.set_description(f"{family} shared")
        resumed = world.run_shared(shared_finished)
        bar.update(resumed)
        done = {chain: world.steps_done(chain) for chain in chains}
        resumed += sum(done.values())
        bar.update(sum(done.values()))
        todo = [c for c in chains if done[c] < world.steps(c)]
        if jobs > 1 and len(todo) > 1:
            _run_in_workers(world, todo, done, bar, log, jobs, threads or 1)
        else:
            for chain in todo:
                bar.set_description(f"{family} {world.label(chain)}")

                def finished(generation: int, chain: Hashable = chain) -> None:
                    bar.update(1)
                    log(chain, generation)
                    if on_generation is not None:
                        on_generation(world.label(chain), generation)

                world.run_chain(chain, finished)
    return resumed


def _run_in_workers(world: World, todo: list[Hashable], done: dict[Hashable, int], bar: Any,
                    log: Callable[[Hashable, int], None], jobs: int,
                    threads: int) -> None:
    """The chains ``jobs`` at a time in worker processes, the costliest first; the bar
    moves with what their folders hold."""
    order = sorted(todo, key=lambda c: -world.cost(c))  # stable: ties keep the run order
    workers = min(jobs, len(order))
    bar.set_description(f"{world.config.family} {len(order)} chains, {workers} at once")
    base = {"config": world.config.as_dict(), "family": world.config.family,
            "out": str(world.out), "device": world.device, "threads": threads,
            "one_line_warnings": one_line_warnings_active()}

    def poll() -> None:
        for chain in order:
            now = world.steps_done(chain)
            bar.update(max(0, now - done[chain]))
            for unit in range(done[chain] + 1, now + 1):
                log(chain, world.generation_of(chain, unit))
            done[chain] = max(done[chain], now)

    run_in_pool(_chain_worker, [{**base, "chain": chain} for chain in order], workers,
                poll=poll, failed=lambda k, error: _worker_error(world, order[k], error))


def _worker_error(world: World, chain: Hashable, error: BaseException) -> ChainWorkerError:
    """The parent's error for a chain that failed in its worker: the chain, the worker's
    exception and, for an unexpected one, the worker's traceback."""
    from concurrent.futures.process import BrokenProcessPool

    family, label = world.config.family, world.label(chain)
    kept = "finished generations are kept: continue with --resume once the cause is fixed"
    if isinstance(error, BrokenProcessPool):
        message = (f"{family} {label}: a worker process died (killed, or out of memory? "
                   f"lower --jobs); {kept}")
    else:
        message = (f"{family} {label} failed in its worker process: "
                   f"{type(error).__name__}: {error}; {kept}")
    # The worker's traceback (concurrent.futures attaches it as the cause), unless the error is
    # one tailguard raised on purpose, whose message says it all.
    remote = str(error.__cause__ or "").strip().strip("'\"").strip()
    if remote and not isinstance(error, TailguardError):
        message += f"\nworker traceback:\n{remote}"
    policy, seed = world.chain_policy_seed(chain)
    return ChainWorkerError(message, policy=policy, seed=seed)


#: A worker's world, rebuilt once per process (the pool hands a process several chains).
_WORKER_WORLD: dict[tuple[str, str, str], World] = {}


def _chain_worker(task: dict[str, Any]) -> None:
    """In a worker process: run one chain's remaining generations. ``task`` is plain data
    (the config as a dict, the run folder, device, threads and the chain id); the world is
    rebuilt from the run folder without writing what the parent wrote."""
    from collapse_eval.family_registry import family_spec

    spec = family_spec(task["family"])
    config = spec.config_from_dict(task["config"])
    out, device = Path(task["out"]), task["device"]
    shown = one_line_warnings() if task.get("one_line_warnings") else contextlib.nullcontext()
    with shown, torch_threads(int(task["threads"])):
        key = (str(out), config_hash(task["config"]), device)
        world = _WORKER_WORLD.get(key)
        if world is None:
            for old in _WORKER_WORLD.values():
                old.close()
            _WORKER_WORLD.clear()
            world = _WORKER_WORLD[key] = spec.world(config, out, device, write=False)
        world.run_chain(task["chain"], lambda generation: None)
