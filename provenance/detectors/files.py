"""The on-disk format of saved detectors: JSON written atomically, checked on the way back in.

A saved detector is a folder of JSON (the parameters, threshold and calibration) plus, for a
trained classifier, safetensors weights whose sha256 the JSON records, so a folder whose weights
were swapped or half-copied fails to load instead of scoring with the wrong numbers. Nothing in
it is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
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
