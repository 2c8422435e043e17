"""Inside the model on the site: chapter 03's live attention maps and chapter 04's next-token
lens, computed in the reader's browser by book/_static/gpt.js, against course_utils.interpret on
the very weights the page loads (`export.load_browser` of book/_static/models/news.js). And the
price of looking inside: chapter 08's generation speed with the gpt.js before and after.
"""

from __future__ import annotations

import statistics
import subprocess

import pytest
import test_browser_model as browser_model
import torch
from support import REPO, PageLog, artifact
from test_browser_model import LONG_PROMPT, close, open_page, ready

from course_utils import export, interpret
from course_utils.data import to_fullwidth

base = browser_model.base                 # the site over http.server and from disk (file://)

ATTENTION_PAGE = "nbs/03_attention.html"
LENS_PAGE = "nbs/04_gpt_block.html"
SPEED_PAGE = "nbs/08_sampling.html"
ATT, LENS = ".gpt-attention", ".gpt-lens"
BLOCK_TEXT = (LONG_PROMPT + "，向香港特别行政区同胞致以新年的祝福！")[:64]    # exactly block_size tokens
TEXTS = ["今天上午，国务院总理在北京会见了来访的客人",
         "经济发展,人民生活水平不断提高",              # "," is written full-width, as the page does
         BLOCK_TEXT]
K = 5


@pytest.fixture(scope="module")
def news():
    model, vocab, _ = export.load_browser(REPO / "book" / "_static" / "models" / "news.js")
    return model, vocab


def torch_ids(vocab, text, block_size):
    return interpret.check_text(vocab, to_fullwidth(text, vocab), block_size)


def state(tab, selector):
    return tab.eval_on_selector(selector, "el => el.gptDemo")


def redrawn(tab, selector, renders):
    """Wait until the box has drawn more than `renders` times; its state then."""
    tab.wait_for_function(f"() => document.querySelector('{selector}').gptDemo.renders > {renders}",
                          timeout=30_000)
    return state(tab, selector)


def type_text(tab, selector, text, button=False):
    """Type `text` into the box's entry, press Enter (or its Update button), wait for the new picture."""
    before = state(tab, selector)["renders"]
    entry = tab.locator(f"{selector} input[type=text]")
    entry.fill(text)
    if button:
        tab.click(f"{selector} .gpt-update")
    else:
        entry.press("Enter")
    return redrawn(tab, selector, before)


def type_live(tab, selector, more):
    """Type `more` at the end of the entry, key by key, with no Enter: the box redraws by itself."""
    before = state(tab, selector)
    entry = tab.locator(f"{selector} input[type=text]")
    entry.press("End")
    entry.press_sequentially(more, delay=30)
    after = redrawn(tab, selector, before["renders"])
    assert after["renders"] == before["renders"] + 1, "one redraw after the typing stopped"
    assert after["ids"][:len(before["ids"])] == before["ids"] and len(after["ids"]) == len(before["ids"]) + len(more)
    return after


def choose(tab, selector, name, value):
    before = state(tab, selector)["renders"]
    tab.select_option(f"{selector} select[name={name}]", str(value))
    return redrawn(tab, selector, before)


def max_diff(page, reference) -> float:
    return float((torch.tensor(page, dtype=torch.float64) - reference.double()).abs().max())


# ---------------------------------------------------------------------------- the same numbers


def test_attention_maps_equal_pytorch(browser, site_url, news):
    model, vocab = news
    cfg = model.config
    context, tab, log = open_page(browser, site_url[0], ATTENTION_PAGE, "attention_agreement")
    try:
        ready(tab, ATT)
        for text in TEXTS:
            ids = torch_ids(vocab, text, cfg.block_size)
            expected = interpret.attention_maps(model, ids)
            assert expected.shape == (cfg.n_layers, cfg.n_heads, len(ids), len(ids))
            page = tab.evaluate("ids => GPTBook.attentionMaps(GPTBook.model('news'), ids)"
                                ".map(l => l.map(h => h.map(r => Array.from(r))))", ids)
            diff = max_diff(page, expected)                      # every layer, head, query and key
            assert diff < 1e-5, f"{text}: GPTBook.attentionMaps differs from PyTorch by {diff:.2e}"
            shown = type_text(tab, ATT, text)                   # what the explorer computed from the entry
            assert shown["ids"] == ids, text
            diff = max_diff(shown["maps"], expected)
            assert diff < 1e-5, f"{text}: the explorer's maps differ from PyTorch by {diff:.2e}"
        assert len(ids) == cfg.block_size                        # the last text fills the block
    finally:
        close(context, log, tab, "attention_agreement")


def test_lens_equals_pytorch(browser, site_url, news):
    model, vocab = news
    cfg = model.config
    context, tab, log = open_page(browser, site_url[0], LENS_PAGE, "lens_agreement")
    try:
        ready(tab, LENS)
        for text in TEXTS:
            ids = torch_ids(vocab, text, cfg.block_size)
            probs, tokens = interpret.next_token_lens(model, ids, K)
            with torch.no_grad():
                own = torch.softmax(model(torch.tensor([ids]))[0][0, -1].float(), -1).topk(K)
            page = tab.evaluate(f"ids => GPTBook.lens(GPTBook.model('news'), ids, {K})", ids)
            shown = type_text(tab, LENS, text)
            assert shown["ids"] == ids, text
            for where, rows in (("GPTBook.lens", page), ("the lens box", shown["rows"])):
                assert len(rows) == cfg.n_layers, where
                assert [r["ids"] for r in rows] == tokens.tolist(), f"{text}: {where} ranks other tokens"
                diff = max_diff([r["probs"] for r in rows], probs)
                assert diff < 1e-5, f"{text}: {where}'s probabilities differ by {diff:.2e}"
                assert rows[-1]["ids"] == own.indices.tolist(), f"{text}: {where}'s last block is not the prediction"
                assert max_diff(rows[-1]["probs"], own.values) < 1e-5
    finally:
        close(context, log, tab, "lens_agreement")


# ---------------------------------------------------------------------------- the boxes move


def test_attention_explorer_redraws(browser, base):
    scheme = base.split(":")[0]
    name = f"attention_{scheme}"
    context, tab, log = open_page(browser, base, ATTENTION_PAGE, name)
    try:
        ready(tab, ATT)
        tab.locator(ATT).scroll_into_view_if_needed()
        cfg = tab.evaluate("() => GPTBook.model('news').config")
        first = state(tab, ATT)
        assert first["renders"] == 1 and first["layer"] == 0 and first["head"] == "all"   # data-layer, data-head
        assert len(first["maps"]) == cfg["n_layers"] and len(first["maps"][0]) == cfg["n_heads"]
        assert tab.locator(f"{ATT} svg.gpt-map").count() == cfg["n_heads"]      # all heads: small multiples
        text = "中国经济发展很快，人民生活不断改善"
        picture = tab.inner_html(f"{ATT} .gpt-maps")
        typed = type_text(tab, ATT, text)
        assert typed["ids"] != first["ids"] and tab.inner_html(f"{ATT} .gpt-maps") != picture
        T = len(text)
        assert len(typed["maps"][0][0]) == T and tab.locator(f"{ATT} svg.gpt-map").first \
            .locator("rect[data-q]").count() == T * (T + 1) // 2               # nothing above the diagonal
        keys = tab.locator(f"{ATT} svg.gpt-map").first.locator("text.gpt-key").all_text_contents()
        queries = tab.locator(f"{ATT} svg.gpt-map").first.locator("text.gpt-query").all_text_contents()
        assert "".join(keys) == "".join(queries) == text                        # the characters on both axes
        font = tab.eval_on_selector(f"{ATT} text.gpt-key", "t => getComputedStyle(t).fontFamily")
        assert "Book CJK" in font, f"the map's characters are not in the site's font stack: {font}"
        tab.screenshot(path=artifact("browser", f"{name}_typed.png"))

        picture = tab.inner_html(f"{ATT} .gpt-maps")
        layer = choose(tab, ATT, "layer", cfg["n_layers"] - 1)
        assert layer["layer"] == cfg["n_layers"] - 1 and layer["renders"] == typed["renders"] + 1
        assert tab.inner_html(f"{ATT} .gpt-maps") != picture, "another layer, the same picture"
        picture = tab.inner_html(f"{ATT} .gpt-maps")
        one = choose(tab, ATT, "head", 1)
        assert one["head"] == 1 and tab.locator(f"{ATT} svg.gpt-map").count() == 1
        assert tab.inner_html(f"{ATT} .gpt-maps") != picture
        cell = tab.locator(f"{ATT} rect[data-q='3'][data-k='2']")
        cell.hover()
        weight = one["maps"][cfg["n_layers"] - 1][1][3][2]
        readout = tab.inner_text(f"{ATT} .gpt-hover")
        assert f"weight {weight:.3f}" in readout and "head 1" in readout, readout
        assert f"{weight:.3f}" in cell.locator("title").text_content()
        tab.screenshot(path=artifact("browser", f"{name}_head.png"))
        picture = tab.inner_html(f"{ATT} .gpt-maps")
        live = type_live(tab, ATT, "。")
        assert live["head"] == 1 and tab.inner_html(f"{ATT} .gpt-maps") != picture, "typing did not redraw"
    finally:
        close(context, log, tab, name)


def test_lens_redraws(browser, base):
    scheme = base.split(":")[0]
    name = f"lens_{scheme}"
    context, tab, log = open_page(browser, base, LENS_PAGE, name)
    try:
        ready(tab, LENS)
        tab.locator(LENS).scroll_into_view_if_needed()
        n_layers = tab.evaluate("() => GPTBook.model('news').config.n_layers")
        first = state(tab, LENS)
        assert first["renders"] == 1 and len(first["rows"]) == n_layers
        assert all(len(r["ids"]) == K for r in first["rows"])                   # data-k
        rows = tab.locator(f"{LENS} tbody tr")
        assert rows.count() == n_layers and "prediction" in rows.last.inner_text()
        table = tab.inner_html(f"{LENS} .gpt-lens-box")
        typed = type_text(tab, LENS, "今天上午，国务院总理在北京会见了", button=True)
        assert typed["renders"] == 2 and typed["rows"] != first["rows"]
        assert tab.inner_html(f"{LENS} .gpt-lens-box") != table, "the table did not change"
        vocab = tab.evaluate("() => GPTBook.model('news').vocab.idx2token")
        shown = tab.locator(f"{LENS} tbody tr").last.locator(".gpt-token").all_text_contents()
        assert len(shown) == K and shown[0] == vocab[typed["rows"][-1]["ids"][0]]
        typed = type_text(tab, LENS, "中国人民")                               # Enter works too
        assert typed["renders"] == 3
        table = tab.inner_html(f"{LENS} .gpt-lens-box")
        live = type_live(tab, LENS, "的")                                       # and typing alone
        assert live["rows"] != typed["rows"] and tab.inner_html(f"{LENS} .gpt-lens-box") != table
        tab.screenshot(path=artifact("browser", f"{name}_typed.png"))
    finally:
        close(context, log, tab, name)


def test_inside_bad_input(browser, site_url):
    context, tab, log = open_page(browser, site_url[0], ATTENTION_PAGE, "inside_bad_input")
    cases = [("", "the text is empty"), ("   ", "the text is empty"), ("☃☃", "is in the vocabulary"),
             (BLOCK_TEXT + "！", "the text has 65 tokens, more than the model's block of 64: shorten it")]
    try:
        for page, box in ((ATTENTION_PAGE, ATT), (LENS_PAGE, LENS)):
            if page != ATTENTION_PAGE:
                tab.goto(f"{site_url[0]}/{page}", wait_until="load")
            ready(tab, box)
            good = state(tab, box)
            entry = tab.locator(f"{box} input[type=text]")
            for text, message in cases:
                entry.fill(text)
                entry.press("Enter")
                tab.wait_for_function(
                    f"() => document.querySelector('{box} .gpt-error').textContent.includes({message!r})",
                    timeout=10_000)
            now = state(tab, box)
            assert now["renders"] == good["renders"] and now["ids"] == good["ids"]    # the last picture stays
            assert tab.eval_on_selector(box, "el => el.dataset.state") == "ready"
            type_text(tab, box, "中国")
            assert tab.inner_text(f"{box} .gpt-error") == ""
            tab.screenshot(path=artifact("browser", f"inside_bad_input_{box[5:]}.png"))
        refused = tab.evaluate("() => [[], Array(65).fill(5)].map(ids => { try { "
                               "GPTBook.lens(GPTBook.model('news'), ids); } catch (e) { return e.message; } })")
        assert "at least one token" in refused[0] and "exceed block_size=64" in refused[1]
    finally:
        close(context, log, tab, "inside_bad_input")


# ---------------------------------------------------------------------------- the price: none


def baseline_gpt_js() -> tuple[str, str]:
    """(source, which) of the gpt.js to compare with: the last commit's when the working tree
    changed it, otherwise the one before the last commit that changed it."""
    path = "book/_static/gpt.js"

    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        head = git("show", f"HEAD:{path}")
        if head != (REPO / path).read_text(encoding="utf-8"):
            return head, "HEAD"
        last = git("log", "-n1", "--format=%h", "--", path).strip()
        return git("show", f"{last}^:{path}"), f"{last}^ (before its last change)"
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no earlier gpt.js to compare with: {err}")


SPEED_JS = """([ids, n]) => {
  const m = GPTBook.model('news'), t0 = performance.now();
  const fresh = GPTBook.generate(m, ids, n, {temperature: 0.8}, {seed: 0});
  return {rate: fresh.length / ((performance.now() - t0) / 1000), fresh};
}"""


def test_generation_speed_unchanged(browser, site_url, news, capsys):
    """Chapter 08's page, in two tabs of one browser: one with the gpt.js before this change
    (served in place of the file), one with today's; 300 tokens each, interleaved, 9 rounds.
    The medians are printed, not asserted (the book prints speed-ups); the text must agree."""
    old_js, which = baseline_gpt_js()
    _, vocab = news
    ids = vocab.encode("中国人民")
    tabs, rates, served = {}, {"before": [], "after": []}, []
    try:
        for label in ("before", "after"):
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            tab = context.new_page()
            log = PageLog(tab, site_url[0])
            if label == "before":
                def serve_old(route):
                    served.append(route.request.url)
                    route.fulfill(status=200, body=old_js, content_type="application/javascript; charset=utf-8")

                tab.route("**/_static/gpt.js", serve_old)
            tab.goto(f"{site_url[0]}/{SPEED_PAGE}", wait_until="load")
            tabs[label] = (context, tab, log)
            ready(tab, ".gpt-explorer")
        assert served, "the earlier gpt.js was not served"
        texts = {}
        for r in range(10):                                 # round 0 warms the JIT up, not counted
            for label in (("before", "after") if r % 2 else ("after", "before")):
                out = tabs[label][1].evaluate(SPEED_JS, [ids, 300])
                texts[label] = out["fresh"]
                if r:
                    rates[label].append(out["rate"])
        assert texts["before"] == texts["after"], "the same seed gave another text"
        before, after = statistics.median(rates["before"]), statistics.median(rates["after"])
        report = (f"chapter 08's generation, 300 tokens x 9 rounds, interleaved in one Chromium: "
                  f"gpt.js of {which} {before:.0f} tokens/s, this gpt.js {after:.0f} tokens/s "
                  f"(median; after/before = {after / before:.3f})\n"
                  f"  before: {', '.join(f'{x:.0f}' for x in rates['before'])}\n"
                  f"  after:  {', '.join(f'{x:.0f}' for x in rates['after'])}\n")
        artifact("browser", "speed.txt").write_text(report, encoding="utf-8")
        with capsys.disabled():
            print("\n" + report, end="")
    finally:
        for label, (context, tab, log) in tabs.items():
            close(context, log, tab, f"speed_{label}")
