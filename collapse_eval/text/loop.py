"""The language-model recursion, run through tailguard's own pipeline.

Generation 0 trains a language model on human text. At every later generation the previous
model publishes a synthetic corpus the size of the human one -- each document a watermarked
continuation of a prompt taken from its own training data, registered in the ledger with that
document as its parent -- and the policy builds the next training set with
:func:`mixers.build.build_mixture` from the human data, what has been published, or the "web"
of both tagged by :func:`provenance.tagger.tag_corpus` (:mod:`collapse_eval.text.evidence`).
The same :class:`collapse_eval.policies.Policy` definitions drive the numeric families on
tensors; here they run as a user's pipeline would, on parquet files.

Generation 0 (and what it publishes) is shared by every policy of a seed, so policies are
compared on the same start. Each generation's folder is complete when its ``metrics.json`` is
written (last, atomically); a resumed run continues after the last complete generation, and
since every step is seeded by (seed, generation) it gives the results an uninterrupted run would.

After generation 0 every (seed, policy) chain is independent: nothing one chain reads is written
by another. With ``jobs > 1`` the chains run in worker processes (spawned, each rebuilding the
setup from the run folder and loading the shared generation 0 from disk), and the results are
those of ``jobs=1``. The one thing chains share at run time is the run's ``ledger.sqlite``
(WAL, concurrent writers), and no chain looks anything up in it: a policy that tags with the
ledger looks up its own lineage's ledger, ``<policy>/ledger.sqlite`` -- the documents generation
0 published and those its own chain published, registered in the same order every time. Against
the run ledger, its tags (the matched record, and a near match to another policy's text) would
depend on which other policies had published before it: their order, or with workers, the
scheduling. Each policy is a world of its own; another policy's models do not exist in it.

The pieces: :mod:`collapse_eval.text.config` (what a run is), :mod:`collapse_eval.text.chain`
(the shared setup and one generation of a chain), :mod:`collapse_eval.text.workers` (chains in
worker processes), :mod:`collapse_eval.text.progress` (a run's progress, read from its
folder) and :mod:`collapse_eval.text.results` (its results and histograms, read from its
folder); this module runs them.

Output folder::

    config.json                       what was run (a resume must match it)
    data/human-train.parquet          the human training documents (id, text, true_origin)
    tokenizer/                        the byte-level BPE (or the pretrained model's tokenizer)
    ledger.sqlite                     every published document, with generator and parents
    seed-0/generation-000000/         model/, mixture/, published.parquet, metrics.json
    seed-0/<policy>/generation-000003/  the same per policy (web.parquet for tagging policies)
    seed-0/<policy>/ledger.sqlite     the lineage's ledger (policies that tag with the ledger)
    seed-0/<policy>/.generation-000004.training/  a generation's training state while it
                                      trains (a killed run goes on from its last whole epoch)
    results.parquet, plots/, run.json as for the numeric families
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tqdm.auto import tqdm

from collapse_eval.loop import checked_run_dir, plot_results, prepare_run_dir, write_run_info
from collapse_eval.policies import parse_policies
from collapse_eval.process_pool import refuse_while_importing_main
from collapse_eval.run_lock import claim_run_dir, refuse_if_running
from collapse_eval.text.chain import Chain, RunSetup, first_model
from collapse_eval.text.config import (
    DEFAULT_LM_POLICIES,
    FINE_TUNE_DEFAULTS,
    LMCollapseConfig,
    load_lm_config,
)
from collapse_eval.text.progress import generation_logger, lm_run_progress
from collapse_eval.text.results import collect_lm_results, plot_data_perplexity
from collapse_eval.text.workers import run_in_workers
from provenance.atomic import atomic_path
from provenance.devices import resolve_device, torch_threads
from provenance.errors import ConfigError
from provenance.outputs import writing

__all__ = ["DEFAULT_LM_POLICIES", "FINE_TUNE_DEFAULTS", "LMCollapseConfig", "LMCollapseRun",
           "load_lm_config", "run_lm_collapse"]


@dataclass
class LMCollapseRun:
    """What :func:`run_lm_collapse` returns."""

    out_dir: Path
    results: pl.DataFrame
    plots: list[Path]
    seconds: float
    resumed_generations: int
    baselines: dict[str, float]


# ------------------------------------------------------------------------------------------------
# the run


def run_lm_collapse(
    config: LMCollapseConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
    jobs: int = 1,
) -> LMCollapseRun:
    """Run every policy of ``config`` for every seed; write results, checkpoints and plots.

    ``threads`` sets torch's CPU threads for the run (a model this small trains fastest on
    one thread where the cores are shared). With ``resume`` an interrupted run continues from
    its last complete generation.

    With ``jobs > 1``, once every seed's generation 0 is trained (in this process), that many
    (seed, policy) chains run at a time, the costliest first (``accumulate``, whose training set
    grows), each in its own spawned process with ``threads`` torch threads (1 when None); each
    worker holds about 1 GB of memory. The results are those of
    ``jobs=1`` (for the same ``threads``), and a run may be resumed with other ``jobs`` than it
    started with. A chain that fails stops the others and raises
    :class:`~provenance.errors.LMWorkerError`; every finished generation stays on disk for
    ``resume``. Workers are spawned, so they import the caller's main module: a script must
    call this under ``if __name__ == "__main__":``.
    """
    from provenance.ledger import Ledger

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer, got {jobs!r}")
    if jobs > 1:  # before it touches the run folder (with overwrite, deletes the parent's run)
        refuse_while_importing_main("run_lm_collapse(jobs > 1)")
    started = time.perf_counter()
    out = checked_run_dir(out_dir, [config.dataset, config.model])
    device = resolve_device(device)
    refuse_if_running(out)  # before --overwrite could delete what another process works on
    prepare_run_dir(out, config, resume, overwrite)
    policies = parse_policies(config.policies)
    resumed = 0
    with (claim_run_dir(out, jobs=jobs, threads=threads, device=device), torch_threads(threads),
          Ledger(out / "ledger.sqlite") as ledger):
        setup = RunSetup(config, out, device)
        total = len(config.seeds) * (1 + len(policies) * config.generations)
        with tqdm(total=total, desc="lm", unit="gen", disable=None if progress else True,
                  dynamic_ncols=True) as bar:
            # No terminal for the bar (nohup, a batch job): a line per finished generation.
            log = generation_logger(out, config.generations, enabled=progress and bar.disable)
            if jobs > 1:
                resumed = run_in_workers(setup, policies, ledger, bar, jobs, threads or 1,
                                         log=log)
            else:
                for seed in config.seeds:
                    key = setup.watermark_key(seed)
                    shared = Chain(setup, seed, None, ledger, key)
                    resumed += shared.completed(0)
                    first = first_model(shared, bar, log=log)
                    for policy in policies:
                        chain = Chain(setup, seed, policy, ledger, key)
                        done = max(1, chain.completed(config.generations))
                        resumed += done - 1
                        bar.update(done - 1)
                        bar.set_description(f"lm {policy.name} seed {seed}")
                        try:
                            for generation in range(done, config.generations + 1):
                                chain.step(generation, first)
                                bar.update(1)
                                log(seed, policy.name, generation)
                        finally:
                            chain.close()
    results = collect_lm_results(out, config)
    with writing(out):
        with atomic_path(out / "results.parquet") as tmp:
            results.write_parquet(tmp)
        made: list[Path] = []
        if plots:
            made = plot_results(results, out / "plots")
            made += plot_data_perplexity(out, config)
    seconds = time.perf_counter() - started
    write_run_info(out, config, device, seconds, resumed,
                   # `seconds` is this invocation; a resumed run's whole cost is the sum
                   generation_seconds=round(lm_run_progress(out).compute_seconds, 1),
                   documents_per_generation=setup.size, corpus=setup.corpus_stats,
                   baselines={f"test_{k}": round(v, 3) for k, v in setup.baselines.items()},
                   model=setup.model_info(), recipe=config.recorded_recipe(),
                   # Torch's thread count changes floating-point sums, so a rerun must match it.
                   threads={"requested": threads, "jobs": jobs,
                            "torch_default": torch.get_num_threads()})
    return LMCollapseRun(out, results, made, seconds, resumed, setup.baselines)
