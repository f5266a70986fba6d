"""Time-left estimates of `collapse status` (the folder reading is tested on a real run in
test_text_loop.py)."""

from __future__ import annotations

import pytest

from collapse_eval.text.progress import ChainProgress, LMRunProgress


def _chain(policy: str, seconds: tuple[float, ...], docs: tuple[float, ...],
           total: int = 5) -> ChainProgress:
    return ChainProgress(0, policy, len(seconds), total, seconds, docs=docs)


def test_a_growing_training_set_is_projected_at_its_growth():
    # accumulate: 100 more documents each generation, about 1 s per document
    growing = _chain("accumulate", (200.0, 310.0), (200.0, 300.0))
    # generations 3, 4, 5 train on 400, 500, 600 documents at 510 s / 500 docs
    assert growing.seconds_left(fallback=1.0) == pytest.approx(1500 * 510 / 500)


def test_a_steady_chain_goes_at_its_mean_and_one_not_started_at_the_runs():
    steady = _chain("replace", (100.0, 140.0), (300.0, 300.0))
    assert steady.seconds_left(fallback=1.0) == pytest.approx(3 * 120.0)
    one = _chain("scrape", (90.0,), (300.0,))  # no growth known from one generation
    assert one.seconds_left(fallback=1.0) == pytest.approx(4 * 90.0)
    unrecorded = _chain("retain:0.1", (80.0, 100.0), ())  # records without training_docs
    assert unrecorded.seconds_left(fallback=1.0) == pytest.approx(3 * 90.0)
    waiting = _chain("filter:oracle", (), ())
    run = LMRunProgress(None, 5, {0: {"done": True, "seconds": 50.0}}, (steady, waiting))
    assert run.seconds_left() == pytest.approx(3 * 120.0 + 5 * 120.0)
    assert LMRunProgress(None, 5, {0: {"done": False, "seconds": None}},
                         (_chain("replace", (), ()),)).seconds_left() is None
