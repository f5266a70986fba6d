"""The supervised detector's head fit: one BLAS thread (tailguard) against the BLAS default.

``tailguard detect-train`` fits the head (:class:`provenance.detectors.supervised.MLPHead`,
five one-hidden-layer networks by L-BFGS, averaged) about a hundred times: the penalty chosen
across files, five out-of-fold fits, the cascade's held-out files, every group of the grouped
cross-validation. The obvious way to write it is scikit-learn's ``MLPClassifier`` as it comes,
whose matrix products use every core BLAS offers (``MLPHead.fit(..., blas_threads=None)``);
tailguard fits on one thread. This times both on inputs of
the shipped detector's shape (3,953 documents, 113 columns; synthetic values, so that it runs
without ``../shared``: L-BFGS runs its 300 iterations either way) and checks that the fitted
weights do not depend on the thread count.

    python benchmarks/bench_detect_head.py
    python benchmarks/bench_detect_head.py --repeat 5 --threads 2 4
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)
from threadpoolctl import threadpool_info, threadpool_limits

from provenance.detectors.document_features import feature_names  # noqa: E402
from provenance.detectors.supervised import MLPHead  # noqa: E402

ALPHA = 30.0  # the shipped detector's penalty


def inputs(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic head inputs with a label that needs the hidden layer."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(feature_names())))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=rows) > 0).astype(int)
    return x, y


def plain_fit(x: np.ndarray, y: np.ndarray) -> MLPHead:
    """The same fit on as many BLAS threads as the caller allows: scikit-learn as it comes."""
    return MLPHead.fit(x, y, alpha=ALPHA, blas_threads=None)


def best_of(repeat: int, fit: Callable[[], object]) -> float:
    """The fastest of ``repeat`` calls: the others lost time to whatever else ran."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3953)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="BLAS thread counts to time the plain fit with (default: all cores)")
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bench_detect_head.json")
    args = parser.parse_args()
    x, y = inputs(args.rows)
    MLPHead.fit(x[:200], y[:200], alpha=ALPHA)  # imports, first-call costs
    tailguard_s = best_of(args.repeat, lambda: MLPHead.fit(x, y, alpha=ALPHA))
    results = {"tailguard_one_thread_s": round(tailguard_s, 3)}
    print(f"{args.rows} x {x.shape[1]} inputs, best of {args.repeat}")
    print(f"  tailguard (one BLAS thread) {tailguard_s:7.2f} s")
    for threads in args.threads:
        with threadpool_limits(threads):
            plain_s = best_of(args.repeat, lambda: plain_fit(x, y))
        results[f"sklearn_{threads}_threads_s"] = round(plain_s, 3)
        results[f"speedup_vs_{threads}_threads"] = round(plain_s / tailguard_s, 2)
        print(f"  scikit-learn, {threads} BLAS threads {plain_s:7.2f} s"
              f"   tailguard {plain_s / tailguard_s:.2f}x faster")
    same = {}
    for threads in sorted({1, *args.threads}):
        with threadpool_limits(threads):
            same[threads] = MLPHead.fit(x, y, alpha=ALPHA).w1
    plain = {}
    for threads in sorted({1, *args.threads}):
        with threadpool_limits(threads):
            plain[threads] = plain_fit(x, y).w1
    results["tailguard_weights_equal_across_threads"] = all(
        np.array_equal(w, same[1]) for w in same.values())
    results["sklearn_weights_max_difference_across_threads"] = float(max(
        np.abs(w - plain[1]).max() for w in plain.values()))
    print(f"  weights equal across thread counts: tailguard "
          f"{results['tailguard_weights_equal_across_threads']}, scikit-learn max difference "
          f"{results['sklearn_weights_max_difference_across_threads']:.1e}")
    blas = [f"{i['internal_api']} {i.get('version', '?')}" for i in threadpool_info()]
    write_result(args.output, {
        "benchmark": "bench_detect_head", "unit": "seconds per head fit (best of repeats)",
        "results": results,
        "params": {"rows": args.rows, "columns": x.shape[1], "alpha": ALPHA,
                   "repeat": args.repeat, "threads": args.threads},
        "machine": machine(blas=blas)})


if __name__ == "__main__":
    main()
