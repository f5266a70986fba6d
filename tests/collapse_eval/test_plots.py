"""Plots: the bands are 95% intervals of the mean, and the PNG is really written."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from collapse_eval.plots import metric_curves, plot_metric, plot_sweep


def _results() -> pl.DataFrame:
    rows = []
    for policy, offset in (("replace", 0.0), ("retain:0.1", 1.0)):
        for seed, noise in enumerate((-1.0, 0.0, 1.0)):
            for generation in range(4):
                rows.append({"family": "gaussian", "policy": policy, "seed": seed,
                             "generation": generation, "metric": "variance",
                             "value": offset + generation + noise, "run_id": "x"})
    return pl.DataFrame(rows)


def test_curves_give_mean_and_a_95_percent_band() -> None:
    curves = metric_curves(_results(), "variance")
    row = curves.filter((pl.col("policy") == "retain:0.1") & (pl.col("generation") == 2)).row(
        0, named=True)
    assert row["mean"] == pytest.approx(3.0) and row["seeds"] == 3
    assert row["half_width"] == pytest.approx(1.96 * 1.0 / math.sqrt(3))


def test_plot_metric_writes_a_png(tmp_path: Path) -> None:
    path = plot_metric(_results(), "variance", tmp_path / "variance.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_the_sweep_spaces_crowded_tprs_evenly_and_labels_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    ticks: list[list[str]] = []
    original = matplotlib.axes.Axes.set_xticks

    def recording(self, positions, labels=None, **kwargs):
        ticks.append([list(positions), list(labels or [])])
        return original(self, positions, labels, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks", recording)
    points = [(t, 0.05, (0.3, 0.2, 0.4)) for t in (0.0, 0.9, 0.99, 1.0)]
    path = plot_sweep(points, {"scrape": 0.25, "replace": 0.7}, "gaussian: sweep",
                      "tail loss", tmp_path / "sweep.png")
    assert ticks == [[[0, 1, 2, 3], ["0", "0.9", "0.99", "1"]]]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
