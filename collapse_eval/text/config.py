"""What an LM collapse run is: its configuration, saved as ``config.json`` in the run folder (a
resume must match it), and the defaults of the paper-like settings."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collapse_eval.policies import parse_policies
from collapse_eval.text import evidence
from collapse_eval.text.model import MODEL_SHAPE_FIELDS, LMRecipe
from collapse_eval.text.options import DEFAULT_LM_POLICIES, DETECTOR_SOURCES
from provenance.errors import ConfigError

DECODINGS = ("sample", "beam")
#: Recipe defaults when ``model`` fine-tunes a pretrained LM (as the paper fine-tunes OPT-125m):
#: the from-scratch learning rate would wreck pretrained weights.
FINE_TUNE_DEFAULTS = {"lr": 5e-5, "epochs": 5, "weight_decay": 0.0}


@dataclass(frozen=True)
class LMCollapseConfig:
    """Everything that determines an LM run's results but the machine: the device and torch's
    CPU thread count change the order of floating-point sums, so a run repeats bit for bit on
    the same device with the same ``threads`` (recorded in ``run.json``), and ``jobs`` never
    changes a result.

    ``recipe`` overrides :class:`~collapse_eval.text.model.LMRecipe` fields (its model shape is
    used only when ``model`` is None, i.e. a GPT-2 trained from scratch; fine-tuning starts
    from :data:`FINE_TUNE_DEFAULTS`). ``max_train_docs``
    keeps the first that many human training documents, for quick runs. Each generated
    document is ``doc_tokens`` tokens (default: the block minus the prompt) continuing a
    ``prompt_tokens``-token prompt.

    ``detector_source`` says how the ``detector`` tagger gets its detector: ``trained`` (fitted
    on the first generation's published documents against held-out human text, scored by
    ``detector_model``), ``shipped`` (tailguard's pretrained detector, threshold recalibrated)
    or ``zero-shot`` (Fast-DetectGPT scored by ``detector_model``, kept for comparison).
    """

    #: the family's name (not a field: it is not a setting; config.json records it)
    family: ClassVar[str] = "lm"

    policies: tuple[str, ...] = DEFAULT_LM_POLICIES
    generations: int = 10
    seeds: tuple[int, ...] = (0,)
    dataset: str | None = None
    max_articles: int | None = None
    max_train_docs: int | None = None
    model: str | None = None
    gguf_file: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 16
    doc_tokens: int | None = None
    decoding: str = "sample"
    num_beams: int = 5
    temperature: float = 1.0
    top_k: int | None = None
    repetition_penalty: float | None = None
    watermark_bias: float = 2.0
    detector_fpr: float = 0.05
    detector_model: str = "smollm2-135m"
    detector_source: str = "trained"

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(p.name for p in parse_policies(self.policies)))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "recipe", dict(self.recipe))
        self.lm_recipe()  # validates the overrides
        shaped = sorted(set(self.recipe) & set(MODEL_SHAPE_FIELDS))
        if self.model is not None and shaped:
            raise ConfigError(f"recipe {', '.join(shaped)} shape a GPT-2 trained from scratch; "
                              f"{self.model} brings its own shape")
        for name in ("generations", "prompt_tokens", "num_beams"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_train_docs", "doc_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError("seeds must be a non-empty list of distinct integers >= 0")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {', '.join(DECODINGS)}, got "
                              f"{self.decoding!r}")
        if not self.watermark_bias > 0:
            raise ConfigError(f"watermark_bias must be > 0, got {self.watermark_bias}")
        if not 0.0 < self.detector_fpr < 1.0:
            raise ConfigError(f"detector_fpr must be in (0, 1), got {self.detector_fpr}")
        if self.detector_source not in DETECTOR_SOURCES:
            raise ConfigError(f"detector_source must be one of {', '.join(DETECTOR_SOURCES)}, "
                              f"got {self.detector_source!r}")
        if self.doc_length < 1:
            raise ConfigError(f"prompt_tokens ({self.prompt_tokens}) leaves no room in a "
                              f"{self.lm_recipe().block}-token block; lower it or set doc_tokens")
        for policy in parse_policies(self.policies):
            if policy.tagger is not None and policy.tagger.kind == "noisy":
                raise ConfigError(f"policy {policy.name}: the LM family tags real text; use "
                                  f"one of {', '.join(evidence.TEXT_TAGGERS)}")

    def lm_recipe(self) -> LMRecipe:
        base = LMRecipe().to_dict()
        if self.model is not None:
            base.update(FINE_TUNE_DEFAULTS)
        return LMRecipe.from_dict({**base, **self.recipe})

    @property
    def doc_length(self) -> int:
        return self.doc_tokens or self.lm_recipe().block - self.prompt_tokens

    def recorded_recipe(self) -> dict[str, Any]:
        """The recipe as ``run.json`` records it: a fine-tuned model's shape is its own, so
        the from-scratch shape fields are left out rather than shown with values not used."""
        recipe = self.lm_recipe().to_dict()
        if self.model is not None:
            recipe = {k: v for k, v in recipe.items() if k not in MODEL_SHAPE_FIELDS}
        return recipe

    def as_dict(self) -> dict[str, Any]:
        data = {"family": self.family, **asdict(self)}
        data["policies"], data["seeds"] = list(self.policies), list(self.seeds)
        return data


def load_lm_config(out_dir: str | os.PathLike) -> LMCollapseConfig:
    """The config of an LM run folder (to report or resume it)."""
    return config_from_dict(json.loads((Path(out_dir) / "config.json")
                                        .read_text(encoding="utf-8")))


def config_from_dict(data: dict[str, Any]) -> LMCollapseConfig:
    """The config :meth:`LMCollapseConfig.as_dict` saved (``config.json``, a worker's task)."""
    return LMCollapseConfig(**{k: tuple(v) if isinstance(v, list) and k != "recipe" else v
                               for k, v in data.items() if k != "family"})
