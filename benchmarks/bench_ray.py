"""`tag` and `mix` on Ray (1 and 2 local workers) vs the local engine, in one run.

The question a user has before moving to a cluster: what does the Ray engine cost on one
machine, and does a second worker help? Every configuration tags the same corpus against the
same ledger and builds the same mixture; the outputs are checked to be identical.

* tag: a crawl of prose-like documents (a word-trigram model on WikiText-2 from
  ``../shared/data`` when present, else standard-library docstrings; 25% verbatim and 25% lightly
  edited copies of ledger documents), written as parquet shards, tagged against a SQLite ledger;
* mix: parquet shards of short documents (human and synthetic folders), 30% synthetic.

Times are wall clock of the whole call (Ray: ledger snapshot, actor start, model and ledger
loading in every worker, the driver's writing), with Ray already running (its start-up is
reported apart); the engines take turns, ``--repeat`` times, and the table reports medians (the
machine may be shared: the load average is recorded). docs/s counts documents read.

    python benchmarks/bench_ray.py            # 48k documents to tag, 2M to mix
    python benchmarks/bench_ray.py --quick    # 8k to tag, 200k to mix
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from provenance.demo import TrigramModel, light_edit  # noqa: E402

WORDS = (80, 220)


def tag_corpus_files(folder: Path, n_ledger: int, n_crawl: int, shards: int) -> tuple[str, Path]:
    """The ledger and the crawl shards (see the module notes)."""
    import random

    from bench_tag import training_text

    from provenance.ledger import Ledger

    source, train = training_text()
    rng = random.Random(0)
    generated = TrigramModel().fit(train).sample(n_ledger, rng, words=WORDS)
    other = TrigramModel().fit(train[::-1]).sample(n_crawl - n_crawl // 2, random.Random(1),
                                                   words=WORDS)
    quarter = n_crawl // 4
    edited = [light_edit(t, rng, share=0.01) for t in generated[quarter: 2 * quarter]]
    crawl = generated[:quarter] + edited + other
    rng.shuffle(crawl)
    with Ledger(folder / "ledger.sqlite") as ledger:
        for start in range(0, n_ledger, 10_000):
            ledger.register(generated[start: start + 10_000], generator="bench")
    (folder / "crawl").mkdir()
    per = -(-n_crawl // shards)
    for s in range(shards):
        part = crawl[s * per: (s + 1) * per]
        pl.DataFrame({"id": [f"c{s}-{i}" for i in range(len(part))], "text": part}).write_parquet(
            folder / "crawl" / f"part-{s:03d}.parquet")
    return source, folder / "ledger.sqlite"


def mix_corpus_files(folder: Path, n: int, shards: int) -> None:
    """n short documents, 70% under human/, 30% under synthetic/, in ``shards`` files each."""
    n_syn = int(n * 0.3)
    for role, count, offset in (("human", n - n_syn, 0), ("synthetic", n_syn, n - n_syn)):
        (folder / role).mkdir(parents=True)
        per = -(-count // shards)
        for s in range(shards):
            start, stop = offset + s * per, offset + min(count, (s + 1) * per)
            pl.DataFrame({"i": pl.int_range(start, stop, eager=True)}).select(
                pl.format("doc-{}", "i").alias("id"),
                pl.format("a short {} document number {} with a few words", pl.lit(role),
                          "i").alias("text"),
            ).write_parquet(folder / role / f"part-{s:03d}.parquet")


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpora, one repeat")
    parser.add_argument("--repeat", type=int, default=None, help="runs per engine (default 3)")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    n_ledger, n_crawl, tag_shards = (4_000, 8_000, 4) if args.quick else (20_000, 48_000, 8)
    n_mix, mix_shards = (200_000, 4) if args.quick else (2_000_000, 8)
    target = n_mix // 5

    import ray

    from mixers.build import build_mixture
    from mixers.spec import MixtureSpec, Source
    from provenance.engines import RayEngine
    from provenance.tagger import tag_corpus

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        text_source, ledger = tag_corpus_files(root, n_ledger, n_crawl, tag_shards)
        mix_corpus_files(root / "mix", n_mix, mix_shards)
        print(f"corpora: {n_crawl:,} documents to tag in {tag_shards} shards ({n_ledger:,} in "
              f"the ledger, text from {text_source}), {n_mix:,} to mix in {2 * mix_shards} "
              f"shards ({time.perf_counter() - t0:.1f} s to generate)")

        init_s, _ = timed(ray.init, num_cpus=2, include_dashboard=False,
                          _temp_dir=tempfile.mkdtemp(prefix="tgray-", dir="/tmp"),
                          object_store_memory=512 * 1024**2, logging_level=logging.WARNING)
        engines = {"local": "local", "ray_1_worker": RayEngine(workers=1),
                   "ray_2_workers": RayEngine(workers=2)}
        spec = MixtureSpec(sources=(Source(str(root / "mix" / "human"), "human"),
                                    Source(str(root / "mix" / "synthetic"), "synthetic")),
                           target_docs=target, synthetic_ratio=0.3, seed=1)
        # Warm-up: numba's compiled kernels load from cache in every new worker process.
        tag_corpus(root / "crawl" / "part-000.parquet", root / "warm.parquet", ledger=ledger,
                   engine=RayEngine(workers=1))
        runs: dict[str, list[float]] = {}
        outputs: dict[str, pl.DataFrame] = {}
        for turn in range(repeat):
            for name, engine in engines.items():
                out = root / f"tagged-{name}.parquet"
                took, _ = timed(tag_corpus, root / "crawl", out, ledger=ledger, engine=engine)
                runs.setdefault(f"tag_{name}", []).append(took)
                outputs[f"tag_{name}"] = pl.read_parquet(out)
                mixed = root / f"mix-{name}-{turn}"
                took, _ = timed(build_mixture, spec, mixed, engine=engine)
                runs.setdefault(f"mix_{name}", []).append(took)
                outputs[f"mix_{name}"] = pl.read_parquet(sorted(mixed.glob("part-*.parquet")))
        ray.shutdown()
    seconds = {key: statistics.median(values) for key, values in runs.items()}
    load_after = os.getloadavg()

    for step in ("tag", "mix"):
        reference = outputs[f"{step}_local"]
        for name in engines:
            assert outputs[f"{step}_{name}"].equals(reference), f"{step} {name} differs"
    docs = {"tag": n_crawl, "mix": n_mix}
    results = {key: docs[key.split("_")[0]] / s for key, s in seconds.items()}
    speedup = {}
    for step in ("tag", "mix"):
        local = results[f"{step}_local"]
        speedup[f"{step}_ray_1_worker_vs_local"] = results[f"{step}_ray_1_worker"] / local
        speedup[f"{step}_ray_2_workers_vs_local"] = results[f"{step}_ray_2_workers"] / local
        speedup[f"{step}_ray_2_workers_vs_1"] = (results[f"{step}_ray_2_workers"]
                                                 / results[f"{step}_ray_1_worker"])
    print(f"\nray.init: {init_s:.1f} s (not counted below); outputs identical on every engine")
    print(f"{'step (median of ' + str(repeat) + ')':<24}{'seconds':>10}{'docs/s':>12}"
          f"{'vs local':>10}")
    for key, value in results.items():
        step = key.split("_")[0]
        print(f"{key:<24}{seconds[key]:>10.2f}{value:>12,.0f}"
              f"{value / results[f'{step}_local']:>10.2f}")
    overhead = {f"{step}_ray_{w}_overhead_s": round(seconds[f"{step}_ray_{w}"]
                                                    - seconds[f"{step}_local"], 2)
                for step in ("tag", "mix") for w in ("1_worker", "2_workers")}
    print("overhead vs local (s): " + ", ".join(f"{k} {v:+.2f}" for k, v in overhead.items()))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(the machine has {os.cpu_count()} cores)")

    write_result(ROOT / "benchmarks" / "results" / "bench_ray.json", {
        "benchmark": "ray",
        "unit": "docs/s",
        "results": {k: round(v, 1) for k, v in results.items()},
        "speedup": {k: round(v, 3) for k, v in speedup.items()},
        "params": {
            "tag_docs": n_crawl, "tag_shards": tag_shards, "ledger_docs": n_ledger,
            "text_source": text_source, "mix_docs": n_mix, "mix_shards": 2 * mix_shards,
            "mix_target": target, "ray_num_cpus": 2, "ray_init_s": round(init_s, 2),
            "median_seconds": {k: round(v, 2) for k, v in seconds.items()},
            "runs_seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            **overhead, "repeat": repeat, "identical_outputs": True, "quick": args.quick,
        },
        "machine": machine(load_average_before=[round(x, 2) for x in load_before],
                           load_average_after=[round(x, 2) for x in load_after]),
    })


if __name__ == "__main__":
    main()
