"""Model families of the recursive experiments: the tensor families' base class and, by name,
their classes (the registry itself is :mod:`collapse_eval.family_registry`)."""

from __future__ import annotations

from typing import Any

from collapse_eval.families.base import MetricContext, NumericFamily, Params
from collapse_eval.family_registry import (
    DEFAULT_POLICIES,
    FAMILIES,
    NUMERIC_FAMILIES,
    TENSOR_OPTIONS,
    FamilyOption,
    FamilySpec,
    family_spec,
    register_family,
    register_numeric_family,
)
from provenance.errors import ConfigError


def family_class(name: str) -> type[NumericFamily]:
    """The class of a numeric family (imported lazily: the GMM pulls in its EM code)."""
    spec = family_spec(name)
    if spec.family_path is None:
        raise ConfigError(f"unknown numeric family {name!r}; numeric families: "
                          f"{', '.join(NUMERIC_FAMILIES)}")
    return spec.numeric_class()


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
    "DEFAULT_POLICIES", "FAMILIES", "NUMERIC_FAMILIES", "TENSOR_OPTIONS", "FamilyOption",
    "FamilySpec", "MetricContext", "NumericFamily", "Params", "family_class", "family_spec",
    "make_family", "register_family", "register_numeric_family",
]
