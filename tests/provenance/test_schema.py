"""The provenance schema: labels, their standard vocabularies, evidence order, column dtypes."""

from __future__ import annotations

import json

import polars as pl
import pytest

from provenance.schema import TAG_COLUMNS, TAG_SCHEMA, Evidence, Label, Tag, tags_frame


def test_labels_map_to_the_standards_users_publish_with() -> None:
    assert Label.SYNTHETIC.hf_language_creators == "machine-generated"
    assert Label.SYNTHETIC.iptc_digital_source_type == "trainedAlgorithmicMedia"
    assert Label.SYNTHETIC.dpi_model_generated is True
    assert Label.HUMAN.dpi_model_generated is False
    assert Label.UNKNOWN.hf_language_creators is None


def test_evidence_priority_is_the_fusion_order() -> None:
    order = sorted(Evidence, key=lambda e: e.priority)
    assert [e.value for e in order] == [
        "declared", "ledger_exact", "watermark", "ledger_near", "detector", "none"
    ]


@pytest.mark.parametrize("score", [-0.1, 1.5])
def test_tag_score_must_be_a_probability(score: float) -> None:
    with pytest.raises(ValueError, match="score must be in \\[0, 1\\]"):
        Tag(Label.SYNTHETIC, score)


def test_tags_frame_has_the_schema_dtypes() -> None:
    frame = tags_frame([Tag(), Tag(Label.SYNTHETIC, 1.0, Evidence.DECLARED, "m", 3, {"k": "é"})])
    assert frame.columns == list(TAG_COLUMNS)
    assert frame.schema == pl.Schema(TAG_SCHEMA)
    assert frame.row(0) == ("unknown", None, "none", None, None, "{}")
    assert json.loads(frame.row(1)[-1]) == {"k": "é"}
    assert tags_frame([]).schema == pl.Schema(TAG_SCHEMA)
