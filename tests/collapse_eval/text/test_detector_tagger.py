"""The ``detector`` tagger inside the LM loop: refitted each generation on what the lab knows."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pytest

from collapse_eval.engine import run_collapse
from provenance.errors import TailguardWarning
from tests.collapse_eval.text.lm_settings import small_config


@pytest.mark.slow  # three generations: ~90 s of CPU (pytest -m slow)
def test_the_trained_detector_is_refitted_each_generation_and_tags_the_newest_unseen(
        tmp_path: Path, tiny_gpt2):
    """Generation 1's detector is fitted on generation 1's documents; generation 2 knows no
    more and keeps it; generation 3's is fitted on generations 1 and 2 and tags generation 3's
    documents, which it never saw. The scorer is a tiny LM that never read the run's articles
    (the default, SmolLM2-135M, is too slow for the default suite on a CPU)."""
    config = small_config(("filter:detector",), 3, 600, articles=8,
                          detector_model=str(tiny_gpt2.path))
    with warnings.catch_warnings():  # 600 documents: generation 0 does not beat the bigram
        warnings.simplefilter("ignore", TailguardWarning)
        run = run_collapse(config, tmp_path / "run", progress=False, threads=1, device="cpu",
                           plots=False)
    chain = tmp_path / "run" / "seed-0" / "filter_detector"
    fitted = {p.parent.name: json.loads(p.read_text())["fitted_on"]
              for p in (chain / "detector").glob("generation-*/training_report.json")}
    assert sorted(fitted) == ["generation-000001", "generation-000003"]
    assert fitted["generation-000001"]["synthetic_from_generations"] == [1]
    assert fitted["generation-000003"]["synthetic_from_generations"] == [1, 2]
    assert fitted["generation-000003"]["synthetic_documents"] > 0
    parts = sorted(p.stem for p in (chain / "tags" / "detector").glob("*.parquet"))
    assert parts == ["generation-1", "generation-2", "generation-3", "human"]
    newest = run.results.filter((pl.col("metric") == "tagger_tpr_newest")
                                & (pl.col("generation") == 3))["value"].to_list()
    assert newest and newest[0] >= 0.9
