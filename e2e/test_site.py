"""The static site as a reader sees it: every page of _toc.yml opened in Chromium.

Each page must render (title, non-empty article), load every image, show the figures its
source has, typeset its math (MathJax ships with the site: no CDN), link only to pages that
exist, and log no console error, uncaught exception or failed request. Nothing is fetched
from outside 127.0.0.1. A full-page screenshot of each page goes to e2e/artifacts/site/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from support import CHROMIUM, CHROMIUM_ARGS, REPO, PageLog, artifact, system_fontconfig_env

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


# ---------------------------------------------------------------------------- the CJK font

# The site ships its own CJK font (tools/cjk_font.py: a subset of Noto Sans CJK SC, "Book CJK"
# in book/_static/cjk-font.css), so a reader without Chinese system fonts sees Chinese, not empty
# boxes. These tests use a second Chromium that sees only the system's fonts (the `browser`
# fixture lends Chromium mplfonts' fonts, which hides a missing web font).
CJK_FAMILY = "Book CJK"
CJK_PAGE = "nbs/01_vocab.html"
CJK_DEMO_PAGE = "nbs/08_sampling.html"
CJK_FONT = Path("_static") / "fonts" / "book-cjk.woff2"
CJK_TEXT = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")

FONT_REPORT = """async ([family, sample]) => {
  await document.fonts.ready;
  const faces = [...document.fonts].filter(f => f.family.replace(/["']/g, '') === family);
  // The face is fetched on demand (unicode-range): wait for it if it is still on its way.
  await Promise.all(faces.filter(f => f.status === 'loading').map(f => f.loaded.catch(() => null)));
  const nav = [...document.querySelectorAll('nav.bd-docs-nav a')].find(a => /[\\u4e00-\\u9fff]/.test(a.innerText));
  if (nav) nav.dataset.cjkProbe = 'nav';
  const h1 = document.querySelector('main article h1');
  if (h1) h1.dataset.cjkProbe = 'h1';
  const pre = [...document.querySelectorAll('main article pre')].find(p => /[\\u4e00-\\u9fff]/.test(p.innerText));
  if (pre) pre.dataset.cjkProbe = 'pre';
  return {
    faces: faces.map(f => ({status: f.status, family: f.family})),
    check: document.fonts.check(`16px "${family}"`, sample),
    stacks: {body: getComputedStyle(document.body).fontFamily,
             nav: nav ? getComputedStyle(nav).fontFamily : null,
             h1: h1 ? getComputedStyle(h1).fontFamily : null,
             pre: pre ? getComputedStyle(pre).fontFamily : null},
    nav: nav ? nav.innerText : null,
    probes: {nav: nav ? nav.textContent : '', h1: h1 ? h1.textContent : '', pre: pre ? pre.textContent : ''},
    text: document.body.innerText,
  };
}"""


def system_has_cjk(env: dict) -> bool:
    """Whether this machine's own fonts (mplfonts' left out) can draw Chinese: then the page may
    rightly use them, and only the loading of the site's font is checked."""
    if not shutil.which("fc-list"):
        return False
    out = subprocess.run(["fc-list", ":lang=zh", "file"], env=env, capture_output=True, text=True)
    return bool(out.stdout.strip())


@pytest.fixture(scope="module")
def bare_browser(browser, tmp_path_factory):
    """A second Chromium, from the same Playwright, that sees only the system's fonts."""
    env = dict(os.environ, **system_fontconfig_env(tmp_path_factory.mktemp("bare-chromium")))
    bare = browser.browser_type.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                       headless=True, env=env)
    bare.system_has_cjk = system_has_cjk(env)
    yield bare
    bare.close()


def platform_fonts(cdp, selector: str) -> list[dict]:
    """The fonts Chromium actually drew the text inside `selector` with (DevTools' "Rendered
    Fonts"): [{familyName, isCustomFont, glyphCount}, ...]."""
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    assert node, f"no element {selector}"
    return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]


def assert_cjk_drawn_by_site_font(fonts: list[dict], text: str, where: str) -> None:
    """Every CJK character of `text` was drawn with the site's font (a custom font), and Latin
    letters, if any, with a system font (the theme's stack comes first)."""
    custom = sum(f["glyphCount"] for f in fonts if f["isCustomFont"])
    cjk = len(CJK_TEXT.findall(text))
    assert cjk and custom >= cjk, (
        f"{where}: {cjk} CJK characters in {text[:60]!r}, but only {custom} glyphs came from the "
        f"site's font; Chromium drew it with {fonts}")
    if re.search(r"[A-Za-z]", text):
        assert any(not f["isCustomFont"] for f in fonts), (
            f"{where}: the Latin text of {text[:60]!r} should keep the theme's font: {fonts}")


def shipped_cmap(folder: Path) -> set[int]:
    from fontTools.ttLib import TTFont

    path = folder / CJK_FONT
    assert path.is_file(), f"the site has no {CJK_FONT}: rebuild it with `make book`"
    return set(TTFont(str(path)).getBestCmap())


@pytest.mark.parametrize("how", ["http", "file"])
def test_chinese_uses_the_sites_font(how, site_url, bare_browser):
    """Chapter 01 in a Chromium without CJK fonts, over HTTP and opened from disk: the sidebar,
    the heading and the outputs draw their Chinese with the site's "Book CJK" subset."""
    url, folder = site_url
    base = url if how == "http" else folder.resolve().as_uri()
    context = bare_browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    log = PageLog(tab, base)
    name = f"cjk-font-{how}"
    try:
        response = tab.goto(f"{base}/{CJK_PAGE}", wait_until="load")
        assert response is None or response.ok, f"{CJK_PAGE}: HTTP {response.status}"
        report = tab.evaluate(FONT_REPORT, [CJK_FAMILY, "词表"])
        cdp = context.new_cdp_session(tab)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        fonts = {probe: platform_fonts(cdp, f'[data-cjk-probe="{probe}"]')
                 for probe in ("nav", "h1", "pre")}
        tab.screenshot(path=artifact("site", f"{name}.png"), full_page=False)
    finally:
        log.dump(artifact("site", f"{name}.log.json"))
        context.close()

    # The stylesheet declares the face, and the page fetched and decoded it.
    assert report["faces"], f"no @font-face for {CJK_FAMILY!r}: is _static/cjk-font.css linked?"
    assert [f["status"] for f in report["faces"]] == ["loaded"], f"the font: {report['faces']}"
    assert report["check"], f'document.fonts.check(\'16px "{CJK_FAMILY}"\', "词表") is false'
    for where, stack in report["stacks"].items():
        assert stack and CJK_FAMILY in stack, f"{where}: font-family {stack!r} lacks {CJK_FAMILY!r}"
        assert not stack.strip().startswith(f'"{CJK_FAMILY}"'), f"{where}: {stack!r}: not a fallback"
    assert report["nav"] and "词表" in report["nav"], f"sidebar entry: {report['nav']!r}"

    # Every CJK character on the page has a glyph in the shipped font...
    cmap = shipped_cmap(folder)
    lacking = sorted({c for c in CJK_TEXT.findall(report["text"]) if ord(c) not in cmap})
    assert not lacking, f"characters on the page the site's font lacks: {''.join(lacking)}"
    # ...and Chromium drew them with it (unless this machine's own fonts can draw Chinese).
    if not bare_browser.system_has_cjk:
        for probe, used in fonts.items():
            assert_cjk_drawn_by_site_font(used, report["probes"][probe], f"{CJK_PAGE} {probe}")

    assert not log.outside, f"requests outside the site: {log.outside}"
    assert not log.failed, f"failed requests: {log.failed}"
    assert not unexpected(log.page_errors), f"uncaught exceptions: {log.page_errors}"
    assert not unexpected(log.console), f"console errors: {log.console}"


def test_demo_text_uses_the_sites_font(site_url, bare_browser):
    """Chapter 08's live demo prints characters from the model's 4,690-token vocabulary: the site's
    font has every one of them, and the generated sample is drawn with it."""
    from course_utils import export

    url, folder = site_url
    cmap = shipped_cmap(folder)
    for model in ("news", "dialogue"):
        path = folder / "_static" / "models" / f"{model}.js"
        vocab = export.load_browser(path)[1].idx2token
        lacking = sorted({c for tok in vocab for c in tok
                          if ord(c) > 0x7F and ord(c) not in cmap})
        assert not lacking, f"{model}: vocabulary characters the site's font lacks: {lacking}"

    context = bare_browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    log = PageLog(tab, url)
    try:
        tab.goto(f"{url}/{CJK_DEMO_PAGE}", wait_until="load")
        tab.wait_for_selector(".gpt-explorer[data-state]", timeout=60_000)
        assert tab.eval_on_selector(".gpt-explorer", "el => el.dataset.state") == "ready"
        report = tab.evaluate(FONT_REPORT, [CJK_FAMILY, "中国"])
        sample = tab.inner_text(".gpt-explorer .gpt-sample")
        cdp = context.new_cdp_session(tab)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        used = platform_fonts(cdp, ".gpt-explorer .gpt-sample")
        tab.locator(".gpt-explorer").screenshot(path=artifact("site", "cjk-font-demo.png"))
    finally:
        log.dump(artifact("site", "cjk-font-demo.log.json"))
        context.close()

    assert [f["status"] for f in report["faces"]] == ["loaded"], f"the font: {report['faces']}"
    lacking = sorted({c for c in CJK_TEXT.findall(sample) if ord(c) not in cmap})
    assert not lacking, f"the sample {sample!r} has characters the site's font lacks: {lacking}"
    if not bare_browser.system_has_cjk:
        assert_cjk_drawn_by_site_font(used, sample, f"{CJK_DEMO_PAGE} sample")
    assert not log.failed and not log.outside, f"requests: {log.failed + log.outside}"
    assert not unexpected(log.page_errors), f"uncaught exceptions: {log.page_errors}"
