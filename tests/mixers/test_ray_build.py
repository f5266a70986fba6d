"""Mixing on a real local Ray: the same shards (byte for byte), counts and plan as the local
build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("ray", reason='needs Ray: pip install "tailguard[ray]"')

from mixers.build import build_mixture  # noqa: E402
from mixers.spec import MixtureSpec, Source  # noqa: E402
from provenance.engines import RayEngine  # noqa: E402
from provenance.errors import InputError  # noqa: E402
from tests.mixers.mixture_inputs import awkward_spec, words  # noqa: E402


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Source, ...]:
    """Every kind of source: parquet in several files and row groups, generations in a column
    and declared, a tagged web crawl (float32 scores, bad rows), jsonl with a broken line,
    and texts that repeat across sources (for dedup)."""
    root = tmp_path_factory.mktemp("sources")
    shared = [words(1000 + i, 30) for i in range(40)]
    pl.DataFrame({
        "id": [f"h{i}" for i in range(500)],
        "text": [f"human {i} " + words(i) for i in range(460)] + shared,
    }).write_parquet(root / "human.parquet", row_group_size=128)
    for gen in range(3):
        (root / f"gen{gen}").mkdir()
        for part in range(2):
            pl.DataFrame({
                "id": [f"g{gen}-{part}-{i}" for i in range(150)],
                "text": [f"gen {gen} {part} {i} " + words(i, 8, "s") for i in range(150)],
                "prov_generation": [gen] * 150,
            }).write_parquet(root / f"gen{gen}" / f"part{part}.parquet")
    labels = ["human", "synthetic", "unknown", "human"] * 100
    texts = [f"scraped {i} " + words(i, 10, "c") for i in range(380)]
    texts += [t.upper() for t in shared[:10]] + [t + " more" for t in shared[10:20]]
    texts[5], texts[9] = None, "  "
    pl.DataFrame({
        "id": [f"t{i}" for i in range(400)], "text": texts, "prov_label": labels,
        "prov_score": pl.Series([{"human": 0.05, "synthetic": 0.97, "unknown": None}[lb]
                                 for lb in labels], dtype=pl.Float32),
    }).write_parquet(root / "tagged.parquet", row_group_size=100)
    lines = [json.dumps({"id": f"j{i}", "text": f"jsonl doc {i} " + words(i)}) for i in range(60)]
    lines[3] = '{"id": "broken'
    (root / "web.jsonl").write_text("\n".join(lines) + "\n")
    return (Source(str(root / "human.parquet"), "human"),
            Source(str(root / "gen0"), "synthetic"),
            Source(str(root / "gen1"), "synthetic"),
            Source(str(root / "gen2"), "synthetic", generation=5),
            Source(str(root / "tagged.parquet"), "from-tags"),
            Source(str(root / "web.jsonl"), "human"))


def sorted_sha256(out: Path) -> tuple[pl.DataFrame, str]:
    """The shards as one frame, and the sha256 of its rows sorted (as JSON lines)."""
    frame = pl.read_parquet(sorted(out.glob("part-*.parquet")))
    ordered = frame.sort(["mix_source", "id", "mix_copy"])
    return frame, hashlib.sha256(ordered.write_ndjson().encode()).hexdigest()


CASES = {
    "accumulate": {"target_docs": 600, "synthetic_ratio": 0.3, "retain_original": 0.1},
    "retain": {"target_docs": 300, "synthetic_ratio": 0.3, "retain_original": 0.2,
               "strategy": "retain"},
    "filter": {"target_docs": 300, "synthetic_ratio": 0.2, "strategy": "filter",
               "max_score": 0.5},
    "reweight": {"target_docs": 300, "synthetic_ratio": 0.2, "strategy": "reweight",
                 "reweight_power": 1.5},
    "tokens": {"target_tokens": 3000, "synthetic_ratio": 0.3},
    "upsample": {"target_docs": 3000, "synthetic_ratio": 0.5, "allow_upsample": True},
    "dedup-near": {"target_docs": 300, "synthetic_ratio": 0.2, "dedup": "near",
                   "dedup_threshold": 0.6},
}


@pytest.mark.parametrize("case", CASES)
def test_ray_writes_exactly_the_shards_of_the_local_build(
    sources: tuple[Source, ...], tmp_path: Path, case: str, ray_local
) -> None:
    spec = MixtureSpec(sources=sources, seed=3, shard_rows=250, **CASES[case])
    local = build_mixture(spec, tmp_path / "local")
    on_ray = build_mixture(spec, tmp_path / "ray", engine="ray")
    expected, expected_sha = sorted_sha256(tmp_path / "local")
    got, got_sha = sorted_sha256(tmp_path / "ray")
    assert got_sha == expected_sha
    assert got.equals(expected)  # the same order too
    manifest, reference = on_ray.as_dict(), local.as_dict()
    for key in ("plan", "sources", "requested", "achieved", "synthetic_share", "dedup",
                "rejects", "spec_hash", "shard_format", "shards"):
        assert manifest[key] == reference[key], key
    # The same bytes: the manifests' sha256 are those of the files.
    assert [s["sha256"] for s in on_ray.shards] == [
        hashlib.sha256((tmp_path / "ray" / s["file"]).read_bytes()).hexdigest()
        for s in local.shards]
    assert on_ray.shard_format == local.shard_format == 2
    assert local.shards  # something to compare
    # The manifest depends on the spec and the inputs only; the engine is in run.json.
    assert (tmp_path / "ray" / "manifest.json").read_bytes() == (
        tmp_path / "local" / "manifest.json").read_bytes()
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["engine"] == "ray"
    rejects = [json.loads(x) for x in (tmp_path / "ray" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [json.loads(x) for x in
                       (tmp_path / "local" / "rejects.jsonl").read_text().splitlines()]
    for source in manifest["sources"].values():
        assert source["read"] >= source["rejected"] + source["selected"] or case == "upsample"
    if case == "dedup-near":
        assert manifest["dedup"]["dropped"] >= 20  # the shared texts, and near copies
        assert (pl.read_parquet(tmp_path / "ray" / "dedup_dropped.parquet")
                .equals(pl.read_parquet(tmp_path / "local" / "dedup_dropped.parquet")))


@pytest.mark.parametrize("overrides", [
    {},
    {"strategy": "retain", "target_docs": 2500, "allow_upsample": True},
], ids=["accumulate", "upsample"])
def test_awkward_and_in_memory_sources_give_the_same_bytes(
    awkward: Path, tmp_path: Path, overrides: dict, ray_local
) -> None:
    """Files that disagree (relaxed types, missing, nested, categorical and dictionary-encoded
    columns) and an in-memory source (staged next to the output), on one worker."""
    memory = pl.DataFrame({"id": [f"m{i}" for i in range(300)],
                           "text": [f"in memory {i} " + words(i, 5, "m") for i in range(300)]})
    base = awkward_spec(awkward)
    spec = awkward_spec(awkward, sources=(*base.sources, Source(memory, "human", name="memory")),
                        shard_rows=700, **overrides)
    local = build_mixture(spec, tmp_path / "local")
    on_ray = build_mixture(spec, tmp_path / "ray", engine=RayEngine(workers=1))
    assert len(local.shards) > 1 and on_ray.shards == local.shards
    assert on_ray.achieved == local.achieved and on_ray.plan == local.plan
    assert on_ray.achieved["documents_by_source"]["memory"] > 0
    assert not list(tmp_path.glob(".tailguard-work.*"))  # the work folders are gone


def test_dry_run_and_errors_are_those_of_the_local_build(
    sources: tuple[Source, ...], tmp_path: Path, ray_local
) -> None:
    spec = MixtureSpec(sources=sources, target_docs=100, synthetic_ratio=0.5)
    plan = build_mixture(spec, tmp_path / "dry", dry_run=True, engine="ray").plan
    assert plan == build_mixture(spec, dry_run=True).plan
    assert not (tmp_path / "dry").exists()
    pl.DataFrame({"id": ["a", "a", "b"], "text": ["x", "y", "z"]}).write_parquet(
        tmp_path / "dup.parquet")
    duplicated = MixtureSpec(sources=(Source(str(tmp_path / "dup.parquet"), "human"),),
                             target_docs=1)
    with pytest.raises(InputError, match=r"duplicate ids within a source \(dup.parquet: 2 rows"):
        build_mixture(duplicated, tmp_path / "out", engine="ray")
    assert not (tmp_path / "out").exists()
