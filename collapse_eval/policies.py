"""How each generation's training set is built: the policies, defined once as mixture specs.

A policy answers "what does generation g train on?". The answer is a
:class:`mixers.spec.MixtureSpec` over fixed, named sources — the original data, each generation's
published samples, or the "web" (original and every published sample in one tagged corpus) — so a
text pipeline runs it with ``mixers.build`` itself and numeric families run the very same spec on
tensors (:mod:`collapse_eval.tensor_mix`). One definition, two executions; a test checks they select
the same rows.

======================  ===========================================================================
policy                  generation g trains on (M samples per generation)
======================  ===========================================================================
``replace``             the previous model's M samples only (the paper's default)
``retain:F``            F*M original samples (resampled each generation) + (1-F)*M new
``accumulate``          all original data and every generation's samples, all kept
``scrape``              M drawn from the web (original + all published), unfiltered
``filter:TAGGER``       like scrape, after dropping what TAGGER calls synthetic
``reweight[:TAGGER]``   like scrape, drawn with weight (1 - P(synthetic)) by TAGGER
======================  ===========================================================================

Taggers: ``oracle`` (the truth), ``noisy(tpr=..,fpr=..)`` (the truth seen through a tagger with
those error rates), ``discriminator`` (a classifier trained on original vs generated samples, the
realistic detector for numeric data); the text family adds ``ledger``, ``watermark`` and
``detector``. When a filter leaves fewer than M documents the survivors are resampled (upsampled)
to M, so every generation trains on the same budget.

Examples
--------
>>> parse_policy("filter:noisy(fpr=0.01, tpr=0.9)").name
'filter:noisy(tpr=0.9,fpr=0.01)'
>>> comp = parse_policy("retain:0.1").composition(generation=3, samples=100, original_size=100)
>>> comp.layout, comp.target, comp.synthetic_ratio, comp.retain_original
('newest', 100, 0.9, 0.1)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixers.spec import MixtureSpec, Source
from provenance.errors import ConfigError
from provenance.registry import evidence_taggers

ORIGINAL_SOURCE = "original"
WEB_SOURCE = "web"

#: Taggers of the experiments only, which measure rather than find evidence: the truth, the truth
#: through given error rates, and a classifier retrained on each generation's samples.
MEASUREMENT_TAGGERS = ("oracle", "noisy", "discriminator")
#: Taggers that trust one part of tailguard's own evidence, from the library's registry of
#: evidence kinds (:func:`provenance.registry.evidence_taggers`): ledger, watermark, detector.
EVIDENCE_TAGGERS = evidence_taggers()
#: What the numeric families can run: the measurement taggers.
NUMERIC_TAGGERS = MEASUREMENT_TAGGERS
#: What the text families can run: the oracle, tailguard's evidence and the discriminator (a
#: tagger with given error rates is for numeric data).
TEXT_TAGGERS = ("oracle", *EVIDENCE_TAGGERS, "discriminator")
STRATEGIES = ("replace", "retain", "accumulate", "scrape", "filter", "reweight")


def generated_source(generation: int) -> str:
    """The source name of one generation's published samples (part of every selection key)."""
    return f"generation-{generation}"


@dataclass(frozen=True)
class TaggerSpec:
    """Which tagger a filter or reweight policy trusts, and its parameters."""

    kind: str
    tpr: float | None = None
    fpr: float | None = None

    def __str__(self) -> str:
        if self.kind == "noisy":
            return f"noisy(tpr={self.tpr:g},fpr={self.fpr:g})"
        return self.kind


@dataclass(frozen=True)
class Composition:
    """What a generation's training set is made of, in mixers' terms.

    ``layout`` says which sources exist: ``newest`` (original + the newest generation),
    ``all`` (original + every generation) or ``web`` (one tagged corpus of everything).
    """

    layout: str
    target: int
    strategy: str
    synthetic_ratio: float
    retain_original: float


@dataclass(frozen=True)
class Policy:
    """A parsed policy; build it with :func:`parse_policy`."""

    name: str
    strategy: str
    retain: float = 0.0
    tagger: TaggerSpec | None = None

    @property
    def needs_history(self) -> bool:
        """Whether generations beyond the newest must be kept (they are part of the pool)."""
        return self.strategy in ("accumulate", "scrape", "filter", "reweight")

    @property
    def uses_tags(self) -> bool:
        return self.tagger is not None

    def composition(self, generation: int, samples: int, original_size: int) -> Composition:
        """Generation ``generation``'s training set (g >= 1; generation 0 trains on original)."""
        if generation < 1:
            raise ValueError("generation 0 trains on the original data; policies start at 1")
        if self.strategy == "replace":
            return Composition("newest", samples, "replace", 1.0, 0.0)
        if self.strategy == "retain":
            return Composition("newest", samples, "retain", 1.0 - self.retain, self.retain)
        if self.strategy == "accumulate":
            generated = generation * samples
            total = original_size + generated
            return Composition("all", total, "accumulate", generated / total,
                               original_size / total)
        mixers_strategy = {"scrape": "accumulate", "filter": "filter", "reweight": "reweight"}
        return Composition("web", samples, mixers_strategy[self.strategy], 0.0, 0.0)

    def sources(self, generation: int, original: Any, generated: Mapping[int, Any],
                web: Any = None) -> tuple[Source, ...]:
        """The named mixers sources of generation ``generation`` (data objects are the caller's).

        ``generated`` maps generation -> that generation's published samples; ``web`` is the
        tagged corpus of everything (``prov_label``/``prov_score`` from the tagger, or
        ``unknown`` for ``scrape``).
        """
        layout = self.composition(generation, 1, 1).layout
        if layout == "web":
            return (Source(web, "from-tags", name=WEB_SOURCE),)
        gens = [generation] if layout == "newest" else sorted(g for g in generated if g >= 1)
        synthetic = tuple(
            Source(generated[g], "synthetic", name=generated_source(g), generation=g)
            for g in gens
        )
        if self.strategy == "replace":
            return synthetic
        return (Source(original, "human", name=ORIGINAL_SOURCE), *synthetic)

    def mixture_spec(self, sources: Sequence[Source], generation: int, samples: int,
                     original_size: int, seed: int) -> MixtureSpec:
        """The mixers spec of generation ``generation`` over ``sources`` (from :meth:`sources`)."""
        comp = self.composition(generation, samples, original_size)
        return MixtureSpec(
            sources=tuple(sources),
            target_docs=comp.target,
            strategy=comp.strategy,
            synthetic_ratio=comp.synthetic_ratio,
            retain_original=comp.retain_original,
            allow_upsample=True,
            seed=seed,
        )


_NOISY = re.compile(r"^noisy\((.*)\)$")


def _parse_tagger(text: str, policy: str) -> TaggerSpec:
    text = text.strip()
    if text in (*MEASUREMENT_TAGGERS, *EVIDENCE_TAGGERS) and text != "noisy":
        return TaggerSpec(text)
    match = _NOISY.match(text.replace(" ", ""))
    if not match:
        known = ", ".join(t if t != "noisy" else "noisy(tpr=..,fpr=..)"
                          for t in (*MEASUREMENT_TAGGERS, *EVIDENCE_TAGGERS))
        raise ConfigError(f"policy {policy!r}: unknown tagger {text!r}; use one of {known}")
    rates: dict[str, float] = {}
    for part in filter(None, match.group(1).split(",")):
        key, _, value = part.partition("=")
        if key not in ("tpr", "fpr") or not value:
            raise ConfigError(f"policy {policy!r}: noisy takes tpr=.. and fpr=.., got {part!r}")
        try:
            rates[key] = float(value)
        except ValueError:
            raise ConfigError(f"policy {policy!r}: {key} must be a number, got {value!r}") from None
        if not 0.0 <= rates[key] <= 1.0:
            raise ConfigError(f"policy {policy!r}: {key} must be in [0, 1], got {value}")
    if set(rates) != {"tpr", "fpr"}:
        raise ConfigError(f"policy {policy!r}: noisy needs both tpr and fpr, e.g. "
                          "noisy(tpr=0.9,fpr=0.01)")
    return TaggerSpec("noisy", tpr=rates["tpr"], fpr=rates["fpr"])


def parse_policy(text: str) -> Policy:
    """Parse ``replace``, ``retain:F``, ``accumulate``, ``scrape``, ``filter:T``, ``reweight[:T]``.

    >>> parse_policy("reweight").tagger
    TaggerSpec(kind='discriminator', tpr=None, fpr=None)
    >>> parse_policy("retain:1.5")
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: policy 'retain:1.5': the retained fraction must be in (0, 1]
    """
    raw = text.strip()
    strategy, _, arg = raw.partition(":")
    strategy = strategy.strip()
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown policy {raw!r}; use one of replace, retain:F, accumulate, "
                          "scrape, filter:TAGGER, reweight[:TAGGER]")
    if strategy in ("replace", "accumulate", "scrape"):
        if arg:
            raise ConfigError(f"policy {raw!r}: {strategy} takes no argument")
        return Policy(strategy, strategy)
    if strategy == "retain":
        try:
            fraction = float(arg)
        except ValueError:
            raise ConfigError(f"policy {raw!r}: retain needs a fraction, e.g. retain:0.1") from None
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"policy {raw!r}: the retained fraction must be in (0, 1]")
        return Policy(f"retain:{fraction:g}", "retain", retain=fraction)
    if strategy == "filter" and not arg:
        raise ConfigError(f"policy {raw!r}: filter needs a tagger, e.g. filter:oracle")
    tagger = _parse_tagger(arg or "discriminator", raw)
    return Policy(f"{strategy}:{tagger}", strategy, tagger=tagger)


def parse_policies(texts: Sequence[str]) -> list[Policy]:
    """Parse several policies; duplicates (after normalising) are an error."""
    policies = [parse_policy(t) for t in texts]
    names = [p.name for p in policies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"policy given twice: {', '.join(dupes)}")
    if not policies:
        raise ConfigError("give at least one policy, e.g. --policy replace")
    return policies


def policy_slug(name: str) -> str:
    """A file-system-safe folder name for a policy (checkpoints, plots)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
