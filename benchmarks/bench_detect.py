"""Detectors on real labelled data: zero-shot Fast-DetectGPT vs baselines, and batched speed.

For each ``../shared/data/detect/*.jsonl`` file (fields ``text``, ``label`` human|machine,
``generator``):

* **Fast-DetectGPT** with SmolLM2-135M (tailguard's offline default), zero-shot: nothing is
  fitted to these files. Target: AUROC >= 0.85 on each file.
* **mean log-likelihood** of the same model, from the same forward pass: the naive zero-shot
  baseline.
* **n-gram classifier** (hashed character n-grams + logistic regression), 5-fold stratified
  cross-validation on the same documents: the supervised baseline (out-of-fold scores).

AUROC and TPR at 1% FPR are reported per file. Speed: tailguard's batched scoring against the
obvious code a user would write (the reference implementation's loop, one text at a time, same
model, same truncation), both timed on the same documents; their criteria are compared too.

Texts are truncated to 256 tokens by default (``--max-tokens``): on 2 CPU cores SmolLM2 reads
about 400 tokens/s in float32, so the full run subsamples each file to at most 400 documents
(half human, machine text spread evenly over generators; ``--max-docs 0`` = all).

    python benchmarks/bench_detect.py             # <= 400 docs per file, ~8 min on 2 cores
    python benchmarks/bench_detect.py --quick     # 60 docs per file
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from provenance.detectors import (  # noqa: E402
    FastDetectGPT,
    NgramClassifier,
    fast_detectgpt_criterion,
)
from provenance.errors import TailguardWarning  # noqa: E402
from provenance.evaluate import roc_auc, tpr_at_fpr  # noqa: E402
from provenance.models import DEFAULT_MODEL, load_causal_lm  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "detect"
TARGET_AUROC = 0.85


def load_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def subsample(rows: list[dict[str, Any]], cap: int, seed: int = 0) -> list[dict[str, Any]]:
    """At most ``cap`` rows: half human, the machine half spread evenly over generators."""
    if cap <= 0 or len(rows) <= cap:
        return rows
    rng = random.Random(seed)
    human = [r for r in rows if r["label"] == "human"]
    by_generator: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["label"] != "human":
            by_generator[r["generator"]].append(r)
    n_human = min(len(human), cap // 2)
    picked = rng.sample(human, n_human)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_generator.items())]
    quota = cap - n_human
    while quota > 0 and any(pools):
        for pool in pools:
            if pool and quota > 0:
                picked.append(pool.pop())
                quota -= 1
    rng.shuffle(picked)
    return picked


def quality(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """AUROC and TPR at 1% FPR (``resolved`` False when there are < 100 human documents)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TailguardWarning)
        point = tpr_at_fpr(labels, scores, 0.01)
    return {
        "auroc": round(roc_auc(labels, scores), 4),
        "tpr_at_1pct_fpr": round(point.tpr, 4),
        "fpr_achieved": round(point.fpr, 4),
        "resolved": point.resolved,
    }


def per_generator_auroc(labels: np.ndarray, scores: np.ndarray, gens: list[str]) -> dict:
    human = scores[labels == 0]
    out = {}
    for g in sorted(set(gens) - {"human"}):
        pos = scores[(labels == 1) & (np.asarray(gens) == g)]
        y = np.r_[np.ones(len(pos)), np.zeros(len(human))]
        out[g] = round(roc_auc(y, np.r_[pos, human]), 4)
    return out


def one_at_a_time(lm, texts: list[str], max_tokens: int) -> list[float]:
    """The code a user would write from the paper's reference implementation."""
    import torch

    out = []
    for text in texts:
        enc = lm.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)
        enc = enc.to(lm.device)
        with torch.no_grad():
            logits = lm.model(**enc).logits[:, :-1].float()
        labels = enc["input_ids"][:, 1:]
        lprobs = torch.log_softmax(logits, dim=-1)
        probs = torch.softmax(logits, dim=-1)
        ll = lprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
        mean = (probs * lprobs).sum(-1)
        var = (probs * lprobs.square()).sum(-1) - mean.square()
        out.append(((ll - mean.sum(-1)) / var.sum(-1).sqrt()).item())
    return out


def timed_both(
    detector: FastDetectGPT, lm, texts: list[str], max_tokens: int, chunk: int
) -> tuple[np.ndarray, list[float], float, float]:
    """Both ways on the same texts, alternating chunk by chunk so that load from other
    processes on a shared machine falls on both alike."""
    ours, naive, ours_seconds, naive_seconds = [], [], 0.0, 0.0
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        sync(lm.device)
        t0 = time.perf_counter()
        ours.extend(detector.score(part))
        sync(lm.device)
        ours_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        naive.extend(one_at_a_time(lm, part, max_tokens))
        sync(lm.device)
        naive_seconds += time.perf_counter() - t0
    return np.array(ours), naive, ours_seconds, naive_seconds


def ngram_cv(texts: list[str], labels: np.ndarray, folds: int = 5) -> np.ndarray:
    """Out-of-fold n-gram classifier scores (stratified, seeded)."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.full(len(texts), np.nan)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in split.split(np.zeros(len(labels)), labels):
        clf = NgramClassifier(min_tokens=1).fit([texts[i] for i in train], labels[train])
        scores[test] = clf.score([texts[i] for i in test])
    return scores


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bench_file(path: Path, lm, args: argparse.Namespace) -> dict[str, Any]:
    rows = subsample(load_rows(path), 60 if args.quick else args.max_docs)
    texts = [r["text"] for r in rows]
    detector = FastDetectGPT(lm, batch_size=args.batch_size, max_tokens=args.max_tokens)

    sync(lm.device)
    t0 = time.perf_counter()
    terms, scores = detector.token_terms(texts)
    sync(lm.device)
    full_seconds = time.perf_counter() - t0
    ok = [i for i, t in enumerate(terms) if t is not None]
    labels = np.array([int(rows[i]["label"] != "human") for i in ok])
    gens = [rows[i]["generator"] for i in ok]
    fdg = np.array([fast_detectgpt_criterion(terms[i]) for i in ok])
    loglik = np.array([terms[i][:, 0].mean() for i in ok])
    ngram = ngram_cv([texts[i] for i in ok], labels)

    # Speed on the same documents both ways; a seeded subset keeps the naive loop affordable.
    timing = random.Random(1).sample(ok, min(len(ok), args.timing_docs))
    ours, naive, ours_seconds, naive_seconds = timed_both(
        detector, lm, [texts[i] for i in timing], args.max_tokens, chunk=2 * args.batch_size
    )

    return {
        "n_docs": len(rows),
        "n_human": int((labels == 0).sum()),
        "n_machine": int((labels == 1).sum()),
        "n_unscored": len(rows) - len(ok),
        "mean_tokens": round(float(np.mean(scores.n_tokens[ok])), 1),
        "fast_detectgpt": {
            **quality(labels, fdg),
            "per_generator_auroc": per_generator_auroc(labels, fdg, gens),
        },
        "loglik": quality(labels, loglik),
        "ngram_5fold": quality(labels, ngram),
        "full_pass_docs_per_s": round(len(rows) / full_seconds, 2),
        "timing_docs": len(timing),
        "timing_seconds": {"tailguard_batched": round(ours_seconds, 2),
                           "one_at_a_time": round(naive_seconds, 2)},
        "max_abs_diff_vs_one_at_a_time": float(np.max(np.abs(ours - np.array(naive)))),
    }


def machine_info(device: str) -> dict[str, Any]:
    import torch

    info = machine(
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        load_average_1min_at_end=round(os.getloadavg()[0], 2),
    )
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 documents per file")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), ...")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-docs", type=int, default=400, help="per file; 0 = all")
    parser.add_argument("--timing-docs", type=int, default=None,
                        help="documents per file timed both ways (default 30, quick 15)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bench_detect.json")
    args = parser.parse_args()
    args.timing_docs = args.timing_docs or (15 if args.quick else 30)
    files = sorted(args.data.glob("*.jsonl"))
    if not files:
        sys.exit(f"no *.jsonl files in {args.data}")

    start = time.perf_counter()
    lm = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    dtype = str(lm.model.dtype).removeprefix("torch.")
    print(f"{args.model} on {lm.device} ({dtype}), texts truncated to {args.max_tokens} tokens, "
          f"batch {args.batch_size}")
    FastDetectGPT(lm, max_tokens=32, min_tokens=2).score(["Warm-up: the first call pays for "
                                                          "kernel selection and allocation."])
    per_file = {}
    for path in files:
        t0 = time.perf_counter()
        per_file[path.stem] = bench_file(path, lm, args)
        print(f"  {path.stem}: {per_file[path.stem]['n_docs']} docs in "
              f"{time.perf_counter() - t0:.0f} s")

    ours = sum(f["timing_docs"] for f in per_file.values()) / sum(
        f["timing_seconds"]["tailguard_batched"] for f in per_file.values())
    naive = sum(f["timing_docs"] for f in per_file.values()) / sum(
        f["timing_seconds"]["one_at_a_time"] for f in per_file.values())
    print_table(per_file)
    print(f"\nspeed on the same {sum(f['timing_docs'] for f in per_file.values())} documents: "
          f"tailguard batched {ours:.2f} docs/s, one at a time {naive:.2f} docs/s "
          f"({ours / naive:.2f}x); criteria agree to "
          f"{max(f['max_abs_diff_vs_one_at_a_time'] for f in per_file.values()):.1e}")
    meets = {k: f["fast_detectgpt"]["auroc"] >= TARGET_AUROC for k, f in per_file.items()}
    print(f"Fast-DetectGPT AUROC >= {TARGET_AUROC} on each file: {meets}")

    out = {
        "benchmark": "detect",
        "unit": "docs/s",
        "results": {"tailguard_batched": round(ours, 3), "one_at_a_time": round(naive, 3)},
        "speedup": {"vs_one_at_a_time": round(ours / naive, 2)},
        "params": {
            "model": args.model,
            "device": lm.device,
            "dtype": dtype,
            "max_tokens": args.max_tokens,
            "batch_size": args.batch_size,
            "quick": args.quick,
            "max_docs_per_file": 60 if args.quick else args.max_docs,
            "target_auroc": TARGET_AUROC,
            "meets_target": meets,
            "files": per_file,
            "seconds": round(time.perf_counter() - start, 1),
        },
        "machine": machine_info(lm.device),
    }
    write_result(args.output, out)


def print_table(per_file: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'file':<20}{'method':<22}{'AUROC':>8}{'TPR@1%FPR':>11}  docs")
    for name, f in per_file.items():
        for key, label in (("fast_detectgpt", "fast-detectgpt"), ("loglik", "mean log-lik"),
                           ("ngram_5fold", "ngram (5-fold CV)")):
            q = f[key]
            tpr = f"{q['tpr_at_1pct_fpr']:.3f}" + ("" if q["resolved"] else "*")
            docs = f"{f['n_human']} human / {f['n_machine']} machine" if key == "loglik" else ""
            print(f"{name:<20}{label:<22}{q['auroc']:>8.3f}{tpr:>11}  {docs}")
        gens = f["fast_detectgpt"]["per_generator_auroc"]
        if len(gens) > 1:
            print(f"{'':<20}  per generator: " + ", ".join(f"{g} {v:.3f}" for g, v in gens.items()))
    if any(not f[k]["resolved"] for f in per_file.values() for k in ("loglik",)):
        print("* fewer than 100 human documents: 1% FPR is not resolved (threshold above all)")
    if any(math.isnan(f["max_abs_diff_vs_one_at_a_time"]) for f in per_file.values()):
        print("warning: a criterion differed (NaN) between batched and one-at-a-time")


if __name__ == "__main__":
    main()
