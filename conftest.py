"""Shared fixtures. The hub is never reachable in tests: without these variables a lookup hangs."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

#: The fault suite's counts from every pytest-xdist worker (tests/faults/conftest.py).
_FAULT_TOTALS = [0, 0]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Add up what each xdist worker's fault tests did."""
    kills, checked = getattr(node, "workeroutput", {}).get("faults", (0, 0))
    _FAULT_TOTALS[0] += kills
    _FAULT_TOTALS[1] += checked


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Under xdist, print the fault suite's one line of counts (workers print nothing)."""
    if any(_FAULT_TOTALS):
        terminalreporter.write_line(
            f"faults: {_FAULT_TOTALS[0]} kills, {_FAULT_TOTALS[1]} outputs checked")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (``../shared/data``); skips where a checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A real local Ray (2 CPUs, small object store, no dashboard) shared by the Ray tests.

    Skips where Ray is not installed (``pip install "tailguard[ray]"``).
    """
    ray = pytest.importorskip("ray", reason='needs Ray: pip install "tailguard[ray]"')
    pytest.importorskip("ray.data", reason='needs Ray Data: pip install "tailguard[ray]"')
    if ray.is_initialized():
        yield ray
        return
    # Short: Ray puts unix sockets under it, and their paths may not exceed 107 bytes.
    temp = tempfile.mkdtemp(prefix="tgray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp,
             object_store_memory=150 * 1024**2, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _mount_tmpfs(target: Path, options: str) -> bool:
    """Mount a real tmpfs at ``target`` (root only); False where the machine does not allow it."""
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True)
    return done.returncode == 0


def _unmount(target: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def _tmpfs(target: Path, options: str, why_not: str) -> Iterator[None]:
    """A tmpfs mounted at ``target`` for the duration; skips the test with ``why_not``."""
    if not _mount_tmpfs(target, options):
        pytest.skip(why_not)
    try:
        yield
    finally:
        _unmount(target)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write to: a read-only tmpfs as root (root ignores file modes),
    a chmod 555 folder otherwise. Skips where neither can be had."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() == 0:
        with _tmpfs(folder, "ro,size=1m",
                    "running as root without permission to mount a read-only tmpfs"):
            yield folder
        return
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system (tmpfs) to fill up: writes past it fail with ENOSPC.
    Skips where the machine does not allow mounting one."""
    folder = tmp_path / "tiny_disk"
    folder.mkdir()
    with _tmpfs(folder, "size=256k", "cannot mount a small tmpfs here (needs root)"):
        yield folder


def _bind_readonly(target: Path) -> bool:
    """Make ``target`` a read-only bind mount of itself (root only); False where not allowed."""
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    if subprocess.run(["mount", "--bind", str(target), str(target)],
                      capture_output=True).returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,bind,ro", str(target)],
                      capture_output=True).returncode != 0:
        _unmount(target)
        return False
    return True


@pytest.fixture
def readonly_copy_of(tmp_path: Path) -> Iterator[Any]:
    """``readonly_copy_of(folder)``: a copy of ``folder`` that nobody can write to, for data that
    must exist before the folder turns read-only (a ledger, a corpus). A read-only bind mount of
    the copy as root (root ignores file modes), a chmod 555 copy otherwise; undone at teardown.
    Skips where neither can be had."""
    made: list[tuple[Path, bool]] = []

    def copy(folder: Path) -> Path:
        target = tmp_path / f"readonly-copy-{len(made)}-{Path(folder).name}"
        shutil.copytree(folder, target)
        if os.geteuid() == 0:
            if not _bind_readonly(target):
                pytest.skip("running as root without permission to bind-mount read-only")
            made.append((target, True))
        else:
            target.chmod(0o555)
            made.append((target, False))
        return target

    try:
        yield copy
    finally:
        for target, mounted in made:
            if mounted:
                _unmount(target)
            else:
                target.chmod(0o755)
