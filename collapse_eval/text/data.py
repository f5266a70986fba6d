"""Text corpora for the language-model collapse experiment, split by document.

The default corpus needs no download: the ``gensim`` wheel ships a shortened English Wikipedia
dump in its test data (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``,
CC BY-SA 3.0). It holds 206 pages; dropping the 99 redirects and one empty project page leaves
106 articles, 3.1 MB of text after gensim's :func:`~gensim.corpora.wikicorpus.filter_wiki`.
:func:`clean_wiki_text` then removes what a language model should not learn from markup
remnants: ``''``/``'''`` emphasis quotes, empty list items and table debris (lines without a
letter or digit), runs of blank lines, and the trailing link sections (See also, References,
Further reading, External links ...), leaving 2.95 MB of text (467k words) with one paragraph
per line and ``== Heading ==`` lines between sections.

Splits are by document, never inside one, so no article's sentences leak from training into
evaluation. Documents are ranked by a keyed hash of (``seed``, document id) -- XXH64, as
:mod:`mixers.sampling` ranks rows -- and, in that order, join the test split, then the
validation split, while it holds less than its share of the characters (``test_fraction``,
``valid_fraction``, 2.5% each by default); a document that would take a split past 1.5 times its
share goes to training instead, and each held-out split gets at least one document. With the
defaults (seed 0) the Wikipedia sample splits into 94 / 7 / 5 articles of 2.77 MB / 88 KB /
90 KB (train / valid / test; 12,461 / 429 / 470 blocks of 64 tokens with the default
tokenizer); the same seed always gives the same split.

Other sources (``load_text_corpus(source)``):

* a ``.txt`` file: documents are separated by blank lines;
* ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` (file, folder or glob) with a ``text`` field, read by
  :func:`provenance.corpus.read_corpus` (its ``id`` field names the documents);
* a ``datasets.save_to_disk`` folder: a ``DatasetDict`` keeps its ``train`` / ``validation`` /
  ``test`` splits, a single ``Dataset`` is split as above;
* a hub dataset ``name[:config]`` (needs a connection), e.g. ``wikitext:wikitext-2-raw-v1``,
  whose own splits are kept. WikiText rows are lines, so they are grouped back into articles at
  the `` = Title = `` lines.
"""

from __future__ import annotations

import bz2
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from provenance.errors import ConfigError, InputError

__all__ = [
    "DEFAULT_SOURCE",
    "SPLITS",
    "TextCorpus",
    "clean_wiki_text",
    "gensim_wiki_path",
    "iter_gensim_wiki",
    "load_text_corpus",
    "split_documents",
]

DEFAULT_SOURCE = "gensim-enwiki"
GENSIM_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
GENSIM_WIKI_LICENSE = "CC BY-SA 3.0 (English Wikipedia, via the gensim test data)"
SPLITS = ("train", "valid", "test")
#: Split names of Hugging Face datasets, mapped to ours.
HF_SPLITS = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}
SPLIT_SALT = "text-corpus-split\x1f"
#: A held-out split may exceed its character share by this factor with its last document.
OVERSHOOT = 1.5
#: Trailing sections of a Wikipedia article that are link lists, not prose.
TRAILING_SECTIONS = frozenset(
    {
        "see also",
        "references",
        "notes",
        "footnotes",
        "citations",
        "sources",
        "bibliography",
        "further reading",
        "external links",
        "notes and references",
        "references and notes",
        "works cited",
    }
)
_HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$")
_EMPHASIS = re.compile(r"'{2,}")
_ALNUM = re.compile(r"\w")
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?(:[\w.-]+)?$")


@dataclass
class TextCorpus:
    """Documents split into ``train``, ``valid`` and ``test``, with where they came from.

    ``ids`` maps each split to its documents' ids (article titles for Wikipedia), in the same
    order as the documents; it is empty where the source has no ids.
    """

    train: list[str]
    valid: list[str]
    test: list[str]
    name: str
    license: str
    ids: dict[str, list[str]] = field(default_factory=dict)

    def split(self, name: str) -> list[str]:
        """The documents of one split (``train``, ``valid``/``validation`` or ``test``)."""
        key = HF_SPLITS.get(name)
        if key is None:
            raise ConfigError(f"split must be one of train, valid, test, got {name!r}")
        return getattr(self, key)

    def stats(self) -> dict[str, Any]:
        """Documents, characters, UTF-8 bytes and whitespace words per split, and in total.

        Examples
        --------
        >>> corpus = TextCorpus(["a b", "c"], ["d"], ["e f g"], "toy", "CC0")
        >>> corpus.stats()["train"]
        {'documents': 2, 'chars': 4, 'bytes': 4, 'words': 3}
        >>> corpus.stats()["total"]["words"]
        7
        """
        out: dict[str, Any] = {"name": self.name, "license": self.license}
        total = {"documents": 0, "chars": 0, "bytes": 0, "words": 0}
        for name in SPLITS:
            docs = getattr(self, name)
            row = {
                "documents": len(docs),
                "chars": sum(len(d) for d in docs),
                "bytes": sum(len(d.encode("utf-8")) for d in docs),
                "words": sum(len(d.split()) for d in docs),
            }
            out[name] = row
            for k, v in row.items():
                total[k] += v
        out["total"] = total
        return out


# --------------------------------------------------------------------------- the default corpus


def gensim_wiki_path() -> Path:
    """The Wikipedia sample in gensim's test data (found without importing gensim's models)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the default text corpus is the Wikipedia sample shipped with gensim; "
            "install it: pip install gensim"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"
    path = path / GENSIM_WIKI_FILE
    if not path.exists():
        raise InputError("gensim is installed but its Wikipedia sample is missing; reinstall "
                         "gensim", file=str(path))
    return path


def clean_wiki_text(text: str) -> str:
    """Prose from the output of gensim's ``filter_wiki``: one paragraph per line.

    Emphasis quotes go, headings become ``== Title ==``, lines without a letter or digit (table
    debris, empty bullets) and blank lines are dropped, and the article ends before its first
    trailing link section (see ``TRAILING_SECTIONS``).

    Examples
    --------
    >>> raw = "'''Aa''' is a river.\\n\\n\\n==History ==\\n+\\n* \\nOld.\\n==See also==\\n* B"
    >>> clean_wiki_text(raw)
    'Aa is a river.\\n== History ==\\nOld.'
    """
    lines: list[str] = []
    for raw in text.splitlines():
        line = _EMPHASIS.sub("", raw).strip()
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            if title.lower() in TRAILING_SECTIONS:
                break
            if not _ALNUM.search(title):
                continue
            line = f"{heading.group(1)} {title} {heading.group(1)}"
        elif not _ALNUM.search(line):
            continue
        lines.append(" ".join(line.split()))
    # A section whose body was all link lists leaves its heading last.
    while lines and _HEADING.match(lines[-1]):
        lines.pop()
    return "\n".join(lines)


def iter_gensim_wiki(path: str | os.PathLike | None = None) -> Iterator[tuple[str, str]]:
    """``(title, cleaned text)`` of each article in a Wikipedia XML dump (``.bz2`` or plain),
    skipping redirects, pages outside the article namespace and pages left empty by cleaning."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = Path(path) if path is not None else gensim_wiki_path()
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rb") as fh:
            for title, markup, _pageid in extract_pages(fh, filter_namespaces=("0",)):
                if markup.lstrip()[:9].lower() == "#redirect":
                    continue
                if ":" in title and title.split(":", 1)[0] in _PROJECT_NAMESPACES:
                    continue
                text = clean_wiki_text(filter_wiki(markup))
                if text:
                    yield title, text
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read the Wikipedia dump: {exc}", file=str(path)) from exc


#: Old dumps mark some project pages as namespace 0; their titles give them away.
_PROJECT_NAMESPACES = frozenset(
    {"Wikipedia", "WP", "Help", "Template", "Category", "Portal", "File", "Talk", "User"}
)


# --------------------------------------------------------------------------- splitting


def _split_rank(doc_id: str, seed: int) -> int:
    return xxhash.xxh64_intdigest((SPLIT_SALT + doc_id).encode("utf-8"), seed & (2**64 - 1))


def split_documents(
    docs: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    seed: int = 0,
    valid_fraction: float = 0.025,
    test_fraction: float = 0.025,
) -> dict[str, list[int]]:
    """Indices of the documents in each split (see the module notes for the rule).

    Each split's indices are in the documents' original order. ``ids`` default to the
    documents' positions.

    Examples
    --------
    >>> docs = ["x" * n for n in (50, 10, 30, 10, 40, 20, 30, 10)]
    >>> parts = split_documents(docs, seed=0, valid_fraction=0.1, test_fraction=0.1)
    >>> sorted(i for p in parts.values() for i in p) == list(range(8))
    True
    >>> parts == split_documents(docs, seed=0, valid_fraction=0.1, test_fraction=0.1)
    True
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 0.5:
            raise ConfigError(f"{name} must be in [0, 0.5), got {value}")
    if ids is None:
        ids = [str(i) for i in range(len(docs))]
    if len(ids) != len(docs):
        raise ConfigError(f"got {len(ids)} ids for {len(docs)} documents")
    sizes = [len(d) for d in docs]
    total = sum(sizes)
    order = sorted(range(len(docs)), key=lambda i: (_split_rank(str(ids[i]), seed), i))
    targets = {"test": test_fraction * total, "valid": valid_fraction * total}
    held: dict[str, list[int]] = {"test": [], "valid": []}
    filled = {"test": 0, "valid": 0}
    train: list[int] = []
    for i in order:
        for name in ("test", "valid"):
            target = targets[name]
            room = target > 0 and filled[name] < target
            if room and (not held[name] or filled[name] + sizes[i] <= OVERSHOOT * target):
                held[name].append(i)
                filled[name] += sizes[i]
                break
        else:
            train.append(i)
    if not train:
        raise InputError(
            f"{len(docs)} documents are too few to split into train, valid and test; "
            "use a larger corpus or smaller valid_fraction/test_fraction"
        )
    return {"train": sorted(train), "valid": sorted(held["valid"]), "test": sorted(held["test"])}


# --------------------------------------------------------------------------- loading


def load_text_corpus(
    source: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    max_articles: int | None = None,
    valid_fraction: float = 0.025,
    test_fraction: float = 0.025,
    text_field: str = "text",
) -> TextCorpus:
    """Load a corpus as train / valid / test documents.

    Parameters
    ----------
    source : str or path, optional
        ``None`` (or ``"gensim-enwiki"``) for the Wikipedia sample shipped with gensim; else a
        ``.txt``, ``.jsonl``/``.parquet`` file, folder or glob, a ``datasets`` folder, or a hub
        dataset ``name[:config]`` (see the module notes).
    seed : int, default 0
        Keys the split of sources that have no splits of their own.
    max_articles : int, optional
        Keep only the first this many documents (in source order) before splitting, for
        quick runs. Sources with their own splits keep the first ``max_articles`` of each.
    valid_fraction, test_fraction : float, default 0.025
        Character shares of the held-out splits (sources without their own splits).
    text_field : str, default "text"
        The text column of tabular sources.
    """
    if max_articles is not None and (
        isinstance(max_articles, bool) or not isinstance(max_articles, int) or max_articles < 3
    ):
        raise ConfigError(f"max_articles must be an integer >= 3 (one per split), got "
                          f"{max_articles!r}")
    split_options = {"seed": seed, "valid_fraction": valid_fraction, "test_fraction": test_fraction}
    if source is None or str(source) == DEFAULT_SOURCE:
        pairs = _take(iter_gensim_wiki(), max_articles)
        return _from_documents(pairs, DEFAULT_SOURCE, GENSIM_WIKI_LICENSE, **split_options)
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists() or any(ch in text for ch in "*?["):
        name = path.name
        if path.is_file() and name.lower().endswith(".txt"):
            docs = _read_txt(path)
            pairs = _take(((f"{i}", d) for i, d in enumerate(docs)), max_articles)
            return _from_documents(pairs, text, "unknown (local file)", **split_options)
        if path.is_file() and name.lower().endswith((".xml", ".xml.bz2", ".bz2")):
            pairs = _take(iter_gensim_wiki(path), max_articles)
            return _from_documents(pairs, text, "unknown (local file)", **split_options)
        if path.is_dir() and (path / "dataset_dict.json").exists():
            return _from_dataset_dict(_load_from_disk(path), text, text_field, max_articles)
        return _from_table(text, text_field, max_articles, split_options)
    if text.startswith((".", "/", "~")) or not _HUB_NAME.match(text):
        raise InputError("no such file or folder", file=text)
    return _from_hub(text, text_field, max_articles)


def _take(pairs: Iterable[tuple[str, str]], limit: int | None) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        if limit is not None and len(out) >= limit:
            break
        out.append(pair)
    return out


def _from_documents(
    pairs: Sequence[tuple[str, str]], name: str, license: str, **split_options: Any
) -> TextCorpus:
    if len(pairs) < 3:
        raise InputError(f"found {len(pairs)} documents; need at least 3 (one per split)",
                         file=name)
    ids = [p[0] for p in pairs]
    docs = [p[1] for p in pairs]
    parts = split_documents(docs, ids, **split_options)
    return TextCorpus(
        train=[docs[i] for i in parts["train"]],
        valid=[docs[i] for i in parts["valid"]],
        test=[docs[i] for i in parts["test"]],
        name=name,
        license=license,
        ids={k: [ids[i] for i in v] for k, v in parts.items()},
    )


def _read_txt(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    docs = [block.strip() for block in re.split(r"\n[ \t\r]*\n", text)]
    return [d for d in docs if d]


def _from_table(
    source: str, text_field: str, max_articles: int | None, split_options: dict[str, Any]
) -> TextCorpus:
    from provenance.corpus import read_corpus
    from provenance.schema import ID

    corpus = read_corpus(source, text_field=text_field)
    frame = corpus.frame
    if frame.height == 0 and corpus.rejects:
        first = corpus.rejects[0]
        raise InputError(
            f"no usable document ({corpus.counts.rejected} rejected; first: {first.message})",
            file=first.file, line=first.line, row=first.row, field=first.field,
        )
    if max_articles is not None:
        frame = frame.head(max_articles)
    pairs = list(zip(frame.get_column(ID).to_list(), frame.get_column(text_field).to_list(),
                     strict=True))
    return _from_documents(pairs, source, "unknown (local file)", **split_options)


def _load_from_disk(path: Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several unrelated types here
        raise InputError(f"cannot load the datasets folder: {exc}", file=str(path)) from exc


def _from_hub(name: str, text_field: str, max_articles: int | None) -> TextCorpus:
    import datasets

    path, _, config = name.partition(":")
    try:
        loaded = datasets.load_dataset(path, config or None)
    except Exception as exc:  # offline, unknown name, missing config ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the hub dataset: {first}", file=name) from exc
    return _from_dataset_dict(loaded, name, text_field, max_articles)


def _from_dataset_dict(
    loaded: Any, name: str, text_field: str, max_articles: int | None
) -> TextCorpus:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        pairs = [(str(i), t) for i, t in enumerate(_column(loaded, name, text_field)) if t.strip()]
        return _from_documents(_take(pairs, max_articles), name, _license(loaded))
    splits: dict[str, list[str]] = {}
    for hf_name, ours in HF_SPLITS.items():
        if hf_name in loaded and ours not in splits:
            rows = _column(loaded[hf_name], name, text_field)
            docs = _wikitext_articles(rows) if "wikitext" in name.lower() else rows
            docs = [d.strip() for d in docs if d.strip()]
            splits[ours] = docs[:max_articles] if max_articles is not None else docs
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise InputError(
            f"the dataset has splits {', '.join(loaded.keys())}; it needs train, validation and "
            f"test (missing {', '.join(missing)})",
            file=name,
        )
    license = _license(next(iter(loaded.values())))
    return TextCorpus(splits["train"], splits["valid"], splits["test"], name, license)


def _column(dataset: Any, name: str, text_field: str) -> list[str]:
    if text_field not in dataset.column_names:
        raise InputError(
            f"no such column; the dataset has {', '.join(dataset.column_names)}",
            file=name,
            field=text_field,
        )
    return ["" if t is None else str(t) for t in dataset[text_field]]


def _license(dataset: Any) -> str:
    info = getattr(dataset, "info", None)
    return (getattr(info, "license", None) or "unknown") if info is not None else "unknown"


def _wikitext_articles(rows: Sequence[str]) -> list[str]:
    """WikiText rows (one line each) grouped into articles at the `` = Title = `` lines."""
    articles: list[list[str]] = []
    for row in rows:
        line = row.rstrip("\n")
        if _WIKITEXT_TITLE.match(line) or not articles:
            articles.append([])
        if line.strip():
            articles[-1].append(line.strip())
    return ["\n".join(a) for a in articles if a]
