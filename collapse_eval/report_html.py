"""The report's Markdown as one self-contained HTML page, with a table of contents.

The page must open offline from anywhere (images are data URIs) and be navigable: a benchmark
report runs to dozens of figures, so every section heading gets an id and the opening paragraph
is followed by a list of links to them.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_IMAGE = re.compile(r"^!\[(.*)\]\((.*)\)$")
_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
          "line-height:1.45}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid "
          "#ccc;padding:.3em .6em;text-align:left}img{max-width:100%}code{background:#f3f3f3;"
          "padding:0 .2em}nav ol{columns:2;margin:.5em 0}nav{border:1px solid #ddd;"
          "padding:.3em 1em;margin:1em 0;background:#fafafa}")


def section_id(title: str) -> str:
    """A stable HTML id for a section title ('Against theory and the paper' -> 'against-...')."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def section_titles(md: list[str]) -> list[str]:
    """The level-2 headings, in order: the sections the table of contents links to."""
    return [line[3:].strip() for line in md if line.startswith("## ")]


def toc_html(titles: list[str]) -> str:
    """A table of contents: one link per section, to the id :func:`section_id` gives it."""
    items = "".join(f"<li><a href='#{section_id(t)}'>{html.escape(t)}</a></li>" for t in titles)
    return f"<nav id='contents'><strong>Contents</strong><ol>{items}</ol></nav>"


def inline(text: str) -> str:
    """Escape text and render the inline Markdown the report writes: **bold** and `code`."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _table(rows: list[list[str]]) -> list[str]:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in rows[1:]]
    return out + ["</table>"]


def _heading(line: str) -> str:
    level = len(line) - len(line.lstrip("#"))
    title = line[level:].strip()
    anchor = f" id='{section_id(title)}'" if level == 2 else ""
    return f"<h{level}{anchor}>{html.escape(title)}</h{level}>"


def _image(alt: str, src: str, run_dir: Path) -> str:
    data = base64.b64encode((run_dir / src).read_bytes()).decode()
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>"


def to_html(md: list[str], run_dir: Path) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) to standalone HTML; the
    table of contents goes before the first section, below the title and opening paragraph."""
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>tailguard report</title>",
           f"<style>{_STYLE}</style></head><body>"]
    toc_pending = True
    i = 0
    while i < len(md):
        line = md[i]
        if line.startswith("|"):
            rows = []
            while i < len(md) and md[i].startswith("|"):
                if not md[i].startswith("|---"):
                    rows.append([c.strip() for c in md[i].strip("|").split("|")])
                i += 1
            out += _table(rows)
            continue
        match = _IMAGE.match(line)
        if line.startswith("## ") and toc_pending:
            out.append(toc_html(section_titles(md)))
            toc_pending = False
        if line.startswith("#"):
            out.append(_heading(line))
        elif match:
            out.append(_image(match.group(1), match.group(2), run_dir))
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out)
