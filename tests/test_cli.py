"""CLI wiring and messages: exit codes, one-line errors, summaries, --json, help examples.

Behaviour is tested in the library tests; these check that each command reaches it and reports
what happened. Commands run in-process through click's runner, and one through the installed
console script, as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import click
import polars as pl
import pytest
from click.testing import CliRunner

from cli import main
from tests.loaded_modules import heavy_modules_loaded_by


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and group under ``group``, as the words that name it."""
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append([*prefix, name])
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
    return paths


COMMANDS = _command_paths(main)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def crawl(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"id": "a", "text": "the quick brown fox jumps over the lazy dog again"}),
        json.dumps({"id": "b", "text": "a generated sentence about tails and model collapse",
                    "is_synthetic": True}),
        '{"id": "c", "text": ',
        json.dumps({"id": "d", "text": "a human written note", "language_creators": ["found"]}),
    ]
    path = tmp_path / "crawl.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    assert "Example:" in out and "tailguard " in out
    examples = out.split("Example:")[1].split("Options:")[0]
    for line in examples.splitlines():  # a lone "\" in a docstring joins two example lines
        assert "   " not in line.strip(), line


def test_the_command_list_covers_the_collapse_commands() -> None:
    assert {"collapse run", "collapse status", "bench", "report", "ledger add"} <= {
        " ".join(c) for c in COMMANDS}


def test_help_loads_no_jit_and_no_model_library() -> None:
    """numba alone cost ``tailguard --help`` half a second (via the ledger's text normaliser)."""
    code = ("from click.testing import CliRunner\n"
            "from cli import main\n"
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0")
    heavy = ("numba", "torch", "transformers", "sklearn", "ray", "matplotlib")
    assert heavy_modules_loaded_by(code, heavy) == []


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("tailguard, version ")


def test_tag_summary_and_outputs(crawl: Path, tmp_path: Path) -> None:
    out = tmp_path / "tagged.parquet"
    code, stdout, _ = run("tag", str(crawl), "-o", str(out), "-q")
    assert code == 0, stdout
    assert "read 4 rows from 1 file(s): 3 kept, 1 rejected" in stdout
    assert "rejected malformed_json: 1" in stdout
    assert "declared" in stdout and "wrote 3 tagged rows" in stdout
    assert pl.read_parquet(out).height == 3
    assert (tmp_path / "tagged.parquet.rejects.jsonl").exists()


def test_tag_json_output_is_machine_readable(crawl: Path, tmp_path: Path) -> None:
    code, stdout, _ = run("tag", str(crawl), "-o", str(tmp_path / "t.jsonl"), "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["by_label"] == {"human": 1, "synthetic": 1, "unknown": 1}
    assert summary["read"] == summary["accepted"] + summary["rejected"] == 4


def test_tag_with_ledger_and_custom_declared_field(crawl: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    generated = tmp_path / "gen.jsonl"
    text = "the quick brown fox jumps over the lazy dog again"
    generated.write_text(json.dumps({"id": "g1", "text": text}) + "\n")
    assert run("ledger", "add", str(generated), "--ledger", str(ledger), "--generator", "m",
               "-q")[0] == 0
    code, stdout, _ = run("tag", str(crawl), "-o", str(tmp_path / "t.parquet"), "--ledger",
                          str(ledger), "--declared-field", "is_synthetic", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["by_evidence"] == {"declared": 1, "ledger_exact": 1, "none": 1}
    assert summary["unknown_by_evidence"] == {"none": {"no evidence reached it": 1}}


def test_strict_stops_with_one_line_and_exit_1(crawl: Path, tmp_path: Path) -> None:
    code, _, stderr = run("tag", str(crawl), "-o", str(tmp_path / "t.parquet"), "--strict")
    assert code == 1
    assert stderr.strip().count("\n") == 0
    assert "crawl.jsonl, line 3: malformed_json" in stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["tag", "missing.jsonl", "-o", "x.parquet"], 1, "missing.jsonl: no such file or folder"),
        (["tag", "{crawl}", "-o", "x.csv"], 1, "name the output .parquet, .jsonl or .jsonl.gz"),
        (["tag", "{crawl}", "-o", "x.parquet", "--ledger", "nope.sqlite"], 1, "no ledger at"),
        (["tag", "{crawl}"], 2, "Missing option '-o'"),
        (["tag", "{crawl}", "-o", "x.parquet", "--near-threshold", "1.5"], 2, "--near-threshold"),
        (["tag", "{crawl}", "-o", "x.parquet", "--declared-field", "label=robot:alien"], 2,
         "label must be one of human, synthetic, unknown"),
        (["ledger", "stats", "nope.sqlite"], 1, "no ledger at"),
        (["tag", "{crawl}", "-o", "x.parquet", "--estimate-prevalence"], 2,
         "--estimate-prevalence needs --detector"),
        (["ledger", "add", "{crawl}", "--ledger", "l.sqlite", "--generation", "-1"], 2,
         "--generation"),
    ],
)
def test_bad_input_gives_clear_errors(
    crawl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    got, _, stderr = run(*[a.replace("{crawl}", str(crawl)) for a in args])
    assert got == code
    assert message in stderr
    if code == 1:
        assert stderr.startswith("error: ") and stderr.strip().count("\n") == 0


def test_ledger_add_lookup_stats(crawl: Path, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l.sqlite")
    code, stdout, _ = run("ledger", "add", str(crawl), "--ledger", ledger, "--generator", "gpt",
                          "--generation", "1", "-q")
    assert code == 0 and "added 3 records" in stdout and "1 rejected" in stdout
    code, stdout, _ = run("ledger", "add", str(crawl), "--ledger", ledger, "--generator", "gpt",
                          "--generation", "1", "--json")
    assert json.loads(stdout)["already_present"] == 3
    out = tmp_path / "m.parquet"
    code, stdout, _ = run("ledger", "lookup", str(crawl), "--ledger", ledger, "-o", str(out), "-q")
    assert code == 0 and "exact" in stdout and "record " in stdout
    assert pl.read_parquet(out).get_column("match").to_list() == ["exact"] * 3
    code, stdout, _ = run("ledger", "stats", ledger, "--json")
    stats = json.loads(stdout)
    assert stats["records"] == 3 and stats["by_generator"] == {"gpt": 3}


def test_demo_runs_and_scores_against_truth(tmp_path: Path) -> None:
    code, stdout, _ = run("demo", "-o", str(tmp_path / "demo"), "--docs-per-kind", "20",
                          "--no-detector", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["tag"]["rejected"] == 5
    assert summary["confusion"]["human"].get("synthetic", 0) == 0


@pytest.mark.skipif(shutil.which("tailguard") is None, reason="console script not installed")
def test_installed_console_script(crawl: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["tailguard", "tag", str(crawl), "-o", str(tmp_path / "o.parquet"), "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 kept, 1 rejected" in proc.stdout


@pytest.mark.skipif(shutil.which("tailguard") is None, reason="console script not installed")
def test_a_tailguard_warning_prints_as_one_line(crawl: Path, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l.sqlite")
    assert run("ledger", "add", str(crawl), "--ledger", ledger, "-q")[0] == 0
    edited = tmp_path / "edited.jsonl"  # not an exact match: the near lookup runs, and warns
    edited.write_text(json.dumps({"id": "a2", "text": "the quick brown fox jumps over the "
                                  "lazy cat again"}) + "\n")
    proc = subprocess.run(  # the real command: what a shell shows, not pytest's warning capture
        ["tailguard", "ledger", "lookup", str(edited), "--ledger", ledger, "--threshold", "0.3",
         "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shown = [line for line in proc.stderr.splitlines() if "threshold 0.3" in line]
    assert shown == [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(shown) == 1 and shown[0].startswith("warning: near-match threshold 0.3 is below "
                                                   "the ledger's lsh_threshold 0.5")
    assert "TailguardWarning" not in proc.stderr and ".py:" not in proc.stderr


@pytest.fixture
def pools(tmp_path: Path) -> dict[str, Path]:
    human, gen = tmp_path / "human.parquet", tmp_path / "gen.parquet"
    pl.DataFrame({"id": [f"h{i}" for i in range(500)],
                  "text": [f"human {i}" for i in range(500)]}).write_parquet(human)
    pl.DataFrame({"id": [f"g{i}" for i in range(300)],
                  "text": [f"gen {i}" for i in range(300)]}).write_parquet(gen)
    return {"human": human, "gen": gen}


def test_mix_builds_and_summarises(pools: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mix"
    code, stdout, _ = run("mix", "--human", str(pools["human"]), "--synthetic", str(pools["gen"]),
                          "--target-docs", "200", "--synthetic-ratio", "0.25", "-o", str(out),
                          "-q")
    assert code == 0, stdout
    assert "synthetic share: requested 0.25, achieved 0.25" in stdout
    assert (out / "manifest.json").exists() and (out / "dataset_card.md").exists()


def test_mix_config_file_with_flag_overrides_and_dry_run(
    pools: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "spec.toml"
    config.write_text(
        "target_docs = 100\nsynthetic_ratio = 0.5\nseed = 3\n"
        f"[[sources]]\npath = '{pools['human']}'\nrole = 'human'\n"
        f"[[sources]]\npath = '{pools['gen']}'\nrole = 'synthetic'\n"
    )
    code, stdout, _ = run("mix", "--config", str(config), "--synthetic-ratio", "0.1",
                          "--dry-run", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["dry_run"] and summary["plan"]["pools"]["synthetic"]["requested"] == 10
    assert not list(tmp_path.glob("part-*"))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--target-docs", "10"], 2, "give -o/--output, or --dry-run"),
        (["--target-docs", "10", "--synthetic-ratio", "1.5", "--dry-run"], 2,
         "--synthetic-ratio"),
        (["--target-docs", "10", "--synthetic-ratio", "0.6", "--retain-original", "0.6",
          "--dry-run"], 1, "retain_original + synthetic_ratio must be <= 1"),
        (["--target-docs", "100000", "--dry-run"], 1, "--allow-upsample"),
        (["--dry-run"], 2, "give the mixture's size: --target-docs or --target-tokens"),
        (["--target-docs", "10", "--target-tokens", "99", "--dry-run"], 2, "--target-tokens"),
    ],
)
def test_mix_errors(pools: dict[str, Path], args: list[str], code: int, message: str) -> None:
    got, _, stderr = run("mix", "--human", str(pools["human"]), "--synthetic", str(pools["gen"]),
                         *args)
    assert got == code
    assert message in stderr


# ---- collapse run ------------------------------------------------------------------------------


def test_collapse_run_writes_results_plots_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "g"
    code, stdout, _ = run("collapse", "run", "gaussian", "--policy", "replace",
                          "--policy", "filter:noisy(tpr=0.9,fpr=0.01)", "--generations", "5",
                          "--seeds", "4", "--samples", "30", "-q", "-o", str(out))
    assert code == 0, stdout
    assert "gaussian: 2 policies x 4 seeds x 6 generations" in stdout
    assert "filter:noisy(tpr=0.9,fpr=0.01)" in stdout and "log_variance" in stdout
    results = pl.read_parquet(out / "results.parquet")
    assert results.columns == ["family", "policy", "seed", "generation", "metric", "value",
                               "run_id"]
    assert results.filter(pl.col("metric") == "variance").height == 2 * 4 * 6
    assert (out / "plots" / "variance.png").exists()
    code, stdout, _ = run("collapse", "run", "gaussian", "--policy", "replace",
                          "--policy", "filter:noisy(tpr=0.9,fpr=0.01)", "--generations", "5",
                          "--seeds", "4", "--samples", "30", "--resume", "--json",
                          "-o", str(out))
    report = json.loads(stdout)
    assert code == 0 and report["resumed_generations"] == 12 and report["rows"] == results.height


def test_collapse_run_usage_and_config_errors(tmp_path: Path) -> None:
    code, _, stderr = run("collapse", "run", "gmm", "--ddof", "0", "-o", str(tmp_path / "x"))
    assert code == 1 and "error: ddof applies to the gaussian family only" in stderr
    code, _, stderr = run("collapse", "run", "gaussian", "--data", "d.npz", "-o", str(tmp_path))
    assert code == 1 and "error: data applies to the vae family only" in stderr
    code, _, stderr = run("collapse", "run", "gaussian", "--policy", "retain:2",
                          "-o", str(tmp_path / "y"))
    assert code == 1 and "error: policy 'retain:2': the retained fraction must be in (0, 1]" in (
        stderr)
    code, _, stderr = run("collapse", "run", "gaussian", "--family-option", "skew=1",
                          "-o", str(tmp_path / "z"))
    assert code == 1 and "family gaussian:" in stderr and "skew" in stderr


# ---- --engine ray --------------------------------------------------------------------------------


def test_tag_and_mix_with_engine_ray(crawl: Path, pools: dict[str, Path], tmp_path: Path,
                                     ray_local) -> None:
    code, stdout, _ = run("tag", str(crawl), "-o", str(tmp_path / "ray.parquet"), "-q",
                          "--engine", "ray")
    assert code == 0, stdout
    assert "3 kept, 1 rejected" in stdout and "on Ray with 1 worker(s)" in stdout
    run("tag", str(crawl), "-o", str(tmp_path / "local.parquet"), "-q")
    assert pl.read_parquet(tmp_path / "ray.parquet").equals(
        pl.read_parquet(tmp_path / "local.parquet"))
    code, stdout, _ = run("mix", "--human", str(pools["human"]), "--synthetic", str(pools["gen"]),
                          "--target-docs", "200", "--synthetic-ratio", "0.25", "--engine", "ray",
                          "-o", str(tmp_path / "mix"), "-q")
    assert code == 0, stdout
    assert "synthetic share: requested 0.25, achieved 0.25" in stdout


@pytest.mark.parametrize("command", [["tag", "in.jsonl", "-o", "out.parquet"],
                                     ["mix", "--human", "h.parquet", "--target-docs", "1",
                                      "--dry-run"]])
def test_ray_address_needs_engine_ray(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x"}\n')
    pl.DataFrame({"id": ["a"], "text": ["x"]}).write_parquet(tmp_path / "h.parquet")
    args = [str(tmp_path / a) if a.endswith((".jsonl", ".parquet")) else a for a in command]
    code, _, stderr = run(*args, "--ray-address", "auto")
    assert code == 2 and "--ray-address needs --engine ray" in stderr
    code, _, stderr = run(*args, "--engine", "spark")
    assert code == 2 and "'spark' is not one of 'local', 'ray'" in stderr
