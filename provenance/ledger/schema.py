"""The ledger file's layout and settings: SQL, the MinHash/LSH defaults, and the limits used.

Kept apart from the code that runs it so the schema reads in one place (see the package notes for
why each table looks the way it does).
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

#: SQLite header field identifying the file as a tailguard ledger ("TGLD"). ``file(1)`` and other
#: tools read it, and it lets us refuse another application's database before touching it.
APPLICATION_ID = 0x54474C44
#: How long a writer opening a ledger retries the switch to WAL mode while others hold it.
WAL_SWITCH_SECONDS = 30.0
#: What the write-ahead log is cut back to once a checkpoint has copied it into the ledger. SQLite
#: reuses the WAL file from its start but never shrinks it by itself, so one large batch written
#: while a reader held an old snapshot left a 656 MB ``-wal`` beside a 1 GB ledger for the rest of
#: a 10-generation language-model run.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

#: Defaults used when a ledger is created. ``lsh_threshold`` is deliberately low (0.5): the LSH
#: bands are fixed at creation, and a banding tuned for 0.5 finds pairs at any lookup threshold
#: >= 0.5 with recall >= ~0.55 at exactly 0.5 and ~0.99 from 0.7 up, while a banding tuned for 0.8
#: would miss most pairs if someone later looks up at 0.6. The price is more candidates to verify,
#: which the exact signature comparison then filters cheaply.
DEFAULT_CONFIG: dict[str, Any] = {
    "num_perm": 128,
    "ngram": 5,
    "seed": 1,
    "hash": "sha1",
    "scheme": "affine32",
    "lsh_threshold": 0.5,
}

INT_KEYS = ("num_perm", "ngram", "seed", "bands", "rows", "schema_version")
FLOAT_KEYS = ("lsh_threshold", "created_at")
CREATE_HINT = "create one with `tailguard ledger add`"

#: Rows per ``IN (...)`` query: below SQLite's historical 999-parameter limit.
IN_CHUNK = 900
#: Query documents per near-lookup round trip; bounds the memory of candidate signatures.
NEAR_CHUNK = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id           INTEGER PRIMARY KEY,
    doc_id       TEXT,
    content_hash BLOB NOT NULL,
    signature    BLOB NOT NULL,
    generator    TEXT,
    generation   INTEGER,
    parent_ids   TEXT NOT NULL DEFAULT '[]',
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   REAL NOT NULL
);
-- Identity of a registration. NULL never equals NULL in a UNIQUE index, so NULLs are replaced by
-- a value of another storage class (a zero-length BLOB for text columns, text for the integer),
-- which SQLite never considers equal to any real value: '' and NULL stay distinct. Its leading
-- column also serves every content_hash lookup, so no separate content_hash index is needed.
CREATE UNIQUE INDEX IF NOT EXISTS records_identity ON records (
    content_hash,
    COALESCE(generator, X''),
    COALESCE(generation, ''),
    COALESCE(doc_id, X'')
);
CREATE TABLE IF NOT EXISTS bands (
    band      INTEGER NOT NULL,
    key       INTEGER NOT NULL,
    record_id INTEGER NOT NULL,
    PRIMARY KEY (band, key, record_id)
) WITHOUT ROWID;
"""

INSERT_RECORD = (
    "INSERT OR IGNORE INTO records "
    "(doc_id, content_hash, signature, generator, generation, parent_ids, metadata, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
RECORD_COLUMNS = (
    "id, doc_id, content_hash, generator, generation, parent_ids, metadata, created_at"
)
QUERY_TABLE = "temp.near_query"
# CROSS JOIN makes SQLite keep the small query table as the outer loop, so each (band, key) is
# one probe of the bands primary key; left to itself, a planner without statistics may decide to
# scan the whole bands table instead. DISTINCT in the inner query: a record sharing several bands
# with a query is verified once.
CANDIDATES_SQL = f"""
SELECT c.query_idx, r.id, r.content_hash, r.signature
FROM (
    SELECT DISTINCT q.query_idx AS query_idx, b.record_id AS record_id
    FROM {QUERY_TABLE} AS q CROSS JOIN bands AS b ON b.band = q.band AND b.key = q.key
) AS c
JOIN records AS r ON r.id = c.record_id
"""
