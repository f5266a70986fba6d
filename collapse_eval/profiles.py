"""What the report needs to know of a family: its tail metric, how to read it as a loss, and
which metrics summarise a run -- for the numeric families and the language model alike.

Tensor families carry this on their class (:class:`~collapse_eval.families.base.NumericFamily`);
a family of another kind (the language model, on documents) gives it from its world's
``profile``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from collapse_eval.families import NumericFamily, family_class, family_spec
from collapse_eval.metrics import METRICS


def share_lost(values: np.ndarray) -> np.ndarray:
    """A tail metric read as a share kept: the loss is ``1 - value``."""
    return 1.0 - values


@dataclass(frozen=True)
class FamilyProfile:
    """A family as the report reads it."""

    name: str
    tail_metric: str
    summary_metrics: tuple[str, ...]
    tail_loss: Callable[[np.ndarray], np.ndarray]
    definitions: dict[str, str] = field(default_factory=dict)
    #: what one generation's training set counts ("samples", "documents")
    unit: str = "samples"
    #: how the tail loss is computed from the tail metric, in words
    loss_text: str = ""
    #: the report shows a by-generation table of the summary metrics (few, costly generations)
    by_generation_table: bool = False
    #: plots the run folder holds that the report shows: (file under plots/, caption)
    run_plots: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.loss_text:
            object.__setattr__(self, "loss_text", f"1 - {self.tail_metric}")

    def describe(self, metric: str) -> str:
        """The metric's definition ('' when it has none)."""
        if metric.startswith("data_perplexity_q") and metric not in self.definitions:
            return self.definitions.get("data_perplexity_qXX", "")
        return self.definitions.get(metric, "")


def family_profile(name: str) -> FamilyProfile:
    """The profile of a registered family; unknown names are a ConfigError."""
    spec = family_spec(name)
    if spec.family_path is None:
        return spec.world_class.profile(spec)
    cls = family_class(name)
    own = any("tail_loss" in vars(c) for c in cls.__mro__ if c is not NumericFamily)
    loss_text = (cls.tail_loss.__doc__ or "").strip().splitlines()[0].rstrip(".") if own else ""
    return FamilyProfile(name, cls.tail_metric, tuple(cls.summary_metrics), cls.tail_loss,
                         dict(METRICS), loss_text=loss_text)
