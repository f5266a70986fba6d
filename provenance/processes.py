"""Is a process that left something behind still alive? (Linux-exact, portable-approximate.)

Run folders, work folders and lock records name the process that made them, so that a later
run can tell a live owner (leave it alone) from a killed one (clean up after it). A process id
alone is not enough: the system reuses ids, so Linux's process start time (clock ticks since
boot, from ``/proc/PID/stat``) is recorded beside it and compared.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_alive", "start_ticks"]


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown.

    Examples
    --------
    >>> start_ticks(os.getpid()) == start_ticks(os.getpid())
    True
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, ticks: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``ticks``, when known) still runs on this machine.

    A pid that now belongs to a process started at another time is not the same process, so
    it counts as gone.

    Examples
    --------
    >>> process_alive(os.getpid(), start_ticks(os.getpid()))
    True
    >>> process_alive(os.getpid(), "0")
    False
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    now = start_ticks(pid)
    return ticks is None or now is None or ticks == now
