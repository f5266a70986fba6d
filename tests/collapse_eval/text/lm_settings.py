"""LM-loop settings the text tests share: a small recipe and a config built on it.

A plain module, not a test module, so that test modules can import it:
``from tests.collapse_eval.text.lm_settings import SMALL_RECIPE, small_config``.
"""

from __future__ import annotations

from collapse_eval.text.config import LMCollapseConfig

#: Small enough for a CPU test, large enough for generation 0 to beat the bigram baseline.
SMALL_RECIPE = {"vocab_size": 512, "n_positions": 64, "n_embd": 64, "n_layer": 1, "n_head": 2,
                "block": 64, "batch_size": 16, "epochs": 3, "lr": 1e-2}


#: SMALL_RECIPE with 32-token blocks, width 32 and one epoch: a third of the time, for tests
#: that check that scheduling or a policy's plumbing works, not what the model learns.
FAST_RECIPE = {**SMALL_RECIPE, "n_positions": 32, "block": 32, "n_embd": 32, "epochs": 1}


#: The smallest LM run that still goes end to end (the model learns little: for the bench and
#: report tests, which check plumbing and tables, not collapse).
LM_TINY = {"max_articles": 10, "max_train_docs": 300,
           "recipe": {"vocab_size": 512, "n_positions": 32, "n_embd": 32, "n_layer": 1,
                      "n_head": 2, "block": 32, "batch_size": 16, "epochs": 1, "lr": 1e-2}}


def small_config(policies: tuple[str, ...], generations: int, docs: int,
                 articles: int = 20, **settings) -> LMCollapseConfig:
    """``policies`` for ``generations`` on the first ``docs`` documents of ``articles``."""
    return LMCollapseConfig(policies=policies, generations=generations, max_articles=articles,
                            max_train_docs=docs, recipe=SMALL_RECIPE, **settings)
