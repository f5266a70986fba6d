"""Which process is running a run folder (a ``collapse run`` of any family): one at a time,
and ``collapse status`` can tell an LM run that works from one that died.

A long run is started with ``nohup`` and checked on hours later. Without a record of its
process, a dead run (killed, out of memory, a full disk) looks the same as a live one to
``collapse status``, and a second ``--resume`` started by mistake beside a live run would write
the same generation folders from two processes. While a run works, its folder holds
``.running.json`` (process id, host, start time and options); it is removed when the run ends,
and a record whose process is gone is stale: the next run takes the folder over.

Within a run, the process training a chain's generation names itself in the chain's folder
(``.worker.json``, with the generation) while it works, so that ``collapse status`` can say which
of a ``--jobs`` run's worker processes runs which policy: the one to renice, pin to a core,
profile or stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.atomic import atomic_path
from provenance.errors import ConfigError
from provenance.processes import process_alive, start_ticks

__all__ = ["RUNNING_FILE", "WORKER_FILE", "RunHolder", "chain_worker", "claim_run_dir",
           "mark_chain_worker", "refuse_if_running", "run_holder"]

RUNNING_FILE = ".running.json"
WORKER_FILE = ".worker.json"


@dataclass(frozen=True)
class RunHolder:
    """The process recorded as running a folder, and whether it still does (None: it runs on
    another host, where this one cannot look)."""

    pid: int
    host: str
    started: float
    options: dict[str, Any]
    alive: bool | None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        where = "this machine" if self.host == socket.gethostname() else self.host
        return f"pid {self.pid} on {where} since {since}"


def _alive(record: dict[str, Any]) -> bool | None:
    if record.get("host") != socket.gethostname():
        return None
    return process_alive(int(record["pid"]), record.get("start_ticks"))


def _this_process(options: dict[str, Any]) -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": time.time(),
            "start_ticks": start_ticks(pid), "options": options}


def _read_holder(path: Path) -> RunHolder | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return RunHolder(int(record["pid"]), str(record["host"]), float(record["started"]),
                         dict(record.get("options", {})), _alive(record))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_holder(out_dir: str | os.PathLike) -> RunHolder | None:
    """The process recorded as running ``out_dir``, or None when none is."""
    return _read_holder(Path(out_dir) / RUNNING_FILE)


def chain_worker(chain_dir: str | os.PathLike) -> RunHolder | None:
    """The process recorded as working on a chain's folder (its ``options`` hold the
    generation), or None when none is; ``alive`` says whether it still does."""
    return _read_holder(Path(chain_dir) / WORKER_FILE)


@contextlib.contextmanager
def mark_chain_worker(chain_dir: str | os.PathLike, **details: Any) -> Iterator[None]:
    """Name this process in ``chain_dir`` while it works there (``details``: the generation).

    Informative only, unlike :func:`claim_run_dir`: the run's own record already keeps a
    second run out, so a record that cannot be written is skipped and the work goes on (its
    own error, if the folder is unusable, is the one to see). A record left by a killed
    process names a process that is gone, which :func:`chain_worker` reports as not alive.
    """
    path = Path(chain_dir) / WORKER_FILE
    written = False
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(_this_process(details)) + "\n", encoding="utf-8")
        written = True
    try:
        yield
    finally:
        if written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def refuse_if_running(out_dir: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` if a live process (or one on another host) runs
    ``out_dir``: checked before a run touches the folder, since ``--overwrite`` deletes it."""
    holder = run_holder(out_dir)
    if holder is None and (Path(out_dir) / RUNNING_FILE).exists():
        time.sleep(0.2)  # a run that is writing its record this instant
        holder = run_holder(out_dir)
    if holder is not None and holder.alive is not False:
        raise ConfigError(
            f"{out_dir} is being run by {holder.describe()}; two runs in one folder would "
            f"write the same generations (if that process is gone, delete "
            f"{Path(out_dir) / RUNNING_FILE})")


@contextlib.contextmanager
def claim_run_dir(out_dir: str | os.PathLike, **options: Any) -> Iterator[None]:
    """Record this process as running ``out_dir`` for the duration; refuse with a
    :class:`ConfigError` if a live process (or one on another host) holds it already. A
    stale record (its process is gone) is taken over."""
    path = Path(out_dir) / RUNNING_FILE
    record = _this_process(options)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            refuse_if_running(out_dir)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its process died without cleaning up
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, indent=2) + "\n")
        break
    else:
        raise ConfigError(f"{out_dir}: could not record this run in {path}; another process "
                          "keeps taking the folder")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
