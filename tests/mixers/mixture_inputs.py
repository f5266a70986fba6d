"""Inputs the mixer tests share (tests/mixers/conftest.py hands them out as fixtures): pseudo-random
documents, and sources whose files disagree with the mixture spec that reads them.

A plain module, not a test module, so that test modules (and the subprocesses some of them
start) can import it: ``from tests.mixers.mixture_inputs import awkward_spec, words``.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl

from mixers.spec import MixtureSpec, Source


def words(i: int, n: int = 12, prefix: str = "w") -> str:
    """Distinct pseudo-random documents (seeded by i) over a 997-word vocabulary."""
    rng = random.Random(i)
    return " ".join(f"{prefix}{rng.randrange(997)}" for _ in range(n))


def write_awkward_sources(root: Path) -> Path:
    """Sources whose files disagree, written under ``root``: types to relax, columns some files
    lack, integer ids, nested and categorical columns, pyarrow strings with dictionary-encoded
    labels, row groups of several sizes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "people").mkdir()
    pl.DataFrame({
        "id": [f"p{i}" for i in range(700)],
        "text": [f"person {i} " + words(i, 6) for i in range(700)],
        "n": pl.Series(range(700), dtype=pl.Int32),
        "tags": [[f"t{i % 3}"] if i % 4 else None for i in range(700)],
        "meta": [{"a": i, "b": f"m{i}"} for i in range(700)],
    }).write_parquet(root / "people" / "a.parquet", row_group_size=256)
    pl.DataFrame({
        "id": [f"p{i}" for i in range(700, 1200)],
        "text": [f"person {i} " + words(i, 6) for i in range(700, 1200)],
        "n": pl.Series(range(500), dtype=pl.Int64),
        "lang": ["en" if i % 2 else "fr" for i in range(500)],
    }).write_parquet(root / "people" / "b.parquet", row_group_size=100)
    pl.DataFrame({
        "id": list(range(900)),
        "text": [f"generated {i} " + words(i, 5, "g") for i in range(900)],
        "prov_generation": pl.Series([i % 3 for i in range(900)], dtype=pl.Int32),
    }).write_parquet(root / "gen.parquet", row_group_size=300)
    labels = ["human", "synthetic", "unknown"] * 200
    pl.DataFrame({
        "id": [f"c{i}" for i in range(600)],
        "text": [f"crawled {i} " + words(i, 7, "c") for i in range(600)],
        "prov_label": pl.Series(labels, dtype=pl.Categorical),
        "prov_score": pl.Series([(i % 10) / 10 for i in range(600)], dtype=pl.Float32),
    }).write_parquet(root / "crawl.parquet", row_group_size=128)
    pq.write_table(pa.table({
        "id": pa.array([f"w{i}" for i in range(500)], pa.string()),
        "text": pa.array([f"web page {i} " + words(i, 4, "w") for i in range(500)], pa.string()),
        "prov_label": pa.array(["synthetic" if i % 3 == 0 else "human" for i in range(500)])
        .dictionary_encode(),
        "prov_score": pa.array([0.9 if i % 3 == 0 else 0.1 for i in range(500)], pa.float32()),
    }), root / "web.parquet", row_group_size=100)
    return root

def awkward_spec(root: Path, **overrides) -> MixtureSpec:
    sources = (Source(str(root / "people"), "human"),
               Source(str(root / "gen.parquet"), "synthetic"),
               Source(str(root / "crawl.parquet"), "from-tags"),
               Source(str(root / "web.parquet"), "from-tags"))
    base = {"sources": sources, "target_docs": 1500, "synthetic_ratio": 0.3,
            "retain_original": 0.2, "seed": 5, "shard_rows": 400}
    return MixtureSpec(**{**base, **overrides})
