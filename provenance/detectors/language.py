"""Whether a text is in a language other than English, for detectors trained on English.

A detector trained on English text gives numbers on German or Spanish text too, and those
numbers mean nothing: the language model finds another language's prose unlikely in ways the
head never saw. Non-Latin scripts are caught by counting letters; Latin-script languages need a
language identifier, and this one is [lingua](https://github.com/pemistahl/lingua-py)
(statistical n-gram models in Rust, no network, no pickle), in its low-accuracy mode (about 300
documents/s on one core, ~100 MB).

Latin is left out of the candidates: lingua reads English scientific prose full of Latinate
terms as Latin (at 90% confidence, 4 of the 3,953 English documents of
``../shared/data/detect``, two of them abstracts, e.g. one on hereditary angioedema), and Latin
prose is not what a web crawl is made of. A text is only refused when lingua is *confident* of
another language: a list, a table or a repetitive text that it cannot place stays the
detector's to judge, and so does a text under :data:`MIN_WORDS` words: on snippets of a
sentence or two lingua's low-accuracy mode is confidently wrong about English with foreign
names in it (in the LM loop's tests, 130 English fragments of 10-23 words were read as Yoruba,
Esperanto, Spanish ... at >= 90%).
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Any

from provenance.errors import TailguardWarning

#: How confident lingua must be of a language other than English to refuse a text.
MIN_CONFIDENCE = 0.9
#: Fewest words for which the language is judged at all.
MIN_WORDS = 40
#: Characters read from each text (a paragraph settles the language; the rest costs time).
MAX_CHARS = 2000
_WORD = re.compile(r"[^\W\d_]+")


@lru_cache(maxsize=1)
def _identifier() -> Any:
    """lingua's identifier, built once per process; None (said once) where lingua is missing:
    an install without dependencies (a bare GPU image) still scores, as before this check."""
    try:
        from lingua import Language, LanguageDetectorBuilder
    except ImportError:
        warnings.warn("lingua-language-detector is not installed: text in other Latin-script "
                      "languages is scored, not refused (pip install lingua-language-detector)",
                      TailguardWarning, stacklevel=3)
        return None
    return (LanguageDetectorBuilder.from_all_languages_without(Language.LATIN)
            .with_low_accuracy_mode().build())


def other_language(text: str, min_confidence: float = MIN_CONFIDENCE) -> str | None:
    """The language ``text`` is confidently written in when that is not English, with the
    confidence (``"German 1.00"``), else None (also for a text under :data:`MIN_WORDS` words).

    Examples
    --------
    >>> german = ("Am Dienstag traf sich der Ausschuss im Rathaus, um den Haushalt für das "
    ...           "kommende Jahr zu besprechen. Nach einer langen Debatte über die Straßen und "
    ...           "die Schulen einigten sich die Mitglieder auf mehrere Punkte, und die "
    ...           "Bürgermeisterin versprach mehr Geld für Busse und Bahnen im nächsten Jahr.")
    >>> other_language(german)
    'German 1.00'
    >>> other_language(german[:120]) is None  # too short to judge
    True
    >>> other_language("The committee met on Tuesday to discuss the budget.") is None
    True
    >>> other_language("a a a a a a a a a a a a a a a a") is None  # cannot place it: not refused
    True
    """
    if len(_WORD.findall(text[:MAX_CHARS])) < MIN_WORDS:
        return None
    identifier = _identifier()
    values = [] if identifier is None else identifier.compute_language_confidence_values(
        text[:MAX_CHARS])
    if not values:
        return None
    top = values[0]
    if top.language.name == "ENGLISH" or top.value < min_confidence:
        return None
    return f"{top.language.name.title()} {top.value:.2f}"
