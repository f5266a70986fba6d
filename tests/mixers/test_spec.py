"""MixtureSpec: every validation error, file formats, flags overriding files, hashing."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mixers.spec import MixtureSpec, Source, build_spec, load_spec_file
from provenance.errors import ConfigError, InputError

DF = pl.DataFrame({"id": ["1"], "text": ["x"]})
BOTH = (Source(DF, "human"), Source(DF, "synthetic"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"synthetic_ratio": 1.4}, "synthetic_ratio must be in \\[0, 1\\], got 1.4"),
        ({"synthetic_ratio": -0.1}, "synthetic_ratio must be in \\[0, 1\\], got -0.1"),
        ({"retain_original": 2.0}, "retain_original must be in \\[0, 1\\], got 2.0"),
        ({"synthetic_ratio": 0.6, "retain_original": 0.5},
         "retain_original \\+ synthetic_ratio must be <= 1, got 0.5 \\+ 0.6 = 1.1"),
        ({"strategy": "shuffle"}, "strategy must be one of replace, retain, accumulate"),
        ({"strategy": "replace", "retain_original": 0.1}, "use strategy retain"),
        ({"drop_labels": ("robot",)}, "drop_labels must be among human, synthetic, unknown"),
        ({"max_score": 1.5}, "max_score must be in \\[0, 1\\], got 1.5"),
        ({"dedup": "fuzzy"}, "dedup must be one of none, exact, near"),
        ({"dedup_threshold": 1.0}, "dedup_threshold must be in \\(0, 1\\)"),
        ({"seed": -1}, "seed must be an integer in \\[0, 2\\*\\*64\\)"),
        ({"target_docs": 0}, "target_docs must be a positive integer, got 0"),
        ({"target_tokens": 100}, "give exactly one of target_docs and target_tokens"),
        ({"reweight_power": 0}, "reweight_power must be > 0"),
    ],
)
def test_validation_errors_name_the_field_and_value(kwargs: dict, message: str) -> None:
    base = {"sources": BOTH, "target_docs": 10}
    with pytest.raises(ConfigError, match=message):
        MixtureSpec(**{**base, **kwargs})


def test_sources_must_be_able_to_fill_the_shares() -> None:
    with pytest.raises(ConfigError, match="no source can provide synthetic documents"):
        MixtureSpec(sources=(Source(DF, "human"),), target_docs=5, synthetic_ratio=0.5)
    with pytest.raises(ConfigError, match="no human or tagged source"):
        MixtureSpec(sources=(Source(DF, "synthetic"),), target_docs=5, synthetic_ratio=0.5)
    with pytest.raises(ConfigError, match="at least one source"):
        MixtureSpec(sources=(), target_docs=5)
    with pytest.raises(ConfigError, match="source role must be one of human, synthetic"):
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
