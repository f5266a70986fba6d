"""What a numeric model family gives the recursive loop: fit, sample and measure, for many chains.

Everything is batched over a leading chain dimension: ``x`` is (chains, n, *features) and a
model is a dict of tensors with a leading chain dimension (so the loop can checkpoint any family
with safetensors and never unpickle). Random numbers come from :class:`ChainRandom`, keyed by
(chain seed, generation, stream), so a chain's results never depend on the chains beside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from collapse_eval.rng import ChainRandom
from collapse_eval.taggers import quadratic_features

Params = dict[str, torch.Tensor]


@dataclass
class MetricContext:
    """What metrics may compare a generation against.

    ``heldout``: original samples never trained on, (chains, n, *features). ``first``: the
    generation-0 model (trained on original data), e.g. for the VAE's encoder statistics.
    """

    heldout: torch.Tensor
    first: Params
    generation: int


class NumericFamily(ABC):
    """Base class of tensor families (gaussian, gmm; the VAE builds on it too)."""

    name: ClassVar[str]
    #: the metric that reports read as "how much of the tail is left" (see :meth:`tail_loss`)
    tail_metric: ClassVar[str]
    #: the metrics a one-screen summary shows
    summary_metrics: ClassVar[tuple[str, ...]]
    #: the dtype the family runs in unless told otherwise
    default_dtype: ClassVar[str] = "float64"

    def __init__(self, dtype: torch.dtype = torch.float64, device: str = "cpu") -> None:
        self.dtype = dtype
        self.device = torch.device(device)

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The family's settings, part of the run's identity (a resume must match them)."""

    @abstractmethod
    def original(self, rng: ChainRandom, n: int, stream: str) -> torch.Tensor:
        """``n`` samples of the true distribution per chain (the original, human data)."""

    @abstractmethod
    def fit(self, x: torch.Tensor, rng: ChainRandom, generation: int) -> Params:
        """Train one model per chain on ``x`` (chains, n, *features)."""

    @abstractmethod
    def sample(self, params: Params, n: int, rng: ChainRandom, generation: int) -> torch.Tensor:
        """What each chain's model publishes: ``n`` samples, (chains, n, *features)."""

    @abstractmethod
    def metrics(self, params: Params, samples: torch.Tensor,
                context: MetricContext) -> dict[str, torch.Tensor]:
        """Metrics per chain (names from :data:`collapse_eval.metrics.METRICS`), each (chains,)."""

    @classmethod
    def tail_loss(cls, values: np.ndarray) -> np.ndarray:
        """How much of the tail is lost, from :attr:`tail_metric` values (0 = nothing lost).

        The default reads the metric as a share kept: loss = 1 - value. For ``tail_recall``
        (gaussian, gmm), normalised so that the original scores 1, that is 0 under no collapse
        and negative for a model wider than the original; the VAE's recall is raw (a fresh
        original sample's value is below 1), so there only differences between policies count.
        """
        return 1.0 - values

    def write_artifacts(self, params: Params, samples: torch.Tensor, generation: int,
                        folder: Path) -> None:
        """Write pictures worth looking at for this generation (e.g. a grid of samples).

        Called after every generation with a per-policy folder; the default writes nothing.
        Files must be written atomically and be a pure function of the arguments, so a resumed
        run leaves the same files.
        """
        return None

    def discriminator_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features the learned discriminator sees; quadratic suits low-dimensional data."""
        return quadratic_features(x.double())
