"""Building mixtures from real parquet/jsonl files: exact, reproducible, auditable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import numpy as np
import polars as pl
import pytest

from mixers.build import build_mixture, select_mixture
from mixers.manifest import load_mixture, read_manifest, verify_shards
from mixers.spec import MixtureSpec, Source
from provenance.errors import ConfigError, InputError, OutputError
from tests.loaded_modules import heavy_modules_loaded_by
from tests.mixers.mixture_inputs import awkward_spec, words


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    pl.DataFrame({
        "id": [f"h{i}" for i in range(2000)],
        "text": [f"human {i} " + words(i) for i in range(2000)],
    }).write_parquet(root / "human.parquet")
    for gen in range(3):
        (root / f"gen{gen}").mkdir()
        pl.DataFrame({
            "id": [f"g{gen}-{i}" for i in range(600)],
            "text": [f"generation {gen} sample {i} " + words(i, 8, "s") for i in range(600)],
            "prov_generation": [gen] * 600,
        }).write_parquet(root / f"gen{gen}" / "part.parquet")
    labels = ["human", "synthetic", "unknown", "human"] * 250
    pl.DataFrame({
        "id": [f"t{i}" for i in range(1000)],
        "text": [f"scraped {i} " + words(i, 10, "c") for i in range(1000)],
        "prov_label": labels,
        "prov_score": [{"human": 0.05, "synthetic": 0.97, "unknown": None}[lb] for lb in labels],
    }).write_parquet(root / "tagged.parquet")
    return root


def spec(corpus: Path, **overrides) -> MixtureSpec:
    sources = (
        Source(str(corpus / "human.parquet"), "human"),
        Source(str(corpus / "gen0"), "synthetic"),
        Source(str(corpus / "gen1"), "synthetic"),
        Source(str(corpus / "gen2"), "synthetic"),
    )
    base = {"sources": sources, "target_docs": 1000, "synthetic_ratio": 0.3,
            "retain_original": 0.1, "strategy": "accumulate", "seed": 7, "shard_rows": 400}
    return MixtureSpec(**{**base, **overrides})


def shards_frame(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(out.glob("part-*.parquet")))


@pytest.mark.parametrize(("target", "ratio", "retain"), [(1000, 0.3, 0.1), (777, 0.5, 0.5),
                                                        (1, 0.0, 0.0), (1799, 1.0, 0.0)])
def test_counts_are_exact_and_the_manifest_matches_the_shards(
    corpus: Path, tmp_path: Path, target: int, ratio: float, retain: float
) -> None:
    manifest = build_mixture(spec(corpus, target_docs=target, synthetic_ratio=ratio,
                                  retain_original=retain), tmp_path / "out")
    frame = shards_frame(tmp_path / "out")
    assert frame.height == target == manifest.achieved["documents"]
    n_syn = int(ratio * target + 0.5)
    by_pool = dict(frame.get_column("mix_pool").value_counts().iter_rows())
    assert by_pool.get("synthetic", 0) == n_syn
    assert by_pool.get("original", 0) == target - n_syn
    assert manifest.achieved["documents_by_pool"] == {
        "original": target - n_syn, "synthetic": n_syn, "scraped": 0}
    by_source = dict(frame.get_column("mix_source").value_counts().iter_rows())
    assert by_source == {k: v for k, v in manifest.achieved["documents_by_source"].items() if v}
    assert sum(s["rows"] for s in manifest.shards) == target
    assert frame.get_column("id").n_unique() == target
    assert verify_shards(tmp_path / "out") == []
    written = read_manifest(tmp_path / "out")
    assert written["spec_hash"] == manifest.spec_hash
    assert written["achieved"] == manifest.achieved


def test_same_spec_same_bytes_and_seed_changes_selection(corpus: Path, tmp_path: Path) -> None:
    a = build_mixture(spec(corpus), tmp_path / "a")
    b = build_mixture(spec(corpus), tmp_path / "b")
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
    build_mixture(spec(corpus, seed=8), tmp_path / "c")
    assert set(shards_frame(tmp_path / "a")["id"]) != set(shards_frame(tmp_path / "c")["id"])


def test_a_smaller_mixture_is_a_subset_of_a_larger_one(corpus: Path, tmp_path: Path) -> None:
    build_mixture(spec(corpus, target_docs=300, synthetic_ratio=0.5, retain_original=0.5),
                  tmp_path / "small")
    build_mixture(spec(corpus, target_docs=900, synthetic_ratio=0.5, retain_original=0.5),
                  tmp_path / "large")
    small = set(shards_frame(tmp_path / "small")["id"])
    assert small <= set(shards_frame(tmp_path / "large")["id"])


def test_replace_and_retain_use_only_the_newest_generation(corpus: Path, tmp_path: Path) -> None:
    m = build_mixture(spec(corpus, strategy="replace", retain_original=0.0, synthetic_ratio=0.5),
                      tmp_path / "replace")
    frame = shards_frame(tmp_path / "replace")
    synthetic = frame.filter(pl.col("mix_pool") == "synthetic")
    assert set(synthetic["prov_generation"]) == {2}
    assert m.plan["newest_generation"] == 2
    assert m.sources["gen0"]["excluded_by_strategy"] == 600
    accumulate = build_mixture(spec(corpus, synthetic_ratio=0.9, retain_original=0.1),
                               tmp_path / "acc")
    gens = shards_frame(tmp_path / "acc").filter(pl.col("mix_pool") == "synthetic")
    assert set(gens["prov_generation"]) == {0, 1, 2}
    assert accumulate.achieved["documents_by_pool"]["synthetic"] == 900


def test_tagged_sources_fill_pools_and_filter_drops_synthetic(corpus: Path, tmp_path: Path) -> None:
    sources = (Source(str(corpus / "human.parquet"), "human"),
               Source(str(corpus / "tagged.parquet"), "from-tags"))
    m = build_mixture(MixtureSpec(sources=sources, target_docs=1000, synthetic_ratio=0.2,
                                  retain_original=0.3, strategy="filter", seed=1),
                      tmp_path / "f")
    frame = shards_frame(tmp_path / "f")
    scraped = frame.filter(pl.col("mix_pool") == "scraped")
    assert set(scraped["prov_label"]) == {"human", "unknown"}
    # 200 synthetic, the 300 original floor, and the remaining 500 from the scraped pool.
    assert scraped.height == 500
    assert m.sources["tagged.parquet"]["filtered"] == 0  # tagged-synthetic is its own pool
    assert frame.filter(pl.col("mix_pool") == "synthetic").height == 200
    assert m.achieved["documents_by_pool"]["original"] == 300
    share = m.synthetic_share
    scores = frame.get_column("prov_score")
    assert share["unscored_documents"] == scores.null_count() > 0
    assert share["estimate"] == pytest.approx(scores.drop_nulls().mean(), abs=1e-6)
    assert share["low"] < share["estimate"] < share["high"]


def test_max_score_and_drop_labels(corpus: Path, tmp_path: Path) -> None:
    sources = (Source(str(corpus / "human.parquet"), "human"),
               Source(str(corpus / "tagged.parquet"), "from-tags"))
    m = build_mixture(MixtureSpec(sources=sources, target_docs=500, drop_labels=("unknown",),
                                  max_score=0.5, seed=1), tmp_path / "m")
    frame = shards_frame(tmp_path / "m")
    assert set(frame.filter(pl.col("mix_pool") == "scraped")["prov_label"]) == {"human"}
    assert m.sources["tagged.parquet"]["filtered"] == 250


def test_reweight_prefers_documents_unlikely_to_be_synthetic(tmp_path: Path) -> None:
    n = 4000
    scores = [0.0 if i % 2 else 0.9 for i in range(n)]
    pl.DataFrame({"id": [str(i) for i in range(n)], "text": [f"doc {i}" for i in range(n)],
                  "prov_label": ["unknown"] * n, "prov_score": scores}).write_parquet(
        tmp_path / "t.parquet")
    m = build_mixture(MixtureSpec(sources=(Source(str(tmp_path / "t.parquet"), "from-tags"),),
                                  target_docs=400, strategy="reweight", seed=2), tmp_path / "r")
    picked = shards_frame(tmp_path / "r")
    low = (picked["prov_score"] == 0.0).mean()
    assert low > 0.85  # weight 1 vs 0.1: about 10:1 odds early in the draw
    assert m.achieved["documents"] == 400


def test_token_budget_is_met_within_one_document(corpus: Path, tmp_path: Path) -> None:
    m = build_mixture(spec(corpus, target_docs=None, target_tokens=20_000), tmp_path / "t")
    frame = shards_frame(tmp_path / "t")
    tokens = frame.get_column("text").str.count_matches(r"\S+")
    assert int(tokens.sum()) == m.achieved["tokens"]
    longest = int(tokens.max())
    for pool, plan in m.plan["pools"].items():
        got = int(tokens.filter(frame["mix_pool"] == pool).sum())
        assert plan["take_tokens"] in (got, None) or plan["requested"] == 0
        assert 0 <= plan["requested"] - got < longest or plan["requested"] == 0
    assert abs(m.achieved["tokens"] - 20_000) < 3 * longest


def test_upsampling_only_when_allowed(corpus: Path, tmp_path: Path) -> None:
    small = spec(corpus, target_docs=3000, synthetic_ratio=0.0, retain_original=1.0)
    expected = "the original pool has 2,000 docs .* \\(--allow-upsample\\)"
    with pytest.raises(ConfigError, match=expected):
        build_mixture(small, tmp_path / "no")
    m = build_mixture(spec(corpus, target_docs=3000, synthetic_ratio=0.0, retain_original=1.0,
                           allow_upsample=True), tmp_path / "yes")
    frame = shards_frame(tmp_path / "yes")
    assert frame.height == 3000 == m.achieved["documents"]
    assert dict(frame.get_column("mix_copy").value_counts().iter_rows()) == {0: 2000, 1: 1000}


def test_a_filtered_web_corpus_alone_reports_and_upsamples_its_own_shortfall(
    tmp_path: Path,
) -> None:
    n = 100
    labels = ["synthetic" if i % 4 == 0 else "human" for i in range(n)]  # 75 survive the filter
    pl.DataFrame({"id": [str(i) for i in range(n)], "text": [f"doc {i}" for i in range(n)],
                  "prov_label": labels}).write_parquet(tmp_path / "web.parquet")
    web = (Source(str(tmp_path / "web.parquet"), "from-tags"),)
    with pytest.raises(ConfigError, match="the scraped pool has 75 docs after filtering but 90"):
        build_mixture(MixtureSpec(sources=web, target_docs=90, strategy="filter"), tmp_path / "a")
    m = build_mixture(MixtureSpec(sources=web, target_docs=90, strategy="filter",
                                  allow_upsample=True), tmp_path / "b")
    frame = shards_frame(tmp_path / "b")
    assert frame.height == 90 == m.achieved["documents"]
    assert set(frame["prov_label"]) == {"human"}
    assert dict(frame.get_column("mix_copy").value_counts().iter_rows()) == {0: 75, 1: 15}


def test_dedup_keeps_the_human_copy(tmp_path: Path) -> None:
    shared = [words(i, 40) for i in range(50)]
    # One word changed in 40: true Jaccard of 5-shingles 31/41 = 0.76, 4 standard errors
    # of the 128-permutation estimate above the 0.6 threshold.
    near = [" ".join(["CHANGED" if k == 20 else w for k, w in enumerate(t.split())])
            for t in shared[25:]]
    pl.DataFrame({"id": [f"h{i}" for i in range(50)], "text": shared}).write_parquet(
        tmp_path / "human.parquet")
    pl.DataFrame({"id": [f"s{i}" for i in range(75)],
                  "text": [t.upper() for t in shared[:25]] + near
                  + [words(1000 + i, 40) for i in range(25)]}).write_parquet(
        tmp_path / "synth.parquet")
    sources = (Source(str(tmp_path / "human.parquet"), "human"),
               Source(str(tmp_path / "synth.parquet"), "synthetic"))
    m = build_mixture(MixtureSpec(sources=sources, target_docs=60, synthetic_ratio=0.25,
                                  dedup="near", dedup_threshold=0.6), tmp_path / "out")
    assert m.dedup["by_kind"] == {"exact": 25, "near": 25}
    dropped = pl.read_parquet(tmp_path / "out" / "dedup_dropped.parquet")
    assert set(dropped["source"]) == {"synth.parquet"}
    assert set(dropped["duplicate_of_source"]) == {"human.parquet"}
    assert m.sources["synth.parquet"]["deduplicated"] == 50
    assert len(m.dedup["dropped_ids"]) == 50
    frame = shards_frame(tmp_path / "out")
    assert frame.filter(pl.col("mix_pool") == "synthetic").height == 15


def test_bad_rows_go_to_rejects_and_counts_add_up(tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"j{i}", "text": f"doc {i}"}) for i in range(30)]
    lines[3] = '{"id": "broken'
    lines[7] = json.dumps({"id": "j7", "text": ""})
    (tmp_path / "h.jsonl").write_text("\n".join(lines) + "\n")
    pl.DataFrame({"id": ["p1", "p2", None], "text": ["a", None, "c"]}).write_parquet(
        tmp_path / "s.parquet")
    sources = (Source(str(tmp_path / "h.jsonl"), "human"),
               Source(str(tmp_path / "s.parquet"), "synthetic"))
    m = build_mixture(MixtureSpec(sources=sources, target_docs=20, synthetic_ratio=0.05),
                      tmp_path / "out")
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == [
        "bad_id", "empty_text", "malformed_json", "missing_text"]
    assert m.rejects["count"] == 4
    for src in m.sources.values():
        assert src["read"] >= src["rejected"] + src["selected"]
    assert m.sources["h.jsonl"]["read"] == 30 and m.sources["s.parquet"]["read"] == 3


def test_input_errors(corpus: Path, tmp_path: Path) -> None:
    pl.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}).write_parquet(tmp_path / "dup.parquet")
    expected = "duplicate ids within a source \\(dup.parquet: 2 rows share an id\\)"
    with pytest.raises(InputError, match=expected):
        build_mixture(MixtureSpec(sources=(Source(str(tmp_path / "dup.parquet"), "human"),),
                                  target_docs=1), tmp_path / "o1")
    with pytest.raises(InputError, match="role from-tags but no prov_label column; tag it first"):
        build_mixture(MixtureSpec(sources=(Source(str(corpus / "human.parquet"), "from-tags"),),
                                  target_docs=1), tmp_path / "o2")
    same = (Source(str(corpus / "gen0" / "part.parquet"), "synthetic"),
            Source(str(corpus / "gen1" / "part.parquet"), "synthetic"))
    with pytest.raises(ConfigError, match="several sources are named part.parquet"):
        build_mixture(MixtureSpec(sources=same, target_docs=1, synthetic_ratio=1.0),
                      tmp_path / "o3")

def test_a_tag_that_is_not_tailguards_is_refused_where_it_stands(tmp_path: Path) -> None:
    # Another tool's "machine" was mixed as scraped and escaped the synthetic filter.
    n = 40
    texts = [f"page {i} " + words(i) for i in range(n)]
    labels = ["human"] * n
    labels[13] = "machine"
    pl.DataFrame({"id": [str(i) for i in range(n)], "text": texts, "prov_label": labels}
                 ).write_parquet(tmp_path / "web.parquet")
    lines = ["{not json"] + [json.dumps({"id": str(i), "text": t, "prov_label": lb})
                             for i, (t, lb) in enumerate(zip(texts, labels, strict=True))]
    (tmp_path / "web.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps({"id": str(i), "text": t, "prov_label": float(i % 2)})
             for i, t in enumerate(texts)]
    (tmp_path / "scores.jsonl").write_text("\n".join(lines) + "\n")
    expected = {
        "web.parquet": "web.parquet, row 13, field 'prov_label': 'machine' is not a tailguard "
                       "label \\(human, synthetic, unknown\\) in from-tags source 'web.parquet'",
        # the malformed first line is rejected, not counted: the bad tag is still on line 15
        "web.jsonl": "web.jsonl, line 15, field 'prov_label': 'machine' is not",
        "scores.jsonl": "scores.jsonl, field 'prov_label': from-tags source 'scores.jsonl' has "
                        "labels of type Float64, not text",
    }
    for name, message in expected.items():
        web = (Source(str(tmp_path / name), "from-tags"),)
        with pytest.raises(InputError, match=message):
            build_mixture(MixtureSpec(sources=web, target_docs=10, strategy="filter"),
                          tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}").exists()
    # Untagged rows (null) are not foreign: they are scraped documents with no evidence.
    labels[13] = None
    pl.DataFrame({"id": [str(i) for i in range(n)], "text": texts, "prov_label": labels}
                 ).write_parquet(tmp_path / "web.parquet")
    m = build_mixture(MixtureSpec(sources=(Source(str(tmp_path / "web.parquet"), "from-tags"),),
                                  target_docs=n, strategy="filter"), tmp_path / "ok")
    assert m.achieved["documents"] == n



def test_existing_mixture_is_not_overwritten_silently(corpus: Path, tmp_path: Path) -> None:
    build_mixture(spec(corpus), tmp_path / "out")
    with pytest.raises(OutputError, match="already holds a mixture"):
        build_mixture(spec(corpus), tmp_path / "out")
    m = build_mixture(spec(corpus, target_docs=10), tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "dataset_card.md", "manifest.json", "part-00000.parquet", "run.json"]
    assert m.achieved["documents"] == 10


def test_a_failed_build_creates_no_output_folder(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-upsample"):
        build_mixture(spec(corpus, target_docs=10**6), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_dry_run_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    m = build_mixture(spec(corpus), tmp_path / "dry", dry_run=True)
    assert not (tmp_path / "dry").exists()
    assert m.plan["pools"]["synthetic"]["requested"] == 300 and m.shards == []


def test_in_memory_pipeline_with_frames_and_datasets(tmp_path: Path) -> None:
    human = datasets.Dataset.from_dict({"id": [f"h{i}" for i in range(100)],
                                        "text": [f"person {i}" for i in range(100)]})
    synthetic = pl.LazyFrame({"id": [f"s{i}" for i in range(100)],
                              "text": [f"model {i}" for i in range(100)]})
    spec_ = MixtureSpec(sources=(Source(human, "human", name="people"),
                                 Source(synthetic, "synthetic", name="model")),
                        target_docs=50, synthetic_ratio=0.4)
    lazy = select_mixture(spec_, tmp_path)
    assert isinstance(lazy, pl.LazyFrame)
    frame = lazy.collect()
    assert frame.height == 50 and (frame["mix_pool"] == "synthetic").sum() == 20
    build_mixture(spec_, tmp_path / "out")
    ds = load_mixture(tmp_path / "out")
    assert isinstance(ds, datasets.Dataset) and ds.num_rows == 50
    shard = tmp_path / "out" / "part-00000.parquet"
    pl.read_parquet(shard).head(10).write_parquet(shard)
    with pytest.raises(InputError, match="sha256 differs from the manifest"):
        load_mixture(tmp_path / "out")


# -- the metadata pass (row groups, numpy) agrees with the lazy frame it stands in for -----------


def _lazy_metadata(spec_: MixtureSpec, tmp_path: Path) -> tuple[pl.DataFrame, list]:
    """The per-row columns as the lazy frame computes them, and the metadata pass's arrays."""
    from mixers import metadata
    from mixers.sources import load_source, source_names
    from provenance.corpus import RejectsWriter

    sink = RejectsWriter(tmp_path / "rejects.jsonl")
    names = source_names(spec_.sources)
    loaded = [load_source(s, n, spec_, workdir=tmp_path, on_reject=sink)
              for s, n in zip(spec_.sources, names, strict=True)]
    frame = pl.concat([ls.frame for ls in loaded], how="diagonal_relaxed")
    columns = [pl.col("_key"), pl.col("mix_pool").to_physical().alias("pool"),
               pl.col("_reject").is_not_null().alias("bad"), pl.col("_generation"),
               metadata.filtered_expr(spec_).alias("filtered")]
    if spec_.strategy == "reweight":
        columns.append(metadata.rank_expr(spec_).alias("rank"))
    if spec_.target_tokens is not None:
        columns.append(metadata.token_expr(spec_).alias("tokens"))
    expected = frame.select(columns).collect()
    rows = metadata.read_metadata(loaded, spec_, dict(frame.collect_schema()))
    sink.close()
    return expected, rows


def _concat(rows: list, get) -> np.ndarray:
    return np.concatenate([np.asarray(get(r)) for r in rows])


@pytest.mark.parametrize("case", ["docs", "filter", "reweight", "generations", "tokens"])
def test_metadata_pass_agrees_with_the_lazy_frame(
    corpus: Path, tmp_path: Path, case: str
) -> None:
    # Files of several row groups, a null and a blank text, integer ids: the rare paths too.
    pl.DataFrame({
        "id": list(range(900)),
        "text": [None if i == 5 else "\u3000" if i == 400 else f" padded {i}" if i % 7 == 0
                 else f"text {i}" for i in range(900)],
        "prov_label": ["synthetic" if i % 3 == 0 else None if i % 5 == 0 else "human"
                       for i in range(900)],
        "prov_score": pl.Series([(i % 11) / 10 for i in range(900)], dtype=pl.Float32),
        "prov_generation": [i % 4 for i in range(900)],
    }).write_parquet(tmp_path / "web.parquet", row_group_size=200)
    sources = (Source(str(corpus / "human.parquet"), "human"),
               Source(str(corpus / "gen1"), "synthetic"),
               Source(str(corpus / "gen2"), "synthetic", generation=4),
               Source(str(tmp_path / "web.parquet"), "from-tags"))
    overrides = {
        "docs": {},
        "filter": {"strategy": "filter", "max_score": 0.5, "drop_labels": ("unknown",)},
        "reweight": {"strategy": "reweight", "reweight_power": 1.5},
        "generations": {"strategy": "retain", "retain_original": 0.2},
        "tokens": {"target_docs": None, "target_tokens": 5000},
    }[case]
    spec_ = MixtureSpec(**{"sources": sources, "target_docs": 100, "synthetic_ratio": 0.2,
                           "seed": 3, **overrides})
    expected, rows = _lazy_metadata(spec_, tmp_path)
    assert _concat(rows, lambda r: r.key).tolist() == expected["_key"].to_list()
    pools = _concat(rows, lambda r: r.pool if r.pool is not None
                    else np.full(r.rows, r.fixed_pool))
    assert pools.tolist() == expected["pool"].to_list()
    bad = _concat(rows, lambda r: r.bad if r.bad is not None else np.zeros(r.rows, bool))
    assert bad.tolist() == expected["bad"].to_list()
    assert int(bad.sum()) == 2  # the null and the ideographic-space text
    filtered = _concat(rows, lambda r: r.filtered if r.filtered is not None
                       else np.zeros(r.rows, bool))
    assert filtered.tolist() == expected["filtered"].to_list()
    if case == "generations":
        gens = [None if r.generation is None else
                [r.generation] * r.rows if isinstance(r.generation, int) else
                [None if null else int(g) for g, null in zip(r.generation, r.generation_null,
                                                             strict=True)]
                for r in rows]
        flat = [g for r, part in zip(rows, gens, strict=True)
                for g in (part if part is not None else [None] * r.rows)]
        assert flat == expected["_generation"].to_list()
    if case == "reweight":
        assert _concat(rows, lambda r: r.ranks).tolist() == expected["rank"].to_list()
    if case == "tokens":
        tokens = expected["tokens"].fill_null(0).to_list()
        assert _concat(rows, lambda r: r.tokens).tolist() == tokens


def test_text_statistics_skip_only_row_groups_they_prove_clean(tmp_path: Path) -> None:
    texts = [f"doc {i}" for i in range(1000)]
    texts[130] = "\u2003\u3000"        # Unicode whitespace only: rejected
    texts[131] = " starts with a space"  # valid, but the statistics cannot prove it
    texts[620] = "\u00e9t\u00e9"        # valid, starts beyond ASCII
    texts[905] = ""                      # empty: rejected
    pl.DataFrame({"id": [f"d{i}" for i in range(1000)], "text": texts}).write_parquet(
        tmp_path / "h.parquet", row_group_size=100)
    m = build_mixture(MixtureSpec(sources=(Source(str(tmp_path / "h.parquet"), "human"),),
                                  target_docs=998), tmp_path / "out")
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == [(130, "empty_text"), (905, "empty_text")]
    assert m.sources["h.parquet"]["rejected"] == 2 and m.sources["h.parquet"]["read"] == 1000
    assert shards_frame(tmp_path / "out").height == 998


def test_duplicate_ids_are_counted_per_source(tmp_path: Path) -> None:
    pl.DataFrame({"id": ["a", "a", "b"], "text": ["x", "y", "z"]}).write_parquet(
        tmp_path / "one.parquet")
    pl.DataFrame({"id": ["q", "r", "r", "r"], "text": ["x", "y", "z", "w"]}).write_parquet(
        tmp_path / "two.parquet")
    sources = (Source(str(tmp_path / "one.parquet"), "human"),
               Source(str(tmp_path / "two.parquet"), "synthetic"))
    expected = "duplicate ids within a source \\(one.parquet: 2, two.parquet: 3 rows share an id\\)"
    with pytest.raises(InputError, match=expected):
        build_mixture(MixtureSpec(sources=sources, target_docs=2, synthetic_ratio=0.5),
                      tmp_path / "out")
    # Rows a strategy excludes are not checked: only the newest generation counts here.
    newer = (Source(str(tmp_path / "one.parquet"), "human"),
             Source(str(tmp_path / "two.parquet"), "synthetic", generation=0),
             Source(str(tmp_path / "one.parquet"), "synthetic", name="newer", generation=1))
    with pytest.raises(InputError, match="\\(one.parquet: 2, newer: 2 rows share an id\\)"):
        build_mixture(MixtureSpec(sources=newer, target_docs=2, synthetic_ratio=0.5,
                                  strategy="retain"), tmp_path / "out")


# -- the write pass (shard format 2) ---------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    {},
    {"strategy": "filter", "max_score": 0.5, "drop_labels": ("unknown",)},
    {"strategy": "reweight", "reweight_power": 2.0},
    {"strategy": "retain"},
    {"target_docs": None, "target_tokens": 9000},
], ids=["accumulate", "filter", "reweight", "retain", "tokens"])
def test_metadata_file_by_file_joins_to_the_metadata_pass(
    awkward: Path, tmp_path: Path, overrides: dict
) -> None:
    """What an engine that reads each file on a worker computes (file_metadata, join_files) is
    the metadata pass's arrays, every one of them."""
    from mixers import metadata
    from mixers.sources import load_source, source_names
    from provenance.corpus import RejectsWriter

    (tmp_path / "tagged").mkdir()
    for part in range(2):  # bad rows, and a column the second file lacks
        pl.DataFrame({
            "id": [f"t{part}-{i}" for i in range(300)],
            "text": [None if i == 7 else " " if i == 90 else f"tagged {i}" for i in range(300)],
            "prov_label": ["synthetic" if i % 3 else "human" for i in range(300)],
            **({"prov_generation": [i % 2 for i in range(300)]} if part == 0 else {}),
        }).write_parquet(tmp_path / "tagged" / f"{part}.parquet", row_group_size=64)
    base = awkward_spec(awkward)
    spec_ = awkward_spec(awkward, sources=(*base.sources,
                                           Source(str(tmp_path / "tagged"), "from-tags")),
                         **overrides)
    sink = RejectsWriter(tmp_path / "rejects.jsonl")
    loaded = [load_source(s, n, spec_, workdir=tmp_path, on_reject=sink)
              for s, n in zip(spec_.sources, source_names(spec_.sources), strict=True)]
    schema = dict(pl.concat([ls.frame for ls in loaded], how="diagonal_relaxed")
                  .collect_schema())
    whole = metadata.read_metadata(loaded, spec_, schema)
    offset = 0
    for ls, expected in zip(loaded, whole, strict=True):
        files = [metadata.file_metadata(ls, path, spec_, schema) for path in ls.files]
        joined = metadata.join_files(ls, offset, files, spec_)
        offset += joined.rows
        assert (joined.offset, joined.rows) == (expected.offset, expected.rows)
        for name in ("key", "fixed_pool", *metadata.ARRAYS):
            got, want = getattr(joined, name), getattr(expected, name)
            assert type(got) is type(want), name
            assert np.array_equal(got, want) if isinstance(want, np.ndarray) else got == want
    assert any(rows.bad is not None for rows in whole)
    sink.close()


@pytest.mark.parametrize("overrides", [
    {},
    {"strategy": "filter", "max_score": 0.5, "drop_labels": ("unknown",), "target_docs": 1200},
    {"strategy": "reweight", "reweight_power": 2.0},
    {"strategy": "retain", "target_docs": 2500, "allow_upsample": True},
    {"target_docs": None, "target_tokens": 9000},
], ids=["accumulate", "filter", "reweight", "upsample", "tokens"])
def test_shards_hold_the_rows_and_values_of_the_lazy_mixture(
    awkward: Path, tmp_path: Path, overrides: dict
) -> None:
    """The write pass (pyarrow, file by file) and select_mixture (polars' relaxed concatenation
    of the sources' lazy frames) agree on every row, value, type and the row order."""
    spec_ = awkward_spec(awkward, **overrides)
    manifest = build_mixture(spec_, tmp_path / "out")
    written = shards_frame(tmp_path / "out")
    (tmp_path / "work").mkdir()
    lazy = select_mixture(spec_, tmp_path / "work").collect()
    assert written.schema == lazy.schema
    assert written.equals(lazy)
    assert manifest.achieved["documents"] == written.height
    by_pool = dict(written.get_column("mix_pool").cast(pl.String).value_counts().iter_rows())
    assert {p: n for p, n in manifest.achieved["documents_by_pool"].items() if n} == by_pool


def test_shard_bytes_do_not_depend_on_threads_or_batches(
    awkward: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    import pyarrow as pa

    from mixers import metadata, shards

    spec_ = awkward_spec(awkward, shard_rows=700)
    default = build_mixture(spec_, tmp_path / "a")
    cpus = pa.cpu_count()
    monkeypatch.setattr(shards, "READ_BYTES", 1)  # every batch the smallest
    monkeypatch.setattr(metadata, "MAX_THREADS", 1)
    pa.set_cpu_count(1)
    try:
        serial = build_mixture(spec_, tmp_path / "b")
    finally:
        pa.set_cpu_count(cpus)
    assert [s["sha256"] for s in default.shards] == [s["sha256"] for s in serial.shards]
    assert [s["rows"] for s in default.shards] == [700, 700, 100]
    # polars' thread pool is sized when polars loads: one thread, in a process of its own.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tests.mixers.mixture_inputs import awkward_spec\n"
        "from mixers.build import build_mixture\n"
        "from pathlib import Path\n"
        "m = build_mixture(awkward_spec(Path(sys.argv[2]), shard_rows=700), sys.argv[3])\n"
        "print(' '.join(s['sha256'] for s in m.shards))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code, str(root), str(awkward),
                          str(tmp_path / "c")], capture_output=True, text=True, env=env,
                         cwd=root, check=True)
    assert run.stdout.split() == [s["sha256"] for s in default.shards]


def test_shard_bytes_depend_only_on_the_rows(tmp_path: Path) -> None:
    """Format 2: the same rows in differently split inputs give the same shard bytes, in
    fixed-size row groups."""
    import pyarrow.parquet as pq

    from mixers import shards

    frame = pl.DataFrame({"id": [f"d{i}" for i in range(5000)],
                          "text": [f"document {i} " + words(i, 20) for i in range(5000)]})
    frame.write_parquet(tmp_path / "one.parquet", row_group_size=5000)
    (tmp_path / "split").mkdir()
    for k in range(4):
        frame.slice(k * 1250, 1250).write_parquet(tmp_path / "split" / f"{k}.parquet",
                                                  row_group_size=97 + k)
    built = []
    for name, path in (("a", tmp_path / "one.parquet"), ("b", tmp_path / "split")):
        spec_ = MixtureSpec(sources=(Source(str(path), "human", name="docs"),),
                            target_docs=3000, shard_rows=2500, seed=9)
        built.append(build_mixture(spec_, tmp_path / name))
    assert [s["sha256"] for s in built[0].shards] == [s["sha256"] for s in built[1].shards]
    meta = pq.read_metadata(tmp_path / "a" / "part-00000.parquet")
    assert meta.num_rows == 2500
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [2500]
    assert shards.ROW_GROUP_ROWS >= 2500


def test_the_manifest_names_the_shard_format(corpus: Path, tmp_path: Path) -> None:
    from mixers.shards import SHARD_FORMAT

    built = build_mixture(spec(corpus), tmp_path / "out")
    assert built.shard_format == SHARD_FORMAT == 2
    assert read_manifest(tmp_path / "out")["shard_format"] == 2
    assert build_mixture(spec(corpus), None, dry_run=True).shard_format is None


def test_large_documents_make_smaller_row_groups(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from mixers import shards

    monkeypatch.setattr(shards, "ROW_GROUP_BYTES", 200_000)
    texts = [words(i, 40) for i in range(3000)]
    pl.DataFrame({"id": [f"d{i}" for i in range(3000)], "text": texts}).write_parquet(
        tmp_path / "h.parquet")
    build_mixture(MixtureSpec(sources=(Source(str(tmp_path / "h.parquet"), "human"),),
                              target_docs=3000), tmp_path / "out")
    meta = pq.read_metadata(tmp_path / "out" / "part-00000.parquet")
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert len(set(groups[:-1])) == 1 and groups[0] < 3000 and sum(groups) == 3000


def test_mixing_text_loads_no_jit(corpus: Path, tmp_path: Path) -> None:
    """numba costs a process about 0.4 s and 115 MB: the text mix path must not load it."""
    code = (
        "from mixers.build import build_mixture\n"
        "from mixers.spec import MixtureSpec, Source\n"
        f"spec = MixtureSpec(sources=(Source({str(corpus / 'human.parquet')!r}, 'human'),"
        f" Source({str(corpus / 'gen1')!r}, 'synthetic')), target_docs=100,"
        " synthetic_ratio=0.3)\n"
        f"build_mixture(spec, {str(tmp_path / 'out')!r})"
    )
    heavy = ("numba", "torch", "transformers", "datasets")
    assert heavy_modules_loaded_by(code, heavy) == []
