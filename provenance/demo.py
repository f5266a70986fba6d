"""A self-contained tagging demo on data that ships with Python: ``tailguard demo``.

No download is possible on many machines, so the demo builds its corpus from what every Python
installation carries:

* **human text**: paragraphs of the standard library's docstrings, written by people;
* **generated text**: sampled from a word-trigram language model trained here on half of those
  paragraphs (a real, if small, generative model), part of it registered in a ledger the way a
  team would register its own model's output;
* **a crawl** that mixes them as they reach a scraper: human pages with and without metadata,
  generated text published verbatim, lightly edited, declared, or from a model nobody registered,
  plus the malformed lines every crawl has.

It then tags the crawl and scores the tags against the known origin of every document. The known
origin lives in a ``true_origin`` field that no tagger rule reads.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from provenance.atomic import atomic_path
from provenance.errors import ConfigError
from provenance.fusion import TagReport
from provenance.ledger_ops import add_corpus
from provenance.outputs import check_output, writing
from provenance.tagger import tag_corpus

#: Well-documented standard-library modules (stable across CPython 3.10+).
STDLIB_MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib",
    "email", "enum", "fractions", "functools", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html", "http.client", "imaplib", "inspect", "io", "ipaddress", "itertools", "json",
    "logging", "mailbox", "multiprocessing", "netrc", "numbers", "optparse", "os", "pathlib",
    "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "sqlite3", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings",
    "weakref", "xml.dom.minidom", "zipfile", "zoneinfo",
)

_WORD = re.compile(r"\S+")


def stdlib_paragraphs(min_words: int = 20) -> list[str]:
    """Prose paragraphs from standard-library docstrings, in a deterministic order.

    Code examples (``>>>`` lines, indented blocks) are skipped; repeated paragraphs are kept once.
    """
    seen: set[str] = set()
    paragraphs: list[str] = []
    with warnings.catch_warnings():  # reading deprecated aliases' docstrings warns
        warnings.simplefilter("ignore", DeprecationWarning)
        for doc in _all_docstrings():
            for block in re.split(r"\n\s*\n", doc):
                lines = block.splitlines()
                if any(ln.startswith((" ", "\t", ">>>", "...")) for ln in lines):
                    continue
                text = " ".join(ln.strip() for ln in lines)
                if len(text.split()) >= min_words and text not in seen:
                    seen.add(text)
                    paragraphs.append(text)
    return paragraphs


def _all_docstrings() -> Iterator[str]:
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a Python built without e.g. sqlite3
            continue
        yield from _docstrings(module)


def _docstrings(module: Any) -> Iterator[str]:
    doc = inspect.getdoc(module)
    if doc:
        yield doc
    for _, member in sorted(vars(module).items()):
        if getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member) or inspect.isfunction(member):
            doc = inspect.getdoc(member)
            if doc:
                yield doc
        if inspect.isclass(member):
            for _, method in sorted(vars(member).items()):
                if inspect.isfunction(method) and method.__doc__:
                    yield inspect.cleandoc(method.__doc__)


class TrigramModel:
    """A word-trigram language model with add-nothing sampling (Markov chain over word pairs).

    Small, but it is a real generative model fitted here: its samples reuse the training text's
    vocabulary and local phrasing, which is what makes detecting them without a ledger hard.
    """

    def __init__(self) -> None:
        self.transitions_: dict[tuple[str, str], list[str]] | None = None
        self.starts_: list[tuple[str, str]] = []

    def fit(self, texts: Sequence[str]) -> TrigramModel:
        transitions: dict[tuple[str, str], list[str]] = defaultdict(list)
        for text in texts:
            words = _WORD.findall(text)
            if len(words) < 3:
                continue
            self.starts_.append((words[0], words[1]))
            for a, b, c in zip(words, words[1:], words[2:], strict=False):
                transitions[(a, b)].append(c)
        if not transitions:
            raise ConfigError("TrigramModel needs texts of at least 3 words to fit")
        self.transitions_ = dict(transitions)
        return self

    def sample(self, n: int, rng: random.Random, words: tuple[int, int] = (80, 200)) -> list[str]:
        if self.transitions_ is None:
            raise ConfigError("TrigramModel must be fitted before sampling; call fit(texts)")
        docs = []
        for _ in range(n):
            length = rng.randint(*words)
            a, b = rng.choice(self.starts_)
            out = [a, b]
            while len(out) < length:
                following = self.transitions_.get((a, b))
                if not following:
                    a, b = rng.choice(self.starts_)
                    out += [a, b]
                    continue
                a, b = b, rng.choice(following)
                out.append(b)
            docs.append(" ".join(out[:length]))
        return docs


def light_edit(text: str, rng: random.Random, share: float = 0.02) -> str:
    """Replace about ``share`` of the words and re-wrap the lines, as a re-publisher might."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(share * len(words)))):
        words[i] = rng.choice(("really", "indeed", "also", "notably", "in fact"))
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return "\n".join(lines)


@dataclass
class DemoResult:
    """Where the demo wrote its files, the tagging report and the tags scored against truth."""

    out_dir: Path
    report: TagReport
    confusion: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "tag": self.report.as_dict(),
                "confusion": self.confusion}


def build_crawl(out_dir: Path, *, seed: int = 0, docs_per_kind: int = 100) -> tuple[Path, Path]:
    """Write ``generated.jsonl`` (our model's output) and ``crawl.jsonl``; return both paths."""
    rng = random.Random(seed)
    paragraphs = stdlib_paragraphs()
    rng.shuffle(paragraphs)
    half = len(paragraphs) // 2
    train, held_out = paragraphs[:half], paragraphs[half:]
    need = 2 * docs_per_kind
    if len(held_out) < need:
        raise ConfigError(
            f"docs_per_kind={docs_per_kind} needs {need} held-out paragraphs, only "
            f"{len(held_out)} available; use at most {len(held_out) // 2}"
        )
    ours = TrigramModel().fit(train).sample(3 * docs_per_kind, rng)
    theirs = TrigramModel().fit(train[::-1]).sample(docs_per_kind, random.Random(seed + 1))
    generated = [{"id": f"gen-{i:05d}", "text": t} for i, t in enumerate(ours)]

    crawl: list[dict[str, Any]] = []
    k = docs_per_kind
    for i, text in enumerate(held_out[:k]):
        crawl.append({"id": f"web-{i:05d}", "text": text, "language_creators": ["found"],
                      "true_origin": "human"})
    for i, text in enumerate(held_out[k : 2 * k]):
        crawl.append({"id": f"web-{k + i:05d}", "text": text, "true_origin": "human"})
    for i, text in enumerate(ours[:k]):
        crawl.append({"id": f"copy-{i:05d}", "text": text, "true_origin": "synthetic"})
    for i, text in enumerate(ours[k : 2 * k]):
        crawl.append({"id": f"edit-{i:05d}", "text": light_edit(text, rng),
                      "true_origin": "synthetic"})
    for i, text in enumerate(ours[2 * k :]):
        crawl.append({"id": f"decl-{i:05d}", "text": text, "is_synthetic": True,
                      "generator": "stdlib-trigram", "true_origin": "synthetic"})
    for i, text in enumerate(theirs):
        crawl.append({"id": f"other-{i:05d}", "text": text, "true_origin": "synthetic"})
    rng.shuffle(crawl)

    lines = [json.dumps(rec, ensure_ascii=False).encode() for rec in crawl]
    bad = [
        b'{"id": "broken-1", "text": "a page cut off mid-rec',
        json.dumps({"id": "empty-1", "text": "   "}).encode(),
        json.dumps({"id": crawl[0]["id"], "text": "same id again"}).encode(),
        json.dumps({"id": "num-1", "text": 1234}).encode(),
        b'{"id": "latin1-1", "text": "na\xefve caf\xe9"}',
    ]
    for offset, line in zip((3, 50, 120, 200, 333), bad, strict=True):
        lines.insert(offset, line)

    generated_path, crawl_path = out_dir / "generated.jsonl", out_dir / "crawl.jsonl"
    _write_lines(generated_path, [json.dumps(r).encode() for r in generated])
    _write_lines(crawl_path, lines)
    return generated_path, crawl_path


def _write_lines(path: Path, lines: list[bytes]) -> None:
    with writing(path), atomic_path(path) as tmp:
        tmp.write_bytes(b"\n".join(lines) + b"\n")


def run_demo(
    out_dir: str | os.PathLike, *, seed: int = 0, docs_per_kind: int = 100, progress: bool = False,
    detector: str | os.PathLike | None = "default",
) -> DemoResult:
    """Build the demo crawl and ledger under ``out_dir``, tag the crawl, score the tags.

    ``detector`` decides the documents no other evidence reaches (the unregistered model's
    text, the human pages without metadata): the shipped detector by default, a folder of
    your own, or ``None`` to see what declared metadata and the ledger alone leave unknown.
    The truth-vs-tag table then shows what it recovers and what it costs in false positives.

    A folder that cannot be written (read-only, a file on its path, an empty name) is one
    :class:`~provenance.errors.OutputError` before anything is built.
    """
    out = check_output(out_dir, folder=True)
    ledger = out / "ledger.sqlite"
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for stale in (ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
            stale.unlink(missing_ok=True)
    generated, crawl = build_crawl(out, seed=seed, docs_per_kind=docs_per_kind)
    add_corpus(ledger, generated, generator="stdlib-trigram", generation=1)
    tagged = out / "tagged.parquet"
    report = tag_corpus(crawl, tagged, ledger=ledger, detector=detector, progress=progress)
    frame = pl.read_parquet(tagged, columns=["true_origin", "prov_label"])
    confusion: dict[str, dict[str, int]] = {}
    for (origin, label), n in Counter(frame.iter_rows()).items():
        confusion.setdefault(origin, {})[label] = n
    return DemoResult(out_dir=out, report=report, confusion=dict(sorted(confusion.items())))
