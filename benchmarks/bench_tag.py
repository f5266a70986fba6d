"""`tailguard tag` against a large ledger vs a hand-written datasketch pipeline, in one run.

The obvious alternative a user would write: keep a Python set of content hashes and an in-memory
``datasketch.MinHashLSH`` of the generated documents (built with ``MinHash.bulk``), then for each
crawled document check the set, else query the LSH and verify the Jaccard estimate. It has to be
rebuilt in every process (the ledger is a file that opens instantly), so both the build and the
per-document tagging are timed.

Documents are sampled from a word-trigram model trained on real text (WikiText-2 from
``../shared/data`` when present, else standard-library docstrings), so they have the vocabulary
and phrasing of prose. The crawl is 25% verbatim copies of ledger documents, 25% lightly edited
copies and 50% unrelated documents.

    python benchmarks/bench_tag.py            # 100k-record ledger, 20k crawled documents
    python benchmarks/bench_tag.py --quick    # 10k-record ledger, 4k crawled documents
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from pathlib import Path

import polars as pl
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from provenance.demo import TrigramModel, light_edit, stdlib_paragraphs  # noqa: E402
from provenance.ledger import Ledger  # noqa: E402
from provenance.minhash import normalize, shingles  # noqa: E402
from provenance.tagger import tag_corpus  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"
THRESHOLD = 0.8
WORDS = (80, 220)


def training_text() -> tuple[str, list[str]]:
    """Real prose to train the generator on: WikiText-2 when available, else docstrings."""
    if WIKITEXT.is_dir():
        lines: list[str] = []
        for name in ("valid.txt", "test.txt"):
            lines += [ln.strip() for ln in (WIKITEXT / name).read_text().splitlines()]
        prose = [ln for ln in lines if len(ln.split()) > 20 and not ln.startswith("=")]
        return "wikitext-2", prose
    return "stdlib docstrings", stdlib_paragraphs()


def make_docs(n_ledger: int, n_crawl: int, seed: int = 0) -> tuple[str, list[str], list[str]]:
    source, train = training_text()
    rng = random.Random(seed)
    generated = TrigramModel().fit(train).sample(n_ledger, rng, words=WORDS)
    other_model = TrigramModel().fit(train[::-1])
    unrelated = other_model.sample(n_crawl - n_crawl // 2, random.Random(seed + 1), words=WORDS)
    quarter = n_crawl // 4
    edited = [light_edit(t, rng, share=0.01) for t in generated[quarter : 2 * quarter]]
    crawl = generated[:quarter] + edited + unrelated
    rng.shuffle(crawl)
    return source, generated, crawl


def naive_build(generated: list[str], num_perm: int = 128):
    from datasketch import MinHash, MinHashLSH

    hashes = {hashlib.sha256(normalize(t).encode()).digest() for t in generated}
    minhashes = MinHash.bulk([shingles(t) for t in generated], num_perm=num_perm)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m)
    return hashes, lsh, minhashes


def naive_tag(crawl: list[str], hashes, lsh, minhashes, num_perm: int = 128) -> list[str]:
    from datasketch import MinHash

    labels = []
    for text in crawl:
        if hashlib.sha256(normalize(text).encode()).digest() in hashes:
            labels.append("ledger_exact")
            continue
        m = MinHash(num_perm=num_perm)
        m.update_batch(shingles(text))
        best = max((m.jaccard(minhashes[k]) for k in lsh.query(m)), default=0.0)
        labels.append("ledger_near" if best >= THRESHOLD else "none")
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller ledger and crawl")
    parser.add_argument("--ledger-docs", type=int, default=None)
    parser.add_argument("--crawl-docs", type=int, default=None)
    args = parser.parse_args()
    n_ledger = args.ledger_docs or (10_000 if args.quick else 100_000)
    n_crawl = args.crawl_docs or (4_000 if args.quick else 20_000)

    t0 = time.perf_counter()
    source, generated, crawl = make_docs(n_ledger, n_crawl)
    print(f"corpus: {n_ledger:,} ledger docs, {n_crawl:,} crawl docs from a trigram model on "
          f"{source} ({time.perf_counter() - t0:.1f} s to generate)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        crawl_path = tmp_path / "crawl.parquet"
        ids = [f"c{i}" for i in range(len(crawl))]
        pl.DataFrame({"id": ids, "text": crawl}).write_parquet(crawl_path)
        ledger_path = tmp_path / "ledger.sqlite"
        t0 = time.perf_counter()
        with Ledger(ledger_path) as ledger:
            for start in range(0, n_ledger, 10_000):
                ledger.register(generated[start : start + 10_000], generator="bench")
        ours_build = time.perf_counter() - t0
        ledger_mb = ledger_path.stat().st_size / 1e6

        t0 = time.perf_counter()
        report = tag_corpus(crawl_path, tmp_path / "tagged.parquet", ledger=ledger_path)
        ours_tag = time.perf_counter() - t0
        ours_counts = report.by_evidence

    t0 = time.perf_counter()
    hashes, lsh, minhashes = naive_build(generated)
    naive_build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_labels = naive_tag(crawl, hashes, lsh, minhashes)
    naive_tag_s = time.perf_counter() - t0
    naive_counts = {k: naive_labels.count(k) for k in ("ledger_exact", "ledger_near", "none")}

    results = {
        "tailguard_tag": n_crawl / ours_tag,
        "datasketch_lsh_tag": n_crawl / naive_tag_s,
        "tailguard_ledger_build": n_ledger / ours_build,
        "datasketch_lsh_build": n_ledger / naive_build_s,
    }
    speedup = {
        "vs_datasketch_lsh_tag": results["tailguard_tag"] / results["datasketch_lsh_tag"],
        "build_vs_datasketch_lsh": results["tailguard_ledger_build"]
        / results["datasketch_lsh_build"],
    }
    print(f"\n{'step':<34}{'docs/s':>12}")
    for name, value in results.items():
        print(f"{name:<34}{value:>12,.0f}")
    print(f"\ntag: tailguard is {speedup['vs_datasketch_lsh_tag']:.1f}x the datasketch loop; "
          f"build: {speedup['build_vs_datasketch_lsh']:.2f}x (the ledger is a {ledger_mb:.0f} MB "
          "file that later runs open instantly; the in-memory LSH is rebuilt in every process)")
    print(f"decisions  tailguard: {ours_counts}\n           datasketch: {naive_counts}")

    out = {
        "benchmark": "tag",
        "unit": "docs/s",
        "results": {k: round(v, 1) for k, v in results.items()},
        "speedup": {k: round(v, 2) for k, v in speedup.items()},
        "params": {
            "ledger_docs": n_ledger,
            "crawl_docs": n_crawl,
            "num_perm": 128,
            "ngram": 5,
            "near_threshold": THRESHOLD,
            "text_source": source,
            "quick": args.quick,
            "decisions_tailguard": ours_counts,
            "decisions_datasketch": naive_counts,
            "ledger_mb": round(ledger_mb, 1),
        },
        "machine": machine(),
    }
    write_result(ROOT / "benchmarks" / "results" / "bench_tag.json", out)


if __name__ == "__main__":
    main()
