"""The watermark as a tagger signal: synthetic with its z and key fingerprint, else undecided."""

from __future__ import annotations

import json

import polars as pl

from provenance.fusion import Tagger
from provenance.watermark import WatermarkScorer, WatermarkSignal


def test_signal_decides_watermarked_documents_in_the_tagger(
    world: dict, scorer: WatermarkScorer
) -> None:
    generated, human = world["generated"][:5], world["human"][:5]
    batch = pl.DataFrame({
        "id": [f"g{i}" for i in range(5)] + [f"h{i}" for i in range(5)],
        "text": generated + human,
    })
    signal = WatermarkSignal(scorer, generator="tiny-gpt2")
    tagged = Tagger([signal]).tag_batch(batch)
    marked = tagged.filter(pl.col("id").str.starts_with("g"))
    assert set(marked["prov_label"]) == {"synthetic"}
    assert set(marked["prov_evidence"]) == {"watermark"}
    assert set(marked["prov_generator"]) == {"tiny-gpt2"}
    assert marked["prov_score"].min() > 0.999
    detail = json.loads(marked["prov_detail"][0])
    assert set(detail) == {"z", "p_value", "tokens_scored", "key_fingerprint"}
    assert detail["z"] >= 4 and detail["key_fingerprint"] == world["key"].key_fingerprint
    others = tagged.filter(pl.col("id").str.starts_with("h"))
    assert set(others["prov_label"]) == {"unknown"} and set(others["prov_evidence"]) == {"none"}
    assert signal.stats.examined == 10 and signal.stats.decided == 5
