"""Open every page of the built book in headless Chromium, offline, and check what a reader sees.

Usage (after ``make book``)::

    python scripts/browser_check.py [_build/html] [--screenshots _build/screenshots]

The script serves the built book on 127.0.0.1 (a random free port), starts Debian's Chromium through
Playwright (``executable_path=/usr/bin/chromium``, or ``$CHROMIUM``) with every host name except
127.0.0.1 resolving to nothing, so a page that needs the internet fails here. For every page it
asserts:

* no JavaScript-visible request left 127.0.0.1 (all blocked requests are listed);
* math is rendered: no raw TeX delimiters ``\\(``, ``\\[`` or ``$$`` left in the text, and wherever
  the page has math, MathJax output elements (``mjx-container``) are present;
* no ``Traceback`` in the page (an executed cell that raised);
* each chapter (``notebooks/*.html``) shows its figures: at least one image, and every image loaded;
* where a page embeds ipywidgets state, the widget manager rendered the controls;
* the results page's claims table has one row per chapter of ``book/claims.yml``.

A full-page screenshot of every page goes to the screenshots folder (default ``_build/screenshots``).
Exit status 1 lists every failed check.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import socketserver
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import book_results  # noqa: E402

OFFLINE_RULES = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
RAW_TEX = ("\\(", "\\[", "$$")
# rows of the results page's claims table (the table whose header names the claim and this build)
CLAIMS_ROWS_JS = """() => {
  const table = Array.from(document.querySelectorAll("table")).find(
    (t) => t.innerText.includes("claim") && t.innerText.includes("this build"));
  return table ? table.querySelectorAll("tbody tr").length : -1;
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _serve(folder: Path) -> tuple[socketserver.TCPServer, int]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _pages(html: Path) -> list[Path]:
    pages = [html / "index.html"]
    pages += sorted((html / "book").glob("*.html")) + sorted((html / "notebooks").glob("*.html"))
    return [p for p in pages if p.is_file()]


def check_page(page: Any, url: str, rel: str, n_chapters: int) -> list[str]:
    """Load ``url`` in ``page`` and return the failed checks (empty when all pass)."""
    problems: list[str] = []
    page.goto(url, wait_until="load", timeout=120_000)
    # MathJax typesets asynchronously; wait for it when the page has math
    has_math = page.locator("span.math, div.math").count() > 0
    if has_math:
        try:
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                " && document.querySelectorAll('mjx-container').length > 0",
                timeout=60_000,
            )
        except Exception:  # reported below as missing MathJax output
            pass
    page.wait_for_timeout(500)
    text = page.inner_text("body")
    if has_math and page.locator("mjx-container").count() == 0:
        problems.append(f"{rel}: math present but no MathJax output (mjx-container)")
    raw = [d for d in RAW_TEX if d in text]
    if raw:
        problems.append(f"{rel}: raw TeX left in the page ({', '.join(raw)})")
    if "Traceback" in text:
        problems.append(f"{rel}: 'Traceback' in the page")
    if rel.startswith("notebooks/"):
        images = page.locator("div.cell_output img")
        if images.count() == 0:
            problems.append(f"{rel}: a chapter without figures")
        broken = page.evaluate(
            "() => Array.from(document.querySelectorAll('img'))"
            ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'))"
        )
        if broken:
            problems.append(f"{rel}: images that did not load: {broken[:5]}")
    if page.locator("script[type='application/vnd.jupyter.widget-view+json']").count() > 0:
        try:
            page.wait_for_selector(
                ".widget-slider, .widget-dropdown, .jupyter-widgets", state="attached", timeout=60_000
            )
        except Exception:
            problems.append(f"{rel}: widget state embedded but no widget rendered")
    if rel == "book/results.html":
        rows = page.evaluate(CLAIMS_ROWS_JS)
        if rows != n_chapters:
            problems.append(f"{rel}: claims table has {rows} rows, expected one per chapter ({n_chapters})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", default=str(ROOT / "_build" / "screenshots"))
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    html, shots = Path(args.html), Path(args.screenshots)
    if not (html / "index.html").is_file():
        print(f"no built book in {html} (run make book first)")
        return 1
    shots.mkdir(parents=True, exist_ok=True)
    n_chapters = len(book_results.load_chapters())
    server, port = _serve(html)
    problems: list[str] = []
    external: list[str] = []
    js_errors: list[str] = []
    current = [""]
    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=executable,
                args=[f"--host-resolver-rules={OFFLINE_RULES}", "--no-sandbox", "--disable-gpu"],
            )
            context = browser.new_context(viewport={"width": args.width, "height": 900})
            context.on(
                "request",
                lambda r: None if r.url.startswith(f"http://127.0.0.1:{port}/") else external.append(r.url),
            )
            page = context.new_page()
            page.on("pageerror", lambda e: js_errors.append(f"{current[0]}: {e}"))
            for path in _pages(html):
                rel = path.relative_to(html).as_posix()
                current[0] = rel
                url = f"http://127.0.0.1:{port}/{rel}"
                found = check_page(page, url, rel, n_chapters)
                problems += found
                shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=True, timeout=300_000)  # long pages, slow CI
                print(f"{'ok  ' if not found else 'FAIL'} {rel}")
            browser.close()
    finally:
        server.shutdown()
    external = [u for u in external if not u.startswith(("data:", "blob:", "about:"))]
    if external:
        problems.append("requests outside the book (blocked): " + ", ".join(sorted(set(external))[:10]))
    # sphinx-book-theme declares THEBE_JS_URL twice on pages with code cells: its bug, harmless
    problems += [f"JavaScript error on {e}" for e in js_errors if "THEBE_JS_URL" not in e]
    print(f"screenshots in {shots}")
    if problems:
        print("\n".join(["browser check failed:", *problems]))
        return 1
    print("browser check passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
