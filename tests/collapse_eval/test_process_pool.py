"""The worker processes of collapse runs and benchmarks: they start with the caller's
environment and folder, and (where there is a fork server) with the heavy imports done."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from collapse_eval.process_pool import PRELOAD, run_in_pool, worker_context


def _what_the_worker_sees(name: str) -> tuple[str | None, str, list[str]]:
    """In a worker: an environment variable, the working folder, and which of the
    preloaded modules were imported before this task (this module imports none of them)."""
    return os.environ.get(name), os.getcwd(), sorted(m for m in PRELOAD if m in sys.modules)


def _fail_the_first(task: int) -> int:
    if task == 1:
        raise ValueError(f"task {task} failed")
    return task


def test_workers_see_the_callers_environment_and_folder_as_the_pool_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[int, tuple] = {}
    for round_, value in enumerate(("first", "second")):  # the second pool: the same server
        monkeypatch.setenv("TAILGUARD_POOL_PROBE", value)
        (tmp_path / value).mkdir()
        monkeypatch.chdir(tmp_path / value)
        run_in_pool(_what_the_worker_sees, ["TAILGUARD_POOL_PROBE"] * 2, 2,
                    failed=lambda k, error: error,
                    done=lambda k, result, r=round_: seen.__setitem__(2 * r + k, result))
        monkeypatch.delenv("TAILGUARD_POOL_PROBE")
    assert [env for env, _, _ in seen.values()] == ["first", "first", "second", "second"]
    assert [cwd for _, cwd, _ in seen.values()] == [str(tmp_path / v) for v in
                                                    ("first", "first", "second", "second")]
    if worker_context().get_start_method() == "forkserver":  # Linux and macOS
        assert all(imported == sorted(PRELOAD) for _, _, imported in seen.values())


def test_a_failing_task_is_raised_through_the_callers_error() -> None:
    with pytest.raises(RuntimeError, match="task 1 failed") as info:
        run_in_pool(_fail_the_first, [1, 2], 2,
                    failed=lambda k, error: RuntimeError(str(error)))
    assert isinstance(info.value.__cause__, ValueError)
    assert not multiprocessing.active_children()


def test_a_fork_server_that_cannot_start_leaves_spawned_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from multiprocessing import forkserver

    def refused() -> None:
        raise PermissionError("AF_UNIX socket refused by the sandbox")

    monkeypatch.setattr(forkserver, "ensure_running", refused)
    assert worker_context().get_start_method() == "spawn"
    seen: list[tuple] = []
    run_in_pool(_what_the_worker_sees, ["HOME"], 1, failed=lambda k, error: error,
                done=lambda k, result: seen.append(result))
    assert seen and seen[0][1] == os.getcwd()
