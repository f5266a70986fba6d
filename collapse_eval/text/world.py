"""The language-model recursion, run through tailguard's own pipeline: the world
:func:`collapse_eval.engine.run_collapse` drives for the ``lm`` family.

Generation 0 trains a language model on human text. At every later generation the previous
model publishes a synthetic corpus the size of the human one -- each document a watermarked
continuation of a prompt taken from its own training data, registered in the ledger with that
document as its parent -- and the policy builds the next training set with
:func:`mixers.build.build_mixture` from the human data, what has been published, or the "web"
of both tagged by :func:`provenance.tagger.tag_corpus` (:mod:`collapse_eval.text.evidence`).
The same :class:`collapse_eval.policies.Policy` definitions drive the tensor families; here
they run as a user's pipeline would, on parquet files.

Generation 0 (and what it publishes) is shared by every policy of a seed, so policies are
compared on the same start: it is the world's shared work, done in the engine's process before
any chain runs. A chain is one (seed, policy) lineage; each generation's folder is complete
when its ``metrics.json`` is written (last, atomically), and since every step is seeded by
(seed, generation) a resumed run gives the results an uninterrupted run would.

After generation 0 every chain is independent: nothing one chain reads is written by another,
so the engine may run them in worker processes (``jobs > 1``), each rebuilding this world from
the run folder. The one thing chains share at run time is the run's ``ledger.sqlite`` (WAL,
concurrent writers), and no chain looks anything up in it: a policy that tags with the ledger
looks up its own lineage's ledger, ``<policy>/ledger.sqlite`` -- the documents generation 0
published and those its own chain published, registered in the same order every time. Against
the run ledger, its tags would depend on which other policies had published before it.

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
    results.parquet, plots/, run.json as for every family
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import polars as pl

from collapse_eval.engine import World, plot_results
from collapse_eval.policies import Policy, parse_policies
from collapse_eval.text.chain import Chain, RunSetup, generation_dir, warn_if_no_better_than_bigram
from collapse_eval.text.config import LMCollapseConfig, config_from_dict
from collapse_eval.text.progress import generation_line, lm_run_progress
from collapse_eval.text.results import collect_lm_results, plot_data_perplexity

__all__ = ["DocumentWorld", "chain_cost"]


def chain_cost(policy: Policy, done: int, generations: int) -> int:
    """What a chain's unfinished generations cost, in fixed-size corpora trained on.

    ``accumulate`` trains on one more corpus each generation, so generation ``g`` costs about
    ``g + 1`` of them; every other policy's generations cost alike.

    Examples
    --------
    >>> replace, accumulate = parse_policies(["replace", "accumulate"])
    >>> chain_cost(replace, 0, 10), chain_cost(accumulate, 0, 10), chain_cost(accumulate, 10, 10)
    (10, 65, 0)
    """
    ahead = range(done + 1, generations + 1)
    return sum(g + 1 for g in ahead) if policy.strategy == "accumulate" else len(ahead)


class DocumentWorld(World):
    """The LM family for the engine: chains are (seed, policy name); generation 0 of each seed
    is the shared work."""

    def __init__(self, config: LMCollapseConfig, out: Path, device: str, *,
                 write: bool = True) -> None:
        super().__init__(config, out, device, write=write)
        self.policies = {p.name: p for p in parse_policies(config.policies)}
        self._ledger: Any = None
        self._first: dict[int, Any] = {}

    # -- what the family registry asks of a world ---------------------------------------------

    @staticmethod
    def config_from_dict(data: dict[str, Any]) -> LMCollapseConfig:
        return config_from_dict(data)

    @staticmethod
    def make_config(spec: Any, settings: dict[str, Any]) -> LMCollapseConfig:
        return LMCollapseConfig(**settings)

    @staticmethod
    def inputs(config: LMCollapseConfig) -> list[Any]:
        return [config.dataset, config.model]

    @staticmethod
    def total_steps(config: LMCollapseConfig) -> int:
        return len(config.seeds) * (1 + len(config.policies) * config.generations)

    @classmethod
    def status(cls, run_dir: Path, config: Any, export_dir: Any) -> Any:
        """The LM's report: epochs saved, newest metrics, workers, time left, disk, export."""
        from collapse_eval.text.status import lm_status

        return lm_status(run_dir, export_dir)

    @staticmethod
    def detail_lines(run: Any) -> list[str]:
        first = run.results.filter((pl.col("generation") == 0)
                                   & (pl.col("metric") == "test_perplexity"))["value"].mean()
        base = run.baselines
        return [f"generation 0 test perplexity {first:.1f}; baselines on the same tokens: "
                f"unigram {base['unigram_ppl']:.1f}, bigram {base['bigram_ppl']:.1f}"]

    @staticmethod
    def profile(spec: Any) -> Any:
        """The LM as the report reads it (its tail metric: rare-bigram recall)."""
        from collapse_eval.metrics import METRICS
        from collapse_eval.profiles import FamilyProfile, share_lost
        from collapse_eval.text.generation_metrics import LM_METRIC_DEFINITIONS, LM_TAIL_METRIC

        shown = tuple(m for m in spec.summary_metrics if not m.startswith("tagger_"))
        histograms = (
            "data_perplexity_histograms.png",
            "The paper's picture: perplexity of each generation's training sequences under the "
            "generation-0 model (first seed; generations 0, middle and last). In Shumailov et "
            "al. the mass moves towards sequences the original model finds likely while a long "
            "tail of high-perplexity errors appears; a filter that works keeps generation 0's "
            "histogram.")
        return FamilyProfile(spec.name, LM_TAIL_METRIC, shown, share_lost,
                             {**METRICS, **LM_METRIC_DEFINITIONS}, unit=spec.unit,
                             by_generation_table=True, run_plots=(histograms,))

    # -- what the chains share ----------------------------------------------------------------

    @functools.cached_property
    def setup(self) -> RunSetup:
        """Corpus, tokenizer and held-out data (built on first use: reading progress from the
        folder needs none of it)."""
        return RunSetup(self.config, self.out, self.device, write=self.write)

    @property
    def ledger(self) -> Any:
        if self._ledger is None:
            from provenance.ledger import Ledger

            self._ledger = Ledger(self.out / "ledger.sqlite")
        return self._ledger

    def _chain(self, seed: int, policy: str | None) -> Chain:
        return Chain(self.setup, seed, None if policy is None else self.policies[policy],
                     self.ledger, self.setup.watermark_key(seed))

    def _done(self, seed: int, policy: str | None, upto: int) -> int:
        """Consecutive complete generations of a chain from 0 (read from the folder)."""
        done = 0
        while done <= upto and (generation_dir(self.out, seed, policy, done)
                                / "metrics.json").exists():
            done += 1
        return done

    def shared_steps(self) -> int:
        return len(self.config.seeds)

    def shared_done(self) -> int:
        return sum(self._done(seed, None, 0) for seed in self.config.seeds)

    def run_shared(self, finished: Callable[[str | None], None]) -> int:
        """Each seed's generation 0, trained here once and shared by every policy."""
        resumed = 0
        for seed in self.config.seeds:
            if self._done(seed, None, 0):
                resumed += 1
                continue
            self._first[seed] = self._chain(seed, None).step(0, None)
            finished(self.log_line(seed, 0))
            warn_if_no_better_than_bigram(self._chain(seed, None))
        return resumed

    def _first_model(self, seed: int) -> Any:
        if seed not in self._first:
            from collapse_eval.text.model import load_model

            folder = generation_dir(self.out, seed, None, 0) / "model"
            self._first = {seed: load_model(folder, device=self.device)}  # one seed at a time
        return self._first[seed]

    # -- the chains ---------------------------------------------------------------------------

    def chains(self) -> list[tuple[int, str]]:
        return [(seed, policy) for seed in self.config.seeds for policy in self.policies]

    def label(self, chain: Hashable) -> str:
        seed, policy = chain
        return f"policy {policy} (seed {seed})"

    def chain_policy_seed(self, chain: Hashable) -> tuple[str, int | None]:
        seed, policy = chain
        return policy, seed

    def steps(self, chain: Hashable) -> int:
        return self.config.generations

    def steps_done(self, chain: Hashable) -> int:
        seed, policy = chain
        return max(1, self._done(seed, policy, self.config.generations)) - 1

    def generation_of(self, chain: Hashable, unit: int) -> int:
        return unit

    def cost(self, chain: Hashable) -> float:
        return chain_cost(self.policies[chain[1]], self.steps_done(chain),
                          self.config.generations)

    def run_chain(self, chain: Hashable, finished: Callable[[int], None]) -> None:
        seed, policy = chain
        start = self.steps_done(chain) + 1
        if start > self.config.generations:
            return
        lineage = self._chain(seed, policy)
        try:
            first = self._first_model(seed)
            for generation in range(start, self.config.generations + 1):
                lineage.step(generation, first)
                finished(generation)
        finally:
            lineage.close()

    def log_line(self, chain: Hashable, generation: int) -> str | None:
        """A chain's line, or with ``chain`` a bare seed, that seed's shared generation 0's."""
        seed, policy = chain if isinstance(chain, tuple) else (chain, None)
        return generation_line(self.out, seed, policy, generation, self.config.generations)

    # -- the results --------------------------------------------------------------------------

    def results(self) -> pl.DataFrame:
        return collect_lm_results(self.out, self.config)

    def plots(self, results: pl.DataFrame, folder: Path) -> list[Path]:
        return plot_results(results, folder) + plot_data_perplexity(self.out, self.config)

    def run_info(self) -> dict[str, Any]:
        setup = self.setup
        return {  # `seconds` is this invocation; a resumed run's whole cost is the sum
            "generation_seconds": round(lm_run_progress(self.out).compute_seconds, 1),
            "documents_per_generation": setup.size, "corpus": setup.corpus_stats,
            "baselines": {f"test_{k}": round(v, 3) for k, v in setup.baselines.items()},
            "model": setup.model_info(), "recipe": self.config.recorded_recipe()}

    def details(self) -> dict[str, Any]:
        return {"baselines": dict(self.setup.baselines)}

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self._first.clear()
