"""Plots of experiment results: a metric over generations, one line per policy.

Researchers read collapse as curves (how fast the tail goes, which policy holds it), so every run
writes one PNG per metric. Bands are 95% intervals of the mean across seeds (1.96 standard errors),
omitted when there is a single seed.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
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
def saved_figure(path: str | os.PathLike, figsize: tuple[float, float] = (7, 4.2),
                 panels: int = 1):
    """A matplotlib figure (headless Agg backend) written atomically to ``path`` as PNG on exit.

    With ``panels`` > 1 the axes are a row of that many (an array) and the layout is
    constrained, so a figure-level legend placed ``outside`` keeps its own space.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = "constrained" if panels > 1 else None
    fig, ax = plt.subplots(1, panels, figsize=figsize, dpi=110, layout=layout, squeeze=False)
    try:
        yield fig, (ax[0, 0] if panels == 1 else ax[0])
        if layout is None:
            fig.tight_layout()
            # tight_layout leaves a placeholder layout engine behind, for which savefig draws
            # the whole figure once more before drawing it for real; the layout is done
            fig.set_layout_engine(None)
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
            _curve(ax, part, label=policy)
        ax.set_xlabel("generation")
        ax.set_ylabel(metric)
        ax.set_title(title or f"{family}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return Path(path)


def _curve(ax, part: pl.DataFrame, band: bool = True, **style) -> None:
    """One policy's mean curve, with its 95% band when there are seeds to make one."""
    gen = part.get_column("generation").to_numpy()
    mean = part.get_column("mean").to_numpy()
    half = part.get_column("half_width").to_numpy()
    (line,) = ax.plot(gen, mean, **{"linewidth": 1.6, **style})
    if band and part.get_column("seeds").max() > 1:
        ax.fill_between(gen, mean - half, mean + half, color=line.get_color(), alpha=0.2,
                        linewidth=0)


#: fixed colours for the lead figure's policies, so a policy looks the same in every panel
LEAD_COLOURS = {"replace": "tab:red", "retain:0.1": "tab:orange", "scrape": "tab:blue",
                "accumulate": "tab:cyan", "filter:oracle": "tab:green"}
BEST_FILTER_COLOUR = "tab:purple"


def plot_lead(results: pl.DataFrame, panels: dict[str, tuple[str, list[str]]],
              path: str | os.PathLike) -> Path:
    """The report's lead figure: one panel per family with its tail metric over generations.

    ``panels`` maps a family to (tail metric, highlighted policies). Highlighted policies are
    drawn in colour with bands, the others as thin grey lines, so the few lines the summary
    talks about stand out from the many a benchmark runs; one legend serves all panels.
    """
    width = 3.6 * len(panels) + 0.6
    handles: dict[str, object] = {}
    with saved_figure(path, figsize=(width, 3.9), panels=len(panels)) as (fig, axes):
        for ax, (family, (metric, keep)) in zip(np.atleast_1d(axes), panels.items(),
                                                strict=True):
            rows = results.filter(pl.col("family") == family)
            curves = metric_curves(rows, metric)
            for policy in rows.get_column("policy").unique(maintain_order=True).to_list():
                part = curves.filter(pl.col("policy") == policy)
                if part.is_empty() or policy in keep:
                    continue
                _curve(ax, part, band=False, color="0.75", linewidth=0.8, zorder=1)
            for policy in keep:
                colour = LEAD_COLOURS.get(policy, BEST_FILTER_COLOUR)
                label = policy if policy in LEAD_COLOURS else f"{policy} (best filter)"
                _curve(ax, curves.filter(pl.col("policy") == policy), color=colour,
                       label=label, zorder=3)
            ax.set_title(f"{family}: {metric}", fontsize=11)
            ax.set_xlabel("generation")
            ax.set_ylabel(f"{metric} (1 = original's tails)")
            ax.grid(alpha=0.3)
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        from matplotlib.lines import Line2D

        handles["other policies"] = Line2D([], [], color="0.75", linewidth=0.8)
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncol=math.ceil(len(handles) / 2), frameon=False, fontsize=9)
    return Path(path)


def plot_sweep(points: list[tuple[float, float, tuple[float, float, float]]],
               references: dict[str, float], title: str, ylabel: str,
               path: str | os.PathLike) -> Path:
    """The detection-quality sweep: tail loss against the tagger's recall at a fixed FPR.

    Sweeps crowd their points near TPR 1 (0.9, 0.95, 0.99, 1), so the points sit at even
    steps with their TPR as the tick label: every point and interval stays readable.
    ``points`` are (TPR, FPR, (mean, low, high)); ``references`` are horizontal lines.
    """
    x = np.arange(len(points))
    est, low, high = (np.array([p[2][k] for p in points]) for k in range(3))
    with saved_figure(path, figsize=(7.5, 4.8)) as (_, ax):
        yerr = None if np.isnan(low).any() else [est - low, high - est]
        ax.errorbar(x, est, yerr=yerr, marker="o", capsize=4, linewidth=1.6, color="black",
                    label="filter:noisy (95% interval)", zorder=3)
        for name, value in references.items():
            ax.axhline(value, color=LEAD_COLOURS.get(name, "0.5"), linestyle=":",
                       linewidth=1.6, label=name)
        ax.set_xticks(x, [f"{p[0]:g}" for p in points], fontsize=10)
        ax.tick_params(axis="y", labelsize=10)
        ax.set_xlabel(f"tagger TPR: share of synthetic samples caught (FPR fixed at "
                      f"{points[0][1]:g}; not to scale)", fontsize=10)
        ax.set_ylabel(ylabel, fontsize=10)
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.17),
                  ncol=len(references) + 1)
    return Path(path)
