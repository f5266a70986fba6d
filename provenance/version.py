"""The installed tailguard version, in one place (ledgers, manifests and ``--version``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def tool_version() -> str:
    """The installed distribution's version, or ``0+unknown`` when running from a bare checkout."""
    try:
        return version("tailguard")
    except PackageNotFoundError:
        return "0+unknown"
