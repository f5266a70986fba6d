"""What every benchmark shares: a description of the machine and the atomic JSON result write."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from provenance.atomic import atomic_path  # noqa: E402


def machine(**extra: Any) -> dict[str, Any]:
    """CPU model, core count and Python version, plus whatever the benchmark adds."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **extra}


def write_result(path: str | os.PathLike, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON result atomically and say where it went."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"wrote {shown}")
