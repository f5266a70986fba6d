"""How tailguard's warnings are shown at the command line (and that recording them still works)."""

from __future__ import annotations

import warnings

import pytest

from provenance.errors import TailguardWarning, one_line_warnings, one_line_warnings_active


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
