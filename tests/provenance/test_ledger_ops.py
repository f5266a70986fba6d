"""Registering and looking up whole corpora against a real SQLite ledger, and the CLI on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from provenance.errors import ConfigError, InputError, LedgerError, OutputError
from provenance.ledger import Ledger
from provenance.ledger_ops import add_corpus, lookup_corpus

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [" ".join(f"tok{(7 * i + j) % 500}" for j in range(60)) for i in range(30)]


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    lines = [json.dumps({"id": f"g{i}", "text": t}) for i, t in enumerate(TEXTS)]
    lines.insert(4, "not json")
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_add_counts_rejects_and_is_idempotent(tmp_path: Path, generated: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    first = add_corpus(ledger, generated, generator="m", generation=4, batch_size=7)
    assert first.results == {"added": 30, "already_present": 0}
    assert first.counts.read == 31 and first.counts.rejected == 1
    rejects = Path(first.rejects_file).read_text().splitlines()
    assert json.loads(rejects[0])["line"] == 5
    again = add_corpus(ledger, generated, generator="m", generation=4)
    assert again.results == {"added": 0, "already_present": 30}
    assert Path(first.rejects_file).exists() and again.rejects_file != first.rejects_file
    with Ledger(ledger, create=False) as db:
        stats = db.stats()
        assert stats.records == 30 and stats.by_generation == {4: 30}
        match = db.lookup_exact([TEXTS[3]])[0]
    assert match.record.doc_id == "g3" and match.record.generator == "m"


def test_add_rejects_negative_generation(tmp_path: Path, generated: Path) -> None:
    with pytest.raises(ConfigError, match="generation must be >= 0, got -1"):
        add_corpus(tmp_path / "l.sqlite", generated, generation=-1)


def test_lookup_reports_exact_near_and_none(tmp_path: Path, generated: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    add_corpus(ledger, generated, generator="m")
    near = TEXTS[1].split()
    near[30] = "changed"
    queries = pl.DataFrame(
        {"id": ["e", "n", "x"], "text": [TEXTS[0], " ".join(near), "nothing like the ledger"]}
    )
    out = tmp_path / "matches.jsonl"
    report, matches = lookup_corpus(ledger, queries, threshold=0.7, output=out)
    assert matches.get_column("match").to_list() == ["exact", "near", "none"]
    assert matches.get_column("matched_doc_id").to_list() == ["g0", "g1", None]
    assert 0.7 <= matches.get_column("similarity")[1] < 1.0
    assert report.results["matches"] == {"exact": 1, "near": 1, "none": 1}
    assert pl.read_ndjson(out).height == 3

    _, exact_only = lookup_corpus(ledger, queries, threshold=None)
    assert exact_only.get_column("match").to_list() == ["exact", "none", "none"]


def test_lookup_needs_an_existing_ledger(tmp_path: Path, generated: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        lookup_corpus(tmp_path / "missing.sqlite", generated)
    assert not (tmp_path / "missing.sqlite").exists()


def test_missing_input_does_not_create_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        add_corpus(tmp_path / "l.sqlite", tmp_path / "typo.jsonl")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- rejects of each add


def test_each_add_keeps_its_own_rejects(tmp_path: Path) -> None:
    """A second add with bad rows must not replace the rejects of the first (nor a clean
    third add remove them); each summary names its own file."""
    ledger = tmp_path / "l.sqlite"
    reports = []
    for n, bad in enumerate(["not json", '{"id": "x"}', None]):
        corpus = tmp_path / f"gen{n}.jsonl"
        rows = [json.dumps({"id": f"{n}-{i}", "text": t}) for i, t in enumerate(TEXTS[:5])]
        corpus.write_text("\n".join(rows + ([bad] if bad else [])) + "\n")
        reports.append(add_corpus(ledger, corpus, generator="m"))
    first, second, clean = (r.rejects_file for r in reports)
    assert first and second and first != second and clean is None
    assert Path(first).name.startswith("l.sqlite.rejects-") and first.endswith(".jsonl")
    assert [json.loads(line)["reason"] for f in (first, second)
            for line in Path(f).read_text().splitlines()] == ["malformed_json", "missing_text"]
    assert sorted(p.name for p in tmp_path.glob("l.sqlite.rejects-*")) == sorted(
        Path(f).name for f in (first, second))


# --------------------------------------------------------------------------- the CLI


def tailguard(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_cli_add_names_each_adds_rejects_file(tmp_path: Path, generated: Path) -> None:
    done = tailguard("ledger", "add", generated.name, "--ledger", "l.sqlite", "--quiet",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (named,) = [line for line in done.stdout.splitlines() if line.startswith("rejects written")]
    assert named.startswith("rejects written to l.sqlite.rejects-")
    assert (tmp_path / named.split(" to ")[1]).exists()


@pytest.fixture
def readonly_ledger(tmp_path: Path, generated: Path, readonly_copy_of) -> Path:
    """A ledger of ``generated`` with a copy of the corpus, in a folder nobody can write to."""
    folder = tmp_path / "built"
    folder.mkdir()
    add_corpus(folder / "l.sqlite", generated, generator="m", generation=3)
    (folder / "query.jsonl").write_text(generated.read_text())
    for rejects in folder.glob("l.sqlite.rejects-*"):
        rejects.unlink()
    return readonly_copy_of(folder) / "l.sqlite"


def test_cli_reads_a_ledger_in_a_read_only_folder(readonly_ledger: Path, tmp_path: Path) -> None:
    folder = readonly_ledger.parent
    stats = tailguard("ledger", "stats", str(readonly_ledger), "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["records"] == 30

    lookup = tailguard("ledger", "lookup", str(folder / "query.jsonl"), "--ledger",
                       str(readonly_ledger), "-o", "matches.parquet", "--json", cwd=tmp_path)
    assert lookup.returncode == 0, lookup.stderr
    assert json.loads(lookup.stdout)["matches"] == {"exact": 30, "near": 0, "none": 0}

    tag = tailguard("tag", str(folder / "query.jsonl"), "-o", "tagged.parquet", "--ledger",
                    str(readonly_ledger), "--no-declared", "--json", cwd=tmp_path)
    assert tag.returncode == 0, tag.stderr
    labels = pl.read_parquet(tmp_path / "tagged.parquet").get_column("prov_label")
    assert labels.to_list() == ["synthetic"] * 30


def test_cli_add_to_a_ledger_in_a_read_only_folder_says_so(readonly_ledger: Path,
                                                          tmp_path: Path) -> None:
    done = tailguard("ledger", "add", str(readonly_ledger.parent / "query.jsonl"), "--ledger",
                     str(readonly_ledger), cwd=tmp_path)
    message = one_line_error(done)
    assert message.startswith(f"error: {readonly_ledger}: cannot write: read-only file system")
    assert "not a tailguard ledger" not in message


def test_cli_add_refuses_the_corpus_as_its_ledger(tmp_path: Path, generated: Path) -> None:
    before = generated.read_bytes()
    message = one_line_error(tailguard("ledger", "add", generated.name, "--ledger",
                                       generated.name, cwd=tmp_path))
    assert message == (f"error: {generated.name}: the output is the input {generated.name}; "
                       "choose an output outside every input\n")
    assert generated.read_bytes() == before


@pytest.mark.parametrize("where", ["read-only", "empty", "corpus", "ledger"])
def test_cli_lookup_refuses_an_output_it_cannot_or_must_not_write(
    tmp_path: Path, generated: Path, readonly_dir: Path, where: str
) -> None:
    add_corpus(tmp_path / "l.sqlite", generated)
    output = {"read-only": str(readonly_dir / "m.parquet"), "empty": "",
              "corpus": generated.name, "ledger": "l.sqlite"}[where]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    message = one_line_error(tailguard("ledger", "lookup", generated.name, "--ledger",
                                       "l.sqlite", "-o", output, cwd=tmp_path))
    assert message.startswith(f"error: {output}: " if output else "error: the output path is")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_lookup_refuses_writing_over_its_inputs(tmp_path: Path, generated: Path) -> None:
    add_corpus(tmp_path / "l.sqlite", generated)
    for output in (generated, tmp_path / "l.sqlite"):
        with pytest.raises(OutputError, match="the output is the input"):
            lookup_corpus(tmp_path / "l.sqlite", generated, output=output)
    with pytest.raises(OutputError, match="the output path is empty"):
        lookup_corpus(tmp_path / "l.sqlite", generated, output="")
