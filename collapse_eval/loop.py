"""The tensor families' recursion (gaussian, gmm, vae): fit, publish samples, build the next
training set, refit -- the world :func:`collapse_eval.engine.run_collapse` drives for them.

Generation 0 trains on the original data. At generation g >= 1 the previous model publishes M
samples and the policy builds the training set from the original data and what has been
published (:mod:`collapse_eval.policies`, run on tensors by :mod:`collapse_eval.tensor_mix`, with
the tags of :mod:`collapse_eval.taggers`). All chains (seeds) of a policy run as one batch; every
chain sees the same original data across policies, so policies are compared on paired data.

Each generation is checkpointed as one safetensors file (the models of every chain and their
metrics). The samples a model publishes are a pure function of its parameters and the counter
RNG, so a resumed run regenerates the history it needs instead of storing it, and gives results
identical to an uninterrupted run.

Output folder::

    config.json              what was run (a resume must match it)
    checkpoints/<policy>/generation-000012.safetensors
    artifacts/<policy>/...   what a family draws per generation (the VAE's sample grids)
    results.parquet          family, policy, seed, generation, metric, value, run_id
    plots/<metric>.png       mean and 95% band across seeds per policy
    run.json                 wall time, device, versions
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

from collapse_eval.engine import RESULT_COLUMNS, World, config_hash
from collapse_eval.families import (
    TENSOR_OPTIONS,
    MetricContext,
    NumericFamily,
    Params,
    family_class,
    make_family,
)
from collapse_eval.policies import Policy, generated_source, parse_policies, policy_slug
from collapse_eval.rng import ChainRandom
from collapse_eval.taggers import discriminator_tags, noisy_tags, oracle_tags, tagger_rates
from collapse_eval.tensor_mix import (
    ORIGIN_GENERATED,
    ORIGIN_ORIGINAL,
    UNKNOWN,
    TensorSource,
    execute,
    uids_for,
)
from provenance.errors import ConfigError
from provenance.outputs import writing
from provenance.tensor_files import save_torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class CollapseConfig:
    """Everything that determines a run's results (the device only changes rounding)."""

    family: str
    policies: tuple[str, ...]
    generations: int = 100
    samples: int = 100
    seeds: tuple[int, ...] = (0,)
    original_size: int | None = None
    heldout: int = 2000
    dtype: str | None = None
    family_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(p.name for p in parse_policies(self.policies)))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        for name in ("generations", "samples", "heldout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.original_size is not None and self.original_size < 1:
            raise ConfigError(f"original_size must be a positive integer, got {self.original_size}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds must be a non-empty list of distinct integers")
        if any(s < 0 for s in self.seeds):
            raise ConfigError("seeds must be >= 0")
        if self.dtype is None:
            object.__setattr__(self, "dtype", family_class(self.family).default_dtype)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def pool_size(self) -> int:
        """Size of the original data (defaults to the samples per generation, as in the paper)."""
        return self.original_size or self.samples

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["policies"] = list(self.policies)
        data["seeds"] = list(self.seeds)
        return data

    def run_id(self) -> str:
        return config_hash(self.as_dict())

    def make_family(self, device: str) -> NumericFamily:
        return make_family(self.family, dtype=DTYPES[self.dtype], device=device,
                           **self.family_options)


# ------------------------------------------------------------------------------------------------
# checkpoints


def _checkpoint_path(folder: Path, generation: int) -> Path:
    return folder / f"generation-{generation:06d}.safetensors"


def _save_generation(folder: Path, generation: int, params: Params,
                     metrics: dict[str, torch.Tensor]) -> None:
    names = sorted(metrics)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    tensors["metrics"] = torch.stack(
        [metrics[n].detach().double().cpu() for n in names], dim=1).contiguous()
    meta = {"generation": str(generation), "metrics": json.dumps(names)}
    path = _checkpoint_path(folder, generation)
    with writing(path):
        save_torch(tensors, path, meta)


def _load_generation(path: Path, device: str) -> tuple[Params, list[str], torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        names = json.loads(fh.metadata()["metrics"])
    tensors = load_file(str(path), device="cpu")
    params = {k.removeprefix("model."): v.to(device) for k, v in tensors.items()
              if k.startswith("model.")}
    return params, names, tensors["metrics"]


def _completed(folder: Path, generations: int) -> int:
    """How many consecutive generations from 0 are checkpointed."""
    done = 0
    while done <= generations and _checkpoint_path(folder, done).exists():
        done += 1
    return done


# ------------------------------------------------------------------------------------------------
# one policy, all seeds


class _PolicyRun:
    """The recursion of one policy over a batch of chains."""

    def __init__(self, config: CollapseConfig, policy: Policy, family: NumericFamily,
                 rng: ChainRandom, folder: Path, device: str) -> None:
        self.config, self.policy, self.family, self.rng = config, policy, family, rng
        self.folder, self.device = folder, device
        self.artifacts = folder.parent.parent / "artifacts" / folder.name
        self.chains = rng.chains
        self.original = family.original(rng, config.pool_size, "original")
        self.heldout = family.original(rng, config.heldout, "heldout")
        self.published: dict[int, torch.Tensor] = {}
        self.first: Params = {}
        self._noisy_cache: dict[int, np.ndarray] = {}

    # -- sources ------------------------------------------------------------------------------

    def _block(self, generation: int, x: torch.Tensor, role: str, name: str) -> TensorSource:
        n = x.shape[1]
        origin = ORIGIN_ORIGINAL if generation == 0 else ORIGIN_GENERATED
        return TensorSource(name, role, x, uids_for(generation, n),
                            np.full(n, origin, dtype=np.int8), np.full(n, generation, np.int64))

    def _web(self, generation: int) -> TensorSource:
        blocks = [self._block(0, self.original, "from-tags", "web")]
        blocks += [self._block(g, self.published[g], "from-tags", "web")
                   for g in range(1, generation + 1)]
        web = TensorSource("web", "from-tags", torch.cat([b.x for b in blocks], dim=1),
                           np.concatenate([b.uid for b in blocks]),
                           np.concatenate([b.origin for b in blocks]),
                           np.concatenate([b.generation for b in blocks]))
        self._tag(web, generation, blocks)
        return web

    def _tag(self, web: TensorSource, generation: int, blocks: list[TensorSource]) -> None:
        tagger = self.policy.tagger
        if tagger is None:  # scrape: nobody looks
            web.label = np.full((self.chains, web.rows), UNKNOWN, dtype=np.int8)
            return
        if tagger.kind == "oracle":
            label, score = oracle_tags(web.origin, self.chains)
        elif tagger.kind == "noisy":
            parts = []
            for g, block in enumerate(blocks):  # a document's tag never changes: cache per block
                if g not in self._noisy_cache:
                    self._noisy_cache[g] = noisy_tags(block.origin, block.uid, self.rng.seeds,
                                                      tagger.tpr, tagger.fpr)[0]
                parts.append(self._noisy_cache[g])
            label = np.concatenate(parts, axis=1)
            score = label.astype(np.float64)
        elif tagger.kind == "discriminator":
            features = self.family.discriminator_features
            label, score = discriminator_tags(features(web.x), features(self.original),
                                              features(self.published[generation]))
        else:
            raise ConfigError(f"tagger {tagger.kind} needs documents; numeric families support "
                              "oracle, noisy(tpr=..,fpr=..) and discriminator")
        web.score = score
        if self.policy.strategy == "reweight":
            web.label = np.full(label.shape, UNKNOWN, dtype=np.int8)
        else:
            web.label = label
        self.last_rates = tagger_rates(label, web.origin)

    def sources(self, generation: int) -> tuple:
        """The generation's mixers sources; each source's data is a :class:`TensorSource`."""
        if self.policy.composition(generation, 1, 1).layout == "web":
            return self.policy.sources(generation, None, {}, self._web(generation))
        original = self._block(0, self.original, "human", "original")
        generated = {g: self._block(g, x, "synthetic", generated_source(g))
                     for g, x in self.published.items()}
        return self.policy.sources(generation, original, generated)

    # -- one generation -----------------------------------------------------------------------

    def training_set(self, generation: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Generation ``generation``'s training data and the loop's own metrics about it."""
        extra: dict[str, torch.Tensor] = {}
        if generation == 0:
            x = self.original
            extra["synthetic_share"] = torch.zeros(self.chains, dtype=torch.float64)
        else:
            self.last_rates = None
            sources = self.sources(generation)
            spec = self.policy.mixture_spec(sources, generation, self.config.samples,
                                            self.config.pool_size, seed=0)
            # Each chain mixes with its own seed, as its own mixers build would.
            seeds = self.rng.keys(generation, "mix").cpu().numpy().view(np.uint64)
            selection = execute(spec, [s.path for s in sources], seeds)
            x = selection.x
            extra["synthetic_share"] = torch.as_tensor(selection.synthetic_share)
            if self.last_rates is not None:
                extra["tagger_tpr"] = torch.as_tensor(self.last_rates[0])
                extra["tagger_fpr"] = torch.as_tensor(self.last_rates[1])
        extra["training_size"] = torch.full((self.chains,), float(x.shape[1]),
                                            dtype=torch.float64)
        return x, extra

    def publish(self, params: Params, generation: int) -> torch.Tensor:
        """The samples the model of ``generation - 1`` publishes at ``generation``."""
        samples = self.family.sample(params, self.config.samples, self.rng, generation)
        if not self.policy.needs_history:
            self.published.clear()
        self.published[generation] = samples
        return samples

    def step(self, generation: int) -> Params:
        x, extra = self.training_set(generation)
        params = self.family.fit(x, self.rng, generation)
        samples = self.publish(params, generation + 1)
        if generation == 0:
            self.first = params
        context = MetricContext(self.heldout, self.first, generation)
        metrics = self.family.metrics(params, samples, context)
        metrics.update(extra)
        self.family.write_artifacts(params, samples, generation, self.artifacts)
        _save_generation(self.folder, generation, params, metrics)
        return params

    def replay(self, models: list[Params]) -> None:
        """Rebuild what the checkpointed generations published (deterministic, not stored)."""
        self.first = models[0]
        for generation, params in enumerate(models):
            if self.policy.needs_history or generation == len(models) - 1:
                self.publish(params, generation + 1)


# ------------------------------------------------------------------------------------------------
# the world the engine drives


class TensorWorld(World):
    """The tensor families' recursion for :mod:`collapse_eval.engine`: a chain is a policy,
    whose seeds run as one batch; its progress is its consecutive checkpoints."""

    def __init__(self, config: CollapseConfig, out: Path, device: str, *,
                 write: bool = True) -> None:
        super().__init__(config, out, device, write=write)
        self.policies = {p.name: p for p in parse_policies(config.policies)}
        self._family: NumericFamily | None = None

    # -- what the family registry asks of a world ---------------------------------------------

    @staticmethod
    def config_from_dict(data: dict[str, Any]) -> CollapseConfig:
        return CollapseConfig(**{k: tuple(v) if k in ("policies", "seeds") else v
                                 for k, v in data.items()})

    @staticmethod
    def make_config(spec: Any, settings: dict[str, Any]) -> CollapseConfig:
        settings = dict(settings)
        family_options = dict(settings.pop("family_options", None) or {})
        own = {o.name for o in spec.options} - {o.name for o in TENSOR_OPTIONS}
        for name in sorted(own & set(settings)):
            family_options[name] = settings.pop(name)
        return CollapseConfig(family=spec.name, family_options=family_options, **settings)

    @staticmethod
    def inputs(config: CollapseConfig) -> list[Any]:
        return [config.family_options.get("data")]

    @staticmethod
    def total_steps(config: CollapseConfig) -> int:
        return len(config.policies) * (config.generations + 1)

    @staticmethod
    def detail_lines(run: Any) -> list[str]:
        return []

    # -- the chains ---------------------------------------------------------------------------

    @property
    def family(self) -> NumericFamily:
        if self._family is None:
            self._family = self.config.make_family(self.device)
        return self._family

    def _folder(self, policy: str) -> Path:
        return self.out / "checkpoints" / policy_slug(policy)

    def chains(self) -> list[str]:
        return list(self.policies)

    def label(self, chain: Hashable) -> str:
        return f"policy {chain}"

    def steps(self, chain: Hashable) -> int:
        return self.config.generations + 1

    def steps_done(self, chain: Hashable) -> int:
        return _completed(self._folder(str(chain)), self.config.generations)

    def generation_of(self, chain: Hashable, unit: int) -> int:
        return unit - 1

    def run_chain(self, chain: Hashable, finished: Callable[[int], None]) -> None:
        folder = self._folder(str(chain))
        folder.mkdir(parents=True, exist_ok=True)
        run = _PolicyRun(self.config, self.policies[str(chain)], self.family,
                         ChainRandom(self.config.seeds, self.device), folder, self.device)
        done = _completed(folder, self.config.generations)
        if done:
            run.replay([_load_generation(_checkpoint_path(folder, g), self.device)[0]
                        for g in range(done)])
        for generation in range(done, self.config.generations + 1):
            run.step(generation)
            finished(generation)

    def results(self) -> pl.DataFrame:
        return collect_results(self.out, self.config)


def collect_results(out_dir: Path, config: CollapseConfig) -> pl.DataFrame:
    """Long-format results from the checkpoints: one row per policy, seed, generation, metric."""
    frames = []
    run_id = config.run_id()
    for name in config.policies:
        folder = Path(out_dir) / "checkpoints" / policy_slug(name)
        for generation in range(config.generations + 1):
            _, names, values = _load_generation(_checkpoint_path(folder, generation), "cpu")
            chains, count = values.shape
            frames.append(pl.DataFrame({
                "family": [config.family] * (chains * count),
                "policy": [name] * (chains * count),
                "seed": np.repeat(np.array(config.seeds, dtype=np.int64), count),
                "generation": np.full(chains * count, generation, dtype=np.int64),
                "metric": names * chains,
                "value": values.numpy().reshape(-1),
                "run_id": [run_id] * (chains * count),
            }))
    results = pl.concat(frames)
    return results.filter(pl.col("value").is_not_nan()).select(RESULT_COLUMNS)
