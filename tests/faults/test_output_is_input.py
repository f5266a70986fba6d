"""An output that is an input, holds one, or lies inside an input folder is refused, untouched.

Writing it would replace, delete or later re-read what the run reads (``mix -o selfmix --human
selfmix --overwrite`` once deleted the mixture before reading it). Every command that reads and
writes must stop before any work with exit code 1 and one ``error:`` line naming the output,
and leave every input byte-identical (no file added to an input folder either).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import Checks, Corpora, Tailguard


@dataclass(frozen=True)
class Inputs:
    """A private copy of the inputs, in ``folder`` (the tests give parts of it as outputs)."""

    folder: Path
    corpus: Path  # folder/small.jsonl
    mixture: Path  # folder/mx: an earlier mixture
    digits: Path  # folder/digits.npz
    ledger: Path  # beside the folder, not in it
    generated: Path  # the session's generated corpus (read only)


Case = Callable[[Inputs], tuple[tuple[str | Path, ...], Path]]


def _mix(inputs: Inputs, human: Path, out: Path) -> tuple[str | Path, ...]:
    return ("mix", "--human", human, "--synthetic", inputs.generated, "--target-docs", "1000",
            "--synthetic-ratio", "0.3", "-o", out, "--overwrite", "-q")


def _vae(inputs: Inputs, out: Path) -> tuple[str | Path, ...]:
    return ("collapse", "run", "vae", "--data", inputs.digits, "--policy", "replace", "--seeds",
            "1", "--generations", "1", "--samples", "8", "--heldout", "10", "--no-plots",
            "--device", "cpu", "-o", out, "--overwrite", "-q")


CASES: dict[str, Case] = {
    "tag: output is the input": lambda i: (
        ("tag", i.corpus, "-o", i.corpus, "-q"), i.corpus),
    "tag: output in the input folder": lambda i: (
        ("tag", i.folder, "-o", i.folder / "out.parquet", "-q"), i.folder / "out.parquet"),
    "mix: output is the input mixture": lambda i: (_mix(i, i.mixture, i.mixture), i.mixture),
    "mix: output in the input folder": lambda i: (
        _mix(i, i.corpus.parent, i.folder / "mx2"), i.folder / "mx2"),
    "ledger lookup: output is the input": lambda i: (
        ("ledger", "lookup", i.corpus, "--ledger", i.ledger, "-o", i.corpus, "-q"), i.corpus),
    "ledger lookup: output in the input folder": lambda i: (
        ("ledger", "lookup", i.folder, "--ledger", i.ledger, "-o", i.folder / "m.parquet", "-q"),
        i.folder / "m.parquet"),
    "ledger add: ledger is the input": lambda i: (
        ("ledger", "add", i.corpus, "--ledger", i.corpus, "-q"), i.corpus),
    "collapse run: output is the data": lambda i: (_vae(i, i.digits), i.digits),
    "collapse run: output holds the data": lambda i: (_vae(i, i.folder), i.folder),
}


def write_digits(path: Path) -> None:
    """A tiny digits file (8x8 images, two classes) for the vae family."""
    rng = np.random.default_rng(0)
    arrays = {name: rng.random((n, 8, 8), dtype=np.float32)
              for name, n in (("x_train", 40), ("x_test", 20))}
    arrays |= {"y_train": np.arange(40) % 2, "y_test": np.arange(20) % 2}
    np.savez(path, **arrays)


@pytest.fixture
def inputs(tmp_path: Path, corpora: Corpora, old_mixture: Path, check: Checks) -> Inputs:
    folder = tmp_path / "in"
    folder.mkdir()
    made = Inputs(folder=folder, corpus=folder / "small.jsonl", mixture=folder / "mx",
                  digits=folder / "digits.npz", ledger=tmp_path / "ledger.sqlite",
                  generated=corpora.gen_jsonl)
    made.corpus.write_bytes(corpora.small_jsonl.read_bytes())
    check.copy_tree(old_mixture, made.mixture)
    write_digits(made.digits)
    made.ledger.write_bytes(corpora.ledger.read_bytes())
    return made


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_that_is_or_is_inside_an_input_is_refused(
        tailguard: Tailguard, check: Checks, inputs: Inputs, case: str) -> None:
    args, output = CASES[case](inputs)
    before = check.snapshot(inputs.folder, inputs.ledger, inputs.generated)
    check.one_error_line(tailguard.run(*args), output)
    check.unchanged(before)
