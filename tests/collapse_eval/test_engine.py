"""One run code for every family: each of the four built-in families goes through
collapse_eval.engine.run_collapse with a tiny setting, is resumed after a cut, and gives the same
results with two worker processes as with one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from collapse_eval.engine import run_collapse, steps_done, total_steps
from collapse_eval.run_config import collapse_config

TINY_LM_RECIPE = {"vocab_size": 300, "n_positions": 32, "n_embd": 32, "n_layer": 1,
                  "n_head": 2, "block": 32, "batch_size": 16, "epochs": 1, "lr": 1e-2}
#: each family at a size that runs in seconds, with two policies (two chains at least)
TINY = {
    "gaussian": {"generations": 3, "seeds": 2, "samples": 20, "heldout": 50},
    "gmm": {"generations": 2, "seeds": 2, "samples": 200, "heldout": 200},
    "vae": {"generations": 1, "seeds": 1, "samples": 300, "heldout": 200,
            "family_options": {"width": 8, "steps": 20, "latent": 2, "classifier_epochs": 1,
                               "data": "sklearn-digits"}},
    "lm": {"generations": 2, "seeds": 1, "max_articles": 6, "max_train_docs": 200,
           "recipe": TINY_LM_RECIPE},
}
POLICIES = ("replace", "retain:0.5", "filter:oracle")


def _values(results: pl.DataFrame) -> pl.DataFrame:
    """What must not depend on how a run was scheduled (throughput is timing, not a result)."""
    return (results.filter(~pl.col("metric").str.ends_with("_per_s"))
            .sort("policy", "seed", "generation", "metric"))


#: the LM (~40 s) runs with the slow tests (pytest -m slow; CI runs it): the default suite
#: runs the LM loop through the same engine in tests/collapse_eval/text
FAMILIES = [pytest.param(f, marks=pytest.mark.slow) if f == "lm" else f for f in TINY]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_resumes_and_parallelises_through_one_engine(
        family: str, tmp_path: Path) -> None:
    config = collapse_config(family, {**TINY[family], "policies": POLICIES})
    options = {"device": "cpu", "progress": False, "plots": False, "threads": 1}

    whole = run_collapse(config, tmp_path / "one", **options)
    assert whole.resumed_generations == 0
    assert steps_done(tmp_path / "one", config) == total_steps(config)
    assert set(whole.results.get_column("policy")) == set(POLICIES)
    assert whole.results.get_column("generation").max() == config.generations
    info = json.loads((tmp_path / "one" / "run.json").read_text())
    assert info["family"] == family and info["threads"]["requested"] == 1
    data, lines = whole.report()
    assert data["family"] == family and lines[0].startswith(f"{family}: 3 policies")

    # two worker processes: the same results
    parallel = run_collapse(config, tmp_path / "two", jobs=2, **options)
    assert _values(parallel.results).drop("run_id").equals(_values(whole.results).drop("run_id"))

    # cut a run short (its last generation's record of one chain gone) and resume it
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "one", cut)
    newest = sorted(p for p in cut.rglob("*") if p.name in ("metrics.json",)
                    or p.suffix == ".safetensors" and p.parent.parent.name == "checkpoints")
    removed = newest[-1]
    removed.unlink()
    assert steps_done(cut, config) == total_steps(config) - 1
    resumed = run_collapse(config, cut, resume=True, **options)
    assert resumed.resumed_generations == total_steps(config) - 1
    assert _values(resumed.results).equals(_values(whole.results))


def test_a_run_is_repeated_from_its_saved_config(tmp_path: Path) -> None:
    config = collapse_config("gaussian", {**TINY["gaussian"], "policies": ("replace",)})
    run_collapse(config, tmp_path / "a", device="cpu", progress=False, plots=False)
    again = collapse_config(None, {"seeds": 3}, tmp_path / "a" / "config.json")
    assert again.family == "gaussian" and again.seeds == (0, 1, 2)
    assert again.samples == config.samples and again.generations == config.generations
    lm = collapse_config("lm", {**TINY["lm"], "policies": ("replace",)})
    assert collapse_config(None, {}, _saved(lm, tmp_path / "lm.json")) == lm


def _saved(config: object, path: Path) -> Path:
    path.write_text(json.dumps(config.as_dict()))  # type: ignore[attr-defined]
    return path


def test_a_toml_config_with_flags_on_top(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('family = "gmm"\npolicies = ["replace", "accumulate"]\ngenerations = 4\n'
                    'seeds = 2\ncomponents = 3\n')
    config = collapse_config(None, {"generations": 6}, path)
    assert (config.family, config.policies, config.generations, config.seeds) == (
        "gmm", ("replace", "accumulate"), 6, (0, 1))
    assert config.family_options == {"components": 3}
    with pytest.raises(Exception, match="describes a gmm run, not vae"):
        collapse_config("vae", {}, path)
    path.write_text('family = "gmm"\nwidth = 3\n')
    with pytest.raises(Exception, match=r"width is not a setting of the gmm family \(settings: "):
        collapse_config(None, {}, path)
    path.write_text('family = "gmm"\ngenerations = [\n')
    with pytest.raises(Exception, match=r"run.toml.*invalid TOML"):
        collapse_config(None, {}, path)
