"""The documentation's numbers, written at build time from files that commands wrote.

No number in the site is typed by hand. This mkdocs hook (registered in ``mkdocs.yml``) writes

- a **results page** for every folder ``docs/results/NAME/`` that has a ``source.json``: the
  command that produced it, the commit it ran at, then the report that ``tailguard report`` wrote
  from the run's ``results.parquet`` (``report.md`` and its PNGs), or, while a run's outputs are
  not committed, the command that will produce them;
- the **hot-path benchmarks page** from ``benchmarks/results/*.json``;
- the **generated tables** of the guides: a page holds ``<!-- generated: NAME -->`` and the hook
  puts the table there (the detector's training report, the leave-one-dataset-out benchmark,
  the Ray benchmark, the list of results pages);
- the **API reference pages**, one per package, listing every public module found on disk (so a
  module added, renamed or removed shows up without editing the docs);
- ``contributing.md`` from the repository's ``CONTRIBUTING.md``.

Publishing a run's outputs (small: the report's tables and PNGs, never checkpoints)::

    tailguard bench --quick -q -o runs/bench
    python docs/hooks/results.py publish runs/bench quick-bench \\
        --title "Quick benchmark" --command "tailguard bench --quick -q -o runs/bench"

which regenerates the report from the run folder (``tailguard report``), copies ``report.md``,
``report_files/*.png`` (as 256-colour PNGs), ``bench.json`` and a per-policy summary of the
last generation into ``docs/results/quick-bench/`` and records the command, commit and date in
``source.json``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
BENCH_RESULTS = ROOT / "benchmarks" / "results"
DETECTOR_REPORT = ROOT / "provenance" / "detectors" / "default" / "training_report.json"
LODO = BENCH_RESULTS / "bench_detect_lodo.json"
RAY = BENCH_RESULTS / "bench_ray.json"

#: API reference pages: page name -> the package folder whose modules it documents.
API_PAGES = {
    "provenance": "provenance",
    "provenance.corpus": "provenance/corpus",
    "provenance.ledger": "provenance/ledger",
    "provenance.watermark": "provenance/watermark",
    "provenance.detectors": "provenance/detectors",
    "mixers": "mixers",
    "collapse_eval": "collapse_eval",
    "collapse_eval.families": "collapse_eval/families",
    "collapse_eval.text": "collapse_eval/text",
}

#: a line of its own: ``<!-- generated: NAME -->`` (a marker quoted inside a sentence is text)
MARKER = re.compile(r"^<!--\s*generated:\s*([\w-]+)\s*-->[ \t]*$", re.M)
#: Sphinx roles left in docstrings (``:func:`x``` renders as ``:func:<code>x</code>``).
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|ref|const):(?=<code>)")
TILDE = re.compile(r"<code>~(?:[\w]+\.)+(\w+)")


# --------------------------------------------------------------------------- small helpers


def _git(*args: str, cwd: Path = ROOT) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def last_commit(path: Path) -> str:
    """``commit abc1234, 2026-11-25`` for the commit that last changed ``path``, or a plain note."""
    found = _git("log", "-1", "--format=%h, %cs", "--", str(path.relative_to(ROOT)))
    return f"commit {found}" if found else "not committed yet"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _num(value: Any, digits: int = 3) -> str:
    """A measured value as text: integers with thousands separators, floats to ``digits``."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # nan
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.{min(digits, 1)}f}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _source_line(path: Path, command: str) -> str:
    return (f"*Generated from `{_rel(path)}` ({last_commit(path)}), written by `{command}`.*")


# --------------------------------------------------------------------------- generated tables


def detector_training() -> str:
    """The shipped detector's training report: in distribution and grouped cross-validation."""
    report = _load(DETECTOR_REPORT)
    cal = report["calibration"]
    docs = report["documents"]
    out = [_source_line(DETECTOR_REPORT, "tailguard detect-train"), ""]
    out.append(_table(
        ["documents", "scored", "human", "machine", "AUROC (out of fold)", "TPR", "at FPR",
         "first stage settles", "AUROC cost of the first stage"],
        [[_num(docs["total"]), _num(docs["scored"]), _num(cal["n_human"]),
          _num(cal["n_machine"]), _num(cal["auroc"]), _num(cal["tpr"], 2), _num(cal["fpr"], 4),
          _num(cal["cascade"]["settled_share"], 3), _num(cal["cascade"]["auroc_loss"], 4)]]))
    out.append("")
    out.append(f"Measured on: {cal['measured_on']}.")
    out.append("")
    rows = []
    for grouping, result in report["cross_validation"].items():
        rows.append([f"leave one {grouping} out", str(len(result["groups"])),
                     _num(result["worst_auroc"]), _num(result["mean_auroc"])])
    out.append(_table(["grouped cross-validation", "groups", "worst AUROC", "mean AUROC"], rows))
    for grouping, result in report["cross_validation"].items():
        out += ["", f'??? note "Leave one {grouping} out, group by group"', ""]
        table = _table(
            [grouping, "human", "machine", "AUROC", "TPR at the target FPR"],
            [[name, _num(g["n_human"]), _num(g["n_machine"]), _num(g["auroc"]),
              _num(g["tpr_at_fpr"], 2)] for name, g in result["groups"].items()])
        out += ["    " + line for line in table.splitlines()]
    return "\n".join(out)


_METHODS = {
    "fast_detectgpt": "Fast-DetectGPT",
    "binoculars_one_model": "Binoculars (one model)",
    "ngram_classifier": "n-gram classifier",
    "supervised": "supervised",
    "supervised_cascade": "supervised + cascade",
    "ablation_logistic_head": "ablation: logistic head",
    "ablation_char_score_in_head": "ablation: + char score in head",
}


def detector_lodo() -> str:
    """Leave-one-dataset-out: every detector trained or calibrated on three files, tested on one."""
    bench = _load(LODO)
    methods = [m for m in _METHODS if any(m in r for r in bench["results"].values())]
    rows = []
    for held_out, result in bench["results"].items():
        rows.append([held_out] + [
            f"{_num(result[m]['auroc'])} / {_num(result[m]['tpr_at_1pct_fpr'], 2)}"
            if m in result else "" for m in methods])
    out = [_source_line(LODO, "python benchmarks/bench_detect_lodo.py"), "",
           "AUROC / TPR at 1% FPR on the held-out file:", "",
           _table(["held-out file"] + [_METHODS[m] for m in methods], rows), ""]
    per_file = bench.get("per_file", {})
    if per_file:
        out.append(_table(
            ["held-out file", "FPR of the transferred threshold", "worst domain", "its FPR"],
            [[name, _num(f["threshold_fpr_overall"], 3), f["worst_domain_fpr"]["domain"],
              _num(f["worst_domain_fpr"]["fpr"], 3)] for name, f in per_file.items()]))
        out.append("")
    goals = bench.get("goals", {})
    if goals:
        out.append(_table(["goal", "met"], [[name.replace("_", " "), "yes" if ok else "**no**"]
                                             for name, ok in goals.items()]))
        out.append("")
    return "\n".join(out)


def _worst_cell(rates: dict[str, Any]) -> str:
    """The worst domain's FPR and name (no name when no domain had a false positive)."""
    fpr = rates["worst_domain_fpr"]
    return f"{_num(fpr, 3)} ({rates['worst_domain']})" if fpr else f"{_num(fpr, 3)} (none)"


def detector_recalibration() -> str:
    """The held-out files' worst-domain FPR before and after ``detect-calibrate`` re-sets the
    threshold on half their human documents (by domain), and the TPR each leaves."""
    per_file = {name: f["recalibrated"] for name, f in _load(LODO).get("per_file", {}).items()
                if "recalibrated" in f}
    if not per_file:
        return "*The benchmark file has no recalibration section; rerun the benchmark.*"
    rows = []
    for name, r in per_file.items():
        for how in ("pooled", "by_domain", "by_domain_each_alone"):
            if how not in r:
                continue
            t, n = r[how]["trained"], r[how]["recalibrated"]
            o = r[how].get("over_splits")
            rows.append([name, how.replace("_", " "), _num(r[how]["n_fit"]), _worst_cell(t),
                         _worst_cell(n),
                         f"{_num(o['worst_domain_mean_fpr'], 4)} ({o['worst_domain']}); "
                         f"{o['share_of_splits_within_3x']:.0%}" if o else "",
                         f"{_num(t['fpr_held_out'], 3)} -> {_num(n['fpr_held_out'], 3)}",
                         f"{_num(t['tpr'], 3)} -> {_num(n['tpr'], 3)}"])
    return "\n".join([
        _source_line(LODO, "python benchmarks/bench_detect_lodo.py"), "",
        _table(["held-out file", "re-set", "human texts it was set on",
                "worst-domain FPR, trained threshold", "after recalibration (one half)",
                "over 200 halves: worst domain's mean FPR; halves with every domain <= 3%",
                "held-out FPR", "TPR"], rows)])


def detector_reference() -> str:
    """Each held-out file's AUROC and TPR with and without a human reference (half its human
    documents), from the same benchmark run."""
    per_file = {name: f["reference"] for name, f in _load(LODO).get("per_file", {}).items()
                if f.get("reference")}
    if not per_file:
        return "*The benchmark file has no reference section; rerun the benchmark.*"
    rows = [[name, _num(r["reference_texts"]),
             f"{_num(r['plain']['auroc'], 3)} -> {_num(r['with_reference']['auroc'], 3)}",
             f"{_num(r['plain']['tpr'], 3)} -> {_num(r['with_reference']['tpr'], 3)}",
             f"{_num(r['plain']['fpr_held_out'], 3)} -> "
             f"{_num(r['with_reference']['fpr_held_out'], 3)}"] for name, r in per_file.items()]
    return "\n".join([
        _source_line(LODO, "python benchmarks/bench_detect_lodo.py"), "",
        _table(["held-out file", "human reference texts", "AUROC (plain -> reference head)",
                "TPR at the re-set threshold", "held-out FPR"], rows)])


def threshold_promise() -> str:
    """Each threshold rule's mean FPR on new human text (random halves of each held-out file's
    human documents), from the same benchmark run."""
    files = _load(LODO).get("per_file", {})
    per_file = {(name, head): f[key] for name, f in files.items()
                for key, head in (("threshold_promise", "plain"),
                                  ("threshold_promise_reference", "reference"))
                if f.get(key)}
    if not per_file:
        return "*The benchmark file has no threshold_promise section; rerun the benchmark.*"
    rules = [("in_sample", "1% of the fitted texts"), ("expected", "expected (default)"),
             ("confidence_0.9", "90% confidence")]

    def cell(rule: dict) -> str:
        return (f"{_num(rule['mean_fpr'], 4)} / {_num(rule['fpr_p90'], 3)} / "
                f"{_num(rule['mean_tpr'], 3)}" + ("" if rule["can_keep"] else " (too few)"))

    rows = [[name, head, _num(p["fit_texts"]), *(cell(p[key]) for key, _ in rules)]
            for (name, head), p in sorted(per_file.items())]
    splits = " and ".join(sorted({f"{p['splits']} ({head} head)"
                                  for (_, head), p in per_file.items()}))
    return "\n".join([
        _source_line(LODO, "python benchmarks/bench_detect_lodo.py"), "",
        _table(["held-out file", "head", "texts setting it", *(label for _, label in rules)],
               rows), "",
        f"Each cell: mean FPR on the other half / its 90th percentile / mean TPR, over {splits} "
        "random halves; \"too few\": the rule cannot keep its promise on that many texts and "
        "puts the threshold above them all. The reference head takes the half that sets the "
        "threshold as its human reference too, as `detect-calibrate` does."])


def detector_speed() -> str:
    """The cascade's speed and AUROC against the full detector, from the same benchmark run."""
    speed = _load(LODO).get("speed")
    if not speed:
        return "*The benchmark file has no speed section.*"
    rows = [["full detector", _num(speed["full_docs_per_s"], 2), _num(speed["auroc_full"], 4)],
            ["cascade", _num(speed["cascade_docs_per_s"], 2), _num(speed["auroc_cascade"], 4)]]
    if "int8" in speed:
        rows.append(["int8 scorer" + ("" if speed["int8"].get("kept") else " (not used)"),
                     _num(speed["int8"]["docs_per_s"], 2), _num(speed["int8"]["auroc"], 4)])
    out = [_source_line(LODO, "python benchmarks/bench_detect_lodo.py"), "",
           _table(["way", "docs/s", "AUROC"], rows), "",
           f"{_num(speed['docs'])} documents; the first stage sent "
           f"{_num(speed['share_to_second_stage'], 3)} of them to the language model. "
           f"{speed.get('note', '').rstrip('.')}."]
    machine = _load(LODO).get("machine")
    if machine:
        out += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + "."]
    return "\n".join(out)


def ray_bench() -> str:
    """Local engine against Ray with one and two workers, from ``bench_ray.json``."""
    bench = _load(RAY)
    results, params = bench["results"], bench["params"]
    seconds = params.get("median_seconds", {})
    rows = []
    for step, unit in (("tag", "docs/s"), ("mix", "docs read/s")):
        local = results[f"{step}_local"]
        local_s = _num(seconds.get(f"{step}_local"), 2)
        row = [f"`{step}` ({unit})", f"{_num(local, 0)} ({local_s} s)"]
        for workers in ("1_worker", "2_workers"):
            value = results[f"{step}_ray_{workers}"]
            row.append(f"{_num(value, 0)} ({_num(seconds.get(f'{step}_ray_{workers}'), 2)} s), "
                       f"{_num(value / local, 2)}x")
        rows.append(row)
    machine = bench.get("machine", {})
    facts = [f"{_num(params['tag_docs'])} documents in {params['tag_shards']} shards tagged "
             f"against a {_num(params['ledger_docs'])}-record ledger",
             f"{_num(params['mix_docs'])} documents in {params['mix_shards']} shards mixed into "
             f"{_num(params['mix_target'])}",
             f"medians of {params.get('repeat', '?')} runs with Ray already started (starting it "
             f"took {_num(params.get('ray_init_s'), 2)} s)",
             "outputs identical across engines: "
             + ("yes" if params.get("identical_outputs") else "**no**")]
    if machine:
        facts.append(f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, load "
                     f"average {machine.get('load_average_before', ['?'])[0]} before and "
                     f"{machine.get('load_average_after', ['?'])[0]} after")
    return "\n".join([_source_line(RAY, "python benchmarks/bench_ray.py"), "",
                      _table(["step", "local", "Ray, 1 worker", "Ray, 2 workers"], rows), "",
                      *[f"- {f}" for f in facts]])


def results_index() -> str:
    rows = []
    for source in sorted(RESULTS.glob("*/source.json")):
        meta = _load(source)
        name = source.parent.name
        if (source.parent / "report.md").exists():
            state = "committed"
        elif any((source.parent / "report_files").glob("*.png")):
            state = "plots only; tables not committed yet"
        else:
            state = "not committed yet"
        rows.append([f"[{meta['title']}]({name}/index.md)", state,
                     f"`{meta['commands'][0]}`"])
    rows.append(["[Hot-path benchmarks](benchmarks.md)", "committed",
                 "`python benchmarks/bench_NAME.py`"])
    return _table(["page", "state", "command"], rows)


GENERATORS = {
    "detector-training": detector_training,
    "detector-lodo": detector_lodo,
    "detector-speed": detector_speed,
    "detector-recalibration": detector_recalibration,
    "detector-reference": detector_reference,
    "threshold-promise": threshold_promise,
    "ray-bench": ray_bench,
    "results-index": results_index,
}


# --------------------------------------------------------------------------- generated pages


def results_page(folder: Path) -> str:
    """A results page: where the numbers come from, then the report ``tailguard report`` wrote."""
    meta = _load(folder / "source.json")
    lines = [f"# {meta['title']}", "", meta.get("about", ""), ""]
    commands = "\n".join(meta["commands"])
    report = folder / "report.md"
    lines += ['!!! info "Where these numbers come from"', ""]
    lines += ["    Produced by:", "", "    ```bash"]
    lines += ["    " + c for c in commands.splitlines()]
    lines += ["    ```", ""]
    if meta.get("commit"):
        dirty = " plus uncommitted changes" if meta.get("dirty") else ""
        lines.append(f"    at commit `{meta['commit']}`{dirty}, tailguard "
                     f"{meta.get('tailguard', '?')}, on {meta.get('date', '?')}; "
                     f"published into `docs/results/{folder.name}/` by "
                     f"`python docs/hooks/results.py publish` ({last_commit(folder)}).")
        lines.append("")
    for note in meta.get("notes", []):
        lines += [f"    {note}", ""]
    if report.exists():
        body = report.read_text(encoding="utf-8").splitlines()
        if body and body[0].startswith("# "):
            body = body[1:]
        data = [n for n in ("summary.json", "bench.json") if (folder / n).exists()]
        if data:
            lines += ["Data: " + ", ".join(f"[`{n}`]({n})" for n in data) + ".", ""]
        lines += body
    else:
        lines += ['!!! warning "Not committed yet"', "",
                  "    This run's outputs are not in the repository yet, so this page gives no "
                  "numbers. Run the command above, then publish its report with", "",
                  "    ```bash",
                  f"    python docs/hooks/results.py publish RUN_DIR {folder.name} "
                  f"--title \"{meta['title']}\" --command \"{meta['commands'][0]}\"",
                  "    ```", ""]
        images = sorted((folder / "report_files").glob("*.png"))
        if images:
            lines += ["Plots from an earlier run of the same command (see the note above); "
                      "its tables are not committed:", ""]
            lines += [f"![{p.stem}](report_files/{p.name})" for p in images]
    return "\n".join(lines) + "\n"


#: benchmarks whose tables a guide shows (read from the same file)
GUIDE_TABLES = {
    "detect_lodo": ("the detectors guide", "../guides/detectors.md#leave-one-dataset-out"),
    "ray": ("the Ray guide", "../guides/ray.md#measured"),
}


def benchmarks_page() -> str:
    """Every ``benchmarks/results/*.json``: what it measured, against what, on which machine."""
    lines = ["# Hot-path benchmarks", "",
             "Each hot path has a benchmark that measures tailguard against the obvious "
             "alternative in the same run (`python benchmarks/bench_NAME.py`, see the "
             "[benchmark guide](../guides/benchmark.md#hot-path-benchmarks)). Every table below "
             "is read from its JSON file in `benchmarks/results/` when the site is built; "
             "the line under each title says which commit last wrote it.", ""]
    for path in sorted(BENCH_RESULTS.glob("*.json")):
        data = _load(path)
        name = data.get("benchmark", path.stem)
        lines += [f"## {name}", "",
                  f"`python benchmarks/{path.stem}.py` → `{_rel(path)}` ({last_commit(path)}); "
                  f"unit: {data.get('unit', '?')}.", ""]
        if name in GUIDE_TABLES:
            lines += [f"Its tables are in [{GUIDE_TABLES[name][0]}]({GUIDE_TABLES[name][1]}).", ""]
        results = data.get("results", {})
        flat = {k: v for k, v in results.items() if not isinstance(v, (dict, list))}
        if flat:
            lines += [_table(["measurement", data.get("unit", "value")],
                             [[f"`{k}`", _num(v)] for k, v in flat.items()]), ""]
        speedup = data.get("speedup", {})
        if speedup:
            lines += [_table(["ratio", "x"], [[f"`{k}`", _num(v, 2)] for k, v in speedup.items()]),
                      ""]
        for extra in ("peak_rss_mb", "memory_ratio"):
            if isinstance(data.get(extra), dict):
                lines += [_table([extra.replace("_", " "), "value"],
                                 [[f"`{k}`", _num(v)] for k, v in data[extra].items()]), ""]
        scalars = _flatten(data.get("params", {}))
        if scalars:
            lines += ['??? note "Parameters as recorded"', ""]
            lines += ["    " + row for row in _table(
                ["parameter", "value"], [[f"`{k}`", f"`{v}`"] for k, v in scalars]).splitlines()]
            lines.append("")
        machine = data.get("machine")
        if isinstance(machine, dict):
            lines += ["Machine: " + ", ".join(f"{k} {_short(v)}" for k, v in machine.items())
                      + ".", ""]
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _flatten(params: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 2:
            rows += _flatten(value, name + ".", depth + 1)
        else:
            rows.append((name, _short(value).replace("|", "\\|")))
    return rows


def api_page(title: str, folder: str) -> str:
    """One API page: every public module of a package folder, as mkdocstrings blocks."""
    base = ROOT / folder
    package = folder.replace("/", ".")
    init = base / "__init__.py"
    # the package itself only when its __init__ says something (a docstring)
    documented = init.exists() and ast.get_docstring(ast.parse(init.read_text("utf-8")))
    modules = [package] if documented else []
    for path in sorted(base.glob("*.py")):
        if not path.name.startswith("_"):
            modules.append(f"{package}.{path.stem}")
    lines = [f"# {title}", "",
             f"Every public module of `{package}`, from its docstrings (this page lists the "
             "modules found in the source tree when the site was built).", ""]
    for module in modules:
        lines += [f"::: {module}", "    options:", "      show_submodules: false", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- mkdocs events


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    def add(uri: str, content: str) -> None:
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))

    for source in sorted(RESULTS.glob("*/source.json")):
        add(f"results/{source.parent.name}/index.md", results_page(source.parent))
    add("results/benchmarks.md", benchmarks_page())
    for title, folder in API_PAGES.items():
        add(f"reference/api/{title}.md", api_page(title, folder))
    contributing = ROOT / "CONTRIBUTING.md"
    if contributing.exists():
        add("contributing.md", contributing.read_text(encoding="utf-8"))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: unknown generated block {name!r}; "
                             f"known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


#: ``[A] [B]`` in a --help text is literal, not a Markdown reference to resolve.
AUTOREF = re.compile(r'<autoref [^>]*?identifier="([^"]*)"[^>]*>(.*?)</autoref>', re.S)
#: click help's "Example:" lines (kept apart by click's own formatting) as a code block.
EXAMPLE = re.compile(r"<p>(Examples?:)\n(.*?)</p>", re.S)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Docstrings use Sphinx roles (``:func:`name```): show the name, drop the role. On the
    command-line page, ``--help`` texts are plain text: examples become code blocks and
    brackets stay brackets."""
    if page.file.src_uri == "reference/cli.md":
        html = AUTOREF.sub(lambda m: f"[{m.group(2)}] [{m.group(1)}]", html)
        # click >= 8.3 marks "no default" with a sentinel that mkdocs-click prints as is
        html = html.replace("<code>Sentinel.UNSET</code>", "")
        html = EXAMPLE.sub(lambda m: f"<p>{m.group(1)}</p>\n<pre><code>{m.group(2)}</code></pre>",
                           html)
    return TILDE.sub(r"<code>\1", ROLE.sub("", html))


# --------------------------------------------------------------------------- publishing


def _summary(run_dir: Path) -> list[dict[str, Any]]:
    """Each family, policy and metric at its last generation: mean and spread over seeds."""
    import polars as pl

    frames = []
    for path in sorted(run_dir.glob("**/results.parquet")):
        if "report_files" in path.parts or any(p.startswith(".") for p in path.parts):
            continue
        frames.append(pl.read_parquet(path))
    if not frames:
        return []
    results = pl.concat(frames, how="diagonal_relaxed").unique()
    last = results.group_by("family", "policy").agg(pl.col("generation").max().alias("last"))
    final = results.join(last, on=["family", "policy"]).filter(
        pl.col("generation") == pl.col("last"))
    summary = (final.group_by("family", "policy", "metric")
               .agg(generation=pl.col("generation").first(), seeds=pl.col("seed").n_unique(),
                    mean=pl.col("value").mean(), std=pl.col("value").std())
               .sort("family", "policy", "metric"))
    return [{k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()}
            for row in summary.to_dicts()]


def _small_png(source: Path, target: Path) -> None:
    """A plot as a 256-colour PNG: a third of the bytes in git, the same picture to a reader."""
    from PIL import Image

    with Image.open(source) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(target, format="PNG", optimize=True)


def publish(run_dir: Path, name: str, title: str, commands: list[str], about: str,
            notes: list[str] | None = None) -> Path:
    """Copy a run's report (tables, PNGs, a small summary) into ``docs/results/NAME``."""
    import collapse_eval
    from collapse_eval.report import write_report
    from provenance.version import tool_version

    # The commit of the code that writes the report: the checkout tailguard is imported from.
    code = Path(collapse_eval.__file__).resolve().parents[1]
    # read before anything is written: the page's own files are in that checkout too, so a
    # status taken afterwards called every publish "plus uncommitted changes"
    commit = _git("rev-parse", "--short", "HEAD", cwd=code)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=code))
    written = write_report(run_dir)
    out = RESULTS / name
    if out.exists():
        for stale in ("report.md", "summary.json", "bench.json"):
            (out / stale).unlink(missing_ok=True)
        shutil.rmtree(out / "report_files", ignore_errors=True)
    (out / "report_files").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(written.markdown, out / "report.md")
    for image in written.images:
        _small_png(image, out / "report_files" / image.name)
    if (run_dir / "bench.json").exists():
        shutil.copyfile(run_dir / "bench.json", out / "bench.json")
    rows = [json.dumps(row, default=float) for row in _summary(run_dir)]
    (out / "summary.json").write_text("[\n" + ",\n".join(rows) + "\n]\n", encoding="utf-8")
    meta = {
        "title": title,
        "about": about,
        "commands": commands,
        "notes": notes or [],
        "commit": commit,
        "dirty": dirty,
        "tailguard": tool_version(),
        "date": _dt.date.today().isoformat(),
    }
    (out / "source.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python docs/hooks/results.py",
        description="Publish a run folder's report into docs/results/NAME for the site.")
    sub = parser.add_subparsers(dest="what", required=True)
    pub = sub.add_parser("publish", help="copy a run's report, PNGs and summary into the docs")
    pub.add_argument("run_dir", type=Path, help="a tailguard bench or collapse run folder")
    pub.add_argument("name", help="the results page's folder name, e.g. quick-bench")
    pub.add_argument("--title", required=True, help="the page title")
    pub.add_argument("--command", action="append", required=True, dest="commands",
                     help="the command that produced the run (repeatable, in order)")
    pub.add_argument("--about", default="", help="one paragraph under the title")
    pub.add_argument("--note", action="append", dest="notes", default=[],
                     help="a remark on how the run was made (repeatable), e.g. a busy machine")
    args = parser.parse_args(argv)
    out = publish(args.run_dir.resolve(), args.name, args.title, args.commands, args.about,
                  args.notes)
    print(f"published {args.run_dir} into {out.relative_to(ROOT)}; commit it, then mkdocs build")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
