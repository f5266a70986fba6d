"""One policy definition, two executions: ``mixers`` on documents and tensor_mix on arrays agree."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from collapse_eval.policies import (
    ORIGINAL_SOURCE,
    WEB_SOURCE,
    generated_source,
    parse_policy,
)
from collapse_eval.rng import derive_seed
from collapse_eval.tensor_mix import (
    ORIGIN_GENERATED,
    ORIGIN_ORIGINAL,
    SYNTHETIC,
    TensorSource,
    execute,
    uids_for,
)
from mixers.build import select_mixture

CHAIN_SEEDS = [11, 12, 13]
P, M, G = 40, 30, 3


def _world(tag_rng: np.random.Generator, human_fpr: float):
    """Original data and three published generations per chain, plus tags on the web."""
    torch.manual_seed(0)
    chains = len(CHAIN_SEEDS)
    original = TensorSource(ORIGINAL_SOURCE, "human", torch.randn(chains, P, 1), uids_for(0, P),
                            np.full(P, ORIGIN_ORIGINAL, dtype=np.int8), np.zeros(P, dtype=np.int64))
    generated = {
        g: TensorSource(generated_source(g), "synthetic", torch.randn(chains, M, 1) + g,
                        uids_for(g, M), np.full(M, ORIGIN_GENERATED, dtype=np.int8),
                        np.full(M, g, dtype=np.int64))
        for g in range(1, G + 1)
    }
    parts = [original, *generated.values()]
    origin = np.concatenate([s.origin for s in parts])
    truth = np.broadcast_to(origin == ORIGIN_GENERATED, (chains, origin.size))
    flip = tag_rng.random(truth.shape)
    label = np.where(truth, flip < 0.8, flip < human_fpr).astype(np.int8) * SYNTHETIC
    score = np.clip(np.where(truth, 0.7, 0.2) + tag_rng.normal(0, 0.2, truth.shape), 0, 1)
    web = TensorSource(WEB_SOURCE, "from-tags", torch.cat([s.x for s in parts], dim=1),
                       np.concatenate([s.uid for s in parts]), origin,
                       np.concatenate([s.generation for s in parts]), label, score)
    return original, generated, web


def _frame(source: TensorSource, chain: int, policy_name: str) -> pl.DataFrame:
    columns = {"id": [str(u) for u in source.uid],
               "text": [f"{v:.17g}" for v in source.x[chain, :, 0].tolist()]}
    if source.role == "from-tags":
        if policy_name.startswith("filter"):
            columns["prov_label"] = ["synthetic" if v == SYNTHETIC else "human"
                                     for v in source.label[chain]]
        else:
            columns["prov_label"] = ["unknown"] * source.rows
        columns["prov_score"] = source.score[chain].tolist()
    return pl.DataFrame(columns)


@pytest.mark.parametrize(("policy_name", "human_fpr"), [
    ("replace", 0.05), ("retain:0.3", 0.05), ("accumulate", 0.05), ("scrape", 0.05),
    ("filter:oracle", 0.05), ("filter:oracle", 0.9), ("reweight:discriminator", 0.05),
])
def test_tensor_execution_selects_the_rows_mixers_selects(
    policy_name: str, human_fpr: float, tmp_path: Path
) -> None:
    """human_fpr 0.9 leaves fewer survivors than the budget: both must upsample the same way."""
    policy = parse_policy(policy_name)
    original, generated, web = _world(np.random.default_rng(5), human_fpr)
    if not policy_name.startswith("filter"):
        web.label = np.full(web.label.shape, 2, dtype=np.int8)
    spec_seeds = [derive_seed(seed, G, "mix") for seed in CHAIN_SEEDS]
    tensor_sources = policy.sources(G, original, generated, web)
    spec = policy.mixture_spec(tensor_sources, G, M, P, seed=spec_seeds[0])
    selection = execute(spec, [s.path for s in tensor_sources], np.array(spec_seeds,
                                                                         dtype=np.uint64))
    assert selection.x.shape == (len(CHAIN_SEEDS), spec.target_docs, 1)
    for chain, seed in enumerate(spec_seeds):
        frames = {s.name: _frame(s.path, chain, policy_name) for s in tensor_sources}
        doc_sources = tuple(type(s)(frames[s.name], s.role, s.name, s.generation)
                            for s in tensor_sources)
        doc_spec = policy.mixture_spec(doc_sources, G, M, P, seed=seed)
        work = tmp_path / f"c{chain}"
        work.mkdir()
        chosen = select_mixture(doc_spec, work).select("id", "text").collect()
        assert Counter(selection.uid[chain].astype(str).tolist()) == Counter(chosen["id"])
        # The samples travel with their ids.
        values = dict(zip(chosen["id"], chosen["text"], strict=True))
        got = selection.x[chain, :, 0].tolist()
        assert all(f"{v:.17g}" == values[str(u)]
                   for u, v in zip(selection.uid[chain], got, strict=True))


def test_filtering_drops_tagged_rows_and_upsamples_the_survivors() -> None:
    original, generated, web = _world(np.random.default_rng(1), human_fpr=0.9)
    policy = parse_policy("filter:oracle")
    sources = policy.sources(G, original, generated, web)
    spec = policy.mixture_spec(sources, G, M, P, seed=0)
    selection = execute(spec, [s.path for s in sources], np.array([1, 2, 3], dtype=np.uint64))
    for chain in range(3):
        kept = set(web.uid[web.label[chain] != SYNTHETIC].tolist())
        assert len(kept) < M  # the filter leaves fewer than the budget: survivors are resampled
        counts = Counter(selection.uid[chain].tolist())
        assert set(counts) == kept and sum(counts.values()) == M
        assert set(counts.values()) <= {M // len(kept), M // len(kept) + 1}
