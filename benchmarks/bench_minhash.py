"""MinHash signatures per second: tailguard's numba kernel against datasketch, on one core.

Every contender goes from raw text to 128-permutation MinHashes of lower-cased word 5-shingles,
so datasketch's timings include ``shingles(text)`` -- what a user would write. Measured in one
run: ours with SHA-1 (datasketch's default hash) and with xxh32; datasketch's per-shingle
``update`` loop and ``update_batch`` (a new ``MinHash`` per document, as a user would write them,
so permutation set-up is included), ``MinHash.bulk`` (which shares it), and ``MinHash.bulk`` with
xxh32. Our signatures are checked to equal datasketch's on every benchmark document; the garbage
collector is paused while timing, as ``timeit`` does.

Documents are ~1 KB windows of WikiText-2 (``../shared/data/wikitext-2`` valid + test) when
present, else of standard-library docstrings; windows overlap so that there are enough of them.

    python benchmarks/bench_minhash.py            # 10k documents, best of 3
    python benchmarks/bench_minhash.py --quick    # 2k documents, one pass (seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import datasketch
import numba
import numpy as np
import xxhash
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from provenance.minhash import MinHasher, shingles  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"
RESULT = ROOT / "benchmarks" / "results" / "bench_minhash.json"
NUM_PERM, NGRAM, SEED = 128, 5, 1
WINDOW = 1024
SLOW_DOCS = 1000  # the per-shingle update loop is timed on this many documents only

# Fresh interpreter: import, then the first call, which imports numba (provenance.minhash_jit)
# and compiles the kernels or loads them from numba's cache.
FIRST_CALL = """
import json, time
t0 = time.perf_counter()
from provenance.minhash import MinHasher
t1 = time.perf_counter()
MinHasher().signatures(["a b c d e"])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1}))
"""


def corpus_text() -> tuple[str, str]:
    """``(name, text)``: WikiText-2 when the shared data is there, else stdlib docstrings."""
    if WIKITEXT.is_dir():
        text = "".join((WIKITEXT / name).read_text("utf-8") for name in ("valid.txt", "test.txt"))
        return "wikitext-2 valid+test", text
    from provenance.demo import stdlib_paragraphs

    return "python stdlib docstrings", "\n".join(stdlib_paragraphs())


def windows(text: str, n_docs: int, size: int = WINDOW) -> list[str]:
    """``n_docs`` windows of about ``size`` characters, cut at spaces, evenly spread over text."""
    stride = max(1, (len(text) - size) // max(1, n_docs - 1))
    docs = []
    for i in range(n_docs):
        lo = min(i * stride, max(0, len(text) - size))
        start = text.find(" ", lo) + 1
        end = text.rfind(" ", start, lo + size)
        docs.append(text[start : end if end > start else lo + size])
    return docs


def best_rate(run: Callable[[list[str]], object], docs: list[str], repeats: int) -> float:
    """Documents per second of the fastest of ``repeats`` runs (the least disturbed one).

    The garbage collector is paused while timing, as ``timeit`` does: datasketch allocates
    millions of shingle objects, and when the collector runs would otherwise depend on the
    number of documents rather than on the method.
    """
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run(docs)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return len(docs) / best


def ours(hash_name: str) -> Callable[[list[str]], np.ndarray]:
    hasher = MinHasher(num_perm=NUM_PERM, ngram=NGRAM, seed=SEED, hash=hash_name)
    return hasher.signatures


def datasketch_update(docs: list[str]) -> list[datasketch.MinHash]:
    out = []
    for text in docs:
        m = datasketch.MinHash(num_perm=NUM_PERM, seed=SEED)
        for shingle in shingles(text, NGRAM):
            m.update(shingle)
        out.append(m)
    return out


def datasketch_update_batch(docs: list[str]) -> list[datasketch.MinHash]:
    out = []
    for text in docs:
        m = datasketch.MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch(shingles(text, NGRAM))
        out.append(m)
    return out


def datasketch_bulk(docs: list[str], **kwargs) -> list[datasketch.MinHash]:
    sets = [shingles(text, NGRAM) for text in docs]
    return datasketch.MinHash.bulk(sets, num_perm=NUM_PERM, seed=SEED, **kwargs)


def datasketch_bulk_xxh32(docs: list[str]) -> list[datasketch.MinHash]:
    return datasketch_bulk(docs, hashfunc=xxhash.xxh32_intdigest)


def signatures_equal(docs: list[str]) -> dict[str, bool]:
    """Ours against datasketch's hash values, document by document, for both hashes."""
    return {
        "sha1": np.array_equal(
            ours("sha1")(docs), np.vstack([m.hashvalues for m in datasketch_bulk(docs)])
        ),
        "xxh32": np.array_equal(
            ours("xxh32")(docs), np.vstack([m.hashvalues for m in datasketch_bulk_xxh32(docs)])
        ),
    }


def first_call_in_fresh_processes() -> dict[str, dict[str, float]]:
    """JIT cost with an empty numba cache, then in a second process that finds it filled."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        runs = {}
        for label in ("cold_cache", "warm_cache"):
            proc = subprocess.run(
                [sys.executable, "-c", FIRST_CALL],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            runs[label] = {k: round(v, 3) for k, v in json.loads(proc.stdout).items()}
    return runs


def machine_versions() -> dict[str, object]:
    return machine(
        numpy=np.__version__,
        numba=numba.__version__,
        datasketch=datasketch.__version__,
        xxhash=xxhash.VERSION,
    )


def print_table(results: dict[str, float]) -> None:
    sha1, xxh = results["tailguard_sha1"], results["tailguard_xxh32"]
    print(f"{'method':<26}{'docs/s':>10}{'ours sha1 vs':>14}{'ours xxh32 vs':>15}")
    for name, rate in results.items():
        print(f"{name:<26}{rate:>10,.0f}{sha1 / rate:>13.2f}x{xxh / rate:>14.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k documents, one pass")
    parser.add_argument("--docs", type=int, help="number of documents (default 10000, quick 2000)")
    args = parser.parse_args()
    n_docs = args.docs or (2000 if args.quick else 10_000)
    repeats = 1 if args.quick else 3

    corpus, text = corpus_text()
    docs = windows(text, n_docs)
    n_shingles = sum(len(shingles(d, NGRAM)) for d in docs)
    print(
        f"corpus: {corpus}; {len(docs)} documents of ~{WINDOW} characters, "
        f"{n_shingles / len(docs):.0f} shingles each; num_perm={NUM_PERM}, ngram={NGRAM}"
    )

    jit = first_call_in_fresh_processes()
    print(
        f"fresh process, empty numba cache: import {jit['cold_cache']['import_s']:.2f} s, "
        f"first call {jit['cold_cache']['first_call_s']:.2f} s (numba import, JIT compile)"
    )
    print(
        f"second process, cache filled:     import {jit['warm_cache']['import_s']:.2f} s, "
        f"first call {jit['warm_cache']['first_call_s']:.3f} s (numba import, cached kernels)"
    )

    for hash_name in ("sha1", "xxh32"):
        ours(hash_name)(docs[:2])  # warm up in this process too
    equal = signatures_equal(docs)
    print(
        f"signatures equal to datasketch's on all {len(docs)} documents: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in equal.items())
    )
    if not all(equal.values()):
        sys.exit("signatures differ from datasketch's: the benchmark is void")

    slow_docs = docs[:SLOW_DOCS]
    results = {
        "tailguard_sha1": best_rate(ours("sha1"), docs, repeats),
        "tailguard_xxh32": best_rate(ours("xxh32"), docs, repeats),
        "datasketch_update": best_rate(datasketch_update, slow_docs, 1),
        "datasketch_update_batch": best_rate(datasketch_update_batch, docs, repeats),
        "datasketch_bulk": best_rate(datasketch_bulk, docs, repeats),
        "datasketch_bulk_xxh32": best_rate(datasketch_bulk_xxh32, docs, repeats),
    }
    print()
    print_table(results)

    sha1, xxh = results["tailguard_sha1"], results["tailguard_xxh32"]
    report = {
        "benchmark": "minhash",
        "unit": "docs/s",
        "results": {k: round(v, 1) for k, v in results.items()},
        "speedup": {
            "vs_datasketch_bulk": round(sha1 / results["datasketch_bulk"], 2),
            "xxh32_vs_datasketch_bulk": round(xxh / results["datasketch_bulk"], 2),
            "xxh32_vs_datasketch_bulk_xxh32": round(xxh / results["datasketch_bulk_xxh32"], 2),
            "vs_datasketch_update_batch": round(sha1 / results["datasketch_update_batch"], 2),
            "vs_datasketch_update": round(sha1 / results["datasketch_update"], 2),
        },
        "params": {
            "corpus": corpus,
            "n_docs": len(docs),
            "n_docs_datasketch_update": len(slow_docs),
            "window_chars": WINDOW,
            "shingles_per_doc": round(n_shingles / len(docs), 1),
            "num_perm": NUM_PERM,
            "ngram": NGRAM,
            "seed": SEED,
            "scheme": "affine32",
            "repeats": repeats,
            "threads": 1,  # the kernel is serial: ratios are per core
            "quick": args.quick,
            "signatures_equal_datasketch": equal,
            "jit_first_call": jit,
        },
        "machine": machine_versions(),
    }
    print()
    write_result(RESULT, report)


if __name__ == "__main__":
    main()
