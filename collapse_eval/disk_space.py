"""Stop a long run before its disk fills, not in the middle of a write.

A full disk kills a run inside whatever it was writing, and the error is lost when the log is on
the same disk: that is how a 90-generation LM run here died with nothing in its log but a
``resource_tracker`` warning. Checked before each generation, the run instead stops with room
left to say why, and since every finished generation is on disk, ``--resume`` continues once
space is freed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from provenance.errors import DiskSpaceError

__all__ = ["free_bytes", "generation_needs", "require_free_space"]

#: Environment variable that overrides the free space a generation must find (in GiB, 0 turns
#: the check off), for disks the estimate does not fit.
ENV_MIN_FREE_GB = "TAILGUARD_MIN_FREE_GB"
#: What a generation needs beyond its model: parquet files, ledger rows and the SQLite log.
_BASE_BYTES = 512 * 1024**2
#: Copies of the weights a generation can hold on disk at once: the newest and the previous
#: model, and the epoch state (weights, AdamW's two moments, the best epoch's weights).
_MODEL_COPIES = 6


def generation_needs(model_bytes: int) -> int:
    """Bytes a generation should find free before it starts, for a model of ``model_bytes``
    (about 0.5 GiB for the default 0.93M-parameter GPT-2, 3.5 GiB for fine-tuning
    SmolLM2-135M); the environment variable ``TAILGUARD_MIN_FREE_GB`` overrides it."""
    override = os.environ.get(ENV_MIN_FREE_GB, "").strip()
    if override:
        try:
            gigabytes = float(override)
        except ValueError:
            raise DiskSpaceError(f"{ENV_MIN_FREE_GB}={override!r}: not a number of GiB "
                                 "(0 turns the free-space check off)") from None
        return max(0, int(gigabytes * 1024**3))
    return _BASE_BYTES + _MODEL_COPIES * int(model_bytes)


def free_bytes(folder: str | os.PathLike) -> tuple[Path, int]:
    """The nearest existing folder at or above ``folder`` and the bytes free on its disk."""
    probe = Path(folder).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def require_free_space(folder: str | os.PathLike, needed: int, *, what: str) -> None:
    """Raise :class:`DiskSpaceError` if the disk holding ``folder`` has less than ``needed``
    bytes free; ``what`` names the work that would not start."""
    if needed <= 0:
        return
    probe, free = free_bytes(folder)
    if free < needed:
        raise DiskSpaceError(
            f"{probe}: {free / 1024**3:.2f} GiB free, less than the {needed / 1024**3:.2f} GiB "
            f"{what} needs; stopped before starting it, every finished generation is kept: "
            f"free some space, then continue with --resume (or set {ENV_MIN_FREE_GB} to the GiB "
            "to require, 0 for none)")
