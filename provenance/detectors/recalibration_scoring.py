"""Scoring the texts of a recalibration: in chunks with a progress bar, and, where the
detector's inputs are adapted to a human reference, with the language model read once.

A recalibration scores the same human texts with the detector as trained (the FPR "before")
and, adapting, with the reference head against the fitted texts (the FPR "after"). The head
inputs are the expensive part (one language-model pass); both heads score from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RecalibrationScoring:
    """Scores for a recalibration, 64 texts at a time with a progress bar. Adapting, the
    language model reads each text once: its head inputs serve both heads."""

    def __init__(self, detector: Any, adapting: bool, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.detector, self.adapting = detector, adapting
        self.progress, self.tqdm = progress, tqdm
        self.inputs: np.ndarray | None = None

    def human(self, texts: list) -> tuple[np.ndarray, list[str | None]]:
        """The source detector's criterion of every text (NaN where unscorable), reasons."""
        if not self.adapting:
            return self._chunks(texts, "scoring human texts", self._detailed)
        self.inputs, reasons = self._inputs(texts, "reading human texts")
        return self.rescored(self.detector, texts), reasons

    def rescored(self, detector: Any, texts: list) -> np.ndarray:
        """``detector``'s criterion of the texts :meth:`human` read, from their head inputs."""
        return detector.score_stages(texts, inputs=self.inputs)[0].values

    def machine(self, texts: list, adapted: Any) -> tuple[np.ndarray, np.ndarray]:
        """Scored machine texts' criterion before (source) and after (``adapted``)."""
        if not self.adapting:
            values, _ = self._chunks(texts, "scoring machine texts", self._detailed)
            values = values[~np.isnan(values)]
            return values, values
        inputs, _ = self._inputs(texts, "reading machine texts")
        before = self.detector.score_stages(texts, inputs=inputs)[0].values
        after = adapted.score_stages(texts, inputs=inputs)[0].values
        keep = ~np.isnan(before)
        return before[keep], after[keep]

    def _detailed(self, chunk: list) -> tuple[np.ndarray, list[str | None]]:
        scores = self.detector.score_detailed(chunk)
        return scores.values, scores.reasons

    def _inputs(self, texts: list, desc: str) -> tuple[np.ndarray, list[str | None]]:
        rows: list[np.ndarray] = []
        reasons: list[str | None] = []
        with self.tqdm(total=len(texts), desc=desc, unit="doc",
                       disable=not self.progress) as bar:
            for start in range(0, len(texts), 64):
                x, why = self.detector.head_inputs(texts[start:start + 64])
                rows.append(x)
                reasons.extend(why)
                bar.update(len(why))
        width = rows[0].shape[1] if rows else 0
        return (np.vstack(rows) if rows else np.zeros((0, width))), reasons

    def _chunks(self, texts: list, desc: str, score: Any
                ) -> tuple[np.ndarray, list[str | None]]:
        values = np.full(len(texts), np.nan)
        reasons: list[str | None] = [None] * len(texts)
        with self.tqdm(total=len(texts), desc=desc, unit="doc",
                       disable=not self.progress) as bar:
            for start in range(0, len(texts), 64):
                v, why = score(texts[start:start + 64])
                values[start:start + len(v)] = v
                reasons[start:start + len(v)] = why
                bar.update(len(v))
        return values, reasons
