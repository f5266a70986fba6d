"""Head inputs measured against human text of the same source: the reference head's view.

A supervised detector trained on some sources meets others: a crawl of legal pages, medical
abstracts or student essays whose *human* text already sits elsewhere in feature space than
any training file's (rarer words, longer sentences, another register). A fixed head reads that
shift as evidence. Measured leave-one-dataset-out on the four labelled files
(``benchmarks/bench_detect_lodo.py``), a second head that also sees each input *standardised by
the median and interquartile range of the human texts of its own source* transfers better, once
it is given a few hundred human texts of the new source (the ones ``tailguard detect-calibrate``
already reads): mean held-out AUROC 0.769 -> 0.785 and TPR at 1% FPR 0.151 -> 0.235, with the
threshold re-set on the same human texts in both cases.

:class:`HumanReference` is that median and spread. In training, each input file with at least
:data:`MIN_REFERENCE_TEXTS` human documents is its own source (the others are standardised by
the pooled human documents); the reference head is only trained where two or more files have
their own reference, since otherwise there is no shift between sources to learn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from provenance.errors import InputError

#: Fewest human texts of a source from which a reference is taken (a median and quartiles of
#: ~100 features are stable well below this; far fewer would make the view noise).
MIN_REFERENCE_TEXTS = 30


@dataclass(frozen=True)
class HumanReference:
    """Per-feature median and interquartile range of human texts' head inputs.

    Examples
    --------
    >>> x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    >>> ref = HumanReference.of(x)
    >>> ref.centre.tolist(), ref.scale.tolist(), ref.n
    ([2.5, 25.0], [1.5, 15.0], 4)
    >>> ref.standardise(np.array([[2.5, 40.0]])).tolist()
    [[0.0, 1.0]]
    """

    centre: np.ndarray
    scale: np.ndarray
    n: int

    @classmethod
    def of(cls, human_inputs: np.ndarray) -> HumanReference:
        x = np.asarray(human_inputs, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise InputError("a human reference needs the head inputs of at least one text")
        q1, centre, q3 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
        scale = q3 - q1
        spread = x.std(0)
        # a column constant over most texts (an extreme that is rarely reached) has IQR 0:
        # its standard deviation, or 1, keeps it finite
        scale = np.where(scale > 1e-9, scale, np.where(spread > 1e-9, spread, 1.0))
        return cls(centre, scale, len(x))

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.centre) / self.scale

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "centre": [float(v) for v in self.centre],
                "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HumanReference:
        return cls(np.asarray(d["centre"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64), int(d["n"]))


def with_reference(x: np.ndarray, reference: HumanReference) -> np.ndarray:
    """The reference head's input: the head inputs, then the same standardised by
    ``reference`` (the raw columns keep what the plain head knows)."""
    return np.hstack([np.asarray(x, dtype=np.float64), reference.standardise(x)])


def by_source(x: np.ndarray, y: np.ndarray, sources: np.ndarray
              ) -> tuple[np.ndarray, dict[str, HumanReference], HumanReference]:
    """(reference-head inputs of every row, each source's reference, the pooled reference).

    A source with fewer than :data:`MIN_REFERENCE_TEXTS` human rows is standardised by the
    pooled human rows instead.

    >>> x = np.arange(80.0).reshape(40, 2); y = np.array([0, 1] * 20)
    >>> rows, refs, pooled = by_source(x, y, np.array(["a"] * 40))
    >>> rows.shape, sorted(refs), pooled.n
    ((40, 4), [], 20)
    """
    x = np.asarray(x, dtype=np.float64)
    pooled = HumanReference.of(x[y == 0])
    own = {}
    for source in sorted(set(np.asarray(sources).tolist())):
        humans = (sources == source) & (y == 0)
        if humans.sum() >= MIN_REFERENCE_TEXTS and (sources != source).any():
            own[source] = HumanReference.of(x[humans])
    return against_sources(x, sources, own, pooled), own, pooled


def against_sources(x: np.ndarray, sources: np.ndarray, own: dict[str, HumanReference],
                    pooled: HumanReference) -> np.ndarray:
    """Reference-head inputs of rows from several sources: each row against its source's
    reference, or ``pooled`` where its source has none."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((len(x), 2 * x.shape[1]))
    for source in set(np.asarray(sources).tolist()):
        rows = sources == source
        out[rows] = with_reference(x[rows], own.get(source, pooled))
    return out
