"""Argument checks for the ledger: a bad value is a one-line error before anything is written.

So a batch is never half registered because its 900th document had a bad ``doc_id``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from provenance.errors import ConfigError, InputError, LedgerError


def check_requested(requested: Mapping[str, Any]) -> None:
    for name in ("num_perm", "ngram"):
        value = requested[name]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    seed = requested["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    for name in ("hash", "scheme"):
        if requested[name] is not None and not isinstance(requested[name], str):
            raise ConfigError(f"{name} must be a string, got {requested[name]!r}")
    threshold = requested["lsh_threshold"]
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 < threshold < 1.0
    ):
        raise ConfigError(f"lsh_threshold must be in (0, 1), got {threshold!r}")


def check_matches(path: Path, stored: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    for key, want in requested.items():
        if want is None:
            continue
        have = stored[key]
        same = math.isclose(have, want, abs_tol=1e-12) if key == "lsh_threshold" else have == want
        if not same:
            raise LedgerError(
                f"ledger {path} was created with {key}={have!r} but {key}={want!r} was "
                f"requested; omit {key} to use the stored value, or use another ledger file"
            )


def check_threshold(threshold: float) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 < threshold <= 1.0
    ):
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")


def check_texts(texts: Sequence[str]) -> Sequence[str]:
    if isinstance(texts, (str, bytes)):
        raise InputError("texts must be a sequence of strings, not a single string; wrap it in [ ]")
    if not isinstance(texts, Sequence):
        texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__}, expected str")
    return texts


def check_optional_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string or None, got {value!r}")


def check_generation(generation: object) -> int | None:
    if generation is None:
        return None
    if isinstance(generation, (bool, float)) or not isinstance(generation, (int, np.integer)):
        raise ConfigError(f"generation must be a non-negative integer or None, got {generation!r}")
    if generation < 0:
        raise ConfigError(f"generation must be a non-negative integer or None, got {generation}")
    return int(generation)


def check_length(name: str, values: Sequence[Any], n: int) -> None:
    if len(values) != n:
        raise ConfigError(
            f"{name} has {len(values)} entries but there are {n} texts; give one per text"
        )


def check_doc_ids(doc_ids: Sequence[str | None] | None, n: int) -> Sequence[str | None]:
    if doc_ids is None:
        return [None] * n
    if isinstance(doc_ids, str):
        raise ConfigError("doc_ids must be a sequence of ids, not a single string")
    doc_ids = list(doc_ids)
    check_length("doc_ids", doc_ids, n)
    for i, doc_id in enumerate(doc_ids):
        if doc_id is not None and not isinstance(doc_id, str):
            raise ConfigError(f"doc_ids[{i}] must be a string or None, got {doc_id!r}")
    return doc_ids


def check_parent_ids(parent_ids: Sequence[Sequence[str]] | None, n: int) -> list[str]:
    if parent_ids is None:
        return ["[]"] * n
    if isinstance(parent_ids, str):
        raise ConfigError("parent_ids must hold one list of ids per text, not a single string")
    parent_ids = list(parent_ids)
    check_length("parent_ids", parent_ids, n)
    out = []
    for i, parents in enumerate(parent_ids):
        if parents is None:
            parents = []
        if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
            raise ConfigError(
                f"parent_ids[{i}] must be a list of string ids (e.g. [{parents!r}]), "
                f"got {parents!r}"
            )
        out.append(json.dumps(list(parents), ensure_ascii=False))
    return out


def check_metadata(
    metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None, n: int
) -> list[str]:
    if metadata is None:
        return ["{}"] * n
    if isinstance(metadata, Mapping):
        return [metadata_json(metadata, "metadata")] * n
    if isinstance(metadata, str):
        raise ConfigError("metadata must be a dict or one dict per text, not a string")
    metadata = list(metadata)
    check_length("metadata", metadata, n)
    return [metadata_json(m, f"metadata[{i}]") for i, m in enumerate(metadata)]


def metadata_json(value: object, name: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} is not JSON-serialisable ({exc}); use plain values") from exc
