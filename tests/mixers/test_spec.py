"""MixtureSpec: every field's type and range, file formats, flags overriding files, hashing."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mixers.spec import (
    FIELD_RULES,
    MixtureSpec,
    Source,
    build_spec,
    load_spec_file,
    spec_from_mapping,
)
from provenance.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[2]
DF = pl.DataFrame({"id": ["1"], "text": ["x"]})
BOTH = (Source(DF, "human"), Source(DF, "synthetic"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"synthetic_ratio": 0.6, "retain_original": 0.5},
         "retain_original \\+ synthetic_ratio must be <= 1, got 0.5 \\+ 0.6 = 1.1"),
        ({"strategy": "replace", "retain_original": 0.1}, "use strategy retain"),
        ({"target_tokens": 100}, "give exactly one of target_docs and target_tokens"),
    ],
)
def test_rules_between_fields(kwargs: dict, message: str) -> None:
    base = {"sources": BOTH, "target_docs": 10}
    with pytest.raises(ConfigError, match=message):
        MixtureSpec(**{**base, **kwargs})


#: For every field: values of the wrong type (each refused with its type named) and values of the
#: right type out of range, with the words the message must hold.
WRONG = {
    "target_docs": ("a positive integer", ["100", 10.0, True], [0, -3]),
    "target_tokens": ("a positive integer", ["100", 10.5, False], [0]),
    "tokenizer": ("a non-empty string (whitespace or a tokenizer name)", [5, ["whitespace"]],
                  [""]),
    "synthetic_ratio": ("a number in [0, 1]", ["0.5", True, [0.5]], [1.4, -0.1, float("nan")]),
    "retain_original": ("a number in [0, 1]", ["0", None], [2.0]),
    "strategy": ("one of replace, retain, accumulate, filter, reweight", [3, ["retain"]],
                 ["shuffle"]),
    "drop_labels": ("a list of labels among human, synthetic, unknown", [5, [1], True],
                    [["robot"], ("synthetic", "bot")]),
    "max_score": ("a number in [0, 1]", ["0.5", False], [1.5, -1]),
    "reweight_power": ("a number > 0", ["2", True], [0, -1.0, float("inf")]),
    "dedup": ("one of none, exact, near", [False, 1], ["fuzzy"]),
    "dedup_threshold": ("a number in (0, 1)", [[0.5], "0.8"], [1.0, 0]),
    "allow_upsample": ("true or false", ["no", "false", 1, 0, None], []),
    "seed": ("an integer in [0, 2**64)", ["7", 1.0, True], [-1, 2**64]),
    "text_field": ("a non-empty string", [1, None], [""]),
    "id_field": ("a non-empty string", [["id"]], [""]),
    "shard_rows": ("a positive integer", ["1000", 1e5], [0]),
}
TYPE_WORDS = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
              list: "a list", tuple: "a list", type(None): "no value"}


def _cases(kind: int) -> list:
    return [pytest.param(name, value, id=f"{name}={value!r}")
            for name, rule in WRONG.items() for value in rule[kind]]


def test_every_field_has_a_rule_and_a_test() -> None:
    assert set(FIELD_RULES) == {f.name for f in fields(MixtureSpec)} - {"sources"}
    assert set(WRONG) == set(FIELD_RULES)


@pytest.mark.parametrize(("name", "value"), _cases(1))
def test_a_wrongly_typed_field_is_refused_naming_field_type_and_value(name: str,
                                                                       value: object) -> None:
    message = (f"field '{name}' must be {WRONG[name][0]}, got {value!r} "
               f"({TYPE_WORDS[type(value)]})")
    with pytest.raises(ConfigError) as caught:
        MixtureSpec(sources=BOTH, **{"target_docs": 10, name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize(("name", "value"), _cases(2))
def test_a_field_out_of_range_is_refused_naming_field_and_value(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        MixtureSpec(sources=BOTH, **{"target_docs": 10, name: value})
    assert str(caught.value) == f"field '{name}' must be {WRONG[name][0]}, got {value!r}"


@pytest.mark.parametrize(("name", "value"), [c for c in _cases(1) if c.values[1] is not None])
def test_a_spec_file_names_itself_in_the_error(tmp_path: Path, name: str, value: object) -> None:
    import json

    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"target_docs": 10, name: value}))
    with pytest.raises(ConfigError) as caught:
        build_spec(config=tmp_path / "spec.yaml", human=[DF], synthetic=[DF])
    assert str(caught.value).startswith(f"{tmp_path / 'spec.yaml'}: field '{name}' must be ")
    assert json.dumps(value) in str(caught.value) or repr(value) in str(caught.value)


def test_numpy_numbers_are_accepted_as_python_numbers() -> None:
    spec = MixtureSpec(sources=BOTH, target_docs=np.int64(10), synthetic_ratio=np.float32(0.5),
                       seed=np.uint64(3))
    assert type(spec.target_docs) is int and type(spec.synthetic_ratio) is float
    assert type(spec.seed) is int and spec.spec_hash()  # JSON-serialisable


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": 5, "role": "human"}, "field 'sources[0].path' must be a path (a string), "
                                       "got 5 (an integer)"),
        ({"path": "h.parquet", "role": "robot"}, "field 'sources[0].role' must be one of human, "
                                                 "synthetic, from-tags, got 'robot'"),
        ({"path": "h.parquet", "role": "human", "generation": "3"},
         "field 'sources[0].generation' must be an integer >= 0, got '3' (a string)"),
        ({"path": "h.parquet", "role": "human", "weight": 2},
         "sources[0]: unknown field(s) weight; valid fields are generation, name, path, role"),
    ],
)
def test_source_tables_are_checked_field_by_field(tmp_path: Path, source: dict,
                                                  message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        spec_from_mapping({"target_docs": 1, "sources": [source]}, origin="s.toml")
    assert str(caught.value) == f"s.toml: {message}"


ISSUE_EXAMPLES = [
    ('max_score = "0.5"', "field 'max_score' must be a number in [0, 1], got '0.5' (a string)"),
    ("drop_labels = 5", "field 'drop_labels' must be a list of labels among human, synthetic, "
                        "unknown, got 5 (an integer)"),
    ('reweight_power = "2"', "field 'reweight_power' must be a number > 0, got '2' (a string)"),
    ("dedup_threshold = [0.5]", "field 'dedup_threshold' must be a number in (0, 1), got [0.5] "
                                "(a list)"),
    ('allow_upsample = "no"', "field 'allow_upsample' must be true or false, got 'no' "
                              "(a string)"),
]


@pytest.mark.parametrize(("line", "message"), ISSUE_EXAMPLES)
def test_cli_mix_refuses_a_wrongly_typed_spec_field_in_one_line(
    tmp_path: Path, line: str, message: str
) -> None:
    """The issue's examples, through the real CLI: one line, exit 1, nothing written."""
    pl.DataFrame({"id": [str(i) for i in range(20)], "text": ["a b c"] * 20}).write_parquet(
        tmp_path / "human.parquet")
    (tmp_path / "spec.toml").write_text(
        f'target_docs = 70\n{line}\n[[sources]]\npath = "human.parquet"\nrole = "human"\n')
    done = subprocess.run(
        [sys.executable, "-m", "cli", "mix", "--config", "spec.toml", "-o", "mix"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: spec.toml: {message}\n"
    assert not (tmp_path / "mix").exists()


def test_sources_must_be_able_to_fill_the_shares() -> None:
    with pytest.raises(ConfigError, match="no source can provide synthetic documents"):
        MixtureSpec(sources=(Source(DF, "human"),), target_docs=5, synthetic_ratio=0.5)
    with pytest.raises(ConfigError, match="no human or tagged source"):
        MixtureSpec(sources=(Source(DF, "synthetic"),), target_docs=5, synthetic_ratio=0.5)
    with pytest.raises(ConfigError, match="at least one source"):
        MixtureSpec(sources=(), target_docs=5)
    with pytest.raises(ConfigError, match="source field 'role' must be one of human, synthetic"):
        Source(DF, "robot")


def test_missing_source_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.parquet: source does not exist"):
        MixtureSpec(sources=(Source(str(tmp_path / "nope.parquet"), "human"),), target_docs=1)


TOML = """
target_docs = 100
synthetic_ratio = 0.25
retain_original = 0.5
strategy = "retain"
seed = 4
[[sources]]
path = "human.parquet"
role = "human"
[[sources]]
path = "gen"
role = "synthetic"
name = "generation-3"
generation = 3
"""

YAML = """
target_docs: 100
synthetic_ratio: 0.25
retain_original: 0.5
strategy: retain
seed: 4
sources:
  - {path: human.parquet, role: human}
  - {path: gen, role: synthetic, name: generation-3, generation: 3}
"""


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    DF.write_parquet(tmp_path / "human.parquet")
    (tmp_path / "gen").mkdir()
    DF.write_parquet(tmp_path / "gen" / "a.parquet")
    (tmp_path / "spec.toml").write_text(TOML)
    (tmp_path / "spec.yaml").write_text(YAML)
    return tmp_path


def test_toml_and_yaml_give_the_same_spec(spec_dir: Path) -> None:
    from_toml = build_spec(config=spec_dir / "spec.toml")
    from_yaml = build_spec(config=spec_dir / "spec.yaml")
    assert from_toml == from_yaml
    assert from_toml.spec_hash() == from_yaml.spec_hash()
    assert from_toml.sources[1].generation == 3
    assert Path(from_toml.sources[0].path) == spec_dir / "human.parquet"


def test_flags_override_the_file_and_add_sources(spec_dir: Path) -> None:
    spec = build_spec(
        config=spec_dir / "spec.toml", synthetic_ratio=0.4, target_tokens=5000,
        tagged=[str(spec_dir / "human.parquet")],
    )
    assert spec.synthetic_ratio == 0.4 and spec.target_tokens == 5000
    assert spec.target_docs is None and spec.retain_original == 0.5
    assert [s.role for s in spec.sources] == ["human", "synthetic", "from-tags"]
    assert spec.spec_hash() != build_spec(config=spec_dir / "spec.toml").spec_hash()


@pytest.mark.parametrize(
    ("name", "text", "error", "message"),
    [
        ("s.toml", "target_docs = 1\nsyntetic_ratio = 0.2\n", ConfigError,
         "unknown field\\(s\\) syntetic_ratio; valid fields are"),
        ("s.toml", "target_docs = [", InputError, "invalid TOML"),
        ("s.yaml", "a: [", InputError, "invalid YAML"),
        ("s.json", "{}", InputError, "spec must be a .toml, .yaml or .yml file"),
        ("s.toml", "target_docs = 1\n[[sources]]\npath = 'x'\n", ConfigError,
         "sources\\[0\\] must be a table with path and role"),
    ],
)
def test_bad_spec_files(tmp_path: Path, name: str, text: str, error: type, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(error, match=message):
        build_spec(config=tmp_path / name)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="spec file does not exist"):
        load_spec_file(tmp_path / "none.toml")


def test_filter_strategy_drops_synthetic_by_default() -> None:
    spec = MixtureSpec(sources=BOTH, target_docs=1, strategy="filter")
    assert spec.effective_drop_labels == ("synthetic",)
    custom = MixtureSpec(sources=BOTH, target_docs=1, strategy="filter", max_score=0.3)
    assert custom.effective_drop_labels == ()
