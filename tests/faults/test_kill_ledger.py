"""``ledger add`` killed with SIGKILL at several points: the ledger stays a sound database.

After each kill the ledger passes SQLite's ``PRAGMA integrity_check`` and still holds every
record of the earlier add; a rerun of the killed add then leaves exactly the records (and LSH
band entries) of an uninterrupted add (made alongside, in the background).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Checks, Corpora, KillPoint, Tailguard

ADDED = 4_000  # records the killed add registers (the first rows of the generated corpus)
LEDGER_FILES = {"ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm",
                "ledger.sqlite-journal"}


def query(ledger: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        return db.execute(sql).fetchall()


def records(ledger: Path) -> list[tuple]:
    """Every record's identity and signature (not its row id or time), sorted."""
    return sorted(query(ledger, "SELECT doc_id, hex(content_hash), hex(signature), generator, "
                                "generation FROM records"), key=repr)


def bands(ledger: Path) -> int:
    return query(ledger, "SELECT count(*) FROM bands")[0][0]


def integrity(ledger: Path) -> str:
    return "; ".join(row[0] for row in query(ledger, "PRAGMA integrity_check"))


def earlier_records(ledger: Path) -> int:
    return query(ledger, "SELECT count(*) FROM records WHERE generator = 'small'")[0][0]


def add_args(corpus: Path, ledger: Path) -> tuple[str | Path, ...]:
    return ("ledger", "add", corpus, "--ledger", ledger, "--generator", "gen",
            "--generation", "1", "--batch-size", "500", "-q")


def first_lines(source: Path, target: Path, count: int) -> Path:
    with open(source, encoding="utf-8") as fh:
        target.write_text("".join(line for _, line in zip(range(count), fh, strict=False)))
    return target


def kill_points(tailguard: Tailguard, ledger: Path, rng: random.Random, extra: int
                ) -> list[Callable[[], KillPoint]]:
    """Start-up, a seeded record count mid-add, a seeded time after the first new record;
    with ``extra`` more seeded times. Each is made just before its run starts."""
    before = earlier_records(ledger)
    return [
        lambda: tailguard.after(rng.uniform(0.05, 0.4)),
        lambda: tailguard.ledger_records(ledger, before + rng.randint(1000, ADDED - 1500)),
        *[lambda: tailguard.later(tailguard.ledger_records(ledger, before + 1),
                                  rng.uniform(0.0, 0.8))] * (1 + extra),
    ]


def kill_and_check(tailguard: Tailguard, check: Checks, corpora: Corpora, tmp_path: Path,
                   rng: random.Random, extra: int) -> None:
    corpus = first_lines(corpora.gen_jsonl, tmp_path / "gen4k.jsonl", ADDED)
    reference = tmp_path / "reference" / "ledger.sqlite"
    ledger = tmp_path / "led" / "ledger.sqlite"
    for copy in (reference, ledger):
        copy.parent.mkdir()
        copy.write_bytes(corpora.ledger.read_bytes())
    uninterrupted = tailguard.start(*add_args(corpus, reference))
    before = earlier_records(ledger)
    landed = 0
    for point in kill_points(tailguard, ledger, rng, extra):
        landed += tailguard.kill_when(add_args(corpus, ledger), point())
        check.counts.outputs_checked += 1
        assert integrity(ledger) == "ok", f"after a kill: {integrity(ledger)}"
        assert earlier_records(ledger) == before, "a killed add lost an earlier add's records"
        check.visible_names(ledger.parent, LEDGER_FILES)
    assert landed, "every add ended before its kill point: the corpus is too small here"
    tailguard.ok(*add_args(corpus, ledger))
    uninterrupted.finish()
    check.counts.outputs_checked += 1
    assert integrity(ledger) == "ok"
    got, expected = records(ledger), records(reference)
    assert len(got) == len(expected), (f"{len(got)} records after kills and a rerun; an "
                                       f"uninterrupted add leaves {len(expected)}")
    assert got == expected and bands(ledger) == bands(reference)


def test_killed_ledger_add_keeps_a_sound_ledger(
        tailguard: Tailguard, check: Checks, corpora: Corpora, tmp_path: Path,
        seeded: random.Random) -> None:
    kill_and_check(tailguard, check, corpora, tmp_path, seeded, extra=0)


@pytest.mark.slow
def test_killed_ledger_add_at_many_points(
        tailguard: Tailguard, check: Checks, corpora: Corpora, tmp_path: Path) -> None:
    kill_and_check(tailguard, check, corpora, tmp_path, random.Random(7), extra=10)
