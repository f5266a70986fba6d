"""Which head of the supervised detector transfers to a dataset it never saw?

Leave one ``../shared/data/detect`` file out; fit the token n-gram models and the stacked head
inputs on the other three once (as :class:`provenance.detectors.training.Trainer` does), then
fit heads that differ in one respect and score the held-out file:

* **columns**: all features (the shipped recipe), the language model's only, the token n-gram
  models' only, the per-document centre and spread only, no window extremes;
* **weights**: classes balanced (the shipped recipe) or every (input file, class) cell
  balanced, so that the largest file does not set the direction alone;
* **penalty**: the L2 ``alpha`` of the network (the shipped recipe picks 0.3 or 3 by
  leave-one-file-out inside the training files; here each is fixed, to compare like with like);
* **seeds**: one network, or the mean log-odds of five.

No threshold, no cascade: AUROC only, the number the head decides. A variant that wins here is a
candidate for :func:`provenance.detectors.train`, to be confirmed by
``bench_detect_lodo.py`` (which trains the whole recipe) before it ships. The held-out files are
the only ones there are, so a small gain here can be noise: compare the mean *and* each file.

Per-token statistics come from the token store (as ``bench_detect_lodo.py``): a few minutes
once it holds every document.

    python benchmarks/ablate_detect_head.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)
from bench_detect_lodo import DATA, labelled_table  # noqa: E402

from provenance.detectors.document_features import DOCUMENT, feature_names  # noqa: E402
from provenance.detectors.supervised import MLPHead  # noqa: E402
from provenance.detectors.training import Trainer  # noqa: E402
from provenance.evaluate import roc_auc  # noqa: E402

LM_SERIES = ("logp", "entropy", "var", "log_rank", "discrepancy")
NGRAM_SERIES = ("unigram", "bigram", "trigram", "logp_minus_trigram", "logp_minus_unigram")


def columns(keep: Callable[[str], bool]) -> np.ndarray:
    return np.array([i for i, name in enumerate(feature_names()) if keep(name)])


#: name -> (columns, alpha, balance cells by input file, seeds)
VARIANTS: dict[str, tuple[np.ndarray, float, bool, int]] = {
    "shipped_recipe_alpha3": (columns(lambda n: True), 3.0, False, 1),
    "lm_columns_only": (columns(lambda n: n.split(".")[0] in LM_SERIES or n in DOCUMENT),
                        3.0, False, 1),
    "ngram_columns_only": (columns(lambda n: n.split(".")[0] in NGRAM_SERIES
                                   or n == "log_tokens"), 3.0, False, 1),
    "centre_and_spread_only": (columns(lambda n: n.split(".")[-1] in ("mean", "std", "q50")
                                       or n in DOCUMENT), 3.0, False, 1),
    "no_window_extremes": (columns(lambda n: "window" not in n), 3.0, False, 1),
    "alpha10": (columns(lambda n: True), 10.0, False, 1),
    "five_seeds": (columns(lambda n: True), 3.0, False, 5),
    "file_balanced_alpha3": (columns(lambda n: True), 3.0, True, 1),
    "file_balanced_alpha10": (columns(lambda n: True), 10.0, True, 1),
    "file_balanced_alpha30": (columns(lambda n: True), 30.0, True, 1),
    "file_balanced_alpha10_five_seeds": (columns(lambda n: True), 10.0, True, 5),
}


def held_out_aurocs(name: str, data: Any, trainer: Trainer, scored: np.ndarray
                    ) -> dict[str, float]:
    """AUROC on file ``name`` of every variant, fitted on the other files."""
    y, files = data.y, data.groups["dataset"]
    test = np.flatnonzero((files == name) & scored)
    train = np.flatnonzero((files != name) & scored)
    inner = trainer.stacked_train(train)
    applied = trainer.apply(trainer.ngram_model(train), None, test)
    out = {}
    for variant, (cols, alpha, by_file, seeds) in VARIANTS.items():
        log_odds = np.mean([
            MLPHead.fit(inner.x[:, cols], y[train], alpha=alpha, seed=seed,
                        groups=files[train] if by_file else None).log_odds(applied.x[:, cols])
            for seed in range(seeds)], axis=0)
        out[variant] = round(float(roc_auc(y[test], log_odds)), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--max-tokens", type=int, default=128,
                        help="the scorer's token limit (the shipped detector's: 128)")
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "ablate_detect_head.json")
    args = parser.parse_args()
    start = time.perf_counter()
    files, data, table, trainer = labelled_table(args.data, args.max_tokens, "cpu")
    per_file = {}
    for path in files:
        t0 = time.perf_counter()
        per_file[path.stem] = held_out_aurocs(path.stem, data, trainer, table.scored)
        print(f"held out {path.stem} ({time.perf_counter() - t0:.0f} s)", flush=True)
    means = {v: round(float(np.mean([f[v] for f in per_file.values()])), 4) for v in VARIANTS}
    base = "shipped_recipe_alpha3"
    print(f"\n{'variant':<36}" + "".join(f"{n[:10]:>11}" for n in per_file) + f"{'mean':>8}"
          f"{'vs shipped':>12}")
    for variant in VARIANTS:
        print(f"{variant:<36}" + "".join(f"{f[variant]:>11.3f}" for f in per_file.values())
              + f"{means[variant]:>8.3f}{means[variant] - means[base]:>+12.3f}")
    write_result(args.output, {
        "benchmark": "ablate_detect_head", "unit": "AUROC on the held-out file",
        "results": per_file, "mean": means,
        "params": {"max_tokens": args.max_tokens, "hidden": 32,
                   "seconds": round(time.perf_counter() - start, 1)},
        "machine": machine()})


if __name__ == "__main__":
    main()
