"""Plots of experiment results: a metric over generations, one line per policy.

Researchers read collapse as curves (how fast the tail goes, which policy holds it), so every run
writes one PNG per metric. Bands are 95% intervals of the mean across seeds (1.96 standard errors),
omitted when there is a single seed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import polars as pl

from provenance.atomic import atomic_path


def metric_curves(results: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Per policy and generation: mean, 95% band and seed count of ``metric``."""
    rows = results.filter(pl.col("metric") == metric)
    return (rows.group_by("policy", "generation", maintain_order=True)
            .agg(pl.col("value").mean().alias("mean"),
                 pl.col("value").std().fill_null(0.0).alias("std"),
                 pl.col("value").count().alias("seeds"))
            .with_columns((1.96 * pl.col("std") / pl.col("seeds").sqrt()).alias("half_width"))
            .sort("policy", "generation"))


@contextlib.contextmanager
def saved_figure(path: str | os.PathLike, figsize: tuple[float, float] = (7, 4.2)):
    """A matplotlib figure (headless Agg backend) written atomically to ``path`` as PNG on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    try:
        yield fig, ax
        fig.tight_layout()
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def plot_metric(results: pl.DataFrame, metric: str, path: str | os.PathLike,
                title: str | None = None) -> Path:
    """Write ``path`` (PNG) with the curve of ``metric`` for every policy in ``results``."""
    curves = metric_curves(results, metric)
    family = ", ".join(sorted(results.get_column("family").unique().to_list()))
    with saved_figure(path) as (_, ax):
        for policy in results.get_column("policy").unique(maintain_order=True).to_list():
            part = curves.filter(pl.col("policy") == policy)
            if part.is_empty():
                continue
            gen = part.get_column("generation").to_numpy()
            mean = part.get_column("mean").to_numpy()
            half = part.get_column("half_width").to_numpy()
            (line,) = ax.plot(gen, mean, label=policy, linewidth=1.6)
            if part.get_column("seeds").max() > 1:
                ax.fill_between(gen, mean - half, mean + half, color=line.get_color(),
                                alpha=0.2, linewidth=0)
        ax.set_xlabel("generation")
        ax.set_ylabel(metric)
        ax.set_title(title or f"{family}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return Path(path)
