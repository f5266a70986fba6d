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

Output folder::

    config.json                       what was run (a resume must match it)
    data/human-train.parquet          the human training documents (id, text, true_origin)
    tokenizer/                        the byte-level BPE (or the pretrained model's tokenizer)
    ledger.sqlite                     every published document, with generator and parents
    seed-0/generation-000000/         model/, mixture/, published.parquet, metrics.json
    seed-0/<policy>/generation-000003/  the same per policy (web.parquet for tagging policies)
    seed-0/<policy>/ledger.sqlite     the lineage's ledger (policies that tag with the ledger)
    results.parquet, plots/, run.json as for the numeric families
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from collapse_eval.loop import (
    RESULT_COLUMNS,
    config_hash,
    plot_results,
    prepare_run_dir,
    write_run_info,
)
from collapse_eval.policies import ORIGINAL_SOURCE, Policy, parse_policies, policy_slug
from collapse_eval.rng import derive_seed
from collapse_eval.text import evidence
from collapse_eval.text.documents import (
    chunk_documents,
    decode_documents,
    document_frame,
    encode_documents,
    prompts_from,
    token_stream_blocks,
)
from collapse_eval.text.evidence import TRUTH, write_parquet
from collapse_eval.text.generation_metrics import HumanReference, generation_metrics
from collapse_eval.text.model import LMRecipe, torch_threads
from mixers.build import build_mixture
from mixers.spec import MixtureSpec, Source
from provenance.atomic import atomic_path
from provenance.errors import ConfigError, TailguardError, TailguardWarning
from provenance.schema import Label

__all__ = ["DEFAULT_LM_POLICIES", "LMCollapseConfig", "LMCollapseRun", "LMWorkerError",
           "run_lm_collapse"]

DEFAULT_LM_POLICIES = ("replace", "retain:0.1", "accumulate", "scrape", "filter:oracle",
                       "filter:watermark", "filter:ledger", "filter:detector", "reweight")
DECODINGS = ("sample", "beam")
FAMILY = "lm"
#: Recipe defaults when ``model`` fine-tunes a pretrained LM (as the paper fine-tunes OPT-125m):
#: the from-scratch learning rate would wreck pretrained weights.
FINE_TUNE_DEFAULTS = {"lr": 5e-5, "epochs": 5, "weight_decay": 0.0}
#: Seconds between looks at the workers' finished generations (the progress bar) with jobs > 1.
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class LMCollapseConfig:
    """Everything that determines an LM run's results but the machine: the device and torch's
    CPU thread count change the order of floating-point sums, so a run repeats bit for bit on
    the same device with the same ``threads`` (recorded in ``run.json``), and ``jobs`` never
    changes a result.

    ``recipe`` overrides :class:`~collapse_eval.text.model.LMRecipe` fields (its model shape is
    used only when ``model`` is None, i.e. a GPT-2 trained from scratch; fine-tuning starts
    from :data:`FINE_TUNE_DEFAULTS`). ``max_train_docs``
    keeps the first that many human training documents, for quick runs. Each generated
    document is ``doc_tokens`` tokens (default: the block minus the prompt) continuing a
    ``prompt_tokens``-token prompt.
    """

    policies: tuple[str, ...] = DEFAULT_LM_POLICIES
    generations: int = 10
    seeds: tuple[int, ...] = (0,)
    dataset: str | None = None
    max_articles: int | None = None
    max_train_docs: int | None = None
    model: str | None = None
    gguf_file: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 16
    doc_tokens: int | None = None
    decoding: str = "sample"
    num_beams: int = 5
    temperature: float = 1.0
    top_k: int | None = None
    repetition_penalty: float | None = None
    watermark_bias: float = 2.0
    detector_fpr: float = 0.05
    detector_model: str = "generation-0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(p.name for p in parse_policies(self.policies)))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "recipe", dict(self.recipe))
        self.lm_recipe()  # validates the overrides
        for name in ("generations", "prompt_tokens", "num_beams"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_train_docs", "doc_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError("seeds must be a non-empty list of distinct integers >= 0")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {', '.join(DECODINGS)}, got "
                              f"{self.decoding!r}")
        if not self.watermark_bias > 0:
            raise ConfigError(f"watermark_bias must be > 0, got {self.watermark_bias}")
        if not 0.0 < self.detector_fpr < 1.0:
            raise ConfigError(f"detector_fpr must be in (0, 1), got {self.detector_fpr}")
        if self.doc_length < 1:
            raise ConfigError(f"prompt_tokens ({self.prompt_tokens}) leaves no room in a "
                              f"{self.lm_recipe().block}-token block; lower it or set doc_tokens")
        for policy in parse_policies(self.policies):
            if policy.tagger is not None and policy.tagger.kind == "noisy":
                raise ConfigError(f"policy {policy.name}: the LM family tags real text; use "
                                  f"one of {', '.join(evidence.TEXT_TAGGERS)}")

    def lm_recipe(self) -> LMRecipe:
        base = LMRecipe().to_dict()
        if self.model is not None:
            base.update(FINE_TUNE_DEFAULTS)
        return LMRecipe.from_dict({**base, **self.recipe})

    @property
    def doc_length(self) -> int:
        return self.doc_tokens or self.lm_recipe().block - self.prompt_tokens

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["policies"], data["seeds"] = list(self.policies), list(self.seeds)
        return data


@dataclass
class LMCollapseRun:
    """What :func:`run_lm_collapse` returns."""

    out_dir: Path
    results: pl.DataFrame
    plots: list[Path]
    seconds: float
    resumed_generations: int
    baselines: dict[str, float]


class LMWorkerError(TailguardError):
    """A policy chain failed in its worker process (``jobs > 1``); the other workers were
    stopped, and every finished generation is on disk for ``resume``."""

    def __init__(self, message: str, *, policy: str, seed: int) -> None:
        super().__init__(message)
        self.policy, self.seed = policy, seed


# ------------------------------------------------------------------------------------------------
# the shared setup of a run


class _Setup:
    """Corpus, tokenizer, human documents and the held-out blocks, built once per run."""

    def __init__(self, config: LMCollapseConfig, out: Path, device: str, *,
                 write: bool = True) -> None:
        """``write=False`` (a worker process): the run's human documents and tokenizer are
        already in ``out``, written by the parent; rebuild the same setup without writing."""
        from collapse_eval.text.data import load_text_corpus
        from collapse_eval.text.text_metrics import ngram_baselines
        from collapse_eval.text.tokenizer import encode_blocks

        self.config, self.out, self.device = config, out, device
        self.recipe = config.lm_recipe()
        corpus = load_text_corpus(config.dataset, max_articles=config.max_articles)
        self.corpus_stats = corpus.stats()
        self.tokenizer, self.tokenizer_name = self._tokenizer(corpus.train, write)
        self.vocab_size = (self.recipe.vocab_size if config.model is None
                           else int(self._pretrained.model.config.vocab_size))
        human = chunk_documents(self.tokenizer, corpus.train, config.doc_length)
        if config.max_train_docs:
            human = human.head(config.max_train_docs)
        self.human = human.with_columns(pl.lit(Label.HUMAN.value).alias(TRUTH))
        self.human_path = out / "data" / "human-train.parquet"
        if write:
            write_parquet(self.human, self.human_path)
        self.valid_docs = chunk_documents(self.tokenizer, corpus.valid, config.doc_length,
                                          prefix="valid").get_column("text").to_list()
        block = self.recipe.block
        texts = self.human.get_column("text").to_list()
        self.reference = HumanReference(
            train_pieces=encode_documents(self.tokenizer, texts),
            valid_blocks=encode_blocks(self.tokenizer, corpus.valid, block),
            test_blocks=encode_blocks(self.tokenizer, corpus.test, block),
            vocab_size=self.vocab_size,
        )
        self.fallback = np.concatenate(self.reference.train_pieces)[: config.prompt_tokens]
        self.baselines = ngram_baselines(self.reference.train_pieces,
                                         self.reference.test_blocks, self.vocab_size)

    @property
    def size(self) -> int:
        """M: documents per generation, the size of the human training set."""
        return self.human.height

    def _tokenizer(self, train: list[str], write: bool) -> tuple[Any, str]:
        from collapse_eval.text.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

        folder = self.out / "tokenizer"
        if self.config.model is not None:
            self._pretrained = self._load_pretrained()
            return self._pretrained.tokenizer, self.config.model
        if write and not (folder / "tokenizer.json").exists():
            save_tokenizer(train_tokenizer(train, self.recipe.vocab_size), folder)
        # Loaded back from disk even when just trained, so a resumed run tokenizes identically;
        # the folder is also the name the watermark key records.
        return load_tokenizer(folder), str(folder)

    def _load_pretrained(self) -> Any:
        from collapse_eval.text.model import load_pretrained, no_hf_progress_bars

        with no_hf_progress_bars():  # one load per generation: no bar each time
            return load_pretrained(self.config.model, gguf_file=self.config.gguf_file,
                                   device=self.device)

    def new_model(self, seed: int) -> Any:
        """A fresh model: GPT-2 from scratch, or the pretrained weights (the paper fine-tunes
        the same pretrained model every generation)."""
        from collapse_eval.text.model import new_model

        if self.config.model is None:
            return new_model(self.recipe, seed=seed, eot_id=self.tokenizer.eos_token_id)
        return self._load_pretrained().model

    def watermark_key(self, seed: int) -> Any:
        """The watermark key of a seed's chains (the same in every process)."""
        return evidence.watermark_key(self.tokenizer_name, self.vocab_size, len(self.tokenizer),
                                      seed=_seed(seed, "watermark"),
                                      bias=self.config.watermark_bias, device=self.device)


def _seed(*parts: int | str) -> int:
    return derive_seed(*parts) % 2**31


# ------------------------------------------------------------------------------------------------
# one chain: a policy (or the shared generation 0) for one seed


class _Chain:
    """The generations of one policy for one seed."""

    def __init__(self, setup: _Setup, seed: int, policy: Policy | None, ledger: Any,
                 watermark: Any) -> None:
        self.setup, self.seed, self.policy = setup, seed, policy
        self.ledger, self.watermark = ledger, watermark
        root = setup.out / f"seed-{seed}"
        self.shared = root
        self.folder = root if policy is None else root / policy_slug(policy.name)
        self.name = "shared" if policy is None else policy_slug(policy.name)
        self._detector: Any = None
        self._watermark_scorer: Any = None
        tagger = None if policy is None else policy.tagger
        # The lineage's ledger (see the module notes): only a policy that tags with the ledger
        # has one. A chain an older tailguard tagged against the run ledger has tags and no
        # lineage ledger: it goes on as it started (``legacy_ledger``), with jobs=1 only.
        self.lineage_path = (self.folder / "ledger.sqlite"
                             if tagger is not None and tagger.kind == "ledger" else None)
        self.legacy_ledger = (self.lineage_path is not None and not self.lineage_path.exists()
                              and any((self.folder / "tags" / "ledger").glob("*.parquet")))
        self._lineage: Any = None

    @property
    def generator(self) -> str:
        return f"tailguard-lm/{self.name}/seed-{self.seed}"

    def lookup_ledger(self) -> Any:
        """The ledger this chain's tagger looks up: its lineage's (opened, and the documents
        generation 0 published registered first, on first use), or for a legacy chain the run's."""
        if self.legacy_ledger:
            return self.ledger
        if self._lineage is None:
            from provenance.ledger import Ledger

            lineage = Ledger(self.lineage_path)
            try:
                first = pl.read_parquet(self.published_path(1))
                shared = f"tailguard-lm/shared/seed-{self.seed}"
                if lineage.stats().by_generator.get(shared, 0) < first.height:  # idempotent
                    lineage.register(first.get_column("text").to_list(), generator=shared,
                                     generation=1, doc_ids=first.get_column("id").to_list())
            except BaseException:
                lineage.close()
                raise
            self._lineage = lineage
        return self._lineage

    def close(self) -> None:
        if self._lineage is not None:
            self._lineage.close()
            self._lineage = None

    def generation_dir(self, generation: int) -> Path:
        base = self.shared if generation == 0 else self.folder
        return base / f"generation-{generation:06d}"

    def published_path(self, generation: int) -> Path:
        """Where the documents published *at* ``generation`` (by model g-1) are."""
        return self.generation_dir(generation - 1) / "published.parquet"

    def completed(self, generations: int) -> int:
        done = 0
        while done <= generations and (self.generation_dir(done) / "metrics.json").exists():
            done += 1
        return done

    # -- the training set ---------------------------------------------------------------------

    def sources(self, generation: int, folder: Path) -> tuple[Source, ...]:
        setup = self.setup
        if generation == 0:
            return (Source(setup.human_path, "human", name=ORIGINAL_SOURCE),)
        policy = self.policy
        published = {k: self.published_path(k) for k in range(1, generation + 1)}
        if policy.composition(generation, 1, 1).layout != "web":
            return policy.sources(generation, setup.human_path, published)
        return policy.sources(generation, None, {}, self.web(generation, folder))

    def spec(self, generation: int, sources: tuple[Source, ...]) -> MixtureSpec:
        size, seed = self.setup.size, _seed(self.seed, "mix", generation)
        if generation == 0:
            return MixtureSpec(sources=sources, target_docs=size, strategy="retain",
                               retain_original=1.0, seed=seed)
        return self.policy.mixture_spec(sources, generation, size, size, seed=seed)

    def web(self, generation: int, folder: Path) -> Path:
        """Generation ``generation``'s web: the human data and everything published, tagged."""
        parts = [("human", self.setup.human_path)]
        parts += [(f"generation-{k}", self.published_path(k)) for k in range(1, generation + 1)]
        tagger = self.policy.tagger
        kind = None if tagger is None else tagger.kind
        if kind == "discriminator":
            self._detector = self._discriminator(generation)
        frames = []
        for name, path in parts:
            frame = pl.read_parquet(path)
            if kind is None:
                frames.append(evidence.untagged(frame))
            elif kind == "oracle":
                frames.append(evidence.oracle_tagged(frame))
            else:
                frames.append(self._tagged(name, path, kind, generation, folder))
        web = pl.concat(frames, how="diagonal_relaxed")
        if kind is not None:
            self.rates = evidence.rates_against_truth(web)
        return write_parquet(web, folder / "web.parquet")

    def _tagged(self, name: str, path: Path, kind: str, generation: int, folder: Path
                ) -> pl.DataFrame:
        if kind == "discriminator":  # retrained every generation: tag everything again
            out = folder / "tags" / f"{name}.parquet"
        else:  # a fixed tagger: a part's tags never change
            out = self.folder / "tags" / kind / f"{name}.parquet"
            if out.exists():
                return pl.read_parquet(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        detector = self._detector
        if kind == "detector":
            detector = self._zero_shot()
        return evidence.tag_part(path, out, kind,
                                 ledger=self.lookup_ledger() if kind == "ledger" else None,
                                 watermark=self._scorer() if kind == "watermark" else None,
                                 detector=detector)

    def _scorer(self) -> Any:
        from provenance.watermark import WatermarkScorer

        if self._watermark_scorer is None:
            self._watermark_scorer = WatermarkScorer(self.watermark, self.setup.tokenizer,
                                                     device=self.setup.device)
        return self._watermark_scorer

    def _zero_shot(self) -> Any:
        if self._detector is None:
            from collapse_eval.text.model import load_model
            from provenance.models import LoadedModel, load_causal_lm

            setup = self.setup
            if setup.config.detector_model == "generation-0":
                scorer = LoadedModel("generation-0", load_model(
                    self.generation_dir(0) / "model", device=setup.device), setup.tokenizer,
                    setup.device)
            else:
                scorer = load_causal_lm(setup.config.detector_model, device=setup.device,
                                        dtype="float32")
            machine = pl.read_parquet(self.published_path(1)).get_column("text").head(2000)
            self._detector = evidence.zero_shot_detector(
                scorer, setup.valid_docs, machine.to_list(),
                target_fpr=setup.config.detector_fpr, device=setup.device)
        return self._detector

    def _discriminator(self, generation: int) -> Any:
        newest = pl.read_parquet(self.published_path(generation)).get_column("text").to_list()
        human = self.setup.human.get_column("text").to_list()
        return evidence.discriminator_detector(human, newest, self.setup.valid_docs,
                                               target_fpr=self.setup.config.detector_fpr)

    # -- one generation -----------------------------------------------------------------------

    def step(self, generation: int, first_model: Any) -> Any:
        """Train generation ``generation``, publish its documents, measure; returns the model."""
        from collapse_eval.text.model import save_model, train_lm

        setup, config = self.setup, self.setup.config
        folder = self.generation_dir(generation)
        if folder.exists():  # an interrupted attempt: start this generation over
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        timing: dict[str, float] = {}
        started = time.perf_counter()
        self.rates = None
        sources = self.sources(generation, folder)
        manifest = build_mixture(self.spec(generation, sources), folder / "mixture")
        mixture = pl.read_parquet(sorted((folder / "mixture").glob("part-*.parquet")))
        timing["tag_and_mix_seconds"] = time.perf_counter() - started
        pieces = encode_documents(setup.tokenizer, mixture.get_column("text").to_list())
        blocks = token_stream_blocks(pieces, setup.recipe.block)

        started = time.perf_counter()
        model = setup.new_model(_seed(self.seed, "init", generation))
        report = train_lm(model, blocks, recipe=setup.recipe, seed=_seed(self.seed, "train",
                                                                          generation),
                          valid_blocks=setup.reference.valid_blocks, device=setup.device)
        timing["train_seconds"] = time.perf_counter() - started

        started = time.perf_counter()
        published = self.publish(model, mixture, pieces, generation + 1, folder)
        timing["sample_seconds"] = time.perf_counter() - started

        first = model if generation == 0 else first_model
        metrics, data_ppl = generation_metrics(
            model, first, blocks, encode_documents(setup.tokenizer, published), setup.reference)
        truth = mixture.get_column(TRUTH).to_numpy() if TRUTH in mixture.columns else None
        metrics["synthetic_share"] = (float(np.mean(truth == Label.SYNTHETIC.value))
                                      if truth is not None else float("nan"))
        metrics["training_docs"] = float(mixture.height)
        metrics["training_tokens"] = float(blocks.numel())
        metrics["train_tokens_per_s"] = report.tokens_per_s
        if self.rates is not None:
            metrics["tagger_tpr"], metrics["tagger_fpr"] = self.rates
        write_parquet(pl.DataFrame({"perplexity": data_ppl}), folder / "data_perplexity.parquet")
        save_model(model, folder / "model", recipe=setup.recipe if config.model is None
                   else None)
        if generation >= 2:  # keep generation 0 and the newest model only
            shutil.rmtree(self.generation_dir(generation - 1) / "model", ignore_errors=True)
        record = {"generation": generation, "metrics": metrics,
                  "timing": {k: round(v, 3) for k, v in timing.items()},
                  "mixture": {"documents": mixture.height, "seconds": manifest.seconds},
                  "train": report.to_dict()}
        with atomic_path(folder / "metrics.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=float) + "\n", encoding="utf-8")
        return model

    def publish(self, model: Any, mixture: pl.DataFrame, pieces: list[np.ndarray],
                generation: int, folder: Path) -> list[str]:
        """Model ``generation - 1`` writes the documents of ``generation``: watermarked,
        registered in the ledger with their parents, saved as the web would see them."""
        setup, config = self.setup, self.setup.config
        prompts, parents = prompts_from(pieces, setup.size, config.prompt_tokens, setup.fallback)
        new = self._generate(model, prompts, _seed(self.seed, "sample", generation))
        texts = decode_documents(setup.tokenizer, new[:, config.prompt_tokens:])
        ids = [f"{self.name}-s{self.seed}-g{generation:03d}-{i:06d}" for i in range(len(texts))]
        parent_ids = [[p] for p in mixture.get_column("id").gather(parents).to_list()]
        self.ledger.register(texts, generator=self.generator, generation=generation,
                             doc_ids=ids, parent_ids=parent_ids)
        if self.lineage_path is not None and not self.legacy_ledger:
            self.lookup_ledger().register(texts, generator=self.generator,
                                          generation=generation, doc_ids=ids,
                                          parent_ids=parent_ids)
        frame = document_frame(ids, texts, **{TRUTH: [Label.SYNTHETIC.value] * len(texts)})
        write_parquet(frame, folder / "published.parquet")
        return texts

    def _generate(self, model: Any, prompts: torch.Tensor, seed: int) -> torch.Tensor:
        from collapse_eval.text.sampling import beam_generate, sample_continuations

        setup, config = self.setup, self.setup.config
        processor = self.watermark.generation_config().construct_processor(
            self.watermark.vocab_size, setup.device)
        if config.decoding == "beam":
            return beam_generate(model, prompts, config.doc_length, num_beams=config.num_beams,
                                 logits_processors=[processor],
                                 repetition_penalty=config.repetition_penalty,
                                 device=setup.device)
        batch = 1024 if setup.device.startswith("cuda") else 256
        return sample_continuations(model, prompts, config.doc_length,
                                    temperature=config.temperature, top_k=config.top_k,
                                    logits_processors=[processor], seed=seed, batch_size=batch,
                                    device=setup.device)


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
    (seed, policy) chains run at a time, each in its own spawned process with ``threads`` torch
    threads (1 when None); each worker holds about 1 GB of memory. The results are those of
    ``jobs=1`` (for the same ``threads``), and a run may be resumed with other ``jobs`` than it
    started with. A chain that fails stops the others and raises :class:`LMWorkerError`; every
    finished generation stays on disk for ``resume``. Workers are spawned, so they import the
    caller's main module: a script must call this under ``if __name__ == "__main__":``.
    """
    import multiprocessing

    from provenance.ledger import Ledger
    from provenance.models import resolve_device

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer, got {jobs!r}")
    if jobs > 1 and getattr(multiprocessing.current_process(), "_inheriting", False):
        # A worker importing a main module that calls this at its top level: stop before it
        # touches the run folder (with overwrite, it would delete the parent's run).
        raise ConfigError("run_lm_collapse(jobs > 1) was called while a worker process was "
                          "importing the main module; call it under "
                          "`if __name__ == \"__main__\":`")
    started = time.perf_counter()
    out = Path(out_dir)
    device = resolve_device(device)
    prepare_run_dir(out, config, resume, overwrite)
    policies = parse_policies(config.policies)
    resumed = 0
    with torch_threads(threads), Ledger(out / "ledger.sqlite") as ledger:
        setup = _Setup(config, out, device)
        total = len(config.seeds) * (1 + len(policies) * config.generations)
        with tqdm(total=total, desc="lm", unit="gen", disable=None if progress else True,
                  dynamic_ncols=True) as bar:
            if jobs > 1:
                resumed = _run_in_workers(setup, policies, ledger, bar, jobs, threads or 1)
            else:
                for seed in config.seeds:
                    key = setup.watermark_key(seed)
                    shared = _Chain(setup, seed, None, ledger, key)
                    resumed += shared.completed(0)
                    first = _first_model(shared, bar)
                    for policy in policies:
                        chain = _Chain(setup, seed, policy, ledger, key)
                        if chain.legacy_ledger:
                            _warn_legacy_ledger(chain)
                        done = max(1, chain.completed(config.generations))
                        resumed += done - 1
                        bar.update(done - 1)
                        bar.set_description(f"lm {policy.name} seed {seed}")
                        try:
                            for generation in range(done, config.generations + 1):
                                chain.step(generation, first)
                                bar.update(1)
                        finally:
                            chain.close()
    results = collect_lm_results(out, config)
    with atomic_path(out / "results.parquet") as tmp:
        results.write_parquet(tmp)
    made: list[Path] = []
    if plots:
        made = plot_results(results, out / "plots")
        made += plot_data_perplexity(out, config)
    seconds = time.perf_counter() - started
    write_run_info(out, config, device, seconds, resumed,
                   documents_per_generation=setup.size, corpus=setup.corpus_stats,
                   baselines={f"test_{k}": round(v, 3) for k, v in setup.baselines.items()},
                   recipe=setup.recipe.to_dict(),
                   # Torch's thread count changes floating-point sums, so a rerun must match it.
                   threads={"requested": threads, "jobs": jobs,
                            "torch_default": torch.get_num_threads()})
    return LMCollapseRun(out, results, made, seconds, resumed, setup.baselines)


def _first_model(shared: _Chain, bar: Any, *, load: bool = True) -> Any:
    """Generation 0 of a seed: trained (or reloaded) once and shared by every policy.

    ``load=False`` (the workers load it themselves): train it if needed, return nothing."""
    from collapse_eval.text.model import load_model

    if shared.completed(0):
        bar.update(1)
        return (load_model(shared.generation_dir(0) / "model", device=shared.setup.device)
                if load else None)
    bar.set_description(f"lm generation 0 seed {shared.seed}")
    model = shared.step(0, None)
    bar.update(1)
    _warn_if_no_better_than_bigram(shared)
    return model if load else None


def _warn_legacy_ledger(chain: _Chain) -> None:
    warnings.warn(f"{chain.folder} was started by an older tailguard that tagged against the "
                  "run's shared ledger; it goes on that way, so its tags depend on the policies "
                  "run before it (a new run uses the lineage's own ledger)", TailguardWarning,
                  stacklevel=3)


# ------------------------------------------------------------------------------------------------
# policy chains in worker processes (jobs > 1)


def _run_in_workers(setup: _Setup, policies: list[Policy], ledger: Any, bar: Any, jobs: int,
                    threads: int) -> int:
    """Train each seed's generation 0 here, then run the chains ``jobs`` at a time in spawned
    worker processes; returns the generations that were already complete."""
    import multiprocessing

    config, generations = setup.config, setup.config.generations
    chains = [_Chain(setup, seed, policy, ledger, None)
              for seed in config.seeds for policy in policies]
    for chain in chains:
        if chain.legacy_ledger:
            raise ConfigError(f"{chain.folder} was started by an older tailguard that tagged "
                              "against the run's shared ledger (its tags depend on the policies "
                              "run before it, so workers could change them): resume this run "
                              "with --jobs 1")
    resumed = 0
    for seed in config.seeds:
        shared = _Chain(setup, seed, None, ledger, setup.watermark_key(seed))
        resumed += shared.completed(0)
        _first_model(shared, bar, load=False)
    done = [max(1, chain.completed(generations)) - 1 for chain in chains]
    resumed += sum(done)
    bar.update(sum(done))
    todo = [i for i, chain in enumerate(chains) if done[i] < generations]
    if not todo:
        return resumed
    workers = min(jobs, len(todo))
    bar.set_description(f"lm {len(todo)} chains, {workers} at once")
    base = {"config": config.as_dict(), "out": str(setup.out), "device": setup.device,
            "threads": threads}
    executor = ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context("spawn"))
    futures: dict[Future, int] = {}
    try:
        for i in todo:
            task = {**base, "seed": chains[i].seed, "policy": chains[i].policy.name}
            futures[executor.submit(_chain_worker, task)] = i
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            for i, chain in enumerate(chains):  # the bar moves with each finished generation
                now = max(1, chain.completed(generations)) - 1
                bar.update(max(0, now - done[i]))
                done[i] = max(done[i], now)
            for future in sorted(finished, key=futures.__getitem__):
                error = future.exception()
                if error is not None:
                    raise _worker_error(chains[futures[future]], error) from error
    except BaseException:
        _stop_workers(executor, futures)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return resumed


def _stop_workers(executor: ProcessPoolExecutor, futures: dict[Future, int]) -> None:
    """Cancel the chains not started and terminate the running ones: a generation cut short
    has no metrics.json, so a resume runs it again from its start."""
    for future in futures:
        future.cancel()
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    # Before 3.14: the pool's processes; once one is gone the pool is broken, and its manager
    # terminates and joins the rest (shutdown waits for that).
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def _worker_error(chain: _Chain, error: BaseException) -> LMWorkerError:
    """The parent's error for a chain that failed in its worker: the policy, the worker's
    exception and, for an unexpected one, the worker's traceback."""
    name, seed = chain.policy.name, chain.seed
    kept = "finished generations are kept: continue with --resume once the cause is fixed"
    if isinstance(error, BrokenProcessPool):
        message = (f"lm policy {name} (seed {seed}): a worker process died (killed, or out of "
                   f"memory? each worker holds about 1 GB: lower --jobs); {kept}")
    else:
        message = (f"lm policy {name} (seed {seed}) failed in its worker process: "
                   f"{type(error).__name__}: {error}; {kept}")
    # The worker's traceback (concurrent.futures attaches it as the cause), unless the error is
    # one tailguard raised on purpose, whose message says it all.
    remote = str(error.__cause__ or "").strip().strip("'\"").strip()
    if remote and not isinstance(error, TailguardError):
        message += f"\nworker traceback:\n{remote}"
    return LMWorkerError(message, policy=name, seed=seed)


#: A worker's setup, rebuilt once per process (the pool hands a process several chains).
_WORKER_SETUP: dict[tuple[str, str, str], _Setup] = {}


def _chain_worker(task: dict[str, Any]) -> None:
    """In a worker process: run one (seed, policy) chain's remaining generations.

    ``task`` is plain data (the config as a dict, the run folder, device, threads, seed and
    policy name). The setup is rebuilt from the run folder without writing to it (the corpus
    split and chunking are deterministic, the tokenizer is the one saved there), the
    generation-0 model is loaded from disk, and the run ledger is opened by this process.
    """
    from collapse_eval.text.model import load_model
    from provenance.ledger import Ledger

    config = _config_from_dict(task["config"])
    out, device, seed = Path(task["out"]), task["device"], int(task["seed"])
    policy = parse_policies([task["policy"]])[0]
    with torch_threads(int(task["threads"])):
        key = (str(out), config_hash(task["config"]), device)
        setup = _WORKER_SETUP.get(key)
        if setup is None:
            _WORKER_SETUP.clear()
            setup = _WORKER_SETUP[key] = _Setup(config, out, device, write=False)
        with Ledger(out / "ledger.sqlite") as ledger:
            chain = _Chain(setup, seed, policy, ledger, setup.watermark_key(seed))
            try:
                first = load_model(chain.generation_dir(0) / "model", device=device)
                for generation in range(max(1, chain.completed(config.generations)),
                                        config.generations + 1):
                    chain.step(generation, first)
            finally:
                chain.close()


def _warn_if_no_better_than_bigram(shared: _Chain) -> None:
    """A generation-0 model that does not beat the bigram baseline makes the tail metrics
    measure nothing: say so once, with the numbers and what to change."""
    import warnings

    from provenance.errors import TailguardWarning

    record = json.loads((shared.generation_dir(0) / "metrics.json").read_text(encoding="utf-8"))
    ppl, bigram = record["metrics"]["test_perplexity"], shared.setup.baselines["bigram_ppl"]
    if ppl >= bigram:
        warnings.warn(f"generation 0 (seed {shared.seed}) has test perplexity {ppl:.1f}, no "
                      f"better than the bigram baseline's {bigram:.1f}: the model has not learned "
                      "enough for its collapse to mean anything; give it more data "
                      "(--max-train-docs), epochs or width (--recipe)", TailguardWarning,
                      stacklevel=3)


def collect_lm_results(out_dir: Path, config: LMCollapseConfig) -> pl.DataFrame:
    """Long-format results (as the numeric families'): generation 0 repeated under every policy."""
    run_id = config_hash(config.as_dict())
    rows: list[tuple] = []
    for seed in config.seeds:
        for name in config.policies:
            for generation in range(config.generations + 1):
                base = Path(out_dir) / f"seed-{seed}"
                folder = base if generation == 0 else base / policy_slug(name)
                record = json.loads((folder / f"generation-{generation:06d}" / "metrics.json")
                                    .read_text(encoding="utf-8"))
                rows += [(FAMILY, name, seed, generation, metric, float(value), run_id)
                         for metric, value in record["metrics"].items()]
    frame = pl.DataFrame(rows, schema=list(RESULT_COLUMNS), orient="row")
    return frame.filter(pl.col("value").is_not_nan())


def plot_data_perplexity(out_dir: Path, config: LMCollapseConfig) -> list[Path]:
    """The paper's histograms: per-sequence perplexity of each generation's training data under
    the generation-0 model, one panel per policy, one curve per generation (first seed)."""
    import matplotlib

    from collapse_eval.plots import saved_figure

    seed = config.seeds[0]
    base = Path(out_dir) / f"seed-{seed}"
    policies = list(config.policies)
    gens = sorted({0, config.generations // 2, config.generations})
    values = {}
    for name in policies:
        for g in gens:
            folder = base if g == 0 else base / policy_slug(name)
            path = folder / f"generation-{g:06d}" / "data_perplexity.parquet"
            values[name, g] = pl.read_parquet(path).get_column("perplexity").to_numpy()
    every = np.concatenate(list(values.values()))
    bins = np.logspace(np.log10(max(every.min(), 1.0)), np.log10(every.max() + 1), 50)
    path = Path(out_dir) / "plots" / "data_perplexity_histograms.png"
    with saved_figure(path, figsize=(3.2 * len(policies), 3.0)) as (fig, _):
        fig.clf()
        axes = fig.subplots(1, len(policies), sharex=True, sharey=True, squeeze=False)[0]
        colors = [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, len(gens))]
        for ax, name in zip(axes, policies, strict=True):
            for g, color in zip(gens, colors, strict=True):
                ax.hist(values[name, g], bins=bins, histtype="step", density=True, color=color,
                        label=f"generation {g}")
            ax.set_xscale("log")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("perplexity under generation 0", fontsize=8)
        axes[0].set_ylabel("density")
        axes[-1].legend(fontsize=7)
    return [path]


def load_lm_config(out_dir: str | os.PathLike) -> LMCollapseConfig:
    """The config of an LM run folder (to report or resume it)."""
    return _config_from_dict(json.loads((Path(out_dir) / "config.json")
                                        .read_text(encoding="utf-8")))


def _config_from_dict(data: dict[str, Any]) -> LMCollapseConfig:
    return LMCollapseConfig(**{k: tuple(v) if isinstance(v, list) and k != "recipe" else v
                               for k, v in data.items()})
