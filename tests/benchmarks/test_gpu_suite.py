"""The GPU suite (``benchmarks/gpu_suite.py``) dry-run on CPU, so that it cannot rot between the
rare runs on a GPU: the whole suite at toy size in a subprocess, as the device runs it, and its
machinery (a failing part, an exhausted budget, the CPU-vs-device comparison) in process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
sys.path.insert(0, str(SUITE.parent))

import gpu_suite  # noqa: E402

REQUIRED = {"benchmark", "unit", "results", "speedup", "params", "machine", "device", "status",
            "seconds", "headline"}


def _context(tmp_path: Path, seconds: float) -> gpu_suite.Context:
    return gpu_suite.Context(device="cpu", tiny=True, out=tmp_path, work=tmp_path,
                             deadline=time.monotonic() + seconds)


def _fine(ctx: gpu_suite.Context) -> gpu_suite.Measured:
    return gpu_suite.Measured(unit="things/s", headline="42 things/s", results={"things": 42})


@pytest.mark.slow  # ~50 s, most of it SmolLM2 on the CPU (pytest -m slow; CI runs it)
def test_the_tiny_dry_run_writes_every_part_and_a_summary(tmp_path: Path) -> None:
    """The device's command at toy size on the CPU: every part ok, its JSON complete."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", "--tiny", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = done.stdout[done.stdout.index("\nsummary: "):]
    assert "no part failed" in summary
    reports = {}
    for part in gpu_suite.PARTS:
        assert re.search(rf"^{part.name} +ok +\d+\.\d", summary, re.M), summary
        reports[part.name] = json.loads((tmp_path / f"{part.name}_cpu.json").read_text())
        report = reports[part.name]
        assert REQUIRED <= set(report), part.name
        assert report["device"] == "cpu" and report["status"] == "ok", report["headline"]
        assert report["params"]["tiny"] is True and report["benchmark"].endswith(part.name)
    assert reports["cuda_smoke"]["results"]["families_ran"] == 4
    assert reports["gmm_paper"]["results"]["sklearn_ms_per_chain_generation"] > 0
    assert reports["vae_paper"]["results"]["seconds_per_generation"] > 0
    lm = reports["lm"]["results"]
    assert {"gpt2_train_tokens_per_s", "gpt2_sample_tokens_per_s", "gpt2_watermarked_tokens_per_s",
            "gpt2_beam5_tokens_per_s", "smollm2_finetune_tiny_tokens_per_s",
            "smollm2_beam5_tokens_per_s"} <= set(lm)
    assert reports["detect"]["results"]["best_docs_per_s"] > 0
    assert "torch " in done.stdout and "found: " in done.stdout  # what the machine has


def test_a_part_that_raises_is_failed_and_the_others_still_run(tmp_path: Path, capsys) -> None:
    def broken(ctx: gpu_suite.Context) -> gpu_suite.Measured:
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    def disagrees(ctx: gpu_suite.Context) -> gpu_suite.Measured:
        measured = _fine(ctx)
        measured.problems.append("gmm: w2_sample out of tolerance")
        return measured

    parts = [gpu_suite.Part("broken", 5, 5, broken), gpu_suite.Part("checks", 5, 5, disagrees),
             gpu_suite.Part("fine", 5, 5, _fine)]
    ctx = _context(tmp_path, 100)
    outcomes = gpu_suite.run_suite(parts, ctx, 100)
    assert [o.status for o in outcomes] == ["failed", "failed", "ok"]
    assert outcomes[0].headline == ("RuntimeError: CUDA error: an illegal memory access was "
                                    "encountered")
    assert outcomes[1].headline == "1 check(s) failed: gmm: w2_sample out of tolerance"
    assert gpu_suite.exit_code(outcomes) == 1
    report = json.loads((tmp_path / "broken_cpu.json").read_text())
    assert report["status"] == "failed" and report["error"] == outcomes[0].headline
    assert REQUIRED <= set(report)
    assert json.loads((tmp_path / "fine_cpu.json").read_text())["results"] == {"things": 42}
    gpu_suite.print_summary(outcomes, ctx, 100, 3.0)
    out = capsys.readouterr().out
    assert re.search(r"^broken +failed .*RuntimeError: CUDA error", out, re.M)
    assert re.search(r"^fine +ok .*42 things/s$", out, re.M)
    assert "2 part(s) failed: broken, checks" in out


def test_a_part_over_budget_is_skipped_with_a_line(tmp_path: Path, capsys) -> None:
    ran = []
    parts = [gpu_suite.Part("big", 50, 50, lambda ctx: ran.append(ctx) or _fine(ctx)),
             gpu_suite.Part("small", 5, 5, _fine)]
    outcomes = gpu_suite.run_suite(parts, _context(tmp_path, 20), 20)
    assert not ran and [o.status for o in outcomes] == ["skipped", "ok"]
    assert re.search(r"^\[big\] skipped: its budget is 50 s and (19|20) s of the 20 s remain$",
                     capsys.readouterr().out, re.M)
    assert json.loads((tmp_path / "big_cpu.json").read_text())["status"] == "skipped"
    assert gpu_suite.exit_code(outcomes) == 0  # the budget decided; nothing failed
    # inside a part, a step that would overrun is left out with a line, and noted in its JSON
    ctx = _context(tmp_path, 10)
    assert ctx.fits(1.0, "a short step") and not ctx.fits(60.0, "a long step")
    assert ctx.notes == ["skipped a long step: needs about 60 s, 10 s left"]


def _results(values: dict[tuple[int, str], float]) -> pl.DataFrame:
    return pl.DataFrame([{"policy": "replace", "seed": 0, "generation": g, "metric": m,
                          "value": v} for (g, m), v in values.items()])


def test_device_metrics_are_judged_against_the_cpu_within_stated_tolerances() -> None:
    cpu = _results({(0, "loss"): 1.0, (0, "ratio"): float("nan"), (1, "loss"): 2.0,
                    (0, "tokens_per_s"): 10.0, (0, "count"): 5.0})
    near = _results({(0, "loss"): 1.0 + 1e-4, (0, "ratio"): float("nan"), (1, "loss"): 2.5,
                     (0, "tokens_per_s"): 99.0, (0, "count"): 6.0})
    tolerance = gpu_suite.Tolerance(1e-3, 0.0, "test", per_metric={"count": (0.0, 1.0)},
                                    judged="first", ignored=("tokens_per_s",))
    report = gpu_suite.compare_runs(cpu, near, tolerance)
    assert report["out_of_tolerance"] == [] and report["judged_rows"] == 3
    assert report["max_rel_diff"]["loss"] == pytest.approx(0.25)  # generation 1: shown, unjudged
    assert "tokens_per_s" not in report["max_abs_diff"]
    strict = gpu_suite.Tolerance(1e-5, 0.0, "test", ignored=("tokens_per_s",))
    failures = gpu_suite.compare_runs(cpu, near, strict)["out_of_tolerance"]
    assert len(failures) == 3 and failures[0].startswith("count (policy replace, seed 0, "
                                                         "generation 0): cpu 5, device 6")
    missing = gpu_suite.compare_runs(cpu, near.filter(pl.col("metric") != "count"), tolerance)
    assert missing["missing_rows"] == 1


def test_the_stand_in_has_smollm2s_shape() -> None:
    """Where tailguard has converted SmolLM2-135M, its config is the stand-in's shape (else the
    device run checks it when it loads the real model)."""
    from provenance.models import cache_dir

    config = cache_dir() / "models" / "SmolLM2-135M-Instruct" / "config.json"
    if not config.exists():
        pytest.skip("SmolLM2-135M has not been converted on this machine")
    real = json.loads(config.read_text())
    assert {k: real.get(k) for k in gpu_suite.SMOLLM2_135M_SHAPE} == gpu_suite.SMOLLM2_135M_SHAPE
