"""The language-model family of the collapse experiments: data, tokenizer, model, sampler, metrics.

Shumailov et al. ("The Curse of Recursion", 2023) fine-tune OPT-125m on WikiText-2 and let each
generation train on text written by the previous one. Without a hub connection, tailguard's
default reproduces the setting at a size that runs on a laptop CPU:

* :mod:`collapse_eval.text.data` -- a Wikipedia sample that ships inside the ``gensim`` wheel
  (106 articles, CC BY-SA), markup stripped, split by article; or any local text/jsonl/parquet
  corpus, a ``datasets`` folder, or a hub dataset such as ``wikitext:wikitext-2-raw-v1``;
* :mod:`collapse_eval.text.tokenizer` -- a byte-level BPE trained on the training split and
  ``encode_blocks`` to cut the token stream into fixed-length blocks;
* :mod:`collapse_eval.text.model` -- a 0.93M-parameter GPT-2 trained from scratch (or any Hugging
  Face causal LM), safetensors checkpoints, perplexities per block;
* :mod:`collapse_eval.text.sampling` -- a KV-cache sampler that continues prompts, with logits
  processors (transformers' watermark among them), and a beam-search wrapper;
* :mod:`collapse_eval.text.text_metrics` -- n-gram baselines and the tail metrics on token ids;
* :mod:`collapse_eval.text.world` -- the recursion itself, as the engine
  (:mod:`collapse_eval.engine`) runs it (with :mod:`~collapse_eval.text.config`,
  :mod:`~collapse_eval.text.options`, :mod:`~collapse_eval.text.chain`,
  :mod:`~collapse_eval.text.progress` and :mod:`~collapse_eval.text.results`);
* :mod:`collapse_eval.text.report_table` -- the report's numbers by policy and generation.
"""
