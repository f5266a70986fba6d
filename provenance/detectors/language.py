"""Whether a text is in a language other than English, for detectors trained on English.

A detector trained on English text gives numbers on German or Spanish text too, and those
numbers mean nothing: the language model finds another language's prose unlikely in ways the
head never saw. Non-Latin scripts are caught by counting letters; Latin-script languages need a
language identifier, and this one is [lingua](https://github.com/pemistahl/lingua-py)
(statistical n-gram models in Rust, no network, no pickle), in its low-accuracy mode (about 300
documents/s on one core, ~100 MB).

A text is refused when lingua gives English at most :data:`MAX_ENGLISH` and fewer than
:data:`MAX_FUNCTION_WORDS` of its words are English function words ("the", "of", "and" ...).
lingua being sure that a text is *not English* is what matters, not which language it is: its
low-accuracy mode splits a Croatian or Norwegian paragraph between close languages (Croatian /
Bosnian / Serbian, Bokmal / Nynorsk / Danish) and is sure of none. The function words keep
English with foreign names in it: on a sentence or two, lingua reads "Errico Malatesta, Pierre
Monatte, Luigi Fabbri" or a run of Spanish titles as another language, but the sentence around
them is still made of English's small words. A list, a table or a repetitive text that lingua
cannot place as something else stays the detector's to judge, and so does a text under
:data:`MIN_WORDS` words: below that, lingua reads the garbled English of a small, undertrained
model (the LM loop's 64-token samples) as Swahili or Yoruba as surely as it reads real other
languages, and a detector trained on such samples (the LM loop's) knows them well. Measured on
fragments of 25 to 39 words (vimtutor's translations in 19 Latin-script languages against the
English vimtutor, WikiText-2 and the documents of ``../shared/data/detect``): 98-99% of the
other languages refused, 0.1% of the English (a list of index entries, runs of ``<unk>``); at
12 words it would be 96% and 0.5%. On whole texts: 3 of the 4,024 non-heading lines of
WikiText-2's validation and test sets (rosters of names and ``<unk>``) and 2 of the 3,953
documents of ``../shared/data/detect`` (one Welsh, one a list of medical terms).

Latin is left out of the candidates: lingua reads English scientific prose full of Latinate
terms as Latin (at 90% confidence, 4 of the 3,953 English documents of
``../shared/data/detect``, two of them abstracts, e.g. one on hereditary angioedema), and Latin
prose is not what a web crawl is made of.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Any

from provenance.errors import TailguardWarning

#: Most confidence lingua may give English in a text that is refused.
MAX_ENGLISH = 0.02
#: A text whose share of English function words reaches this is not refused.
MAX_FUNCTION_WORDS = 0.2
#: Fewest words for which the language is judged at all.
MIN_WORDS = 25
#: Below this confidence in its first language, a refusal names lingua's second one too.
SURE = 0.9
#: Characters read from each text (a paragraph settles the language; the rest costs time).
MAX_CHARS = 2000
_WORD = re.compile(r"[^\W\d_]+")
#: The commonest English words that carry grammar rather than topic: in English prose they are
#: 30-50% of the words, in other languages' prose only where spellings collide ("in", "a").
FUNCTION_WORDS = frozenset(
    "the of and to a in is that for it was on with as by at from be this are or an which not "
    "have has were but its their his they he she we you can will would been also into more "
    "than one there when all if so no".split())


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


def other_language(text: str) -> str | None:
    """The language ``text`` is most likely written in, with lingua's confidence
    (``"German 1.00"``; with the runner-up where lingua is less than :data:`SURE` of it,
    ``"Bosnian 0.57 / Croatian 0.43"``), when it is confidently not English; else None (also
    for a text under :data:`MIN_WORDS` words).

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
    >>> other_language("The committee met on Tuesday to discuss the budget for next year. "
    ...                "After a long debate about the roads and the schools, the members agreed "
    ...                "on several points, and the mayor promised more money for buses.") is None
    True
    >>> other_language("name price colour | apple 0.50 red | banana 0.25 yellow | cherry 2.00 "
    ...                "dark | grape 1.10 green | lemon 0.40 yellow | melon 3.00 green | plum "
    ...                "0.90 purple | pear 0.70 green | kiwi 0.30 brown | lime 0.20 green | fig "
    ...                "1.50 purple | peach 0.80 orange") is None  # a table, not prose: kept
    True
    """
    words = _WORD.findall(text[:MAX_CHARS])
    if len(words) < MIN_WORDS:
        return None
    identifier = _identifier()
    values = [] if identifier is None else identifier.compute_language_confidence_values(
        text[:MAX_CHARS])
    if not values or values[0].language.name == "ENGLISH":
        return None
    english = next((v.value for v in values if v.language.name == "ENGLISH"), 0.0)
    function_words = sum(w.lower() in FUNCTION_WORDS for w in words) / len(words)
    if english > MAX_ENGLISH or function_words >= MAX_FUNCTION_WORDS:
        return None
    named = values[:1] if values[0].value >= SURE or len(values) < 2 else values[:2]
    return " / ".join(f"{v.language.name.title()} {v.value:.2f}" for v in named)
