"""Adding a tensor family is one class and one registration (CONTRIBUTING.md, "Add a family"):
a toy family defined here runs through the engine, the command line's settings and the
benchmark's policy checks like a built-in one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from collapse_eval.engine import run_collapse
from collapse_eval.families import (
    FAMILIES,
    FamilyOption,
    MetricContext,
    NumericFamily,
    Params,
    family_spec,
    register_numeric_family,
)
from collapse_eval.rng import ChainRandom
from collapse_eval.run_config import collapse_config


class UniformFamily(NumericFamily):
    """U(0, width), refitted by its sample maximum: each generation's fit is below the last
    one's width, so a chain trained on its own samples shrinks towards 0 (a collapse)."""

    name = "uniform"
    tail_metric = "tail_recall"
    summary_metrics = ("tail_recall", "variance", "synthetic_share")

    def __init__(self, width: float = 1.0, dtype: torch.dtype = torch.float64,
                 device: str = "cpu") -> None:
        super().__init__(dtype, device)
        self.width = float(width)

    def options(self) -> dict[str, Any]:
        return {"width": self.width}

    def original(self, rng: ChainRandom, n: int, stream: str) -> torch.Tensor:
        return self.width * rng.uniform(0, stream, (n, 1), dtype=self.dtype)

    def fit(self, x: torch.Tensor, rng: ChainRandom, generation: int) -> Params:
        return {"width": x[..., 0].amax(dim=1)}

    def sample(self, params: Params, n: int, rng: ChainRandom, generation: int) -> torch.Tensor:
        u = rng.uniform(generation, "sample", (n, 1), dtype=self.dtype)
        return params["width"][:, None, None] * u

    def metrics(self, params: Params, samples: torch.Tensor,
                context: MetricContext) -> dict[str, torch.Tensor]:
        width = params["width"].double()
        # the share of the original's top 10% the model can still produce
        kept = ((width - 0.9 * self.width) / (0.1 * self.width)).clamp(0, 1)
        return {"tail_recall": kept, "variance": width**2 / 12}


@pytest.fixture
def uniform_family() -> Iterator[str]:
    register_numeric_family("uniform", f"{__name__}:UniformFamily", samples=20,
                            options=(FamilyOption("width", "float", "uniform: the width.",
                                                  minimum=0, open_minimum=True),))
    yield "uniform"
    del FAMILIES["uniform"]


def test_a_registered_family_runs_like_a_built_in_one(uniform_family: str,
                                                      tmp_path: Path) -> None:
    config = collapse_config(uniform_family, {"generations": 30, "seeds": 4, "width": 2.0,
                                              "policies": ("replace", "retain:0.5")})
    assert config.family_options == {"width": 2.0} and config.samples == 20
    run = run_collapse(config, tmp_path / "run", device="cpu", progress=False, plots=False)
    last = {p: m for p, _, m, _ in run.summary(["tail_recall"]).iter_rows()}
    # replace loses the top of the range; keeping half the original data holds it
    assert last["replace"] < 0.2 < last["retain:0.5"]
    data, lines = run.report()
    assert data["family"] == "uniform" and "tail_recall" in lines[2]
    assert family_spec("uniform").taggers >= {"oracle", "noisy", "discriminator"}


def test_its_options_are_its_own(uniform_family: str) -> None:
    with pytest.raises(Exception, match="width applies to the uniform family only"):
        collapse_config("gaussian", {"width": 2.0})
    with pytest.raises(Exception, match="a family named 'uniform' is registered already"):
        register_numeric_family("uniform", f"{__name__}:UniformFamily", samples=20)
