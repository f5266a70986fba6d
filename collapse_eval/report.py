"""The benchmark report: how much of the tail each policy keeps, in Markdown and offline HTML.

The headline is the *share of tail loss prevented* at the last generation,

    (loss(scrape) - loss(policy)) / (loss(scrape) - loss(filter:oracle)),

0 for a policy that does no better than training on the unfiltered web and 1 for one as good as
perfect provenance. Each family defines its tail loss (:mod:`collapse_eval.profiles`: the numeric
families' :meth:`NumericFamily.tail_loss`, the language model's 1 - rare n-gram recall). Intervals
are 95% percentile bootstrap intervals over seeds, resampling seeds jointly across policies
(every policy sees the same original data per seed, so the comparison is paired); a family run
with a single seed gets point estimates only.

The report opens on what was found: paragraphs written from these same numbers
(:mod:`collapse_eval.report_summary`) and a lead figure with every family's tail metric over
generations (:func:`collapse_eval.plots.plot_lead`). ``report.html``
(:mod:`collapse_eval.report_html`) adds a table of contents and embeds its plots as data URIs:
it opens offline, in any browser, from anywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from collapse_eval.plots import plot_lead, plot_metric, plot_sweep
from collapse_eval.profiles import family_profile
from collapse_eval.report_html import to_html
from collapse_eval.report_summary import (
    FamilyFindings,
    Share,
    family_findings,
    highlighted,
    paired_bootstrap,
    summary_paragraphs,
)
from collapse_eval.text.report_table import generation_table
from provenance.atomic import atomic_path
from provenance.errors import InputError

BOOTSTRAP = 2000
_NOISY = re.compile(r"^filter:noisy\(tpr=([0-9.]+),fpr=([0-9.]+)\)$")


def final_losses(results: pl.DataFrame, family: str,
                 generation: int | None = None) -> pl.DataFrame:
    """Tail loss per policy and seed at ``generation``, by default the family's last (columns:
    policy, seed, loss)."""
    profile = family_profile(family)
    rows = results.filter((pl.col("family") == family)
                          & (pl.col("metric") == profile.tail_metric))
    if generation is None:
        generation = rows.get_column("generation").max()
    last = rows.filter(pl.col("generation") == generation)
    return last.select("policy", "seed", pl.Series(
        "loss", profile.tail_loss(last.get_column("value").to_numpy())))


def prevented_shares(losses: pl.DataFrame, baseline: str = "scrape",
                     seed: int = 0) -> dict[str, Share]:
    """Share of ``baseline``'s tail loss prevented per policy, paired bootstrap over seeds.

    When the baseline does not lose significantly more tail than ``filter:oracle`` (the 95%
    interval of the gap includes 0) there is nothing to prevent and every share is n/a, rather
    than a ratio of two noises. With a single seed there is no interval: the shares are point
    estimates (low and high NaN), given when the baseline lost more than the oracle at all.
    """
    if not {baseline, "filter:oracle"} <= set(losses.get_column("policy").to_list()):
        return {}
    policies, means, boot_means = paired_bootstrap(losses, seed, BOOTSTRAP)
    base, oracle = policies.index(baseline), policies.index("filter:oracle")
    single = losses.get_column("seed").n_unique() < 2
    gap_low = np.percentile(boot_means[:, base] - boot_means[:, oracle], 2.5)
    if gap_low <= 0:
        return {p: Share(math.nan, math.nan, math.nan) for p in policies}

    def ratio(m: np.ndarray) -> np.ndarray:
        gap = m[..., base] - m[..., oracle]
        return (m[..., base, None] - m) / gap[..., None]

    point, boot = ratio(means), ratio(boot_means)
    shares = {}
    for i, policy in enumerate(policies):
        low, high = (math.nan, math.nan) if single else np.percentile(boot[:, i], [2.5, 97.5])
        shares[policy] = Share(float(point[i]), float(low), float(high))
    return shares


def mean_interval(values: np.ndarray, seed: int = 0) -> Share:
    """Mean with a 95% bootstrap interval (used for tail losses); no interval for one value."""
    if values.size < 2:
        return Share(float(values.mean()) if values.size else math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(0, values.size, size=(BOOTSTRAP, values.size))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Share(float(values.mean()), float(low), float(high))


def sweep_points(losses: pl.DataFrame) -> list[tuple[float, float, Share]]:
    """(TPR, FPR, tail loss with interval) for every noisy-tagger filter, by TPR."""
    points = []
    for policy in losses.get_column("policy").unique(maintain_order=True).to_list():
        match = _NOISY.match(policy)
        if match:
            values = losses.filter(pl.col("policy") == policy).get_column("loss").to_numpy()
            points.append((float(match.group(1)), float(match.group(2)), mean_interval(values)))
    return sorted(points, key=lambda p: p[0])


def filter_rates(results: pl.DataFrame, family: str) -> pl.DataFrame:
    """What each tagger achieved inside the loop: mean TPR/FPR over generations and seeds."""
    rows = results.filter((pl.col("family") == family)
                          & pl.col("metric").is_in(["tagger_tpr", "tagger_fpr"]))
    if rows.is_empty():
        return pl.DataFrame(schema={"policy": pl.String, "tpr": pl.Float64, "fpr": pl.Float64})
    return (rows.group_by("policy", maintain_order=True)
            .agg(pl.col("value").filter(pl.col("metric") == "tagger_tpr").mean().alias("tpr"),
                 pl.col("value").filter(pl.col("metric") == "tagger_fpr").mean().alias("fpr")))


def _mean_at(results: pl.DataFrame, family: str, policy: str, metric: str,
             generation: int) -> float:
    values = results.filter((pl.col("family") == family) & (pl.col("policy") == policy)
                            & (pl.col("metric") == metric)
                            & (pl.col("generation") == generation)).get_column("value")
    return float(values.mean()) if values.len() else math.nan


def theory_rows(results: pl.DataFrame, configs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Our numbers beside theory and the paper's, with the gap stated."""
    rows: list[list[str]] = []
    if "gaussian" in configs and "replace" in configs["gaussian"]["policies"]:
        cfg = configs["gaussian"]
        m, last = cfg["samples"], cfg["generations"]
        fits = last + 1
        half = torch.tensor((m - 1) / 2, dtype=torch.float64)
        expected = fits * (torch.special.digamma(half).item() + math.log(2 / (m - 1)))
        measured = _mean_at(results, "gaussian", "replace", "log_variance_ratio", last)
        rows.append(["gaussian", f"E ln(s2/s0^2) after {fits} fits, replace, M={m}",
                     f"{measured:.3f}", f"{expected:.3f} (theorem)",
                     f"{measured - expected:+.3f}"])
        mse = _mean_at(results, "gaussian", "replace", "mean_sq_error", last)
        rows.append(["gaussian", f"E (mu - mu_0)^2 after {fits} fits", f"{mse:.3f}",
                     f"{fits / m:.3f} (n/M)", f"{mse - fits / m:+.3f}"])
    if "gmm" in configs and "replace" in configs["gmm"]["policies"]:
        cfg = configs["gmm"]
        first = _mean_at(results, "gmm", "replace", "component_std", 0)
        last = _mean_at(results, "gmm", "replace", "component_std", cfg["generations"])
        rows.append(["gmm", f"component std, generation 0 -> {cfg['generations']} (replace, "
                     f"{cfg['samples']} samples)", f"{first:.3f} -> {last:.3f}",
                     "about 0.9 -> 0.01 by generation 2000 (paper)",
                     "shorter run" if cfg["generations"] < 2000 else "same length"])
    if "vae" in configs and "replace" in configs["vae"]["policies"]:
        last = configs["vae"]["generations"]
        first_std = _mean_at(results, "vae", "replace", "encoder_std", 0)
        last_std = _mean_at(results, "vae", "replace", "encoder_std", last)
        rows.append(["vae", f"encoder std (generation-0 encoder's latent means over the samples), "
                     f"generation 0 -> {last} (replace)", f"{first_std:.3f} -> {last_std:.3f}",
                     "paper: qualitative -- the latents collapse toward the mean and the digits "
                     "lose their variety (no number in the paper's text)",
                     _direction(first_std, last_std, "falls")])
    if "lm" in configs:
        rows += _lm_theory_rows(results, configs["lm"])
    return rows


def _direction(first: float, last: float, expected: str) -> str:
    """'falls by 35% (same direction)' and the like, for a qualitative reference."""
    if math.isnan(first) or math.isnan(last) or first == 0:
        return "n/a"
    change = (last - first) / abs(first)
    moved = "falls" if change < 0 else "rises"
    verdict = "same direction" if moved == expected else "opposite direction"
    return f"{moved} by {abs(change):.0%} ({verdict})"


def _lm_theory_rows(results: pl.DataFrame, cfg: dict[str, Any]) -> list[list[str]]:
    """The paper's OPT-125m experiment: test perplexity over generations with no and with 10%
    original data (Shumailov et al., Nature 2024, fine-tuned on WikiText-2)."""
    last = cfg["generations"]
    rises = {}
    for policy in ("replace", "retain:0.1"):
        if policy in cfg["policies"]:
            rises[policy] = (_mean_at(results, "lm", policy, "test_perplexity", 0),
                             _mean_at(results, "lm", policy, "test_perplexity", last))
    if not rises:
        return []
    ours = "; ".join(f"{p}: {a:.1f} -> {b:.1f}" for p, (a, b) in rises.items())
    reference = ("paper (OPT-125m fine-tuned on WikiText-2): generation 0 about 34; with no "
                 "original data perplexity rises over generations, with 10% original data the "
                 "rise is much smaller")
    gaps = []
    first = next(iter(rises.values()))[0]
    gaps.append(f"our generation 0 is {first:.1f} vs about 34 (a small GPT-2 trained from "
                "scratch on a Wikipedia slice, not a fine-tuned OPT-125m)")
    if len(rises) == 2:
        (a0, a1), (b0, b1) = rises["replace"], rises["retain:0.1"]
        if a1 - a0 > 0 and b1 - b0 < a1 - a0:
            gaps.append(f"the same ordering: replace rises {a1 - a0:+.1f}, retain:0.1 "
                        f"{b1 - b0:+.1f}")
        else:
            gaps.append(f"not the paper's ordering: replace {a1 - a0:+.1f}, retain:0.1 "
                        f"{b1 - b0:+.1f}")
    return [["lm", f"test perplexity, generation 0 -> {last}, replace vs retain:0.1", ours,
             reference, "; ".join(gaps)]]


# ------------------------------------------------------------------------------------------------
# rendering


def _load_family(run_dir: Path, family: str, folder: str) -> tuple[pl.DataFrame, dict, dict]:
    base = run_dir / folder
    path = base / "results.parquet"
    if not path.exists():
        raise InputError("no results.parquet; run the benchmark first (tailguard bench)",
                         file=str(path))
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    info_path = base / "run.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    return pl.read_parquet(path), config, info


def _families(run_dir: Path) -> dict[str, str]:
    bench = run_dir / "bench.json"
    if bench.exists():
        return json.loads(bench.read_text(encoding="utf-8"))["folders"]
    if (run_dir / "config.json").exists():  # a single `tailguard collapse run` folder
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        return {config["family"]: "."}
    raise InputError("not a benchmark or collapse run folder (no bench.json or config.json)",
                     file=str(run_dir))


def _bench_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "bench.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _partial_text(through: dict[str, int], last: int) -> str:
    finished = ", ".join(f"{policy} {generation}" for policy, generation in through.items())
    waiting = [policy for policy, generation in through.items() if generation < last]
    return (f"**A run still going** (exported by `tailguard collapse status --export`): "
            f"generations finished so far: {finished}. Tables compare generation {last}, the "
            "last every started policy has reached; the curves go as far as each policy has."
            + (f" Not started yet, so not in the tables: {', '.join(waiting)}." if waiting
               else ""))


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _table_policies(policies: list[str], through: dict[str, int] | None,
                    last: int) -> list[str]:
    """The headline table's policies: the sweep's points have their own plot (but for the
    default noisy tagger), and a partial run's unstarted policies have no last generation."""
    return [p for p in policies
            if (not _NOISY.match(p) or p == "filter:noisy(tpr=0.9,fpr=0.05)")
            and (through is None or through[p] >= last)]


def _opening(findings: list[FamilyFindings], results: pl.DataFrame, files: Path,
             images: list[Path]) -> list[str]:
    """The report's top: the generated paragraph, then the lead figure in its own section."""
    panels = {f.family: (family_profile(f.family).tail_metric, highlighted(f))
              for f in findings}
    image = plot_lead(results, panels, files / "lead-tail-over-generations.png")
    images.append(image)
    opening = [line for paragraph in summary_paragraphs(findings) for line in (paragraph, "")]
    return [*opening, "## The tails over generations", "",
            "Each family's tail metric (1 = the original's tails intact), mean over seeds with "
            "95% bands; the headline policies in colour, every other policy in grey.", "",
            f"![lead figure: tail metric per family](report_files/{image.name})", ""]


@dataclass
class Report:
    markdown: Path
    html: Path
    images: list[Path]
    #: the headline table (share of tail loss prevented, last generation) as markdown lines
    headline: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What a command prints of the report: its headline table and where it is."""
        shown = (["share of tail loss prevented (last generation):", *self.headline]
                 if self.headline else [])
        return [*shown, f"report: {self.html} ({len(self.images)} plots embedded) and "
                        f"{self.markdown}"]


def write_report(run_dir: str | os.PathLike) -> Report:
    """Write ``report.md`` and a self-contained ``report.html`` for a benchmark or run folder."""
    run_dir = Path(run_dir)
    folders = _families(run_dir)
    files = run_dir / "report_files"
    files.mkdir(exist_ok=True)
    md: list[str] = ["# tailguard collapse benchmark", ""]
    images: list[Path] = []
    configs, infos, all_results = {}, {}, []
    headline_rows, rate_rows = [], []
    findings: list[FamilyFindings] = []
    sections: list[str] = []
    bench = _bench_info(run_dir)
    for family, folder in folders.items():
        results, config, info = _load_family(run_dir, family, folder)
        configs[family], infos[family] = config, info
        all_results.append(results)
        profile = family_profile(family)
        # A partial run (exported by `collapse status --export`) is compared at the generation
        # every started policy has reached; a finished run's config names its last generation.
        last = int(config.get("generations", results.get_column("generation").max()))
        through = config.get("partial_through")
        losses = final_losses(results, family, last)
        vs_scrape = prevented_shares(losses, "scrape")
        vs_replace = prevented_shares(losses, "replace")
        table_policies = _table_policies(config["policies"], through, last)
        findings.append(family_findings(losses, family, last, profile.loss_text, table_policies))
        for policy in table_policies:
            values = losses.filter(pl.col("policy") == policy).get_column("loss").to_numpy()
            headline_rows.append([
                family, policy, mean_interval(values).text(),
                vs_scrape[policy].text() if policy in vs_scrape else "n/a",
                vs_replace[policy].text() if policy in vs_replace else "n/a",
            ])
        for row in filter_rates(results, family).iter_rows(named=True):
            rate_rows.append([family, row["policy"], f"{row['tpr']:.3f}", f"{row['fpr']:.3f}"])
        sections.append(f"## {family}")
        sections.append("")
        size = config.get("samples", info.get("documents_per_generation", "?"))
        skipped = bench.get("skipped_policies", {}).get(family)
        seeds = len(config["seeds"])
        sections.append(f"{seeds} seed{'s' if seeds > 1 else ''}, {size} {profile.unit} per "
                        f"generation, generations 0..{last}. Tail metric: "
                        f"`{profile.tail_metric}` ({profile.describe(profile.tail_metric)}); "
                        f"tail loss: {profile.loss_text}."
                        + (f" Skipped (do not apply to {family}): "
                                 f"{', '.join(skipped)}." if skipped else ""))
        sections.append("")
        if through is not None:
            sections.append(_partial_text(through, last))
            sections.append("")
        main_policies = [p for p in config["policies"]
                         if not _NOISY.match(p) or p == "filter:noisy(tpr=0.9,fpr=0.05)"]
        shown = results.filter(pl.col("policy").is_in(main_policies))
        if profile.by_generation_table:
            header, rows = generation_table(shown, main_policies)
            sections.append("By generation (means over seeds; data ppl is the perplexity of the "
                            "generation's training documents under the generation-0 model, "
                            "the filter's TPR and FPR are what its tagger achieved on the web):")
            sections.append("")
            sections += _md_table(header, rows)
            sections.append("")
        for metric in dict.fromkeys([profile.tail_metric, *profile.summary_metrics]):
            if shown.filter(pl.col("metric") == metric).is_empty():
                continue
            image = plot_metric(shown, metric, files / f"{family}-{metric}.png",
                                title=f"{family}: {metric} (mean, 95% band across seeds)")
            images.append(image)
            sections.append(f"![{family} {metric}](report_files/{image.name})")
            sections.append("")
        for name, caption in profile.run_plots:
            plotted = run_dir / folder / "plots" / name
            if not plotted.exists():
                continue
            image = files / f"{family}-{name}"
            with atomic_path(image, suffix=".png") as tmp:
                shutil.copyfile(plotted, tmp)
            images.append(image)
            sections += [caption, "", f"![{family} {plotted.stem}](report_files/{image.name})",
                         ""]
        points = sweep_points(losses)
        if points:
            references = {p: mean_interval(losses.filter(pl.col("policy") == p)
                                           .get_column("loss").to_numpy())
                          for p in ("scrape", "filter:oracle", "replace")
                          if p in config["policies"]}
            image = plot_sweep([(t, f, (s.estimate, s.low, s.high)) for t, f, s in points],
                               {n: r.estimate for n, r in references.items()},
                               f"{family}: how good must detection be?",
                               f"tail loss ({profile.loss_text}) at generation {last}",
                               files / f"{family}-sweep.png")
            images.append(image)
            sections.append("Detection-quality sweep: tail loss at the last generation when the "
                            f"filter's tagger has FPR {points[0][1]:g} and the recall on the x "
                            "axis; dotted lines are scrape (no filter), filter:oracle and "
                            "replace.")
            sections.append("")
            sections.append(f"![{family} sweep](report_files/{image.name})")
            sections.append("")
            sections += _md_table(["tagger TPR", "tail loss"],
                                  [[f"{t:g}", s.text()] for t, _, s in points])
            sections.append("")
    results = pl.concat(all_results)
    md += _opening(findings, results, files, images)
    md.append("## Share of tail loss prevented (last generation)")
    md.append("")
    md.append("(loss(B) - loss(policy)) / (loss(B) - loss(filter:oracle)) for the baseline B = "
              "scrape (the unfiltered web) and B = replace (the paper's collapse): 1 = as good as "
              "perfect provenance, 0 = no better than B. Tail loss is the family's (see each "
              "section), mean over seeds. Brackets: 95% bootstrap intervals over seeds; n/a when "
              "B does not lose significantly more tail than filter:oracle.")
    md.append("")
    headline = _md_table(["family", "policy", "tail loss", "prevented vs scrape",
                          "prevented vs replace"], headline_rows)
    md += headline
    md.append("")
    if rate_rows:
        md.append("## What the filters achieved inside the loop")
        md.append("")
        md += _md_table(["family", "policy", "TPR", "FPR"], rate_rows)
        md.append("")
    theory = theory_rows(results, configs)
    if theory:
        md.append("## Against theory and the paper")
        md.append("")
        md += _md_table(["family", "quantity", "ours", "reference", "gap"], theory)
        md.append("")
    md += sections
    md.append("## Environment")
    md.append("")
    env_rows = [[family, info.get("tailguard", "?"), info.get("torch", "?"),
                 str(info.get("device", "?")), f"{len(configs[family]['seeds'])}",
                 info.get("run_id", "?"), f"{info.get('seconds', float('nan')):.1f}"]
                for family, info in infos.items()]
    md += _md_table(["family", "tailguard", "torch", "device", "seeds", "run id (spec hash)",
                     "wall s"], env_rows)
    md.append("")
    env = bench.get("environment")
    if env:
        md.append(f"{'Quick' if bench.get('quick') else 'Full'} plan. Python {env['python']} on "
                  f"{env['platform']} ({env['cpus']} CPUs, torch {env['torch']} with "
                  f"{env['torch_threads']} thread{'s' if env['torch_threads'] != 1 else ''}"
                  + (f" per process, {env['jobs']} families at once" if env.get("jobs", 1) > 1
                     else "")
                  + (f", {env['cuda']}" if env.get("cuda") else "") + "). Wall s is the run's "
                  "last invocation (a resumed run counts only what it computed)"
                  + (f"; the benchmark's took {bench['wall_seconds']:.0f} s in all."
                     if "wall_seconds" in bench else "."))
        md.append("")
    md_path = run_dir / "report.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    html_path = run_dir / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(to_html(md, run_dir), encoding="utf-8")
    return Report(md_path, html_path, images, headline)
