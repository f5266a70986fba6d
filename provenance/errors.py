"""Typed errors and warnings.

Fatal problems raise a subclass of :class:`TailguardError`; the CLI turns any of them into a single
line on stderr and exit code 1, so a message must make sense on its own: say what was wrong, where
(file, line or row, field) and, where there is one, what to do about it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


class TailguardError(Exception):
    """Base class of every error tailguard raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross processes (a worker pool sends its task's error to the parent), and
        # pickle rebuilds an exception by calling its class with ``args``, which fails for a
        # class with required keyword arguments (ChainWorkerError): rebuild it without __init__.
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type[TailguardError], args: tuple[Any, ...],
                   state: dict[str, Any]) -> TailguardError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


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


class SketchMismatchError(ConfigError, ValueError):
    """A datasketch sketch was made with other settings (a ValueError, as datasketch raises)."""


class GMMInputError(ConfigError, ValueError):
    """Data or parameters that EM cannot use (wrong shape or dtype, too few samples...)."""


class DiskSpaceError(TailguardError):
    """Too little free space to start the next generation; nothing was lost."""


class OptionValueError(ConfigError):
    """A value of an evidence kind's command-line option that its ``from_cli`` cannot use
    (:mod:`provenance.registry`): a usage error of the command that names the option."""


class ChainWorkerError(TailguardError):
    """A chain of a collapse run (a policy, or the LM's seed and policy) failed in its worker
    process (``jobs > 1``); the other workers were stopped, and every finished generation is on
    disk for ``resume``. ``seed`` is None where a chain runs every seed (tensor families)."""

    def __init__(self, message: str, *, policy: str, seed: int | None) -> None:
        super().__init__(message)
        self.policy, self.seed = policy, seed


class BenchFamilyError(TailguardError):
    """A family of the benchmark failed (with ``jobs > 1``, in its worker process; the other
    families were stopped). One line naming the family; every finished generation is on disk,
    so rerunning the command resumes."""

    def __init__(self, message: str, *, family: str) -> None:
        super().__init__(message)
        self.family = family


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
