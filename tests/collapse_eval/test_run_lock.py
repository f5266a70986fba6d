"""One process per run folder, and a record that tells a live run from a dead one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collapse_eval.run_lock import (
    RUNNING_FILE,
    WORKER_FILE,
    chain_worker,
    claim_run_dir,
    mark_chain_worker,
    refuse_if_running,
    run_holder,
)
from provenance.errors import ConfigError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(folder: Path, **fields) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "options": {"jobs": 2}, **fields}
    (folder / RUNNING_FILE).write_text(json.dumps(record))


def test_a_run_holds_its_folder_while_it_works_and_lets_go_after(tmp_path: Path) -> None:
    assert run_holder(tmp_path) is None
    with claim_run_dir(tmp_path, jobs=2, threads=1):
        holder = run_holder(tmp_path)
        assert holder is not None and holder.alive is True
        assert (holder.pid, holder.options) == (os.getpid(), {"jobs": 2, "threads": 1})
        assert holder.describe().startswith(f"pid {os.getpid()} on this machine since ")
        with pytest.raises(ConfigError, match=f"is being run by pid {os.getpid()} on this "
                                              "machine since .*two runs in one folder"):
            refuse_if_running(tmp_path)
        with pytest.raises(ConfigError, match="is being run by"), claim_run_dir(tmp_path):
            pass
    assert run_holder(tmp_path) is None and not (tmp_path / RUNNING_FILE).exists()


def test_the_record_of_a_dead_process_is_stale_and_taken_over(tmp_path: Path) -> None:
    dead = _dead_pid()
    _record(tmp_path, pid=dead)
    holder = run_holder(tmp_path)
    assert holder is not None and holder.alive is False and holder.pid == dead
    refuse_if_running(tmp_path)  # nothing to refuse
    with claim_run_dir(tmp_path):
        assert run_holder(tmp_path).pid == os.getpid()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_reused_process_id_is_not_taken_for_the_run(tmp_path: Path) -> None:
    _record(tmp_path, start_ticks="1")  # this pid, but a process that started at boot
    assert run_holder(tmp_path).alive is False


def test_a_run_on_another_host_is_not_second_guessed(tmp_path: Path) -> None:
    _record(tmp_path, host="another-host.example")
    holder = run_holder(tmp_path)
    assert holder.alive is None and "on another-host.example since" in holder.describe()
    with pytest.raises(ConfigError, match="another-host.example"):
        refuse_if_running(tmp_path)


def test_a_chain_worker_names_itself_while_it_works(tmp_path: Path) -> None:
    chain = tmp_path / "seed-0" / "replace"  # made if the chain has no folder yet
    assert chain_worker(chain) is None
    with mark_chain_worker(chain, generation=3):
        worker = chain_worker(chain)
        assert worker is not None and worker.alive is True
        assert (worker.pid, worker.options) == (os.getpid(), {"generation": 3})
    assert chain_worker(chain) is None and not (chain / WORKER_FILE).exists()
    # a worker killed mid-generation leaves its name behind: a process that is gone
    dead = _dead_pid()
    (chain / WORKER_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(),
                                                 "started": time.time(), "options": {}}))
    assert chain_worker(chain).alive is False
    (chain / WORKER_FILE).write_text("{half a reco")  # unreadable: as if none
    assert chain_worker(chain) is None
    # where no record can be written (a file where the folder goes), the work goes on without
    blocked = tmp_path / "seed-0" / "scrape"
    blocked.write_text("not a folder")
    with mark_chain_worker(blocked, generation=1):
        ran = True
    assert ran and chain_worker(blocked) is None and blocked.read_text() == "not a folder"
