"""What a training mixture should contain: :class:`MixtureSpec`, from a file or from flags.

A spec is the auditable statement of intent that the manifest later checks the result against. The
same field names work in TOML, YAML, CLI flags and Python, so a mixture described in a notebook,
a config repository or a shell history is the same mixture.

Pools. Every source has a role:

* ``human`` — original human data you trust (the "real" data of the collapse literature);
* ``synthetic`` — model output you know is synthetic (optionally tagged with its generation);
* ``from-tags`` — a tagged corpus (``tailguard tag`` output): documents labelled ``synthetic`` join
  the synthetic pool, the others (``human`` or ``unknown``) form the *scraped* pool.

Counts. Of a target of N documents (or tokens), ``synthetic_ratio`` x N come from the synthetic
pool and at least ``retain_original`` x N from original human data; the rest is filled from the
scraped pool, then from original data.

Strategies: ``replace`` (newest synthetic generation only, no original data), ``retain`` (newest
synthetic generation plus the original floor), ``accumulate`` (every generation's synthetic
data), ``filter`` (drop scraped documents by label or score first) and ``reweight`` (draw the
scraped pool with probability proportional to (1 - prov_score)^b).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from provenance.errors import ConfigError, InputError
from provenance.schema import Label

ROLES = ("human", "synthetic", "from-tags")
STRATEGIES = ("replace", "retain", "accumulate", "filter", "reweight")
DEDUP = ("none", "exact", "near")


@dataclass(frozen=True)
class Source:
    """One input of a mixture: a path (file, folder, glob) or an in-memory table, and its role.

    ``name`` identifies the source in the manifest (default: the path). ``generation`` marks
    synthetic data of a known recursive generation when the data carries no
    ``prov_generation`` column.
    """

    path: Any
    role: str
    name: str | None = None
    generation: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(
                f"source role must be one of {', '.join(ROLES)}, got {self.role!r}"
            )
        if self.generation is not None and (
            isinstance(self.generation, bool) or not isinstance(self.generation, int)
            or self.generation < 0
        ):
            raise ConfigError(f"source generation must be an integer >= 0, got {self.generation!r}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if isinstance(self.path, (str, os.PathLike)):
            return os.fspath(self.path)
        return f"<{type(self.path).__name__}>"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.label if not isinstance(self.path, (str, os.PathLike))
                else os.fspath(self.path), "role": self.role, "name": self.label,
                "generation": self.generation}


@dataclass(frozen=True)
class MixtureSpec:
    """The composition a mixture must have. Validated on construction.

    Examples
    --------
    >>> import polars as pl
    >>> human = pl.DataFrame({"id": ["h1"], "text": ["written by a person"]})
    >>> generated = pl.DataFrame({"id": ["g1"], "text": ["written by a model"]})
    >>> spec = MixtureSpec(
    ...     sources=(Source(human, "human"), Source(generated, "synthetic")),
    ...     target_docs=1000, synthetic_ratio=0.3, retain_original=0.7, strategy="retain",
    ... )
    >>> spec.synthetic_ratio, spec.seed
    (0.3, 0)
    >>> MixtureSpec(sources=spec.sources, target_docs=10, synthetic_ratio=1.4)
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: synthetic_ratio must be in [0, 1], got 1.4
    """

    sources: tuple[Source, ...]
    target_docs: int | None = None
    target_tokens: int | None = None
    tokenizer: str = "whitespace"
    synthetic_ratio: float = 0.0
    retain_original: float = 0.0
    strategy: str = "accumulate"
    drop_labels: tuple[str, ...] = ()
    max_score: float | None = None
    reweight_power: float = 1.0
    dedup: str = "none"
    dedup_threshold: float = 0.8
    allow_upsample: bool = False
    seed: int = 0
    text_field: str = "text"
    id_field: str = "id"
    shard_rows: int = 100_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "drop_labels", tuple(self.drop_labels))
        self._validate()

    # -- validation (once, here) ----------------------------------------------------------------

    def _validate(self) -> None:
        if not self.sources:
            raise ConfigError("a mixture needs at least one source (--human/--synthetic/--tagged)")
        if (self.target_docs is None) == (self.target_tokens is None):
            raise ConfigError("give exactly one of target_docs and target_tokens")
        for name in ("target_docs", "target_tokens", "shard_rows"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("synthetic_ratio", "retain_original"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0.0 <= value <= 1.0
            ):
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.synthetic_ratio + self.retain_original > 1.0 + 1e-12:
            raise ConfigError(
                f"retain_original + synthetic_ratio must be <= 1, got {self.retain_original} + "
                f"{self.synthetic_ratio} = {self.retain_original + self.synthetic_ratio:g}; "
                "lower one of them"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.strategy == "replace" and self.retain_original > 0:
            raise ConfigError(
                "strategy replace uses no original data, but retain_original is "
                f"{self.retain_original}; use strategy retain to keep a share of original data"
            )
        labels = {lb.value for lb in Label}
        for label in self.drop_labels:
            if label not in labels:
                raise ConfigError(
                    f"drop_labels must be among {', '.join(sorted(labels))}, got {label!r}"
                )
        if self.max_score is not None and not 0.0 <= self.max_score <= 1.0:
            raise ConfigError(f"max_score must be in [0, 1], got {self.max_score}")
        if self.reweight_power <= 0:
            raise ConfigError(f"reweight_power must be > 0, got {self.reweight_power}")
        if self.dedup not in DEDUP:
            raise ConfigError(f"dedup must be one of {', '.join(DEDUP)}, got {self.dedup!r}")
        if not 0.0 < self.dedup_threshold < 1.0:
            raise ConfigError(f"dedup_threshold must be in (0, 1), got {self.dedup_threshold}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
            0 <= self.seed < 2**64
        ):
            raise ConfigError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        if self.synthetic_ratio > 0 and not any(
            s.role in ("synthetic", "from-tags") for s in self.sources
        ):
            raise ConfigError(
                f"synthetic_ratio is {self.synthetic_ratio} but no source can provide synthetic "
                "documents; add --synthetic or --tagged sources, or set synthetic_ratio 0"
            )
        if self.synthetic_ratio < 1 and not any(
            s.role in ("human", "from-tags") for s in self.sources
        ):
            raise ConfigError(
                f"synthetic_ratio is {self.synthetic_ratio} but there is no human or tagged "
                "source for the rest; add --human/--tagged sources or set synthetic_ratio 1"
            )
        for source in self.sources:
            path = source.path
            is_path = isinstance(path, (str, os.PathLike))
            if is_path and not any(c in os.fspath(path) for c in "*?[") and not Path(path).exists():
                raise InputError("source does not exist", file=os.fspath(path))

    # -- derived ----------------------------------------------------------------------------------

    @property
    def effective_drop_labels(self) -> tuple[str, ...]:
        """Labels dropped from the scraped pool; ``filter`` defaults to dropping synthetic."""
        if self.strategy == "filter" and not self.drop_labels and self.max_score is None:
            return ("synthetic",)
        return self.drop_labels

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [s.as_dict() for s in self.sources]
        data["drop_labels"] = list(self.drop_labels)
        return data

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON of the spec: equal specs, equal hashes."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_overrides(self, **overrides: Any) -> MixtureSpec:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


FIELD_NAMES = {f.name for f in fields(MixtureSpec)}


def spec_from_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    extra_sources: Sequence[Source] = (),
) -> MixtureSpec:
    """Build a spec from a parsed TOML/YAML mapping; unknown fields are an error.

    Relative source paths are resolved against ``base_dir`` (the spec file's folder).
    """
    unknown = set(data) - FIELD_NAMES
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(sorted(unknown))}; valid fields are "
            f"{', '.join(sorted(FIELD_NAMES))}"
        )
    values = dict(data)
    sources = [_parse_source(i, raw, base_dir) for i, raw in enumerate(values.pop("sources", []))]
    values["sources"] = (*sources, *extra_sources)
    if isinstance(values.get("drop_labels"), str):
        values["drop_labels"] = (values["drop_labels"],)
    return MixtureSpec(**values)


def _parse_source(i: int, raw: Any, base_dir: Path | None) -> Source:
    if not isinstance(raw, Mapping) or "path" not in raw or "role" not in raw or set(raw) - {
        "path", "role", "name", "generation"
    }:
        raise ConfigError(
            f"sources[{i}] must be a table with path and role (optional name, generation), "
            f"got {raw!r}"
        )
    path = Path(raw["path"])
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return Source(str(path), raw["role"], raw.get("name"), raw.get("generation"))


def load_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) spec file into a mapping."""
    path = Path(path)
    if not path.exists():
        raise InputError("spec file does not exist", file=str(path))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"invalid TOML: {exc}", file=str(path)) from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"invalid YAML: {first}", file=str(path)) from None
    else:
        raise InputError("spec must be a .toml, .yaml or .yml file", file=str(path))
    if not isinstance(data, Mapping):
        raise InputError("spec file must hold a table of fields", file=str(path))
    return dict(data)


def build_spec(
    *,
    config: str | os.PathLike | None = None,
    human: Sequence[Any] = (),
    synthetic: Sequence[Any] = (),
    tagged: Sequence[Any] = (),
    **flags: Any,
) -> MixtureSpec:
    """A spec from an optional config file plus flags; flags override the file's fields.

    Sources given as flags are added to the file's sources. A target given as a flag replaces
    the file's target of either kind.
    """
    data: dict[str, Any] = {}
    base_dir = None
    if config is not None:
        data = load_spec_file(config)
        base_dir = Path(config).resolve().parent
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    if "target_docs" in given or "target_tokens" in given:
        data.pop("target_docs", None)
        data.pop("target_tokens", None)
    data.update(given)
    extra = [Source(p, "human") for p in human] + [Source(p, "synthetic") for p in synthetic]
    extra += [Source(p, "from-tags") for p in tagged]
    return spec_from_mapping(data, base_dir=base_dir, extra_sources=extra)


__all__ = ["MixtureSpec", "Source", "build_spec", "load_spec_file", "spec_from_mapping"]
