"""Model families of the recursive experiments, by name."""

from __future__ import annotations

from typing import Any

from collapse_eval.families.base import MetricContext, NumericFamily, Params
from provenance.errors import ConfigError

NUMERIC_FAMILIES = ("gaussian", "gmm", "vae")


def family_class(name: str) -> type[NumericFamily]:
    """The class of a numeric family (imported lazily: the GMM pulls in its EM code)."""
    if name == "gaussian":
        from collapse_eval.families.gaussian import GaussianFamily

        return GaussianFamily
    if name == "gmm":
        from collapse_eval.families.gmm import GMMFamily

        return GMMFamily
    if name == "vae":
        from collapse_eval.families.vae import VAEFamily

        return VAEFamily
    raise ConfigError(f"unknown family {name!r}; numeric families: {', '.join(NUMERIC_FAMILIES)}")


def make_family(name: str, **options: Any) -> NumericFamily:
    """Build a numeric family from its name and options (unknown options are an error)."""
    cls = family_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"family {name}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"family {name}: {exc}") from None


__all__ = [
    "NUMERIC_FAMILIES", "MetricContext", "NumericFamily", "Params", "family_class", "make_family",
]
