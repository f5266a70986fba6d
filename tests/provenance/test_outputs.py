"""Output checks, work folders and staged folders: what every writing command relies on."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.errors import OutputError
from provenance.outputs import (
    WORK_PREFIX,
    check_output,
    staged_folder,
    sweep_dead_work,
    work_dir,
    writing,
)


def _dead_process_name(purpose: str) -> str:
    """A work-folder name as a process that has since ended would have made it."""
    code = f"from provenance.outputs import _work_name; print(_work_name({purpose!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    return done.stdout.strip()


@pytest.mark.parametrize(("output", "inputs", "folder", "message"), [
    ("data/a.jsonl", ["data/a.jsonl"], False, "the output is the input data/a.jsonl"),
    ("data", ["data/a.jsonl"], True, "the output holds the input data/a.jsonl"),
    ("data/out.parquet", ["data"], False, "the output lies inside the input data"),
    ("data/b.jsonl", ["data/*.jsonl"], False, None),  # matches no file yet: fine
    ("data/a.jsonl", ["data/*.jsonl"], False, "the output is the input data/*.jsonl"),
    ("", [], False, "the output path is empty"),
    ("data/a.jsonl/x.parquet", [], False, "is a file, not a folder"),
    ("data", [], False, "is a folder; name a file"),
])
def test_check_output_refuses_what_would_harm_an_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, inputs: list[str],
        folder: bool, message: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "x"}\n')
    if message is None:
        assert check_output(output, inputs, folder=folder) == Path(output)
        return
    with pytest.raises(OutputError, match=message.replace("*", r"\*")):
        check_output(output, inputs, folder=folder)
    assert (tmp_path / "data" / "a.jsonl").read_text() == '{"text": "x"}\n'


def test_check_output_names_the_folder_not_its_probe(readonly_dir: Path) -> None:
    with pytest.raises(OutputError) as caught:
        check_output(readonly_dir / "sub" / "out.parquet")
    assert str(caught.value).endswith(f"({readonly_dir})")
    assert "probe" not in str(caught.value) and list(readonly_dir.iterdir()) == []


def test_writing_turns_a_full_disk_into_one_line(tiny_disk: Path) -> None:
    out = tiny_disk / "big.bin"
    with pytest.raises(OutputError, match=r"big.bin: cannot write: no space left on device"), \
            writing(out):
        out.write_bytes(b"x" * 1_000_000)


def test_work_dir_goes_on_error_and_dead_runs_leftovers_are_swept(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), work_dir(tmp_path, "tag") as work:
        (work / "part.parquet").write_bytes(b"...")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    dead_folder, dead_probe = _dead_process_name("tag"), _dead_process_name("probe")
    (tmp_path / dead_folder).mkdir()
    (tmp_path / dead_folder / "part.parquet").write_bytes(b"...")
    (tmp_path / dead_probe).write_bytes(b"")
    with work_dir(tmp_path, "tag") as live:
        (tmp_path / "other").mkdir()
        assert sweep_dead_work(tmp_path) == 0  # the live one stays
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "other"])


def test_staged_folder_keeps_the_old_output_until_the_new_one_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "mix"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    with pytest.raises(OSError), staged_folder(out) as staged:
        (staged / "manifest.json").write_text("half")
        raise OSError(errno.EIO, "disk gone")
    assert (out / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mix"]
    with staged_folder(out) as staged:
        (staged / "manifest.json").write_text("new")
        assert (out / "manifest.json").read_text() == "old"
    assert (out / "manifest.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["mix"]


def test_a_swap_killed_halfway_is_undone_by_the_next_run(tmp_path: Path) -> None:
    # The old output moved aside into a dead run's work folder, the new one not yet in place.
    work = tmp_path / _dead_process_name("build")
    (work / "replaced-mix").mkdir(parents=True)
    (work / "replaced-mix" / "manifest.json").write_text("old")
    (work / "mix").mkdir()
    assert sweep_dead_work(tmp_path) == 1
    assert (tmp_path / "mix" / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mix"]
    assert not any(p.name.startswith(WORK_PREFIX) for p in tmp_path.iterdir())
