"""``mix`` killed with SIGKILL at several points: the old mixture or the new one, never a part.

A mixture folder is compared file by file (shards, ``manifest.json``, ``dataset_card.md``; not
``run.json``, which holds the run's time and host). After each kill of an ``--overwrite`` the
folder is the previous mixture or the complete new one, never a truncated shard or a mix of
both; reading the folder that holds it gives exactly the mixture's rows (no staged shard or
copy is read as data); a rerun writes the bytes of an uninterrupted run (made alongside, in the
background) and leaves no work files, in the output's folder or in the system temp folder.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Checks, Corpora, KillPoint, Started, Tailguard

RUN_FACTS = frozenset({"run.json"})
TARGET, SHARD_ROWS = 20_000, 2_000


@dataclass(frozen=True)
class MixReference:
    """An uninterrupted mixture (running in the background until :meth:`files` is asked)."""

    run: Started
    out: Path
    spec: Path

    def files(self, check: Checks) -> dict[str, str]:
        self.run.finish()
        return check.fingerprint(self.out, hidden=False, skip=RUN_FACTS)


def mix_args(corpora: Corpora, spec: Path, out: Path, *, overwrite: bool = True
             ) -> tuple[str | Path, ...]:
    """A mixture of the parquet human corpus and the jsonl generated one (a staged source)."""
    return ("mix", "--config", spec, "--human", corpora.docs_parquet, "--synthetic",
            corpora.gen_jsonl, "--target-docs", str(TARGET), "--synthetic-ratio", "0.3",
            "-o", out, "-q", *(("--overwrite",) if overwrite else ()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, session_tailguard: Tailguard,
              corpora: Corpora) -> MixReference:
    folder = tmp_path_factory.mktemp("mix-reference")
    spec = folder / "spec.toml"
    spec.write_text(f"shard_rows = {SHARD_ROWS}\n")
    out = folder / "new"
    return MixReference(session_tailguard.start(*mix_args(corpora, spec, out, overwrite=False)),
                        out, spec)


def kill_points(tailguard: Tailguard, folder: Path, rng: random.Random, extra: int
                ) -> list[Callable[[], KillPoint]]:
    """Start-up, first new shard, a seeded number of new shards, a seeded time after the first
    shard; with ``extra`` more seeded times. Each is made just before its run starts."""
    shards = TARGET // SHARD_ROWS
    return [
        lambda: tailguard.after(rng.uniform(0.05, 0.4)),
        lambda: tailguard.new_files(folder, 1, "part-*.parquet"),
        lambda: tailguard.new_files(folder, rng.randint(2, shards - 1), "part-*.parquet"),
        *[lambda: tailguard.later(tailguard.new_files(folder, 1, "part-*.parquet"),
                                  rng.uniform(0.0, 0.4))] * (1 + extra),
    ]


def rows_read_from(tailguard: Tailguard, corpora: Corpora, folder: Path, tmp_path: Path) -> int:
    """How many rows ``mix`` reads from ``folder`` as a human source (fails on repeated ids)."""
    out = tmp_path / "remix"
    tailguard.ok("mix", "--human", folder, "--synthetic", corpora.small_jsonl, "--target-docs",
                 "100", "--synthetic-ratio", "0.5", "-o", out, "-q")
    manifest = json.loads((out / "manifest.json").read_text())
    return sum(source["read"] for source in manifest["sources"].values()
               if source["role"] == "human")


def kill_and_check(tailguard: Tailguard, check: Checks, corpora: Corpora,
                   reference: MixReference, old_mixture: Path, tmp_path: Path,
                   rng: random.Random, extra: int) -> None:
    out = tmp_path / "m" / "mx"
    check.copy_tree(old_mixture, out)
    allowed = {"previous": check.fingerprint(out, hidden=False, skip=RUN_FACTS)}
    rows = {"previous": corpora.OLD_MIX, "new": TARGET}
    landed, state = 0, "previous"
    for point in kill_points(tailguard, out.parent, rng, extra):
        landed += tailguard.kill_when(mix_args(corpora, reference.spec, out), point())
        allowed["new"] = reference.files(check)
        state = check.one_of(out, allowed, skip=RUN_FACTS)
        check.visible_names(out.parent, {"mx"})
    assert landed, "every run ended before its kill point: the mixture is too small here"
    check.counts.outputs_checked += 1
    read = rows_read_from(tailguard, corpora, out.parent, tmp_path)
    assert read == rows[state], (f"reading the folder that holds the {state} mixture gave "
                                 f"{read} rows, not {rows[state]}")
    tailguard.ok(*mix_args(corpora, reference.spec, out))
    assert check.one_of(out, {"new": allowed["new"]}, skip=RUN_FACTS) == "new"
    check.no_leftovers(out.parent, also=tailguard.systemp)


def test_killed_mix_overwrite_leaves_the_old_mixture_or_the_new(
        tailguard: Tailguard, check: Checks, corpora: Corpora, reference: MixReference,
        old_mixture: Path, tmp_path: Path, seeded: random.Random) -> None:
    kill_and_check(tailguard, check, corpora, reference, old_mixture, tmp_path, seeded, extra=0)


def test_killed_first_mix_leaves_no_mixture_or_the_whole_one(
        tailguard: Tailguard, check: Checks, corpora: Corpora, reference: MixReference,
        tmp_path: Path, seeded: random.Random) -> None:
    """Without a previous mixture a kill leaves nothing visible, and a plain rerun (no
    ``--overwrite``) is not refused because of what the dead run left."""
    out = tmp_path / "m" / "mx"
    out.parent.mkdir()
    point = tailguard.new_files(out.parent, seeded.randint(1, TARGET // SHARD_ROWS - 1),
                                "part-*.parquet")
    assert tailguard.kill_when(mix_args(corpora, reference.spec, out, overwrite=False), point), (
        "the run ended before its kill point")
    new = reference.files(check)
    check.one_of(out, {"absent": {}, "new": new}, skip=RUN_FACTS)
    tailguard.ok(*mix_args(corpora, reference.spec, out, overwrite=False))
    assert check.one_of(out, {"new": new}, skip=RUN_FACTS) == "new"
    check.no_leftovers(out.parent, also=tailguard.systemp)


@pytest.mark.slow
def test_killed_mix_at_many_points(
        tailguard: Tailguard, check: Checks, corpora: Corpora, reference: MixReference,
        old_mixture: Path, tmp_path: Path) -> None:
    kill_and_check(tailguard, check, corpora, reference, old_mixture, tmp_path,
                   random.Random(7), extra=12)
