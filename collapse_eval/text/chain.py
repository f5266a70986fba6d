"""One run's shared setup and its chains: generation 0 of a seed, and each policy's generations.

A :class:`RunSetup` holds what every chain of a run reads (corpus, tokenizer, human documents,
held-out blocks); a :class:`Chain` is one (seed, policy) lineage and knows how to build, train,
measure and publish one generation of it. Both are rebuilt identically in worker processes
(:mod:`collapse_eval.engine`'s workers) from the run folder.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from collapse_eval.disk_space import generation_needs, require_free_space
from collapse_eval.policies import ORIGINAL_SOURCE, Policy, policy_slug
from collapse_eval.rng import derive_seed
from collapse_eval.run_lock import mark_chain_worker
from collapse_eval.text import evidence
from collapse_eval.text.config import LMCollapseConfig
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
from mixers.build import build_mixture
from mixers.manifest import mixture_frame
from mixers.spec import MixtureSpec, Source
from provenance.atomic import atomic_path
from provenance.errors import TailguardWarning
from provenance.schema import Label

#: Most known-synthetic documents the ``detector`` tagger is fitted or calibrated on.
MAX_DETECTOR_DOCS = 2000

# ------------------------------------------------------------------------------------------------
# the shared setup of a run


class RunSetup:
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
        from collapse_eval.text.model import load_pretrained
        from provenance.models import no_hf_progress_bars

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

    def _shape_model(self) -> Any:
        """A model of the run's shape, to measure (not to train)."""
        return self.new_model(0) if self.config.model is None else self._pretrained.model

    @functools.cached_property
    def model_bytes(self) -> int:
        """Bytes of the model's weights, what a generation's disk needs scale with."""
        return sum(p.numel() * p.element_size() for p in self._shape_model().parameters())

    def model_info(self) -> dict[str, Any]:
        """What ``run.json`` says of the model: which one, how big, on which tokens."""
        return {"model": self.config.model or "GPT-2 trained from scratch",
                "parameters": sum(p.numel() for p in self._shape_model().parameters()),
                "vocab_size": self.vocab_size, "tokenizer": self.tokenizer_name}

    def watermark_key(self, seed: int) -> Any:
        """The watermark key of a seed's chains (the same in every process)."""
        return evidence.watermark_key(self.tokenizer_name, self.vocab_size, len(self.tokenizer),
                                      seed=_seed(seed, "watermark"),
                                      bias=self.config.watermark_bias, device=self.device)


def chain_dir(out: Path, seed: int, policy: str | None) -> Path:
    """The folder of a (seed, policy) chain of a run (``policy`` None: the seed's shared one)."""
    base = out / f"seed-{seed}"
    return base if policy is None else base / policy_slug(policy)


def generation_dir(out: Path, seed: int, policy: str | None, generation: int) -> Path:
    """The folder of one generation of a chain: generation 0 is the seed's, shared by every
    policy."""
    return chain_dir(out, seed, policy if generation else None) / f"generation-{generation:06d}"


def training_state_dir(generation_folder: Path) -> Path:
    """Where a generation's training state lives while it trains: beside the generation's
    folder (which a restart clears), until the generation is done."""
    return generation_folder.with_name(f".{generation_folder.name}.training")


def _seed(*parts: int | str) -> int:
    return derive_seed(*parts) % 2**31


# ------------------------------------------------------------------------------------------------
# one chain: a policy (or the shared generation 0) for one seed


class Chain:
    """The generations of one policy for one seed."""

    def __init__(self, setup: RunSetup, seed: int, policy: Policy | None, ledger: Any,
                 watermark: Any) -> None:
        self.setup, self.seed, self.policy = setup, seed, policy
        self.ledger, self.watermark = ledger, watermark
        self.folder = chain_dir(setup.out, seed, None if policy is None else policy.name)
        self.name = "shared" if policy is None else policy_slug(policy.name)
        self._detector: Any = None
        self._detector_known: tuple[int, ...] | None = None
        self._detector_lm: Any = None
        self._watermark_scorer: Any = None
        tagger = None if policy is None else policy.tagger
        # The lineage's ledger (see the module notes of collapse_eval.text.world): only a policy
        # that tags with the ledger has one.
        self.lineage_path = (self.folder / "ledger.sqlite"
                             if tagger is not None and tagger.kind == "ledger" else None)
        self._lineage: Any = None

    @property
    def _label(self) -> str:
        return "the shared chain" if self.policy is None else f"policy {self.policy.name}"

    @property
    def generator(self) -> str:
        return f"tailguard-lm/{self.name}/seed-{self.seed}"

    def lookup_ledger(self) -> Any:
        """The ledger this chain's tagger looks up: its lineage's (opened, and the documents
        generation 0 published registered first, on first use)."""
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
        return generation_dir(self.setup.out, self.seed,
                              None if self.policy is None else self.policy.name, generation)

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
            # The newest part apart as well: the web's TPR mixes every generation's text, and
            # how well the tagger catches each new generation is what changes over the run.
            newest = evidence.rates_against_truth(frames[-1])[0] if generation else math.nan
            self.rates = (*evidence.rates_against_truth(web), newest)
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
            detector = self._detector_at(generation)
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

    def _detector_at(self, generation: int) -> Any:
        """The ``detector`` tagger's detector at ``generation`` (``detector_source``).

        ``trained`` (the default) is fitted anew each generation on what the lab knows it
        generated, against the held-out human documents, which no model of the run trained on
        (never the web's): generation 1's documents at generation 1, then the documents
        published *before* the newest part (up to 2,000, evenly from each earlier generation),
        so from generation 2 on the newest documents are always tagged by a detector that never
        saw them. Each part of the web is tagged once, when it is first scraped, by the detector
        of that generation; the per-token statistics are cached in the chain's
        ``detector/token-terms.sqlite``, so a refit scores only the new documents (generation 2,
        which knows no more than generation 1, keeps its detector). ``shipped`` and
        ``zero-shot`` are calibrated once, on generation 1's documents.
        """
        setup = self.setup
        config = setup.config
        known = tuple(range(1, max(2, generation))) if config.detector_source == "trained" \
            else (1,)
        if self._detector is not None and self._detector_known == known:
            return self._detector
        each = MAX_DETECTOR_DOCS // len(known)
        machine = [text for k in known for text in pl.read_parquet(self.published_path(k))
                   .get_column("text").head(each).to_list()]
        if config.detector_source == "shipped":
            self._detector = evidence.shipped_detector(
                setup.valid_docs, machine, target_fpr=config.detector_fpr, device=setup.device)
        elif config.detector_source == "zero-shot":
            self._detector = evidence.zero_shot_detector(
                self._detector_scorer(), setup.valid_docs, machine,
                target_fpr=config.detector_fpr, device=setup.device)
        else:
            folder = self.folder / "detector"
            self._detector, report = evidence.trained_detector(
                self._detector_scorer(), setup.valid_docs, machine,
                store=folder / "token-terms.sqlite", target_fpr=config.detector_fpr,
                device=setup.device, seed=_seed(self.seed, "detector"))
            report["fitted_on"] = {"generation": generation,
                                   "synthetic_from_generations": list(known),
                                   "synthetic_documents": len(machine),
                                   "human_documents": len(setup.valid_docs)}
            path = folder / f"generation-{generation:06d}" / "training_report.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(report, indent=2, default=float) + "\n",
                               encoding="utf-8")
        self._detector_known = known
        return self._detector

    def _detector_scorer(self) -> Any:
        """The scoring model ``detector_model`` names (``generation-0``: the run's first model,
        which trained on the web's human documents), loaded once per chain."""
        from collapse_eval.text.model import load_model
        from provenance.models import LoadedModel, load_causal_lm

        if self._detector_lm is None:
            setup = self.setup
            if setup.config.detector_model == "generation-0":
                self._detector_lm = LoadedModel("generation-0", load_model(
                    self.generation_dir(0) / "model", device=setup.device), setup.tokenizer,
                    setup.device)
            else:
                self._detector_lm = load_causal_lm(setup.config.detector_model,
                                                   device=setup.device, dtype="float32")
        return self._detector_lm

    def _discriminator(self, generation: int) -> Any:
        newest = pl.read_parquet(self.published_path(generation)).get_column("text").to_list()
        human = self.setup.human.get_column("text").to_list()
        return evidence.discriminator_detector(human, newest, self.setup.valid_docs,
                                               target_fpr=self.setup.config.detector_fpr)

    # -- one generation -----------------------------------------------------------------------

    def step(self, generation: int, first_model: Any) -> Any:
        """Train generation ``generation``, publish its documents, measure; returns the model.

        While it works, this process names itself in the chain's folder (``collapse status``
        shows which process runs which chain)."""
        with mark_chain_worker(self.folder, generation=generation):
            return self._step(generation, first_model)

    def _step(self, generation: int, first_model: Any) -> Any:
        from collapse_eval.text.model import save_model, train_lm
        from collapse_eval.text.train_state import drop_state

        setup, config = self.setup, self.setup.config
        folder = self.generation_dir(generation)
        if folder.exists():  # an interrupted attempt: start this generation over
            shutil.rmtree(folder)
        require_free_space(setup.out, generation_needs(setup.model_bytes),
                           what=f"generation {generation} of {self._label} (seed {self.seed})")
        folder.mkdir(parents=True)
        timing: dict[str, float] = {}
        started = time.perf_counter()
        self.rates = None
        sources = self.sources(generation, folder)
        manifest = build_mixture(self.spec(generation, sources), folder / "mixture")
        mixture = mixture_frame(folder / "mixture")  # the shards the manifest lists, checked
        timing["tag_and_mix_seconds"] = time.perf_counter() - started
        pieces = encode_documents(setup.tokenizer, mixture.get_column("text").to_list())
        blocks = token_stream_blocks(pieces, setup.recipe.block)

        started = time.perf_counter()
        model = setup.new_model(_seed(self.seed, "init", generation))
        # A killed run loses at most an epoch of this generation's training.
        training_state = training_state_dir(folder)
        report = train_lm(model, blocks, recipe=setup.recipe, seed=_seed(self.seed, "train",
                                                                          generation),
                          valid_blocks=setup.reference.valid_blocks, device=setup.device,
                          state_dir=training_state)
        # A generation resumed from saved epochs trained partly in an earlier process: count
        # those epochs too, or its record (and the projections made from it) would say it was
        # nearly free.
        timing["train_seconds"] = max(time.perf_counter() - started,
                                      sum(epoch["seconds"] for epoch in report.history))

        published = self.publish(model, mixture, pieces, generation + 1, folder, timing)

        started = time.perf_counter()
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
            metrics["tagger_tpr"], metrics["tagger_fpr"], metrics["tagger_tpr_newest"] = self.rates
        write_parquet(pl.DataFrame({"perplexity": data_ppl}), folder / "data_perplexity.parquet")
        save_model(model, folder / "model", recipe=setup.recipe if config.model is None
                   else None)
        if generation >= 2:  # keep generation 0 and the newest model only
            shutil.rmtree(self.generation_dir(generation - 1) / "model", ignore_errors=True)
        timing["metrics_seconds"] = time.perf_counter() - started
        record = {"generation": generation, "metrics": metrics,
                  "timing": {k: round(v, 3) for k, v in timing.items()},
                  "mixture": {"documents": mixture.height, "seconds": manifest.seconds},
                  "train": report.to_dict()}
        with atomic_path(folder / "metrics.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=float) + "\n", encoding="utf-8")
        drop_state(training_state)
        return model

    def publish(self, model: Any, mixture: pl.DataFrame, pieces: list[np.ndarray],
                generation: int, folder: Path, timing: dict[str, float]) -> list[str]:
        """Model ``generation - 1`` writes the documents of ``generation``: watermarked,
        registered in the ledger with their parents, saved as the web would see them.

        Sampling and registering are timed apart into ``timing``: the ledger's share grows
        with the ledger, the sampler's does not."""
        setup, config = self.setup, self.setup.config
        started = time.perf_counter()
        prompts, parents = prompts_from(pieces, setup.size, config.prompt_tokens, setup.fallback)
        new = self._generate(model, prompts, _seed(self.seed, "sample", generation))
        timing["sample_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        texts = decode_documents(setup.tokenizer, new[:, config.prompt_tokens:])
        ids = [f"{self.name}-s{self.seed}-g{generation:03d}-{i:06d}" for i in range(len(texts))]
        parent_ids = [[p] for p in mixture.get_column("id").gather(parents).to_list()]
        self.ledger.register(texts, generator=self.generator, generation=generation,
                             doc_ids=ids, parent_ids=parent_ids)
        if self.lineage_path is not None:
            self.lookup_ledger().register(texts, generator=self.generator,
                                          generation=generation, doc_ids=ids,
                                          parent_ids=parent_ids)
        frame = document_frame(ids, texts, **{TRUTH: [Label.SYNTHETIC.value] * len(texts)})
        write_parquet(frame, folder / "published.parquet")
        timing["register_seconds"] = time.perf_counter() - started
        return texts

    def _generate(self, model: Any, prompts: torch.Tensor, seed: int) -> torch.Tensor:
        from collapse_eval.text.sampling import beam_generate, sample_continuations

        setup, config = self.setup, self.setup.config
        processor = self.watermark.generation_config().construct_processor(
            self.watermark.vocab_size, setup.device)
        cuda = setup.device.startswith("cuda")
        if config.decoding == "beam":
            # num_beams x batch sequences per forward: a GPU wants hundreds, a CPU core dozens
            return beam_generate(model, prompts, config.doc_length, num_beams=config.num_beams,
                                 batch_size=128 if cuda else 16,
                                 logits_processors=[processor],
                                 repetition_penalty=config.repetition_penalty,
                                 device=setup.device)
        batch = 1024 if cuda else 256
        return sample_continuations(model, prompts, config.doc_length,
                                    temperature=config.temperature, top_k=config.top_k,
                                    logits_processors=[processor], seed=seed, batch_size=batch,
                                    device=setup.device)


def warn_if_no_better_than_bigram(shared: Chain) -> None:
    """A generation-0 model that does not beat the bigram baseline makes the tail metrics
    measure nothing: say so once, with the numbers and what to change."""
    record = json.loads((shared.generation_dir(0) / "metrics.json").read_text(encoding="utf-8"))
    ppl, bigram = record["metrics"]["test_perplexity"], shared.setup.baselines["bigram_ppl"]
    if ppl >= bigram:
        warnings.warn(f"generation 0 (seed {shared.seed}) has test perplexity {ppl:.1f}, no "
                      f"better than the bigram baseline's {bigram:.1f}: the model has not learned "
                      "enough for its collapse to mean anything; give it more data "
                      "(--max-train-docs), epochs or width (--recipe)", TailguardWarning,
                      stacklevel=3)
