"""Re-set a trained detector's threshold on human text from the crawl you tag.

A threshold promises "at most ``target_fpr`` of human text *like the calibration set* is
flagged". Trained on four labelled files, the shipped detector keeps that promise on them, and
breaks it on a dataset it never saw: held out in ``benchmarks/bench_detect_lodo.py``, its
threshold flags 28% of one L2R domain's human texts at a 1% target. A data team usually has
text that is human by construction from the very sources it crawls (pages from before 2020,
its own editors' writing): recalibrating on it moves the threshold to where *that* human text
lies, per group (``groups``: the worst group's FPR, not the average, is held), and measures the
FPR on a held-out share so the promised number is an honest one.

Only the threshold and the human reference (p-values, the abstention band) change; the
features, the network and the Platt map stay as trained. Without machine text from the crawl
the TPR at the new threshold is unknown, so it is dropped rather than carried over from a
threshold it was not measured at (``tailguard tag --estimate-prevalence`` then refuses in one
line, asking for it).

:func:`recalibrate` works in memory on any :class:`~.calibrated.CalibratedDetector`;
:func:`recalibrate_files` is ``tailguard detect-calibrate``: it reads corpora, writes a new
detector folder (never the input's) and a report.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from provenance.detectors.base import reason_counts
from provenance.detectors.calibrated import CalibratedDetector, load_detector
from provenance.detectors.corpus_texts import read_texts
from provenance.detectors.human_reference import MIN_REFERENCE_TEXTS, HumanReference
from provenance.detectors.recalibration_scoring import RecalibrationScoring
from provenance.errors import ConfigError, InputError, TailguardWarning

if TYPE_CHECKING:
    from provenance.thresholds import Guarantee

REPORT_FILE = "calibration_report.json"
#: Calibration entries that describe the training-time threshold; kept under ``previous``.
_THRESHOLD_FACTS = ("fpr", "tpr", "n_human", "n_machine", "n_human_measured",
                    "n_machine_measured", "measured_on", "calibrated_by", "undecided_below",
                    "fpr_guarantee")


@dataclass
class Recalibrated:
    """The recalibrated detector and what the recalibration measured."""

    detector: CalibratedDetector
    report: dict[str, Any]


def held_out_mask(groups: Sequence[Any], holdout: float, seed: int = 0) -> np.ndarray:
    """Which texts to keep out of the fit: ``holdout`` of each group, drawn with ``seed``.

    Drawn per group, so every group has texts on both sides when it has at least two (a group
    of one is fitted on: a threshold needs it more than the measurement does).

    >>> int(held_out_mask(["a"] * 4 + ["b"] * 2 + ["c"], 0.5).sum())
    3
    """
    keys = np.asarray([str(g) for g in groups])
    held = np.zeros(len(keys), dtype=bool)
    rng = np.random.default_rng(seed)
    for value in sorted(set(keys.tolist())):
        members = np.flatnonzero(keys == value)
        n_out = min(int(math.floor(holdout * len(members))), len(members) - 1)
        if n_out > 0:
            held[rng.choice(members, n_out, replace=False)] = True
    return held


def threshold_on(scores: np.ndarray, groups: np.ndarray | None, target_fpr: float,
                 holdout: float, seed: int = 0, min_group_size: int | None = None, *,
                 held: np.ndarray | None = None, guarantee: Guarantee = "expected"
                 ) -> tuple[float, np.ndarray, list[str]]:
    """(threshold, held-out mask, warnings): the threshold for ``target_fpr`` on the scores
    not held out (in every group when ``groups`` is given), as :func:`recalibrate` sets it.

    >>> scores = np.arange(200.0)
    >>> threshold, held, said = threshold_on(scores, None, 0.05, 0.5)
    >>> int(held.sum()), bool(np.mean(scores[~held] >= threshold) <= 0.05), said
    (100, True, [])
    """
    from provenance.thresholds import threshold_for

    keys = np.asarray(["all"] * len(scores)) if groups is None else np.asarray(groups)
    if held is None:
        held = held_out_mask(keys, holdout, seed)
    fit = ~held
    with warnings.catch_warnings(record=True) as caught:  # too few texts: said in the report
        warnings.simplefilter("always", TailguardWarning)
        threshold = float(threshold_for(scores[fit], None if groups is None else keys[fit],
                                        target_fpr, min_group_size=min_group_size,
                                        guarantee=guarantee))
    return threshold, held, [str(w.message) for w in caught]


def fpr_upper_bound(fp: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided Clopper-Pearson upper bound of a rate seen ``fp`` times in ``n``: what a
    held-out measurement can promise (0 of 100 flagged still allows about 3%).

    >>> round(fpr_upper_bound(0, 100), 4), fpr_upper_bound(0, 0)
    (0.0295, None)
    """
    from scipy.stats import beta

    if n == 0:
        return None
    return 1.0 if fp >= n else float(beta.ppf(confidence, fp + 1, n - fp))


def _rates(scores: np.ndarray, threshold: float) -> dict[str, Any]:
    flagged = scores >= threshold
    fp, n = int(flagged.sum()), int(len(scores))
    high = fpr_upper_bound(fp, n)
    return {"n": n, "fpr": None if n == 0 else round(float(flagged.mean()), 4), "fp": fp,
            "fpr_upper_95": None if high is None else round(high, 4)}


def _by_group(keys: np.ndarray, held: np.ndarray,
              scored_at: dict[str, tuple[np.ndarray, float]]) -> dict[str, dict[str, Any]]:
    """Per group: texts fitted and held out, and the held-out FPR of each (scores, threshold)."""
    out = {}
    for value in sorted(set(keys.tolist())):
        member = keys == value
        out[value] = {"n_fit": int((member & ~held).sum()),
                      "n_held_out": int((member & held).sum())}
        for name, (scores, threshold) in scored_at.items():
            out[value][f"fpr_{name}"] = _rates(scores[member & held], threshold)["fpr"]
    return out


def _worst(groups: dict[str, dict[str, Any]], field: str) -> dict[str, Any] | None:
    rows = [(g, r[field]) for g, r in groups.items() if r[field] is not None]
    if not rows:
        return None
    group, fpr = max(rows, key=lambda kv: kv[1])
    return {"group": group, "fpr": fpr}


def worst_text(worst: dict[str, Any]) -> str:
    """``group fpr``, or that no group had a false positive (no group is then "worst").

    >>> worst_text({"group": "news", "fpr": 0.0})
    'no group above 0'
    """
    return f"{worst['group']} {worst['fpr']}" if worst["fpr"] else "no group above 0"


def undecided_below(calibration: dict[str, Any], threshold: float) -> float | None:
    """The abstention band's lower edge: the criterion where the Platt map gives
    ``human_below``, or None where that reaches the threshold (no band). Training sets it this
    way, and a recalibration recomputes it for its new threshold.

    >>> undecided_below({"platt": [1.0, 0.0], "human_below": 0.1}, 2.0) < 0
    True
    >>> undecided_below({"platt": [1.0, 0.0], "human_below": 0.1}, -3.0) is None
    True
    """
    platt, human_below = calibration.get("platt"), calibration.get("human_below")
    if platt and human_below:
        a, b = platt
        edge = (math.log(human_below / (1 - human_below)) - b) / a if a > 0 else None
    else:
        edge = calibration.get("undecided_below")
    return None if edge is None or edge >= threshold else float(edge)


def recalibrate(
    calibrated: CalibratedDetector,
    human_texts: Sequence[str],
    *,
    groups: Sequence[Any] | None = None,
    target_fpr: float | None = None,
    holdout: float = 0.5,
    seed: int = 0,
    machine_texts: Sequence[str] | None = None,
    progress: bool = False,
    min_group_size: int | None = None,
    guarantee: Guarantee | None = None,
    adapt: bool = True,
) -> Recalibrated:
    """A copy of ``calibrated`` whose threshold holds ``target_fpr`` on ``human_texts``.

    ``groups`` (one value per text, e.g. each page's site or domain) makes the threshold hold
    in every group, the worst group's FPR (groups with fewer than ``min_group_size`` fitted
    texts, by default the ``1 / target_fpr`` that resolves the target, are held together:
    :func:`~provenance.thresholds.worst_group_threshold`). ``holdout`` of the texts of each
    group (seeded) is kept out of the fit and the FPR is measured there, before and after (0:
    in-sample, which is optimistic). ``machine_texts`` from the same crawl, if any, give the
    TPR at the new threshold; without them the trained TPR is dropped, since it was measured
    at another threshold. ``target_fpr`` and ``guarantee`` (what the threshold promises about
    new human text: :func:`~provenance.thresholds.calibrate_threshold`) default to the detector's
    own, ``"expected"`` for a detector that recorded none.

    With ``adapt`` (the default) and a detector trained with a reference head
    (:mod:`.human_reference`), the fitted human texts also become the detector's human
    reference: it then scores every text against the human text of this crawl, with the
    reference head's Platt map; the held-out share measures that too. ``adapt=False``, or
    fewer than :data:`~.human_reference.MIN_REFERENCE_TEXTS` fitted texts (said in the
    report's warnings), moves the threshold only.

    Examples
    --------
    >>> from provenance.detectors import NgramClassifier, calibrate
    >>> clf = NgramClassifier(n_features=2**10, min_tokens=1).fit(
    ...     ["the cat sat", "a dog ran", "As an AI model", "As an AI language model"],
    ...     ["human", "human", "machine", "machine"])
    >>> trained = calibrate(clf, ["the cat ran", "a dog sat"], target_fpr=0.5)
    >>> crawl = ["an AI cat sat", "a model dog ran", "the AI dog", "an AI model sat"] * 5
    >>> new = recalibrate(trained, crawl, target_fpr=0.1, holdout=0.5)
    >>> new.report["held_out"]["before"]["fpr"] > new.report["held_out"]["after"]["fpr"]
    True
    >>> new.detector.threshold > trained.threshold, "tpr" in new.detector.calibration
    (True, False)
    """
    fpr_target = calibrated.target_fpr if target_fpr is None else float(target_fpr)
    promise = (calibrated.calibration.get("fpr_guarantee", "expected") if guarantee is None
               else guarantee)
    if not 0.0 < fpr_target < 1.0:
        raise ConfigError(f"target_fpr must be in (0, 1), got {fpr_target}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    texts = list(human_texts)
    keys_all = np.asarray(["all"] * len(texts) if groups is None
                          else ["unspecified" if g is None else str(g) for g in groups])
    if len(keys_all) != len(texts):
        raise ConfigError(f"{len(keys_all)} groups for {len(texts)} texts")
    old = calibrated.calibration
    source = calibrated.detector
    adapting = adapt and can_adapt(calibrated)
    scoring = RecalibrationScoring(source, adapting, progress)
    criterion, reasons = scoring.human(texts)
    scored = ~np.isnan(criterion)
    if not scored.any():
        why = ", ".join(f"{k}: {v}" for k, v in reason_counts(reasons).items())
        raise InputError(f"none of the {len(texts)} human texts could be scored ({why})" if texts
                         else "no human texts to calibrate on (the input is empty)")
    scores, keys = criterion[scored], keys_all[scored]
    held = held_out_mask(keys, holdout, seed)  # none when holdout is 0
    fit = ~held
    detector, scores_after = source, scores
    too_few = adapting and int(fit.sum()) < MIN_REFERENCE_TEXTS
    adapting = adapting and not too_few
    if adapting:  # the reference is the fitted human texts only: the held-out ones judge it
        reference = scoring.inputs[scored][fit]
        # a text the first stage settled may lack inputs the language model would not give
        detector = source.with_reference(HumanReference.of(
            reference[np.isfinite(reference).all(axis=1)]))
        scores_after = scoring.rescored(detector, texts)[scored]
    threshold, _, caught = threshold_on(scores_after, None if groups is None else keys,
                                        fpr_target, holdout, seed, min_group_size, held=held,
                                        guarantee=promise)
    if too_few:
        caught.append(f"only {int(fit.sum())} fitted human texts, fewer than the "
                      f"{MIN_REFERENCE_TEXTS} a human reference is taken from: the threshold "
                      "alone was moved (the plain head scores)")
    measured = held if holdout else fit
    before, after = calibrated.threshold, threshold
    report: dict[str, Any] = {
        "detector": calibrated.name,
        "target_fpr": fpr_target,
        "fpr_guarantee": promise,
        "threshold_before": before,
        "threshold": after,
        "adapted": {"reference_texts": detector.reference.n} if adapting else None,
        "human": {"texts": len(texts), "scored": int(scored.sum()), "fit": int(fit.sum()),
                  "held_out": int(held.sum()), "unscored": reason_counts(reasons)},
        "measured_on": (f"held-out {holdout:g} of each group's scored human texts"
                        if holdout else "the fitted texts themselves (in-sample, optimistic)"),
        "held_out": {"before": _rates(scores[measured], before),
                     "after": _rates(scores_after[measured], after)},
        "warnings": caught,
        "seed": seed,
        "holdout": holdout,
        "min_group_size": min_group_size,
    }
    if groups is not None:
        by_group = _by_group(keys, measured, {"before": (scores, before),
                                              "after": (scores_after, after)})
        report["groups"] = by_group
        report["worst_group"] = {"before": _worst(by_group, "fpr_before"),
                                 "after": _worst(by_group, "fpr_after")}
    calibration = {k: v for k, v in old.items() if k not in (*_THRESHOLD_FACTS, "recalibration")}
    if adapting:  # the reference head's log-odds are on their own scale
        calibration["platt"] = list(old["reference"]["platt"])
    calibration.update({
        "n_human": int(fit.sum()),
        "fpr": report["held_out"]["after"]["fpr"],
        "n_human_measured": report["held_out"]["after"]["n"],
        "human_quantiles": [float(v) for v in np.quantile(scores_after[fit],
                                                          np.linspace(0, 1, 1001))],
        "measured_on": report["measured_on"],
        "calibrated_by": "groups" if groups is not None else None,
        "fpr_guarantee": promise,
        "undecided_below": undecided_below({**old, **calibration}, after),
    })
    if machine_texts is not None:
        machine_before, machine_after = scoring.machine(list(machine_texts), detector)
        if len(machine_before):
            report["machine"] = {"scored": int(len(machine_before)),
                                 "tpr_before": round(float(np.mean(machine_before >= before)), 4),
                                 "tpr_after": round(float(np.mean(machine_after >= after)), 4)}
            calibration.update({"tpr": float(np.mean(machine_after >= after)),
                                "n_machine": int(len(machine_after)),
                                "n_machine_measured": int(len(machine_after))})
        else:
            report["warnings"].append(f"none of the {len(machine_texts)} machine texts could "
                                      "be scored: the TPR at the new threshold is unknown")
    calibration["recalibration"] = {
        "previous": {"threshold": before, **{k: old[k] for k in (*_THRESHOLD_FACTS,
                                                                 "recalibration") if k in old},
                     **({"platt": old.get("platt")} if adapting else {})},
        **{k: report[k] for k in ("human", "held_out", "seed", "holdout", "adapted")},
        **({"worst_group": report["worst_group"]} if groups is not None else {}),
    }
    return Recalibrated(CalibratedDetector(detector, after, fpr_target, calibration), report)


def can_adapt(calibrated: CalibratedDetector) -> bool:
    """Whether a recalibration can also adapt the detector's inputs: a supervised detector
    trained with a reference head, whose calibration kept the head's Platt map."""
    return (getattr(calibrated.detector, "reference_head", None) is not None
            and bool((calibrated.calibration.get("reference") or {}).get("platt")))


def recalibrate_files(
    human: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    detector: str | os.PathLike = "default",
    machine: Sequence[str | os.PathLike] = (),
    group_field: str | None = None,
    label_field: str | None = None,
    target_fpr: float | None = None,
    min_group_size: int | None = None,
    guarantee: Guarantee | None = None,
    holdout: float = 0.5,
    seed: int = 0,
    adapt: bool = True,
    text_field: str = "text",
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """``tailguard detect-calibrate``: recalibrate a saved detector on human corpora, save it.

    Every ``human`` corpus (any format tailguard reads) is taken as human text (with
    ``label_field``, each row as labelled: machine rows join ``machine``); ``group_field``
    names the field whose every group must hold the FPR. The new folder ``out_dir`` holds the
    detector (same weights, new threshold), ``calibration_report.json`` and the source's data
    card with a recalibration section; it is written whole or not at all and may not be, hold
    or lie inside the input detector or corpora. Returns the report.

    Examples
    --------
    From the shell (see ``tests/provenance/detectors/test_recalibration.py``)::

        tailguard detect-calibrate pre2020-pages.parquet --calibrate-by site -o my-default
        tailguard tag crawl.parquet --detector my-default -o tagged.parquet
    """
    from provenance.detectors.calibrated import DEFAULT_DETECTOR
    from provenance.outputs import check_output, staged_folder

    source = DEFAULT_DETECTOR if str(detector) == "default" and not Path(detector).exists() \
        else Path(detector)
    out = check_output(out_dir, [*human, *machine, source], folder=True)
    calibrated = load_detector(source, device=device)
    read = read_texts(human, text_field=text_field, group_field=group_field,
                      label_field=label_field)
    rejected = sum(f["rejected"] for f in read.files)
    if not read.human and rejected:
        first = next(f for f in read.files if f["first_reject"])
        raise InputError(f"no human text to calibrate on: the reader refused all {rejected} "
                         f"rows (first: {first['first_reject']})", file=first["path"])
    extra = read_texts(machine, text_field=text_field, machine=True)
    machine_texts = read.machine + extra.machine
    result = recalibrate(calibrated, read.human, groups=read.groups, target_fpr=target_fpr,
                         holdout=holdout, seed=seed, progress=progress,
                         machine_texts=machine_texts or None, min_group_size=min_group_size,
                         guarantee=guarantee, adapt=adapt)
    report = {**result.report, "source": str(source), "group_field": group_field,
              "files": {"human": read.files, "machine": extra.files}}
    result.detector.calibration["recalibration"].update(
        {"source": str(source), "group_field": group_field, "files": report["files"]})
    if group_field:
        result.detector.calibration["calibrated_by"] = group_field
    with staged_folder(out) as staged:
        result.detector.save(staged)
        (staged / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        card = source / "DATA_CARD.md"
        (staged / "DATA_CARD.md").write_text(
            (card.read_text() if card.is_file() else "# Detector data card\n")
            + recalibration_card(report))
    return report


def outcome_lines(report: dict[str, Any]) -> list[str]:
    """What a recalibration changed, a sentence a line: FPR before and after (with its 95%
    upper bound), the worst group, the TPR (or that it is unknown). The command prints them and
    the data card keeps them."""
    before, after = report["held_out"]["before"], report["held_out"]["after"]
    lines = [] if not report.get("adapted") else [
        f"Adapted: the detector now measures every text against the "
        f"{report['adapted']['reference_texts']:,} fitted human texts (its reference head)."]
    lines += [f"FPR on {report['measured_on']} ({after['n']:,} texts): {before['fpr']} before, "
             f"{after['fpr']} after (at most {after['fpr_upper_95']} with 95% confidence)."]
    worst = report.get("worst_group")
    if worst and worst["before"] and worst["after"]:
        lines.append(f"Worst {report.get('group_field') or 'group'}: "
                     f"{worst_text(worst['before'])} before, "
                     f"{worst_text(worst['after'])} after.")
    if "machine" in report:
        m = report["machine"]
        lines.append(f"TPR on {m['scored']:,} machine texts: {m['tpr_before']} before, "
                     f"{m['tpr_after']} after.")
    else:
        lines.append("No machine text given: the TPR at this threshold is unknown (the trained "
                     "one is kept under calibration.recalibration.previous only).")
    return lines


def recalibration_card(report: dict[str, Any]) -> str:
    """The data card's section on a recalibration: on what, and what it changed."""
    from provenance.thresholds import guarantee_text

    lines = ["", "## Recalibration", "",
             f"Threshold {report['threshold_before']:.3f} -> {report['threshold']:.3f} for "
             f"FPR {report['target_fpr']:g} ({guarantee_text(report['fpr_guarantee'])})"
             + (f" in every {report['group_field']} group" if report.get("group_field") else "")
             + f", set on {report['human']['fit']} human texts from:", ""]
    for f in report["files"]["human"]:
        lines.append(f"- {Path(f['path']).name} (sha256 {(f['sha256'] or '')[:12]}, "
                     f"{f['human']} human of {f['rows']} rows, {f['rejected']} rejected)")
    return "\n".join([*lines, "", *outcome_lines(report)]) + "\n"
