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
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from provenance.errors import ConfigError, InputError
from provenance.schema import Label

ROLES = ("human", "synthetic", "from-tags")
STRATEGIES = ("replace", "retain", "accumulate", "filter", "reweight")
DEDUP = ("none", "exact", "near")
LABELS = tuple(label.value for label in Label)


# -- field rules: one table, checked wherever a spec comes from (file, flags, Python) ----------
#
# A spec file is written by hand: `max_score = "0.5"` or `allow_upsample = "no"` must be refused
# with the field's name, not crash deep in the build or be read as "true". Types are strict (a
# string is never a number, an integer is not a boolean, a boolean is not an integer): TOML and
# YAML both have real numbers and booleans, so a quoted value is a mistake, not a format.


@dataclass(frozen=True)
class Rule:
    """What one field must hold: ``kind`` checks the type, ``within`` the value's range.

    ``expected`` is the words of the error message ("a number in [0, 1]").
    """

    expected: str
    kind: Callable[[Any], bool]
    within: Callable[[Any], bool] = lambda value: True
    optional: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_text_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _between(low: float, high: float, *, open_low: bool = False,
             open_high: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return math.isfinite(value) and above and below

    return check


def _choice(options: Sequence[str]) -> Rule:
    return Rule(f"one of {', '.join(options)}", _is_text, lambda value: value in options)


_POSITIVE_INT = Rule("a positive integer", _is_int, lambda value: value >= 1)
_FRACTION = Rule("a number in [0, 1]", _is_number, _between(0, 1))
_NAME = Rule("a non-empty string", _is_text, bool)

#: Every field of :class:`MixtureSpec` but ``sources`` (a list of :class:`Source`, or of tables
#: in a file), with what it must hold.
FIELD_RULES: dict[str, Rule] = {
    "target_docs": replace(_POSITIVE_INT, optional=True),
    "target_tokens": replace(_POSITIVE_INT, optional=True),
    "tokenizer": Rule("a non-empty string (whitespace or a tokenizer name)", _is_text, bool),
    "synthetic_ratio": _FRACTION,
    "retain_original": _FRACTION,
    "strategy": _choice(STRATEGIES),
    "drop_labels": Rule(f"a list of labels among {', '.join(LABELS)}", _is_text_list,
                        lambda value: all(v in LABELS for v in value)),
    "max_score": replace(_FRACTION, optional=True),
    "reweight_power": Rule("a number > 0", _is_number, _between(0, math.inf, open_low=True,
                                                                 open_high=True)),
    "dedup": _choice(DEDUP),
    "dedup_threshold": Rule("a number in (0, 1)", _is_number,
                            _between(0, 1, open_low=True, open_high=True)),
    "allow_upsample": Rule("true or false", _is_bool),
    "seed": Rule("an integer in [0, 2**64)", _is_int, lambda value: 0 <= value < 2**64),
    "text_field": _NAME,
    "id_field": _NAME,
    "shard_rows": _POSITIVE_INT,
}

#: The fields of one source (a ``[[sources]]`` table of a file, or a :class:`Source`).
SOURCE_RULES: dict[str, Rule] = {
    "path": Rule("a path (a string)", _is_text, bool),
    "role": _choice(ROLES),
    "name": replace(_NAME, optional=True),
    "generation": Rule("an integer >= 0", _is_int, lambda value: value >= 0, optional=True),
}

_TYPE_WORDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),
    (numbers.Integral, "an integer"),
    (numbers.Real, "a number"),
    (str, "a string"),
    (Mapping, "a table"),
    ((list, tuple), "a list"),
    (type(None), "no value"),
)


def _type_word(value: Any) -> str:
    for kind, word in _TYPE_WORDS:
        if isinstance(value, kind):
            return word
    return f"a {type(value).__name__}"


def check_field(name: str, value: Any, rule: Rule, *, where: str = "") -> None:
    """Refuse ``value`` for field ``name`` unless it holds what ``rule`` says, in one line.

    ``where`` prefixes the message (the spec file, ``"source "``).

    Examples
    --------
    >>> check_field("max_score", "0.5", FIELD_RULES["max_score"], where="spec.toml: ")
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: spec.toml: field 'max_score' must be a number in [0, 1], \
got '0.5' (a string)
    """
    if value is None and rule.optional:
        return
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    if not rule.kind(value):
        raise ConfigError(
            f"{where}field {name!r} must be {rule.expected}, got {shown} ({_type_word(value)})"
        )
    if not rule.within(value):
        raise ConfigError(f"{where}field {name!r} must be {rule.expected}, got {shown}")


def check_fields(values: Mapping[str, Any], rules: Mapping[str, Rule], *,
                 where: str = "") -> None:
    """:func:`check_field` for each of ``values``; a name that ``rules`` lacks is refused with
    the list of known names (a misspelt field must not be silently ignored)."""
    refuse_unknown(values, rules, where=where)
    for name, value in values.items():
        check_field(name, value, rules[name], where=where)


def refuse_unknown(names: Iterable[str], known: Iterable[str], *, where: str = "") -> None:
    """Refuse names not among ``known``, listing the known ones."""
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}unknown field(s) {', '.join(unknown)}; valid fields are "
            f"{', '.join(sorted(known))}"
        )


def _builtin(value: Any) -> Any:
    """numpy and other numeric scalars as Python ``int``/``float`` (JSON and hashing need them);
    Python values are kept as they are, so a spec's hash does not change."""
    if _is_int(value) and type(value) is not int:
        return int(value)
    if _is_number(value) and type(value) not in (int, float):
        return float(value)
    return value


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
        # ``path`` may also be an in-memory table, so only the other fields follow SOURCE_RULES.
        for name in ("role", "name", "generation"):
            check_field(name, getattr(self, name), SOURCE_RULES[name], where="source ")
        object.__setattr__(self, "generation", _builtin(self.generation))

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
    provenance.errors.ConfigError: field 'synthetic_ratio' must be a number in [0, 1], got 1.4
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
        self._check_types()
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "drop_labels", tuple(self.drop_labels))
        for name in FIELD_RULES:
            object.__setattr__(self, name, _builtin(getattr(self, name)))
        self._validate()

    # -- validation (once, here) ----------------------------------------------------------------

    def _check_types(self) -> None:
        """Each field against :data:`FIELD_RULES`, before anything uses a value."""
        check_fields({name: getattr(self, name) for name in FIELD_RULES}, FIELD_RULES)
        if not isinstance(self.sources, (list, tuple)) or not all(
            isinstance(s, Source) for s in self.sources
        ):
            raise ConfigError(
                f"field 'sources' must be a list of Source, got {self.sources!r:.80}"
            )

    def _validate(self) -> None:
        """The rules between fields (each field's own type and range are FIELD_RULES')."""
        if not self.sources:
            raise ConfigError("a mixture needs at least one source (--human/--synthetic/--tagged)")
        if (self.target_docs is None) == (self.target_tokens is None):
            raise ConfigError("give exactly one of target_docs and target_tokens")
        if self.synthetic_ratio + self.retain_original > 1.0 + 1e-12:
            raise ConfigError(
                f"retain_original + synthetic_ratio must be <= 1, got {self.retain_original} + "
                f"{self.synthetic_ratio} = {self.retain_original + self.synthetic_ratio:g}; "
                "lower one of them"
            )
        if self.strategy == "replace" and self.retain_original > 0:
            raise ConfigError(
                "strategy replace uses no original data, but retain_original is "
                f"{self.retain_original}; use strategy retain to keep a share of original data"
            )
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
    origin: str | None = None,
) -> MixtureSpec:
    """Build a spec from a parsed TOML/YAML mapping; unknown or wrongly typed fields are errors.

    Relative source paths are resolved against ``base_dir`` (the spec file's folder); ``origin``
    (the file's name) starts every error message.

    Examples
    --------
    >>> spec_from_mapping({"target_docs": 10, "allow_upsample": "no"}, origin="spec.toml")
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: spec.toml: field 'allow_upsample' must be true or false, \
got 'no' (a string)
    """
    values = _checked_values(data, base_dir=base_dir, origin=origin)
    values["sources"] = (*values["sources"], *extra_sources)
    return MixtureSpec(**values)


def _checked_values(
    data: Mapping[str, Any], *, base_dir: Path | None, origin: str | None
) -> dict[str, Any]:
    """The fields of a spec file, each checked (naming ``origin``), sources parsed."""
    where = f"{origin}: " if origin else ""
    values = dict(data)
    refuse_unknown(values, FIELD_NAMES, where=where)
    raw_sources = values.pop("sources", [])
    if isinstance(values.get("drop_labels"), str):  # one label needs no list
        values["drop_labels"] = [values["drop_labels"]]
    check_fields(values, FIELD_RULES, where=where)
    if not isinstance(raw_sources, list):
        raise ConfigError(
            f"{where}field 'sources' must be a list of tables ([[sources]] in TOML), got "
            f"{raw_sources!r:.80} ({_type_word(raw_sources)})"
        )
    values["sources"] = tuple(
        _parse_source(i, raw, base_dir, where) for i, raw in enumerate(raw_sources)
    )
    return values


def _parse_source(i: int, raw: Any, base_dir: Path | None, where: str) -> Source:
    if not isinstance(raw, Mapping) or "path" not in raw or "role" not in raw:
        raise ConfigError(
            f"{where}sources[{i}] must be a table with path and role (optional name, "
            f"generation), got {raw!r:.80}"
        )
    refuse_unknown(raw, SOURCE_RULES, where=f"{where}sources[{i}]: ")
    for name, value in raw.items():
        check_field(f"sources[{i}].{name}", value, SOURCE_RULES[name], where=where)
    path = Path(raw["path"])
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return Source(str(path), raw["role"], raw.get("name"), raw.get("generation"))


def load_spec_file(path: str | os.PathLike, *, what: str = "spec") -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) spec file into a mapping
    (``what`` names the file in errors: a mixture spec, a collapse run's config)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file does not exist", file=str(path))
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
        raise InputError(f"{what} must be a .toml, .yaml or .yml file", file=str(path))
    if not isinstance(data, Mapping):
        raise InputError(f"{what} file must hold a table of fields", file=str(path))
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
    values: dict[str, Any] = {"sources": ()}
    if config is not None:
        # The file's fields are checked on their own, so that an error names the file.
        values = _checked_values(load_spec_file(config), base_dir=Path(config).resolve().parent,
                                 origin=os.fspath(config))
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    refuse_unknown(given, FIELD_NAMES - {"sources"})
    if "target_docs" in given or "target_tokens" in given:
        values.pop("target_docs", None)
        values.pop("target_tokens", None)
    values.update(given)
    extra = [Source(p, "human") for p in human] + [Source(p, "synthetic") for p in synthetic]
    extra += [Source(p, "from-tags") for p in tagged]
    values["sources"] = (*values["sources"], *extra)
    return MixtureSpec(**values)


__all__ = ["FIELD_RULES", "SOURCE_RULES", "MixtureSpec", "Rule", "Source", "build_spec",
           "check_field", "check_fields", "load_spec_file", "spec_from_mapping"]
