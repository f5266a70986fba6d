"""The fault-injection suite's tools: the real CLI in a subprocess, kills, and output checks.

Every test here runs ``python -m cli`` as a user would, so what is checked is what a user gets:
the exit code, the stderr lines, and the files left behind after an error or a ``kill -9``.
The suite counts what it does (kills that landed, outputs whose state it checked) and prints
one line at the end of the session, ``faults: N kills, M outputs checked``, to be quoted.

Inputs are generated once per session (:func:`corpora`) and never written to: a test that
gives one as an output works on its own copy.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.002
RUN_TIMEOUT_S = 180.0


@dataclass
class FaultCounts:
    """What the suite did in this session: kills that landed, outputs whose state was checked."""

    kills: int = 0
    outputs_checked: int = 0

    def line(self) -> str:
        return f"faults: {self.kills} kills, {self.outputs_checked} outputs checked"


COUNTS = FaultCounts()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the counts as one line, so that a run's numbers can be quoted."""
    if COUNTS.kills or COUNTS.outputs_checked:
        terminalreporter.write_line(COUNTS.line())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, hand this worker's counts to the controller (root conftest adds
    them up and prints the line there)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["faults"] = [COUNTS.kills, COUNTS.outputs_checked]


# ---- files ------------------------------------------------------------------------------------


def is_hidden(relative: Path) -> bool:
    """Whether any part of a relative path is a name readers skip (``.x`` or ``_x``)."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path, *, hidden: bool = True, skip: frozenset[str] = frozenset()
                ) -> dict[str, str]:
    """sha256 of every file at ``path`` by relative name ({} when absent, {"": sha} for a file).

    ``hidden=False`` leaves out work files (names readers skip); ``skip`` leaves out file names
    that hold run facts (``run.json``: time, host) rather than output.
    """
    if path.is_file():
        return {"": _sha256(path)}
    if not path.is_dir():
        return {}
    found = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()):
        relative = file.relative_to(path)
        if (hidden or not is_hidden(relative)) and file.name not in skip:
            found[relative.as_posix()] = _sha256(file) if file.is_file() else "link"
    return found


def copy_tree(source: Path, target: Path) -> None:
    """Copy a flat folder (a mixture) file by file."""
    target.mkdir(parents=True)
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())


def hidden_entries(folder: Path) -> list[str]:
    """Names of work files and folders anywhere under ``folder`` (what a dead run may leave)."""
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.name.startswith("."))


def _file_ids(root: Path, pattern: str = "*", hidden_only: bool = False
              ) -> set[tuple[str, int, int]]:
    """(relative path, inode, mtime) of the files under ``root`` whose name matches
    ``pattern``, read while a run creates, renames and deletes them: what vanishes is skipped."""
    found = set()
    for folder, _, names in os.walk(root):  # os.walk skips a folder removed meanwhile
        for name in fnmatch.filter(names, pattern):
            relative = (Path(folder) / name).relative_to(root)
            if hidden_only and not is_hidden(relative):
                continue
            with contextlib.suppress(OSError):
                st = os.stat(Path(folder) / name)
                found.add((relative.as_posix(), st.st_ino, st.st_mtime_ns))
    return found


# ---- the CLI ----------------------------------------------------------------------------------


KillPoint = Callable[[float], bool]  # seconds since the launch -> kill now?


class Started:
    """A command running in the background; :meth:`finish` waits for it and expects success."""

    def __init__(self, proc: subprocess.Popen, err: IO[bytes], name: str) -> None:
        self.proc, self.err, self.name = proc, err, name

    def finish(self) -> None:
        if self.err.closed:
            return
        try:
            code = self.proc.wait(timeout=RUN_TIMEOUT_S)
            self.err.seek(0)
            assert code == 0, (f"{self.name} exited {code}: "
                               f"{self.err.read().decode(errors='replace')[-1500:]}")
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.err.close()


class Tailguard:
    """The CLI in a subprocess (``python -m cli`` from the repository root).

    ``systemp`` is the subprocesses' ``TMPDIR``: private, so that what a killed run leaves in
    the system temp folder can be seen (and is not mistaken for another test's).
    """

    def __init__(self, counts: FaultCounts, systemp: Path) -> None:
        self.counts = counts
        self.systemp = systemp
        systemp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "TMPDIR": str(systemp), "PYTHONUNBUFFERED": "1"}

    @staticmethod
    def command(args: tuple[str | Path, ...]) -> list[str]:
        return [sys.executable, "-m", "cli", *map(str, args)]

    def run(self, *args: str | Path, timeout: float = RUN_TIMEOUT_S
            ) -> subprocess.CompletedProcess[str]:
        """Run to the end; the caller judges the exit code."""
        return subprocess.run(self.command(args), cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, *args: str | Path) -> float:
        """Run to the end, expect success; return the wall time in seconds."""
        started = time.monotonic()
        done = self.run(*args)
        seconds = time.monotonic() - started
        assert done.returncode == 0, (f"{' '.join(map(str, args[:2]))} exited "
                                      f"{done.returncode}: {done.stderr.strip()[-1500:]}")
        return seconds

    def start(self, *args: str | Path) -> Started:
        """Start the command in the background (a reference run, while a test kills others)."""
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(self.command(args), cwd=REPO, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        return Started(proc, err, " ".join(map(str, args[:2])))

    def kill_when(self, args: tuple[str | Path, ...], ready: KillPoint,
                  timeout: float = RUN_TIMEOUT_S) -> bool:
        """Start the command, SIGKILL its process group once ``ready``; True if the kill landed.

        A run that ends before its kill point must have succeeded (returns False).
        """
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.command(args), cwd=REPO, env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
            started = time.monotonic()
            try:
                while proc.poll() is None:
                    elapsed = time.monotonic() - started
                    if ready(elapsed) or elapsed > timeout:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        assert elapsed <= timeout, f"{args[:2]} still ran after {timeout} s"
                        break
                    time.sleep(POLL_S)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if proc.returncode == -signal.SIGKILL:
                self.counts.kills += 1
                return True
            err.seek(0)
            assert proc.returncode == 0, (f"{' '.join(map(str, args[:2]))} exited "
                                          f"{proc.returncode} before its kill point: "
                                          f"{err.read().decode(errors='replace')[-1500:]}")
            return False

    # kill points

    @staticmethod
    def after(seconds: float) -> KillPoint:
        """Kill ``seconds`` after the launch."""
        return lambda elapsed: elapsed >= seconds

    @staticmethod
    def new_files(root: Path, count: int, pattern: str = "*", *, hidden_only: bool = False
                  ) -> KillPoint:
        """Kill once ``count`` files matching ``pattern`` appeared or changed under ``root``
        (in work folders too) since now. ``hidden_only``: only files in work folders."""
        before = _file_ids(root, pattern, hidden_only)

        def ready(_: float) -> bool:
            return len(_file_ids(root, pattern, hidden_only) - before) >= count

        return ready

    @staticmethod
    def later(point: KillPoint, delay: float) -> KillPoint:
        """Kill ``delay`` seconds after ``point`` would have: a time inside the work (after a
        first work file, say), whatever the machine's speed of starting up."""
        seen: list[float] = []

        def ready(elapsed: float) -> bool:
            if not seen and point(elapsed):
                seen.append(elapsed)
            return bool(seen) and elapsed >= seen[0] + delay

        return ready

    @staticmethod
    def ledger_records(ledger: Path, count: int) -> KillPoint:
        """Kill once the ledger holds ``count`` records (read while the add writes)."""

        def ready(_: float) -> bool:
            try:
                with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True,
                                                        timeout=0.05)) as db:
                    return db.execute("SELECT count(*) FROM records").fetchone()[0] >= count
            except sqlite3.Error:
                return False

        return ready


class Checks:
    """Assertions on what a run left, each counted as one output checked."""

    fingerprint = staticmethod(fingerprint)
    copy_tree = staticmethod(copy_tree)

    def __init__(self, counts: FaultCounts) -> None:
        self.counts = counts

    def one_error_line(self, done: subprocess.CompletedProcess[str], output: Path | str) -> None:
        """Exit 1, one stderr line ``error: ...`` naming ``output``, no traceback."""
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        shown = " | ".join(lines)[-600:]
        assert "Traceback" not in done.stderr, f"traceback (exit {done.returncode}): {shown}"
        assert done.returncode == 1, f"exit {done.returncode}, expected 1: {shown}"
        assert len(lines) == 1 and lines[0].startswith("error:"), f"stderr is not one line: {shown}"
        assert str(output) in lines[0], f"the error does not name {output}: {lines[0]}"

    def unchanged(self, before: dict[str, dict[str, str]]) -> None:
        """Every path of ``before`` (a :meth:`snapshot`) is byte-identical, nothing added."""
        for path, prints in before.items():
            self.counts.outputs_checked += 1
            now = fingerprint(Path(path))
            assert now == prints, f"{path} changed: {_difference(prints, now)}"

    @staticmethod
    def snapshot(*paths: Path) -> dict[str, dict[str, str]]:
        return {str(p): fingerprint(p) for p in paths}

    def one_of(self, path: Path, allowed: dict[str, dict[str, str]], *,
               skip: frozenset[str] = frozenset()) -> str:
        """The visible files at ``path`` are exactly one of the ``allowed`` states (by name:
        e.g. previous, new, absent); return its name. Never partial, never a mix."""
        self.counts.outputs_checked += 1
        now = fingerprint(path, hidden=False, skip=skip)
        for name, prints in allowed.items():
            if now == prints:
                return name
        closest = min(allowed, key=lambda n: len(set(allowed[n].items()) ^ set(now.items())))
        raise AssertionError(f"{path} is none of {sorted(allowed)} (partial?): compared with "
                             f"{closest}: {_difference(allowed[closest], now)}")

    def no_leftovers(self, folder: Path, *, also: Path | None = None) -> None:
        """No work file of any run is left under ``folder`` (nor, with ``also``, tailguard's
        in the private system temp folder)."""
        self.counts.outputs_checked += 1
        left = hidden_entries(folder)
        if also is not None:
            left += [f"$TMPDIR/{p.name}" for p in also.iterdir() if "tailguard" in p.name]
        assert not left, f"work files left after a completed run: {left[:6]}"

    def visible_names(self, folder: Path, allowed: set[str]) -> None:
        """Only the command's own outputs are visible in ``folder`` (no stray data files)."""
        self.counts.outputs_checked += 1
        names = {p.name for p in folder.iterdir() if not p.name.startswith((".", "_"))}
        assert names <= allowed, f"unexpected files in {folder}: {sorted(names - allowed)}"


def _difference(expected: dict[str, str], got: dict[str, str]) -> str:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    changed = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    return f"missing {missing[:4]}, extra {extra[:4]}, changed {changed[:4]}"


@pytest.fixture(scope="session")
def counts() -> FaultCounts:
    return COUNTS


@pytest.fixture
def tailguard(tmp_path: Path, counts: FaultCounts) -> Tailguard:
    return Tailguard(counts, tmp_path / "systemp")


@pytest.fixture(scope="session")
def session_tailguard(tmp_path_factory: pytest.TempPathFactory, counts: FaultCounts
                      ) -> Tailguard:
    return Tailguard(counts, tmp_path_factory.mktemp("systemp"))


@pytest.fixture(scope="session")
def check(counts: FaultCounts) -> Checks:
    return Checks(counts)


# ---- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpora:
    """The session's inputs and a user's earlier outputs (read only; copy one before giving it
    as an output). Ids are unique across files."""

    docs_jsonl: Path  # 30,000 short human documents: a tag that runs for a second or two
    docs_parquet: Path  # the same rows as parquet
    gen_jsonl: Path  # 15,000 generated documents
    small_jsonl: Path  # 2,000 documents: quick runs
    ledger: Path  # a ledger of small_jsonl (generator "small", generation 0)
    old_tag: Path  # an earlier tag output (of small_jsonl)
    old_mixture: Path  # an earlier mixture (3,000 documents, seed 1)

    DOCS = 30_000
    GEN = 15_000
    SMALL = 2_000
    OLD_MIX = 3_000


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "tu", "ren", "sa", "vo", "del", "qui", "po", "ne", "ra", "zi"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(size)]


def _write_jsonl(path: Path, prefix: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    words = _vocabulary(rng, 400)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
            fh.write(json.dumps({"id": f"{prefix}{i}", "text": text}) + "\n")


@pytest.fixture(scope="session")
def corpora(tmp_path_factory: pytest.TempPathFactory, session_tailguard: Tailguard) -> Corpora:
    folder = tmp_path_factory.mktemp("corpora")
    made = Corpora(docs_jsonl=folder / "docs.jsonl", docs_parquet=folder / "docs.parquet",
                   gen_jsonl=folder / "gen.jsonl", small_jsonl=folder / "small.jsonl",
                   ledger=folder / "ledger.sqlite", old_tag=folder / "old" / "old.parquet",
                   old_mixture=folder / "old" / "mx")
    _write_jsonl(made.docs_jsonl, "h", Corpora.DOCS, seed=1)
    pl.read_ndjson(made.docs_jsonl).write_parquet(made.docs_parquet)
    _write_jsonl(made.gen_jsonl, "s", Corpora.GEN, seed=2)
    _write_jsonl(made.small_jsonl, "p", Corpora.SMALL, seed=3)
    made.old_tag.parent.mkdir()
    runs = [
        session_tailguard.start("ledger", "add", made.small_jsonl, "--ledger", made.ledger,
                                "--generator", "small", "--generation", "0", "-q"),
        session_tailguard.start("tag", made.small_jsonl, "-o", made.old_tag, "-q"),
        session_tailguard.start("mix", "--human", made.small_jsonl, "--synthetic", made.gen_jsonl,
                                "--target-docs", str(Corpora.OLD_MIX), "--synthetic-ratio", "0.5",
                                "--seed", "1", "-o", made.old_mixture, "-q"),
    ]
    for run in runs:
        run.finish()
    return made


@pytest.fixture(scope="session")
def old_tag_output(corpora: Corpora) -> bytes:
    """A user's earlier ``tag`` output (of the small corpus): what a failed rerun must keep."""
    return corpora.old_tag.read_bytes()


@pytest.fixture(scope="session")
def old_mixture(corpora: Corpora) -> Path:
    """A user's earlier mixture (3,000 documents): what a failed ``--overwrite`` must keep.
    Copy it before giving it as an output."""
    return corpora.old_mixture


@pytest.fixture
def seeded() -> Iterator[random.Random]:
    """The kill points' random source: seeded, so a failure names a point that can be rerun."""
    yield random.Random(20)
