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

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import secrets
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from provenance.atomic import atomic_path
from provenance.errors import ConfigError, InputError, TailguardWarning
from provenance.schema import Evidence, Label, Tag
from provenance.signals import Signal

if TYPE_CHECKING:
    import polars as pl
    from transformers import WatermarkingConfig

__all__ = [
    "DEFAULT_Z_THRESHOLD",
    "WatermarkKey",
    "WatermarkResult",
    "WatermarkScorer",
    "WatermarkSignal",
    "generate_watermarked",
    "normal_tail",
]

DEFAULT_Z_THRESHOLD = 4.0
KEY_FORMAT = "tailguard-watermark-key"
KEY_VERSION = 1
SEEDING_SCHEMES = ("lefthash", "selfhash")
RNG_DEVICES = ("cpu", "cuda", "mps")
#: torch seeds are unsigned 64-bit; keys stay below 2**63 so any JSON or int64 reader keeps them.
MAX_HASHING_KEY = 2**63 - 1
#: PBKDF2 rounds of the published fingerprint: a fingerprint must not be a cheap oracle for
#: guessing the secret, so checking one guess costs ~10^5 hashes instead of one.
_FINGERPRINT_ROUNDS = 100_000
_FINGERPRINT_SALT = b"tailguard-watermark-key-v1"
#: Prefix token whose green list is hashed into ``greenlist_check``.
_CHECK_PREFIX = (1,) * 4

REASON_DETECTED = "watermark detected"
REASON_ABSENT = "no watermark"
REASON_EMPTY = "empty text"


def normal_tail(z: float) -> float:
    """One-sided standard normal tail ``P(Z >= z)``: the nominal false positive rate of ``z``.

    Examples
    --------
    >>> f"{normal_tail(4.0):.2e}", f"{normal_tail(3.0):.2e}"
    ('3.17e-05', '1.35e-03')
    """
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _fingerprint(hashing_key: int) -> str:
    digest = hashlib.pbkdf2_hmac(
        "sha256", str(hashing_key).encode(), _FINGERPRINT_SALT, _FINGERPRINT_ROUNDS
    )
    return digest[:8].hex()


# --------------------------------------------------------------------------- the key


@dataclass(frozen=True)
class WatermarkKey:
    """A watermark's secret and settings: what generation and detection must agree on.

    ``vocab_size`` is the size of the *model's* output layer, which transformers draws green lists
    over (``model.config.vocab_size``); ``tokenizer_vocab_size`` is ``len(tokenizer)`` where that
    differs (models whose embedding is padded to a round size), else ``None``. ``rng_device`` is
    the device type that generates (see the module notes: CPU and CUDA draw different green
    lists). ``key_fingerprint`` identifies the secret without revealing it; a key loaded without
    its secret has ``hashing_key=None`` and can describe, but not detect, the watermark.

    Examples
    --------
    >>> key = WatermarkKey.generate("my-tokenizer", vocab_size=1000, seed=7)
    >>> key.greenlist_ratio, key.has_secret, len(key.key_fingerprint)
    (0.25, True, 16)
    >>> key.generation_config().bias
    2.0
    >>> WatermarkKey(0, "my-tokenizer", 1000)
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: hashing_key must be an integer in [1, 2**63 - 1], got 0; \
make one with WatermarkKey.generate()
    """

    hashing_key: int | None = field(repr=False)
    tokenizer: str
    vocab_size: int
    greenlist_ratio: float = 0.25
    bias: float = 2.0
    seeding_scheme: str = "lefthash"
    context_width: int = 1
    tokenizer_vocab_size: int | None = None
    rng_device: str = "cpu"
    key_fingerprint: str | None = None

    def __post_init__(self) -> None:
        key = self.hashing_key
        if key is not None and (
            isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= MAX_HASHING_KEY
        ):
            raise ConfigError(
                f"hashing_key must be an integer in [1, 2**63 - 1], got {key!r}; make one with "
                "WatermarkKey.generate()"
            )
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ConfigError("tokenizer must name the generating tokenizer (hub id or path)")
        for name in ("vocab_size", "context_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.tokenizer_vocab_size is not None and not (
            isinstance(self.tokenizer_vocab_size, int)
            and 1 <= self.tokenizer_vocab_size <= self.vocab_size
        ):
            raise ConfigError(
                f"tokenizer_vocab_size must be an integer in [1, vocab_size={self.vocab_size}], "
                f"got {self.tokenizer_vocab_size!r}"
            )
        if not 0.0 < self.greenlist_ratio < 1.0:
            raise ConfigError(f"greenlist_ratio must be in (0, 1), got {self.greenlist_ratio}")
        if int(self.vocab_size * self.greenlist_ratio) < 1:
            raise ConfigError(
                f"greenlist_ratio {self.greenlist_ratio} of a {self.vocab_size}-token vocabulary "
                "leaves an empty green list; raise greenlist_ratio"
            )
        if not self.bias > 0:
            raise ConfigError(f"bias must be > 0 (0 adds no watermark), got {self.bias}")
        if self.seeding_scheme not in SEEDING_SCHEMES:
            raise ConfigError(
                f"seeding_scheme must be one of {SEEDING_SCHEMES}, got {self.seeding_scheme!r}"
            )
        if self.rng_device not in RNG_DEVICES:
            raise ConfigError(
                f"rng_device must be one of {RNG_DEVICES} (a device type, not 'cuda:1'), "
                f"got {self.rng_device!r}"
            )
        if key is None:
            if not self.key_fingerprint:
                raise ConfigError("a WatermarkKey needs its hashing_key or its key_fingerprint")
            return
        actual = _fingerprint(key)
        if self.key_fingerprint is not None and self.key_fingerprint != actual:
            raise ConfigError(
                f"hashing_key does not match this watermark key (fingerprint {actual}, expected "
                f"{self.key_fingerprint}); pass the secret the key was created with"
            )
        object.__setattr__(self, "key_fingerprint", actual)

    @classmethod
    def generate(
        cls,
        tokenizer: str,
        vocab_size: int,
        *,
        seed: int | None = None,
        **settings: Any,
    ) -> WatermarkKey:
        """A new key with a random secret (from :mod:`secrets`; ``seed`` only for tests)."""
        if seed is None:
            hashing_key = secrets.randbelow(MAX_HASHING_KEY) + 1
        else:
            hashing_key = random.Random(seed).randrange(1, MAX_HASHING_KEY + 1)
        return cls(hashing_key, tokenizer, vocab_size, **settings)

    @property
    def has_secret(self) -> bool:
        return self.hashing_key is not None

    @property
    def expected_tokenizer_size(self) -> int:
        """``len(tokenizer)`` of the tokenizer this key was made for."""
        return self.tokenizer_vocab_size or self.vocab_size

    def require_secret(self, purpose: str) -> int:
        if self.hashing_key is None:
            raise ConfigError(
                f"this watermark key (fingerprint {self.key_fingerprint}) was saved without its "
                f"secret, which {purpose} needs; load it with "
                "WatermarkKey.load(path, hashing_key=<the secret>)"
            )
        return self.hashing_key

    def generation_config(self) -> WatermarkingConfig:
        """The :class:`transformers.WatermarkingConfig` to pass to ``model.generate``."""
        from transformers import WatermarkingConfig

        return WatermarkingConfig(
            greenlist_ratio=self.greenlist_ratio,
            bias=self.bias,
            hashing_key=self.require_secret("generation"),
            seeding_scheme=self.seeding_scheme,
            context_width=self.context_width,
        )

    def greenlist_check(self) -> str | None:
        """A short hash of one green list, or ``None`` where ``rng_device`` is not available.

        Equal keys give equal checks only where torch draws the same permutations; comparing
        the check saved with a key against the current one catches a torch build (or device)
        that would silently detect nothing.
        """
        import torch

        if self.rng_device == "cuda" and not torch.cuda.is_available():
            return None
        if self.rng_device == "mps" and not torch.backends.mps.is_available():
            return None
        processor = self.generation_config().construct_processor(self.vocab_size, self.rng_device)
        prefix = torch.tensor(_CHECK_PREFIX[: max(self.context_width, 1)], device=self.rng_device)
        green = np.sort(processor._get_greenlist_ids(prefix).cpu().numpy())
        return hashlib.sha256(green.astype("<i8").tobytes()).hexdigest()[:16]

    # ----------------------------------------------------------------------- files

    def save(self, path: str | os.PathLike, *, include_secret: bool = False) -> Path:
        """Write the key as JSON (atomically). Without ``include_secret`` it is safe to publish:
        it tells others which watermark and tokenizer to expect, not how to forge or detect it.
        """
        import torch
        import transformers

        record: dict[str, Any] = {"format": KEY_FORMAT, "version": KEY_VERSION}
        record.update({k: v for k, v in asdict(self).items() if k != "hashing_key"})
        if include_secret:
            # As a string: JSON readers in other languages round large integers through doubles.
            record["hashing_key"] = str(self.require_secret("saving the secret"))
        if self.has_secret:
            record["greenlist_check"] = self.greenlist_check()
        record["torch_version"] = torch.__version__
        record["transformers_version"] = transformers.__version__
        dest = Path(path)
        with atomic_path(dest) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike, *, hashing_key: int | None = None) -> WatermarkKey:
        """Read a key saved by :meth:`save`; a supplied ``hashing_key`` is checked against the
        saved fingerprint (and against a saved secret, if the file holds one).
        """
        src = Path(path)
        try:
            record = json.loads(src.read_text())
        except FileNotFoundError:
            raise InputError("watermark key file not found", file=str(src)) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"not a readable watermark key: {exc}", file=str(src)) from None
        if not isinstance(record, dict) or record.get("format") != KEY_FORMAT:
            raise InputError(f"not a {KEY_FORMAT} file", file=str(src))
        if record.get("version") != KEY_VERSION:
            raise InputError(
                f"watermark key version {record.get('version')!r} is not supported (this "
                f"tailguard reads version {KEY_VERSION}); upgrade tailguard",
                file=str(src),
            )
        try:
            saved = None if record.get("hashing_key") is None else int(record["hashing_key"])
        except (TypeError, ValueError):
            raise InputError("hashing_key is not an integer", file=str(src)) from None
        if hashing_key is not None:
            try:
                hashing_key = int(hashing_key)
            except (TypeError, ValueError):
                raise ConfigError(f"hashing_key must be an integer, got {hashing_key!r}") from None
        if hashing_key is not None and saved is not None and hashing_key != saved:
            raise ConfigError(f"{src}: the hashing_key passed does not match the saved secret")
        secret = hashing_key if hashing_key is not None else saved
        names = {f for f in cls.__dataclass_fields__ if f != "hashing_key"}
        try:
            key = cls(secret, **{k: v for k, v in record.items() if k in names})
        except TypeError as exc:
            raise InputError(f"watermark key is missing a field: {exc}", file=str(src)) from None
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        check = record.get("greenlist_check")
        if key.has_secret and check:
            current = key.greenlist_check()
            if current is not None and current != check:
                import torch
                import transformers

                warnings.warn(
                    f"{src}: this torch {torch.__version__} with transformers "
                    f"{transformers.__version__} draws different green lists than the ones that "
                    f"saved the key (torch {record.get('torch_version', '?')}, transformers "
                    f"{record.get('transformers_version', '?')}); texts watermarked there will "
                    "not be detected here. Detect with the torch and transformers versions (and "
                    "device type) that generated",
                    TailguardWarning,
                    stacklevel=2,
                )
        return key


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class WatermarkResult:
    """What the detector found in one text.

    ``z_score`` is transformers' statistic and ``p_value`` the exact binomial probability of at
    least this many green tokens without a watermark; both are ``None`` when fewer than
    ``min_tokens`` n-grams could be scored. ``label`` is ``synthetic`` or ``unknown``, never
    ``human``: the absence of our watermark says nothing about who wrote a text.
    """

    z_score: float | None
    p_value: float | None
    tokens_scored: int
    green_tokens: int
    label: Label
    reason: str

    @property
    def detected(self) -> bool:
        return self.label is Label.SYNTHETIC


def _resolve_rng_device(key: WatermarkKey, device: str) -> str:
    from provenance.models import resolve_device

    if device == "auto":
        device = key.rng_device
    if device.startswith("cuda") and key.rng_device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "this watermark key's green lists are drawn by CUDA's random generator (the "
                "text was watermarked on a GPU), which the CPU cannot reproduce; detect on a "
                "machine with a CUDA GPU"
            )
    resolved = resolve_device(device)
    if resolved.split(":")[0] != key.rng_device:
        raise ConfigError(
            f"this watermark key was generated with {key.rng_device} random numbers and "
            f"{resolved} draws different green lists; detect with device={key.rng_device!r} "
            "(or 'auto')"
        )
    return resolved


def load_tokenizer(name: str) -> Any:
    """The tokenizer a key names, resolving tailguard's offline default model name."""
    from transformers import AutoTokenizer

    from provenance.models import model_path

    try:
        return AutoTokenizer.from_pretrained(model_path(name))
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the watermark tokenizer: {first}", file=name) from exc


def _check_tokenizer(key: WatermarkKey, tokenizer: Any) -> None:
    size = len(tokenizer)
    if size != key.expected_tokenizer_size:
        raise ConfigError(
            f"the tokenizer has {size} tokens but the watermark key was made for a "
            f"{key.expected_tokenizer_size}-token vocabulary ({key.tokenizer}); use the "
            "tokenizer that generated the watermarked text"
        )


class WatermarkScorer:
    """Batched watermark detection over raw texts.

    Texts are tokenized with the generating tokenizer (no special tokens), split into the
    n-grams transformers' detector scores (``context_width + 1`` tokens for ``lefthash``), and
    each n-gram's green list is drawn by transformers' watermark processor -- once per distinct
    prefix in a batch, and kept across batches in an LRU cache of bit sets (``cache_mb``; at
    the default 128 MB, 21,845 green lists of a 49,152-token vocabulary, close to every prefix
    a corpus uses), where :class:`transformers.WatermarkDetector` draws one per n-gram of every
    text. Drawing a green list is a ``randperm`` of the vocabulary (~0.25 ms at 49k tokens), so
    the cache is most of the speed. Each text is counted over its own tokens only, so padding
    never enters a score and results do not depend on how texts are batched; z-scores and token
    counts equal ``WatermarkDetector``'s on each text alone. (With ``ignore_repeated_ngrams``,
    only that of transformers >= 5.19: earlier ones counted n-grams in a ``Counter`` keyed by
    tensors, which hash by identity, so repeated n-grams were never merged. The green lists, and
    so this scorer's results, are the same under either.)

    A text is ``synthetic`` when its exact binomial p-value is at most
    ``normal_tail(z_threshold)`` (3.2e-5 for z = 4; see the module notes) and at least
    ``min_tokens`` n-grams were scored; everything else is ``unknown`` with the reason.
    Not thread-safe (the processor's random generator is re-seeded for every green list), and on
    the CPU green lists are drawn with one torch thread, which caps the process's torch threads
    at one while a batch is scored (see :func:`_one_torch_thread`).

    Examples
    --------
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import PreTrainedTokenizerFast
    >>> vocab = {f"w{i}": i for i in range(100)}
    >>> raw = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    >>> raw.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    >>> key = WatermarkKey.generate("word-level", vocab_size=100, seed=1)
    >>> scorer = WatermarkScorer(key, tok, min_tokens=8)
    >>> [r.reason for r in scorer.score(["w1 w2 w3", "   "])]
    ['too few tokens: 2 < 8', 'empty text']
    >>> result = scorer.score([" ".join(f"w{i}" for i in range(100))])[0]
    >>> result.label.value, result.tokens_scored
    ('unknown', 99)
    """

    def __init__(
        self,
        key: WatermarkKey,
        tokenizer: Any = None,
        *,
        device: str = "auto",
        z_threshold: float = DEFAULT_Z_THRESHOLD,
        min_tokens: int = 16,
        batch_size: int = 32,
        ignore_repeated_ngrams: bool = True,
        cache_mb: float = 128.0,
    ) -> None:
        if not isinstance(key, WatermarkKey):
            raise ConfigError(f"key must be a WatermarkKey, got {type(key).__name__}")
        if not (isinstance(z_threshold, int | float) and z_threshold > 0):
            raise ConfigError(f"z_threshold must be > 0, got {z_threshold!r}")
        if not (isinstance(cache_mb, int | float) and cache_mb >= 0):
            raise ConfigError(f"cache_mb must be >= 0, got {cache_mb!r}")
        for name, value in (("min_tokens", min_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        key.require_secret("detection")
        from transformers import PretrainedConfig, WatermarkDetector

        self.key = key
        self.device = _resolve_rng_device(key, device)
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = load_tokenizer(str(tokenizer or key.tokenizer))
        _check_tokenizer(key, tokenizer)
        self.tokenizer = tokenizer
        self.z_threshold = float(z_threshold)
        self.alpha = normal_tail(self.z_threshold)
        self.min_tokens = min_tokens
        self.batch_size = batch_size
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        #: Green lists kept between batches (each a bit set of vocab_size / 8 bytes).
        self.cache_size = int(cache_mb * 2**20 // max(1, -(-key.vocab_size // 8)))
        # The detector is built exactly as a user of transformers would build it; its logits
        # processor is the one source of green lists for generation and detection alike.
        self.detector = WatermarkDetector(
            model_config=PretrainedConfig(
                vocab_size=key.vocab_size, bos_token_id=getattr(tokenizer, "bos_token_id", None)
            ),
            device=self.device,
            watermarking_config=key.generation_config(),
            ignore_repeated_ngrams=ignore_repeated_ngrams,
        )
        processor = self.detector.processor
        self._processor = processor
        self._selfhash = processor.seeding_scheme == "selfhash"
        #: n-gram length scored, as in WatermarkDetector._score_ngrams_in_passage.
        self.ngram = processor.context_width + 1 - int(self._selfhash)
        self._prefix_len = self.ngram if self._selfhash else self.ngram - 1
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

    # ----------------------------------------------------------------------- public

    def score(self, texts: Sequence[str]) -> list[WatermarkResult]:
        """One :class:`WatermarkResult` per text, in order."""
        if isinstance(texts, str):
            raise InputError("score() takes a sequence of texts, not one string; wrap it: [text]")
        texts = list(texts)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts must be strings, got {type(text).__name__}", row=row)
        results: list[WatermarkResult] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            present = [i for i, t in enumerate(chunk) if t.strip()]
            ids: list[list[int] | None] = [None] * len(chunk)
            if present:
                # verbose=False: long documents are fine here (no model sees them), so the
                # tokenizer's "longer than the model's maximum length" warning would mislead.
                encoded = self.tokenizer(
                    [chunk[i] for i in present], add_special_tokens=False, verbose=False
                )
                for i, row_ids in zip(present, encoded["input_ids"], strict=True):
                    ids[i] = row_ids
            scored = self._score_rows([r for r in ids if r is not None])
            it = iter(scored)
            results.extend(_empty_result() if r is None else next(it) for r in ids)
        return results

    def score_token_ids(self, rows: Sequence[Sequence[int]]) -> list[WatermarkResult]:
        """Like :meth:`score` for texts already tokenized with the generating tokenizer."""
        checked = []
        for row, ids in enumerate(rows):
            arr = np.asarray(ids, dtype=np.int64).reshape(-1)
            if arr.size and (arr.min() < 0 or arr.max() >= self.key.vocab_size):
                raise InputError(
                    f"token ids must be in [0, {self.key.vocab_size}), got "
                    f"{arr.min()}..{arr.max()}",
                    row=row,
                )
            checked.append(arr)
        results = []
        for start in range(0, len(checked), self.batch_size):
            results.extend(self._score_rows(checked[start : start + self.batch_size]))
        return results

    # ----------------------------------------------------------------------- internals

    def _score_rows(self, rows: Sequence[Sequence[int]]) -> list[WatermarkResult]:
        scored, green = self._count(rows)
        return [self._result(int(n), int(g)) for n, g in zip(scored, green, strict=True)]

    def _count(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Scored n-grams and green n-grams per row, each row over its own length only."""
        n = self.ngram
        windows, owners = [], []
        for index, row in enumerate(rows):
            arr = np.asarray(row, dtype=np.int64)
            if arr.size < n:
                continue
            w = np.lib.stride_tricks.sliding_window_view(arr, n)
            if self.ignore_repeated_ngrams:
                w = np.unique(w, axis=0)
            windows.append(w)
            owners.append(np.full(len(w), index, dtype=np.int64))
        scored = np.zeros(len(rows), dtype=np.int64)
        green = np.zeros(len(rows), dtype=np.int64)
        if not windows:
            return scored, green
        grams = np.concatenate(windows)
        owner = np.concatenate(owners)
        prefixes, inverse = np.unique(grams[:, : self._prefix_len], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        targets = grams[:, -1]
        is_green = np.zeros(len(grams), dtype=bool)
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(prefixes)))])
        with _one_torch_thread(self.device):
            for j, prefix in enumerate(prefixes):
                members = order[bounds[j] : bounds[j + 1]]
                bits = self._green_bits(tuple(int(t) for t in prefix))
                t = targets[members]
                is_green[members] = (bits[t >> 3] >> (7 - (t & 7))) & 1
        scored = np.bincount(owner, minlength=len(rows))
        green = np.bincount(owner, weights=is_green, minlength=len(rows)).astype(np.int64)
        return scored, green

    def _green_bits(self, prefix: tuple[int, ...]) -> np.ndarray:
        """The green list after ``prefix`` as a packed bit set over the vocabulary (cached)."""
        bits = self._cache.get(prefix)
        if bits is not None:
            self._cache.move_to_end(prefix)
            return bits
        import torch

        ids = torch.tensor(prefix, dtype=torch.long, device=self.device)
        greenlist = self._processor._get_greenlist_ids(ids).cpu().numpy()
        mask = np.zeros(self.key.vocab_size, dtype=bool)
        mask[greenlist] = True
        bits = np.packbits(mask)
        self._cache[prefix] = bits
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return bits

    def _result(self, scored: int, green: int) -> WatermarkResult:
        if scored < self.min_tokens:
            return WatermarkResult(
                None, None, scored, green, Label.UNKNOWN,
                f"too few tokens: {scored} < {self.min_tokens}",
            )
        gamma = self.key.greenlist_ratio
        z = (green - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))
        p = _binomial_tail(green, scored, gamma)
        if p <= self.alpha:
            return WatermarkResult(z, p, scored, green, Label.SYNTHETIC, REASON_DETECTED)
        return WatermarkResult(z, p, scored, green, Label.UNKNOWN, REASON_ABSENT)


@contextlib.contextmanager
def _one_torch_thread(device: str) -> Iterator[None]:
    """Draw green lists with one CPU thread, restoring the caller's setting afterwards.

    A ``randperm`` of a vocabulary is too small to gain from intra-op threads, and on a machine
    whose cores are busy with other work the threads wait on each other: measured on 2 shared
    cores, 0.2 ms per green list with one thread and 8 ms with two.
    """
    import torch

    before = torch.get_num_threads()
    if device != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _binomial_tail(green: int, scored: int, gamma: float) -> float:
    """``P(X >= green)`` for ``X ~ Binomial(scored, gamma)``: exact, also deep in the tail."""
    from scipy.stats import binom

    return float(binom.sf(green - 1, scored, gamma))


def _empty_result() -> WatermarkResult:
    return WatermarkResult(None, None, 0, 0, Label.UNKNOWN, REASON_EMPTY)


# --------------------------------------------------------------------------- tagging


class WatermarkSignal(Signal):
    """Tag documents that carry our watermark as synthetic; leave every other one undecided.

    ``score`` is ``1 - p_value``; ``detail`` keeps ``z``, ``p_value``, ``tokens_scored`` and the
    key's fingerprint, so a tag says which key found it without revealing the key.
    """

    evidence: ClassVar[Evidence] = Evidence.WATERMARK

    def __init__(
        self,
        scorer: WatermarkScorer | WatermarkKey,
        *,
        generator: str | None = None,
        generation: int | None = None,
    ) -> None:
        super().__init__()
        self.scorer = scorer if isinstance(scorer, WatermarkScorer) else WatermarkScorer(scorer)
        self.generator = generator
        self.generation = generation

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        texts = ["" if t is None else t for t in batch.get_column(text_field).to_list()]
        fingerprint = self.scorer.key.key_fingerprint
        tags: list[Tag | None] = []
        for result in self.scorer.score(texts):
            if not result.detected:
                tags.append(None)
                continue
            tags.append(
                Tag(
                    label=Label.SYNTHETIC,
                    score=min(max(1.0 - float(result.p_value), 0.0), 1.0),
                    evidence=self.evidence,
                    generator=self.generator,
                    generation=self.generation,
                    detail={
                        "z": round(float(result.z_score), 3),
                        "p_value": float(result.p_value),
                        "tokens_scored": result.tokens_scored,
                        "key_fingerprint": fingerprint,
                    },
                )
            )
        return tags


# --------------------------------------------------------------------------- generation


def generate_watermarked(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    key: WatermarkKey,
    *,
    max_new_tokens: int = 128,
    min_new_tokens: int | None = None,
    seed: int = 0,
    do_sample: bool = True,
    batch_size: int = 16,
    **generate_kwargs: Any,
) -> list[str]:
    """Watermarked continuations of ``prompts`` (the generated text only, prompt removed).

    Prompts are left-padded into batches of ``batch_size``. Sampling is seeded per batch
    (``seed + batch index``) inside :func:`torch.random.fork_rng`, so the caller's global random
    state is left as it was; the same prompts, batch size and seed give the same texts.
    ``min_new_tokens`` keeps the model from stopping early (a watermark needs tokens to show).
    Extra keyword arguments go to ``model.generate`` (``temperature``, ``top_p`` ...).
    """
    import torch

    if isinstance(prompts, str):
        raise InputError("prompts must be a sequence of strings, not one string; wrap it")
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if min_new_tokens is not None and not 0 <= min_new_tokens <= max_new_tokens:
        raise ConfigError(
            f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}"
        )
    config = key.generation_config()
    model_vocab = model.config.get_text_config().vocab_size
    if model_vocab != key.vocab_size:
        raise ConfigError(
            f"the model's vocabulary has {model_vocab} tokens but the watermark key was made for "
            f"{key.vocab_size}; make a key for this model (WatermarkKey.generate(..., "
            f"vocab_size={model_vocab}))"
        )
    _check_tokenizer(key, tokenizer)
    device = next(model.parameters()).device
    if device.type != key.rng_device:
        raise ConfigError(
            f"the model is on {device.type} but the key's green lists are drawn on "
            f"{key.rng_device}; move the model or make a key with rng_device={device.type!r}"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id
    )
    if pad_id is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token to pad prompts with")
    encoded = tokenizer(list(prompts))["input_ids"]
    for row, ids in enumerate(encoded):
        if len(ids) < key.context_width:
            raise InputError(
                f"prompt has {len(ids)} tokens; the watermark needs at least "
                f"{key.context_width} to seed its first green list",
                row=row,
            )
    outputs: list[str] = []
    rng_devices = [device] if device.type == "cuda" else []
    for b, start in enumerate(range(0, len(encoded), batch_size)):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, ids in enumerate(chunk):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids) :] = 1
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            torch.manual_seed(seed + b)
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                watermarking_config=config,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                do_sample=do_sample,
                pad_token_id=pad_id,
                **generate_kwargs,
            )
        outputs.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return outputs
