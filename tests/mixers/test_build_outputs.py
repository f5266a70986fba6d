"""Where a mixture is written: never over an input, never half, never with an earlier run's files.

Real parquet and jsonl files, real read-only and full file systems (root fixtures), and the
real CLI in subprocesses where what is tested is what a user sees (exit code, one line) or a
``kill -9``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from mixers.build import build_mixture
from mixers.manifest import verify_shards
from mixers.spec import MixtureSpec, Source
from provenance.errors import OutputError
from provenance.outputs import WORK_PREFIX

ROOT = Path(__file__).resolve().parents[2]


def tailguard(*args: str | Path, cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=_env(env), timeout=120)


def mix_cli(data: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """``tailguard mix`` of the human corpus and generation 1, with ``args``."""
    return tailguard("mix", "--human", data / "human.parquet", "--synthetic", data / "gen1",
                     *args, cwd=cwd)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", **(extra or {})}


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) and its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(WORK_PREFIX))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """human.parquet (with a bad row), gen1/ and gen2/ (synthetic parquet), web.jsonl."""
    root = tmp_path_factory.mktemp("data")
    texts = [f"human {i} says something" for i in range(3000)]
    texts[7] = "  "
    pl.DataFrame({"id": [f"h{i}" for i in range(3000)], "text": texts}).write_parquet(
        root / "human.parquet")
    for gen in (1, 2):
        (root / f"gen{gen}").mkdir()
        pl.DataFrame({"id": [f"g{gen}-{i}" for i in range(1500)],
                      "text": [f"generation {gen} text {i}" for i in range(1500)]}
                     ).write_parquet(root / f"gen{gen}" / "part.parquet")
    lines = [json.dumps({"id": f"j{i}", "text": f"web page {i}"}) for i in range(400)]
    (root / "web.jsonl").write_text("\n".join(lines) + "\n")
    return root


def spec(data: Path, **overrides) -> MixtureSpec:
    base = {"sources": (Source(str(data / "human.parquet"), "human"),
                        Source(str(data / "gen1"), "synthetic")),
            "target_docs": 1000, "synthetic_ratio": 0.3, "seed": 5}
    return MixtureSpec(**{**base, **overrides})


# -- output and input ------------------------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused_and_both_stay_intact(data: Path,
                                                                    tmp_path: Path) -> None:
    """Issue 20, defect 1: the old mixture was deleted before it was read."""
    first = mix_cli(data, "--target-docs", "500", "--synthetic-ratio", "0.3", "-o", "selfmix",
                    "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    mixture, inputs = digests(tmp_path / "selfmix"), digests(data)
    again = tailguard("mix", "--human", "selfmix", "--synthetic", data / "gen2",
                      "--target-docs", "200", "--synthetic-ratio", "0.5", "-o", "selfmix",
                      "--overwrite", "-q", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == ("error: selfmix: the output is the input selfmix; choose an output "
                            "outside every input\n")
    assert again.stdout == ""
    assert digests(tmp_path / "selfmix") == mixture and digests(data) == inputs
    assert leftovers(tmp_path) == []


def test_an_output_inside_an_input_folder_is_refused_before_anything_is_written(
        data: Path) -> None:
    before = digests(data)
    with pytest.raises(OutputError, match=r"gen1/mix: the output lies inside the input .*gen1;"):
        build_mixture(spec(data), data / "gen1" / "mix")
    with pytest.raises(OutputError, match="the output holds the input"):
        build_mixture(spec(data), data)
    assert digests(data) == before and leftovers(data) == []


def test_the_spec_file_is_an_input_too(data: Path, tmp_path: Path) -> None:
    (tmp_path / "mix").mkdir()
    config = tmp_path / "mix" / "spec.toml"
    config.write_text(f"target_docs = 10\n[[sources]]\npath = '{data / 'human.parquet'}'\n"
                      "role = 'human'\n")
    done = tailguard("mix", "--config", config, "-o", tmp_path / "mix", "--overwrite", "-q",
                     cwd=tmp_path)
    assert done.returncode == 1 and "the output holds the input" in done.stderr
    assert config.exists()


# -- what an existing folder may hold ----------------------------------------------------------


def test_a_folder_that_is_not_a_mixture_is_never_replaced(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="is not empty and holds no tailguard mixture"):
        build_mixture(spec(data), out, overwrite=True)
    build_mixture(spec(data), tmp_path / "mix")
    (tmp_path / "mix" / "notes.txt").write_text("mine too")
    with pytest.raises(OutputError, match="holds notes.txt, which a mixture does not write"):
        build_mixture(spec(data, target_docs=10), tmp_path / "mix", overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "mix" / "notes.txt").read_text() == "mine too"
    assert verify_shards(tmp_path / "mix") == []
    (tmp_path / "empty").mkdir()
    assert build_mixture(spec(data, target_docs=10), tmp_path / "empty").achieved[
        "documents"] == 10


def test_overwrite_leaves_none_of_the_earlier_runs_side_files(data: Path, tmp_path: Path) -> None:
    """Issue 20, defect 7: rejects.jsonl and dedup_dropped.parquet of the run before stayed."""
    out = tmp_path / "mix"
    dedup = spec(data, sources=(*spec(data).sources, Source(str(data / "human.parquet"),
                                                            "synthetic", name="copy")),
                 dedup="exact")
    first = build_mixture(dedup, out)
    assert first.rejects["count"] == 2 and first.dedup["dropped"] > 0
    assert {"rejects.jsonl", "dedup_dropped.parquet"} <= {p.name for p in out.iterdir()}
    clean = spec(data, sources=(Source(str(data / "gen1"), "human"),), synthetic_ratio=0.0)
    second = build_mixture(clean, out, overwrite=True)
    assert second.rejects["count"] == 0 and second.dedup["dropped"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_card.md", "manifest.json", "part-00000.parquet", "run.json"]
    assert leftovers(tmp_path) == []


# -- write failures --------------------------------------------------------------------------------


def test_a_read_only_output_is_refused_before_the_plan(data: Path, tmp_path: Path,
                                                       readonly_dir: Path) -> None:
    """Issue 20, defect 3: the whole mixture was planned, then a PermissionError traceback.
    The target here cannot be planned at all: the output's error must come first."""
    done = tailguard("mix", "--human", data / "human.parquet", "--target-docs", "999999",
                     "-o", readonly_dir / "mx", "-q", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: {readonly_dir / 'mx'}: cannot write: ")
    assert len(done.stderr.splitlines()) == 1
    assert "read-only file system" in done.stderr or "permission denied" in done.stderr


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(
        tmp_path: Path, tiny_disk: Path) -> None:
    noise = [os.urandom(150).hex() for _ in range(3000)]  # ~900 KB that zstd cannot shrink
    pl.DataFrame({"id": [f"n{i}" for i in range(3000)], "text": noise}).write_parquet(
        tmp_path / "noise.parquet")
    for source in ("noise.parquet", "noise.jsonl"):  # shards, then a staged jsonl copy
        if source.endswith(".jsonl"):
            pl.read_parquet(tmp_path / "noise.parquet").write_ndjson(tmp_path / source)
        done = tailguard("mix", "--human", tmp_path / source, "--target-docs", "3000",
                         "-o", tiny_disk / "mx", "-q", cwd=tmp_path)
        assert done.returncode == 1, done.stdout
        assert done.stderr.splitlines() == [
            f"error: {tiny_disk / 'mx'}: cannot write: no space left on device"]
        assert list(tiny_disk.iterdir()) == []


# -- kill -9 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200k short human documents, 100k synthetic ones, a small jsonl source (staged) and a
    spec of many small shards: a build long enough to be killed while it writes."""
    root = tmp_path_factory.mktemp("big")
    n = 200_000
    for name, rows in (("human", n), ("generated", n // 2)):
        index = pl.int_range(rows).cast(pl.String)
        pl.select(id=name[0] + index, text=pl.format(f"{name} doc {{}}", index)).write_parquet(
            root / f"{name}.parquet")
    (root / "web.jsonl").write_text("".join(
        json.dumps({"id": f"w{i}", "text": f"web {i}"}) + "\n" for i in range(2000)))
    (root / "spec.toml").write_text("shard_rows = 1000\nsynthetic_ratio = 0.3\n")
    return root


def _mix_args(big: Path, out: Path, docs: int) -> list[str | Path]:
    return ["mix", "--config", big / "spec.toml", "--human", big / "human.parquet",
            "--human", big / "web.jsonl", "--synthetic", big / "generated.parquet",
            "--target-docs", str(docs), "-o", out, "-q"]


def _kill_while_writing(args: list[str | Path], cwd: Path, env: dict[str, str]) -> None:
    """Run the CLI and kill -9 it once it has written its first shard and is writing more
    (the mixture killed over has one shard: ``part-00001.parquet`` is the new build's)."""
    process = subprocess.Popen([sys.executable, "-m", "cli", *map(str, args)], cwd=cwd,
                               env=_env(env), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not list(cwd.rglob("part-00001.parquet")):
            assert process.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_kill_9_while_overwriting_keeps_the_old_mixture_and_a_rerun_gives_the_same_bytes(
        big: Path, tmp_path: Path) -> None:
    """Issue 20, defects 2 and 6: a kill left a truncated shard in the mixture, and each kill
    a staging folder (with the jsonl source's staged copy) in the system's temp dir."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    old = tailguard(*_mix_args(big, tmp_path / "mix", 1000), cwd=tmp_path, env=env)
    assert old.returncode == 0, old.stderr
    before = digests(tmp_path / "mix")

    _kill_while_writing([*_mix_args(big, tmp_path / "mix", 250_000), "--overwrite"],
                        tmp_path, env)
    assert digests(tmp_path / "mix") == before
    killed = leftovers(tmp_path)
    assert [name.split(".")[2] for name in killed] == ["build", "mix"]
    assert list(temp.iterdir()) == []

    again = tailguard(*_mix_args(big, tmp_path / "mix", 250_000), "--overwrite", cwd=tmp_path,
                      env=env)
    assert again.returncode == 0, again.stderr
    assert leftovers(tmp_path) == [] and list(temp.iterdir()) == []
    uninterrupted = tailguard(*_mix_args(big, tmp_path / "ref", 250_000), cwd=tmp_path, env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    rerun, reference = digests(tmp_path / "mix"), digests(tmp_path / "ref")
    assert len(rerun) == 250 + 3  # shards, manifest, card, run.json
    assert rerun.pop("run.json") != reference.pop("run.json")
    assert rerun == reference


# -- the manifest is a function of the spec and the inputs ---------------------------------------


def test_the_manifest_is_the_same_bytes_wherever_and_whenever_it_is_built(
        data: Path, tmp_path: Path) -> None:
    """Issue 20, defect 12: seconds and out_dir made two identical runs' manifests differ."""
    with_jsonl = spec(data, sources=(*spec(data).sources, Source(str(data / "web.jsonl"),
                                                                 "human")))
    a = build_mixture(with_jsonl, tmp_path / "a")
    time.sleep(1.1)  # a second apart: the start times differ
    b = build_mixture(with_jsonl, tmp_path / "elsewhere" / "b")
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (
        tmp_path / "elsewhere" / "b" / "manifest.json").read_bytes()
    assert (tmp_path / "a" / "dataset_card.md").read_bytes() == (
        tmp_path / "elsewhere" / "b" / "dataset_card.md").read_bytes()
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())
    run_b = json.loads((tmp_path / "elsewhere" / "b" / "run.json").read_text())
    assert run_a["out_dir"] == str(tmp_path / "a") and run_a["started"] != run_b["started"]
    assert run_a["seconds"] > 0 and run_a["engine"] == "local" and not run_a["dry_run"]
    assert a.seconds == run_a["seconds"] and b.out_dir == str(tmp_path / "elsewhere" / "b")
    assert "seconds" not in a.as_dict() and "out_dir" not in a.as_dict()


def test_a_dry_run_leaves_nothing_in_the_temp_dir(data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    jsonl = spec(data, sources=(Source(str(data / "web.jsonl"), "human"),), target_docs=10,
                 synthetic_ratio=0.0)
    manifest = build_mixture(jsonl, tmp_path / "dry", dry_run=True)
    assert manifest.dry_run and manifest.run.out_dir is None
    assert list(tmp_path.iterdir()) == []


# -- the CLI -------------------------------------------------------------------------------------


def test_both_targets_or_neither_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    sources = ["--human", data / "human.parquet", "--dry-run"]
    both = tailguard("mix", *sources, "--target-docs", "5", "--target-tokens", "50",
                     cwd=tmp_path)
    assert both.returncode == 2
    assert "give --target-docs or --target-tokens, not both" in both.stderr
    neither = tailguard("mix", *sources, cwd=tmp_path)
    assert neither.returncode == 2 and "--target-docs or --target-tokens" in neither.stderr


def test_a_token_target_shows_tokens_achieved_beside_documents(data: Path,
                                                               tmp_path: Path) -> None:
    done = mix_cli(data, "--target-tokens", "4000", "--synthetic-ratio", "0.25", "-o", "mix",
                   "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    tokens, docs = (manifest["achieved"]["tokens_by_pool"],
                    manifest["achieved"]["documents_by_pool"])
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["pool", "available", "requested", "achieved", "documents"]
    synthetic = next(line for line in lines if line.strip().startswith("synthetic "))
    assert synthetic.split()[2:] == [f"{1000:,}", f"{tokens['synthetic']:,}",
                                     f"{docs['synthetic']:,}"]
    assert tokens["synthetic"] <= 1000 < tokens["synthetic"] + 4  # within one document
    assert sum(tokens.values()) == manifest["achieved"]["tokens"]
    share = next(line for line in lines if line.startswith("synthetic share:"))
    token_share = tokens["synthetic"] / sum(tokens.values())
    assert f"achieved {token_share:.4g} of tokens" in share  # the unit the ratio was asked in
    assert "run.json" in lines[-1]
