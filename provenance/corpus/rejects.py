"""What happens to a row that cannot be used: a reason, its place in the file, and a count.

Every row read ends up in a batch or as a :class:`Reject`; :class:`CorpusCounts` keeps
``read == accepted + rejected``, and :class:`RejectsWriter` puts the rejects in a jsonl file
beside the output, so nothing read is ever silently lost.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from provenance.atomic import close_atomic, open_atomic
from provenance.errors import InputError
from provenance.outputs import writing


class RejectReason(str, Enum):
    """Why a row did not make it into the corpus."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_UTF8 = "invalid_utf8"
    MISSING_TEXT = "missing_text"
    TEXT_NOT_STRING = "text_not_string"
    EMPTY_TEXT = "empty_text"
    BAD_ID = "bad_id"
    DUPLICATE_ID = "duplicate_id"


@dataclass(frozen=True)
class Reject:
    """One row that could not be used, with enough context to find and fix it.

    ``line`` is the 1-based line of a jsonl file; ``row`` the 0-based row of a table. ``raw`` is the
    record as read (the parsed object, or the line's text when it did not parse); for bytes that
    are not UTF-8, ``raw_base64`` keeps them exactly.
    """

    file: str
    reason: RejectReason
    message: str
    line: int | None = None
    row: int | None = None
    field: str | None = None
    raw: Any = None
    raw_base64: str | None = None

    def as_json(self) -> str:
        record: dict[str, Any] = {
            "file": self.file,
            "line": self.line,
            "row": self.row,
            "reason": self.reason.value,
            "field": self.field,
            "message": self.message,
            "raw": self.raw,
        }
        if self.raw_base64 is not None:
            record["raw_base64"] = self.raw_base64
        return json.dumps(record, ensure_ascii=False, default=str)

    def to_error(self) -> InputError:
        return InputError(
            f"{self.reason.value}: {self.message}",
            file=self.file,
            line=self.line,
            row=self.row,
            field=self.field,
        )


@dataclass
class CorpusCounts:
    """How many rows were read, kept and rejected (and why); ``read == accepted + rejected``."""

    files: int = 0
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    ids_derived: int = 0
    by_reason: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "ids_derived": self.ids_derived,
            "rejected_by_reason": dict(sorted(self.by_reason.items())),
        }


class RejectsWriter:
    """Append rejects to a jsonl file that appears atomically when the writer is closed.

    The file is only created when there is at least one reject, so a clean run leaves no empty
    rejects file behind; a stale one from an earlier run of the same output is removed. A
    failed write (read-only folder, full disk) raises one
    :class:`~provenance.errors.OutputError` naming the rejects file, never an ``OSError`` that
    a reader could take for its own.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        self._ctx: Any = None
        self._fh: IO[str] | None = None

    def __call__(self, reject: Reject) -> None:
        with writing(self.path):
            if self._fh is None:
                self._fh, self._ctx = open_atomic(self.path, "w", encoding="utf-8")
            self._fh.write(reject.as_json() + "\n")
        self.count += 1

    def close(self, *, commit: bool = True) -> None:
        fh, self._fh = self._fh, None
        with writing(self.path):
            if fh is None:
                if commit and self.path.exists():
                    self.path.unlink()
                return
            close_atomic(fh, self._ctx, commit=commit)

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def rejects_path_for(output: str | os.PathLike) -> Path:
    """The rejects file that goes with an output: ``<output>.rejects.jsonl``."""
    output = Path(output)
    return output.with_name(output.name + ".rejects.jsonl")
