"""Evidence signals: each looks at a batch of documents and decides some of them.

A signal implements one method, :meth:`Signal.examine`, that returns a
:class:`~provenance.schema.Tag` for each document it has evidence about and ``None`` for the
others. The base class owns what every signal needs the same way (counting, timing, checking the
row count), and the tagger hands each signal only the documents still undecided, so a new kind of
evidence (a watermark, a detector) is a small subclass plus one registration
(:func:`provenance.registry.register_signal`: its name, place in the fusion order and options),
and the fusion does not change.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from provenance.errors import ConfigError
from provenance.schema import Evidence, Label, Tag, evidence_name

if TYPE_CHECKING:
    import polars as pl

    from provenance.ledger import Ledger, LedgerMatch


@dataclass
class SignalStats:
    """What a signal did over a run: documents examined, documents decided, seconds spent."""

    examined: int = 0
    decided: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        rate = self.examined / self.seconds if self.seconds > 0 else None
        return {
            "examined": self.examined,
            "decided": self.decided,
            "seconds": round(self.seconds, 4),
            "docs_per_s": round(rate, 1) if rate else None,
        }


class Signal(ABC):
    """One kind of evidence about whether documents are synthetic.

    Subclasses set :attr:`evidence` (an :class:`~provenance.schema.Evidence` member, or the
    name a plugin registers) and implement :meth:`examine`. The kind's place in the fusion
    order and its options are its registration's (:func:`provenance.registry.register_signal`).
    """

    evidence: ClassVar[Evidence | str]

    def __init__(self) -> None:
        self.stats = SignalStats()

    @property
    def name(self) -> str:
        """The kind of evidence, as ``prov_evidence`` and the registry name it."""
        return evidence_name(self.evidence)

    @abstractmethod
    def examine(self, batch: pl.DataFrame, text_field: str) -> Sequence[Tag | None]:
        """A tag for each row of ``batch`` this signal has evidence about, ``None`` otherwise."""

    def run(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        """:meth:`examine` with counting and timing; checks the subclass kept the row count."""
        if batch.height == 0:
            return []
        start = time.perf_counter()
        tags = list(self.examine(batch, text_field))
        self.stats.seconds += time.perf_counter() - start
        if len(tags) != batch.height:
            raise RuntimeError(
                f"signal {self.name} returned {len(tags)} tags for {batch.height} documents"
            )
        self.stats.examined += batch.height
        self.stats.decided += sum(tag is not None for tag in tags)
        return tags


def _ledger_tag(match: LedgerMatch, evidence: Evidence) -> Tag:
    record = match.record
    return Tag(
        label=Label.SYNTHETIC,
        # An exact match is certain. A near match's Jaccard similarity is the best available
        # measure of how much of the document is known generated content.
        score=1.0 if match.exact else float(min(max(match.similarity, 0.0), 1.0)),
        evidence=evidence,
        generator=record.generator,
        generation=record.generation,
        detail={
            "record_id": record.record_id,
            "doc_id": record.doc_id,
            "content_hash": record.content_hash,
            "similarity": round(float(match.similarity), 4),
        },
    )


class LedgerExactSignal(Signal):
    """Documents whose normalised text is in the ledger of generated content."""

    evidence = Evidence.LEDGER_EXACT

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        matches = self.ledger.lookup_exact(batch.get_column(text_field).to_list())
        return [None if m is None else _ledger_tag(m, self.evidence) for m in matches]


class LedgerNearSignal(Signal):
    """Documents that are near-duplicates (MinHash Jaccard >= threshold) of ledger content.

    Catches generated text that was lightly edited, re-wrapped or truncated before it was
    published, which an exact hash misses.
    """

    evidence = Evidence.LEDGER_NEAR

    def __init__(self, ledger: Ledger, threshold: float = 0.8) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"near-match threshold must be in (0, 1], got {threshold}")
        self.ledger = ledger
        self.threshold = threshold

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        texts = batch.get_column(text_field).to_list()
        matches = self.ledger.lookup_near(texts, threshold=self.threshold)
        return [None if m is None else _ledger_tag(m, self.evidence) for m in matches]
