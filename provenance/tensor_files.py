"""safetensors files whose bytes depend only on what they hold.

safetensors writes a file's ``__metadata__`` from a Rust hash map, whose order is random per
process: the same tensors and the same metadata give different bytes, and a different sha256,
from one run to the next (two keys: two orders, about half the runs each). A detector folder
records its weights' sha256 and a retrain from the recorded spec should reproduce it, so the
header is written again with its keys sorted. The header keeps its length (same keys, same
values, compact JSON either way), so the tensors' offsets do not move.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provenance.atomic import atomic_path


def canonical(blob: bytes) -> bytes:
    """``blob`` (a whole safetensors file) with its JSON header's keys in sorted order.

    Examples
    --------
    >>> import numpy as np
    >>> from safetensors.numpy import load, save
    >>> blob = save({"b": np.ones(2), "a": np.zeros(1)}, metadata={"kind": "x", "format": "y"})
    >>> fixed = canonical(blob)
    >>> len(fixed) == len(blob), fixed[8:50]
    (True, b'{"__metadata__":{"format":"y","kind":"x"},')
    >>> load(fixed)["b"].tolist()
    [1.0, 1.0]
    """
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # never with safetensors' compact JSON; kept as written if it were
        return blob
    return blob[:8] + text.ljust(size) + blob[8 + size:]


def save_numpy(tensors: Mapping[str, Any], path: str | os.PathLike,
               metadata: Mapping[str, str] | None = None) -> Path:
    """Write numpy ``tensors`` to ``path`` atomically, the same bytes for the same content."""
    from safetensors.numpy import save

    return _write(save(dict(tensors), metadata=dict(metadata) if metadata else None), path)


def save_torch(tensors: Mapping[str, Any], path: str | os.PathLike,
               metadata: Mapping[str, str] | None = None) -> Path:
    """Write torch ``tensors`` to ``path`` atomically, the same bytes for the same content."""
    from safetensors.torch import save

    return _write(save(dict(tensors), metadata=dict(metadata) if metadata else None), path)


def _write(blob: bytes, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(canonical(blob))
    return path
