"""Typed errors and warnings.

Fatal problems raise a subclass of :class:`TailguardError`; the CLI turns any of them into a single
line on stderr and exit code 1, so a message must make sense on its own: say what was wrong, where
(file, line or row, field) and, where there is one, what to do about it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


class TailguardError(Exception):
    """Base class of every error tailguard raises on purpose."""


class InputError(TailguardError):
    """An input file or value cannot be used (missing, unsupported, malformed).

    ``file``, ``line`` (1-based line of a text file, or 0-based row of a table) and ``field`` are
    kept as attributes so that callers can act on them, and are folded into the message.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.row, self.field = file, line, row, field
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(TailguardError):
    """A parameter or specification is invalid (the message names the parameter and the fix)."""


class OutputError(TailguardError):
    """An output cannot be written where asked: the folder is read-only, the disk is full, a
    parent is a file, or the output is (or holds, or lies inside) one of the run's inputs.

    ``path`` is the output named by the user; the message says the cause in words.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class LedgerError(TailguardError):
    """The ledger database cannot be opened or does not match the requested configuration."""


class TailguardWarning(UserWarning):
    """Something still runs but deserves attention (a remedial hint is in the message)."""


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show each :class:`TailguardWarning` as one ``warning: ...`` line while inside.

    A TailguardWarning is written for the person at the command line (what is wrong, what to
    do), so the CLI prints it like its errors, without Python's file:line and source line;
    other warnings keep their format. Only the display changes: a warning caught by
    ``warnings.catch_warnings(record=True)`` or ``pytest.warns`` is caught as before.
    """
    default = warnings.formatwarning

    def formatted(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
        if issubclass(category, TailguardWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    formatted.one_line = True  # type: ignore[attr-defined]  # see one_line_warnings_active
    warnings.formatwarning = formatted
    try:
        yield
    finally:
        warnings.formatwarning = default


def one_line_warnings_active() -> bool:
    """Whether :func:`one_line_warnings` is in force: worker processes that a CLI command
    starts show their warnings the same way."""
    return bool(getattr(warnings.formatwarning, "one_line", False))
