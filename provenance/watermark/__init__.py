"""Green-list watermarks (Kirchenbauer et al. 2023): mark our own generations, find them later.

A watermark is the strongest evidence short of a ledger entry that *our* model wrote a text: at
every generation step a secret key seeds a pseudo-random "green" share of the vocabulary (25% by
default) whose logits get a small bias, so generated text holds more green tokens than chance.
Anyone holding the key re-derives the green lists and counts. This module is a thin layer over
transformers' own implementation: :class:`transformers.WatermarkingConfig` marks text during
``model.generate`` and the green lists used for detection are the ones
:class:`transformers.WatermarkDetector` draws (its logits processor), so generation and detection
cannot drift apart. What tailguard adds is what a corpus-scale tagger needs around it:

* a **key** (:class:`WatermarkKey`) that can be saved and shared without its secret, and checks
  that a secret supplied later is the right one (``key_fingerprint``);
* **batched detection over raw text** (:class:`WatermarkScorer`) that never counts padding,
  computes each green list once per batch instead of once per text, and refuses to call a text
  human because our watermark is absent;
* a tagging :class:`WatermarkSignal` and :func:`generate_watermarked`.

One module each (``key``, ``scorer``, ``signal``, ``generate``); import from here.

Why the default threshold is z = 4
----------------------------------
The detector's statistic is ``z = (green - gamma n) / sqrt(n gamma (1 - gamma))`` over the ``n``
scored tokens. For human text (no watermark), each token is green with probability ``gamma``, so
``z`` is approximately standard normal and the false positive rate of a threshold is its one-sided
normal tail: ``P(Z >= 3) = 1.3e-3`` (transformers' default) but ``P(Z >= 4) = 3.2e-5``. At corpus
scale that is the difference between ~1,300 and ~32 human documents wrongly flagged per million,
and a wrongly flagged human document is dropped from (or down-weighted in) training data.

The normal tail is optimistic for short texts: the green count is binomial, and with
``gamma = 0.25`` its right tail is heavier than the normal one (at ``z >= 4`` the exact rate is
2.9e-4 for 16 tokens, 1.2e-4 for 64, 6.5e-5 for 256). The scorer therefore reports the **exact
binomial p-value** and flags a text when that p-value is at most ``P(Z >= z_threshold)``: the
false positive rate is then at most 3.2e-5 at every length (z is still reported, computed exactly
as transformers does). The exact test is only valid if each scored n-gram is an independent trial,
which repeated n-grams are not (a boilerplate line repeated 50 times would count 50 times), so
repeated n-grams are scored once (``ignore_repeated_ngrams=True``), as Kirchenbauer et al. advise
for reliable detection.

Caveats worth knowing
---------------------
* Green lists come from ``torch.randperm`` seeded by the key, on the **device** that generated:
  a CUDA generator draws entirely different green lists than the CPU one (their overlap is the
  25% of chance), so a key records ``rng_device`` and text watermarked on a GPU can only be
  detected with a GPU. A saved key also holds a check of one green list, so that loading it under
  a torch build that draws differently warns instead of silently detecting nothing.
* Detection re-tokenizes the text with the generating tokenizer. Decoding and re-encoding a
  generation nearly always gives back the same tokens; edits, paraphrases and translation remove
  the watermark gradually (the z-score falls with the share of surviving n-grams).
* A text without our watermark is ``unknown``, never ``human``: other people's models, and ours
  run without the key, leave no watermark.
"""

from provenance.watermark.generate import generate_watermarked
from provenance.watermark.key import WatermarkKey
from provenance.watermark.scorer import (
    DEFAULT_Z_THRESHOLD,
    REASON_ABSENT,
    REASON_DETECTED,
    REASON_EMPTY,
    WatermarkResult,
    WatermarkScorer,
    load_tokenizer,
    normal_tail,
)
from provenance.watermark.signal import WatermarkSignal

__all__ = [
    "DEFAULT_Z_THRESHOLD",
    "REASON_ABSENT",
    "REASON_DETECTED",
    "REASON_EMPTY",
    "WatermarkKey",
    "WatermarkResult",
    "WatermarkScorer",
    "WatermarkSignal",
    "generate_watermarked",
    "load_tokenizer",
    "normal_tail",
]
