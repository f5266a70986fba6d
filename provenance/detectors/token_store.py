"""A SQLite store of per-token statistics, so a long scoring run resumes and is never repeated.

Scoring a few thousand documents with a 135M-parameter model takes half an hour on two CPU
cores; training, cross-validation, the benchmark and a retrain all need the same numbers. The
store keys each text's (T, k) float32 array by the scorer's id (model digest, dtype, length
limits) and the text's sha256, commits after every batch (a killed run keeps what it scored)
and never holds a half-written row. It is a cache: deleting it only costs time.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS token_terms (
    scorer TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    n_cols INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    reason TEXT,
    terms BLOB,
    PRIMARY KEY (scorer, text_sha256)
)
"""


def text_sha256(text: object) -> str:
    """The key of a text (non-strings by their repr, so a bad row still has one)."""
    raw = text if isinstance(text, str) else repr(text)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """Per-token arrays by (scorer id, text sha256) in one SQLite file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> store = TokenStore(tempfile.mkdtemp() + "/terms.sqlite")
    >>> calls = []
    >>> def score(texts):
    ...     calls.append(len(texts))
    ...     return [np.ones((3, 2)) for _ in texts], [None] * len(texts), [4] * len(texts)
    >>> _ = store.terms("demo", ["a b c", "d e f"], score)
    >>> terms, reasons, n_tokens = store.terms("demo", ["d e f", "x"], score)
    >>> calls, terms[0].shape
    ([2, 1], (3, 2))
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def terms(
        self,
        scorer: str,
        texts: Sequence[object],
        score: Callable[[list], tuple[list, list, list]],
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[list[np.ndarray | None], list[str | None], list[int]]:
        """Each text's array (``None`` with a reason where unscorable), scoring only new texts.

        ``score(texts)`` returns (arrays, reasons, token counts) for a list of texts; it is
        called on batches of at most ``batch_size`` texts not in the store, and each batch is
        committed before the next starts. ``progress(n)`` is told how many texts each batch
        settled (cached ones first).
        """
        keys = [text_sha256(t) for t in texts]
        found = self._read(scorer, set(keys))
        if progress is not None:
            progress(sum(1 for k in keys if k in found))
        missing: dict[str, object] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in found:
                missing.setdefault(key, text)
        pending = list(missing.items())
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            arrays, reasons, counts = score([text for _, text in chunk])
            rows = []
            for (key, _), array, reason, count in zip(chunk, arrays, reasons, counts,
                                                       strict=True):
                found[key] = (array, reason, int(count))
                blob = None if array is None else np.ascontiguousarray(array, "<f4").tobytes()
                shape = (0, 0) if array is None else array.shape
                rows.append((scorer, key, shape[0], shape[1], int(count), reason, blob))
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO token_terms VALUES (?,?,?,?,?,?,?)", rows)
            if progress is not None:
                progress(len(chunk))
        out = [found[k] for k in keys]
        return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]

    def _read(self, scorer: str, keys: set[str]) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        with self._connect() as db:
            cursor = db.execute(
                "SELECT text_sha256, n_rows, n_cols, n_tokens, reason, terms FROM token_terms "
                "WHERE scorer = ?", (scorer,))
            for key, rows, cols, count, reason, blob in cursor:
                if key not in keys:
                    continue
                array = None
                if blob is not None:
                    array = np.frombuffer(blob, "<f4").reshape(rows, cols).astype(np.float64)
                found[key] = (array, reason, count)
        return found
