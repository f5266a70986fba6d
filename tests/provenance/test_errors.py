"""The error classes (all in one place, all TailguardErrors) and how tailguard's warnings are
shown at the command line (and that recording them still works)."""

from __future__ import annotations

import ast
import inspect
import warnings
from pathlib import Path

import pytest

from provenance import errors
from provenance.errors import TailguardWarning, one_line_warnings, one_line_warnings_active

ROOT = Path(__file__).resolve().parents[2]


def test_every_error_class_lives_in_errors_and_is_a_tailguard_error() -> None:
    """An error class elsewhere is easy to miss for a caller catching TailguardError, and for
    the CLI, which turns a TailguardError into one line and exit code 1."""
    elsewhere = []
    modules = [ROOT / "cli.py"]
    for package in ("provenance", "mixers", "collapse_eval"):
        modules += sorted((ROOT / package).rglob("*.py"))
    for path in modules:
        if path == ROOT / "provenance" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not elsewhere, "error classes outside provenance/errors.py: " + ", ".join(elsewhere)
    defined = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if c.__module__ == errors.__name__ and issubclass(c, BaseException)]
    assert {c.__name__ for c in defined} >= {"DiskSpaceError", "GMMInputError", "ChainWorkerError",
                                             "SketchMismatchError"}
    assert all(issubclass(c, (errors.TailguardError, TailguardWarning)) for c in defined)


def test_tailguard_warnings_show_as_one_line_and_others_keep_their_format() -> None:
    assert not one_line_warnings_active()
    with one_line_warnings():
        assert one_line_warnings_active()
        ours = warnings.formatwarning(TailguardWarning("threshold too low; use 0.5"),
                                      TailguardWarning, "/x/ledger.py", 12, "warnings.warn(...)")
        theirs = warnings.formatwarning(UserWarning("something else"), UserWarning,
                                        "/x/lib.py", 7, "warnings.warn(...)")
    assert ours == "warning: threshold too low; use 0.5\n"
    assert theirs.startswith("/x/lib.py:7: UserWarning: something else")
    assert not one_line_warnings_active()  # restored on the way out


def test_recording_a_warning_is_unchanged_inside() -> None:
    with one_line_warnings(), pytest.warns(TailguardWarning, match="still caught"):
        warnings.warn(TailguardWarning("still caught"), stacklevel=1)


def test_errors_cross_processes_with_their_attributes() -> None:
    """A worker pool pickles its task's error to the parent; a class whose __init__ takes
    required keyword arguments cannot be rebuilt from its message alone."""
    import pickle

    sent = [errors.ChainWorkerError("chain failed", policy="replace", seed=3),
            errors.BenchFamilyError("bench family lm: chain failed", family="lm"),
            errors.InputError("bad row", file="a.jsonl", line=4)]
    for error in sent:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert vars(back) == vars(error)
