"""Which heavy libraries a piece of code loads, run in a fresh interpreter.

A plain module, not a test module, so that test modules can import it:
``from tests.loaded_modules import heavy_modules_loaded_by``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def heavy_modules_loaded_by(code: str, heavy: Sequence[str]) -> list[str]:
    """The modules of ``heavy`` in ``sys.modules`` after ``code`` ran in a new process (from
    the repository root): what a user's process pays for, not what this test process holds."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted(m for m in {list(heavy)!r} if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
