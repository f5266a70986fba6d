"""The LM loop's text metrics of one generation: joined n-gram codes against a per-document loop.

Every generation of the language-model recursion measures the text its model published
against the human training data (:func:`collapse_eval.text.generation_metrics.generation_metrics`:
rare bigram and trigram recall, distinct-1/2/3, unigram KL, vocabulary coverage). Each of
them starts from :func:`~collapse_eval.text.text_metrics.ngram_codes`, every n-gram as one
integer. The obvious way to write that is a loop over documents, a sliding window over each;
tailguard joins the documents and drops the windows that cross a join, in a few numpy calls.

This tokenizes the default corpus (the Wikipedia sample shipped with gensim) as the quick plan
does (``max_articles=20``, 4,000 training documents of 48 tokens, its 512-token BPE), takes the
human training documents as the reference and a shuffled copy of them as the "published" text,
and times the seven text metrics of one generation both ways (the same numbers, checked).

    python benchmarks/bench_text_metrics.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from collapse_eval.text import text_metrics  # noqa: E402
from collapse_eval.text.data import load_text_corpus  # noqa: E402
from collapse_eval.text.documents import chunk_documents, encode_documents  # noqa: E402
from collapse_eval.text.tokenizer import train_tokenizer  # noqa: E402


def per_document_codes(seqs: list[np.ndarray], n: int, base: int) -> np.ndarray:
    """The obvious alternative: a sliding window over each document, one after another."""
    parts = []
    for seq in seqs:
        if seq.size < n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(seq, n)
        code = windows[:, 0].copy()
        for j in range(1, n):
            code = code * base + windows[:, j]
        parts.append(code)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def metrics(human: list[np.ndarray], published: list[np.ndarray], vocab: int) -> list[float]:
    """The text metrics of one generation, as generation_metrics computes them."""
    tm = text_metrics
    return [tm.rare_ngram_recall(human, published, n=2),
            tm.rare_ngram_recall(human, published, n=3),
            tm.distinct_n(published, 1), tm.distinct_n(published, 2), tm.distinct_n(published, 3),
            tm.unigram_kl(human, published, vocab),
            tm.vocab_coverage(published, vocab, reference_ids=human)]


def timed(human: list[np.ndarray], published: list[np.ndarray], vocab: int, repeats: int
          ) -> tuple[float, list[float]]:
    best, values = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        values = metrics(human, published, vocab)
        best = min(best, time.perf_counter() - start)
    return best, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=4000, help="documents per generation")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--output", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bench_text_metrics.json")
    args = parser.parse_args()
    corpus = load_text_corpus(max_articles=20)
    tokenizer = train_tokenizer(corpus.train, 512)
    texts = chunk_documents(tokenizer, corpus.train, 48, prefix="train").get_column("text")
    human = encode_documents(tokenizer, texts.to_list()[: args.docs])
    published = [human[i] for i in np.random.default_rng(0).permutation(len(human))]
    vocab = len(tokenizer)

    ours_s, ours = timed(human, published, vocab, args.repeats)
    vectorised = text_metrics.ngram_codes
    text_metrics.ngram_codes = per_document_codes  # what every metric calls
    try:
        loop_s, loop = timed(human, published, vocab, args.repeats)
    finally:
        text_metrics.ngram_codes = vectorised
    if not np.allclose(ours, loop, equal_nan=True):
        raise SystemExit(f"the two ways disagree: {ours} vs {loop}")
    tokens = sum(len(d) for d in human)
    print(f"{len(human)} documents, {tokens} tokens, vocabulary {vocab}: seven text metrics of "
          f"one generation (best of {args.repeats})")
    print(f"  per-document loop       {loop_s:6.3f} s")
    print(f"  tailguard (joined)      {ours_s:6.3f} s   {loop_s / ours_s:.2f}x")
    write_result(args.output, {
        "benchmark": "bench_text_metrics", "machine": machine(), "unit": "seconds",
        "params": {"documents": len(human), "tokens": tokens, "vocab": vocab,
                   "repeats": args.repeats},
        "results": {"per_document_loop_s": round(loop_s, 4), "tailguard_s": round(ours_s, 4)},
        "speedup": {"tailguard_vs_per_document_loop": round(loop_s / ours_s, 2)},
        "command": "python benchmarks/bench_text_metrics.py"})


if __name__ == "__main__":
    main()
