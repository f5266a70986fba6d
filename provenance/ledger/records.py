"""What the ledger answers with: records, matches, register counts and statistics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from provenance.minhash import normalize


@dataclass(frozen=True)
class LedgerRecord:
    """One registered document (its text is not stored: only its hash and signature)."""

    record_id: int
    doc_id: str | None
    content_hash: str
    generator: str | None
    generation: int | None
    parent_ids: list[str]
    metadata: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class LedgerMatch:
    """A ledger record matching a query document.

    ``similarity`` is 1.0 for an exact match and the MinHash estimate of the Jaccard similarity
    of the shingle sets otherwise; ``exact`` says the normalised texts are identical.
    """

    record: LedgerRecord
    similarity: float
    exact: bool


@dataclass(frozen=True)
class RegisterResult:
    """How many documents a :meth:`Ledger.register` call added, and how many were already there."""

    added: int
    already_present: int


@dataclass(frozen=True)
class LedgerStats:
    """What a ledger holds. ``file_bytes`` counts the database file and its write-ahead log."""

    records: int
    distinct_contents: int
    by_generator: dict[str | None, int]
    by_generation: dict[int | None, int]
    config: dict[str, Any]
    file_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``None`` keys, for records without a generator, become ``"null"``)."""
        out = asdict(self)
        out["by_generator"] = {_key(k): v for k, v in self.by_generator.items()}
        out["by_generation"] = {_key(k): v for k, v in self.by_generation.items()}
        return out


def _key(value: object) -> str:
    return "null" if value is None else str(value)


def content_hash(text: str) -> bytes:
    """The 16-byte identity of a text's content: SHA-256 of its normalised form, truncated.

    Normalising first (NFKC, lower case, collapsed whitespace) makes re-wrapped or re-cased
    copies exact matches. 128 bits keep accidental collisions out of reach (2^-64 at ~4 billion
    records) at half the size of the full digest. ``surrogatepass`` lets lone surrogates (which
    JSON escapes can produce) hash deterministically instead of raising.
    """
    return hashlib.sha256(normalize(text).encode("utf-8", "surrogatepass")).digest()[:16]


def record_from_row(row: Sequence[Any]) -> LedgerRecord:
    """A ``records`` row (in ``RECORD_COLUMNS`` order) as a :class:`LedgerRecord`."""
    rid, doc_id, chash, generator, generation, parents, metadata, created_at = row
    return LedgerRecord(
        record_id=rid,
        doc_id=doc_id,
        content_hash=bytes(chash).hex(),
        generator=generator,
        generation=generation,
        parent_ids=json.loads(parents),
        metadata=json.loads(metadata),
        created_at=created_at,
    )
