"""Cross-source deduplication that keeps the human copy.

When the same text (or a near-copy) is in several sources, which copy survives matters for
collapse: keeping the human-written one preserves the original distribution, keeping a synthetic
echo of it does not. Documents are ranked by how trustworthy their provenance is — original
human data, then scraped documents tagged human, then unknown, then synthetic — and within a rank
by their mixture key; in every cluster of duplicates the best-ranked document stays.

Exact duplicates share the SHA-256 of their normalised text (case, whitespace and Unicode form
do not matter). Near duplicates are found with MinHash LSH (:mod:`provenance.minhash`): documents
that share a band are compared on their full signatures, and pairs with estimated Jaccard at or
above the threshold are joined into clusters (union-find).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from provenance.ledger import content_hash
from provenance.minhash import MinHasher, band_keys, jaccard_estimate, lsh_params

PRIORITY = {"original": 0, "scraped-human": 1, "scraped-unknown": 2, "scraped-synthetic": 3,
            "synthetic": 3}

DROPPED_SCHEMA = {
    "id": pl.String,
    "source": pl.String,
    "pool": pl.String,
    "kind": pl.String,
    "duplicate_of_id": pl.String,
    "duplicate_of_source": pl.String,
    "similarity": pl.Float64,
}


def _priority(frame: pl.DataFrame) -> pl.Series:
    label = frame.get_column("label").fill_null("unknown")
    pool = frame.get_column("pool")
    names = pl.Series([
        p if p != "scraped" else f"scraped-{lb}" for p, lb in zip(pool, label, strict=True)
    ])
    return names.replace_strict(PRIORITY, default=2, return_dtype=pl.Int64)


def find_duplicates(
    frame: pl.DataFrame,
    *,
    near: bool,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
) -> pl.DataFrame:
    """The documents to drop, each with the document it duplicates.

    ``frame`` has columns ``key`` (ranking key), ``id``, ``source``, ``pool``, ``label`` (the
    provenance label) and ``text``. Returns a frame with :data:`DROPPED_SCHEMA`.

    Examples
    --------
    >>> docs = pl.DataFrame({
    ...     "key": [2, 1], "id": ["h", "s"], "source": ["web", "gen"],
    ...     "pool": ["original", "synthetic"], "label": ["human", "synthetic"],
    ...     "text": ["The same words.", "the  SAME words."],
    ... })
    >>> find_duplicates(docs, near=False).select("id", "kind", "duplicate_of_id").rows()
    [('s', 'exact', 'h')]
    """
    if frame.height == 0:
        return pl.DataFrame(schema=DROPPED_SCHEMA)
    ordered = frame.with_columns(_priority(frame).alias("_priority")).sort(["_priority", "key"])
    ids = ordered.get_column("id").to_list()
    sources = ordered.get_column("source").to_list()
    pools = ordered.get_column("pool").to_list()
    texts = ordered.get_column("text").to_list()
    rows: list[tuple] = []

    first_of: dict[bytes, int] = {}
    survivors: list[int] = []
    for i, text in enumerate(texts):
        digest = content_hash(text)
        keep = first_of.setdefault(digest, i)
        if keep == i:
            survivors.append(i)
        else:
            rows.append((ids[i], sources[i], pools[i], "exact", ids[keep], sources[keep], 1.0))

    if near and len(survivors) > 1:
        hasher = MinHasher(num_perm=num_perm, ngram=ngram)
        signatures = hasher.signatures([texts[i] for i in survivors])
        parent = _near_clusters(signatures, threshold)
        for local, root in enumerate(parent):
            if root != local:
                i, keep = survivors[local], survivors[root]
                sim = float(jaccard_estimate(signatures[local], signatures[root]))
                rows.append((ids[i], sources[i], pools[i], "near", ids[keep], sources[keep], sim))
    return pl.DataFrame(rows, schema=DROPPED_SCHEMA, orient="row")


def _near_clusters(signatures: np.ndarray, threshold: float) -> list[int]:
    """Union-find over LSH band collisions verified at ``threshold``; roots are lowest indices.

    Indices are in priority order, so each cluster's root is its best-ranked document.
    """
    n, num_perm = signatures.shape
    bands, rows = lsh_params(threshold, num_perm)
    keys = band_keys(signatures, bands, rows)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for band in range(bands):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for start, end in zip(starts, ends, strict=True):
            if end - start < 2:
                continue
            members = np.sort(order[start:end])
            head = members[0]
            similar = jaccard_estimate(signatures[members[1:]], signatures[head]) >= threshold
            for member in members[1:][similar]:
                a, b = find(int(head)), find(int(member))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]
