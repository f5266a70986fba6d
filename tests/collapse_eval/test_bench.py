"""The benchmark's plan: which families run what, and how the CLI reaches it (nothing is run
here; tests/collapse_eval/test_report.py runs every family through the benchmark)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import main
from collapse_eval.bench import FAMILIES, SWEEP_FAMILIES, bench_plan, sweep_policies
from collapse_eval.loop import CollapseConfig
from collapse_eval.text.loop import LMCollapseConfig
from provenance.errors import ConfigError

ANCHORS = {"replace", "retain:0.1", "scrape", "filter:oracle"}


def _plan(**kwargs) -> dict:
    return {part.family: part for part in bench_plan(**kwargs)}


def test_every_family_is_in_the_quick_plan_with_the_policies_that_tell_the_story() -> None:
    plan = _plan(quick=True)
    assert tuple(plan) == FAMILIES == ("gaussian", "gmm", "vae", "lm")
    for family, part in plan.items():
        assert ANCHORS <= set(part.config.policies), family
        assert isinstance(part.config, LMCollapseConfig if family == "lm" else CollapseConfig)
        assert part.folder == family and part.skipped == ()
    assert {"filter:watermark", "filter:ledger"} <= set(plan["lm"].config.policies)
    assert set(sweep_policies()) <= set(plan["gaussian"].config.policies)
    assert SWEEP_FAMILIES == ("gaussian",)
    vae, lm = plan["vae"].config, plan["lm"].config
    assert len(vae.policies) == 4 and vae.generations <= 3 and len(vae.seeds) <= 2
    assert vae.family_options["width"] < 64  # a narrower VAE than the paper's
    assert lm.generations <= 3 and len(lm.seeds) <= 2 and lm.max_train_docs == 4000


def test_the_full_plan_runs_each_family_at_its_defaults() -> None:
    plan = _plan()
    lm = plan["lm"].config
    defaults = LMCollapseConfig()
    assert (lm.policies, lm.generations, lm.recipe, lm.max_train_docs) == (
        defaults.policies, defaults.generations, defaults.recipe, defaults.max_train_docs)
    vae = plan["vae"].config
    assert vae.family_options == {} and vae.samples == 4000
    assert "filter:noisy(tpr=0.9,fpr=0.05)" in vae.policies


def test_policies_that_do_not_apply_to_a_family_are_skipped_for_it() -> None:
    asked = ["replace", "filter:noisy(tpr=0.9,fpr=0.05)", "filter:watermark"]
    plan = _plan(quick=True, families=["gmm", "lm"], policies=asked, seeds=3, generations=2)
    assert plan["lm"].skipped == ("filter:noisy(tpr=0.9,fpr=0.05)",)
    assert plan["lm"].config.policies == ("replace", "filter:watermark", "scrape",
                                          "filter:oracle")
    assert plan["gmm"].skipped == ("filter:watermark",)
    assert plan["gmm"].config.policies == ("replace", "filter:noisy(tpr=0.9,fpr=0.05)",
                                           "scrape", "filter:oracle")
    for part in plan.values():
        assert len(part.config.seeds) == 3 and part.config.generations == 2


@pytest.mark.parametrize("families", [[], ["gaussian", "bert"]])
def test_unknown_or_no_families_are_an_error(families: list[str]) -> None:
    with pytest.raises(ConfigError, match="family|families"):
        bench_plan(families=families)


def test_the_command_lists_the_four_families_and_rejects_an_unknown_one(tmp_path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["bench", "--help"]).output
    assert "gaussian,gmm,vae,lm" in help_text and "skipped" in help_text
    result = runner.invoke(main, ["bench", "--families", "gaussian,bert", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "unknown families: bert" in result.output
