"""What an LM run folder's finished generations add up to: long-format results and the paper's
perplexity histograms, read from each generation's files.

The run writes them when it ends (:mod:`collapse_eval.engine`); an export of a run still
going writes the part finished so far (:func:`collapse_eval.text.progress.export_lm_progress`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from collapse_eval.engine import RESULT_COLUMNS, config_hash
from collapse_eval.text.chain import generation_dir
from collapse_eval.text.config import LMCollapseConfig

__all__ = ["FAMILY", "collect_lm_results", "plot_data_perplexity"]

#: The family name the results of an LM run carry.
FAMILY = "lm"


def collect_lm_results(out_dir: Path, config: LMCollapseConfig,
                       last: Mapping[str, int] | None = None) -> pl.DataFrame:
    """Long-format results (as the numeric families'): generation 0 repeated under every policy.

    ``last`` (policy -> generation) stops each policy there: the part a run still going has
    finished (see :func:`collapse_eval.text.progress.export_lm_progress`)."""
    run_id = config_hash(config.as_dict())
    rows: list[tuple] = []
    for seed in config.seeds:
        for name in config.policies:
            upto = config.generations if last is None else last[name]
            for generation in range(upto + 1):
                folder = generation_dir(Path(out_dir), seed, name, generation)
                record = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
                rows += [(FAMILY, name, seed, generation, metric, float(value), run_id)
                         for metric, value in record["metrics"].items()]
    frame = pl.DataFrame(rows, schema=list(RESULT_COLUMNS), orient="row")
    return frame.filter(pl.col("value").is_not_nan())


def plot_data_perplexity(out_dir: Path, config: LMCollapseConfig,
                         last: Mapping[str, int] | None = None,
                         folder: Path | None = None) -> list[Path]:
    """The paper's histograms: per-sequence perplexity of each generation's training data under
    the generation-0 model, one panel per policy, curves at generations 0, the middle and the
    last (``last`` as in :func:`collect_lm_results`), first seed; into ``folder``
    [``out_dir/plots``]."""
    import matplotlib

    from collapse_eval.plots import saved_figure

    seed = config.seeds[0]
    policies = list(config.policies)
    upto = {name: config.generations if last is None else last[name] for name in policies}
    gens = {name: sorted({0, upto[name] // 2, upto[name]}) for name in policies}
    values = {}
    for name in policies:
        for g in gens[name]:
            path = generation_dir(Path(out_dir), seed, name, g) / "data_perplexity.parquet"
            values[name, g] = pl.read_parquet(path).get_column("perplexity").to_numpy()
    every = np.concatenate(list(values.values()))
    bins = np.logspace(np.log10(max(every.min(), 1.0)), np.log10(every.max() + 1), 50)
    path = Path(folder or Path(out_dir) / "plots") / "data_perplexity_histograms.png"
    # colour by generation over the whole run, so panels of unequal progress stay comparable
    colormap = matplotlib.colormaps["viridis"]
    # at most 3 panels a row: nine policies in one row would be a strip too wide to read
    cols = min(3, len(policies))
    rows = -(-len(policies) // cols)
    with saved_figure(path, figsize=(3.6 * cols, 2.9 * rows)) as (fig, _):
        fig.clf()
        grid = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        axes = list(grid.flat)
        for ax, name in zip(axes, policies, strict=False):
            for g in gens[name]:
                ax.hist(values[name, g], bins=bins, histtype="step", density=True,
                        color=colormap(0.9 * g / config.generations), label=f"generation {g}")
            ax.set_xscale("log")
            ax.set_title(name, fontsize=9)
            if last is not None or ax is axes[len(policies) - 1]:
                ax.legend(fontsize=7)
        for ax in axes[len(policies):]:
            ax.set_visible(False)
        for ax in grid[-1]:
            ax.set_xlabel("perplexity under generation 0", fontsize=8)
        for ax in grid[:, 0]:
            ax.set_ylabel("density")
    return [path]
