"""Watermark detection as a tagger signal: our watermark means synthetic, its absence nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from provenance.schema import Evidence, Label, Tag
from provenance.signals import Signal
from provenance.watermark.key import WatermarkKey
from provenance.watermark.scorer import WatermarkScorer

if TYPE_CHECKING:
    import polars as pl


class WatermarkSignal(Signal):
    """Tag documents that carry our watermark as synthetic; leave every other one undecided.

    ``score`` is ``1 - p_value``; ``detail`` keeps ``z``, ``p_value``, ``tokens_scored`` and the
    key's fingerprint, so a tag says which key found it without revealing the key.
    """

    evidence: ClassVar[Evidence] = Evidence.WATERMARK

    def __init__(
        self,
        scorer: WatermarkScorer | WatermarkKey,
        *,
        generator: str | None = None,
        generation: int | None = None,
    ) -> None:
        super().__init__()
        self.scorer = scorer if isinstance(scorer, WatermarkScorer) else WatermarkScorer(scorer)
        self.generator = generator
        self.generation = generation

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        texts = ["" if t is None else t for t in batch.get_column(text_field).to_list()]
        fingerprint = self.scorer.key.key_fingerprint
        tags: list[Tag | None] = []
        for result in self.scorer.score(texts):
            if not result.detected:
                tags.append(None)
                continue
            tags.append(
                Tag(
                    label=Label.SYNTHETIC,
                    score=min(max(1.0 - float(result.p_value), 0.0), 1.0),
                    evidence=self.evidence,
                    generator=self.generator,
                    generation=self.generation,
                    detail={
                        "z": round(float(result.z_score), 3),
                        "p_value": float(result.p_value),
                        "tokens_scored": result.tokens_scored,
                        "key_fingerprint": fingerprint,
                    },
                )
            )
        return tags
