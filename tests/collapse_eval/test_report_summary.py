"""The report's opening: a paragraph written from the numbers, the lead figure's panels, and a
table of contents whose links land on sections."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from collapse_eval import plots
from collapse_eval.report import final_losses, mean_interval, write_report
from collapse_eval.report_html import section_id
from collapse_eval.report_summary import (
    FamilyFindings,
    family_findings,
    highlighted,
    summary_paragraphs,
)

POLICIES = ["replace", "retain:0.1", "scrape", "filter:oracle", "filter:discriminator"]


def _results(loss: dict[str, float], family: str = "gaussian", seeds: int = 20,
             generations: int = 3, spread: float = 0.15) -> pl.DataFrame:
    """Tail recall rows whose last-generation tail loss (1 - recall) has mean ``loss[policy]``
    exactly: each seed is off by a symmetric amount, shuffled per policy (seeds not paired)."""
    offsets = np.linspace(-spread, spread, seeds) if seeds > 1 else np.zeros(1)
    rng = np.random.default_rng(0)
    rows = []
    for policy, target in loss.items():
        for seed, off in enumerate(rng.permutation(offsets)):
            for generation in range(generations + 1):
                lost = target * generation / generations + off * (generation > 0)
                rows.append({"family": family, "policy": policy, "seed": seed,
                             "generation": generation, "metric": "tail_recall",
                             "value": 1.0 - lost, "run_id": "x"})
    return pl.DataFrame(rows)


def _findings(results: pl.DataFrame, family: str = "gaussian") -> FamilyFindings:
    losses = final_losses(results, family)
    last = int(results.get_column("generation").max())
    policies = results.get_column("policy").unique(maintain_order=True).to_list()
    return family_findings(losses, family, last, "1 - tail_recall", policies)


KNOWN = {"replace": 0.7, "retain:0.1": 0.3, "scrape": 0.12, "filter:oracle": 0.1,
         "filter:discriminator": 0.65}


def test_the_paragraph_states_the_numbers_it_was_given() -> None:
    results = _results(KNOWN)
    text = " ".join(summary_paragraphs([_findings(results)]))
    losses = final_losses(results, "gaussian")
    replace = mean_interval(losses.filter(pl.col("policy") == "replace")["loss"].to_numpy())
    assert replace.text().startswith("0.70 [") and replace.low < 0.7 < replace.high
    assert f"`replace` loses {replace.text()}" in text
    assert "and `filter:oracle` 0.10 [" in text and "(20 seeds, generation 3," in text
    # scrape and retain keep the tail, best first, each with its loss and interval
    assert re.search(r"Significantly less than replace: `scrape` 0\.12 \[[^]]+\], "
                     r"`retain:0\.1` 0\.30 \[[^]]+\]\.", text)
    # the discriminator filter is within noise of replace
    assert "No better than replace: `filter:discriminator` 0.65 [" in text
    # scrape is within noise of the oracle: the share against it is n/a, and the paragraph says why
    assert ("Prevented vs scrape is n/a: scrape does not lose significantly more tail than "
            "filter:oracle (difference 0.02 [") in text
    assert "Prevented vs replace is n/a" not in text


def test_other_numbers_give_another_paragraph() -> None:
    first = " ".join(summary_paragraphs([_findings(_results(KNOWN))]))
    other = _results({**KNOWN, "replace": 0.5, "scrape": 0.4})
    changed = " ".join(summary_paragraphs([_findings(other)]))
    assert "`replace` loses 0.50 [" in changed and "`replace` loses 0.70 [" in first
    assert "Prevented vs scrape is n/a" not in changed  # scrape now loses more than the oracle


def test_one_seed_is_explained() -> None:
    one = _findings(_results({"replace": 0.7, "scrape": 0.05, "filter:oracle": 0.1}, seeds=1))
    text = " ".join(summary_paragraphs([one]))
    assert "(1 seed, generation 3," in text and "`replace` loses 0.70 (1 seed)" in text
    assert ("Prevented vs scrape is n/a: with one seed, scrape lost no more tail than "
            "filter:oracle (difference -0.05)") in text
    # One seed has no interval, so nothing is called significant.
    assert "Less than replace (one seed: no interval): `scrape` 0.05 (1 seed)" in text
    assert "ignificantly" not in summary_paragraphs([one])[1]


def test_families_each_get_their_sentence_and_their_highlights() -> None:
    gmm = _results({**KNOWN, "reweight:discriminator": 0.2}, family="gmm")
    findings = [_findings(_results(KNOWN)), _findings(gmm, "gmm")]
    text = " ".join(summary_paragraphs(findings))
    assert text.index("**gaussian**") < text.index("**gmm**")
    assert highlighted(findings[0]) == ["replace", "retain:0.1", "scrape", "filter:oracle",
                                        "filter:discriminator"]
    assert highlighted(findings[1])[-1] == "reweight:discriminator"  # the best filter


def test_the_lead_figure_has_one_panel_per_family(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    titles: list[list[str]] = []
    original = plots.saved_figure

    @contextlib.contextmanager
    def recording(*args, **kwargs):  # the figure's panels, read before it is closed
        with original(*args, **kwargs) as (fig, axes):
            yield fig, axes
            titles.append([ax.get_title() for ax in fig.axes])

    monkeypatch.setattr(plots, "saved_figure", recording)
    results = pl.concat([_results(KNOWN), _results(KNOWN, family="gmm")])
    panels = {f: ("tail_recall", ["replace", "filter:oracle"]) for f in ("gaussian", "gmm")}
    path = plots.plot_lead(results, panels, tmp_path / "lead.png")
    assert titles == [["gaussian: tail_recall", "gmm: tail_recall"]]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run_folder(root: Path) -> Path:
    """A benchmark folder with two families' results, as `tailguard bench` leaves it."""
    folders = {}
    for family in ("gaussian", "gmm"):
        (root / family).mkdir(parents=True)
        _results(KNOWN, family=family).write_parquet(root / family / "results.parquet")
        (root / family / "config.json").write_text(json.dumps(
            {"family": family, "policies": POLICIES, "seeds": list(range(20)),
             "generations": 3, "samples": 20}))
        folders[family] = family
    (root / "bench.json").write_text(json.dumps({"folders": folders}))
    return root


def test_the_report_opens_on_the_paragraph_then_contents_that_resolve(tmp_path: Path) -> None:
    report = write_report(_run_folder(tmp_path / "run"))
    md = report.markdown.read_text().splitlines()
    assert md[0].startswith("# ") and md[2].startswith("**What this run found.**")
    assert md[4].startswith("**gaussian**") and md[6].startswith("**gmm**")
    assert "report_files/lead-tail-over-generations.png" in "\n".join(md)
    page = report.html.read_text()
    ids = re.findall(r"<h2 id='([^']+)'>", page)
    links = re.findall(r"<a href='#([^']+)'>", page)
    assert links == ids and len(ids) >= 5 and section_id("gmm") in ids
    assert page.index("What this run found") < page.index("<nav id='contents'>") < page.index(
        "<h2")
    assert "<strong>gaussian</strong>" in page and "**" not in page
