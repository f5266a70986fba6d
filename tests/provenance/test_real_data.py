"""Checks on real reference data nobody on this project wrote (``../shared/data``).

Skipped cleanly where the checkout has no ``../shared`` (see the ``shared_data`` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from provenance.minhash import MinHasher, jaccard_estimate
from provenance.tagger import tag_corpus


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def test_minhash_separates_real_copied_answers_from_independent_ones(shared_data: Path) -> None:
    path = shared_data / "neardup" / "clough_stevenson_pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().split("\n") if line]
    hasher = MinHasher()
    sim = jaccard_estimate(
        hasher.signatures([r["text_a"] for r in rows]),
        hasher.signatures([r["text_b"] for r in rows]),
    )
    label = np.array([-1 if r["near_duplicate"] is None else r["near_duplicate"] for r in rows])
    copied, independent = sim[label == 1], sim[label == 0]
    assert auroc(copied, independent) >= 0.9
    # Independent texts on the same task share almost no 5-word shingle.
    assert independent.max() < 0.05
    # The estimate tracks the dataset's own word-trigram Jaccard.
    published = np.array([r["jaccard_word3"] for r in rows])
    assert np.corrcoef(published, sim)[0, 1] > 0.9


def test_declared_generators_on_a_real_detection_set(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "detect" / "seqxgpt_doc.jsonl"
    report = tag_corpus(source, tmp_path / "tagged.parquet")
    tagged = pl.read_parquet(tmp_path / "tagged.parquet")
    assert report.counts.rejected == 0 and tagged.height == 1200
    truth = tagged.get_column("label").replace({"machine": "synthetic"})
    assert (tagged.get_column("prov_label") == truth).all()
    synthetic = tagged.filter(pl.col("prov_label") == "synthetic")
    assert sorted(synthetic.get_column("prov_generator").unique()) == [
        "gpt2", "gpt3re", "gptj", "gptneo", "llama"
    ]
