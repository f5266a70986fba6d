"""Declared-metadata rules: the standard vocabularies and user mappings."""

from __future__ import annotations

import json

import polars as pl
import pytest

from provenance.declared import DEFAULT_RULES, DeclaredRule, DeclaredSignal
from provenance.errors import ConfigError
from provenance.schema import Evidence, Label


@pytest.mark.parametrize(
    ("field", "value", "label"),
    [
        ("is_synthetic", True, Label.SYNTHETIC),
        ("is_synthetic", False, Label.HUMAN),
        ("is_synthetic", "yes", Label.SYNTHETIC),
        ("language_creators", ["machine-generated"], Label.SYNTHETIC),
        ("language_creators", ["found", "crowdsourced"], Label.HUMAN),
        ("language_creators", ["found", "machine-generated"], Label.SYNTHETIC),
        ("language_creators", [], None),
        ("digital_source_type", "trainedAlgorithmicMedia", Label.SYNTHETIC),
        (
            "digital_source_type",
            "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
            Label.SYNTHETIC,
        ),
        ("digital_source_type", "digitalCapture", Label.HUMAN),
        ("source", "wikipedia", None),
        ("source", "Model-Generated", Label.SYNTHETIC),
        ("is_synthetic", None, None),
        ("is_synthetic", "  ", None),
        ("is_synthetic", "unknown", None),
    ],
)
def test_standard_vocabulary(field: str, value, label: Label | None) -> None:
    assert DeclaredRule(field).label_of(value) is label


def test_generator_field_names_the_model_unless_it_says_human() -> None:
    rule = DeclaredRule("generator", any_value_is_synthetic=True)
    assert rule.label_of("llama-2-7b") is Label.SYNTHETIC
    assert rule.label_of("human") is Label.HUMAN
    assert rule.label_of("n/a") is None


@pytest.mark.parametrize(
    ("spec", "field", "checks"),
    [
        ("label=machine:synthetic,human:human", "label",
         {"machine": Label.SYNTHETIC, "HUMAN": Label.HUMAN, "found": None}),
        ("origin=*", "origin", {"anything": Label.SYNTHETIC, "": None}),
        ("is_ai", "is_ai", {"true": Label.SYNTHETIC, "false": Label.HUMAN}),
        ("generator", "generator", {"gpt-j": Label.SYNTHETIC}),
        ("kind=a:b:synthetic", "kind", {"a:b": Label.SYNTHETIC}),
    ],
)
def test_parse_cli_form(spec: str, field: str, checks: dict) -> None:
    rule = DeclaredRule.parse(spec)
    assert rule.field == field
    for value, label in checks.items():
        assert rule.label_of(value) is label


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("label=machine", "expected FIELD=VALUE:LABEL"),
        ("label=machine:robot", "label must be one of human, synthetic, unknown, got 'robot'"),
        ("=x:human", "needs a field name"),
    ],
)
def test_parse_errors_name_the_fix(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeclaredRule.parse(spec)


def test_signal_takes_first_declaring_field_and_generator_and_generation() -> None:
    batch = pl.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "text": ["t"] * 4,
            "is_synthetic": [None, True, False, None],
            "generator": [None, "gpt2", None, "opt-1.3b"],
            "generation": [None, 3, None, None],
        }
    )
    signal = DeclaredSignal(DEFAULT_RULES)
    tags = signal.run(batch, "text")
    assert tags[0] is None
    assert (tags[1].label, tags[1].generator, tags[1].generation) == (Label.SYNTHETIC, "gpt2", 3)
    assert tags[1].detail == {"field": "is_synthetic", "value": True}
    assert (tags[2].label, tags[2].score) == (Label.HUMAN, 0.0)
    assert (tags[3].label, tags[3].generator) == (Label.SYNTHETIC, "opt-1.3b")
    assert tags[3].detail["field"] == "generator"
    assert all(t is None or t.evidence is Evidence.DECLARED for t in tags)
    assert (signal.stats.examined, signal.stats.decided) == (4, 3)
    json.dumps([t.detail for t in tags if t])


def test_text_field_is_never_read_as_a_declaration() -> None:
    batch = pl.DataFrame({"id": ["a"], "source": ["synthetic"]})
    assert DeclaredSignal([DeclaredRule("source")]).run(batch, "source") == [None]
