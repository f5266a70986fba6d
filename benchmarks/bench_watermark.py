"""Watermark detection quality and speed with a real model: SmolLM2-135M, generated here.

The model writes watermarked continuations (transformers' green-list watermark, tailguard's key)
of the first sentence of real paragraphs, and tailguard's detector scores them together with
human text it never saw: WikiText-2 articles and the human documents of the detection sets in
``../shared/data`` when present, standard-library docstrings otherwise. Reported: the detection
rate of watermarked text and the false positive rate on human text at the z = 4 level, their
z-score distributions, and detection throughput in tokens/s for tailguard (batches of 32), for
tailguard one text at a time, and for transformers' ``WatermarkDetector`` called on each text
(the loop one writes without tailguard). Generation time is reported separately.

    python benchmarks/bench_watermark.py            # 200 watermarked, 2,000 human texts
    python benchmarks/bench_watermark.py --quick    # 30 watermarked, 200 human texts

Generation runs on the CPU with one torch thread by default: on a small machine shared with
other work, two threads that compete for the same cores made generation up to 15x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from provenance.demo import stdlib_paragraphs  # noqa: E402
from provenance.models import load_causal_lm  # noqa: E402
from provenance.watermark import (  # noqa: E402
    WatermarkKey,
    WatermarkScorer,
    generate_watermarked,
    normal_tail,
)

DATA = ROOT.parent / "shared" / "data"
Z = 4.0
PREFIX_LENGTHS = (64, 128)


def wikitext_paragraphs(name: str) -> list[str]:
    path = DATA / "wikitext-2" / name
    if not path.exists():
        return []
    lines = (ln.strip() for ln in path.read_text(encoding="utf-8").splitlines())
    return [ln for ln in lines if len(ln.split()) >= 40 and not ln.startswith("=")]


def detect_docs(label: str) -> list[str]:
    docs = []
    for path in sorted((DATA / "detect").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("label") == label and record.get("text", "").strip():
                docs.append(record["text"])
    return docs


def human_texts(n: int) -> tuple[str, list[str]]:
    """``n`` human texts: a quarter from the detection sets, the rest from WikiText-2 test."""
    detect = detect_docs("human")
    wiki = wikitext_paragraphs("test.txt")
    if detect or wiki:
        take = min(len(detect), n // 4)
        texts = detect[:take] + wiki[: n - take]
        source = "seqxgpt+binoculars human docs, wikitext-2 test"
    else:
        texts, source = stdlib_paragraphs()[:n], "stdlib docstrings"
    if len(texts) < n:
        print(f"note: only {len(texts)} human texts available (asked for {n})")
    return source, texts


def prompts(n: int) -> list[str]:
    """First sentences (at most 200 characters) of paragraphs disjoint from the human set."""
    paragraphs = wikitext_paragraphs("valid.txt") or stdlib_paragraphs()[::-1]
    out = []
    for p in paragraphs[:n]:
        first = p.split(" . ")[0].split(". ")[0]
        out.append(first[:200])
    return out


def z_stats(results) -> dict[str, float | None]:
    z = np.array([r.z_score for r in results if r.z_score is not None])
    if not len(z):
        return {"median": None, "p5": None, "p95": None, "min": None, "max": None}
    p5, p50, p95 = np.percentile(z, [5, 50, 95])
    return {"median": round(float(p50), 3), "p5": round(float(p5), 3),
            "p95": round(float(p95), 3), "min": round(float(z.min()), 3),
            "max": round(float(z.max()), 3)}


def rate(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def time_detection(key, tokenizer, texts: list[str]) -> dict[str, float]:
    """tokens/s of each way to detect, on the same texts, each with a cold start."""
    from transformers import PretrainedConfig, WatermarkDetector

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    n_tokens = sum(len(i) for i in ids)
    timings = {}
    for name, batch in (("tailguard_batched", 32), ("tailguard_one_at_a_time", 1)):
        scorer = WatermarkScorer(key, tokenizer, batch_size=batch)
        start = time.perf_counter()
        scorer.score(texts)
        timings[name] = n_tokens / (time.perf_counter() - start)
    detector = WatermarkDetector(
        PretrainedConfig(vocab_size=key.vocab_size, bos_token_id=tokenizer.bos_token_id),
        "cpu",
        key.generation_config(),
        ignore_repeated_ngrams=True,
    )
    import torch

    start = time.perf_counter()
    for text in texts:
        row = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(row) >= 2:
            detector(torch.tensor([row]), z_threshold=Z, return_dict=True)
    timings["one_at_a_time"] = n_tokens / (time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 watermarked, 200 human texts")
    parser.add_argument("--n-watermarked", type=int, default=None)
    parser.add_argument("--n-human", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens per generation")
    parser.add_argument("--bias", type=float, default=2.0, help="watermark bias (delta)")
    parser.add_argument("--gen-batch", type=int, default=25, help="generation batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for generation")
    parser.add_argument("--timing-texts", type=int, default=None,
                        help="human texts in the throughput comparison (default: up to 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_marked = args.n_watermarked or (30 if args.quick else 200)
    n_human = args.n_human or (200 if args.quick else 2000)

    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    lm = load_causal_lm(device="cpu")
    load_s = time.perf_counter() - t0
    key = WatermarkKey.generate(
        "smollm2-135m", vocab_size=lm.model.config.vocab_size, seed=args.seed + 2024,
        bias=args.bias,
    )
    source, humans = human_texts(n_human)
    prompt_texts = prompts(n_marked)
    print(f"model loaded in {load_s:.1f} s; generating {len(prompt_texts)} x {args.new_tokens} "
          f"tokens (batch {args.gen_batch}, {args.threads} thread(s), bias {args.bias})")

    t0 = time.perf_counter()
    generated = generate_watermarked(
        lm.model, lm.tokenizer, prompt_texts, key, max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens, seed=args.seed, batch_size=args.gen_batch,
    )
    gen_s = time.perf_counter() - t0
    gen_tokens = len(generated) * args.new_tokens
    print(f"generation: {gen_s:.0f} s, {gen_tokens / gen_s:.0f} tokens/s")

    scorer = WatermarkScorer(key, lm.tokenizer, z_threshold=Z)
    marked_results = scorer.score(generated)
    human_results = scorer.score(humans)
    tpr = rate([r.detected for r in marked_results])
    fpr = rate([r.detected for r in human_results])
    plain_z_tpr = rate([(r.z_score or 0) >= Z for r in marked_results])
    plain_z_fpr = rate([(r.z_score or 0) >= Z for r in human_results])

    # What counting repeated n-grams (transformers' default) would change, both ways.
    repeats = WatermarkScorer(key, lm.tokenizer, z_threshold=Z, ignore_repeated_ngrams=False)
    tpr_repeats = rate([r.detected for r in repeats.score(generated)])
    fpr_repeats = rate([r.detected for r in repeats.score(humans)])

    # Detection rate by length: the same generations cut to their first tokens.
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in generated]
    by_length = {
        str(n): rate([r.detected for r in scorer.score_token_ids([i[:n] for i in ids])])
        for n in PREFIX_LENGTHS
    }
    by_length[str(args.new_tokens)] = tpr

    others = detect_docs("machine") if not args.quick else []
    fpr_other_models = rate([r.detected for r in scorer.score(others)]) if others else None

    timing_texts = humans[: args.timing_texts or 400] + generated
    timings = time_detection(key, lm.tokenizer, timing_texts)
    speedup = {
        "vs_one_at_a_time": timings["tailguard_batched"] / timings["one_at_a_time"],
        "vs_tailguard_one_at_a_time": timings["tailguard_batched"]
        / timings["tailguard_one_at_a_time"],
    }

    z_marked, z_human = z_stats(marked_results), z_stats(human_results)
    print(f"\nwatermarked: {len(generated)} texts, detected {tpr:.3f} at z={Z:g} "
          f"(median z {z_marked['median']}, min {z_marked['min']})")
    print(f"human:       {len(humans)} texts ({source}), flagged {fpr:.4f} "
          f"(median z {z_human['median']}, max {z_human['max']})")
    print(f"detected by length (tokens): {by_length}")
    print(f"counting repeated n-grams: detected {tpr_repeats:.3f}, human flagged "
          f"{fpr_repeats:.4f}")
    if fpr_other_models is not None:
        print(f"unwatermarked text of other models ({len(others)}): flagged "
              f"{fpr_other_models:.4f}")
    print(f"\n{'detection':<28}{'tokens/s':>12}")
    for name, value in timings.items():
        print(f"{name:<28}{value:>12,.0f}")
    print(f"batched tailguard is {speedup['vs_one_at_a_time']:.1f}x transformers' detector "
          f"called per text, {speedup['vs_tailguard_one_at_a_time']:.2f}x tailguard per text")

    out = {
        "benchmark": "watermark",
        "unit": "tokens/s",
        "results": {k: round(v, 1) for k, v in timings.items()},
        "speedup": {k: round(v, 2) for k, v in speedup.items()},
        "params": {
            "model": "SmolLM2-135M-Instruct",
            "quick": args.quick,
            "z_threshold": Z,
            "nominal_fpr": normal_tail(Z),
            "decision": "exact binomial p <= P(Z >= 4), repeated n-grams scored once",
            "greenlist_ratio": key.greenlist_ratio,
            "bias": key.bias,
            "seeding_scheme": key.seeding_scheme,
            "context_width": key.context_width,
            "new_tokens": args.new_tokens,
            "n_watermarked": len(generated),
            "n_human": len(humans),
            "human_source": source,
            "tpr_at_z4": tpr,
            "fpr_at_z4": fpr,
            "tpr_plain_z_ge_4": plain_z_tpr,
            "fpr_plain_z_ge_4": plain_z_fpr,
            "tpr_by_new_tokens": by_length,
            "tpr_counting_repeats": tpr_repeats,
            "fpr_counting_repeats": fpr_repeats,
            "n_other_model_texts": len(others),
            "fpr_other_models_unwatermarked": fpr_other_models,
            "z_watermarked": z_marked,
            "z_human": z_human,
            "tokens_scored_median_watermarked": float(
                np.median([r.tokens_scored for r in marked_results])
            ),
            "generation_seconds": round(gen_s, 1),
            "generation_tokens_per_s": round(gen_tokens / gen_s, 1),
            "generation_batch": args.gen_batch,
            "timing_texts": len(timing_texts),
            "one_at_a_time_is": "transformers WatermarkDetector called per text "
            "(ignore_repeated_ngrams=True)",
        },
        "machine": machine(
            torch_threads=args.threads, load_average_at_start=load, torch=torch.__version__
        ),
    }
    write_result(ROOT / "benchmarks" / "results" / "bench_watermark.json", out)


if __name__ == "__main__":
    main()
