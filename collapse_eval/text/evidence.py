"""Provenance in the language-model loop: the watermark, the ledger and the taggers.

Every document a model publishes is watermarked while it is sampled and registered in the
ledger with its lineage (the training document whose start was its prompt), exactly as a
careful lab would do with its own generations. The policies that look at the "web" then tag it
with tailguard's own tagger (:func:`provenance.tagger.tag_corpus`), each trusting one kind of
evidence:

=================  ===============================================================================
tagger             evidence
=================  ===============================================================================
``oracle``         the truth (what an ideal tagger would say)
``ledger``         the ledger of everything the lineage's models generated (generation 0's
                   output and the policy's own chain: ``<policy>/ledger.sqlite``), exact and
                   MinHash matches
``watermark``      the green-list watermark (z >= 4, exact binomial test)
``detector``       a detector of machine text, threshold for ``detector_fpr`` on held-out human
                   text, by ``detector_source``: ``trained`` (default) the supervised detector
                   (:func:`provenance.detectors.training.fit_detector`) refitted each
                   generation on the documents the lab knows it generated before the newest
                   ones (generation 1's at first) against the held-out human documents, which
                   no model of the run trained on, with per-token statistics of
                   ``detector_model`` (default SmolLM2-135M, which never read the run's
                   articles; ``generation-0``, the run's first model, memorised the web's human
                   documents and flags them); ``shipped`` tailguard's pretrained detector;
                   ``zero-shot`` Fast-DetectGPT scored by ``detector_model``, P(synthetic) by
                   a Platt map on the first generation's output (it assumes which way machine
                   text leans)
``discriminator``  a supervised n-gram classifier retrained every generation on human training
                   documents vs the newest generation (the text form of the numeric families'
                   discriminator)
=================  ===============================================================================

A document's tags from a fixed tagger never change, so each part of the web (the human data,
each generation) is tagged once, when it is first needed, and kept; the discriminator changes
every generation and re-tags everything. (A ledger near match against a *later* generation
would be the one difference re-tagging could make: the human part is tagged against the ledger
as it was when the web was first scraped.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from collapse_eval.policies import EVIDENCE_TAGGERS, TEXT_TAGGERS
from provenance.atomic import atomic_path
from provenance.registry import tagger_options
from provenance.schema import Label

__all__ = ["TEXT_TAGGERS", "TRUTH", "fixed_tagger", "oracle_tagged", "rates_against_truth",
           "untagged", "watermark_key", "zero_shot_detector", "trained_detector",
           "shipped_detector", "discriminator_detector"]

#: The column that says where a document really came from (for measurement only: no tagger
#: reads it, and the declared-metadata rules do not know it).
TRUTH = "true_origin"


def watermark_key(tokenizer_name: str, vocab_size: int, tokenizer_size: int, *, seed: int,
                  bias: float, device: str = "cpu") -> Any:
    """The run's watermark key: seeded, so a rerun watermarks (and detects) the same way.

    ``vocab_size`` is the model's output size, ``tokenizer_size`` ``len(tokenizer)``.
    """
    from provenance.watermark import WatermarkKey

    return WatermarkKey.generate(
        tokenizer_name, vocab_size, seed=seed, bias=bias,
        tokenizer_vocab_size=None if tokenizer_size == vocab_size else tokenizer_size,
        rng_device="cuda" if device.startswith("cuda") else "cpu")


def zero_shot_detector(scorer: Any, human_texts: Sequence[str], machine_texts: Sequence[str],
                       *, target_fpr: float, device: str) -> Any:
    """Fast-DetectGPT with the scoring model ``scorer`` (a LoadedModel), calibrated as a user
    would: the threshold for ``target_fpr`` on held-out human text, P(synthetic) by a Platt map
    on the first generation's output.

    Mind membership: a scoring model trained on the human documents of the web finds them
    unusually likely, which is what the criterion reads as machine text (see the LM notes in
    the README for the rates measured with the generation-0 model).
    """
    from provenance.detectors import FastDetectGPT, calibrate

    detector = FastDetectGPT(scorer, **_scoring_options(scorer, device))
    return calibrate(detector, list(human_texts), target_fpr, list(machine_texts))


def trained_detector(scorer: Any, human_texts: Sequence[str], machine_texts: Sequence[str],
                     *, store: str | Path, target_fpr: float, device: str, seed: int = 0
                     ) -> tuple[Any, dict[str, Any]]:
    """The supervised detector fitted on known synthetic vs held-out human documents:
    (CalibratedDetector, training report).

    ``scorer`` (a LoadedModel) gives the per-token statistics, cached in the SQLite ``store``
    (a resumed run does not score again); the detector learns from the labels which way each
    feature leans, so a scorer that finds machine text *less* likely than human text serves as
    well as one that finds it more. The threshold holds ``target_fpr`` on out-of-fold scores of
    ``human_texts``. No grouped cross-validation and few folds: it is fitted inside the loop.
    ``human_texts`` must be documents no model of the run trained on (the held-out ones).

    No character n-gram first stage: fitted on held-out articles against samples of a model
    trained on the web, it learns which articles are whose and settles nearly every document
    by it. Measured on the tiny loop (100 articles, 600 documents, scorer SmolLM2-135M): with
    the first stage it flagged 77% of the web's human documents, without it 2.8% (8 articles:
    77% and 11%). No token n-gram columns either, for the same reason at a smaller scale
    (``token_ngrams=False``): counted on the held-out articles, they make every other article
    look foreign. Measured on the small loop (8 articles, the held-out humans one article, an
    outside scorer trained on 32 other articles, target 5%, three seeds): 12.5-13.0% of the
    web's human documents flagged with them, 2.7-3.3% without, every synthetic document caught
    either way. Mind the scorer too: the generation-0 model trained on the web's human
    documents, which then look like its samples to it (99% flagged without the first stage).
    """
    from provenance.detectors import TokenStatistics
    from provenance.detectors.ngram import NgramParams
    from provenance.detectors.token_store import TokenStore
    from provenance.detectors.training import fit_detector, labelled_texts

    statistics = TokenStatistics(scorer, **_scoring_options(scorer, device))
    return fit_detector(labelled_texts(list(human_texts), list(machine_texts)), statistics,
                        TokenStore(store), target_fpr=target_fpr, cv=(), outer_folds=3,
                        inner_folds=2, char_params=NgramParams(n_features=2**16, min_tokens=1),
                        max_auroc_loss=-math.inf,  # no band is within budget: no first stage
                        token_ngrams=False, seed=seed, progress=False)


def shipped_detector(human_texts: Sequence[str], machine_texts: Sequence[str], *,
                     target_fpr: float, device: str) -> Any:
    """tailguard's pretrained detector (``load_detector("default")``), its threshold set anew
    for ``target_fpr`` on held-out human text of the run's domain and its Platt map on the
    first generation's output (its weights are kept as shipped)."""
    from provenance.detectors import calibrate, load_detector

    shipped = load_detector("default", device=device)
    return calibrate(shipped.detector, list(human_texts), target_fpr, list(machine_texts))


def _scoring_options(scorer: Any, device: str) -> dict[str, Any]:
    """How a LoadedModel scores the loop's documents: every token up to its context (at most
    512), documents of 8 tokens and up, in float32 batches of 64."""
    config = scorer.model.config
    positions = getattr(config, "n_positions", None) or getattr(
        config, "max_position_embeddings", 512)
    return {"device": device, "dtype": "float32", "batch_size": 64,
            "max_tokens": min(int(positions), 512), "min_tokens": 8}


def discriminator_detector(human_texts: Sequence[str], machine_texts: Sequence[str],
                           calibration_texts: Sequence[str], *, target_fpr: float) -> Any:
    """An n-gram classifier trained on human vs the newest generation, threshold on held-out."""
    from provenance.detectors import NgramClassifier, calibrate

    labels = ["human"] * len(human_texts) + ["machine"] * len(machine_texts)
    classifier = NgramClassifier(min_tokens=1).fit([*human_texts, *machine_texts], labels)
    return calibrate(classifier, list(calibration_texts), target_fpr, list(machine_texts))


def fixed_tagger(kind: str, *, ledger: Any = None, watermark: Any = None,
                 detector: Any = None) -> dict[str, Any]:
    """The ``tag_corpus`` evidence arguments of one tagger (and nothing else), from the library's
    registry (:func:`provenance.registry.tagger_options`); the discriminator is a detector.

    >>> fixed_tagger("discriminator", detector="D", ledger="L")["detector"]
    'D'
    """
    evidence_kind = "detector" if kind == "discriminator" else kind
    if evidence_kind not in EVIDENCE_TAGGERS:
        raise ValueError(f"no tag_corpus evidence for tagger {kind!r}")
    return tagger_options(evidence_kind, ledger=ledger, watermark=watermark, detector=detector)


def tag_part(part: Path, out: Path, kind: str, **evidence: Any) -> pl.DataFrame:
    """Tag one part of the web with :func:`provenance.tagger.tag_corpus` into ``out``."""
    from provenance.tagger import tag_corpus

    tag_corpus(part, out, **fixed_tagger(kind, **evidence))
    return pl.read_parquet(out)


def oracle_tagged(frame: pl.DataFrame) -> pl.DataFrame:
    """Tags that are the truth: what a perfect tagger would write."""
    synthetic = pl.col(TRUTH) == Label.SYNTHETIC.value
    return frame.with_columns(
        prov_label=pl.when(synthetic).then(pl.lit(Label.SYNTHETIC.value))
        .otherwise(pl.lit(Label.HUMAN.value)),
        prov_score=synthetic.cast(pl.Float64),
    )


def untagged(frame: pl.DataFrame) -> pl.DataFrame:
    """The web as scraped: nobody looked (``scrape``)."""
    return frame.with_columns(prov_label=pl.lit(Label.UNKNOWN.value),
                              prov_score=pl.lit(None, dtype=pl.Float64))


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    """Atomically write ``frame`` to ``path`` (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return path


def rates_against_truth(frame: pl.DataFrame) -> tuple[float, float]:
    """(TPR, FPR) of the ``prov_label`` column against the truth; NaN where a class is absent."""
    truth = frame.get_column(TRUTH).to_numpy() == Label.SYNTHETIC.value
    flagged = frame.get_column("prov_label").to_numpy() == Label.SYNTHETIC.value
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = float((flagged & truth).sum() / truth.sum()) if truth.any() else float("nan")
        fpr = float((flagged & ~truth).sum() / (~truth).sum()) if (~truth).any() else float("nan")
    return tpr, fpr
