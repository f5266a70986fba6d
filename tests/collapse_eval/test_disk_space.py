"""The free-space check on the real disk under pytest's temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collapse_eval.disk_space import free_bytes, generation_needs, require_free_space
from provenance.errors import DiskSpaceError


def test_needs_grow_with_the_model_and_the_environment_overrides(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILGUARD_MIN_FREE_GB", raising=False)
    small, large = generation_needs(4 * 930_000), generation_needs(4 * 135_000_000)
    assert 512 * 1024**2 < small < 600 * 1024**2
    assert large - small == 6 * 4 * (135_000_000 - 930_000)
    monkeypatch.setenv("TAILGUARD_MIN_FREE_GB", "1.5")
    assert generation_needs(10**9) == int(1.5 * 1024**3)
    monkeypatch.setenv("TAILGUARD_MIN_FREE_GB", "0")
    assert generation_needs(10**9) == 0
    monkeypatch.setenv("TAILGUARD_MIN_FREE_GB", "lots")
    with pytest.raises(DiskSpaceError, match="TAILGUARD_MIN_FREE_GB='lots': not a number"):
        generation_needs(1)


def test_free_space_is_read_at_the_nearest_existing_folder(tmp_path: Path) -> None:
    probe, free = free_bytes(tmp_path / "run" / "seed-0" / "replace")
    assert probe == tmp_path.resolve()
    assert free == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.01)


def test_too_little_space_stops_with_the_numbers_and_the_way_on(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    require_free_space(tmp_path / "run", free // 2, what="generation 3 of policy replace")
    require_free_space(tmp_path / "run", 0, what="anything")  # 0: the check is off
    with pytest.raises(DiskSpaceError) as caught:
        require_free_space(tmp_path / "run", free + 1024**4, what="generation 3 of policy replace")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path.resolve()}: {free / 1024**3:.2f} GiB free, less than")
    assert "generation 3 of policy replace needs" in message and "--resume" in message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()
