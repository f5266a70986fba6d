"""The ``tailguard`` command: a thin layer over the library.

Each command parses its options, calls one library function with the same parameter names and
prints a summary (or JSON with ``--json``). Errors that tailguard raises on purpose become one line
on stderr and exit code 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from collapse_eval.family_registry import FAMILIES
from provenance.errors import TailguardError, one_line_warnings
from provenance.version import tool_version


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, a scheduler's time limit) ends the command like Ctrl-C: through its
    ``finally`` blocks, so that work files are removed and no partial output is left."""
    raise SystemExit(128 + signum)


class TailguardGroup(click.Group):
    """Turns TailguardError (and any OSError that escaped the library's own wording) into one
    line and exit code 1 instead of a traceback, and prints TailguardWarnings as
    ``warning: ...`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        import signal

        from provenance.outputs import describe_os_error

        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        with one_line_warnings():
            try:
                return super().invoke(ctx)
            except TailguardError as exc:
                click.echo(f"error: {exc}", err=True)
                ctx.exit(1)
            except OSError as exc:
                click.echo(f"error: {describe_os_error(exc)}", err=True)
                ctx.exit(1)


# ---- shared options ----------------------------------------------------------------------------


def corpus_fields(func):
    func = click.option(
        "--text-field", default="text", show_default=True, help="Field holding the document text."
    )(func)
    func = click.option(
        "--id-field",
        default="id",
        show_default=True,
        help="Field holding the document id (ids are derived from content when it is missing).",
    )(func)
    return func


def strict_option(func):
    return click.option(
        "--strict",
        is_flag=True,
        help="Stop at the first bad row (naming file, line and reason) instead of rejecting it.",
    )(func)


def output_options(func):
    func = click.option(
        "-q", "--quiet", is_flag=True, help="No progress bar; print only the summary."
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print the summary as JSON (machine-readable)."
    )(func)
    return func


def min_group_option(func):
    return click.option(
        "--min-group-size", type=click.IntRange(min=1), metavar="N",
        help="With --calibrate-by: groups with fewer human texts are held to --target-fpr "
             "together, not each alone (default 1/target-fpr, the fewest that can show it; "
             "1 holds every group alone).")(func)


def fpr_confidence_option(func):
    return click.option(
        "--fpr-confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
        metavar="C",
        help="Keep --target-fpr on new human text with this probability (e.g. 0.9; needs "
             "more human texts), not only on average (the default: expected FPR at most the "
             "target).")(func)


def _guarantee(fpr_confidence: float | None) -> float | str:
    return "expected" if fpr_confidence is None else fpr_confidence


def device_option(func):
    return click.option("--device", default="auto", show_default=True,
                        help="auto (cuda when there is one), cpu, cuda or cuda:N.")(func)


def _rate(per_s: float | None) -> str:
    """A throughput as people read it: whole numbers from 10 up, two digits below (a detector
    on a CPU tags well under one document a second, which ``.0f`` shows as 0).

    >>> _rate(6326.4), _rate(0.2), _rate(None)
    ('6,326', '0.2', 'n/a')
    """
    if per_s is None:
        return "n/a"
    return f"{per_s:,.0f}" if per_s >= 10 else f"{per_s:.2g}"


def no_plots_option(func):
    return click.option("--no-plots", is_flag=True,
                        help="Skip each run's PNG plots (results are the same; a report still "
                             "draws its own figures).")(func)


def batch_option(func):
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=10_000,
        show_default=True,
        help="Documents per batch (memory is bounded by it).",
    )(func)


def engine_options(what: str):
    """``--engine local|ray`` and ``--ray-address``, shared by ``tag`` and ``mix``: the names of
    :data:`provenance.engines.ENGINES`, which the library resolves in one place."""
    from provenance.engines import ENGINES

    def decorate(func):
        func = click.option(
            "--ray-address", help="Ray cluster for --engine ray: auto (the one `ray start` runs "
            "here) or ray://HOST:10001; default: $RAY_ADDRESS or a running local Ray, else a new "
            "local one.")(func)
        return click.option("--engine", type=click.Choice(list(ENGINES)), default="local",
                            show_default=True,
                            help=f"{what} Ray needs pip install 'tailguard[ray]'.")(func)

    return decorate


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo("\n".join(lines))


def _table(title: str, counts: dict[str, int], total: int) -> list[str]:
    if not counts:
        return []
    width = max(len(k) for k in counts)
    rows = [f"{title}:"]
    for key, value in counts.items():
        share = f"{100 * value / total:5.1f}%" if total else ""
        rows.append(f"  {key:<{width}}  {value:>10,}  {share}")
    return rows


def _evidence_lines(summary: dict[str, Any]) -> list[str]:
    """What decided the documents, and why the ``unknown`` ones stayed so, as two tables.

    ``by_evidence`` counts every document under the evidence that looked at it last, so a
    detector that abstained is counted there too; the first table leaves those out.
    """
    unknown = summary.get("unknown_by_evidence", {})
    decided = {ev: n - sum(unknown.get(ev, {}).values())
               for ev, n in summary["by_evidence"].items()}
    lines = _table("deciding evidence", {ev: n for ev, n in decided.items() if n},
                   summary["accepted"])
    return lines + _table("unknown, because", {
        (f"{ev}: {why}" if ev != "none" else why): n
        for ev, reasons in unknown.items() for why, n in reasons.items()}, summary["accepted"])


def _counts_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"read {summary['read']:,} rows from {summary['files']} file(s): "
        f"{summary['accepted']:,} kept, {summary['rejected']:,} rejected"
    ]
    for reason, n in summary["rejected_by_reason"].items():
        lines.append(f"  rejected {reason}: {n:,}")
    if summary.get("rejects_file"):
        lines.append(f"rejects written to {summary['rejects_file']}")
    return lines


# ---- commands ------------------------------------------------------------------------------------


@click.group(cls=TailguardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tool_version(), "--version", prog_name="tailguard")
def main() -> None:
    """tailguard: provenance tagging, controlled mixing and model-collapse measurement.

    Models trained on the output of earlier models collapse: they forget the tails of the data.
    tailguard tags documents as human or model-generated (with evidence), builds training sets
    with a controlled synthetic share, and measures collapse and its mitigation.

    \b
    Example:
      tailguard ledger add generated.jsonl --ledger ledger.sqlite --generator my-model
      tailguard tag crawl.jsonl -o tagged.parquet --ledger ledger.sqlite
    """


def _click_option(option: Any) -> click.Option:
    """A registered evidence option (:class:`provenance.registry.SignalOption`) as a click
    option: a ``bool`` is a flag, a ``pathlib.Path`` a file, ``bounds`` a range."""
    from pathlib import Path

    if option.type is bool:
        return click.Option([option.cli_flag, option.name], is_flag=True, help=option.help)
    kind = click.Path(dir_okay=False) if option.type is Path else option.type
    if option.bounds is not None:
        low, high, low_open, high_open = option.bounds
        ranged = click.IntRange if option.type is int else click.FloatRange
        kind = ranged(low, high, min_open=low_open, max_open=high_open)
    return click.Option([option.cli_flag, option.name], type=kind, default=option.default,
                        show_default=option.show_default, multiple=option.multiple,
                        metavar=option.metavar, envvar=option.envvar, help=option.help)


class EvidenceCommand(click.Command):
    """A command with the options of every registered kind of evidence (provenance.registry)
    after its ``-o/--output``: read when the command parses, so that a kind registered after
    this module was imported (a plugin's) has its options too."""

    _evidence: tuple[tuple[int, ...], list[click.Option]] = ((), [])

    def evidence_params(self) -> list[click.Option]:
        from provenance.registry import signal_kinds

        kinds = signal_kinds(fusion=False)
        key = tuple(map(id, kinds))
        if self._evidence[0] != key:  # the same objects each call: click orders by identity
            self._evidence = (key, [_click_option(option) for kind in kinds
                                    for option in kind.cli_options])
        return self._evidence[1]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        at = next(i for i, param in enumerate(params) if param.name == "output") + 1
        return [*params[:at], *self.evidence_params(), *params[at:]]


@main.command(cls=EvidenceCommand)
@click.argument("input", metavar="INPUT")
@click.option(
    "-o", "--output", required=True, help="Tagged corpus to write (.parquet, .jsonl, .jsonl.gz)."
)
@click.option("--estimate-prevalence", is_flag=True,
              help="Report the corpus' synthetic share corrected for the detector's error rates.")
@engine_options("Tag in this process, or shard by shard on Ray; the output is the same.")
@corpus_fields
@strict_option
@batch_option
@output_options
def tag(
    input: str,
    output: str,
    estimate_prevalence: bool,
    engine: str,
    ray_address: str | None,
    id_field: str,
    text_field: str,
    strict: bool,
    batch_size: int,
    as_json: bool,
    quiet: bool,
    **evidence: Any,
) -> None:
    """Tag every document of INPUT as human, synthetic or unknown, with its evidence.

    INPUT is a .jsonl, .jsonl.gz or .parquet file, a folder or glob of them, or a folder written
    by datasets' save_to_disk. Evidence is fused in order of reliability: declared metadata >
    exact ledger match > watermark > near ledger match > detector. Rows that cannot be read go to
    OUTPUT.rejects.jsonl with the reason; kept + rejected = rows read.

    \b
    Example:
      tailguard tag crawl.jsonl.gz -o tagged.parquet --ledger ledger.sqlite \\
          --declared-field is_synthetic --declared-field label=machine:synthetic,human:human
      tailguard tag 'crawl/*.parquet' -o tagged.parquet --ledger ledger.sqlite \\
          --engine ray --ray-address auto
    """
    from provenance.registry import OptionValueError, signal_kinds
    from provenance.tagger import check_tag_output, tag_corpus

    if estimate_prevalence and not evidence.get("detector"):
        raise click.UsageError("--estimate-prevalence needs --detector (a calibrated detector)")
    if ray_address and engine != "ray":
        raise click.UsageError("--ray-address needs --engine ray")
    kinds = signal_kinds(fusion=False)
    keywords: dict[str, Any] = {}
    for kind in kinds:  # each kind's options into its tag_corpus keywords (a key file is loaded)
        try:
            keywords.update(kind.keywords_from_cli(evidence))
        except OptionValueError as exc:
            raise click.BadParameter(str(exc), param_hint=kind.cli_options[0].cli_flag) from None
    # tag_corpus checks again; here the files it only sees loaded (a key file) are checked too.
    check_tag_output(input, output, **{option.name: evidence[option.name] for kind in kinds
                                       for option in kind.cli_options if option.reads})
    report = tag_corpus(
        input,
        output,
        **keywords,
        estimate_prevalence=estimate_prevalence,
        id_field=id_field,
        text_field=text_field,
        strict=strict,
        batch_size=batch_size,
        progress=not (quiet or as_json),
        engine=engine,
        ray_address=ray_address,
    )
    summary = report.as_dict()
    kept = summary["accepted"]
    lines = _counts_lines(summary)
    lines += _table("labels", summary["by_label"], kept)
    lines += _evidence_lines(summary)
    lines.append(
        f"wrote {kept:,} tagged rows to {output} in {summary['seconds']:.2f} s "
        f"({_rate(summary['docs_per_s'])} docs/s)"
        + (f" on Ray with {summary['workers']} worker(s)" if engine == "ray" else "")
    )
    for failed in summary.get("failed_shards", []):
        lines.append(f"could not read {failed['file']} to the end (one unreadable_file reject): "
                     f"{failed['error']}")
    corpus_share = summary.get("prevalence", {}).get("corpus")
    if corpus_share:
        lines.append(
            f"estimated synthetic share of the corpus: {corpus_share['estimate']:.3f} "
            f"(95% interval {corpus_share['low']:.3f}-{corpus_share['high']:.3f})"
        )
    _emit(summary, as_json, lines)


@main.command("detect-train")
@click.argument("labelled", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", required=True,
              help="Detector folder to write (detector.json, weights, training report, data card).")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Causal LM whose per-token statistics are the features (a path or hub id).")
@click.option("--label-field", default="label", show_default=True,
              help="Field with human/machine (or synthetic, 0/1) labels.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.01, show_default=True,
              help="False-positive rate the threshold holds on out-of-fold human documents.")
@click.option("--calibrate-by", type=click.Choice(["generator", "domain", "dataset"]),
              help="Hold --target-fpr in every group of this field (the worst group's FPR).")
@min_group_option
@fpr_confidence_option
@click.option("--cv", "cv", multiple=True, type=click.Choice(["generator", "domain", "dataset"]),
              help="Leave-one-group-out cross-validation to report (repeatable; default all "
                   "three; dataset = input file).")
@click.option("--no-cv", is_flag=True, help="Skip the grouped cross-validation (faster).")
@click.option("--max-tokens", type=click.IntRange(min=16), default=256, show_default=True,
              help="Tokens scored per document.")
@click.option("--max-auroc-loss", type=click.FloatRange(0, 1), default=0.005, show_default=True,
              help="AUROC the cheap first stage may cost; it settles as many documents as fit.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes for the cross-validation splits (same results for any number).")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--text-field", default="text", show_default=True)
def detect_train(labelled: tuple[str, ...], out_dir: str, model: str, label_field: str,
                 target_fpr: float, calibrate_by: str | None, min_group_size: int | None,
                 fpr_confidence: float | None, cv: tuple[str, ...], no_cv: bool,
                 max_tokens: int, max_auroc_loss: float, seed: int, jobs: int, device: str,
                 as_json: bool, quiet: bool, text_field: str) -> None:
    """Train a supervised detector on labelled corpora (LM + n-gram features, calibrated).

    Every LABELLED corpus (any format tailguard reads) needs a label field and may have
    generator and domain fields, which the report's leave-one-group-out AUROC uses. Token
    statistics are cached (~/.cache/tailguard/token-terms.sqlite): a killed run resumes.

    \b
    Example:
      tailguard detect-train human.jsonl machine.jsonl -o my-detector
      tailguard detect-eval held_out.jsonl --detector my-detector
      tailguard tag crawl.parquet --detector my-detector -o tagged.parquet
    """
    from provenance.detectors import train
    from provenance.thresholds import guarantee_text

    report = train(list(labelled), out_dir, model=model, target_fpr=target_fpr,
                   calibrate_by=calibrate_by, min_group_size=min_group_size,
                   guarantee=_guarantee(fpr_confidence), cv=() if no_cv else (cv or None),
                   max_tokens=max_tokens, max_auroc_loss=max_auroc_loss, seed=seed, jobs=jobs,
                   device=device, progress=not (quiet or as_json), label_field=label_field,
                   text_field=text_field)
    cal = report["calibration"]
    lines = [f"{report['documents']['scored']:,} of {report['documents']['total']:,} documents "
             f"scored; threshold {report['threshold']:.3f}",
             f"out-of-fold: AUROC {cal['auroc']:.3f}, TPR {cal['tpr']:.3f} at FPR "
             f"{cal['fpr']:.4f} (target {target_fpr}, "
             f"{guarantee_text(_guarantee(fpr_confidence))})"]
    if cal.get("cascade"):
        lines.append(f"first stage settles {cal['cascade']['settled_share']:.0%} of documents "
                     f"(AUROC loss {cal['cascade']['auroc_loss']})")
    for grouping, result in report["cross_validation"].items():
        lines.append(f"leave one {grouping} out: worst AUROC {result['worst_auroc']}, mean "
                     f"{result['mean_auroc']}")
    lines.append(f"wrote {out_dir} (see its DATA_CARD.md)")
    _emit(report, as_json, lines)


@main.command("detect-eval")
@click.argument("labelled")
@click.option("--detector", default="default", show_default=True,
              help="A calibrated detector folder, default (the one tailguard ships, see "
                   "detect-train), or a zero-shot method: fast-detectgpt, loglik.")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Causal LM for zero-shot methods: a Hugging Face id or path "
              "(smollm2-135m is the offline default).")
@click.option("--label-field", default="label", show_default=True,
              help="Field with human/machine (or synthetic, true/false) labels.")
@click.option("--group-field", "group_fields", multiple=True, metavar="NAME",
              help="Also break results down by this field (repeatable); generator and domain "
                   "are used whenever the corpus has them.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.01, show_default=True,
              help="FPR for a threshold set here: zero-shot, --calibrate-by, --calibration-share.")
@click.option("--calibration-share", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Set the threshold on this share of the human documents (seeded draw) and "
                   "evaluate on the rest only; 0 = in-sample on all of them (zero-shot). "
                   "Re-sets a saved detector's threshold.")
@click.option("--calibrate-by", metavar="FIELD",
              help="Set the threshold so that every group of FIELD (e.g. domain) has FPR <= "
                   "--target-fpr on the calibration documents: the worst group's rate, not the "
                   "average. Re-sets a saved detector's threshold.")
@min_group_option
@fpr_confidence_option
@click.option("--max-tokens", type=click.IntRange(min=16), default=512, show_default=True,
              help="Tokens scored per document.")
@device_option
@click.option("-o", "--output", help="Write the full report as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@corpus_fields
def detect_eval(labelled: str, detector: str, model: str, label_field: str,
                group_fields: tuple[str, ...], target_fpr: float, calibration_share: float,
                calibrate_by: str | None, min_group_size: int | None,
                fpr_confidence: float | None, max_tokens: int, device: str, output: str | None,
                as_json: bool, id_field: str, text_field: str) -> None:
    """Measure a detector on a labelled corpus: AUROC, TPR at 1% / 0.1% FPR, per group.

    Each group gets n, AUROC with a bootstrap 95% interval, TPR and FPR at the threshold, and
    each grouping its worst group's FPR: an average FPR hides the group a detector fails.

    \b
    Example:
      tailguard detect-eval labelled.jsonl --detector fast-detectgpt -o report.json
      tailguard detect-eval labelled.jsonl --detector runs/detector/
      tailguard detect-eval essays.jsonl --group-field first_language --calibrate-by domain
    """
    from provenance.detect_eval import evaluate_labelled

    report = evaluate_labelled(
        labelled, detector=detector, model=model, label_field=label_field,
        group_fields=group_fields, text_field=text_field, id_field=id_field,
        target_fpr=target_fpr, max_tokens=max_tokens, device=device, output=output,
        calibration_share=calibration_share, calibrate_by=calibrate_by,
        min_group_size=min_group_size, guarantee=_guarantee(fpr_confidence),
    ).report
    lines = [
        f"{report['documents']:,} documents ({report['n_synthetic']:,} synthetic, "
        f"{report['n_human']:,} human, {report['unscored']:,} unscored) in "
        f"{report['seconds']:.1f} s",
        f"AUROC {report['auroc']:.3f}   TPR@1%FPR {report['tpr_at_1pct_fpr']['tpr']:.3f}   "
        f"TPR@0.1%FPR {report['tpr_at_01pct_fpr']['tpr']:.3f}",
        f"threshold {report['threshold']:.4g} ({report['threshold_source']}): "
        f"TPR {report['tpr']:.3f}, FPR {report['fpr']:.3f}, confusion {report['confusion']}",
    ]

    def worst(field: str) -> str:
        w = report["worst_group_fpr"].get(field)
        return "" if w is None else (f"worst-group FPR {w['fpr']:.3f} (group {w['group']}, "
                                     f"{w['fp']:,} of {w['n_human']:,} human)")

    if report["calibrated_by"] and worst(report["calibrated_by"]):
        lines.append(f"calibrated by {report['calibrated_by']}: {worst(report['calibrated_by'])}")
    for group, values in report["groups"].items():
        several = sum(row.get("fpr") is not None for row in values.values()) > 1
        lines.append(f"by {group}:" + (f" {worst(group)}" if several else ""))
        for name, row in values.items():
            auroc = "-" if row.get("auroc") is None else f"{row['auroc']:.3f}"
            if row.get("auroc_low") is not None:
                auroc += f" [{row['auroc_low']:.3f}-{row['auroc_high']:.3f}]"
            tpr = "-" if row.get("tpr") is None else f"{row['tpr']:.3f} ({row['tp']:,})"
            fpr = "-" if row.get("fpr") is None else f"{row['fpr']:.3f} ({row['fp']:,})"
            lines.append(f"  {str(name)[:24]:<24} n={row['n']:>6,}  AUROC {auroc:<20}  "
                         f"TPR {tpr:<14}  FPR {fpr}")
    if output:
        lines.append(f"report written to {output}")
    _emit(report, as_json, lines)


@main.command("detect-calibrate")
@click.argument("human", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", required=True,
              help="New detector folder to write (never the input detector's).")
@click.option("--detector", default="default", show_default=True,
              help="The saved detector to recalibrate: a folder, or default (the shipped one).")
@click.option("--calibrate-by", "group_field", metavar="FIELD",
              help="Hold --target-fpr in every group of this field of HUMAN (e.g. site or "
                   "domain): the worst group's FPR, not the average.")
@min_group_option
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="FPR the new threshold holds (default: the detector's own).")
@fpr_confidence_option
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.5,
              show_default=True,
              help="Share of each group's human texts kept out of the fit, where the FPR is "
                   "measured (0: in-sample, optimistic).")
@click.option("--machine", multiple=True, metavar="CORPUS",
              help="Known machine text from the same crawl (repeatable): the TPR at the new "
                   "threshold, which --estimate-prevalence needs.")
@click.option("--label-field", metavar="FIELD",
              help="Use each HUMAN row as this field labels it (machine rows join --machine); "
                   "without it a corpus whose label column says machine is refused.")
@click.option("--threshold-only", is_flag=True,
              help="Move the threshold only; by default a detector with a reference head "
                   "also measures every text against the fitted HUMAN texts.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the held-out draw.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--text-field", default="text", show_default=True)
def detect_calibrate(human: tuple[str, ...], out_dir: str, detector: str,
                     group_field: str | None, min_group_size: int | None,
                     target_fpr: float | None, fpr_confidence: float | None, holdout: float,
                     machine: tuple[str, ...], label_field: str | None, threshold_only: bool,
                     seed: int, device: str, as_json: bool, quiet: bool,
                     text_field: str) -> None:
    """Re-set a detector's threshold on HUMAN text from the crawl you tag; save it as new.

    A threshold holds its FPR only on human text like the text it was set on. Every HUMAN
    corpus (any format tailguard reads) is taken as human: pages from before 2020 of the
    sites you crawl, your own editors' writing. The threshold, p-values and abstention band
    move; a detector trained with a reference head (the shipped one) also measures every text
    against these human texts from then on (--threshold-only: not). The weights stay. The FPR
    before and after is measured on a held-out share.

    \b
    Example:
      tailguard detect-calibrate pre2020-pages.parquet --calibrate-by site -o my-default
      tailguard tag crawl.parquet --detector my-default -o tagged.parquet
    """
    from provenance.detectors.recalibration import outcome_lines, recalibrate_files
    from provenance.thresholds import guarantee_text

    report = recalibrate_files(list(human), out_dir, detector=detector, machine=machine,
                               group_field=group_field, label_field=label_field,
                               target_fpr=target_fpr, min_group_size=min_group_size,
                               guarantee=fpr_confidence, holdout=holdout, seed=seed,
                               adapt=not threshold_only,
                               text_field=text_field,
                               device=device, progress=not (quiet or as_json))
    h = report["human"]
    lines = [f"{h['scored']:,} of {h['texts']:,} human texts scored ({h['fit']:,} set the "
             f"threshold, {h['held_out']:,} held out)"
             + (f"; unscored: {', '.join(f'{k} {v}' for k, v in h['unscored'].items())}"
                if h["unscored"] else ""),
             f"threshold {report['threshold_before']:.4g} -> {report['threshold']:.4g} for FPR "
             f"{report['target_fpr']:g} ({guarantee_text(report['fpr_guarantee'])})"
             + (f" in every {group_field} group" if group_field else "")]
    lines += outcome_lines(report)
    lines += [f"{w}" for w in report["warnings"]]
    lines.append(f"wrote {out_dir} (tag with --detector {out_dir})")
    _emit(report, as_json, lines)


@main.group()
def ledger() -> None:
    """Keep a ledger (SQLite) of the content your models generated.

    \b
    Example:
      tailguard ledger add samples.jsonl --ledger ledger.sqlite --generator gpt2-ft --generation 3
      tailguard ledger lookup crawl.jsonl --ledger ledger.sqlite -o matches.parquet
      tailguard ledger stats ledger.sqlite
    """


@ledger.command("add")
@click.argument("corpus")
@click.option("--ledger", "ledger_path", required=True, help="Ledger file (created if missing).")
@click.option("--generator", help="Name of the model that generated the corpus.")
@click.option("--generation", type=click.IntRange(min=0), help="Recursive generation number.")
@click.option(
    "--num-perm", type=click.IntRange(min=16), default=None,
    help="MinHash permutations (new ledger only; default 128).",
)
@click.option(
    "--ngram", type=click.IntRange(min=1), default=None,
    help="Words per shingle (new ledger only; default 5).",
)
@corpus_fields
@strict_option
@batch_option
@output_options
def ledger_add(
    corpus: str,
    ledger_path: str,
    generator: str | None,
    generation: int | None,
    num_perm: int | None,
    ngram: int | None,
    id_field: str,
    text_field: str,
    strict: bool,
    batch_size: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Register the documents of CORPUS as generated content.

    Adding the same documents again changes nothing, so an interrupted add can be rerun. Bad
    rows go to a rejects file of this add's own beside the ledger, named in the summary.

    \b
    Example:
      tailguard ledger add gen3_samples.parquet --ledger ledger.sqlite --generator gpt2 \\
          --generation 3
    """
    from provenance.ledger_ops import add_corpus

    options = {k: v for k, v in {"num_perm": num_perm, "ngram": ngram}.items() if v is not None}
    report = add_corpus(
        ledger_path,
        corpus,
        generator=generator,
        generation=generation,
        id_field=id_field,
        text_field=text_field,
        strict=strict,
        batch_size=batch_size,
        progress=not (quiet or as_json),
        **options,
    )
    summary = report.as_dict()
    lines = _counts_lines(summary)
    lines.append(
        f"added {summary['added']:,} records to {ledger_path} "
        f"({summary['already_present']:,} already present) in {summary['seconds']:.2f} s"
    )
    _emit(summary, as_json, lines)


@ledger.command("lookup")
@click.argument("corpus")
@click.option("--ledger", "ledger_path", required=True, help="Ledger file.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.8,
    show_default=True,
    help="MinHash Jaccard similarity for a near match.",
)
@click.option("--exact-only", is_flag=True, help="Skip near matching.")
@click.option("-o", "--output", help="Write one row per document with its match (.parquet/.jsonl).")
@click.option("--show", type=click.IntRange(min=0), default=10, show_default=True,
              help="Matches to print.")
@corpus_fields
@strict_option
@batch_option
@output_options
def ledger_lookup(
    corpus: str,
    ledger_path: str,
    threshold: float,
    exact_only: bool,
    output: str | None,
    show: int,
    id_field: str,
    text_field: str,
    strict: bool,
    batch_size: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Find which documents of CORPUS are (near-)copies of ledger content.

    The ledger is only read, so it may lie in a read-only folder.

    \b
    Example:
      tailguard ledger lookup crawl.jsonl --ledger ledger.sqlite --threshold 0.7 -o matches.parquet
    """
    import polars as pl

    from provenance.ledger_ops import lookup_corpus

    report, matches = lookup_corpus(
        ledger_path,
        corpus,
        threshold=None if exact_only else threshold,
        output=output,
        id_field=id_field,
        text_field=text_field,
        strict=strict,
        batch_size=batch_size,
        progress=not (quiet or as_json),
    )
    summary = report.as_dict()
    lines = _counts_lines(summary)
    lines += _table("matches", summary["matches"], summary["accepted"])
    found = matches.filter(pl.col("match") != "none").head(show)
    if found.height:
        lines.append(f"first {found.height} matches:")
        for row in found.iter_rows(named=True):
            lines.append(
                f"  {row[id_field]}  {row['match']:<5}  similarity {row['similarity']:.3f}  "
                f"record {row['record_id']} ({row['generator'] or '-'}, generation "
                f"{row['generation'] if row['generation'] is not None else '-'})"
            )
    if output:
        lines.append(f"wrote {matches.height:,} rows to {output}")
    _emit(summary, as_json, lines)


@ledger.command("stats")
@click.argument("ledger_path", metavar="LEDGER")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def ledger_stats(ledger_path: str, as_json: bool) -> None:
    """Summarise a ledger: records, distinct contents, generators, generations, settings.

    The ledger is only read, so it may lie in a read-only folder.

    \b
    Example:
      tailguard ledger stats ledger.sqlite --json
    """
    from provenance.ledger import Ledger

    with Ledger(ledger_path, create=False, read_only=True) as db:
        stats = db.stats().as_dict()
    lines = [
        f"{ledger_path}: {stats['records']:,} records, {stats['distinct_contents']:,} distinct "
        f"contents, {stats['file_bytes'] / 1e6:.1f} MB",
    ]
    lines += _table("by generator", {str(k): v for k, v in stats["by_generator"].items()},
                    stats["records"])
    lines += _table("by generation", {str(k): v for k, v in stats["by_generation"].items()},
                    stats["records"])
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in stats["config"].items()))
    _emit(stats, as_json, lines)


@main.command()
@click.option("--human", multiple=True, metavar="PATH", help="Original human data (repeatable).")
@click.option("--synthetic", multiple=True, metavar="PATH",
              help="Known synthetic data, e.g. a folder per generation (repeatable).")
@click.option("--tagged", multiple=True, metavar="PATH",
              help="Tagged corpus (tailguard tag output): role from its prov_label, one of "
                   "human/synthetic/unknown (repeatable).")
@click.option("--config", type=click.Path(dir_okay=False),
              help="Spec file (.toml/.yaml) with the same field names; flags override it.")
@click.option("--target-docs", type=click.IntRange(min=1), help="Mixture size in documents.")
@click.option("--target-tokens", type=click.IntRange(min=1), help="Mixture size in tokens.")
@click.option("--tokenizer", help="Token counting for --target-tokens: whitespace (default) or a "
              "Hugging Face tokenizer name/path.")
@click.option("--synthetic-ratio", type=click.FloatRange(0, 1),
              help="Share of the target drawn from the synthetic pool.")
@click.option("--retain-original", type=click.FloatRange(0, 1),
              help="Minimum share of the target drawn from original human data.")
@click.option("--strategy", type=click.Choice(["replace", "retain", "accumulate", "filter",
                                                "reweight"]), help="How pools are formed.")
@click.option("--drop-label", "drop_labels", multiple=True,
              type=click.Choice(["synthetic", "unknown", "human"]),
              help="Drop scraped documents with this label (repeatable).")
@click.option("--max-score", type=click.FloatRange(0, 1),
              help="Drop scraped documents whose prov_score is above this.")
@click.option("--reweight-power", type=click.FloatRange(min=0, min_open=True),
              help="Exponent b of the reweight strategy's weight (1 - prov_score)^b.")
@click.option("--dedup", type=click.Choice(["none", "exact", "near"]),
              help="Deduplicate across sources, keeping the human copy.")
@click.option("--dedup-threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="MinHash Jaccard threshold for --dedup near (default 0.8).")
@click.option("--allow-upsample", is_flag=True, default=None,
              help="Repeat documents when a pool is smaller than its share.")
@click.option("--seed", type=click.IntRange(min=0), help="Selection seed (default 0).")
@click.option("--id-field", default=None, help="Id column (default id).")
@click.option("--text-field", default=None, help="Text column (default text).")
@click.option("-o", "--output", "out_dir", help="Output folder for shards and manifest.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--overwrite", is_flag=True, help="Replace a mixture already in the output folder.")
@engine_options("Mix in this process, or read and hash the files on Ray; the shards are "
                "byte-identical.")
@output_options
def mix(
    human: tuple[str, ...], synthetic: tuple[str, ...], tagged: tuple[str, ...],
    config: str | None, out_dir: str | None, dry_run: bool, overwrite: bool, engine: str,
    ray_address: str | None, as_json: bool, quiet: bool, **fields: Any,
) -> None:
    """Build a training mixture with an exact synthetic share and an original-data floor.

    Documents are ranked by a keyed hash of (seed, source, id), so counts are exact and the
    same spec gives the same bytes. Writes parquet shards, manifest.json (requested vs
    achieved, estimated true synthetic share, shard sha256s: the same bytes for the same spec
    and inputs), run.json (where, when, how long) and dataset_card.md. The folder appears, or
    replaces the mixture there with --overwrite, only once the new mixture is complete.

    \b
    Example:
      tailguard mix --human wiki.parquet --synthetic gen1/ --synthetic gen2/ \\
          --target-docs 100000 --synthetic-ratio 0.3 --retain-original 0.1 \\
          --strategy accumulate --dedup exact --seed 7 -o runs/mix
    """
    from mixers.build import build_mixture
    from mixers.spec import build_spec
    from provenance.outputs import check_output

    if not out_dir and not dry_run:
        raise click.UsageError("give -o/--output, or --dry-run")
    if ray_address and engine != "ray":
        raise click.UsageError("--ray-address needs --engine ray")
    targets = [fields.get("target_docs"), fields.get("target_tokens")]
    if None not in targets:
        raise click.UsageError("give --target-docs or --target-tokens, not both")
    if targets == [None, None] and config is None:
        raise click.UsageError("give the mixture's size: --target-docs or --target-tokens")
    if config is not None and not dry_run:
        check_output(out_dir, [config], folder=True)  # the sources are checked by the build
    spec = build_spec(config=config, human=human, synthetic=synthetic, tagged=tagged,
                      **{k: (tuple(v) if isinstance(v, tuple) else v) for k, v in fields.items()})
    manifest = build_mixture(spec, out_dir, dry_run=dry_run, overwrite=overwrite,
                             progress=not (quiet or as_json), engine=engine,
                             ray_address=ray_address)
    # The manifest, and the run's facts (run.json: out_dir, seconds, dry_run, ...) beside it.
    summary = {**manifest.as_dict(), **manifest.run.as_dict()}
    summary.get("dedup", {}).pop("dropped_ids", None)
    plan = summary["plan"]
    tokens = plan["unit"] == "tokens"
    lines = [f"plan: {plan['target']:,} {plan['unit']}, spec {summary['spec_hash'][:12]}"]
    lines.append(f"  {'pool':<10}{'available':>12}{'requested':>12}{'achieved':>12}"
                 + (f"{'documents':>12}" if tokens else ""))
    docs = summary["achieved"].get("documents_by_pool") or {}
    # Achieved in the plan's unit; with a token target, the documents beside it.
    got = (summary["achieved"].get("tokens_by_pool") or {}) if tokens else docs
    for pool, p in plan["pools"].items():
        have = p["available_tokens"] if tokens else p["available_docs"]
        cells = [got.get(pool, "-")] + ([docs.get(pool, "-")] if tokens else [])
        lines.append(f"  {pool:<10}{have:>12,}{p['requested']:>12,}"
                     + "".join(f"{c:>12,}" if isinstance(c, int) else f"{c:>12}" for c in cells))
    lines.append(f"  {'source':<28}{'read':>10}{'rejected':>10}{'filtered':>10}"
                 f"{'dedup':>8}{'selected':>10}")
    for name, src in summary["sources"].items():
        lines.append(f"  {name[:28]:<28}{src['read']:>10,}{src['rejected']:>10,}"
                     f"{src['filtered'] + src['excluded_by_strategy']:>10,}"
                     f"{src['deduplicated']:>8,}{src['selected']:>10,}")
    if dry_run:
        lines.append("dry run: nothing written")
    else:
        share = summary["synthetic_share"]
        achieved_share = f"{summary['achieved']['synthetic_share']}"
        if tokens and sum(got.values()):
            # The ratio was asked of tokens: say it in tokens (documents differ in length).
            achieved_share = (f"{got.get('synthetic', 0) / sum(got.values()):.4g} of tokens "
                              f"({achieved_share} of documents)")
        lines.append(
            f"synthetic share: requested {summary['requested']['synthetic_ratio']}, achieved "
            f"{achieved_share}, estimated true {share['estimate']} "
            f"(95% {share['low']}-{share['high']})"
        )
        lines.append(f"wrote {len(summary['shards'])} shard(s), manifest.json, run.json and "
                     f"dataset_card.md to {out_dir} in {summary['seconds']:.1f} s")
    _emit(summary, as_json, lines)


@main.command()
@click.option("-o", "--output", "out_dir", default="runs/demo", show_default=True,
              help="Folder for the crawl, ledger, tagged corpus and rejects.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the whole demo.")
@click.option("--docs-per-kind", type=click.IntRange(min=1), default=100, show_default=True,
              help="Documents of each kind (human with/without metadata, copied, edited, ...).")
@click.option("--detector", default="default", show_default=True,
              help="Detector for documents no other evidence reaches: default (the shipped one) "
                   "or a folder from tailguard detect-train.")
@click.option("--no-detector", is_flag=True,
              help="Tag with declared metadata and the ledger only (see what stays unknown).")
@output_options
def demo(out_dir: str, seed: int, docs_per_kind: int, detector: str, no_detector: bool,
         as_json: bool, quiet: bool) -> None:
    """Tag a demo crawl built from data that ships with Python, and score the tags.

    Human text is standard-library docstrings; generated text comes from a word-trigram model
    trained on them. Part of the generated text is registered in a ledger; the crawl mixes
    human pages, verbatim and edited copies, declared samples, another model's text and bad
    lines. Nothing is downloaded.

    \b
    Example:
      tailguard demo -o runs/demo
    """
    from provenance.demo import run_demo

    result = run_demo(out_dir, seed=seed, docs_per_kind=docs_per_kind,
                      progress=not (quiet or as_json),
                      detector=None if no_detector else detector)
    summary = result.as_dict()
    tag_summary = summary["tag"]
    lines = _counts_lines(tag_summary)
    lines += _evidence_lines(tag_summary)
    labels = ["human", "synthetic", "unknown"]
    lines.append("true origin vs tag:" + "".join(f"{lb:>12}" for lb in labels))
    for origin, row in summary["confusion"].items():
        lines.append(f"  {origin:<16}" + "".join(f"{row.get(lb, 0):>12,}" for lb in labels))
    lines.append(f"files in {out_dir}: crawl.jsonl, ledger.sqlite, tagged.parquet, "
                 "tagged.parquet.rejects.jsonl")
    _emit(summary, as_json, lines)


# ---- collapse experiments ------------------------------------------------------------------------

def _key_values(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def _click_type(option: Any) -> Any:
    if option.kind == "int":
        return click.IntRange(min=option.minimum)
    if option.kind == "float":
        return click.FloatRange(min=option.minimum, min_open=option.open_minimum)
    if option.kind == "choice":
        return click.Choice(list(option.choices))
    return str


def family_options(func):
    """The options every registered family declares (see collapse_eval.families), each once;
    they reach the command as one ``settings`` dict that the library checks against the
    family."""
    import functools

    declared: dict[str, Any] = {}
    for spec in FAMILIES.values():
        for option in spec.options:
            declared.setdefault(option.name, option)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = {}
        for name, option in declared.items():
            value = kwargs.pop(name)
            if option.kind == "pairs":
                value = _key_values(value, "--" + option.flag) or None
            settings[name] = value
        return func(*args, settings=settings, **kwargs)

    for name, option in reversed(declared.items()):
        pairs = option.kind == "pairs"
        wrapper = click.option(f"--{option.flag}", name, type=_click_type(option),
                               multiple=pairs, metavar="KEY=VALUE" if pairs else None,
                               help=option.help + (" (repeatable)" if pairs else ""))(wrapper)
    return wrapper


@main.group()
def collapse() -> None:
    """Recursive-training experiments: measure model collapse and what prevents it.

    \b
    Example:
      tailguard collapse run gaussian --policy replace --policy retain:0.1 \\
          --policy 'filter:noisy(tpr=0.9,fpr=0.01)' --generations 100 --seeds 64 -o runs/g
    """


@collapse.command("run")
@click.argument("family", required=False, type=click.Choice(list(FAMILIES)))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Settings from a .toml/.yaml file or a run folder's config.json (its "
                   "family, policies, generations, seeds and family options); flags override.")
@click.option("--policy", "policies", multiple=True, metavar="POLICY",
              help="replace, retain:F, accumulate, scrape, filter:TAGGER, reweight[:TAGGER]; "
                   "TAGGER is oracle, noisy(tpr=..,fpr=..) or discriminator; lm adds ledger, "
                   "watermark and detector (repeatable; default: the family's).")
@click.option("--generations", type=click.IntRange(min=1),
              help="Recursive generations after generation 0 (which fits the original data) "
                   "[100; lm 10].")
@click.option("--seeds", type=click.IntRange(min=1),
              help="Independent chains per policy (seeds FIRST-SEED .. FIRST-SEED+N-1) [8; lm 1].")
@click.option("--first-seed", type=click.IntRange(min=0), help="First seed [0].")
@family_options
@device_option
@click.option("--threads", type=click.IntRange(min=1),
              help="Torch CPU threads (1 is fastest for small models on busy cores) [torch's "
                   "default; 1 per worker with --jobs > 1].")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Chains run at once, each in its own process (a tensor family's chain is a "
                   "policy, the LM's a seed and policy, after generation 0). Results do not "
                   "depend on it (for the same --threads); a resume may change it.")
@click.option("-o", "--output", "out_dir", required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the run folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@no_plots_option
@output_options
def collapse_run(family: str | None, config_file: str | None, policies: tuple[str, ...],
                 generations: int | None, seeds: int | None, first_seed: int | None,
                 settings: dict[str, Any], device: str, threads: int | None, jobs: int,
                 out_dir: str, resume: bool, overwrite: bool, no_plots: bool, quiet: bool,
                 as_json: bool) -> None:
    """Run the recursion FAMILY (gaussian, gmm, vae, lm) under each policy; write results, plots.

    Writes OUTPUT/results.parquet (family, policy, seed, generation, metric, value, run_id),
    one PNG per metric under OUTPUT/plots, OUTPUT/config.json (reusable with --config) and a
    checkpoint per generation (--resume continues after an interruption with identical
    results). Each family declares its own options (--samples, --ddof, --dataset...): one
    that does not apply to FAMILY is an error.

    \b
    Example:
      tailguard collapse run gmm --policy replace --policy retain:0.1 \\
          --policy 'filter:noisy(tpr=0.9,fpr=0.01)' --generations 200 --seeds 32 -o runs/gmm
      tailguard collapse run lm --policy replace --policy retain:0.1 \\
          --policy filter:watermark --generations 10 --jobs 2 -o runs/lm
      tailguard collapse run --config runs/gmm/config.json --seeds 64 -o runs/gmm-64
    """
    from collapse_eval.engine import run_collapse
    from collapse_eval.run_config import collapse_config

    config = collapse_config(family, {**settings, "policies": policies or None,
                                      "generations": generations, "seeds": seeds,
                                      "first_seed": first_seed}, config_file)
    run = run_collapse(config, out_dir, device=device, resume=resume, overwrite=overwrite,
                       progress=not (quiet or as_json), plots=not no_plots, threads=threads,
                       jobs=jobs)
    summary, lines = run.report()
    _emit(summary, as_json, lines)


@collapse.command("status")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the progress as JSON.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="LM runs: also write results.parquet, plots/ and a config for `tailguard "
                   "report` of the generations every seed has finished to DIR (outside the "
                   "run folder).")
def collapse_status(run_dir: str, as_json: bool, export_dir: str | None) -> None:
    """Show how far a collapse run has got, from its folder (safe while it runs).

    Every family: each chain's finished generations (a tensor family's chain is a policy,
    its seeds batched; the LM's a seed and policy), and whether a process still runs the run
    (if none does, how to resume it). An LM run also shows the newest generation's metrics,
    the epochs the generation in training has saved (a resume goes on from there), the
    process working on each chain (with --jobs, its worker: the pid to renice, pin or
    profile), the time left from the generations so far and whether the disk has the room
    the next generation needs (TAILGUARD_MIN_FREE_GB overrides it). Never writes into the run
    folder. With --export (LM runs), the curves so far are plotted as the finished run would
    plot them, and `tailguard report` on the export compares the policies at the last
    generation every started one has reached.

    \b
    Example:
      tailguard collapse status runs/gmm
      tailguard collapse status runs/lm --export runs/lm-so-far
      tailguard report runs/lm-so-far
    """
    from collapse_eval.status import run_status

    status = run_status(run_dir, export_dir)
    _emit(status.summary, as_json, status.lines)


# ---- benchmark and report ------------------------------------------------------------------------


@main.command()
@click.option("--quick", is_flag=True,
              help="The small matrix (at most 10 minutes on 2 CPU cores): the README's main job.")
@click.option("--families", default=None, metavar="LIST",
              help="Comma-separated families [all: gaussian,gmm,vae,lm].")
@click.option("--policy", "policies", multiple=True, metavar="POLICY",
              help="Policies to compare (repeatable) [per family plan: replace, retain:0.1, "
                   "accumulate, scrape, filter:oracle, filter:noisy(tpr=0.9,fpr=0.05), "
                   "filter:discriminator, reweight; lm: its nine; --quick runs fewer for vae "
                   "and lm]; scrape and filter:oracle are always added. A policy whose tagger "
                   "does not apply to a family is skipped for it (noisy for lm; ledger, "
                   "watermark, detector for the numeric families).")
@click.option("--seeds", type=click.IntRange(min=2), help="Seeds per family [per family plan].")
@click.option("--generations", type=click.IntRange(min=1),
              help="Generations per family [per family plan].")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch CPU threads (the models are small: on shared cores more threads wait "
                   "on each other).")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Families run at once, each in its own process with --threads torch threads "
                   "(lm also runs its policy chains this many at a time). Results do not "
                   "depend on it [--quick: the usable CPU cores, at most one per family; else 1].")
@click.option("-o", "--output", "out_dir", default="runs/bench", show_default=True,
              help="Benchmark folder; rerunning into it resumes.")
@no_plots_option
@output_options
def bench(quick: bool, families: str | None, policies: tuple[str, ...], seeds: int | None,
          generations: int | None, device: str, threads: int, jobs: int | None, out_dir: str,
          no_plots: bool, quiet: bool, as_json: bool) -> None:
    """Run the mitigation benchmark (families x policies x seeds) and write its report.

    Families: gaussian, gmm, vae (a VAE on MNIST digits) and lm (a small GPT-2 on Wikipedia),
    each in OUTPUT/FAMILY. Writes OUTPUT/results.parquet, OUTPUT/report.md and a self-contained
    OUTPUT/report.html (plots embedded). A rerun with the same OUTPUT resumes where it stopped.

    \b
    Example:
      tailguard bench --quick -o runs/bench
      tailguard bench --families gaussian --policy replace --policy retain:0.1 --seeds 64
      tailguard bench --families vae,lm --device cuda -o runs/bench-full
    """
    from collapse_eval.bench import FAMILIES, run_bench

    chosen = tuple(f.strip() for f in families.split(",") if f.strip()) if families else FAMILIES
    result = run_bench(out_dir, quick=quick, families=chosen,
                       policies=policies or None, seeds=seeds,
                       generations=generations, device=device, threads=threads, jobs=jobs,
                       progress=not (quiet or as_json), plots=not no_plots)
    summary, lines = result.summary()
    _emit(summary, as_json, lines)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def report(run_dir: str, as_json: bool) -> None:
    """Regenerate report.md and report.html from a benchmark or collapse-run folder.

    \b
    Example:
      tailguard report runs/bench
    """
    from collapse_eval.report import write_report

    written = write_report(run_dir)
    summary = {"report_md": str(written.markdown), "report_html": str(written.html),
               "images": len(written.images)}
    _emit(summary, as_json, written.lines())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
