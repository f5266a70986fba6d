"""What the report needs to know of a family: its tail metric, how to read it as a loss, and
which metrics summarise a run -- for the numeric families and the language model alike.

Numeric families carry this on their class (:class:`~collapse_eval.families.base.NumericFamily`);
the language model is not a numeric family (it runs on documents, not tensors), so its profile is
written here, from :mod:`collapse_eval.text.generation_metrics`' definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from collapse_eval.families import NumericFamily, family_class
from collapse_eval.metrics import METRICS

#: the LM's one-screen summary: perplexity, diversity, distance from the human tokens, the
#: paper's data perplexity and how synthetic the training set was
LM_SUMMARY_METRICS = ("rare_ngram_recall", "test_perplexity", "distinct_2", "unigram_kl",
                      "data_perplexity_q50", "synthetic_share")


def _share_lost(values: np.ndarray) -> np.ndarray:
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

    def __post_init__(self) -> None:
        if not self.loss_text:
            object.__setattr__(self, "loss_text", f"1 - {self.tail_metric}")

    def describe(self, metric: str) -> str:
        """The metric's definition ('' when it has none)."""
        if metric.startswith("data_perplexity_q") and metric not in self.definitions:
            return self.definitions.get("data_perplexity_qXX", "")
        return self.definitions.get(metric, "")


def family_profile(name: str) -> FamilyProfile:
    """The profile of ``name`` (gaussian, gmm, vae or lm); unknown names are a ConfigError."""
    if name == "lm":
        # imported here: the text package pulls in the language-model code
        from collapse_eval.text.generation_metrics import LM_METRIC_DEFINITIONS, LM_TAIL_METRIC

        definitions = {**METRICS, **LM_METRIC_DEFINITIONS}
        return FamilyProfile("lm", LM_TAIL_METRIC, LM_SUMMARY_METRICS, _share_lost,
                             definitions, unit="documents")
    cls = family_class(name)
    own = any("tail_loss" in vars(c) for c in cls.__mro__ if c is not NumericFamily)
    loss_text = (cls.tail_loss.__doc__ or "").strip().splitlines()[0].rstrip(".") if own else ""
    return FamilyProfile(name, cls.tail_metric, tuple(cls.summary_metrics), cls.tail_loss,
                         dict(METRICS), loss_text=loss_text)
