"""safetensors files with the same content have the same bytes, whatever the process."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save
from safetensors.torch import load_file as load_torch

from provenance.tensor_files import canonical, save_numpy, save_torch


def _with_metadata_order(blob: bytes, keys: list[str]) -> bytes:
    """``blob`` with its ``__metadata__`` keys in the order ``keys`` (as another process's
    hash map may write them), header padded to its old length."""
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size])
    meta = header.pop("__metadata__")
    reordered = {"__metadata__": {k: meta[k] for k in keys}, **header}
    text = json.dumps(reordered, separators=(",", ":")).encode()
    assert len(text) <= size
    return blob[:8] + text.ljust(size) + blob[8 + size:]


def test_two_metadata_orders_give_one_file(tmp_path: Path) -> None:
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3)}
    blob = save(tensors, metadata={"format": "tailguard-detector", "kind": "supervised"})
    one = _with_metadata_order(blob, ["format", "kind"])
    other = _with_metadata_order(blob, ["kind", "format"])
    assert one != other  # what safetensors may write from one run to the next
    assert canonical(one) == canonical(other)
    assert canonical(canonical(one)) == canonical(one)

    path = save_numpy(tensors, tmp_path / "a.safetensors", {"kind": "supervised",
                                                            "format": "tailguard-detector"})
    assert path.read_bytes() == canonical(one)
    loaded = load_file(path)
    assert set(loaded) == {"w", "b"} and np.array_equal(loaded["w"], tensors["w"])


def test_torch_tensors_round_trip(tmp_path: Path) -> None:
    tensors = {"model.mu": torch.tensor([0.5, -1.0]), "metrics": torch.zeros(2, 3)}
    path = save_torch(tensors, tmp_path / "g.safetensors", {"generation": "3", "metrics": "[]"})
    again = save_torch(tensors, tmp_path / "h.safetensors", {"metrics": "[]", "generation": "3"})
    assert path.read_bytes() == again.read_bytes()
    assert torch.equal(load_torch(path)["model.mu"], tensors["model.mu"])
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary left
