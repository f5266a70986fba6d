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

Crash safety: each batch of :meth:`Ledger.register` is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction that inserts the records *and* their band rows, so a killed process loses at most the
batch in flight and never leaves a record that near lookup cannot find (or band rows pointing at
nothing).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.errors import ConfigError, InputError, LedgerError, TailguardWarning
from provenance.minhash import MinHasher, band_keys, jaccard_estimate, lsh_params, normalize
from provenance.version import tool_version

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

SCHEMA_VERSION = 1

#: SQLite header field identifying the file as a tailguard ledger ("TGLD"). ``file(1)`` and other
#: tools read it, and it lets us refuse another application's database before touching it.
APPLICATION_ID = 0x54474C44
#: How long a writer opening a ledger retries the switch to WAL mode while others hold it.
_WAL_SWITCH_SECONDS = 30.0
#: What the write-ahead log is cut back to once a checkpoint has copied it into the ledger. SQLite
#: reuses the WAL file from its start but never shrinks it by itself, so one large batch written
#: while a reader held an old snapshot left a 656 MB ``-wal`` beside a 1 GB ledger for the rest of
#: a 10-generation language-model run.
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

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

_INT_KEYS = ("num_perm", "ngram", "seed", "bands", "rows", "schema_version")
_FLOAT_KEYS = ("lsh_threshold", "created_at")
_CREATE_HINT = "create one with `tailguard ledger add`"

#: Rows per ``IN (...)`` query: below SQLite's historical 999-parameter limit.
_IN_CHUNK = 900
#: Query documents per near-lookup round trip; bounds the memory of candidate signatures.
_NEAR_CHUNK = 2000

_SCHEMA = """
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

_INSERT_RECORD = (
    "INSERT OR IGNORE INTO records "
    "(doc_id, content_hash, signature, generator, generation, parent_ids, metadata, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_RECORD_COLUMNS = (
    "id, doc_id, content_hash, generator, generation, parent_ids, metadata, created_at"
)
_QUERY_TABLE = "temp.near_query"
# CROSS JOIN makes SQLite keep the small query table as the outer loop, so each (band, key) is
# one probe of the bands primary key; left to itself, a planner without statistics may decide to
# scan the whole bands table instead. DISTINCT in the inner query: a record sharing several bands
# with a query is verified once.
_CANDIDATES_SQL = f"""
SELECT c.query_idx, r.id, r.content_hash, r.signature
FROM (
    SELECT DISTINCT q.query_idx AS query_idx, b.record_id AS record_id
    FROM {_QUERY_TABLE} AS q CROSS JOIN bands AS b ON b.band = q.band AND b.key = q.key
) AS c
JOIN records AS r ON r.id = c.record_id
"""


# --------------------------------------------------------------------------- public values


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


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """An SQLite ledger of generated content, with exact and near-duplicate lookup.

    Parameters
    ----------
    path
        The ledger file. Its folder is created if needed.
    create
        Create the ledger if ``path`` does not exist (otherwise a missing file is an error).
    read_only
        Open with SQLite's ``mode=ro``: lookups only, safe to hand to many readers. Implies
        ``create=False``.
    num_perm, ngram, seed, hash, scheme, lsh_threshold
        MinHash/LSH configuration. ``None`` means the stored value (or the default of
        :data:`DEFAULT_CONFIG` when creating). An explicit value that differs from a stored one is
        a :class:`LedgerError`: signatures computed differently are not comparable.
    busy_timeout_s
        How long a writer waits for another process's transaction before giving up.

    Notes
    -----
    A ``Ledger`` holds one SQLite connection and belongs to the process (and thread) that opened
    it; pickling it (e.g. to a worker pool) reopens the same file in the worker.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "generated.sqlite"
    >>> with Ledger(path) as ledger:
    ...     ledger.register(["A model wrote this sentence about rivers and the sea."],
    ...                     generator="m1", generation=1)
    RegisterResult(added=1, already_present=0)
    >>> with Ledger(path, read_only=True) as ledger:
    ...     hit, miss = ledger.lookup_exact(
    ...         ["a MODEL wrote this  sentence about rivers and the sea.", "Something else."])
    >>> hit.record.generator, hit.exact, miss
    ('m1', True, None)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,
        read_only: bool = False,
        num_perm: int | None = None,
        ngram: int | None = None,
        seed: int | None = None,
        hash: str | None = None,
        scheme: str | None = None,
        lsh_threshold: float | None = None,
        busy_timeout_s: float = 60.0,
    ) -> None:
        self._path = Path(path)
        self._read_only = bool(read_only)
        self._busy_timeout_s = float(busy_timeout_s)
        self._pid = os.getpid()
        requested = {
            "num_perm": num_perm,
            "ngram": ngram,
            "seed": seed,
            "hash": hash,
            "scheme": scheme,
            "lsh_threshold": lsh_threshold,
        }
        _check_requested(requested)
        if busy_timeout_s < 0:
            raise ConfigError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        self._conn: sqlite3.Connection | None = None
        self._conn = self._connect(create=create and not read_only)
        try:
            self._config = self._load_or_init(requested, create=create and not read_only)
            self._hasher = _hasher_for(self._config)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        path = self._path
        if path.is_dir():
            raise LedgerError(f"{path} is a folder, not a ledger file")
        if not path.exists():
            if not create:
                raise LedgerError(f"no ledger at {path}; {_CREATE_HINT}")
            path.parent.mkdir(parents=True, exist_ok=True)
        mode = "ro" if self._read_only else ("rwc" if create else "rw")
        uri = f"{path.resolve().as_uri()}?mode={mode}"
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=self._busy_timeout_s
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
        try:
            # Read first: a file that is not SQLite fails here, before anything could write to it.
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(
                f"{path} is not a tailguard ledger (not an SQLite database: {exc})"
            ) from exc
        if tables and (app_id != APPLICATION_ID or "meta" not in tables):
            conn.close()
            raise LedgerError(
                f"{path} is an SQLite database but not a tailguard ledger "
                f"(tables: {', '.join(sorted(tables)[:5])}); pass the path of a ledger file"
            )
        if not tables and not create:
            conn.close()
            raise LedgerError(f"{path} is an empty database, not a ledger; {_CREATE_HINT}")
        self._set_pragmas(conn)
        return conn

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        # Temporary tables (the near-lookup query table) stay in memory, even for read-only use.
        conn.execute("PRAGMA temp_store = MEMORY")
        # 64 MiB page cache: band inserts land at random places of a large B-tree.
        conn.execute("PRAGMA cache_size = -65536")
        if self._read_only:
            return
        # Switching to WAL needs a moment of exclusive access and SQLite answers "database is
        # locked" at once instead of waiting on the busy timeout, so writers that open a new
        # ledger together retry for a while.
        deadline = time.monotonic() + _WAL_SWITCH_SECONDS
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                conn.close()
                raise LedgerError(f"cannot switch ledger {self._path} to WAL mode: {exc}") from exc
        if str(mode).lower() != "wal":
            conn.close()
            raise LedgerError(
                f"ledger {self._path} could not use WAL mode (got {mode!r}); "
                "put it on a local file system"
            )
        # NORMAL in WAL mode: a committed batch survives a killed process; only a power loss can
        # drop the last commits, never corrupt the file. FULL would fsync on every batch.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {int(_WAL_SIZE_LIMIT_BYTES)}")

    def _load_or_init(self, requested: dict[str, Any], *, create: bool) -> dict[str, Any]:
        if create and not self._has_meta():
            # IMMEDIATE, and check again inside: of two processes creating the same ledger at
            # once, one creates the schema; the other waits, then reads what the first stored.
            with _Transaction(self._db, immediate=True):
                if not self._has_meta():
                    self._create_schema(requested)
        stored = self._read_meta()
        _check_matches(self._path, stored, requested)
        return stored

    def _has_meta(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        return row is not None

    def _create_schema(self, requested: dict[str, Any]) -> None:
        conn = self._db
        config = {k: (DEFAULT_CONFIG[k] if v is None else v) for k, v in requested.items()}
        _hasher_for(config)  # validate before anything is written
        bands, rows = lsh_params(config["lsh_threshold"], config["num_perm"])
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        meta = {
            "schema_version": SCHEMA_VERSION,
            **config,
            "bands": bands,
            "rows": rows,
            "created_at": time.time(),
            "tailguard_version": tool_version(),
        }
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [(k, repr(v) if isinstance(v, float) else str(v)) for k, v in meta.items()],
        )

    def _read_meta(self) -> dict[str, Any]:
        raw = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        missing = [k for k in (*DEFAULT_CONFIG, "bands", "rows", "schema_version") if k not in raw]
        if missing:
            raise LedgerError(
                f"{self._path} is not a valid tailguard ledger: meta lacks {', '.join(missing)}"
            )
        try:
            meta: dict[str, Any] = {
                k: int(v) if k in _INT_KEYS else float(v) if k in _FLOAT_KEYS else v
                for k, v in raw.items()
            }
        except ValueError as exc:
            raise LedgerError(f"{self._path}: corrupt ledger meta table ({exc})") from exc
        if meta["schema_version"] > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self._path} has schema version {meta['schema_version']}, newer than "
                f"this tailguard understands ({SCHEMA_VERSION}); upgrade tailguard"
            )
        return meta

    # ------------------------------------------------------------------ properties & lifecycle

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def hasher(self) -> MinHasher:
        """The :class:`MinHasher` whose signatures this ledger stores and compares."""
        return self._hasher

    @property
    def config(self) -> dict[str, Any]:
        """The stored configuration (MinHash settings, ``bands``/``rows``, versions)."""
        return dict(self._config)

    @property
    def read_only(self) -> bool:
        """Whether this handle was opened read-only."""
        return self._read_only

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A connection cannot cross processes; a pickled ledger reopens the file, asking for the
        # configuration this handle saw so that a swapped file is detected, not silently used.
        requested = {k: self._config[k] for k in DEFAULT_CONFIG}
        return (_reopen, (str(self._path), self._read_only, self._busy_timeout_s, requested))

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self._read_only else "open")
        return f"Ledger({str(self._path)!r}, {state})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"ledger {self._path} is closed; open it again")
        if os.getpid() != self._pid:
            raise LedgerError(
                f"ledger {self._path} was opened in another process; open it again in this one "
                "(or pass the Ledger through pickle, which reopens it)"
            )
        return self._conn

    # ------------------------------------------------------------------ writing

    def register(
        self,
        texts: Sequence[str],
        *,
        generator: str | None = None,
        generation: int | None = None,
        doc_ids: Sequence[str | None] | None = None,
        parent_ids: Sequence[Sequence[str]] | None = None,
        metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        batch_size: int = 5000,
    ) -> RegisterResult:
        """Add generated documents to the ledger; documents already registered are skipped.

        A document is "already registered" when the same normalised content was registered with
        the same ``generator``, ``generation`` and ``doc_id``: re-running an interrupted
        generation job re-registers its output without duplicating it, while the same text from
        another model (or under another id) is a separate record.

        Every argument is validated before anything is written. Each ``batch_size`` documents
        are then hashed outside any lock (so concurrent writers hash in parallel) and written in
        one transaction, so an interruption loses at most the batch in flight.

        ``metadata`` is one JSON-serialisable dict for all documents or one per document;
        ``parent_ids`` lists, per document, the ids of the documents it was generated from.
        """
        db = self._db
        if self._read_only:
            raise LedgerError(
                f"ledger {self._path} is open read-only; open it without read_only=True to register"
            )
        texts = _check_texts(texts)
        n = len(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        _check_optional_str("generator", generator)
        generation = _check_generation(generation)
        ids = _check_doc_ids(doc_ids, n)
        parents = _check_parent_ids(parent_ids, n)
        metas = _check_metadata(metadata, n)
        added = 0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            chunk = texts[start:stop]
            signatures = self._signatures(chunk)
            keys = band_keys(signatures, self._config["bands"], self._config["rows"])
            now = time.time()
            rows = [
                (
                    ids[i],
                    content_hash(text),
                    signatures[i - start].tobytes(),
                    generator,
                    generation,
                    parents[i],
                    metas[i],
                    now,
                )
                for i, text in enumerate(chunk, start)
            ]
            try:
                added += self._write_batch(db, rows, keys)
            except sqlite3.OperationalError as exc:
                raise self._write_error(exc, committed=added) from exc
        return RegisterResult(added=added, already_present=n - added)

    def _write_error(self, exc: sqlite3.OperationalError, *, committed: int) -> LedgerError:
        hint = (
            f"another process held the write lock for more than busy_timeout_s="
            f"{self._busy_timeout_s:g}; retry, or open the ledger with a longer busy_timeout_s"
            if "locked" in str(exc) or "busy" in str(exc)
            else "check the disk and the file's permissions"
        )
        return LedgerError(
            f"could not write to ledger {self._path} ({exc}); {committed} documents of this call "
            f"were committed before, so re-running it is safe: {hint}"
        )

    def _signatures(self, texts: Sequence[str]) -> np.ndarray:
        """Signatures as little-endian uint32 (the stored form; every scheme's values fit)."""
        sigs = np.asarray(self._hasher.signatures(texts))
        if sigs.shape != (len(texts), self._config["num_perm"]):
            raise LedgerError(
                f"MinHasher returned signatures of shape {sigs.shape}, expected "
                f"({len(texts)}, {self._config['num_perm']})"
            )
        return np.ascontiguousarray(sigs, dtype="<u4")

    def _write_batch(self, db: sqlite3.Connection, rows: list[tuple], keys: np.ndarray) -> int:
        """Insert one batch of records and their band keys in one transaction; return # added."""
        with _Transaction(db, immediate=True):
            new_ids: list[int] = []
            new_pos: list[int] = []
            for pos, row in enumerate(rows):
                cur = db.execute(_INSERT_RECORD, row)
                if cur.rowcount == 1:  # 0 when the identity was already present
                    new_ids.append(cur.lastrowid)
                    new_pos.append(pos)
            if new_ids:
                db.executemany(
                    "INSERT INTO bands (band, key, record_id) VALUES (?, ?, ?)",
                    _band_rows(keys[new_pos], new_ids),
                )
        return len(new_ids)

    # ------------------------------------------------------------------ reading

    def lookup_exact(self, texts: Sequence[str]) -> list[LedgerMatch | None]:
        """For each text, the earliest record with the same normalised content, or ``None``.

        "Earliest" (lowest record id) makes the answer stable when the same content was
        registered by several generators or runs.
        """
        db = self._db
        texts = _check_texts(texts)
        hashes = [content_hash(t) for t in texts]
        found: dict[bytes, LedgerRecord] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            # With a single MIN() aggregate, SQLite takes the bare columns from the row holding
            # the minimum: one query returns the earliest record of each content hash.
            sql = (
                f"SELECT MIN(id), {_RECORD_COLUMNS} FROM records "
                f"WHERE content_hash IN ({_placeholders(len(chunk))}) GROUP BY content_hash"
            )
            for row in db.execute(sql, chunk):
                found[row[3]] = _record(row[1:])
        return [
            None if h not in found else LedgerMatch(record=found[h], similarity=1.0, exact=True)
            for h in hashes
        ]

    def lookup_near(self, texts: Sequence[str], threshold: float = 0.8) -> list[LedgerMatch | None]:
        """For each text, the most similar record with estimated Jaccard >= ``threshold``.

        Band keys of the queries go into a temporary table that is joined against the ``bands``
        primary key, so the cost is a few index probes per query whatever the ledger's size, and
        nothing is loaded into memory up front. Candidates are then verified on their full
        signatures; ties go to the earliest record. Exact content matches are found too (with
        ``exact=True`` and similarity 1.0).

        Documents below the ledger's ``lsh_threshold`` similarity are rarely even candidates, so
        a ``threshold`` under it warns: recall there is poor.
        """
        db = self._db
        _check_threshold(threshold)
        self._warn_low_threshold(threshold)
        texts = _check_texts(texts)
        out: list[LedgerMatch | None] = [None] * len(texts)
        for start in range(0, len(texts), _NEAR_CHUNK):
            chunk = texts[start : start + _NEAR_CHUNK]
            for pos, match in self._near_chunk(db, chunk, threshold).items():
                out[start + pos] = match
        return out

    def _near_chunk(
        self, db: sqlite3.Connection, texts: Sequence[str], threshold: float
    ) -> dict[int, LedgerMatch]:
        queries = self._signatures(texts)
        keys = band_keys(queries, self._config["bands"], self._config["rows"])
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {_QUERY_TABLE} "
            "(query_idx INTEGER NOT NULL, band INTEGER NOT NULL, key INTEGER NOT NULL)"
        )
        try:
            db.executemany(
                f"INSERT INTO {_QUERY_TABLE} (band, key, query_idx) VALUES (?, ?, ?)",
                _band_rows(keys, range(len(texts))),
            )
            candidates = db.execute(_CANDIDATES_SQL).fetchall()
        finally:
            db.execute(f"DELETE FROM {_QUERY_TABLE}")
        if not candidates:
            return {}
        best = _best_candidates(queries, candidates, self._config["num_perm"], threshold)
        records = self._records_by_id([rid for rid, _, _ in best.values()])
        hashes = {pos: content_hash(texts[pos]) for pos in best}
        return {
            pos: LedgerMatch(
                record=records[rid],
                similarity=1.0 if chash == hashes[pos] else sim,
                exact=chash == hashes[pos],
            )
            for pos, (rid, sim, chash) in best.items()
        }

    def _warn_low_threshold(self, threshold: float) -> None:
        lsh = self._config["lsh_threshold"]
        if threshold >= lsh:
            return
        bands, rows = self._config["bands"], self._config["rows"]
        recall = 1.0 - (1.0 - threshold**rows) ** bands
        warnings.warn(
            TailguardWarning(
                f"near-match threshold {threshold} is below the ledger's lsh_threshold {lsh}: "
                f"a document with similarity {threshold} is found with probability "
                f"~{recall:.0%}. Use threshold >= {lsh}, or build a ledger with "
                f"lsh_threshold={threshold}."
            ),
            stacklevel=3,
        )

    def _records_by_id(self, ids: Sequence[int]) -> dict[int, LedgerRecord]:
        out: dict[int, LedgerRecord] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            sql = f"SELECT {_RECORD_COLUMNS} FROM records WHERE id IN ({_placeholders(len(chunk))})"
            for row in self._db.execute(sql, chunk):
                out[row[0]] = _record(row)
        return out

    def stats(self) -> LedgerStats:
        """Counts by generator and generation, the configuration and the size on disk."""
        db = self._db
        with _Transaction(db, immediate=False):  # one snapshot for all counts
            records, distinct = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM records"
            ).fetchone()
            by_generator = dict(
                db.execute("SELECT generator, COUNT(*) FROM records GROUP BY generator")
            )
            by_generation = dict(
                db.execute("SELECT generation, COUNT(*) FROM records GROUP BY generation")
            )
        size = sum(
            p.stat().st_size
            for p in (self._path, self._path.with_name(self._path.name + "-wal"))
            if p.exists()
        )
        return LedgerStats(
            records=records,
            distinct_contents=distinct,
            by_generator=by_generator,
            by_generation=by_generation,
            config=self.config,
            file_bytes=size,
        )

    def iter_records(self, batch_size: int = 10000) -> Iterator[LedgerRecord]:
        """All records in registration order, fetched ``batch_size`` at a time.

        Pages are read by record id (keyset pagination), so no read transaction stays open
        between pages: a long export never blocks the WAL checkpoint of concurrent writers.
        Records committed during the iteration may or may not be included.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        last = 0
        while True:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (last, batch_size),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _record(row)
            last = rows[-1][0]


# --------------------------------------------------------------------------- helpers


class _Transaction:
    """``BEGIN [IMMEDIATE]`` ... ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
    can fail with "database is locked" without ever invoking the busy handler, whereas an
    IMMEDIATE one simply waits ``busy_timeout``.
    """

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = True) -> None:
        self.conn = conn
        self.immediate = immediate

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _reopen(path: str, read_only: bool, busy_timeout_s: float, requested: dict[str, Any]) -> Ledger:
    return Ledger(
        path, create=False, read_only=read_only, busy_timeout_s=busy_timeout_s, **requested
    )


def _hasher_for(config: Mapping[str, Any]) -> MinHasher:
    try:
        return MinHasher(
            num_perm=config["num_perm"],
            ngram=config["ngram"],
            seed=config["seed"],
            hash=config["hash"],
            scheme=config["scheme"],
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid MinHash configuration {dict(config)}: {exc}") from exc


def _check_requested(requested: Mapping[str, Any]) -> None:
    for name in ("num_perm", "ngram"):
        value = requested[name]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    seed = requested["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    for name in ("hash", "scheme"):
        if requested[name] is not None and not isinstance(requested[name], str):
            raise ConfigError(f"{name} must be a string, got {requested[name]!r}")
    threshold = requested["lsh_threshold"]
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 < threshold < 1.0
    ):
        raise ConfigError(f"lsh_threshold must be in (0, 1), got {threshold!r}")


def _check_matches(path: Path, stored: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    for key, want in requested.items():
        if want is None:
            continue
        have = stored[key]
        same = math.isclose(have, want, abs_tol=1e-12) if key == "lsh_threshold" else have == want
        if not same:
            raise LedgerError(
                f"ledger {path} was created with {key}={have!r} but {key}={want!r} was "
                f"requested; omit {key} to use the stored value, or use another ledger file"
            )


def _check_threshold(threshold: float) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 < threshold <= 1.0
    ):
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")


def _check_texts(texts: Sequence[str]) -> Sequence[str]:
    if isinstance(texts, (str, bytes)):
        raise InputError("texts must be a sequence of strings, not a single string; wrap it in [ ]")
    if not isinstance(texts, Sequence):
        texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__}, expected str")
    return texts


def _check_optional_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string or None, got {value!r}")


def _check_generation(generation: object) -> int | None:
    if generation is None:
        return None
    if isinstance(generation, (bool, float)) or not isinstance(generation, (int, np.integer)):
        raise ConfigError(f"generation must be a non-negative integer or None, got {generation!r}")
    if generation < 0:
        raise ConfigError(f"generation must be a non-negative integer or None, got {generation}")
    return int(generation)


def _check_length(name: str, values: Sequence[Any], n: int) -> None:
    if len(values) != n:
        raise ConfigError(
            f"{name} has {len(values)} entries but there are {n} texts; give one per text"
        )


def _check_doc_ids(doc_ids: Sequence[str | None] | None, n: int) -> Sequence[str | None]:
    if doc_ids is None:
        return [None] * n
    if isinstance(doc_ids, str):
        raise ConfigError("doc_ids must be a sequence of ids, not a single string")
    doc_ids = list(doc_ids)
    _check_length("doc_ids", doc_ids, n)
    for i, doc_id in enumerate(doc_ids):
        if doc_id is not None and not isinstance(doc_id, str):
            raise ConfigError(f"doc_ids[{i}] must be a string or None, got {doc_id!r}")
    return doc_ids


def _check_parent_ids(parent_ids: Sequence[Sequence[str]] | None, n: int) -> list[str]:
    if parent_ids is None:
        return ["[]"] * n
    if isinstance(parent_ids, str):
        raise ConfigError("parent_ids must hold one list of ids per text, not a single string")
    parent_ids = list(parent_ids)
    _check_length("parent_ids", parent_ids, n)
    out = []
    for i, parents in enumerate(parent_ids):
        if parents is None:
            parents = []
        if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
            raise ConfigError(
                f"parent_ids[{i}] must be a list of string ids (e.g. [{parents!r}]), "
                f"got {parents!r}"
            )
        out.append(json.dumps(list(parents), ensure_ascii=False))
    return out


def _check_metadata(
    metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None, n: int
) -> list[str]:
    if metadata is None:
        return ["{}"] * n
    if isinstance(metadata, Mapping):
        return [_metadata_json(metadata, "metadata")] * n
    if isinstance(metadata, str):
        raise ConfigError("metadata must be a dict or one dict per text, not a string")
    metadata = list(metadata)
    _check_length("metadata", metadata, n)
    return [_metadata_json(m, f"metadata[{i}]") for i, m in enumerate(metadata)]


def _metadata_json(value: object, name: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} is not JSON-serialisable ({exc}); use plain values") from exc


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _band_rows(keys: np.ndarray, owners: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(band, key, owner)`` for each cell of ``keys`` (one row of keys per owner), sorted.

    Sorting by (band, key) turns the inserts into a sweep along the primary key instead of
    random B-tree writes.
    """
    keys = np.asarray(keys, dtype=np.int64)
    n, b = keys.shape
    band = np.tile(np.arange(b, dtype=np.int64), n)
    owner = np.repeat(np.asarray(owners, dtype=np.int64), b)
    flat = keys.reshape(-1)
    order = np.lexsort((owner, flat, band))
    return list(zip(band[order].tolist(), flat[order].tolist(), owner[order].tolist(), strict=True))


def _best_candidates(
    queries: np.ndarray, candidates: list[tuple], num_perm: int, threshold: float
) -> dict[int, tuple[int, float, bytes]]:
    """Verify candidates on full signatures: best ``(record_id, similarity, hash)`` per query."""
    qidx = np.fromiter((c[0] for c in candidates), dtype=np.int64, count=len(candidates))
    rids = np.fromiter((c[1] for c in candidates), dtype=np.int64, count=len(candidates))
    sigs = np.frombuffer(b"".join(c[3] for c in candidates), dtype="<u4").reshape(-1, num_perm)
    sims = np.asarray(jaccard_estimate(queries[qidx], sigs), dtype=np.float64)
    # Best first within each query: highest similarity, then lowest (earliest) record id.
    order = np.lexsort((rids, -sims, qidx))
    first = order[np.r_[True, qidx[order][1:] != qidx[order][:-1]]]
    return {
        int(qidx[i]): (int(rids[i]), float(sims[i]), candidates[i][2])
        for i in first
        if sims[i] >= threshold
    }


def _record(row: Sequence[Any]) -> LedgerRecord:
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
