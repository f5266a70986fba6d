"""What a label says: one reading of "human" and "synthetic" wherever tailguard reads one.

Training a detector, calibrating it and evaluating it all read a label field, and a user who
trains on a file must be able to evaluate on the same file: the same values must mean the same
thing everywhere, including a parquet column of floats (``0.0`` / ``1.0``) and the names other
tools write (``machine``, ``generated``, ``ai``). A value that is neither is refused in one
line naming the value and, for a corpus, the file and line (or row) it is on: never guessed,
never read as human.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from provenance.errors import InputError

#: Values (lower-cased, stripped) that mean "written by a model".
SYNTHETIC_NAMES = frozenset({"1", "true", "synthetic", "machine", "generated",
                             "machine-generated", "ai"})
#: Values that mean "written by people".
HUMAN_NAMES = frozenset({"0", "false", "human"})
#: What to write instead of a value that is neither.
LABEL_HELP = "use human/machine, human/synthetic or 0/1"


def is_synthetic(value: Any) -> bool | None:
    """True for a synthetic label, False for a human one, None for anything else.

    Booleans, the numbers 0 and 1 (``1.0`` too), the names above in any case and
    :class:`~provenance.schema.Label` members are labels; ``unknown``, missing values and
    other numbers are not.

    Examples
    --------
    >>> [is_synthetic(v) for v in ("Machine ", 0, 1.0, True, "human", "unknown", None, 0.5)]
    [True, False, True, True, False, None, None, None]
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.number):
        if isinstance(value, float | np.floating) and math.isnan(value):
            return None
        return {0: False, 1: True}.get(value) if value in (0, 1) else None
    if value is None:
        return None
    name = str(getattr(value, "value", value)).strip().lower()  # a Label member: its value
    if name in SYNTHETIC_NAMES:
        return True
    if name in HUMAN_NAMES:
        return False
    return None


def not_a_label(value: Any) -> str:
    return f"label {value!r} is neither human nor synthetic; {LABEL_HELP}"


def binary_labels(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Labels as a bool array (True = synthetic); the first value that is not a label is
    refused naming its position (``row``).

    Examples
    --------
    >>> binary_labels(["human", "machine", 1, 0.0]).tolist()
    [False, True, True, False]
    >>> try:
    ...     binary_labels(["human", "robot"])
    ... except InputError as exc:
    ...     print(exc.row, exc)  # doctest: +ELLIPSIS
    1 row 1: label 'robot' is neither human nor synthetic; use human/machine, ...
    """
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise InputError(f"labels must be one-dimensional, got shape {labels.shape}")
        if labels.dtype == bool:
            return labels
        if np.issubdtype(labels.dtype, np.number):
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if bad.size:
                raise InputError(not_a_label(labels[bad[0]].item()), row=int(bad[0]))
            return labels == 1
        labels = labels.tolist()
    out = np.empty(len(labels), dtype=bool)
    for row, value in enumerate(labels):
        synthetic = is_synthetic(value)
        if synthetic is None:
            raise InputError(not_a_label(value), row=row)
        out[row] = synthetic
    return out


def corpus_labels(corpus: Any, field: str, source: str | None = None) -> np.ndarray:
    """The labels of a corpus read with ``origins=True`` (True = synthetic); a value that is
    not a label is refused naming the file, line (or row) and field where it was read.

    ``source`` names the input for a corpus read without origins (an in-memory table).
    """
    values = corpus.frame.get_column(field).to_list()
    try:
        return binary_labels(values)
    except InputError as exc:  # its row is the frame's: say where that row was read
        message = not_a_label(values[exc.row])
        if corpus.origins is not None:
            raise corpus.origins[exc.row].error(message, field) from None
        raise InputError(message, file=source, row=exc.row, field=field) from None
