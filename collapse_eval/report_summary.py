"""The report's first paragraph: what the run found, written from its numbers.

A reader opens the report to learn which policies keep the original's tails and by how much; a
26-row table does not say it. Every number here comes from the same losses and paired bootstrap
as the headline table (:mod:`collapse_eval.report`), so the sentence cannot drift from the table,
and where the table says n/a the paragraph says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

#: the policies the lead figure always highlights (when a family ran them)
HEADLINE_POLICIES = ("replace", "retain:0.1", "scrape", "accumulate", "filter:oracle")


@dataclass
class Share:
    """A mean (a tail loss, a share prevented, a difference) with its 95% bootstrap interval;
    low and high are NaN for one seed, the estimate NaN where the quantity is undefined."""

    estimate: float
    low: float
    high: float

    def text(self) -> str:
        if math.isnan(self.estimate):
            return "n/a"
        if math.isnan(self.low):
            return f"{self.estimate:.2f} (1 seed)"
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"

    def excludes_zero(self) -> bool:
        """Significantly above 0 (with one seed: above 0 at all)."""
        return (self.estimate if math.isnan(self.low) else self.low) > 0


@dataclass
class FamilyFindings:
    """What the paragraph says about one family, computed from its last-generation losses."""

    family: str
    generation: int
    seeds: int
    loss_text: str
    #: tail loss per policy, in the order the family ran them
    losses: dict[str, Share]
    #: paired difference loss(replace) - loss(policy), per policy other than replace
    saved_vs_replace: dict[str, Share]
    #: why "prevented vs scrape" / "vs replace" is n/a ('' when it is not)
    na_scrape: str
    na_replace: str


def paired_bootstrap(losses: pl.DataFrame, seed: int = 0,
                     draws: int = 2000) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Policies, per-policy mean loss and bootstrap means, resampling seeds jointly.

    Every policy sees the same original data per seed, so differences between policies are
    paired: resampling whole seeds keeps that pairing in the intervals.
    """
    table = losses.pivot(on="policy", index="seed", values="loss").sort("seed")
    policies = [c for c in table.columns if c != "seed"]
    matrix = table.select(policies).to_numpy()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, matrix.shape[0], size=(draws, matrix.shape[0]))
    return policies, matrix.mean(axis=0), matrix[picks].mean(axis=1)


def _interval(point: float, boot: np.ndarray, single: bool) -> Share:
    if single:
        return Share(float(point), math.nan, math.nan)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Share(float(point), float(low), float(high))


def family_findings(losses: pl.DataFrame, family: str, generation: int,
                    loss_text: str, policies: list[str]) -> FamilyFindings:
    """The findings for ``policies`` (the headline table's rows) from last-generation losses."""
    names, means, boot = paired_bootstrap(losses)
    single = losses.get_column("seed").n_unique() < 2
    col = {p: i for i, p in enumerate(names)}
    shown = [p for p in policies if p in col]
    loss = {p: _interval(means[col[p]], boot[:, col[p]], single) for p in shown}
    saved = {}
    if "replace" in col:
        r = col["replace"]
        saved = {p: _interval(means[r] - means[col[p]], boot[:, r] - boot[:, col[p]], single)
                 for p in shown if p != "replace"}

    def gap(baseline: str) -> Share | None:
        if baseline not in col or "filter:oracle" not in col:
            return None
        b, o = col[baseline], col["filter:oracle"]
        return _interval(means[b] - means[o], boot[:, b] - boot[:, o], single)

    return FamilyFindings(family, generation, losses.get_column("seed").n_unique(), loss_text,
                          loss, saved, na_reason("scrape", gap("scrape")),
                          na_reason("replace", gap("replace")))


def na_reason(baseline: str, gap: Share | None) -> str:
    """Why the share prevented against ``baseline`` is n/a, or '' when the share is defined.

    The share divides by loss(baseline) - loss(filter:oracle); when that gap is not
    significantly positive the ratio would be one noise over another, so the report gives none.
    """
    if gap is None:
        return f"{baseline} or filter:oracle was not run"
    if gap.excludes_zero():
        return ""
    if math.isnan(gap.low):
        return (f"with one seed, {baseline} lost no more tail than filter:oracle "
                f"(difference {gap.estimate:.2f})")
    return (f"{baseline} does not lose significantly more tail than filter:oracle "
            f"(difference {gap.text()})")


def best_filter(findings: FamilyFindings) -> str | None:
    """The non-oracle filter or reweighting with the lowest mean tail loss, if any ran."""
    candidates = [p for p in findings.losses
                  if p.startswith(("filter:", "reweight:")) and p != "filter:oracle"]
    return min(candidates, key=lambda p: findings.losses[p].estimate, default=None)


def highlighted(findings: FamilyFindings) -> list[str]:
    """The lead figure's coloured policies: the headline ones and the best non-oracle filter."""
    chosen = [p for p in HEADLINE_POLICIES if p in findings.losses]
    best = best_filter(findings)
    return chosen + ([best] if best and best not in chosen else [])


def family_sentence(f: FamilyFindings) -> str:
    """One family's findings in a few clauses: replace, the oracle, who keeps the tails, n/a."""
    seeds = f"{f.seeds} seed{'s' if f.seeds != 1 else ''}"
    parts = [f"**{f.family}** ({seeds}, generation {f.generation}, tail loss = {f.loss_text}):"]
    if "replace" in f.losses:
        parts.append(f"`replace` loses {f.losses['replace'].text()}")
    if "filter:oracle" in f.losses:
        parts.append(f"and `filter:oracle` {f.losses['filter:oracle'].text()}.")
    others = [p for p in f.saved_vs_replace if p != "filter:oracle"]
    keep = sorted((p for p in others if f.saved_vs_replace[p].excludes_zero()),
                  key=lambda p: f.losses[p].estimate)
    rest = [p for p in others if p not in keep]
    # One seed has no interval: its differences are measured, not significant.
    less, same = (("Less than replace (one seed: no interval)", "Not less than replace")
                  if f.seeds == 1 else
                  ("Significantly less than replace", "No better than replace"))
    if keep:
        parts.append(f"{less}: " + _listed(f, keep) + ".")
    if rest:
        parts.append(f"{same}: " + _listed(f, rest) + ".")
    for baseline, reason in (("scrape", f.na_scrape), ("replace", f.na_replace)):
        if reason:
            parts.append(f"Prevented vs {baseline} is n/a: {reason}.")
    return " ".join(parts)


def _listed(f: FamilyFindings, policies: list[str]) -> str:
    return ", ".join(f"`{p}` {f.losses[p].text()}" for p in policies)


def summary_paragraphs(findings: list[FamilyFindings]) -> list[str]:
    """The report's opening: what the numbers are, then one short paragraph per family."""
    lead = ("**What this run found.** Tail loss at the last generation: the share of the "
            "original's tail that the model has lost (0 = tails intact, 1 = all gone), mean "
            "over seeds with its 95% bootstrap interval; a policy keeps the tails when its loss "
            "is significantly below replace's (paired over seeds).")
    return [lead, *(family_sentence(f) for f in findings)]
