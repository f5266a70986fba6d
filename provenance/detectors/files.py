"""The on-disk format of saved detectors: JSON written atomically, checked on the way back in.

A saved detector is a folder of JSON (the parameters, threshold and calibration) plus, for a
trained classifier, safetensors weights whose sha256 the JSON records, so a folder whose weights
were swapped or half-copied fails to load instead of scoring with the wrong numbers. Nothing in
it is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from provenance.atomic import atomic_path
from provenance.errors import InputError

FORMAT = "tailguard-detector"
FORMAT_VERSION = 1
DETECTOR_FILE = "detector.json"
NGRAM_JSON = "ngram.json"
NGRAM_WEIGHTS = "ngram.safetensors"


def file_sha256(path: Path) -> str:
    """The hex digest a saved JSON records for its weights file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of the packages whose numbers a threshold depends on, saved beside it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("tailguard", "torch", "transformers", "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically, so a crash never leaves half a saved detector."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    """A saved detector's JSON, refused with the file named if it is not one this version reads."""
    if not path.exists():
        raise InputError("saved detector not found (expected a folder written by save())",
                         file=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a tailguard detector file (format is not {FORMAT!r})",
                         file=str(path))
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"written by a newer tailguard (format version {data['version']}); upgrade",
            file=str(path),
        )
    return data


_DIGESTS: dict[tuple[str, float], str] = {}


def model_digest(lm: Any) -> str:
    """A short sha256 of a loaded model's weights (see :func:`weights_digest`)."""
    return weights_digest(str(lm.name), getattr(lm.model, "name_or_path", "") or str(lm.name))


def weights_digest(name: str, folder: str | os.PathLike | None = None) -> str:
    """A short sha256 identifying a scoring model's weights.

    The offline default (``smollm2-135m``) is identified by the GGUF file its pinned package
    ships, not by the safetensors converted from it on each machine (a converter version could
    change those bytes without changing the model); any other model by its folder's
    ``*.safetensors`` files (:func:`folder_digest`).
    """
    from provenance.models import DEFAULT_MODEL, model_path, smollm2_gguf_path

    if name == DEFAULT_MODEL:
        return folder_digest(smollm2_gguf_path())
    return folder_digest(folder if folder is not None else model_path(name), fallback=name)


def folder_digest(folder: str | os.PathLike, fallback: str | None = None) -> str:
    """A short sha256 of a model folder's ``*.safetensors`` files, or of one weights file (of
    ``fallback`` where there are none).

    Thresholds and trained weights belong to the numbers one exact model produces; two models
    called the same (a re-converted cache, a fine-tuned copy) must not be mistaken for each
    other. Each file is hashed once per process.
    """
    path = Path(folder)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path] if path.is_file() \
        else []
    if not files:
        return hashlib.sha256(str(fallback or folder).encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in files:
        key = (str(file.resolve()), file.stat().st_mtime)
        if key not in _DIGESTS:
            inner = hashlib.sha256()
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 24), b""):
                    inner.update(chunk)
            _DIGESTS[key] = inner.hexdigest()
        digest.update(_DIGESTS[key].encode())
    return digest.hexdigest()[:16]
