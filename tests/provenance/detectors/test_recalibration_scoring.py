"""Recalibration scoring in chunks: the same numbers as scoring at once, nothing dropped."""

from __future__ import annotations

import random

import numpy as np

from provenance.demo import TrigramModel, stdlib_paragraphs
from provenance.detectors import NgramClassifier
from provenance.detectors.recalibration_scoring import RecalibrationScoring


def test_chunks_give_the_detectors_own_scores_and_count_what_it_refuses() -> None:
    human = stdlib_paragraphs()[:200]
    machine = TrigramModel().fit(human).sample(80, random.Random(0), words=(40, 80))
    clf = NgramClassifier(n_features=2**12, min_tokens=5).fit(
        human[:100] + machine[:40], ["human"] * 100 + ["machine"] * 40)
    texts = human[100:] + ["too short", ""]  # 102 texts: two chunks of 64
    scoring = RecalibrationScoring(clf, adapting=False, progress=False)
    values, reasons = scoring.human(texts)
    expected = clf.score_detailed(texts)
    np.testing.assert_array_equal(values, expected.values)
    assert reasons == expected.reasons and reasons[-2] is not None and reasons[-1] is not None
    before, after = scoring.machine(machine[40:] + ["x"], clf)
    assert len(before) == 40 and np.array_equal(before, after)
    np.testing.assert_array_equal(before, clf.score(machine[40:]))
