"""A ledger of content our own models generated, to answer "did one of our models write this?".

The ledger is one embedded SQLite file. Generation jobs :meth:`Ledger.register` what they produce;
tagging later asks, for every document of a corpus, whether its text is in the ledger
(:meth:`Ledger.lookup_exact`) or is a lightly edited copy of something in it
(:meth:`Ledger.lookup_near`, MinHash + LSH).

Why SQLite and not an in-memory MinHash LSH index
-------------------------------------------------
A ledger grows across many runs and is read by many processes. An in-memory index would be rebuilt
from scratch on every open (minutes for millions of records) and could not be shared between
concurrent writers. In SQLite the LSH buckets are an ordinary indexed table, so a near lookup is a
handful of B-tree probes against the file, opening costs nothing, and WAL mode lets readers run
while one writer commits (writers take turns; ``busy_timeout`` makes them wait instead of failing).

Schema (version 1)
------------------
``meta(key, value)``
    The MinHash/LSH configuration the ledger was created with. It is fixed for the life of the
    file: signatures and band keys computed with different settings cannot be compared, so a
    reopen reads it back and an explicit, different request is an error rather than a silent
    mismatch.
``records``
    One row per registered document: ``content_hash`` (first 16 bytes of SHA-256 of the
    normalised text, so whitespace, case and Unicode-form variants are the same content), the
    MinHash ``signature`` (``num_perm`` little-endian uint32), and what we know about where it
    came from (``generator``, ``generation``, ``doc_id``, ``parent_ids``, ``metadata``).
``bands(band, key, record_id)``
    The LSH band keys, ``bands`` rows per record.

One module per part: ``schema`` (the SQL and settings), ``records`` (what lookups return),
``checks`` (argument checks) and ``store`` (the :class:`Ledger`).

Crash safety: each batch of :meth:`Ledger.register` is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction that inserts the records *and* their band rows, so a killed process loses at most the
batch in flight and never leaves a record that near lookup cannot find (or band rows pointing at
nothing).
"""

from provenance.ledger.records import (
    LedgerMatch,
    LedgerRecord,
    LedgerStats,
    RegisterResult,
    content_hash,
)
from provenance.ledger.schema import DEFAULT_CONFIG, SCHEMA_VERSION
from provenance.ledger.store import Ledger

__all__ = [
    "DEFAULT_CONFIG",
    "SCHEMA_VERSION",
    "Ledger",
    "LedgerMatch",
    "LedgerRecord",
    "LedgerStats",
    "RegisterResult",
    "content_hash",
]
