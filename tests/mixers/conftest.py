"""Fixtures the mixer tests share; the plain helpers they use are in ``mixture_inputs``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mixers.mixture_inputs import write_awkward_sources


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sources whose files disagree (``mixture_inputs.write_awkward_sources``), for
    ``mixture_inputs.awkward_spec``."""
    return write_awkward_sources(tmp_path_factory.mktemp("awkward"))
