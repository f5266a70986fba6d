"""``tag`` killed with SIGKILL at several points: the old output or the new one, never a part.

Each kill is followed by the checks a user relies on: the output file is the previous one
(byte-identical) or the complete new one; nothing that a later run reads as data is left in the
output's folder (a folder read of it returns exactly the output's rows, with unique ids); a rerun
writes the bytes of an uninterrupted run (made alongside, in the background) and removes the dead
runs' work files.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

if TYPE_CHECKING:
    from conftest import Checks, Corpora, KillPoint, Tailguard


def tag_args(corpora: Corpora, out: Path) -> tuple[str | Path, ...]:
    return ("tag", corpora.docs_jsonl, "-o", out, "--batch-size", "2000", "-q")


def kill_points(tailguard: Tailguard, folder: Path, rng: random.Random, extra: int
                ) -> list[Callable[[], KillPoint]]:
    """Start-up, first work file, a seeded number of parts, a seeded time after the first work
    file; with ``extra`` more seeded times. Each is made just before its run starts."""
    return [
        lambda: tailguard.after(rng.uniform(0.05, 0.4)),
        lambda: tailguard.new_files(folder, 1, hidden_only=True),
        lambda: tailguard.new_files(folder, rng.randint(3, 12), hidden_only=True),
        *[lambda: tailguard.later(tailguard.new_files(folder, 1, hidden_only=True),
                                  rng.uniform(0.05, 0.8))] * (1 + extra),
    ]


def expect_folder_reads_only_the_output(tailguard: Tailguard, check: Checks, out: Path,
                                        tmp_path: Path) -> None:
    """Reading the output's folder as a corpus gives the output's rows, each id once."""
    again = tmp_path / "again.parquet"
    tailguard.ok("tag", out.parent, "-o", again, "-q")
    check.counts.outputs_checked += 1
    ids = pl.read_parquet(again, columns=["id"]).get_column("id")
    held = pl.read_parquet(out, columns=["id"]).height
    assert ids.len() == held, (f"a folder read of {out.parent.name}/ gave {ids.len()} rows; the "
                               f"output holds {held}")
    assert ids.n_unique() == ids.len(), "a folder read of the output's folder repeats ids"


def kill_and_check(tailguard: Tailguard, check: Checks, corpora: Corpora, old_tag_output: bytes,
                   tmp_path: Path, rng: random.Random, extra: int) -> None:
    reference = tmp_path / "reference" / "out.parquet"
    uninterrupted = tailguard.start(*tag_args(corpora, reference))
    out = tmp_path / "tk" / "out.parquet"
    out.parent.mkdir()
    out.write_bytes(old_tag_output)
    allowed = {"previous": check.fingerprint(out)}
    landed = 0
    for point in kill_points(tailguard, out.parent, rng, extra):
        landed += tailguard.kill_when(tag_args(corpora, out), point())
        uninterrupted.finish()
        allowed["new"] = check.fingerprint(reference)
        check.one_of(out, allowed)
        check.visible_names(out.parent, {"out.parquet", "out.parquet.rejects.jsonl"})
    assert landed, "every run ended before its kill point: the corpus is too small here"
    expect_folder_reads_only_the_output(tailguard, check, out, tmp_path)
    tailguard.ok(*tag_args(corpora, out))
    assert check.one_of(out, {"new": allowed["new"]}) == "new"
    check.no_leftovers(out.parent, also=tailguard.systemp)


def test_killed_tag_leaves_the_old_output_or_the_new(
        tailguard: Tailguard, check: Checks, corpora: Corpora, old_tag_output: bytes,
        tmp_path: Path, seeded: random.Random) -> None:
    kill_and_check(tailguard, check, corpora, old_tag_output, tmp_path, seeded, extra=0)


@pytest.mark.slow
def test_killed_tag_at_many_points(
        tailguard: Tailguard, check: Checks, corpora: Corpora, old_tag_output: bytes,
        tmp_path: Path) -> None:
    kill_and_check(tailguard, check, corpora, old_tag_output, tmp_path, random.Random(7),
                   extra=12)
