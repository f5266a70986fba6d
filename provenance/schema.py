"""What a tagged document is: the provenance columns, their types and their vocabulary.

This is the one place that names the columns every tailguard step keeps ("provenance is a column
that every step keeps"). Other modules import the constants instead of spelling column names, so
a rename happens here or nowhere.

Labels map to the vocabularies users already publish with:

* Hugging Face dataset cards, ``language_creators``: ``machine-generated`` vs ``found`` /
  ``crowdsourced`` / ``expert-generated``;
* IPTC Digital Source Type: ``trainedAlgorithmicMedia`` vs ``digitalCapture``;
* the Data Provenance Initiative's "Model Generated" flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import polars as pl

#: Default names of the identifier and text columns of an input corpus.
ID = "id"
TEXT = "text"

PROV_LABEL = "prov_label"
PROV_SCORE = "prov_score"
PROV_EVIDENCE = "prov_evidence"
PROV_GENERATOR = "prov_generator"
PROV_GENERATION = "prov_generation"
PROV_DETAIL = "prov_detail"


class Label(str, Enum):
    """Whether a document was written by people or produced by a model.

    ``unknown`` means *no evidence either way*; it is never silently read as human.
    """

    HUMAN = "human"
    SYNTHETIC = "synthetic"
    UNKNOWN = "unknown"

    @property
    def hf_language_creators(self) -> str | None:
        """The Hugging Face dataset-card ``language_creators`` term for this label."""
        return {Label.HUMAN: "found", Label.SYNTHETIC: "machine-generated"}.get(self)

    @property
    def iptc_digital_source_type(self) -> str | None:
        """The IPTC Digital Source Type code (``http://cv.iptc.org/newscodes/digitalsourcetype/``)."""
        return {
            Label.HUMAN: "digitalCapture",
            Label.SYNTHETIC: "trainedAlgorithmicMedia",
        }.get(self)

    @property
    def dpi_model_generated(self) -> bool | None:
        """The Data Provenance Initiative's "Model Generated" flag."""
        return {Label.HUMAN: False, Label.SYNTHETIC: True}.get(self)


class Evidence(str, Enum):
    """The built-in kinds of evidence, listed from most to least reliable.

    The order is the fusion order of :mod:`provenance.fusion`: the first kind that reaches a
    decision for a document decides it. What the tagger reads is the registry of evidence kinds
    (:mod:`provenance.registry`), which gives each built-in kind this place; a kind a plugin
    registers is named by a plain string (see :func:`evidence_name`).
    """

    DECLARED = "declared"
    LEDGER_EXACT = "ledger_exact"
    WATERMARK = "watermark"
    LEDGER_NEAR = "ledger_near"
    DETECTOR = "detector"
    NONE = "none"

    @property
    def priority(self) -> int:
        """Position in the fusion order (0 = most reliable)."""
        return list(Evidence).index(self)


def evidence_name(evidence: Evidence | str) -> str:
    """The ``prov_evidence`` value of a kind of evidence: a built-in's or a registered one's.

    Examples
    --------
    >>> evidence_name(Evidence.LEDGER_NEAR), evidence_name("marker")
    ('ledger_near', 'marker')
    """
    return evidence.value if isinstance(evidence, Evidence) else str(evidence)


#: Polars dtypes of the tag columns. Strings rather than ``pl.Enum`` so that parquet files read
#: back the same in pandas, pyarrow and ``datasets``.
TAG_SCHEMA: dict[str, pl.DataType] = {
    PROV_LABEL: pl.String(),
    PROV_SCORE: pl.Float64(),
    PROV_EVIDENCE: pl.String(),
    PROV_GENERATOR: pl.String(),
    PROV_GENERATION: pl.Int64(),
    PROV_DETAIL: pl.String(),
}
TAG_COLUMNS: tuple[str, ...] = tuple(TAG_SCHEMA)


@dataclass(frozen=True)
class Tag:
    """The provenance of one document, with the evidence that decided it.

    ``score`` is P(synthetic) in [0, 1], or ``None`` when nothing was observed. ``evidence`` is
    the deciding kind: an :class:`Evidence` member, or the name of a registered kind.
    ``detail`` holds the deciding evidence's numbers (matched record, similarity, declared field
    and value, z-score ...) and is stored as a JSON string column.
    """

    label: Label = Label.UNKNOWN
    score: float | None = None
    evidence: Evidence | str = Evidence.NONE
    generator: str | None = None
    generation: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Tag.score must be in [0, 1] or None, got {self.score}")

    def as_row(self) -> dict[str, Any]:
        """The tag as a row of the provenance columns."""
        return {
            PROV_LABEL: self.label.value,
            PROV_SCORE: self.score,
            PROV_EVIDENCE: evidence_name(self.evidence),
            PROV_GENERATOR: self.generator,
            PROV_GENERATION: self.generation,
            PROV_DETAIL: json.dumps(self.detail, sort_keys=True, ensure_ascii=False),
        }


UNTAGGED = Tag()


def reason_kind(reason: str) -> str:
    """A reason without its particulars (up to its first colon or parenthesis), so that
    "too few tokens: 3 < 16" and "too few tokens: 5 < 16" count as one kind.

    >>> reason_kind("too few tokens: 3 < 16"), reason_kind("not English (0% of letters ...)")
    ('too few tokens', 'not English')
    """
    return reason.split(":")[0].split(" (")[0]


def why_unknown(evidence: str, detail: dict[str, Any]) -> tuple[str, str]:
    """(evidence, kind of reason) of an ``unknown`` tag, for run summaries: the evidence that
    looked and could not decide (a detector's "not decisive", "too few tokens" ...), or
    ``none`` when no evidence reached the document.

    >>> why_unknown("detector", {"reason": "too few tokens: 2 < 16"})
    ('detector', 'too few tokens')
    >>> why_unknown("none", {})
    ('none', 'no evidence reached it')
    """
    if evidence == Evidence.NONE.value:
        return evidence, "no evidence reached it"
    reason = detail.get("reason")
    return evidence, reason_kind(reason) if isinstance(reason, str) else "undecided"


def tags_frame(tags: list[Tag]) -> pl.DataFrame:
    """Provenance columns for a list of tags, with the dtypes of :data:`TAG_SCHEMA`."""
    return pl.DataFrame([t.as_row() for t in tags], schema=TAG_SCHEMA, orient="row")
