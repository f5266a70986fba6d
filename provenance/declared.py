"""Declared provenance: what a document's own metadata says about where it came from.

Declared metadata is the most reliable evidence there is (when present, someone who knew said so),
but every publisher spells it differently: a boolean ``is_synthetic``, a Hugging Face card's
``language_creators: [machine-generated]``, an IPTC ``digitalSourceType`` URL, a ``generator``
naming the model. A :class:`DeclaredRule` maps one field's values to labels; the default rules know
the standard vocabularies, and users add their own (``label=machine:synthetic,human:human``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from provenance.errors import ConfigError
from provenance.schema import Evidence, Label, Tag
from provenance.signals import Signal

IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: Standard values that declare a document synthetic or human (compared lower-cased).
STANDARD_VOCABULARY: dict[str, Label] = {
    **dict.fromkeys(
        [
            "true", "1", "yes", "synthetic", "machine", "machine-generated", "machine_generated",
            "model", "model-generated", "model_generated", "generated", "ai", "ai-generated",
            "llm", "llm-generated",
            # IPTC digital source types for content made by a trained model
            "trainedalgorithmicmedia", "compositewithtrainedalgorithmicmedia",
            "compositesynthetic", "algorithmicmedia",
        ],
        Label.SYNTHETIC,
    ),
    **dict.fromkeys(
        [
            "false", "0", "no", "human", "human-written", "human_written", "human-generated",
            "original", "organic",
            # Hugging Face language_creators for human text
            "found", "crowdsourced", "expert-generated",
            # IPTC digital source types for content captured or made by people
            "digitalcapture", "humanedits", "minorhumanedits", "negativefilm", "positivefilm",
            "print", "digitalart",
        ],
        Label.HUMAN,
    ),
    # Placeholders that declare nothing (and must not be read as a generator's name).
    **dict.fromkeys(["unknown", "none", "null", "n/a", "na", "-"], Label.UNKNOWN),
}

#: Fields whose *presence* with any value outside the human vocabulary declares a model made it.
GENERATOR_FIELDS = ("generator", "generated_by", "model_name")

#: Fields read for the generation number of declared synthetic documents.
GENERATION_FIELDS = ("generation", "prov_generation")


@dataclass(frozen=True)
class DeclaredRule:
    """Read one metadata field as a provenance declaration.

    Parameters
    ----------
    field : str
        The field (column) to read.
    values : mapping of value to Label, optional
        Explicit value -> label map (case-insensitive). ``None`` uses
        :data:`STANDARD_VOCABULARY`.
    any_value_is_synthetic : bool
        Any non-empty value outside the human vocabulary declares the document synthetic and is
        taken as the generator's name (for fields like ``generator``).

    Examples
    --------
    >>> DeclaredRule.parse("label=machine:synthetic,human:human").label_of("Machine")
    <Label.SYNTHETIC: 'synthetic'>
    >>> DeclaredRule("language_creators").label_of(["found", "machine-generated"])
    <Label.SYNTHETIC: 'synthetic'>
    >>> DeclaredRule("generator", any_value_is_synthetic=True).label_of("gpt2-xl")
    <Label.SYNTHETIC: 'synthetic'>
    """

    field: str
    values: Mapping[str, Label] | None = None
    any_value_is_synthetic: bool = False
    _lookup: Mapping[str, Label] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.field:
            raise ConfigError("a declared-field rule needs a field name")
        table = STANDARD_VOCABULARY if self.values is None else self.values
        object.__setattr__(self, "_lookup", {str(k).lower(): Label(v) for k, v in table.items()})

    @classmethod
    def parse(cls, spec: str) -> DeclaredRule:
        """Parse the CLI form: ``FIELD``, ``FIELD=*`` or ``FIELD=VALUE:LABEL[,VALUE:LABEL...]``."""
        name, sep, mapping = spec.partition("=")
        name = name.strip()
        if not sep:
            return cls(name, any_value_is_synthetic=name in GENERATOR_FIELDS)
        if mapping.strip() == "*":
            return cls(name, any_value_is_synthetic=True)
        values: dict[str, Label] = {}
        for item in mapping.split(","):
            value, colon, label = item.rpartition(":")
            if not colon or not value:
                raise ConfigError(
                    f"declared field {spec!r}: expected FIELD=VALUE:LABEL[,VALUE:LABEL], "
                    f"got item {item!r}"
                )
            try:
                values[value.strip()] = Label(label.strip().lower())
            except ValueError:
                choices = ", ".join(lb.value for lb in Label)
                raise ConfigError(
                    f"declared field {spec!r}: label must be one of {choices}, got {label!r}"
                ) from None
        return cls(name, values=values)

    def label_of(self, value: Any) -> Label | None:
        """The label this value declares, or ``None`` when it declares nothing."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            labels = {self.label_of(v) for v in value} - {None}
            if Label.SYNTHETIC in labels:
                return Label.SYNTHETIC
            return Label.HUMAN if labels == {Label.HUMAN} else None
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = str(value).strip()
        if not text:
            return None
        key = text.lower()
        if key.startswith(IPTC_PREFIX.lower()):
            key = key[len(IPTC_PREFIX) :]
        label = self._lookup.get(key)
        if label is None and self.any_value_is_synthetic:
            return Label.SYNTHETIC
        return None if label is Label.UNKNOWN else label


DEFAULT_RULES: tuple[DeclaredRule, ...] = (
    DeclaredRule("is_synthetic"),
    DeclaredRule("synthetic"),
    DeclaredRule("is_generated"),
    DeclaredRule("machine_generated"),
    DeclaredRule("model_generated"),
    DeclaredRule("language_creators"),
    DeclaredRule("digital_source_type"),
    DeclaredRule("digitalSourceType"),
    DeclaredRule("source_type"),
    DeclaredRule("provenance"),
    DeclaredRule("source"),
    *(DeclaredRule(name, any_value_is_synthetic=True) for name in GENERATOR_FIELDS),
)


class DeclaredSignal(Signal):
    """Decides documents whose metadata declares them human or synthetic.

    Rules are tried in order; the first field that declares something decides. A generator name
    is taken from the deciding field when it names one, otherwise from a ``generator``-like field.
    """

    evidence = Evidence.DECLARED

    def __init__(self, rules: Iterable[DeclaredRule] = DEFAULT_RULES) -> None:
        super().__init__()
        self.rules = tuple(rules)

    def examine(self, batch: pl.DataFrame, text_field: str) -> Sequence[Tag | None]:
        present = [r for r in self.rules if r.field in batch.columns and r.field != text_field]
        if not present:
            return [None] * batch.height
        columns = {r.field: batch.get_column(r.field).to_list() for r in present}
        generators = _first_column(batch, GENERATOR_FIELDS)
        generations = _first_column(batch, GENERATION_FIELDS)
        tags: list[Tag | None] = []
        for i in range(batch.height):
            tags.append(self._tag_row(i, present, columns, generators, generations))
        return tags

    def _tag_row(
        self,
        i: int,
        rules: Sequence[DeclaredRule],
        columns: Mapping[str, list],
        generators: list | None,
        generations: list | None,
    ) -> Tag | None:
        for rule in rules:
            value = columns[rule.field][i]
            label = rule.label_of(value)
            if label is None:
                continue
            generator = generation = None
            if label is Label.SYNTHETIC:
                if rule.any_value_is_synthetic and isinstance(value, str):
                    generator = value
                elif generators is not None and generators[i] not in (None, ""):
                    generator = str(generators[i])
                generation = _as_int(generations[i]) if generations is not None else None
            return Tag(
                label=label,
                score=1.0 if label is Label.SYNTHETIC else 0.0,
                evidence=self.evidence,
                generator=generator,
                generation=generation,
                detail={"field": rule.field, "value": _jsonable(value)},
            )
        return None


def _first_column(batch: pl.DataFrame, names: Sequence[str]) -> list | None:
    for name in names:
        if name in batch.columns:
            return batch.get_column(name).to_list()
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
