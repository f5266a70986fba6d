"""The LM run's numbers by policy and generation, for the report's readers who want values and
not only curves: the collapse shows as a test perplexity that climbs, rare n-grams and distinct
bigrams that vanish and a median data perplexity that drifts, while a working filter holds
generation 0's row."""

from __future__ import annotations

import math

import polars as pl

__all__ = ["COLUMNS", "generation_table"]

#: (metric, column header, format) of each column after policy and generation.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("test_perplexity", "test ppl", ",.0f"),
    ("rare_ngram_recall", "rare-bigram recall", ".3f"),
    ("distinct_2", "distinct-2", ".3f"),
    ("unigram_kl", "unigram KL", ".3f"),
    ("data_perplexity_q50", "median data ppl", ",.0f"),
    ("data_perplexity_q99", "p99 data ppl", ",.0f"),
    ("synthetic_share", "synthetic share", ".2f"),
    ("tagger_tpr", "filter TPR", ".3f"),
    ("tagger_fpr", "filter FPR", ".4f"),
)


def _shown_generations(last: int) -> list[int]:
    """Generation 1, the middle and the last a policy has reached (all of them up to 3; none
    for a policy not started)."""
    return sorted({g for g in (1, (last + 1) // 2, last) if 1 <= g <= last})


def generation_table(results: pl.DataFrame,
                     policies: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: generation 0 once (every policy shares it), then each policy at
    generation 1, its middle and its last generation, as means over seeds. A policy of a run
    still going shows the generations it has reached (none before its first); a metric a policy
    does not record (a filter's TPR without a filter) is blank."""
    means = (results.filter(pl.col("metric").is_in([m for m, _, _ in COLUMNS]))
             .group_by("policy", "generation", "metric").agg(pl.col("value").mean()))
    cell = {(p, g, m): v for p, g, m, v in means.select("policy", "generation", "metric",
                                                        "value").iter_rows()}

    def row(policy: str, label: str, generation: int) -> list[str]:
        values = (cell.get((policy, generation, metric)) for metric, _, _ in COLUMNS)
        return [label, str(generation)] + [
            "" if v is None or math.isnan(v) else format(v, spec)
            for v, (_, _, spec) in zip(values, COLUMNS, strict=True)]

    header = ["policy", "generation", *(title for _, title, _ in COLUMNS)]
    rows: list[list[str]] = []
    if policies:
        rows.append(row(policies[0], "all (shared)", 0))
    reached = dict(means.group_by("policy").agg(pl.col("generation").max()).iter_rows())
    for policy in policies:
        last = int(reached.get(policy, 0))
        rows += [row(policy, policy, g) for g in _shown_generations(last)]
    return header, rows
