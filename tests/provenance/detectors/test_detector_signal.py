"""A calibrated detector as the tagger's signal: labels, scores and details per document."""

from __future__ import annotations

import json

import polars as pl
import pytest

from provenance.detectors import DetectorSignal, calibrate
from provenance.errors import ConfigError
from provenance.fusion import Tagger


def test_detector_signal_in_the_tagger(tiny, fdg) -> None:
    calibrated = calibrate(fdg, tiny.human_docs[:150], 0.05, tiny.samples[:20])
    texts = tiny.samples[20:30] + tiny.human_docs[150:156] + ["Too short."]
    batch = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})
    tagged = Tagger([DetectorSignal(calibrated)]).tag_batch(batch)
    assert set(tagged.get_column("prov_evidence")) == {"detector"}
    labels = tagged.get_column("prov_label").to_list()
    details = [json.loads(d) for d in tagged.get_column("prov_detail")]
    assert labels[-1] == "unknown" and details[-1]["reason"].startswith("too few tokens")
    for label, detail in zip(labels[:-1], details[:-1], strict=True):
        assert {"criterion", "threshold", "target_fpr", "detector"} <= set(detail)
        flagged = detail["criterion"] >= detail["threshold"]
        assert label == ("synthetic" if flagged else "human")
    assert details[0]["detector"] == f"fast-detectgpt:{tiny.path}"
    assert labels[:10].count("synthetic") > labels[10:16].count("synthetic")
    scores = tagged.get_column("prov_score").to_list()
    assert scores[-1] is None and all(0 <= s <= 1 for s in scores[:-1])
    assert sum(scores[:10]) / 10 > sum(scores[10:16]) / 6  # P(synthetic) higher for samples
    with pytest.raises(ConfigError, match="calibrate"):
        DetectorSignal(fdg)


