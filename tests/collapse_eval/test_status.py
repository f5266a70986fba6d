"""`collapse status` for every family: a tensor run's chains counted from its folder, the
process holding it, how to resume it, and one-line errors for what it cannot do."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from collapse_eval.engine import run_collapse
from collapse_eval.loop import CollapseConfig
from collapse_eval.run_lock import claim_run_dir
from collapse_eval.status import run_status
from provenance.errors import ConfigError, InputError

POLICIES = ("replace", "retain:0.5")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("status") / "gmm"
    config = CollapseConfig("gmm", POLICIES, generations=2, samples=200, heldout=200,
                            seeds=(0, 1))
    run_collapse(config, out, device="cpu", progress=False, plots=False, threads=1)
    return out


def _cut(finished: Path, tmp_path: Path) -> Path:
    """A copy of the run as a kill leaves it: retain:0.5's last generation not written."""
    import shutil

    copy = tmp_path / "gmm"
    shutil.copytree(finished, copy)
    (copy / "checkpoints" / "retain_0.5" / "generation-000002.safetensors").unlink()
    return copy


def test_a_finished_tensor_run_counts_every_chain(finished: Path) -> None:
    status = run_status(finished)
    assert status.lines[0] == f"{finished}: 6 of 6 policy-generations done (finished)"
    assert [line.split() for line in status.lines[1:]] == [["policy", "replace", "3/3"],
                                                          ["policy", "retain:0.5", "3/3"]]
    assert status.summary["family"] == "gmm" and status.summary["finished"] is True
    assert status.summary["running"] is None


def test_a_cut_run_says_how_far_and_how_to_resume(finished: Path, tmp_path: Path) -> None:
    copy = _cut(finished, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    result = CliRunner().invoke(main, ["collapse", "status", str(copy)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{copy}: 5 of 6 policy-generations done"
    assert lines[2].split() == ["policy", "retain:0.5", "2/3"]
    assert lines[3] == (f"no process is recorded as running it: continue with `tailguard "
                        f"collapse run gmm -o {copy} --resume` and its options")
    as_json = json.loads(CliRunner().invoke(main, ["collapse", "status", str(copy),
                                                   "--json"]).output)
    assert {c["chain"]: c["done"] for c in as_json["chains"]} == {"policy replace": 3,
                                                                  "policy retain:0.5": 2}
    assert (as_json["done"], as_json["total"], as_json["finished"]) == (5, 6, False)
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before  # read only


def test_a_run_held_by_a_live_process_is_named(finished: Path, tmp_path: Path) -> None:
    copy = _cut(finished, tmp_path)
    with claim_run_dir(copy, jobs=2):
        line = run_status(copy).lines[-1]
    assert line.startswith(f"running: pid {os.getpid()} on this machine since ")
    assert line.endswith(", --jobs 2")


def test_what_status_cannot_do_is_one_line(finished: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^--export: a gmm run writes its results when it "
                                          "ends; only the LM exports a run still going$"):
        run_status(finished, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    with pytest.raises(InputError, match="not a collapse run folder"):
        run_status(tmp_path)
    result = CliRunner().invoke(main, ["collapse", "status", str(tmp_path)])
    assert result.exit_code != 0 and "not a collapse run folder" in result.output
