"""Language-model tokens per second on CPU: our training loop and sampler against transformers'.

Everything runs on the default corpus (the Wikipedia sample shipped with gensim, 4,096-token
byte-level BPE, blocks of 64 tokens) with the default 0.93M-parameter GPT-2 recipe, in one run:

* **training**: :func:`collapse_eval.text.model.train_lm` against ``transformers.Trainer`` with
  the same model initialisation, batches of 8 x 64 tokens, AdamW settings, warm-up + cosine
  schedule and clipping, for the same number of steps (wall time of the call, so set-up counts);
* **sampling**: :func:`collapse_eval.text.sampling.sample_continuations` against
  ``model.generate(do_sample=True)`` -- with its defaults (which sample from the top 50 tokens)
  and with ``top_k=0`` (plain sampling, what our default draws) -- continuing 8-token prompts
  from the training blocks by 56 tokens, 256 sequences per batch;
* **beam search**: :func:`collapse_eval.text.sampling.beam_generate` (``generate`` with 5 beams);
* **watermarked sampling**: ours with transformers' ``WatermarkLogitsProcessor`` (green lists
  cached, and as is) against ``generate(watermarking_config=...)``;
* **generation 0**: the full recipe (3 epochs, best epoch on validation data) -- its validation
  and test perplexity beside the unigram and bigram baselines (it must beat the bigram clearly)
  -- and the seconds one generation of a recursive run costs: training plus sampling a
  synthetic set the size of the training set.

Torch runs on ``--threads`` intra-op threads (1 by default: the ratios are per core, and on
shared cores more threads wait on each other). Training is also reported as model FLOP/s
(:mod:`collapse_eval.text.flops`: the FLOPs the model needs per token, not what a loop spends)
and, on a GPU whose peak is known (or given with ``--peak-tflops``), as model FLOPs utilisation.
On CUDA both loops train in mixed precision with ``--cuda-batch`` blocks per step, and results go
to ``bench_lm_cuda.json`` beside the CPU ones.

    python benchmarks/bench_lm.py                    # full (minutes)
    python benchmarks/bench_lm.py --quick            # smaller everything (under a minute)
    python benchmarks/bench_lm.py --device cuda      # on a GPU, with MFU
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import transformers
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)

from collapse_eval.text.data import load_text_corpus  # noqa: E402
from collapse_eval.text.flops import mfu, peak_flops, training_flops_per_token  # noqa: E402
from collapse_eval.text.model import (  # noqa: E402
    LMRecipe,
    new_model,
    perplexity,
    train_lm,
)
from collapse_eval.text.sampling import beam_generate, sample_continuations  # noqa: E402
from collapse_eval.text.text_metrics import ngram_baselines  # noqa: E402
from collapse_eval.text.tokenizer import encode_blocks, train_tokenizer  # noqa: E402
from provenance.devices import resolve_device, torch_threads  # noqa: E402
from provenance.errors import ConfigError  # noqa: E402
from provenance.watermark import WatermarkKey  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROMPT, NEW = 8, 56
SEED = 0


class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def trainer_seconds(blocks: torch.Tensor, recipe: LMRecipe, steps: int, device: str) -> float:
    """Wall time of ``Trainer.train()`` for ``steps`` steps of the recipe on a fresh model (on
    CUDA in the mixed precision ``train_lm`` uses there)."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    model = new_model(recipe, seed=SEED)
    cuda = device.startswith("cuda")
    bf16 = cuda and recipe.amp and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=recipe.batch_size_for(device),
            learning_rate=recipe.lr,
            adam_beta1=recipe.betas[0],
            adam_beta2=recipe.betas[1],
            weight_decay=recipe.weight_decay,
            warmup_steps=recipe.warmup_fraction,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": recipe.final_lr_fraction},
            max_grad_norm=recipe.grad_clip,
            max_steps=steps,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=not cuda,
            bf16=bf16,
            fp16=cuda and recipe.amp and not bf16,
            disable_tqdm=True,
            seed=SEED,
        )
        trainer = Trainer(model=model, args=args, train_dataset=_Blocks(blocks))
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        start = time.perf_counter()
        trainer.train()
        _sync(device)
        return time.perf_counter() - start


def ours_seconds(blocks: torch.Tensor, recipe: LMRecipe, steps: int, device: str) -> float:
    """Wall time of ``train_lm`` for ``steps`` steps (one epoch over ``steps`` batches)."""
    model = new_model(recipe, seed=SEED)
    subset = blocks[: steps * recipe.batch_size_for(device)]
    start = time.perf_counter()
    train_lm(model, subset, recipe=LMRecipe(**{**recipe.to_dict(), "epochs": 1}), seed=SEED,
             device=device)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: str) -> None:
    """Wait for the GPU's queued work, so that a wall time covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generate_rate(model, prompts: torch.Tensor, batch: int, **kwargs) -> float:
    """New tokens per second of ``model.generate(do_sample=True)`` over ``prompts``.

    ``generate`` stops a batch early when every row has produced the end-of-text token, so
    the tokens counted are the ones it returned, not the ones asked for.
    """
    device = next(model.parameters()).device
    start = time.perf_counter()
    tokens = 0
    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            ids = prompts[i : i + batch].to(device)
            torch.manual_seed(SEED + i)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 do_sample=True, max_new_tokens=NEW, pad_token_id=0, **kwargs)
            tokens += out[:, ids.shape[1] :].numel()
    _sync(str(device))
    return tokens / (time.perf_counter() - start)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller everything (< 1 minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda, cuda:N or auto (a GPU where there is one)")
    parser.add_argument("--cuda-batch", type=int, default=256,
                        help="blocks per training step on CUDA (256); the CPU keeps the recipe's 8")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak TFLOP/s for MFU, where the built-in table "
                             "does not know it")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.utils.logging.set_verbosity_error()
    try:
        device = resolve_device(args.device)
    except ConfigError as error:  # e.g. --device cuda where no GPU is visible: one line
        parser.error(str(error))

    with torch_threads(args.threads):
        report = run(args.quick, args.threads, device, args.cuda_batch, args.peak_tflops)
    write_result(RESULTS / ("bench_lm.json" if device == "cpu" else "bench_lm_cuda.json"),
                 report)


def run(quick: bool, threads: int, device: str = "cpu", cuda_batch: int = 256,
        peak_tflops: float | None = None) -> dict:
    recipe = LMRecipe(cuda_batch_size=cuda_batch)
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    t_data, corpus = timed(load_text_corpus)
    t_tok, tokenizer = timed(train_tokenizer, corpus.train, recipe.vocab_size)
    t_enc, blocks = timed(lambda: {s: encode_blocks(tokenizer, corpus.split(s), recipe.block)
                                   for s in ("train", "valid", "test")})
    train, valid, test = blocks["train"], blocks["valid"], blocks["test"]
    print(f"corpus {corpus.name}: {corpus.stats()['train']['bytes'] / 1e6:.2f} MB train, "
          f"{len(train):,} / {len(valid):,} / {len(test):,} blocks of {recipe.block} tokens "
          f"(load {t_data:.1f} s, tokenizer {t_tok:.1f} s, encode {t_enc:.1f} s); "
          f"torch threads {threads}, device {device_name}")
    t_base, base_valid = timed(ngram_baselines, train, valid, recipe.vocab_size)
    base_test = ngram_baselines(train, test, recipe.vocab_size)

    # --- training throughput, same steps -------------------------------------------------
    batch = recipe.batch_size_for(device)
    steps = min(80 if quick else 400, len(train) // batch)
    repeats = 1 if quick else 2
    tokens = steps * batch * recipe.block
    ours_seconds(train, recipe, 10, device)  # warm up both (first-call allocations, imports)
    trainer_seconds(train, recipe, 10, device)
    ours_runs, trainer_runs = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        ours_runs.append(ours_seconds(train, recipe, steps, device))
        trainer_runs.append(trainer_seconds(train, recipe, steps, device))
    ours_s, trainer_s = min(ours_runs), min(trainer_runs)
    train_rates = {"tailguard_train_lm": tokens / ours_s,
                   "transformers_trainer": tokens / trainer_s}
    flops_per_token = training_flops_per_token(new_model(recipe, seed=SEED).config, recipe.block)
    peak = peak_flops(device_name, peak_tflops)
    model_flops = {"training_flops_per_token": flops_per_token,
                   "peak_tflops": None if peak is None else peak / 1e12}
    print(f"\ntraining, {steps} steps of {batch}x{recipe.block} tokens "
          f"({flops_per_token / 1e6:.1f} MFLOP per token)")
    for name, rate in train_rates.items():
        achieved = rate * flops_per_token
        model_flops[f"{name}_tflops_per_s"] = round(achieved / 1e12, 4)
        model_flops[f"{name}_mfu"] = mfu(rate, flops_per_token, peak)
        shown = "" if peak is None else f", MFU {achieved / peak:.2%}"
        print(f"  {name:<28}{rate:>10,.0f} tokens/s, {achieved / 1e12:.3f} TFLOP/s{shown}")

    # --- generation 0: the full recipe -----------------------------------------------------
    gen0_recipe = recipe if not quick else LMRecipe(epochs=1)
    gen0_train = train if not quick else train[: len(train) // 16]
    model = new_model(gen0_recipe, seed=SEED)
    fit = train_lm(model, gen0_train, recipe=gen0_recipe, seed=SEED, valid_blocks=valid,
                   device=device)
    valid_ppl, test_ppl = fit.valid_perplexity, perplexity(model, test)
    print(f"\ngeneration 0 ({gen0_recipe.epochs} epochs on {len(gen0_train):,} blocks, "
          f"{fit.seconds:.0f} s, {fit.tokens_per_s:,.0f} tokens/s, best epoch {fit.best_epoch})")
    print(f"  {'':<10}{'model':>10}{'unigram':>10}{'bigram':>10}{'model/bigram':>14}")
    for name, ppl, base in (("valid", valid_ppl, base_valid), ("test", test_ppl, base_test)):
        print(f"  {name:<10}{ppl:>10.1f}{base['unigram_ppl']:>10.1f}{base['bigram_ppl']:>10.1f}"
              f"{ppl / base['bigram_ppl']:>14.2f}")

    # --- sampling throughput -----------------------------------------------------------------
    n_gen = 256 if quick else 2048
    prompts = train[:n_gen, :PROMPT]
    gen_tokens = n_gen * NEW
    sample_continuations(model, prompts[:8], 4, device=device)  # warm up
    t_ours = min(timed(sample_continuations, model, prompts, NEW, seed=SEED, device=device)[0]
                 for _ in range(repeats))
    t_ours_k50 = timed(sample_continuations, model, prompts, NEW, seed=SEED, top_k=50,
                       device=device)[0]
    gen_default = generate_rate(model, prompts, 256)
    gen_plain = generate_rate(model, prompts, 256, top_k=0)
    n_beam = 16 if quick else 128
    t_beam = timed(beam_generate, model, prompts[:n_beam], NEW, num_beams=5, batch_size=16,
                   device=device)[0]
    # With the watermark: our cached green lists, transformers' processor as is, and generate.
    key = WatermarkKey.generate("bench-lm", vocab_size=recipe.vocab_size, seed=1,
                                rng_device=device.split(":")[0])
    processor = key.generation_config().construct_processor(recipe.vocab_size, device)
    n_wm = 64 if quick else 512
    wm_tokens = n_wm * NEW
    t_wm = timed(sample_continuations, model, prompts[:n_wm], NEW, seed=SEED,
                 logits_processors=[processor], device=device)[0]
    t_wm_raw = timed(sample_continuations, model, prompts[:n_wm], NEW, seed=SEED,
                     logits_processors=[lambda ids, scores: processor(ids, scores)],
                     device=device)[0]
    gen_wm = generate_rate(model, prompts[:n_wm], 256, top_k=0,
                           watermarking_config=key.generation_config())
    sample_rates = {
        "tailguard_sample": gen_tokens / t_ours,
        "tailguard_sample_top_k_50": gen_tokens / t_ours_k50,
        "generate_defaults_top_k_50": gen_default,
        "generate_top_k_0": gen_plain,
        "beam_5_generate": n_beam * NEW / t_beam,
        "tailguard_sample_watermarked": wm_tokens / t_wm,
        "tailguard_sample_watermark_uncached": wm_tokens / t_wm_raw,
        "generate_watermarked_top_k_0": gen_wm,
    }
    print(f"\nsampling {n_gen:,} continuations of {NEW} tokens after {PROMPT}-token prompts "
          f"(batch 256); beam search on {n_beam}, watermarked on {n_wm}")
    for name, rate in sample_rates.items():
        print(f"  {name:<28}{rate:>10,.0f} tokens/s")

    # --- one generation of a recursive run ---------------------------------------------------
    synth_n = len(gen0_train)
    t_synth = timed(sample_continuations, model, gen0_train[:, :PROMPT], NEW, seed=SEED,
                    device=device)[0]
    per_generation = fit.seconds + t_synth
    print(f"\none generation: train {fit.seconds:.0f} s + sample {synth_n:,} sequences "
          f"{t_synth:.0f} s = {per_generation:.0f} s")

    speedup = {
        "vs_transformers_trainer": round(trainer_s / ours_s, 2),
        "sample_vs_generate_defaults": round(sample_rates["tailguard_sample_top_k_50"]
                                             / gen_default, 2),
        "sample_vs_generate_top_k_0": round(sample_rates["tailguard_sample"] / gen_plain, 2),
        "watermarked_sample_vs_generate": round(
            sample_rates["tailguard_sample_watermarked"] / gen_wm, 2),
        "watermark_cached_vs_uncached": round(t_wm_raw / t_wm, 2),
    }
    print("\nspeedups: " + ", ".join(f"{k} {v}x" for k, v in speedup.items()))
    return {
        "benchmark": "lm",
        "unit": "tokens/s",
        "results": {**{k: round(v, 1) for k, v in train_rates.items()},
                    **{k: round(v, 1) for k, v in sample_rates.items()}},
        "speedup": speedup,
        "device": device_name,
        "model_flops": model_flops,
        "generation_0": {
            "valid_perplexity": round(valid_ppl, 2),
            "test_perplexity": round(test_ppl, 2),
            "valid_unigram_ppl": round(base_valid["unigram_ppl"], 2),
            "valid_bigram_ppl": round(base_valid["bigram_ppl"], 2),
            "test_unigram_ppl": round(base_test["unigram_ppl"], 2),
            "test_bigram_ppl": round(base_test["bigram_ppl"], 2),
            "valid_vs_bigram": round(valid_ppl / base_valid["bigram_ppl"], 3),
            "test_vs_bigram": round(test_ppl / base_test["bigram_ppl"], 3),
            "best_epoch": fit.best_epoch,
            "train_seconds": round(fit.seconds, 1),
            "train_tokens_per_s": round(fit.tokens_per_s, 1),
            "history": fit.history,
        },
        "seconds_per_generation": {
            "train": round(fit.seconds, 1),
            "sample_synthetic_set": round(t_synth, 1),
            "synthetic_sequences": synth_n,
            "total": round(per_generation, 1),
        },
        "params": {
            "corpus": corpus.name,
            "train_blocks": len(train),
            "valid_blocks": len(valid),
            "test_blocks": len(test),
            "recipe": recipe.to_dict(),
            "gen0_recipe": gen0_recipe.to_dict(),
            "trainer_steps": steps,
            "train_batch": batch,
            "sample_sequences": n_gen,
            "beam_sequences": n_beam,
            "watermarked_sequences": n_wm,
            "prompt_tokens": PROMPT,
            "new_tokens": NEW,
            "sample_batch": 256,
            "repeats": repeats,
            "threads": threads,
            "baseline_seconds": round(t_base, 3),
            "quick": quick,
        },
        "machine": machine(
            torch=torch.__version__,
            transformers=transformers.__version__,
            numpy=np.__version__,
            load_average=[round(x, 2) for x in os.getloadavg()],
        ),
    }


if __name__ == "__main__":
    main()
