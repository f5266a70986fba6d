"""The documentation site builds with ``mkdocs build --strict`` and renders in a real browser.

The build itself is the check that no internal link, anchor or API reference is broken (strict
mode turns each into an error). The browser opens the home page and one API page and checks
what a reader sees: the title, the navigation, every image loaded, no console error. The other
tests check that generated pages say what they are generated from.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

import pytest

ROOT = Path(__file__).resolve().parents[2]

Browser = Callable[..., subprocess.CompletedProcess[str]]
#: (page, its <title>, text the page must show)
PAGES = [
    ("", "tailguard", "Where to go"),
    ("reference/api/mixers/", "mixers - tailguard", "load_mixture"),
]
#: links the navigation must hold on every page
NAV_LINKS = ("getting-started/", "guides/tagging/", "guides/mixing/", "guides/collapse/",
             "reference/cli/", "reference/api/", "results/")


@pytest.mark.parametrize(("page", "title", "text"), PAGES)
def test_a_page_renders_in_a_headless_browser(page: str, title: str, text: str, browser: Browser,
                                              served_site: str) -> None:
    done = browser("--virtual-time-budget=8000", "--dump-dom", served_site + page)
    dom = done.stdout
    match = re.search(r'data-errors="(\d+)"', dom)
    assert match, f"the page did not finish loading: {done.stderr[-2000:]}"
    errors = re.search(r'data-error-text="([^"]*)"', dom)
    assert match.group(1) == "0", html.unescape(errors.group(1) if errors else "")
    assert re.search(rf"<title>{re.escape(title)}</title>", dom)
    nav = dom[dom.index('class="md-nav md-nav--primary"'):]
    targets = {urljoin(served_site + page, href) for href in re.findall(r'href="([^"#]*)"', nav)}
    for link in NAV_LINKS:
        assert served_site + link in targets, link
    assert text in dom
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
    assert loaded == total
    if page == "":
        assert total >= 1  # the lead figure
    else:  # mkdocstrings rendered the module: functions with signatures, not a bare directive
        assert 'class="doc doc-object doc-function"' in dom
        assert ":::" not in dom


def test_the_home_page_is_drawn(browser: Browser, served_site: str, tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    shot = tmp_path / "home.png"
    browser(f"--screenshot={shot}", "--window-size=1280,900", served_site)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with image.open(shot) as png:
        assert len(png.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 16


def test_the_command_line_reference_has_every_command(built_site: Path) -> None:
    import click

    from cli import main

    def names(group: click.Group, prefix: str) -> list[str]:
        found = []
        for name, command in group.commands.items():
            found.append(f"{prefix}-{name}")
            if isinstance(command, click.Group):
                found += names(command, f"{prefix}-{name}")
        return found

    page = (built_site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for anchor in names(main, "tailguard"):
        assert f'id="{anchor}"' in page, anchor
    assert "Sentinel.UNSET" not in page


def test_results_pages_name_the_command_and_commit(built_site: Path) -> None:
    for source in sorted((ROOT / "docs" / "results").glob("*/source.json")):
        meta = json.loads(source.read_text(encoding="utf-8"))
        page = (built_site / "results" / source.parent.name / "index.html").read_text("utf-8")
        text = html.unescape(re.sub(r"<[^>]+>", "", page))  # code is highlighted token by token
        assert meta["commands"][0] in text, source
        if (source.parent / "report.md").exists():
            assert f"at commit {meta['commit']}" in text
        else:
            assert "Not committed yet" in text


def test_measured_tables_are_read_from_their_files(built_site: Path) -> None:
    report = json.loads((ROOT / "provenance/detectors/default/training_report.json").read_text())
    lodo = json.loads((ROOT / "benchmarks/results/bench_detect_lodo.json").read_text())
    page = (built_site / "guides" / "detectors" / "index.html").read_text(encoding="utf-8")
    assert f"{report['calibration']['auroc']:.3f}" in page
    for held_out, result in lodo["results"].items():
        assert f"{result['supervised']['auroc']:.3f}" in page, held_out
        promise = lodo["per_file"][held_out]["threshold_promise"]["expected"]
        assert f"{promise['mean_fpr']:.4f} / {promise['fpr_p90']:.3f}" in page, held_out
    benchmarks = (built_site / "results" / "benchmarks" / "index.html").read_text("utf-8")
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert f"benchmarks/{path.stem}.py" in benchmarks
