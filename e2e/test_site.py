"""The static site as a reader sees it: every page of _toc.yml opened in Chromium.

Each page must render (title, non-empty article), load every image, show the figures its
source has, typeset its math (MathJax ships with the site: no CDN), link only to pages that
exist, and log no console error, uncaught exception or failed request. Nothing is fetched
from outside 127.0.0.1. A full-page screenshot of each page goes to e2e/artifacts/site/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from support import REPO, PageLog, artifact

# Errors a page may log without failing, each as (pattern, the reason it is harmless). Keep it
# empty if you can. (Sphinx 7.4 used to emit sphinx-thebe's inline script twice, which threw
# "Identifier 'THEBE_JS_URL' has already been declared" on every page: book/_ext/book_offline.py
# now drops Thebe's scripts, which the book does not use.)
ALLOWED_ERRORS: list[tuple[re.Pattern, str]] = []

IMAGE_MIME = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
REMOVED_TAGS = {"remove-cell", "remove_cell", "remove-output", "remove_output"}
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(|```\{(figure|image)\}|:::\{(figure|image)\}|<img\s")


def toc_pages() -> list[str]:
    """The pages of _toc.yml in reading order: the root, then every file of every part."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


def expected_figures(page: str) -> int:
    """How many figures the page's source shows: image outputs plus images in markdown."""
    nb = REPO / f"{page}.ipynb"
    if nb.exists():
        count = 0
        for cell in json.loads(nb.read_text())["cells"]:
            tags = set(cell.get("metadata", {}).get("tags", []))
            if tags & REMOVED_TAGS:
                continue
            if cell["cell_type"] == "markdown":
                count += len(MARKDOWN_IMAGE.findall("".join(cell["source"])))
            for out in cell.get("outputs", []):
                count += any(m in out.get("data", {}) for m in IMAGE_MIME)
        return count
    md = REPO / f"{page}.md"
    return len(MARKDOWN_IMAGE.findall(md.read_text())) if md.exists() else 0


def unexpected(messages: list[str]) -> list[str]:
    return [m for m in messages if not any(p.search(m.split(" [")[0]) for p, _ in ALLOWED_ERRORS)]


PAGE_REPORT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const article = document.querySelector('main article') || document.querySelector('main');
  const images = [...document.images];
  await Promise.all(images.map(img => { img.loading = 'eager';
    return img.decode().catch(() => null); }));
  const math = [...document.querySelectorAll('.math')];
  return {
    title: document.title,
    h1: (article && article.querySelector('h1')) ? article.querySelector('h1').innerText.trim() : '',
    text_length: article ? article.innerText.trim().length : 0,
    images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth,
                                in_article: !!(article && article.contains(img))})),
    mathjax: (document.querySelector('script[src*="mathjax" i]') || {}).src || null,
    math: math.length,
    typeset: math.filter(m => m.querySelector('mjx-container')).length,
    math_errors: [...document.querySelectorAll('mjx-merror')].map(e =>
        e.getAttribute('data-mjx-error') || e.textContent),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  };
}"""


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders(page, site, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    log = PageLog(tab, site.url)
    try:
        response = tab.goto(f"{site.url}/{page}.html", wait_until="networkidle")
        assert response is not None and response.ok, f"{page}.html: HTTP {response and response.status}"
        report = tab.evaluate(PAGE_REPORT)
        tab.wait_for_load_state("networkidle")
        tab.screenshot(path=artifact("site", f"{page.replace('/', '__')}.png"), full_page=True)
    finally:
        log.dump(artifact("site", f"{page.replace('/', '__')}.log.json"))
        context.close()

    # It renders: a title, a heading and some content.
    assert report["title"].strip(), f"{page}: empty <title>"
    assert report["h1"], f"{page}: no <h1> in the article"
    assert report["text_length"] > 200, f"{page}: article almost empty ({report['text_length']} chars)"

    # Every image loaded, and the page shows (at least) the figures its source has.
    broken = [img["src"][:120] for img in report["images"] if img["width"] == 0]
    assert not broken, f"{page}: images that did not load: {broken}"
    shown = sum(img["in_article"] for img in report["images"])
    wanted = expected_figures(page)
    assert shown >= wanted, (f"{page}: the source has {wanted} figures, the page shows {shown}"
                             f"{site.stale_hint(page)}")

    # Math is typeset by the MathJax that ships with the site.
    if report["math"]:
        assert report["mathjax"] and report["mathjax"].startswith(site.url), (
            f"{page}: MathJax comes from {report['mathjax']}, not from the site itself "
            "(book/_config.yml loads the sphinx-mathjax-offline extension; rebuild with make book)")
        assert report["typeset"] == report["math"], (
            f"{page}: MathJax typeset {report['typeset']} of {report['math']} formulas")
        assert not report["math_errors"], f"{page}: TeX errors: {report['math_errors']}"

    # Links inside the site point at files that exist.
    missing = sorted({link for link in report["links"] if link.startswith(site.url)
                      and not site.exists(link)})
    assert not missing, f"{page}: links to missing pages: {missing}"

    # No errors in the console, no uncaught exceptions, no failed or outside requests.
    assert not log.outside, f"{page}: requests outside 127.0.0.1: {log.outside}"
    assert not log.failed, f"{page}: failed requests: {log.failed}"
    assert not unexpected(log.page_errors), f"{page}: uncaught exceptions: {log.page_errors}"
    assert not unexpected(log.console), f"{page}: console errors: {log.console}"


def test_sidebar_links_every_chapter(site, browser):
    """A reader finds every chapter from the first page's navigation sidebar."""
    context = browser.new_context()
    tab = context.new_page()
    try:
        tab.goto(f"{site.url}/index.html", wait_until="networkidle")  # redirects to the root
        hrefs = tab.eval_on_selector_all("nav.bd-docs-nav a[href]", "as => as.map(a => a.href)")
    finally:
        context.close()
    linked = {urlparse(h).path.lstrip("/").removesuffix(".html") for h in hrefs}
    chapters = toc_pages()[1:]
    assert [p for p in chapters if p not in linked] == [], f"sidebar links: {sorted(linked)}"


class Site:
    def __init__(self, url: str, root: Path):
        self.url, self.root = url, root

    def stale_hint(self, page: str) -> str:
        html = self.root / f"{page}.html"
        sources = [p for p in (REPO / f"{page}.ipynb", REPO / f"{page}.md") if p.exists()]
        if html.exists() and any(p.stat().st_mtime > html.stat().st_mtime for p in sources):
            return " (the source is newer than the site: rebuild it with `make book`)"
        return ""

    def exists(self, link: str) -> bool:
        path = unquote(urlparse(link).path).lstrip("/")
        target = self.root / path
        return target.is_file() or (target / "index.html").is_file()


@pytest.fixture(scope="module")
def site(site_url):
    url, root = site_url
    return Site(url, root)
