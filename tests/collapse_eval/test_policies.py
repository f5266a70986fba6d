"""Policy parsing and the mixture each policy asks for."""

from __future__ import annotations

import pytest

from collapse_eval.policies import parse_policies, parse_policy, policy_slug
from mixers.build import split_target
from provenance.errors import ConfigError


@pytest.mark.parametrize(("text", "name", "strategy"), [
    ("replace", "replace", "replace"),
    (" retain:0.10 ", "retain:0.1", "retain"),
    ("accumulate", "accumulate", "accumulate"),
    ("scrape", "scrape", "scrape"),
    ("filter:oracle", "filter:oracle", "filter"),
    ("filter:noisy( fpr=0.01 , tpr=0.9 )", "filter:noisy(tpr=0.9,fpr=0.01)", "filter"),
    ("filter:discriminator", "filter:discriminator", "filter"),
    ("filter:ledger", "filter:ledger", "filter"),
    ("reweight", "reweight:discriminator", "reweight"),
    ("reweight:oracle", "reweight:oracle", "reweight"),
])
def test_policies_parse_to_canonical_names(text: str, name: str, strategy: str) -> None:
    policy = parse_policy(text)
    assert (policy.name, policy.strategy) == (name, strategy)
    assert parse_policy(policy.name) == policy


@pytest.mark.parametrize(("text", "message"), [
    ("keep", "unknown policy 'keep'"),
    ("retain", "retain needs a fraction"),
    ("retain:0", "must be in \\(0, 1\\]"),
    ("replace:2", "replace takes no argument"),
    ("filter", "filter needs a tagger"),
    ("filter:magic", "unknown tagger 'magic'"),
    ("filter:noisy(tpr=0.9)", "needs both tpr and fpr"),
    ("filter:noisy(tpr=1.2,fpr=0)", "tpr must be in \\[0, 1\\]"),
    ("filter:noisy(tpr=x,fpr=0)", "tpr must be a number"),
])
def test_bad_policies_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(text)


def test_duplicates_and_empty_lists_are_errors() -> None:
    with pytest.raises(ConfigError, match="given twice: filter:oracle"):
        parse_policies(["filter:oracle", "filter: oracle"])
    with pytest.raises(ConfigError, match="at least one policy"):
        parse_policies([])


def test_compositions_give_exact_amounts_through_mixers_split() -> None:
    data = object()  # what the sources hold does not matter to the spec (strings would be paths)
    sources = {"original": data}
    generated = {g: data for g in range(1, 8)}
    retain = parse_policy("retain:0.1")
    spec = retain.mixture_spec(retain.sources(7, sources["original"], generated), 7, 1000, 1000, 1)
    assert [s.name for s in spec.sources] == ["original", "generation-7"]
    assert split_target(spec, 1000, 0, 1000) == {"synthetic": 900, "original": 100, "scraped": 0}
    acc = parse_policy("accumulate")
    spec = acc.mixture_spec(acc.sources(7, data, generated), 7, 100, 300, 1)
    assert spec.target_docs == 300 + 700 and len(spec.sources) == 8
    assert split_target(spec, spec.target_docs, 0, 300) == {"synthetic": 700, "original": 300,
                                                             "scraped": 0}
    scrape = parse_policy("scrape")
    spec = scrape.mixture_spec(scrape.sources(7, None, {}, web=data), 7, 100, 100, 1)
    assert [s.role for s in spec.sources] == ["from-tags"] and spec.strategy == "accumulate"
    assert split_target(spec, 100, 40, 0) == {"synthetic": 0, "original": 0, "scraped": 100}
    replace = parse_policy("replace")
    spec = replace.mixture_spec(replace.sources(3, data, generated), 3, 50, 50, 1)
    assert [s.name for s in spec.sources] == ["generation-3"] and spec.synthetic_ratio == 1.0
    with pytest.raises(ValueError, match="generation 0"):
        replace.composition(0, 10, 10)


def test_history_and_slugs() -> None:
    assert not parse_policy("replace").needs_history
    assert parse_policy("filter:oracle").needs_history
    assert policy_slug("filter:noisy(tpr=0.9,fpr=0.01)") == "filter_noisy_tpr_0.9_fpr_0.01"
