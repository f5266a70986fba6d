"""The kinds of evidence the tagger knows, each registered once: name, fusion order, options.

Everything that lists evidence reads this registry: the fusion order of
:class:`~provenance.fusion.Tagger`, the evidence keywords of :func:`provenance.tagger.tag` and
:func:`~provenance.tagger.tag_corpus` (checked once, by :class:`~provenance.fusion.TagOptions`),
the Ray workers that build the signals, the options of ``tailguard tag`` and the taggers a
collapse experiment can trust (:func:`evidence_taggers`). So a new kind of evidence is a
:class:`~provenance.signals.Signal` subclass plus one :func:`register_signal` call, in a module
of its own; nothing else changes.

A kind's *options* are keywords of ``tag_corpus`` (``ledger="ledger.sqlite"``), each with a type,
a help text and a default, and options of ``tailguard tag`` (``--ledger``) unless the kind gives
its command-line form apart (``cli_options`` and ``from_cli``: a key file that is loaded, a flag
that turns the kind off). ``build`` makes the kind's signal from a run's option values, or
returns ``None`` where the kind is off.

Examples
--------
>>> [kind.name for kind in signal_kinds()]  # in fusion order
['declared', 'ledger_exact', 'watermark', 'ledger_near', 'detector']
>>> list(signal_options())  # tag_corpus keywords, in registration order
['ledger', 'declared', 'near_threshold', 'watermark', 'detector']
>>> evidence_taggers()
('ledger', 'watermark', 'detector')

A plugin's kind (``tests/provenance/test_signal_registry.py`` registers and runs this one)::

    register_signal(
        "marker", order=450,
        options=[SignalOption("marker", str, "Call documents that contain this text synthetic.")],
        build=lambda values: MarkerSignal(values["marker"]) if values["marker"] else None,
    )
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenance.declared import DEFAULT_RULES, DeclaredRule, DeclaredSignal
from provenance.errors import ConfigError, OptionValueError
from provenance.ledger import Ledger
from provenance.schema import Evidence
from provenance.signals import LedgerExactSignal, LedgerNearSignal

if TYPE_CHECKING:
    from provenance.signals import Signal

__all__ = [
    "DEFAULT_NEAR_THRESHOLD",
    "OptionValueError",
    "SignalKind",
    "SignalOption",
    "build_signals",
    "evidence_taggers",
    "fusion_order",
    "register_signal",
    "signal_kind",
    "signal_kinds",
    "signal_options",
    "tagger_options",
    "unregister_signal",
]

DEFAULT_NEAR_THRESHOLD = 0.8

#: Names no option may take: the other keywords of ``tag`` / ``tag_corpus`` and the other
#: parameters of ``tailguard tag``.
RESERVED = frozenset({
    "source", "input", "output", "options", "signals", "id_field", "text_field", "strict",
    "batch_size", "on_reject", "progress", "estimate_prevalence", "engine", "ray_address",
    "as_json", "quiet", "help",
})


@dataclass(frozen=True)
class SignalOption:
    """One option of a kind of evidence: a ``tag_corpus`` keyword and a ``tailguard tag`` option.

    Parameters
    ----------
    name : str
        The keyword (``near_threshold``); on the command line ``--near-threshold``, or ``flag``.
    type : type, default str
        What the command line parses: ``str``, ``int``, ``float``, ``bool`` (a flag that takes
        no value) or ``pathlib.Path`` (a file).
    help : str
        One or two sentences for ``tailguard tag --help``.
    default : any, default None
        The value when the option is not given (``None``: the kind is off, as a rule).
    flag, metavar, multiple, envvar, show_default
        The command-line form, with click's meanings.
    bounds : (low, high, low_open, high_open), optional
        The range a number must lie in on the command line (``(0, 1, True, False)``: (0, 1]).
    reads : bool, default False
        The option names a file or folder the run reads, which the output must not overwrite.

    Examples
    --------
    >>> SignalOption("near_threshold", float).cli_flag
    '--near-threshold'
    """

    name: str
    type: type = str
    help: str = ""
    default: Any = None
    flag: str | None = None
    metavar: str | None = None
    multiple: bool = False
    envvar: str | None = None
    show_default: bool = False
    bounds: tuple[float | None, float | None, bool, bool] | None = None
    reads: bool = False

    @property
    def cli_flag(self) -> str:
        """How ``tailguard tag`` spells the option."""
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class SignalKind:
    """A registered kind of evidence; see :func:`register_signal` for the fields."""

    name: str
    order: float
    build: Callable[[Mapping[str, Any]], Signal | None]
    options: tuple[SignalOption, ...] = ()
    cli_options: tuple[SignalOption, ...] = ()
    from_cli: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    tagger: str | None = None
    wants_gpu: bool = False
    loads_model: bool = False

    def keywords_from_cli(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """This kind's ``tag_corpus`` keywords from the values of its command-line options."""
        if self.from_cli is None:
            return {option.name: values[option.name] for option in self.options}
        return dict(self.from_cli(values))

    def given(self, values: Mapping[str, Any]) -> bool:
        """Whether one of the kind's own options has a value in ``values``."""
        return any(values.get(option.name) is not None for option in self.options)


_KINDS: dict[str, SignalKind] = {}


def register_signal(
    name: str,
    *,
    order: float,
    build: Callable[[Mapping[str, Any]], Signal | None],
    options: Sequence[SignalOption] = (),
    cli_options: Sequence[SignalOption] | None = None,
    from_cli: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    tagger: str | None = None,
    wants_gpu: bool = False,
    loads_model: bool = False,
) -> SignalKind:
    """Register a kind of evidence, so that the tagger, ``tag_corpus``, Ray and ``tailguard tag``
    know it.

    Parameters
    ----------
    name : str
        The kind's ``prov_evidence`` value, which its signal's ``evidence`` must equal.
    order : float
        Its place in the fusion order: kinds are asked in increasing order and the first with
        evidence about a document decides it. The built-in kinds stand at 100 (declared),
        200 (ledger_exact), 300 (watermark), 400 (ledger_near) and 500 (detector).
    build : callable
        ``build(values) -> Signal | None``: the signal for a run's option values (every
        registered option, defaults filled in, and ``values["ledger"]`` an open
        :class:`~provenance.ledger.Ledger` or ``None``), or ``None`` where the kind is off. Each
        process that tags calls it once (every Ray worker).
    options : sequence of SignalOption
        Its keywords of ``tag`` / ``tag_corpus``, which are also options of ``tailguard tag``.
    cli_options, from_cli : optional
        A command-line form of its own: those options, and the function that turns their values
        into its keywords (an :class:`OptionValueError` it raises is reported as a bad value of
        the first of them, a usage error; other errors as what they are).
    tagger : str, optional
        The name a collapse experiment gives the tagger that trusts this kind (``filter:ledger``);
        the kinds that share a name are used together (:func:`tagger_options`).
    wants_gpu : bool, default False
        Its signal computes with a model: a Ray worker asks for a GPU when the cluster has one.
    loads_model : bool, default False
        Building it loads a model: on Ray only the workers build it, the driver does not build
        it to check the options first.

    Returns
    -------
    SignalKind
        What was registered; :func:`unregister_signal` takes it back by name.
    """
    if not isinstance(name, str) or not name or name == Evidence.NONE.value:
        raise ConfigError(f"an evidence kind needs a name other than 'none', got {name!r}")
    if name in _KINDS:
        raise ConfigError(f"evidence kind {name!r} is already registered")
    if any(kind.order == order for kind in _KINDS.values()):
        taken = next(kind.name for kind in _KINDS.values() if kind.order == order)
        raise ConfigError(f"evidence kind {name!r}: order {order} is taken by {taken!r}; "
                          "choose another")
    kind = SignalKind(name, order, build, tuple(options),
                      tuple(options if cli_options is None else cli_options), from_cli, tagger,
                      wants_gpu, loads_model)
    taken = {option.name for other in _KINDS.values()
             for option in (*other.options, *other.cli_options)} | RESERVED
    clash = sorted({option.name for option in (*kind.options, *kind.cli_options)} & taken)
    if clash:
        raise ConfigError(f"evidence kind {name!r}: option name {clash[0]!r} is taken")
    _KINDS[name] = kind
    return kind


def unregister_signal(name: str) -> SignalKind:
    """Take a kind of evidence out of the registry (a test's or a plugin's); returns it."""
    return _KINDS.pop(signal_kind(name).name)


def signal_kind(name: str) -> SignalKind:
    """The registered kind of evidence ``name``."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(
            f"no evidence kind {name!r} is registered (registered: {', '.join(_KINDS)}); "
            "register it with provenance.registry.register_signal"
        ) from None


def signal_kinds(*, fusion: bool = True) -> tuple[SignalKind, ...]:
    """Every registered kind, in fusion order (or, with ``fusion=False``, as registered)."""
    kinds = tuple(_KINDS.values())
    return tuple(sorted(kinds, key=lambda kind: kind.order)) if fusion else kinds


def fusion_order(name: str) -> float:
    """The place of kind ``name`` in the fusion order (lower: asked first)."""
    return signal_kind(name).order


def signal_options(kinds: Sequence[SignalKind] | None = None) -> dict[str, SignalOption]:
    """The evidence keywords of ``tag`` / ``tag_corpus``: the options of ``kinds`` (default:
    every registered kind), as registered."""
    kinds = signal_kinds(fusion=False) if kinds is None else kinds
    return {option.name: option for kind in kinds for option in kind.options}


def build_signals(values: Mapping[str, Any], *, kinds: Sequence[SignalKind] | None = None,
                  models: bool = True) -> list[Signal]:
    """The signals of every kind (of ``kinds``, default the registered ones) that ``values``
    turns on, in fusion order.

    ``values`` holds evidence keywords (the others take their defaults); a ledger in it must be
    open. ``models=False`` skips the kinds that load a model (to check options cheaply).
    """
    kinds = signal_kinds() if kinds is None else sorted(kinds, key=lambda kind: kind.order)
    full = {name: option.default for name, option in signal_options(kinds).items()} | dict(values)
    signals = []
    for kind in kinds:
        if kind.loads_model and not models:
            continue
        signal = kind.build(full)
        if signal is None:
            continue
        if signal.name != kind.name:
            raise ConfigError(f"evidence kind {kind.name!r} built a signal of kind "
                              f"{signal.name!r}; its evidence must be {kind.name!r}")
        signals.append(signal)
    return signals


def evidence_taggers() -> tuple[str, ...]:
    """The taggers that trust one part of tailguard's evidence, as a collapse policy names them
    (``filter:ledger``): the registered kinds' ``tagger`` names, as registered."""
    return tuple(dict.fromkeys(kind.tagger for kind in _KINDS.values() if kind.tagger))


def tagger_options(tagger: str, **values: Any) -> dict[str, Any]:
    """The ``tag_corpus`` keywords that tag with ``tagger``'s evidence and nothing else.

    The options of ``tagger``'s kinds take their value in ``values``, else their default; every
    other option is ``None`` (off), and ``values`` for them are ignored.

    Examples
    --------
    >>> tagger_options("watermark", watermark="KEY", ledger="ledger.sqlite")
    {'ledger': None, 'declared': None, 'near_threshold': None, 'watermark': 'KEY', 'detector': None}
    >>> tagger_options("ledger", ledger="ledger.sqlite")["near_threshold"]
    0.8
    """
    if tagger not in evidence_taggers():
        raise ConfigError(f"no evidence tagger {tagger!r}; the taggers are "
                          f"{', '.join(evidence_taggers())}")
    own = {option.name: option for kind in _KINDS.values() if kind.tagger == tagger
           for option in kind.options}
    return {name: (values.get(name, own[name].default) if name in own else None)
            for name in signal_options()}


# ---- the built-in kinds -------------------------------------------------------------------------


def _declared(values: Mapping[str, Any]) -> Signal | None:
    rules = values["declared"]
    if not rules:
        return None
    return DeclaredSignal([DeclaredRule.parse(r) if isinstance(r, str) else r for r in rules])


def _declared_from_cli(values: Mapping[str, Any]) -> dict[str, Any]:
    if values["no_declared"]:
        return {"declared": None}
    fields = values["declared_fields"]
    try:
        return {"declared": [DeclaredRule.parse(spec) for spec in fields] if fields
                else DEFAULT_RULES}
    except ConfigError as exc:
        raise OptionValueError(str(exc)) from None


def _open_ledger(values: Mapping[str, Any]) -> Ledger | None:
    ledger = values["ledger"]
    if ledger is not None and not isinstance(ledger, Ledger):
        raise ConfigError("build_signals needs an open Ledger; wrap a path in opened_ledger()")
    return ledger


def _ledger_exact(values: Mapping[str, Any]) -> Signal | None:
    ledger = _open_ledger(values)
    return None if ledger is None else LedgerExactSignal(ledger)


def _ledger_near(values: Mapping[str, Any]) -> Signal | None:
    ledger, threshold = _open_ledger(values), values["near_threshold"]
    return None if ledger is None or threshold is None else LedgerNearSignal(ledger, threshold)


def _near_from_cli(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"near_threshold": None if values["no_near"] else values["near_threshold"]}


def _watermark(values: Mapping[str, Any]) -> Signal | None:
    from provenance.signals import Signal
    from provenance.watermark import WatermarkSignal

    watermark = values["watermark"]
    if watermark is None or isinstance(watermark, Signal):
        return watermark
    return WatermarkSignal(watermark)


def _watermark_from_cli(values: Mapping[str, Any]) -> dict[str, Any]:
    if not values["watermark_key"]:
        return {"watermark": None}
    from provenance.watermark import WatermarkKey

    return {"watermark": WatermarkKey.load(values["watermark_key"],
                                           hashing_key=values["watermark_secret"])}


def _detector(values: Mapping[str, Any]) -> Signal | None:
    from provenance.detectors import DetectorSignal, load_detector
    from provenance.signals import Signal

    detector = values["detector"]
    if detector is None or isinstance(detector, Signal):
        return detector
    if isinstance(detector, (str, os.PathLike)):
        detector = load_detector(detector)
    return DetectorSignal(detector)


# Registered in the order `tailguard tag --help` lists their options.
register_signal(
    Evidence.LEDGER_EXACT.value, order=200, tagger="ledger", build=_ledger_exact,
    options=[SignalOption("ledger", help="Ledger of known generated content (SQLite file).",
                          reads=True)],
)
register_signal(
    Evidence.DECLARED.value, order=100, build=_declared,
    options=[SignalOption(
        "declared", default=DEFAULT_RULES,
        help="Metadata fields that declare provenance: DeclaredRules or their command-line "
        "form (see DeclaredRule.parse); None ignores metadata.")],
    cli_options=[
        SignalOption(
            "declared_fields", flag="--declared-field", multiple=True,
            metavar="FIELD[=VALUE:LABEL,...]",
            help="Metadata field that declares provenance. FIELD alone uses the standard "
            "vocabulary (true/false, machine-generated, trainedAlgorithmicMedia, ...); FIELD=* "
            "reads any value as a generator name; FIELD=machine:synthetic,human:human maps "
            "values. Repeatable; replaces the default fields."),
        SignalOption("no_declared", bool, "Ignore declared metadata."),
    ],
    from_cli=_declared_from_cli,
)
_NEAR = SignalOption("near_threshold", float,
                     "MinHash Jaccard similarity for a ledger near match.",
                     default=DEFAULT_NEAR_THRESHOLD, show_default=True, bounds=(0, 1, True, False))
register_signal(
    Evidence.LEDGER_NEAR.value, order=400, tagger="ledger", build=_ledger_near, options=[_NEAR],
    cli_options=[_NEAR, SignalOption("no_near", bool, "Only exact ledger matches.")],
    from_cli=_near_from_cli,
)
register_signal(
    Evidence.WATERMARK.value, order=300, tagger="watermark", build=_watermark, wants_gpu=True,
    options=[SignalOption("watermark", help="Your models' watermark: a WatermarkKey with its "
                          "secret, or a WatermarkScorer.")],
    cli_options=[
        SignalOption(
            "watermark_key", Path, reads=True,
            help="Watermark key file (JSON) of your models' generations. Saved without its "
            "secret it is safe to share; saved with it (WatermarkKey.save(path, "
            "include_secret=True)) it is written readable by its owner only (mode 0600)."),
        SignalOption("watermark_secret", int, envvar="TAILGUARD_WATERMARK_SECRET",
                     help="The key's secret, when the file was saved without it "
                     "(or set TAILGUARD_WATERMARK_SECRET)."),
    ],
    from_cli=_watermark_from_cli,
)
register_signal(
    Evidence.DETECTOR.value, order=500, tagger="detector", build=_detector, wants_gpu=True,
    loads_model=True,
    options=[SignalOption(
        "detector", reads=True,
        help="Calibrated detector folder (see tailguard detect-train), or default for the one "
        "tailguard ships, for documents no other evidence decides.")],
)
