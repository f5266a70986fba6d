"""The language-model family's settings as it declares them: its default policies and the
options ``tailguard collapse run lm`` and ``--config`` files accept (each is a field of
:class:`~collapse_eval.text.config.LMCollapseConfig`). Kept free of heavy imports: the command
line reads it to build its flags."""

from __future__ import annotations

from typing import Any

from collapse_eval.family_options import FamilyOption

DEFAULT_LM_POLICIES = ("replace", "retain:0.1", "accumulate", "scrape", "filter:oracle",
                       "filter:watermark", "filter:ledger", "filter:detector", "reweight")
#: Where the ``detector`` tagger's detector comes from (see :mod:`collapse_eval.text.evidence`).
DETECTOR_SOURCES = ("trained", "shipped", "zero-shot")

#: name, kind, help, then bounds/choices: each becomes a FamilyOption (see
#: collapse_eval.family_options)
_DECLARED: tuple[tuple[Any, ...], ...] = (
    ('dataset', 'str',
     'lm: the human corpus: a .txt/.jsonl/.parquet file or folder, a save_to_disk folder '
     "or a hub dataset NAME[:CONFIG] [gensim's Wikipedia sample]."),
    ('max_articles', 'int',
     'lm: keep the first N articles of the corpus (quick runs).', 3),
    ('max_train_docs', 'int',
     'lm: keep the first N human training documents (quick runs).', 1),
    ('model', 'str',
     'lm: fine-tune this causal LM (hub id, folder or smollm2-135m) instead of training a '
     'small GPT-2 from scratch.'),
    ('gguf_file', 'str',
     "lm: the GGUF file inside --model's folder."),
    ('recipe', 'pairs',
     'lm: training recipe overrides, e.g. epochs=2 or n_layer=4.'),
    ('prompt_tokens', 'int',
     'lm: tokens of training data each generated document continues [16].', 1),
    ('doc_tokens', 'int',
     'lm: tokens per generated document [block - prompt-tokens = 48].', 1),
    ('decoding', 'choice',
     'lm: sample (temperature, top-k) or beam search (the paper) [sample].', ('sample', 'beam')),
    ('num_beams', 'int',
     'lm: beams [5].', 1),
    ('temperature', 'float',
     'lm: sampling temperature [1.0].', 0, True),
    ('top_k', 'int',
     'lm: sample among the k likeliest.', 1),
    ('repetition_penalty', 'float',
     'lm: beam search repetition penalty (the paper also ran 3.0) [off].', 0, True),
    ('watermark_bias', 'float',
     'lm: green-list logit bias of the watermark on every generation [2.0].', 0, True),
    ('detector_fpr', 'float',
     'lm: false-positive rate the detectors are calibrated for [0.05].', 0, True),
    ('detector_model', 'str',
     'lm: scoring model of filter:detector: a causal LM id/path that never read the run\'s '
     "articles, or generation-0 (the run's own first model, which memorised the web's human "
     'documents) [smollm2-135m].'),
    ('detector_source', 'choice',
     "lm: the detector of filter:detector: refitted each generation on the lab's earlier"
     " generations vs held-out human text with --detector-model's token statistics, the"
     ' shipped pretrained one, or zero-shot Fast-DetectGPT [trained].', DETECTOR_SOURCES),
)


def _option(name: str, kind: str, help: str, *bounds: Any) -> FamilyOption:
    """A row of :data:`_DECLARED`: after the help, a choice's choices, or a number's minimum
    and whether the minimum itself is excluded."""
    if kind == "choice":
        return FamilyOption(name, kind, help, choices=tuple(bounds[0]))
    minimum, *excluded = bounds or (None,)
    return FamilyOption(name, kind, help, minimum=minimum, open_minimum=bool(excluded))


LM_OPTIONS = tuple(_option(*row) for row in _DECLARED)
