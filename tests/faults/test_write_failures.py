"""Outputs that cannot be written: a read-only folder, a full disk, an empty name.

Each command must stop with exit code 1 and exactly one stderr line, ``error: ...``, that names
the output (not an input, not a work file alone), without a traceback; its inputs stay
byte-identical, an earlier output at the same path stays as it was, and no work file is left.
The read-only folder and the small disk are real file systems (the root ``readonly_dir`` and
``tiny_disk`` fixtures), so the errors are the ones the kernel gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Checks, Corpora, Tailguard


def gaussian_args(out: Path) -> tuple[str | Path, ...]:
    return ("collapse", "run", "gaussian", "--policy", "replace", "--seeds", "1",
            "--generations", "1", "--no-plots", "-o", out, "-q")


def small_mix_args(corpora: Corpora, out: Path) -> tuple[str | Path, ...]:
    return ("mix", "--human", corpora.small_jsonl, "--synthetic", corpora.gen_jsonl,
            "--target-docs", "1000", "--synthetic-ratio", "0.3", "-o", out, "-q")


def expect_refused(tailguard: Tailguard, check: Checks, args: tuple[str | Path, ...],
                   output: Path | str, inputs: list[Path]) -> None:
    """The run fails in one line naming ``output`` and leaves ``inputs`` as they were."""
    before = check.snapshot(*inputs)
    check.one_error_line(tailguard.run(*args), output)
    check.unchanged(before)


# ---- a read-only folder ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".jsonl.gz"])
def test_tag_into_a_read_only_folder(tailguard: Tailguard, check: Checks, corpora: Corpora,
                                     readonly_dir: Path, suffix: str) -> None:
    out = readonly_dir / f"out{suffix}"
    expect_refused(tailguard, check, ("tag", corpora.small_jsonl, "-o", out, "-q"), out,
                   [corpora.small_jsonl])


def test_mix_into_a_read_only_folder(tailguard: Tailguard, check: Checks, corpora: Corpora,
                                     readonly_dir: Path) -> None:
    out = readonly_dir / "mx"
    expect_refused(tailguard, check, small_mix_args(corpora, out), out,
                   [corpora.small_jsonl, corpora.gen_jsonl])


def test_ledger_lookup_into_a_read_only_folder(tailguard: Tailguard, check: Checks,
                                               corpora: Corpora, readonly_dir: Path,
                                               tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    ledger.write_bytes(corpora.ledger.read_bytes())
    out = readonly_dir / "matches.parquet"
    expect_refused(tailguard, check, ("ledger", "lookup", corpora.small_jsonl, "--ledger",
                                      ledger, "-o", out, "-q"), out, [corpora.small_jsonl, ledger])


def test_collapse_run_into_a_read_only_folder(tailguard: Tailguard, check: Checks,
                                              readonly_dir: Path) -> None:
    out = readonly_dir / "run"
    expect_refused(tailguard, check, gaussian_args(out), out, [])


def test_demo_into_a_read_only_folder(tailguard: Tailguard, check: Checks,
                                      readonly_dir: Path) -> None:
    out = readonly_dir / "demo"
    expect_refused(tailguard, check, ("demo", "--docs-per-kind", "5", "-o", out, "-q"), out, [])


def test_tag_to_an_empty_output_name(tailguard: Tailguard, check: Checks,
                                     corpora: Corpora) -> None:
    expect_refused(tailguard, check, ("tag", corpora.small_jsonl, "-o", "", "-q"), "",
                   [corpora.small_jsonl])


# ---- a full disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_tag_onto_a_full_disk_keeps_the_earlier_output(
        tailguard: Tailguard, check: Checks, corpora: Corpora, old_tag_output: bytes,
        tiny_disk: Path, suffix: str) -> None:
    """The big corpus' output does not fit in 256 KiB; the small earlier one does."""
    out = tiny_disk / f"out{suffix}"
    out.write_bytes(old_tag_output if suffix == ".parquet"
                    else b'{"id": "x", "text": "an earlier output"}\n')
    expect_refused(tailguard, check, ("tag", corpora.docs_jsonl, "-o", out, "-q"), out,
                   [corpora.docs_jsonl, out])
    check.no_leftovers(tiny_disk)


def test_mix_onto_a_full_disk_keeps_the_earlier_mixture(
        tailguard: Tailguard, check: Checks, corpora: Corpora, old_mixture: Path,
        tiny_disk: Path) -> None:
    out = tiny_disk / "mx"
    check.copy_tree(old_mixture, out)
    args = ("mix", "--human", corpora.docs_parquet, "--synthetic", corpora.gen_jsonl,
            "--target-docs", "20000", "--synthetic-ratio", "0.3", "-o", out, "--overwrite", "-q")
    expect_refused(tailguard, check, args, out,
                   [corpora.docs_parquet, corpora.gen_jsonl, out])
    check.no_leftovers(tiny_disk, also=tailguard.systemp)
