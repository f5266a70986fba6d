"""Where an LM run stands, read from its folder while it runs, or after it stopped.

A full default run is about 90 policy-generations of several minutes each: hours on a CPU. The
run writes ``results.parquet`` only at its end, but every finished generation leaves its
``metrics.json`` (written last, atomically), so the folder itself says what is done, what each
generation took and how the metrics move; a generation in training leaves its epochs'
``.generation-N.training/state.json`` (see :mod:`collapse_eval.text.train_state`), so the
folder also says how far the unfinished generation got. This module reads only those files and
never writes into the run folder: it is safe beside a running (or a paused) run, and
:func:`export_lm_progress` plots the curves so far elsewhere.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapse_eval.disk_space import free_bytes, generation_needs
from collapse_eval.run_lock import chain_worker
from collapse_eval.text.chain import chain_dir, generation_dir, training_state_dir
from collapse_eval.text.config import load_lm_config
from provenance.atomic import atomic_path
from provenance.errors import InputError

__all__ = ["ChainProgress", "LMRunProgress", "disk_room", "export_lm_progress",
           "generation_line", "generation_logger", "lm_run_progress"]


@dataclass(frozen=True)
class ChainProgress:
    """One (seed, policy) chain: its complete generations, their wall seconds (mixing,
    training, sampling, registering and measuring) and the metrics of the newest one."""

    seed: int
    policy: str
    done: int
    total: int
    seconds: tuple[float, ...]
    latest: dict[str, float] = field(default_factory=dict)
    #: the next generation's training so far: generation, epochs done, epochs (None: none saved)
    training: tuple[int, int, int] | None = None
    #: training documents of each complete generation (empty where the records lack them)
    docs: tuple[float, ...] = ()
    #: the live process working on the chain now (None: none is)
    worker_pid: int | None = None

    def seconds_left(self, fallback: float) -> float:
        """Single-process seconds its unfinished generations need: at its own mean, or at
        ``fallback`` before it has one. A training set that grows (``accumulate``) is projected
        at its last growth step and the seconds per document so far: its generations get
        slower, so its mean so far would promise too soon an end."""
        left = self.total - self.done
        if not self.seconds:
            return left * fallback
        if len(self.docs) == len(self.seconds) >= 2 and self.docs[-1] > self.docs[-2]:
            step = self.docs[-1] - self.docs[-2]
            per_doc = sum(self.seconds) / sum(self.docs)
            return per_doc * sum(self.docs[-1] + step * k for k in range(1, left + 1))
        return left * statistics.fmean(self.seconds)


@dataclass(frozen=True)
class LMRunProgress:
    """The chains of a run folder, with generation 0 of each seed."""

    out_dir: Path
    generations: int
    first: dict[int, dict[str, Any]]
    chains: tuple[ChainProgress, ...]

    @property
    def done(self) -> int:
        """Policy-generations complete (generation 0 not counted)."""
        return sum(chain.done for chain in self.chains)

    @property
    def total(self) -> int:
        return sum(chain.total for chain in self.chains)

    @property
    def finished(self) -> bool:
        return self.done == self.total and all(f["done"] for f in self.first.values())

    def finished_through(self) -> dict[str, int]:
        """Per policy, the last generation every seed has finished (generation 0 counts: -1
        where a seed has not finished even that): what a partial report can compare."""
        through: dict[str, int] = {}
        for chain in self.chains:
            last = chain.done if self.first[chain.seed]["done"] else -1
            through[chain.policy] = min(through.get(chain.policy, last), last)
        return through

    def _chains_left(self) -> list[float] | None:
        """Each chain's single-process seconds left (see :meth:`ChainProgress.seconds_left`; a
        chain not started goes at the mean of every finished policy-generation, or of
        generation 0 before there is one); None before anything is done."""
        every = [s for chain in self.chains for s in chain.seconds]
        if not every:
            every = [f["seconds"] for f in self.first.values() if f["done"]]
        if not every:
            return None
        overall = statistics.fmean(every)
        return [chain.seconds_left(overall) for chain in self.chains]

    def seconds_left(self) -> float | None:
        """Single-process seconds the unfinished generations need. Divide by the workers
        (``--jobs``) for wall time, or see :meth:`wall_seconds_left`; None before any
        generation is done."""
        per_chain = self._chains_left()
        return None if per_chain is None else sum(per_chain)

    def wall_seconds_left(self, jobs: int) -> float | None:
        """Wall seconds left with ``jobs`` chains running at a time: no less than the longest
        chain's own remainder (a chain's generations run one after another), nor than the
        whole remainder spread evenly over the jobs. None before any generation is done."""
        per_chain = self._chains_left()
        if not per_chain:
            return None
        return max(max(per_chain), sum(per_chain) / max(1, jobs))

    @property
    def compute_seconds(self) -> float:
        """Seconds of every finished generation, summed over the invocations that ran them: what
        the run has cost in one process, however often it was stopped and resumed."""
        return (sum(f["seconds"] or 0.0 for f in self.first.values())
                + sum(sum(chain.seconds) for chain in self.chains))

    def as_dict(self) -> dict[str, Any]:
        left = self.seconds_left()
        return {
            "out_dir": str(self.out_dir), "generations": self.generations,
            "done": self.done, "total": self.total, "finished": self.finished,
            "compute_seconds": round(self.compute_seconds, 1),
            "seconds_left_one_process": None if left is None else round(left, 1),
            "generation_0": {str(seed): first for seed, first in self.first.items()},
            "chains": [{"seed": c.seed, "policy": c.policy, "done": c.done, "total": c.total,
                        "mean_seconds": (round(statistics.fmean(c.seconds), 1)
                                         if c.seconds else None),
                        "latest": c.latest,
                        "training": None if c.training is None else dict(zip(
                            ("generation", "epochs_done", "epochs"), c.training, strict=True)),
                        "worker_pid": c.worker_pid}
                       for c in self.chains],
        }


def _record(folder: Path) -> dict[str, Any] | None:
    path = folder / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable metrics ({error})") from error


def _epochs_saved(folder: Path) -> int | None:
    """Epochs the unfinished generation in ``folder`` has saved (None: none, or unreadable --
    the state may be mid-swap; the run itself decides whether it can resume it)."""
    try:
        state = json.loads((training_state_dir(folder) / "state.json")
                           .read_text(encoding="utf-8"))
        return int(state["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _live_worker(folder: Path) -> int | None:
    """The pid of the live process working in a chain's folder, if one is."""
    worker = chain_worker(folder)
    return None if worker is None or worker.alive is False else worker.pid


def _seconds(record: dict[str, Any]) -> float:
    return float(sum(record.get("timing", {}).values()))


def lm_run_progress(out_dir: str | os.PathLike) -> LMRunProgress:
    """Read the progress of the LM run in ``out_dir`` (see the module notes)."""
    out = Path(out_dir)
    if not (out / "config.json").is_file() or not any(out.glob("seed-*/generation-000000")):
        raise InputError(f"{out}: not an LM run folder (no config.json with "
                         "seed-*/generation-000000/); numeric runs are short: read their "
                         "results.parquet")
    config = load_lm_config(out)
    first, chains = {}, []
    for seed in config.seeds:
        record = _record(generation_dir(out, seed, None, 0))
        first[seed] = {"done": record is not None,
                       "seconds": None if record is None else round(_seconds(record), 1),
                       "metrics": {} if record is None else record["metrics"],
                       "worker_pid": _live_worker(chain_dir(out, seed, None))}
        for policy in config.policies:
            seconds, docs, latest = [], [], {}
            for generation in range(1, config.generations + 1):
                record = _record(generation_dir(out, seed, policy, generation))
                if record is None:
                    break
                seconds.append(_seconds(record))
                if "training_docs" in record["metrics"]:
                    docs.append(float(record["metrics"]["training_docs"]))
                latest = {"generation": generation, **record["metrics"]}
            training = None
            if len(seconds) < config.generations:
                following = len(seconds) + 1
                epochs = _epochs_saved(generation_dir(out, seed, policy, following))
                if epochs is not None:
                    training = (following, epochs, config.lm_recipe().epochs)
            chains.append(ChainProgress(seed, policy, len(seconds), config.generations,
                                        tuple(seconds), latest, training, tuple(docs),
                                        _live_worker(chain_dir(out, seed, policy))))
    return LMRunProgress(out, config.generations, first, tuple(chains))


def generation_line(out_dir: str | os.PathLike, seed: int, policy: str | None,
                    generation: int, generations: int) -> str | None:
    """One log line on a finished generation (None: its record is not there), for runs whose
    output is a file rather than a terminal: under ``nohup`` or a batch scheduler there is no
    progress bar, and a log that stays empty for hours says nothing of a run that works."""
    record = _record(generation_dir(Path(out_dir), seed, policy, generation))
    if record is None:
        return None
    metrics = record["metrics"]
    which = ("generation 0 (shared)" if policy is None
             else f"{policy} generation {generation}/{generations}")
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S')} lm seed {seed} {which} done in "
            f"{_seconds(record) / 60:.1f} min: test perplexity "
            f"{metrics['test_perplexity']:.1f}, rare-bigram recall "
            f"{metrics['rare_ngram_recall']:.3f}, distinct-2 {metrics['distinct_2']:.3f}, "
            f"synthetic share {metrics['synthetic_share']:.2f}")


def generation_logger(out_dir: str | os.PathLike, generations: int,
                      enabled: bool) -> Callable[[int, str | None, int], None]:
    """``log(seed, policy, generation)``: print :func:`generation_line` to stderr when
    ``enabled`` (a run with progress output but no terminal for its bar), else nothing."""

    def log(seed: int, policy: str | None, generation: int) -> None:
        if enabled:
            line = generation_line(out_dir, seed, policy, generation, generations)
            if line is not None:
                print(line, file=sys.stderr, flush=True)

    return log


def disk_room(out_dir: str | os.PathLike) -> tuple[int, int]:
    """Bytes free on the run's disk, and the bytes a generation of it must find free to start
    (from generation 0's saved weights; see :mod:`collapse_eval.disk_space`)."""
    out = Path(out_dir)
    weights = sum(path.stat().st_size
                  for path in out.glob("seed-*/generation-000000/model/*.safetensors"))
    return free_bytes(out)[1], generation_needs(weights)


def export_lm_progress(out_dir: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Write what the LM run in ``out_dir`` has finished so far to ``dest``: ``results.parquet``
    and ``plots/`` as the run writes them at its end, each policy up to the last generation
    every seed has finished, and a ``config.json`` that lets ``tailguard report dest`` compare
    the policies at the last generation every started one has reached. Returns the files
    written.

    A full run takes hours; its curves say within the first generations whether it is worth
    the rest. Only ``dest`` is written, so this is safe beside the running run; ``dest`` may
    not lie inside the run folder, whose own ``results.parquet`` and ``plots/`` the run
    writes when it finishes."""
    from collapse_eval.engine import plot_results
    from collapse_eval.text.results import collect_lm_results, plot_data_perplexity

    out, dest = Path(out_dir), Path(dest)
    if dest.resolve().is_relative_to(out.resolve()):
        raise InputError(f"{dest}: lies inside the run folder {out}; export to a folder "
                         "outside it (the run writes its own results there when it finishes)")
    progress = lm_run_progress(out)
    through = progress.finished_through()
    if min(through.values()) < 0:
        raise InputError(f"{out}: generation 0 is not finished yet; nothing to export")
    config = load_lm_config(out)
    results = collect_lm_results(out, config, last=through)
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / "results.parquet") as tmp:
        results.write_parquet(tmp)
    plots = plot_results(results, dest / "plots")
    plots += plot_data_perplexity(out, config, last=through, folder=dest / "plots")
    started = [generation for generation in through.values() if generation > 0]
    summary = {**json.loads((out / "config.json").read_text(encoding="utf-8")),
               "generations": min(started, default=0), "partial_through": through}
    with atomic_path(dest / "config.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with atomic_path(dest / "run.json") as tmp:
        tmp.write_text(json.dumps(_run_info_so_far(out, config, progress), indent=2) + "\n",
                       encoding="utf-8")
    return [dest / "results.parquet", *plots, dest / "config.json", dest / "run.json"]


def _run_info_so_far(out: Path, config: Any, progress: LMRunProgress) -> dict[str, Any]:
    """What the report's tables say about the run: its id, device, documents per generation
    and the compute seconds of the generations finished so far (versions only the finished
    run records)."""
    import polars as pl

    from collapse_eval.engine import config_hash

    seed = config.seeds[0]
    first = generation_dir(out, seed, None, 0)
    record = _record(first) or {}
    return {
        "run_id": config_hash(config.as_dict()),
        "device": record.get("train", {}).get("device", "?"),
        "seconds": round(progress.compute_seconds, 3),
        "documents_per_generation": pl.scan_parquet(first / "published.parquet")
        .select(pl.len()).collect().item(),
    }
