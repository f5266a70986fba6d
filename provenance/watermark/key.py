"""The watermark key: the secret and settings generation and detection must agree on.

It saves and shares without its secret (a PBKDF2 fingerprint identifies it and checks a secret
supplied later), and holds a check of one green list so that a torch build that draws green
lists differently warns instead of silently detecting nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from provenance.atomic import atomic_path
from provenance.errors import ConfigError, InputError, TailguardWarning

if TYPE_CHECKING:
    from transformers import WatermarkingConfig

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


def key_fingerprint_of(hashing_key: int) -> str:
    """The published fingerprint of a secret: slow to compute, so useless for guessing it."""
    digest = hashlib.pbkdf2_hmac(
        "sha256", str(hashing_key).encode(), _FINGERPRINT_SALT, _FINGERPRINT_ROUNDS
    )
    return digest[:8].hex()


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
        actual = key_fingerprint_of(key)
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
                f"secret, which {purpose} needs; give the secret with --watermark-secret or "
                "TAILGUARD_WATERMARK_SECRET (in Python: WatermarkKey.load(path, "
                "hashing_key=<the secret>))"
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

        With ``include_secret`` the file is readable by its owner only (mode 0600), from the
        moment it is created: whoever reads the secret can forge and erase the watermark.

        Examples
        --------
        >>> import tempfile, pathlib, stat
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> key = WatermarkKey(12345, "my-tokenizer", 1000)
        >>> private = key.save(folder / "key.secret.json", include_secret=True)
        >>> oct(stat.S_IMODE(private.stat().st_mode))
        '0o600'
        >>> import shutil; shutil.rmtree(folder)
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
        text = json.dumps(record, indent=2) + "\n"
        with atomic_path(dest) as tmp:
            if include_secret:
                _write_private(tmp, text)
            else:
                tmp.write_text(text)
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


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file at ``path`` that only its owner can read (mode 0600).

    The file is created with that mode (``O_EXCL``) rather than written and then chmod-ed: a
    reader who opened it while it was still world-readable would keep reading through the
    file descriptor after a chmod. ``atomic_path`` gives a temporary file with the usual
    permissions, so it is replaced by a fresh one before anything is written.
    """
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask: the owner must be able to reopen it to fsync
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
