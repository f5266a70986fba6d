"""The report's by-generation table of an LM run, on a results frame in the run's layout."""

from __future__ import annotations

import polars as pl

from collapse_eval.text.report_table import generation_table


def _results(rows: list[tuple[str, int, int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["policy", "seed", "generation", "metric", "value"],
                        orient="row")


def test_policies_show_generation_one_their_middle_and_last_as_seed_means() -> None:
    rows = []
    for seed, offset in ((0, 0.0), (1, 2.0)):
        for g in range(11):
            rows.append(("replace", seed, g, "test_perplexity", 100.0 + 10 * g + offset))
        for g in range(5):  # a run still going: scrape has reached generation 4
            rows.append(("scrape", seed, g, "test_perplexity", 100.0 + g + offset))
            rows.append(("scrape", seed, g, "tagger_tpr", 0.5))
        rows.append(("filter:ledger", seed, 0, "test_perplexity", 101.0))  # not started
    header, table = generation_table(_results(rows), ["replace", "scrape", "filter:ledger"])
    assert header[:3] == ["policy", "generation", "test ppl"]
    assert [(r[0], r[1], r[2]) for r in table] == [
        ("all (shared)", "0", "101"),
        ("replace", "1", "111"), ("replace", "5", "151"), ("replace", "10", "201"),
        ("scrape", "1", "102"), ("scrape", "2", "103"), ("scrape", "4", "105")]
    tpr = header.index("filter TPR")
    assert table[4][tpr] == "0.500" and table[1][tpr] == ""
    assert all(len(r) == len(header) for r in table)


def test_nothing_to_show_gives_only_the_header() -> None:
    empty = _results([]).cast({"generation": pl.Int64, "value": pl.Float64, "seed": pl.Int64})
    header, table = generation_table(empty, [])
    assert header[0] == "policy" and table == []
