"""The device and thread helpers every entry point with ``device``/``threads`` goes through."""

from __future__ import annotations

import pytest
import torch

from provenance.devices import resolve_device, torch_threads
from provenance.errors import ConfigError


def test_torch_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        raise RuntimeError("the setting is restored on the way out of an error too")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_torch_threads_refuses_what_is_not_a_thread_count(threads: object) -> None:
    with pytest.raises(ConfigError, match="threads must be a positive integer or None"):
        with torch_threads(threads):  # type: ignore[arg-type]
            pass


def test_resolve_device_checks_what_it_is_given() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible; use cpu"):
            resolve_device("cuda:0")
