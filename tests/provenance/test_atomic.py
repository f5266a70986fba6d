"""Atomic writes: the destination is either the old file or the complete new one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.atomic import atomic_path, close_atomic, open_atomic


def test_replaces_on_success_with_umask_permissions(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "f.txt"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp != out
        tmp.write_text("new")
    assert out.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    out = tmp_path / "f.txt"
    out.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


KILLED_WRITER = """
import os, signal, sys
from provenance.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_write_removes_a_killed_writers_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "f.txt"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], cwd=Path.cwd())
    assert done.returncode == -9
    [left] = list(tmp_path.iterdir())
    assert left.name.startswith(".f.txt.") and left.name.endswith(".tmp")
    with atomic_path(tmp_path / "other.txt") as tmp:  # another destination's write: not its own
        tmp.write_text("x")
    assert left.exists()
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "other.txt"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "f.txt"
    with atomic_path(out) as first:
        first.write_text("one")
        with atomic_path(out) as second:
            second.write_text("two")
        assert first.exists()
    assert out.read_text() == "one"


def test_an_aborted_open_file_leaves_nothing(tmp_path: Path) -> None:
    fh, pending = open_atomic(tmp_path / "f.txt", "w")
    fh.write("half")
    close_atomic(fh, pending, commit=False)
    assert list(tmp_path.iterdir()) == []
