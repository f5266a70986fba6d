"""Atomic file writes: readers see the old file or the complete new one, never half of one.

A long run killed mid-write (or a disk that fills up) must not leave a truncated parquet that a
later step reads as if it were complete. Everything tailguard writes goes through
:func:`atomic_path`: write to a temporary file in the same folder, fsync, then ``os.replace``.

The temporary file is hidden (``.NAME.HOST.PID.TICKS.xxxxxxxx.tmp``), so corpus readers never
take it for data (:func:`provenance.outputs.is_hidden_name`). Its name records the process
writing it, so that the next write to the same destination removes the temporary files of
writers that were killed (``kill -9`` leaves no ``finally`` to run) and leaves a live writer's
alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from provenance.processes import process_alive, start_ticks

__all__ = ["atomic_path", "close_atomic", "open_atomic", "remove_stale_temporaries"]


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def _temporary_prefix(dest: Path) -> str:
    pid = os.getpid()
    return f".{dest.name}.{_host()}.{pid}.{start_ticks(pid) or 'x'}."


def remove_stale_temporaries(dest: str | os.PathLike) -> int:
    """Remove the temporary files that killed writers of ``dest`` left beside it; return how many.

    Only files named by :func:`atomic_path` for this destination on this host, whose process
    has ended, are removed: a live writer's temporary file (another run writing the same
    destination) is left alone.

    Examples
    --------
    >>> import tempfile, pathlib, shutil
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / f".out.parquet.{_host()}.999999999.1.abcd1234.parquet").write_bytes(b"PAR1")
    >>> remove_stale_temporaries(root / "out.parquet"), list(root.iterdir())
    (1, [])
    >>> shutil.rmtree(root)
    """
    dest = Path(dest)
    pattern = re.compile(
        rf"\.{re.escape(dest.name)}\.{re.escape(_host())}\.(\d+)\.(\d+|x)\.[a-z0-9_]{{8}}")
    removed = 0
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return 0
    for entry in entries:
        found = pattern.match(entry.name)
        if found is None or process_alive(int(found[1]), None if found[2] == "x" else found[2]):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file lives in the destination folder so that the final ``os.replace`` is a
    rename within one file system (atomic on POSIX and Windows). On an exception the temporary
    file is removed and the destination is left untouched; temporary files of earlier writers
    of ``path`` that were killed are removed first (:func:`remove_stale_temporaries`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "result.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    >>> import shutil; shutil.rmtree(out.parent)
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temporary_prefix(dest), suffix=suffix if suffix is not None else ".tmp",
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the result the permissions any other new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def open_atomic(path: str | os.PathLike, mode: str = "wb", **options: Any
                ) -> tuple[IO[Any], AbstractContextManager[Path]]:
    """Open a file that becomes ``path`` only when :func:`close_atomic` commits it.

    For a writer that stays open across calls (a streamed output, a rejects file), where a
    ``with atomic_path(...)`` block cannot span its life. ``options`` go to :func:`open`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "log.txt"
    >>> fh, pending = open_atomic(out, "w")
    >>> _ = fh.write("line"); out.exists()
    False
    >>> close_atomic(fh, pending, commit=True); out.read_text()
    'line'
    >>> import shutil; shutil.rmtree(out.parent)
    """
    pending = atomic_path(path)
    tmp = pending.__enter__()
    try:
        return open(tmp, mode, **options), pending
    except BaseException as exc:
        pending.__exit__(type(exc), exc, exc.__traceback__)
        raise


def close_atomic(fh: IO[Any], pending: AbstractContextManager[Path], *, commit: bool) -> None:
    """Close a file of :func:`open_atomic`: put it in place (``commit``) or remove it.

    On an abort, an ``OSError`` while closing (the buffer could not be flushed to a full disk)
    is not raised: the file is removed anyway, and the error that caused the abort is the one
    to report.
    """
    try:
        fh.close()
    except BaseException as exc:
        pending.__exit__(type(exc), exc, exc.__traceback__)
        if commit or not isinstance(exc, OSError):
            raise
        return
    if commit:
        pending.__exit__(None, None, None)
    else:
        aborted = RuntimeError("aborted")
        pending.__exit__(RuntimeError, aborted, None)
