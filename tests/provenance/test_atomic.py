"""Atomic writes: the destination is either the old file or the complete new one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provenance.atomic import atomic_path


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
