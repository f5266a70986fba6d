"""The paper's GMM recursion per chain-generation: tailguard's batched EM against scikit-learn.

Shumailov et al. fit a 2-component full-covariance Gaussian mixture in 2-D to 1000 samples, draw
1000 samples from the fit, refit, and so on; their code is a Python loop of
``GaussianMixture(...).fit(x)`` and ``.sample(1000)`` per chain and generation. Measured here:

* tailguard: C chains at once, ``fit_gmm`` (float32, k-means++ init, tol 1e-5, max_iter 2000) +
  ``sample_gmm`` for G generations; best of ``--repeats`` runs, with torch's default number of
  threads and again with one thread (per-core comparison);
* scikit-learn: the authors' loop over chains and generations (``GaussianMixture(2,
  covariance_type="full", tol=1e-5, max_iter=2000, random_state=...)``, default k-means init,
  float64 data as numpy draws them), in a subprocess with BLAS and OpenMP pinned to one thread,
  its fastest setting on 2 x 2 problems (its default threading is measured too, on a few chains);
  each chain's loop is run twice and its best time kept. The loop's cost per chain-generation
  does not depend on how many chains it covers, so one loop over 64 chains gives both figures:
  ``sklearn_32`` from its first 32 chains, ``sklearn_256`` from all 64 (scaled linearly);
* equality: from the same data and initial parameters, in float64, both fit the same parameters
  (max abs difference over weights, means and covariances; iteration counts compared).

The truth is the ``gmm`` family's default: weights 0.7 / 0.3, means (-2, 0) and (2, 0), unit
covariances.

    python benchmarks/bench_gmm.py                  # 32 and 256 chains, 100 generations
    python benchmarks/bench_gmm.py --quick          # 10 generations, scikit-learn on 16 chains

Timings are wall-clock on a shared machine: the 1-minute load average at the start and the end
goes into the JSON, since other processes slow torch's two threads far more than one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

RESULT = ROOT / "benchmarks" / "results" / "bench_gmm.json"
WEIGHTS = (0.7, 0.3)
MEANS = ((-2.0, 0.0), (2.0, 0.0))
N, K, D = 1000, 2, 2
TOL, MAX_ITER = 1e-5, 2000
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------------
# scikit-learn, in its own process (thread settings must precede numpy's import)


def sklearn_chain(chain: int, generations: int) -> tuple[float, float]:
    """One chain of the authors' loop: seconds and mean EM iterations per fit."""
    from sklearn.mixture import GaussianMixture

    x = truth_numpy(np.random.default_rng(chain))
    start, n_iter = time.perf_counter(), 0
    for generation in range(1, generations + 1):
        gm = GaussianMixture(K, covariance_type="full", tol=TOL, max_iter=MAX_ITER,
                             random_state=chain * 100_003 + generation).fit(x)
        x = gm.sample(N)[0]
        n_iter += gm.n_iter_
    return time.perf_counter() - start, n_iter / generations


def sklearn_worker(chains: int, generations: int, repeats: int, out: Path) -> None:
    """Every chain ``repeats`` times (identical work), its best time kept; writes JSON."""
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    seconds, iterations = [], []
    for chain in range(chains):
        runs = [sklearn_chain(chain, generations) for _ in range(repeats)]
        seconds.append(min(r[0] for r in runs))
        iterations.append(runs[0][1])
    out.write_text(json.dumps({"seconds": seconds, "em_iterations": iterations}))


def truth_numpy(rng: np.random.Generator) -> np.ndarray:
    labels = rng.choice(K, size=N, p=WEIGHTS)
    return np.asarray(MEANS)[labels] + rng.standard_normal((N, D))


def run_sklearn(chains: int, generations: int, repeats: int,
                pinned: bool = True) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if pinned:
        env.update(ONE_THREAD)
    else:
        for name in ONE_THREAD:
            env.pop(name, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sklearn.json"
        subprocess.run(
            [sys.executable, __file__, "--sklearn-worker", str(chains), str(generations),
             str(repeats), str(out)], env=env, cwd=ROOT, check=True,
        )
        return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------
# tailguard


def truth(chains: int, device: str, dtype):
    import torch

    from collapse_eval.gmm_em import GMMParams

    return GMMParams(
        torch.tensor(WEIGHTS, dtype=dtype, device=device).expand(chains, -1),
        torch.tensor(MEANS, dtype=dtype, device=device).expand(chains, -1, -1),
        torch.eye(D, dtype=dtype, device=device).expand(chains, K, -1, -1),
    )


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def recursion(x, rng, generations: int, device: str):
    """Fit, sample, repeat; returns the last data and the mean EM iterations per fit."""
    import torch

    from collapse_eval.gmm_em import fit_gmm, sample_gmm

    iterations = []
    for generation in range(1, generations + 1):
        fit = fit_gmm(x, K, rng=rng, generation=generation, tol=TOL, max_iter=MAX_ITER)
        iterations.append(fit.n_iter)
        x = sample_gmm(fit.params, N, rng, generation)
    synchronize(device)
    return x, float(torch.stack(iterations).double().mean())


def run_tailguard(chains: int, generations: int, device: str, repeats: int,
                  threads: int | None = None) -> tuple[float, float, object]:
    """Best seconds over ``repeats`` runs of the whole recursion, EM iterations, last data."""
    import torch

    from collapse_eval.gmm_em import sample_gmm
    from collapse_eval.rng import ChainRandom

    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rng = ChainRandom(range(chains), device)
        x0 = sample_gmm(truth(chains, device, torch.float32), N, rng, 0, stream="original")
        recursion(x0, rng, 2, device)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            last, iterations = recursion(x0, rng, generations, device)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(default_threads)
    return best, iterations, last


# ------------------------------------------------------------------------------------------------
# Same start, same fit


def equality(x, label: str) -> dict[str, object]:
    """Both EMs from the same float64 data and initial parameters: parameter and n_iter match."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from collapse_eval.gmm_em import fit_gmm
    from collapse_eval.rng import ChainRandom

    x = x.double().cpu()
    rng = ChainRandom(range(x.shape[0]))
    start = fit_gmm(x, K, rng=rng, generation=10**6, max_iter=0).params
    ours = fit_gmm(x, K, init=start, tol=TOL, max_iter=MAX_ITER)
    diff, same_iter = 0.0, True
    for c in range(x.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = GaussianMixture(
                K, covariance_type="full", tol=TOL, max_iter=MAX_ITER,
                weights_init=start.weights[c].numpy(), means_init=start.means[c].numpy(),
                precisions_init=np.linalg.inv(start.covariances[c].numpy()),
            ).fit(x[c].numpy())
        got = (ours.params.weights[c], ours.params.means[c], ours.params.covariances[c])
        want = (ref.weights_, ref.means_, ref.covariances_)
        diff = max(diff, *(float(np.abs(g.numpy() - w).max()) for g, w in zip(got, want,
                                                                             strict=True)))
        same_iter &= int(ours.n_iter[c]) == ref.n_iter_
    return {"data": label, "chains": x.shape[0], "max_abs_diff": diff,
            "n_iter_equal": bool(same_iter), "mean_n_iter": float(ours.n_iter.double().mean())}


# ------------------------------------------------------------------------------------------------
# Report


def measure_tailguard(chain_counts: list[int], generations: int, device: str,
                      repeats: int) -> tuple[list[dict], object]:
    rows, last = [], None
    for chains in chain_counts:
        seconds, iterations, last = run_tailguard(chains, generations, device, repeats)
        seconds_1t, _, _ = run_tailguard(chains, generations, device, repeats, threads=1)
        per = 1e3 / (chains * generations)  # seconds -> ms per chain-generation
        rows.append({"chains": chains, "ours": seconds * per, "ours_1t": seconds_1t * per,
                     "em_iterations": iterations})
        print(f"  tailguard {chains} chains: {seconds:.2f} s ({seconds_1t:.2f} s on 1 thread), "
              f"{iterations:.1f} EM iterations per fit")
    return rows, last


def measure_sklearn(rows: list[dict], settings: dict) -> dict[str, float]:
    """Adds ``sklearn`` (ms per chain-generation) to each row; returns the run's summary."""
    chains, generations = settings["sklearn_chains"], settings["generations"]
    repeats = settings["sklearn_repeats"]
    sk = run_sklearn(chains, generations, repeats)
    seconds = np.asarray(sk["seconds"])
    for row in rows:
        row["sklearn"] = 1e3 * float(seconds[: row["chains"]].mean()) / generations
    # with its default threading, only a glimpse: it is slow
    default_chains, default_generations = settings["sklearn_default"]
    default = run_sklearn(default_chains, default_generations, 1, pinned=False)
    summary = {
        "em_iterations": float(np.mean(sk["em_iterations"])),
        "default_threads_ms": 1e3 * float(np.mean(default["seconds"])) / default_generations,
    }
    print(f"  sklearn: {seconds.sum():.1f} s for {chains} chains (best of {repeats} per chain), "
          f"{summary['em_iterations']:.1f} EM iterations per fit; with its default threading "
          f"{summary['default_threads_ms']:.2f} ms per chain-generation")
    return summary


def print_table(rows: list[dict[str, float]], sk_chains: int, sk_generations: int) -> None:
    print(f"{'chains':>7}{'tailguard':>12}{'1 thread':>11}{'sklearn':>10}{'speedup':>10}"
          f"{'(1 thread)':>12}   ms per chain-generation")
    for r in rows:
        print(f"{r['chains']:>7}{r['ours']:>12.4f}{r['ours_1t']:>11.4f}{r['sklearn']:>10.3f}"
              f"{r['sklearn'] / r['ours']:>9.1f}x{r['sklearn'] / r['ours_1t']:>11.1f}x")
    print(f"sklearn: a one-thread loop over {sk_chains} chains x {sk_generations} generations; "
          "a row with more chains uses its mean per chain-generation (scaled linearly: the "
          "loop's cost per chain-generation does not depend on the chain count)")


def report(args: argparse.Namespace, rows: list[dict], sk: dict[str, float], checks: list[dict],
           settings: dict) -> dict:
    import sklearn
    import torch

    results, speedup = {}, {}
    for r in rows:
        c = r["chains"]
        results[f"tailguard_{c}"] = round(r["ours"], 5)
        results[f"sklearn_{c}"] = round(r["sklearn"], 4)
        results[f"tailguard_{c}_1thread"] = round(r["ours_1t"], 5)
        speedup[f"vs_sklearn_{c}"] = round(r["sklearn"] / r["ours"], 2)
        speedup[f"1thread_vs_sklearn_{c}"] = round(r["sklearn"] / r["ours_1t"], 2)
    results["sklearn_default_threads"] = round(sk["default_threads_ms"], 4)
    generations, sk_chains = settings["generations"], settings["sklearn_chains"]
    return {
        "benchmark": "gmm",
        "unit": "ms per chain-generation",
        "results": results,
        "speedup": speedup,
        "params": {
            "generations": generations, "samples": N, "components": K, "dims": D,
            "truth": {"weights": WEIGHTS, "means": MEANS, "covariances": "identity"},
            "tailguard": {"dtype": "float32", "init": "kmeans++", "tol": TOL,
                          "max_iter": MAX_ITER, "repeats": settings["repeats"], "kept": "best",
                          "torch_threads": settings["threads"]},
            "sklearn": {
                "dtype": "float64", "init": "kmeans (default)", "tol": TOL, "max_iter": MAX_ITER,
                "threads": 1, "chains_measured": sk_chains, "generations_measured": generations,
                "repeats_per_chain": settings["sklearn_repeats"], "kept": "best per chain",
                "scaling": f"sklearn_C = mean per chain-generation over the first "
                           f"min(C, {sk_chains}) chains (the loop's cost per chain-generation "
                           "does not depend on C)",
                "default_threads_measured_on": "{} chains x {} generations".format(
                    *settings["sklearn_default"]),
            },
            "em_iterations_per_fit": {
                **{f"tailguard_{r['chains']}": round(r["em_iterations"], 2) for r in rows},
                "sklearn": round(sk["em_iterations"], 2),
            },
            "same_start_same_fit": checks,
            "load_average_1min": settings["load"],
            "quick": args.quick,
        },
        "machine": machine(device=settings["device"], torch=torch.__version__,
                           sklearn=sklearn.__version__, numpy=np.__version__,
                           torch_threads=settings["threads"]),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 generations, sklearn 16 chains")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--chains", default="32,256", help="comma-separated chain counts")
    parser.add_argument("--generations", type=int, help="default 100 (quick: 10)")
    parser.add_argument("--repeats", type=int, help="tailguard runs, best kept (default 3)")
    parser.add_argument("--sklearn-chains", type=int,
                        help="chains in the sklearn loop (default 64; quick: 16)")
    parser.add_argument("--sklearn-worker", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.sklearn_worker:
        chains, generations, repeats, out = args.sklearn_worker
        sklearn_worker(int(chains), int(generations), int(repeats), Path(out))
        return

    import torch

    from provenance.errors import TailguardWarning

    warnings.simplefilter("ignore", TailguardWarning)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chain_counts = sorted(int(c) for c in args.chains.split(","))
    settings = {
        "device": device, "threads": torch.get_num_threads(),
        "generations": args.generations or (10 if args.quick else 100),
        "repeats": args.repeats or (1 if args.quick else 3),
        "sklearn_chains": args.sklearn_chains or (16 if args.quick else 64),
        "sklearn_repeats": 1 if args.quick else 2,
        "sklearn_default": (2, 3) if args.quick else (4, 5),
        "load": {"start": round(os.getloadavg()[0], 2)},
    }
    generations = settings["generations"]
    print(f"GMM recursion: k={K}, d={D}, n={N}, {generations} generations; device {device}, "
          f"torch threads {settings['threads']}")

    rows, last = measure_tailguard(chain_counts, generations, device, settings["repeats"])
    sk = measure_sklearn(rows, settings)
    checks = [equality(last[:16], f"last generation of the {chain_counts[-1]}-chain run"),
              equality(truth_sample_64(16), "the truth (generation 0)")]
    for check in checks:
        print(f"  same start, same fit ({check['data']}, {check['chains']} chains, float64): "
              f"max abs diff {check['max_abs_diff']:.1e}, n_iter equal: {check['n_iter_equal']}")
    settings["load"]["end"] = round(os.getloadavg()[0], 2)
    print(f"  1-minute load average: {settings['load']['start']} at the start, "
          f"{settings['load']['end']} at the end (other processes distort timings)")
    print()
    print_table(rows, settings["sklearn_chains"], generations)
    print()
    write_result(RESULT, report(args, rows, sk, checks, settings))


def truth_sample_64(chains: int):
    import torch

    from collapse_eval.gmm_em import sample_gmm
    from collapse_eval.rng import ChainRandom

    return sample_gmm(truth(chains, "cpu", torch.float64), N, ChainRandom(range(chains)), 0)


if __name__ == "__main__":
    main()
