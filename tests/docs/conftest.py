"""The documentation site, built once per test session, served locally and opened in Chromium.

``built_site`` runs ``mkdocs build --strict`` (the command CI runs) into a temporary folder and
skips where the docs extra is not installed. ``served_site`` serves it over HTTP on localhost
(the theme's search runs in a web worker, which a ``file://`` page may not start) and injects a
watcher at the top of every page's ``<head>`` that counts console errors, script errors and
resources that fail to load. The ``browser`` fixture (tests/conftest.py) runs headless Chromium.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Python modules the site's build needs (the ``docs`` extra).
DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python",
                "mkdocs_click")

#: injected at the top of <head>: counts console errors, script errors and resources that fail to
#: load (error events do not bubble, so they are caught on the capture phase)
WATCH = ("<script>window.__errors=[];const e=console.error.bind(console);"
         "console.error=(...a)=>{window.__errors.push(a.join(' '));e(...a)};"
         "window.addEventListener('error',ev=>window.__errors.push(String(ev.message||"
         "(ev.target&&(ev.target.src||ev.target.href||ev.target.tagName)))),true);</script>")
#: injected before </body>: once the page has loaded, writes what the test reads into the DOM
PROBE = ("<script>window.addEventListener('load',()=>setTimeout(()=>{"
         "const imgs=[...document.images];"
         "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
         "document.body.setAttribute('data-images',ok+'/'+imgs.length);"
         "document.body.setAttribute('data-errors',window.__errors.length);"
         "document.body.setAttribute('data-error-text',window.__errors.join(' | '));"
         "},500));</script>")


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as CI builds it: ``mkdocs build --strict`` into a temporary folder.

    ``.ci/run`` builds the site with that very command just before the tests and names the
    folder in ``TAILGUARD_DOCS_SITE``; the tests then open that build instead of repeating it.
    """
    prebuilt = os.environ.get("TAILGUARD_DOCS_SITE")
    if prebuilt and (Path(prebuilt) / "index.html").is_file():
        return Path(prebuilt)
    for module in DOCS_MODULES:
        if importlib.util.find_spec(module.split(".")[0]) is None or (
                "." in module and importlib.util.find_spec(module) is None):
            pytest.skip(f"the docs tools are not installed ({module}): "
                        "pip install -c constraints.txt -e '.[docs]'")
    site = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return site


class _WatchedPages(http.server.SimpleHTTPRequestHandler):
    """Serves the site; every HTML page gets the watcher and the probe."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            super().do_GET()
            return
        page = path.read_text(encoding="utf-8")
        body = (page.replace("<head>", "<head>" + WATCH, 1)
                .replace("</body>", PROBE + "</body>", 1)).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def served_site(built_site: Path) -> Iterator[str]:
    """The built site at ``http://127.0.0.1:PORT/`` for the session."""
    handler = functools.partial(_WatchedPages, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
