"""Where a command writes: checked before the work, work files out of readers' way, one-line errors.

Every command that writes (``tag``, ``mix``, ``ledger add``/``lookup``, ``collapse run``,
``demo``) goes through this module, so that the promises hold the same way everywhere:

- :func:`check_output` runs *before* any work: the output must not be, hold, or lie inside one of
  the inputs (a run would otherwise delete or re-read what it reads), and its folder must be
  writable (a mixture planned for ten minutes must not then fail on a read-only folder).
- :func:`writing` turns an ``OSError`` raised while writing into one :class:`OutputError` line
  that names the output and the cause (permission, read-only file system, no space, not a
  directory), instead of a traceback that may even blame an input file.
- :func:`work_dir` keeps a run's work files in a hidden folder (``.tailguard-work.*``) beside the
  output. Corpus readers skip hidden names (:func:`is_hidden_name`, as pyarrow's datasets do),
  the folder goes on any exit Python sees, and the next run removes the folders of runs that were
  killed (``kill -9``), recognised by the process id and start time in their name.
- :func:`staged_folder` builds a folder output beside its destination and swaps it in only when
  it is complete, so an ``--overwrite`` that fails or is killed leaves the old output as it was.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from provenance.errors import OutputError, TailguardError
from provenance.processes import process_alive, start_ticks

__all__ = ["WORK_PREFIX", "check_output", "describe_os_error", "is_hidden_name",
           "staged_folder", "sweep_dead_work", "work_dir", "writing"]

WORK_PREFIX = ".tailguard-work."
_REPLACED = "replaced-"

_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a parent is not a directory",
    errno.EISDIR: "is a directory",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(exc: OSError) -> str:
    """The cause of a failed write in a few words, with the file the system named.

    Examples
    --------
    >>> import errno
    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/data/out.parquet"))
    'no space left on device (/data/out.parquet)'
    """
    cause = _CAUSES.get(exc.errno or -1) or (exc.strerror or str(exc)).lower()
    return f"{cause} ({exc.filename})" if exc.filename else cause


def is_hidden_name(name: str) -> bool:
    """Whether corpus readers skip a file or folder of this name when they list a folder.

    Names that start with ``.`` or ``_`` are work files, markers and metadata (pyarrow datasets
    and Spark skip the same ones), never documents.

    Examples
    --------
    >>> [is_hidden_name(n) for n in ("part-0.parquet", ".out.parquet.tmp", "_SUCCESS")]
    [False, True, True]
    """
    return name.startswith((".", "_"))


_OS_ERROR_IN_WORDS = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def _as_os_error(exc: Exception) -> OSError | None:
    """The ``OSError`` behind a failed write, also where polars reports it only in words.

    Polars gives a full disk as ``ComputeError: ... No space left on device (os error 28)``,
    or as an ``OSError`` without ``errno`` whose text holds ``[Errno 28] ...``.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc
    found = _OS_ERROR_IN_WORDS.search(str(exc))
    if found is None:
        return exc if isinstance(exc, OSError) else None
    code = int(found[1] or found[2])
    return OSError(code, os.strerror(code), getattr(exc, "filename", None))


@contextlib.contextmanager
def writing(output: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised inside (or polars' word for one) into one
    :class:`OutputError` line naming ``output``.

    Wrap only the code that writes: a read error of an input must keep its own message.

    Examples
    --------
    >>> with writing("out.parquet"):
    ...     raise PermissionError(13, "Permission denied", "out.parquet.tmp")
    Traceback (most recent call last):
    ...
    provenance.errors.OutputError: out.parquet: cannot write: permission denied (out.parquet.tmp)
    >>> import polars as pl
    >>> with writing("out.parquet"):
    ...     raise pl.exceptions.ComputeError("underlying IO error: No space left (os error 28)")
    Traceback (most recent call last):
    ...
    provenance.errors.OutputError: out.parquet: cannot write: no space left on device
    """
    import polars as pl  # here: the CLI imports this module for every command

    try:
        yield
    except TailguardError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        cause = _as_os_error(exc)
        if cause is None:
            raise
        raise OutputError(f"cannot write: {describe_os_error(cause)}", path=str(output)) from exc


def _input_paths(inputs: Iterable[str | os.PathLike | None]) -> Iterator[tuple[str, Path]]:
    """Each input as (as given, resolved path); a glob yields the files it matches."""
    for given in inputs:
        if given is None or str(given) == "":
            continue
        text = str(given)
        if glob.has_magic(text):
            for match in glob.glob(text, recursive=True):
                yield text, Path(match).resolve()
        else:
            yield text, Path(text).expanduser().resolve()


def _overlap(out: Path, source: Path) -> str | None:
    if out == source:
        return "is"
    if out in source.parents:
        return "holds"
    if source in out.parents:
        return "lies inside"
    return None


def check_output(output: str | os.PathLike | None, inputs: Iterable[str | os.PathLike | None] = (),
                 *, folder: bool = False) -> Path:
    """Refuse an output that would harm an input or cannot be written, before any work starts.

    Parameters
    ----------
    output
        The file (``folder=False``) or folder a command will write.
    inputs
        Every path the command reads (files, folders or globs). The output must not be one of
        them, hold one, or lie inside one: writing it would replace, delete or later re-read
        the data being read.
    folder
        Whether the output is a folder (it may exist; a file output may not be a folder).

    Returns
    -------
    The output as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        Naming the output and the cause.

    Examples
    --------
    >>> import tempfile, pathlib, shutil
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> check_output(root / "new" / "mix", [root / "a.parquet"], folder=True).name
    'mix'
    >>> check_output(root, [root / "a.parquet"], folder=True)
    Traceback (most recent call last):
    ...
    provenance.errors.OutputError: ...: the output holds the input .../a.parquet; choose ...
    >>> shutil.rmtree(root)
    """
    if output is None or str(output).strip() == "":
        raise OutputError("the output path is empty; name a file or folder to write")
    out = Path(output).expanduser()
    resolved = out.resolve()
    for given, source in _input_paths(inputs):
        how = _overlap(resolved, source)
        if how:
            raise OutputError(f"the output {how} the input {given}; choose an output outside "
                              "every input", path=str(output))
    if out.exists() and out.is_dir() != folder:
        kind = "a folder" if out.is_dir() else "a file"
        raise OutputError(f"is {kind}; name a {'folder' if folder else 'file'} to write",
                          path=str(output))
    existing = out if folder and out.is_dir() else out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write: {existing} is a file, not a folder", path=str(output))
    try:
        # Named like a work folder, so a run killed between these two lines is swept later.
        probe = existing / _work_name("probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        exc.filename = str(existing)  # the folder, not the probe's random name
        raise OutputError(f"cannot write: {describe_os_error(exc)}", path=str(output)) from None
    return out


def _work_name(purpose: str) -> str:
    pid = os.getpid()
    host = socket.gethostname().replace(".", "-") or "host"
    return f"{WORK_PREFIX}{purpose}.{host}.{pid}.{start_ticks(pid) or 'x'}.{secrets.token_hex(4)}"


def _owner_gone(name: str) -> bool:
    """Whether the process named in a work folder's name has ended (on this host)."""
    try:
        _, host, pid, ticks, _token = name[len(WORK_PREFIX):].rsplit(".", 4)
    except ValueError:
        return False  # not ours to judge
    if host != (socket.gethostname().replace(".", "-") or "host"):
        return False
    return not process_alive(int(pid), None if ticks == "x" else ticks)


def sweep_dead_work(parent: str | os.PathLike) -> int:
    """Remove the work folders in ``parent`` left by runs that were killed; return how many.

    An output that a killed ``--overwrite`` had already moved aside (and not yet replaced) is
    moved back, so a kill at any instant leaves either the old output or the new one.
    """
    folder = Path(parent)
    if not folder.is_dir():
        return 0
    swept = 0
    for entry in folder.iterdir():
        if not entry.name.startswith(WORK_PREFIX) or not _owner_gone(entry.name):
            continue
        if entry.is_dir():
            for kept in entry.iterdir():
                target = folder / kept.name[len(_REPLACED):]
                if kept.name.startswith(_REPLACED) and not target.exists():
                    with contextlib.suppress(OSError):
                        os.replace(kept, target)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        swept += not entry.exists()
    return swept


@contextlib.contextmanager
def work_dir(parent: str | os.PathLike, purpose: str) -> Iterator[Path]:
    """A hidden work folder in ``parent`` for the duration; removed on any exit.

    Dead runs' work folders in ``parent`` are swept first. ``purpose`` (no dots) names the work
    in the folder's name, e.g. ``.tailguard-work.tag.host.1234.5678.ab12cd34``.

    Examples
    --------
    >>> import tempfile, shutil
    >>> root = tempfile.mkdtemp()
    >>> with work_dir(root, "demo") as work:
    ...     _ = (work / "part-0.parquet").write_bytes(b"...")
    ...     work.name.startswith(".tailguard-work.demo.")
    True
    >>> os.listdir(root)
    []
    >>> shutil.rmtree(root)
    """
    if "." in purpose:
        raise ValueError(f"purpose must not contain dots, got {purpose!r}")
    folder = Path(parent)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        sweep_dead_work(folder)
        path = folder / _work_name(purpose)
        path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _publish(staged: Path, out: Path, work: Path) -> None:
    """Put the complete ``staged`` folder at ``out``; an old ``out`` goes only after that."""
    if out.exists():
        aside = work / f"{_REPLACED}{out.name}"
        os.replace(out, aside)
        try:
            os.replace(staged, out)
        except BaseException:
            os.replace(aside, out)
            raise
    else:
        os.replace(staged, out)


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``out_dir``; on success it becomes ``out_dir``.

    An ``out_dir`` that exists is replaced whole, and only once the new one is complete:
    callers decide before (with :func:`check_output` and their own rules) whether it may be.
    On an error, or a kill at any point, ``out_dir`` is left as it was (a killed swap is undone
    by the next run's :func:`sweep_dead_work`).

    Examples
    --------
    >>> import tempfile, shutil, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_folder(root / "mix") as staged:
    ...     _ = (staged / "manifest.json").write_text("{}")
    >>> sorted(p.name for p in root.iterdir()), (root / "mix" / "manifest.json").exists()
    (['mix'], True)
    >>> shutil.rmtree(root)
    """
    out = Path(out_dir)
    with work_dir(out.parent, "build") as work:
        staged = work / out.name
        with writing(out):
            staged.mkdir()
        yield staged
        with writing(out):
            _publish(staged, out, work)
