"""Starting the worker processes of ``--jobs``: tailguard's fork server against plain spawn.

A collapse run with ``--jobs N`` (and ``tailguard bench``, whose families run at once) hands its
chains to worker processes. The obvious way to write that is a ``ProcessPoolExecutor`` with the
spawn context (a forked torch can deadlock): each worker is a fresh interpreter that imports
numpy, polars, torch and transformers' GPT-2 again before its first chain. tailguard's workers
(:func:`collapse_eval.process_pool.run_in_pool`) fork from a fork server that imported them once;
a collapse run starts that server before its shared generation 0, so the imports overlap work.

This times a pool of ``--workers`` processes, each building one small GPT-2 (what an LM chain
does first), three ways: spawn; tailguard's pool with the server started at that moment (a
process's first pool); and tailguard's pool once the server is up (a collapse run, whose server
started before generation 0, and every later pool of the process).

    python benchmarks/bench_worker_start.py
    python benchmarks/bench_worker_start.py --workers 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from collapse_eval.process_pool import run_in_pool, worker_context  # noqa: E402


def build_a_model(seed: int) -> int:
    """In a worker: what an LM chain does first, build its model (imports included)."""
    from collapse_eval.text.model import LMRecipe, new_model

    model = new_model(LMRecipe(vocab_size=512, n_embd=32, n_layer=1), seed=seed)
    return sum(p.numel() for p in model.parameters())


def spawned_pool(workers: int) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(build_a_model, range(workers)))
    return time.perf_counter() - start


def tailguard_pool(workers: int) -> float:
    start = time.perf_counter()
    run_in_pool(build_a_model, list(range(workers)), workers, failed=lambda k, error: error)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bench_worker_start.json")
    args = parser.parse_args()
    spawn_s = spawned_pool(args.workers)  # first: worker_context() starts the fork server
    first_s = tailguard_pool(args.workers)
    warm_s = tailguard_pool(args.workers)
    method = worker_context().get_start_method()
    print(f"{args.workers} workers, each building a small GPT-2 (tailguard's start method: "
          f"{method})")
    print(f"  spawn (the obvious pool)                 {spawn_s:6.2f} s")
    print(f"  tailguard, the process's first pool      {first_s:6.2f} s   "
          f"{spawn_s / first_s:.2f}x")
    print(f"  tailguard, fork server already started   {warm_s:6.2f} s   "
          f"{spawn_s / warm_s:.2f}x faster than spawn")
    write_result(args.output, {
        "benchmark": "bench_worker_start", "machine": machine(), "workers": args.workers,
        "start_method": method, "spawn_s": round(spawn_s, 2),
        "tailguard_first_pool_s": round(first_s, 2), "tailguard_warm_s": round(warm_s, 2),
        "speedup_warm": round(spawn_s / warm_s, 2),
        "command": "python benchmarks/bench_worker_start.py"})


if __name__ == "__main__":
    main()
