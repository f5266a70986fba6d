"""The interface every detector implements, and the raw scores it returns.

A detector's raw criterion means nothing until it is calibrated (see :mod:`.calibration`); what
the interface fixes is that scoring never fails on one bad document: a text that cannot be
scored gets NaN and the reason, so one empty row does not lose a batch of a million.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from provenance.errors import ConfigError, InputError


@dataclass
class Scores:
    """Raw criterion values for a list of texts, and why any of them could not be scored.

    ``values[i]`` is NaN exactly when ``reasons[i]`` is set, so a batch never fails because one
    document is empty, too short or not a string.
    """

    values: np.ndarray
    reasons: list[str | None]
    n_tokens: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Scores:
        return cls(np.full(n, np.nan), [None] * n, np.zeros(n, dtype=np.int64))


class Detector(ABC):
    """Scores texts by how machine-like they look: higher = more likely generated.

    Subclasses implement :meth:`score_detailed` and :meth:`spec` (the JSON that rebuilds them,
    see :func:`detector_from_spec`).
    """

    kind: ClassVar[str]
    min_tokens: int

    @property
    def name(self) -> str:
        return self.kind

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """The raw criterion of each text (float64; NaN where it cannot be scored)."""
        return self.score_detailed(texts).values

    @abstractmethod
    def score_detailed(self, texts: Sequence[str]) -> Scores:
        """Criterion values with the reason for every NaN and the token count used."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable parameters that :func:`detector_from_spec` rebuilds it from."""

    def save_weights(self, folder: Path) -> None:  # noqa: B027 - optional hook
        """Write any learned weights next to the spec (zero-shot detectors have none)."""


def reason_counts(reasons: Sequence[str | None]) -> dict[str, int]:
    """How many texts were refused for each kind of reason (the reason up to its first colon
    or parenthesis, so "too few tokens: 3 < 16" and "... : 5 < 16" count together).

    >>> reason_counts(["too few tokens: 3 < 16", None, "too few tokens: 5 < 16",
    ...                "not English (0% of letters are Latin); ..."])
    {'too few tokens': 2, 'not English': 1}
    """
    from provenance.schema import reason_kind

    out: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            key = reason_kind(r)
            out[key] = out.get(key, 0) + 1
    return out


def as_texts(texts: Sequence[str]) -> list[Any]:
    if isinstance(texts, (str, bytes)):
        raise InputError("expected a list of texts, got a single string; wrap it in a list")
    return list(texts)


def text_problem(text: Any) -> str | None:
    if not isinstance(text, str):
        return f"not a string ({type(text).__name__})"
    if not text.strip():
        return "empty text"
    return None


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
