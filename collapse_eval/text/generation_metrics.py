"""What one generation of the language-model recursion is measured by.

The model of generation g is scored where collapse shows first (Shumailov et al.): its
perplexity on the real test split, the tails of the text it publishes (rare n-grams it still
produces, its diversity and vocabulary, its token distribution against the human one), and the
perplexity the *generation-0* model assigns to each sequence of generation g's training data --
the paper's histograms, in which mass moves to low perplexity (the model's favourite phrasings)
and a long tail of high-perplexity errors appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from collapse_eval.text.model import perplexity, sequence_perplexities
from collapse_eval.text.text_metrics import (
    distinct_n,
    perplexity_quantiles,
    rare_ngram_recall,
    unigram_kl,
    vocab_coverage,
)

__all__ = ["LM_TAIL_METRIC", "HumanReference", "generation_metrics"]

#: The metric the report and bench use as the language model's tail (higher = more tail kept).
LM_TAIL_METRIC = "rare_ngram_recall"

LM_METRIC_DEFINITIONS = {
    "test_perplexity": "perplexity of the generation's model on the real test split",
    "valid_perplexity": "perplexity of the generation's model on the real validation split",
    "rare_ngram_recall": "share of bigrams seen 1-5 times in the human training data that the "
    "generation's published text contains",
    "rare_trigram_recall": "the same for trigrams",
    "distinct_1": "distinct unigrams / unigrams in the published text",
    "distinct_2": "distinct bigrams / bigrams in the published text",
    "distinct_3": "distinct trigrams / trigrams in the published text",
    "unigram_kl": "KL(human training tokens || published tokens), nats, add-0.5 smoothed",
    "vocab_coverage": "share of the human training data's token types the published text uses",
    "data_perplexity_qXX": "percentiles of the per-sequence perplexity of the generation's "
    "training blocks under the generation-0 model",
    "tagger_tpr_newest": "share of the newest documents on the web (those the previous model "
    "published) that the filter's tagger flags: how well it catches each new generation, where "
    "tagger_tpr mixes every generation's",
}


@dataclass
class HumanReference:
    """The fixed human side of every comparison, tokenized once per run."""

    train_pieces: list[np.ndarray]
    valid_blocks: torch.Tensor
    test_blocks: torch.Tensor
    vocab_size: int


def generation_metrics(
    model: Any,
    first_model: Any,
    training_blocks: torch.Tensor,
    published: Sequence[np.ndarray],
    human: HumanReference,
) -> tuple[dict[str, float], np.ndarray]:
    """The generation's metrics, and the per-sequence perplexities behind the quantiles."""
    data_ppl = sequence_perplexities(first_model, training_blocks)
    metrics = {
        "test_perplexity": perplexity(model, human.test_blocks),
        "valid_perplexity": perplexity(model, human.valid_blocks),
        "rare_ngram_recall": rare_ngram_recall(human.train_pieces, published, n=2),
        "rare_trigram_recall": rare_ngram_recall(human.train_pieces, published, n=3),
        "distinct_1": distinct_n(published, 1),
        "distinct_2": distinct_n(published, 2),
        "distinct_3": distinct_n(published, 3),
        "unigram_kl": unigram_kl(human.train_pieces, published, human.vocab_size),
        "vocab_coverage": vocab_coverage(published, human.vocab_size,
                                         reference_ids=human.train_pieces),
    }
    metrics.update({f"data_{k}": v for k, v in perplexity_quantiles(data_ppl).items()})
    return metrics, data_ppl
