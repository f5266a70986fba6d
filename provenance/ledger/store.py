"""The ledger itself: one SQLite file, registered to by generation jobs, looked up by taggers."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from provenance.errors import ConfigError, LedgerError, TailguardWarning
from provenance.ledger.checks import (
    check_doc_ids,
    check_generation,
    check_matches,
    check_metadata,
    check_optional_str,
    check_parent_ids,
    check_requested,
    check_texts,
    check_threshold,
)
from provenance.ledger.records import (
    LedgerMatch,
    LedgerRecord,
    LedgerStats,
    RegisterResult,
    content_hash,
    record_from_row,
)
from provenance.ledger.schema import (
    APPLICATION_ID,
    CANDIDATES_SQL,
    CREATE_HINT,
    DEFAULT_CONFIG,
    FLOAT_KEYS,
    IN_CHUNK,
    INSERT_RECORD,
    INT_KEYS,
    NEAR_CHUNK,
    QUERY_TABLE,
    RECORD_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    WAL_SIZE_LIMIT_BYTES,
    WAL_SWITCH_SECONDS,
)
from provenance.minhash import MinHasher, band_keys, jaccard_estimate, lsh_params
from provenance.outputs import describe_os_error, writing
from provenance.version import tool_version


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
        ``create=False``. Reading needs no write access: where SQLite cannot create the
        ``-wal``/``-shm`` files a WAL database needs (a read-only folder or file system), the
        ledger is opened ``immutable=1`` instead.
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
    >>> import shutil; shutil.rmtree(path.parent)
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
        check_requested(requested)
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
                raise LedgerError(f"no ledger at {path}; {CREATE_HINT}")
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
        mode = "ro" if self._read_only else ("rwc" if create else "rw")
        try:
            conn, app_id, tables = self._open(f"mode={mode}")
        except sqlite3.DatabaseError as exc:
            folder_problem = _cannot_open(exc) and _unwritable_folder(path.parent)
            if not folder_problem:
                raise self._not_a_ledger(exc) from exc
            if not self._read_only:
                raise self._not_writable(folder_problem) from exc
            conn, app_id, tables = self._open_immutable()
        if tables and (app_id != APPLICATION_ID or "meta" not in tables):
            conn.close()
            raise LedgerError(
                f"{path} is an SQLite database but not a tailguard ledger "
                f"(tables: {', '.join(sorted(tables)[:5])}); pass the path of a ledger file"
            )
        if not tables and not create:
            conn.close()
            raise LedgerError(f"{path} is an empty database, not a ledger; {CREATE_HINT}")
        self._set_pragmas(conn)
        return conn

    def _open(self, params: str) -> tuple[sqlite3.Connection, int, set[str]]:
        """Connect with URI ``params`` and read the header and table names.

        Read first: a file that is not SQLite fails here, before anything could write to it.
        """
        uri = f"{self._path.resolve().as_uri()}?{params}"
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=self._busy_timeout_s
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self._path}: {exc}") from exc
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except BaseException:
            conn.close()
            raise
        return conn, app_id, tables

    def _open_immutable(self) -> tuple[sqlite3.Connection, int, set[str]]:
        """Open for reading where SQLite cannot create the ``-wal``/``-shm`` files beside the
        ledger (a read-only folder or file system).

        A WAL database needs them even to be read, unless it is opened ``immutable=1``
        (https://sqlite.org/wal.html#readonly; ``mode=ro`` and ``nolock=1`` do not help).
        Immutable skips locking and reads the main file only, which is exact here: a writer
        creates ``-shm`` (so its readers take the normal path), and the writes of a ledger
        that a killed writer left in a non-empty ``-wal`` would be invisible, so that case is
        refused instead of answered from stale content.
        """
        wal = self._path.with_name(self._path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise LedgerError(
                f"cannot read ledger {self._path}: its folder is not writable and {wal.name} "
                "holds writes not yet copied into it, which SQLite can only read with write "
                "access; copy the ledger together with its -wal file to a writable folder"
            )
        try:
            return self._open("mode=ro&immutable=1")
        except sqlite3.DatabaseError as exc:
            raise self._not_a_ledger(exc) from exc

    def _not_a_ledger(self, exc: sqlite3.DatabaseError) -> LedgerError:
        if _cannot_open(exc):  # a permission problem of the file itself, not its content
            return LedgerError(f"cannot read ledger {self._path}: {exc}; check its permissions")
        return LedgerError(
            f"{self._path} is not a tailguard ledger (not an SQLite database: {exc})"
        )

    def _not_writable(self, cause: str) -> LedgerError:
        """The one-line error of a writer that cannot write the ledger or create its WAL."""
        return LedgerError(
            f"cannot write to ledger {self._path}: {cause}; look it up as it is (ledger lookup, "
            "ledger stats, tag --ledger), or copy it to a writable folder to add to it"
        )

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
        deadline = time.monotonic() + WAL_SWITCH_SECONDS
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                conn.close()
                if _cannot_open(exc) or _error_code(exc) == _SQLITE_READONLY:
                    cause = _unwritable_folder(self._path.parent)
                    raise self._not_writable(cause or f"the file is read-only ({exc})") from exc
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
        conn.execute(f"PRAGMA journal_size_limit = {int(WAL_SIZE_LIMIT_BYTES)}")

    def _load_or_init(self, requested: dict[str, Any], *, create: bool) -> dict[str, Any]:
        if create and not self._has_meta():
            # IMMEDIATE, and check again inside: of two processes creating the same ledger at
            # once, one creates the schema; the other waits, then reads what the first stored.
            with _Transaction(self._db, immediate=True):
                if not self._has_meta():
                    self._create_schema(requested)
        stored = self._read_meta()
        check_matches(self._path, stored, requested)
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
        for statement in SCHEMA.split(";"):
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
                k: int(v) if k in INT_KEYS else float(v) if k in FLOAT_KEYS else v
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
        texts = check_texts(texts)
        n = len(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_optional_str("generator", generator)
        generation = check_generation(generation)
        ids = check_doc_ids(doc_ids, n)
        parents = check_parent_ids(parent_ids, n)
        metas = check_metadata(metadata, n)
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
                cur = db.execute(INSERT_RECORD, row)
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
        texts = check_texts(texts)
        hashes = [content_hash(t) for t in texts]
        found: dict[bytes, LedgerRecord] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), IN_CHUNK):
            chunk = unique[start : start + IN_CHUNK]
            # With a single MIN() aggregate, SQLite takes the bare columns from the row holding
            # the minimum: one query returns the earliest record of each content hash.
            sql = (
                f"SELECT MIN(id), {RECORD_COLUMNS} FROM records "
                f"WHERE content_hash IN ({_placeholders(len(chunk))}) GROUP BY content_hash"
            )
            for row in db.execute(sql, chunk):
                found[row[3]] = record_from_row(row[1:])
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
        check_threshold(threshold)
        self._warn_low_threshold(threshold)
        texts = check_texts(texts)
        out: list[LedgerMatch | None] = [None] * len(texts)
        for start in range(0, len(texts), NEAR_CHUNK):
            chunk = texts[start : start + NEAR_CHUNK]
            for pos, match in self._near_chunk(db, chunk, threshold).items():
                out[start + pos] = match
        return out

    def _near_chunk(
        self, db: sqlite3.Connection, texts: Sequence[str], threshold: float
    ) -> dict[int, LedgerMatch]:
        queries = self._signatures(texts)
        keys = band_keys(queries, self._config["bands"], self._config["rows"])
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {QUERY_TABLE} "
            "(query_idx INTEGER NOT NULL, band INTEGER NOT NULL, key INTEGER NOT NULL)"
        )
        try:
            db.executemany(
                f"INSERT INTO {QUERY_TABLE} (band, key, query_idx) VALUES (?, ?, ?)",
                _band_rows(keys, range(len(texts))),
            )
            candidates = db.execute(CANDIDATES_SQL).fetchall()
        finally:
            db.execute(f"DELETE FROM {QUERY_TABLE}")
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
        for start in range(0, len(unique), IN_CHUNK):
            chunk = unique[start : start + IN_CHUNK]
            sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE id IN ({_placeholders(len(chunk))})"
            for row in self._db.execute(sql, chunk):
                out[row[0]] = record_from_row(row)
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
                f"SELECT {RECORD_COLUMNS} FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (last, batch_size),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield record_from_row(row)
            last = rows[-1][0]


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


_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


def _error_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``exc`` (Python >= 3.11 carries it), else ``None``."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _cannot_open(exc: sqlite3.Error) -> bool:
    """Whether SQLite could not open a file (the database, or the ``-wal``/``-shm`` it needs):
    a permission or read-only-folder problem, never a sign that the file is not a database."""
    code = _error_code(exc)
    if code is None:
        return "unable to open database file" in str(exc)
    return code == _SQLITE_CANTOPEN


def _unwritable_folder(folder: Path) -> str | None:
    """Why a writer cannot create the ledger's ``-wal``/``-shm`` files in ``folder`` (read-only
    file system, permission denied), or ``None`` where it can."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".tailguard-probe.", dir=folder)
    except OSError as exc:
        cause = describe_os_error(OSError(exc.errno, exc.strerror))  # without the probe's name
        return (f"its folder is not writable ({cause}), and SQLite must create the -wal and "
                "-shm files there")
    os.close(fd)
    os.unlink(probe)
    return None


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
