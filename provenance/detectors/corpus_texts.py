"""Texts for a detector's calibration, read from corpora a user points at, with their labels.

``tailguard detect-calibrate`` takes whole corpora as human (or machine) text; a corpus that
carries a ``label`` column saying otherwise is refused rather than calibrating a threshold on
machine text taken for human. Each file's sha256 and rejected rows are kept for the report,
so the calibration says exactly what it was set on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.errors import InputError


@dataclass
class CorpusTexts:
    """Texts read for a recalibration: human (with group values), machine, and per file."""

    human: list[Any]
    groups: list[Any] | None
    machine: list[Any]
    files: list[dict[str, Any]]


def read_texts(paths: Sequence[str | os.PathLike], *, text_field: str = "text",
               group_field: str | None = None, label_field: str | None = None,
               machine: bool = False) -> CorpusTexts:
    """Every corpus's texts, whitespace as the detector wants it, with each file's sha256 and
    how many rows its reader refused.

    Without ``label_field`` every row is human (or machine, with ``machine``); a ``label``
    column that says otherwise is refused in one line rather than calibrating a threshold on
    machine text taken for human. With it, each row goes where its label says.
    """
    from provenance.corpus import read_corpus
    from provenance.detectors.supervised import collapse_whitespace
    from provenance.labels import corpus_labels

    out = CorpusTexts([], [] if group_field else None, [], [])
    for path in paths:
        frame = (corpus := read_corpus(path, text_field=text_field, origins=True)).frame
        for field in (group_field, label_field):
            if field and field not in frame.columns:
                raise InputError(f"no field {field!r} (fields: {', '.join(frame.columns)})",
                                 file=str(path), field=field)
        column = label_field or ("label" if "label" in frame.columns else None)
        labels = (np.full(frame.height, int(machine)) if column is None else
                  corpus_labels(corpus, column).astype(np.int64))
        if label_field is None and column is not None and (labels != int(machine)).any():
            other = int((labels != int(machine)).sum())
            hint = (f"pass --label-field {column} to use each row as labelled" if not machine
                    else f"a --machine corpus holds machine text only (give a labelled one as "
                         f"HUMAN with --label-field {column})")
            raise InputError(f"{other} rows are labelled {'human' if machine else 'machine'}; "
                             f"{hint}", file=str(path), field=column)
        texts = [collapse_whitespace(t) for t in frame.get_column(text_field).to_list()]
        out.human.extend(t for t, lab in zip(texts, labels, strict=True) if lab == 0)
        out.machine.extend(t for t, lab in zip(texts, labels, strict=True) if lab == 1)
        if out.groups is not None:
            values = frame.get_column(group_field).cast(str).to_list()
            out.groups.extend(v for v, lab in zip(values, labels, strict=True) if lab == 0)
        digest = (hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file()
                  else None)
        out.files.append({"path": str(path), "sha256": digest, "rows": frame.height,
                          "human": int((labels == 0).sum()), "machine": int((labels == 1).sum()),
                          "rejected": corpus.counts.rejected,
                          "first_reject": None if not corpus.rejects else
                          f"line {corpus.rejects[0].line}: {corpus.rejects[0].reason.value}"})
    return out
