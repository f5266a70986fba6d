"""The cascade's band is chosen on held-out datasets when the training data has several."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from provenance.detectors import TokenStatistics
from provenance.detectors.ngram import NgramParams
from provenance.detectors.token_store import TokenStore
from provenance.detectors.training import fit_detector, labelled_texts

MAX_TOKENS = 96  # what the tiny model is scored up to (conftest.MAX_TOKENS)


def _report(tiny, store: TokenStore, datasets: np.ndarray) -> dict:
    data = labelled_texts(tiny.human_docs[:40], tiny.samples[:40])
    data.groups["dataset"] = datasets[: len(data.y)]
    scorer = TokenStatistics(tiny.lm, max_tokens=MAX_TOKENS, min_tokens=16, device="cpu")
    _, report = fit_detector(data, scorer, store, cv=(), outer_folds=3, inner_folds=2,
                             char_params=NgramParams(n_features=2**12, min_tokens=1),
                             max_auroc_loss=0.5, target_fpr=0.05, progress=False,
                             head_seeds=1)  # the band is the first stage's: one network will do
    return report


def test_the_band_is_measured_where_the_first_stage_must_transfer(tiny, tmp_path: Path):
    store = TokenStore(tmp_path / "terms.sqlite")
    rows = np.arange(80)
    two = _report(tiny, store, np.where(rows % 2 == 0, "a", "b"))
    one = _report(tiny, store, np.array(["a"] * 80))
    # a generous loss budget, so each finds a band; what differs is the scores it is chosen on
    assert two["calibration"]["cascade"]["chosen_on"] == "leave-one-dataset-out"
    assert one["calibration"]["cascade"]["chosen_on"] == "out-of-fold"
