"""Shared fixtures. The hub is never reachable in tests: without these variables a lookup hangs."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data (``../shared/data``); skips where a checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A real local Ray (2 CPUs, small object store, no dashboard) shared by the Ray tests.

    Skips where Ray is not installed (``pip install "tailguard[ray]"``).
    """
    ray = pytest.importorskip("ray", reason='needs Ray: pip install "tailguard[ray]"')
    pytest.importorskip("ray.data", reason='needs Ray Data: pip install "tailguard[ray]"')
    if ray.is_initialized():
        yield ray
        return
    # Short: Ray puts unix sockets under it, and their paths may not exceed 107 bytes.
    temp = tempfile.mkdtemp(prefix="tgray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp,
             object_store_memory=150 * 1024**2, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
