"""Mixing at scale: tailguard's streaming build vs a straightforward pandas script, in one run.

Generates N documents as parquet shards (short texts with provenance columns; 70% in a human
folder, 30% in a synthetic folder), then builds a mixture of M documents with 30% synthetic:

* tailguard: ``build_mixture`` (two streaming passes, XXH64 keyed ranking, parquet shards);
* pandas: what a user would write — read everything, ``sample`` per class, concat, write — with
  the installed pandas' defaults (pandas 3 holds strings in Arrow arrays);
* pandas-object: the same script with Python-object strings, pandas 2's default (what the
  issue's prototype numbers, 11.3 s / 4.2 GB, were measured against);
* arrow-floor: ``pyarrow.parquet.read_table`` of every column, ``take`` and one write, no
  ranking and no streaming: the decode-and-write cost that any exact mix reading the whole
  corpus pays (a floor, not an alternative: its memory grows with the corpus).

Each runs in its own process; the parent reads that process's peak RSS and CPU time from
``os.wait4`` (its ``ru_maxrss``: interpreter, imports and data). Linux carries ``ru_maxrss``
across ``exec`` (a child started with ``vfork``, as ``subprocess`` does, starts from its
parent's high-water mark), so the parent stays small: the corpus is generated in a child of its
own too, and the parent never imports polars or pandas. The two alternate, each ``--repeat``
times, and the table and JSON report medians (the machine may be shared: every run, its CPU
time and the load average are kept in the JSON). Run at several corpus sizes to show that
tailguard's memory does not grow with the corpus.

    python benchmarks/bench_mix.py                 # 10M documents -> 2M mixture (and 5M -> 2M)
    python benchmarks/bench_mix.py --sizes 5000000 10000000 20000000
    python benchmarks/bench_mix.py --quick         # 1M -> 200k
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

SHARD_ROWS = 1_000_000


def generate(folder: Path, n: int) -> None:
    """Write n documents: 70% under human/, 30% under synthetic/, 1M rows a shard."""
    import polars as pl

    n_syn = int(n * 0.3)
    for role, count, offset in (("human", n - n_syn, 0), ("synthetic", n_syn, n - n_syn)):
        (folder / role).mkdir(parents=True, exist_ok=True)
        for start in range(0, count, SHARD_ROWS):
            rows = min(SHARD_ROWS, count - start)
            idx = pl.int_range(offset + start, offset + start + rows, eager=True)
            frame = pl.DataFrame({"i": idx}).select(
                pl.format("doc-{}", "i").alias("id"),
                pl.format("a short {} document number {} with a few words", pl.lit(role),
                          "i").alias("text"),
                pl.lit(role).alias("prov_label"),
                pl.lit(1.0 if role == "synthetic" else 0.0).alias("prov_score"),
                pl.lit("declared").alias("prov_evidence"),
            )
            frame.write_parquet(folder / role / f"part-{start // SHARD_ROWS:04d}.parquet")


def run_tailguard(data: Path, out: Path, target: int) -> dict:
    from mixers.build import build_mixture
    from mixers.spec import MixtureSpec, Source

    spec = MixtureSpec(
        sources=(Source(str(data / "human"), "human"), Source(str(data / "synthetic"),
                                                              "synthetic")),
        target_docs=target, synthetic_ratio=0.3, seed=1, shard_rows=500_000,
    )
    manifest = build_mixture(spec, out)
    return {"documents": manifest.achieved["documents"],
            "synthetic_share": manifest.achieved["synthetic_share"]}


def run_pandas(data: Path, out: Path, target: int, object_strings: bool = False) -> dict:
    import pandas as pd

    if object_strings:
        import warnings

        with warnings.catch_warnings():  # the option is deprecated, not gone, in pandas 3
            warnings.simplefilter("ignore")
            pd.set_option("future.infer_string", False)
    human = pd.read_parquet(data / "human")
    synthetic = pd.read_parquet(data / "synthetic")
    n_syn = int(target * 0.3)
    mixture = pd.concat([
        human.sample(n=target - n_syn, random_state=1),
        synthetic.sample(n=n_syn, random_state=1),
    ])
    out.mkdir(parents=True, exist_ok=True)
    mixture.to_parquet(out / "mixture.parquet", index=False)
    return {"documents": len(mixture), "synthetic_share": n_syn / len(mixture)}


def run_arrow_floor(data: Path, out: Path, target: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    n_syn = int(target * 0.3)
    tables = []
    for role, k in (("human", target - n_syn), ("synthetic", n_syn)):
        table = pq.read_table(data / role)
        tables.append(table.take(np.sort(rng.choice(table.num_rows, k, replace=False))))
        del table
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables(tables), out / "mixture.parquet", compression="zstd")
    return {"documents": target, "synthetic_share": n_syn / target}


RUNNERS = {
    "tailguard": run_tailguard,
    "pandas": run_pandas,
    "pandas-object": lambda data, out, target: run_pandas(data, out, target, object_strings=True),
    "arrow-floor": run_arrow_floor,
}


def generate_in_child(data: Path, n: int) -> None:
    """``generate`` in a process of its own, so the parent's peak RSS (which its children's
    ``ru_maxrss`` starts from) stays that of a bare interpreter."""
    subprocess.run([sys.executable, __file__, "--generate", str(n), "--data", str(data)],
                   check=True)


def child(args: argparse.Namespace) -> None:
    """Run one implementation (its imports included in the time) and print the result."""
    start = time.perf_counter()
    result = RUNNERS[args.child](Path(args.data), Path(args.out), args.target)
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result))


def measure(which: str, data: Path, out: Path, target: int) -> dict:
    """One run of ``which`` in a fresh process: its own timing, and its peak RSS and CPU time
    as the kernel accounts them for that process (``wait4``)."""
    cmd = [sys.executable, __file__, "--child", which, "--data", str(data), "--out", str(out),
           "--target", str(target)]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{which} failed:\n{stderr.read().decode()[-3000:]}")
        result = json.loads(stdout.read().decode().strip().splitlines()[-1])
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def summarise(runs: list[dict]) -> dict:
    """Medians of a list of runs of one implementation, with the runs themselves."""
    return {
        "documents": runs[0]["documents"],
        "synthetic_share": runs[0]["synthetic_share"],
        **{k: statistics.median(r[k] for r in runs)
           for k in ("seconds", "cpu_seconds", "peak_rss_mb")},
        "runs": [{k: round(r[k], 3) for k in ("seconds", "cpu_seconds", "peak_rss_mb")}
                 for r in runs],
    }


def print_table(n: int, runs: dict, repeat: int) -> None:
    """One corpus size: each implementation's time and memory, and ours relative to it."""
    ours = runs["tailguard"]
    print(f"  {n:,} documents -> mixture (medians of {repeat}):")
    for which in RUNNERS:
        r = runs[which]
        ratio = ("" if which == "tailguard" else
                 f"   tailguard: {r['seconds'] / ours['seconds']:5.2f}x faster, "
                 f"{ours['peak_rss_mb'] / r['peak_rss_mb']:.2f} of its memory")
        print(f"    {which:<14} {r['seconds']:6.2f} s {r['peak_rss_mb']:7.0f} MB{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="corpus sizes in documents (default 5M and 10M; --quick: 1M)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each implementation per corpus size (medians reported)")
    parser.add_argument("--child", choices=list(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(Path(args.data), args.generate)
        return
    if args.child:
        child(args)
        return

    sizes = args.sizes or ([1_000_000] if args.quick else [5_000_000, 10_000_000])
    target = 200_000 if args.quick else 2_000_000
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as tmp:
        for n in sizes:
            data = Path(tmp) / f"corpus-{n}"
            t0 = time.perf_counter()
            generate_in_child(data, n)
            print(f"generated {n:,} documents in {time.perf_counter() - t0:.1f} s")
            measured: dict[str, list[dict]] = {which: [] for which in RUNNERS}
            load_before = [round(x, 2) for x in os.getloadavg()]
            for r in range(args.repeat):
                for which in measured:
                    out = Path(tmp) / f"{which}-{n}-{r}"
                    measured[which].append(measure(which, data, out, target))
                    shutil.rmtree(out, ignore_errors=True)
            runs[n] = {which: summarise(r) for which, r in measured.items()}
            runs[n]["load_average"] = {"before": load_before,
                                       "after": [round(x, 2) for x in os.getloadavg()]}
            print_table(n, runs[n], args.repeat)
            shutil.rmtree(data)
    headline = runs[10_000_000 if 10_000_000 in runs else max(runs)]
    ours = headline["tailguard"]
    out = {
        "benchmark": "mix",
        "unit": "seconds",
        "results": {which: round(headline[which]["seconds"], 2) for which in RUNNERS},
        "speedup": {f"vs_{which.replace('-', '_')}": round(headline[which]["seconds"]
                                                          / ours["seconds"], 2)
                    for which in RUNNERS if which != "tailguard"},
        "peak_rss_mb": {which: round(headline[which]["peak_rss_mb"]) for which in RUNNERS},
        "memory_ratio": {f"vs_{which.replace('-', '_')}": round(
            ours["peak_rss_mb"] / headline[which]["peak_rss_mb"], 3)
            for which in RUNNERS if which != "tailguard"},
        "params": {"corpus_docs": headline, "mixture_docs": target, "synthetic_ratio": 0.3,
                   "hash": "xxh64", "quick": args.quick, "repeat": args.repeat,
                   "statistic": "median",
                   # The floor of every child's ru_maxrss (see the module's docstring).
                   "parent_peak_rss_mb": round(
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "by_corpus_size": {str(n): r for n, r in runs.items()}},
        "targets": {"speedup_vs_pandas": 4.0, "memory_ratio_vs_pandas": round(1 / 6, 3)},
        "machine": machine(load_average=[round(x, 2) for x in os.getloadavg()]),
    }
    write_result(ROOT / "benchmarks" / "results" / "bench_mix.json", out)


if __name__ == "__main__":
    main()
