"""Run a :class:`mixers.spec.MixtureSpec` on tensors, for many chains at once.

Numeric families publish hundreds of thousands of samples per generation in each of hundreds of
chains; writing them as documents for ``mixers.build`` would cost more than the experiment. This
module executes the same spec with the same rules on arrays: pools from source roles and tags,
exact amounts from :func:`mixers.build.split_target`, rows ranked by the same XXH64 key of
(seed, source, id) (:func:`mixers.sampling.xxh64_int_ids`, so sample ``i`` is the document with
id ``str(i)``), the same weighted key for ``reweight`` and the same upsampling when a pool is
short. Each chain uses its own seed, as if it ran its own ``mixers`` build.

Provenance travels as tensors beside the samples: every selected row keeps its ``origin``
(0 original, 1 generated), ``generation`` and ``uid``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixers.build import split_target
from mixers.sampling import MIN_WEIGHT, SEPARATOR, key_uniform, xxh64_int_ids
from mixers.spec import MixtureSpec
from provenance.errors import ConfigError

HUMAN, SYNTHETIC, UNKNOWN = 0, 1, 2
LABEL_CODES = {"human": HUMAN, "synthetic": SYNTHETIC, "unknown": UNKNOWN}
ORIGIN_ORIGINAL, ORIGIN_GENERATED = 0, 1


@dataclass
class TensorSource:
    """One named source: samples of every chain plus per-row provenance.

    ``x`` is (chains, n, *features). ``uid``, ``origin`` and ``generation`` are per row and the
    same in every chain (chains differ in values, not in layout). ``label`` and ``score`` are the
    tagger's view per chain, (chains, n), for ``from-tags`` sources only.
    """

    name: str
    role: str
    x: torch.Tensor
    uid: np.ndarray
    origin: np.ndarray
    generation: np.ndarray
    label: np.ndarray | None = None
    score: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.uid.shape[0])


@dataclass
class TensorSelection:
    """A training set per chain: (chains, target, *features) samples and their provenance."""

    x: torch.Tensor
    uid: np.ndarray
    origin: np.ndarray
    generation: np.ndarray
    by_pool: dict[str, np.ndarray]

    @property
    def synthetic_share(self) -> np.ndarray:
        """Ground-truth share of generated samples per chain."""
        return (self.origin == ORIGIN_GENERATED).mean(axis=1)


def _pool_of(source: TensorSource, chains: int) -> np.ndarray:
    """Pool code per (chain, row): 0 original, 1 synthetic, 2 scraped."""
    if source.role == "human":
        return np.zeros((chains, source.rows), dtype=np.int8)
    if source.role == "synthetic":
        return np.ones((chains, source.rows), dtype=np.int8)
    if source.label is None:
        raise ConfigError(f"source {source.name!r} has role from-tags but no labels")
    return np.where(source.label == SYNTHETIC, 1, 2).astype(np.int8)


_POOLS = ("original", "synthetic", "scraped")


def _rank(spec: MixtureSpec, source: TensorSource, pool: np.ndarray,
          seeds: np.ndarray) -> np.ndarray:
    """The rank mixers orders rows by: the key, or the weighted key for reweight (float64)."""
    keys = xxh64_int_ids(np.broadcast_to(source.uid, (seeds.size, source.rows)), seeds,
                         source.name + SEPARATOR)
    if spec.strategy != "reweight":
        return keys
    u = key_uniform(keys)
    weight = np.ones(keys.shape)
    if source.score is not None:
        score = np.nan_to_num(source.score.astype(np.float64), nan=0.0)
        scraped_weight = (1.0 - np.clip(score, 0.0, 1.0)) ** spec.reweight_power
        weight = np.where(pool == 2, scraped_weight, 1.0)
    return -np.log(u) / np.maximum(weight, MIN_WEIGHT)


def _take(rank: np.ndarray, member: np.ndarray, amount: np.ndarray) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Indices of the ``amount`` smallest-ranked members per chain, upsampled cyclically.

    Taking sorted positions ``j % have`` for j < amount gives every member ``amount // have``
    times plus the ``amount % have`` smallest once more: mixers' repeats plus remainder.
    Returns (indices (chains, max amount), valid mask).
    """
    width = int(amount.max(initial=0))
    chains = rank.shape[0]
    if width == 0:
        return np.zeros((chains, 0), dtype=np.int64), np.zeros((chains, 0), dtype=bool)
    if rank.dtype == np.uint64:
        big = np.iinfo(np.uint64).max
    else:
        big = np.inf
    masked = np.where(member, rank, big)
    have = member.sum(axis=1)
    if (have >= width).all() and rank.dtype == np.uint64:
        order = np.argpartition(masked, width - 1, axis=1)[:, :width]
        order = np.take_along_axis(order, np.argsort(
            np.take_along_axis(masked, order, axis=1), axis=1, kind="stable"), axis=1)
    else:
        order = np.argsort(masked, axis=1, kind="stable")
    j = np.arange(width)[None, :] % np.maximum(have, 1)[:, None]
    index = np.take_along_axis(order, j, axis=1)
    return index, np.arange(width)[None, :] < amount[:, None]


def execute(spec: MixtureSpec, sources: list[TensorSource], seeds: np.ndarray) -> TensorSelection:
    """Select each chain's training set exactly as ``mixers.build`` would with seed ``seeds[c]``.

    ``spec.sources`` is ignored (``sources`` are the tensors); every other field applies.
    """
    seeds = np.asarray(seeds, dtype=np.uint64)
    chains = seeds.size
    if spec.target_docs is None:
        raise ConfigError("tensor mixtures count samples: give target_docs")
    if spec.dedup != "none":
        raise ConfigError("tensor mixtures do not deduplicate; samples are distinct by id")
    pools = [_pool_of(s, chains) for s in sources]
    member = _eligibility(spec, sources, pools)
    available = {
        name: sum((m & (p == code)).sum(axis=1) for m, p in zip(member, pools, strict=True))
        for code, name in enumerate(_POOLS)
    }
    amounts = {name: np.zeros(chains, dtype=np.int64) for name in _POOLS}
    for c in range(chains):
        split = split_target(spec, spec.target_docs, int(available["scraped"][c]),
                             int(available["original"][c]))
        for name in _POOLS:
            amounts[name][c] = split[name]
    for name in _POOLS:
        short = amounts[name] > available[name]
        if short.any() and not spec.allow_upsample:
            c = int(np.argmax(short))
            raise ConfigError(f"seed {int(seeds[c])}: the {name} pool has {available[name][c]:,} "
                              f"samples but {amounts[name][c]:,} are requested; allow upsampling")
        empty = (amounts[name] > 0) & (available[name] == 0)
        if empty.any():
            c = int(np.argmax(empty))
            raise ConfigError(f"seed {int(seeds[c])}: the {name} pool is empty but "
                              f"{amounts[name][c]:,} samples are requested")
    return _gather(spec, sources, pools, member, amounts, seeds)


def _eligibility(spec: MixtureSpec, sources: list[TensorSource],
                 pools: list[np.ndarray]) -> list[np.ndarray]:
    """Rows that may be drawn: mixers' scraped-pool filter; only the newest generation for
    replace and retain."""
    newest = None
    if spec.strategy in ("replace", "retain"):
        gens = [s.generation[None, :].repeat(p.shape[0], 0)[p == 1]
                for s, p in zip(sources, pools, strict=True) if s.role == "synthetic"]
        gens = np.concatenate(gens) if gens else np.zeros(0, dtype=np.int64)
        newest = int(gens.max()) if gens.size else None
    drop = [LABEL_CODES[label] for label in spec.effective_drop_labels]
    member = []
    for source, pool in zip(sources, pools, strict=True):
        ok = np.ones(pool.shape, dtype=bool)
        if newest is not None and source.role == "synthetic":
            ok &= (source.generation == newest)[None, :]
        if source.role == "from-tags":
            scraped = pool == 2
            if drop:
                ok &= ~(scraped & np.isin(source.label, drop))
            if spec.max_score is not None and source.score is not None:
                ok &= ~(scraped & (np.nan_to_num(source.score, nan=-1.0) > spec.max_score))
        member.append(ok)
    return member


def _gather(spec: MixtureSpec, sources: list[TensorSource], pools: list[np.ndarray],
            member: list[np.ndarray], amounts: dict[str, np.ndarray],
            seeds: np.ndarray) -> TensorSelection:
    chains = seeds.size
    pool_all = np.concatenate(pools, axis=1)
    member_all = np.concatenate(member, axis=1)
    rank = None
    parts, valid = [], []
    for code, name in enumerate(_POOLS):
        if not amounts[name].any():
            continue
        in_pool = member_all & (pool_all == code)
        if (amounts[name] == in_pool.sum(axis=1)).all():
            # Every eligible row is taken: no ranking needed (and no hashing of large pools).
            width = int(amounts[name].max())
            index = np.argsort(~in_pool, axis=1, kind="stable")[:, :width]
            ok = np.arange(width)[None, :] < amounts[name][:, None]
        else:
            if rank is None:
                rank = np.concatenate([_rank(spec, s, p, seeds)
                                       for s, p in zip(sources, pools, strict=True)], axis=1)
            index, ok = _take(rank, in_pool, amounts[name])
        parts.append(index)
        valid.append(ok)
    index = np.concatenate(parts, axis=1)[np.concatenate(valid, axis=1)].reshape(chains, -1)
    uid = np.concatenate([s.uid for s in sources])[index]
    origin = np.concatenate([s.origin for s in sources])[index]
    generation = np.concatenate([s.generation for s in sources])[index]
    x_all = torch.cat([s.x for s in sources], dim=1) if len(sources) > 1 else sources[0].x
    flat = torch.as_tensor(index, device=x_all.device)
    gather_index = flat.reshape(chains, -1, *([1] * (x_all.dim() - 2))).expand(
        -1, -1, *x_all.shape[2:])
    x = torch.gather(x_all, 1, gather_index)
    return TensorSelection(x, uid, origin, generation, {k: v.copy() for k, v in amounts.items()})


def uids_for(generation: int, n: int) -> np.ndarray:
    """Sample ids: generation g's i-th sample is g * 2**32 + i (the original data is g = 0)."""
    return generation * (1 << 32) + np.arange(n, dtype=np.int64)
