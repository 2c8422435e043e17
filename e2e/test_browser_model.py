"""The GPT that runs in the reader's browser (book/_static/gpt.js) against PyTorch, and the
live demos of chapters 08, 11 and 14 on the built site, opened over HTTP and straight from disk.

PyTorch runs the very weights the page loads: `course_utils.export.load_browser` reads the
committed model file (book/_static/models/*.js) the page reads.
"""

from __future__ import annotations

import time

import pytest
import torch
from support import REPO, PageLog, artifact

from course_utils import export, preference, sampling
from course_utils.data import to_fullwidth
from course_utils.vocab import SEP

EXPLORER_PAGE = "nbs/08_sampling.html"
CHAT_PAGE = "nbs/11_finetune_dialogue.html"
COMPARE_PAGE = "nbs/14_preference_tuning.html"
COMPARE_PROMPTS = ["这本书", "这家酒店的服务", "房间不错,"]   # "," is written full-width, as the page does
MODELS = REPO / "book" / "_static" / "models"
PROMPTS = ["中国人民", "今天上午，国务院总理在北京会见了来访的客人", "☃经济"]
LONG_PROMPT = "一九九八年新年钟声即将敲响，人类社会的发展又将翻开新的一页。在这辞旧迎新的美好时刻，我向全国各族人民"
SETTINGS = [dict(temperature=1.0), dict(temperature=0.7, top_k=40, top_p=0.9),
            dict(temperature=1.3, top_p=0.5), dict(temperature=0.5, top_k=5), dict(temperature=0)]


@pytest.fixture(scope="module")
def news():
    model, vocab, meta = export.load_browser(REPO / "book" / "_static" / "models" / "news.js")
    return model, vocab


@pytest.fixture(params=["http", "file"])
def base(request, site_url):
    """The site's address: through http.server, or the folder opened as file:// (as the README says)."""
    url, folder = site_url
    return url if request.param == "http" else folder.resolve().as_uri()


def open_page(browser, base, page_path, name):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    log = PageLog(tab, base)
    tab.goto(f"{base}/{page_path}", wait_until="load")
    return context, tab, log


def ready(tab, selector, timeout_ms=60_000):
    tab.wait_for_selector(f"{selector}[data-state]", timeout=timeout_ms)
    state = tab.eval_on_selector(selector, "el => el.dataset.state")
    assert state == "ready", f"{selector}: {tab.inner_text(selector)[:300]}"


def close(context, log, tab, name):
    try:
        tab.screenshot(path=artifact("browser", f"{name}.png"), full_page=False)
    finally:
        log.dump(artifact("browser", f"{name}.log.json"))
        context.close()
    assert not log.page_errors, f"uncaught exceptions: {log.page_errors}"
    assert not log.outside, f"requests outside the machine: {log.outside}"
    assert not log.failed, f"failed requests: {log.failed}"


# ---------------------------------------------------------------------------- same numbers


def test_page_computes_what_pytorch_computes(browser, site_url, news):
    model, vocab = news
    context, tab, log = open_page(browser, site_url[0], EXPLORER_PAGE, "agreement")
    try:
        ready(tab, ".gpt-explorer")
        for prompt in PROMPTS + [LONG_PROMPT]:
            ids = vocab.encode(prompt)[-model.config.block_size:]
            page_logits = torch.tensor(tab.evaluate(
                "ids => GPTBook.model('news').forward(ids).map(row => Array.from(row))", ids))
            with torch.no_grad():
                torch_logits = model(torch.tensor([ids]))[0][0]
            diff = float((page_logits - torch_logits).abs().max())
            assert diff < 1e-4, f"{prompt}: logits differ by {diff:.2e}"
            last = torch_logits[-1]
            for s in SETTINGS:
                js = {"temperature": s["temperature"], "topK": s.get("top_k"), "topP": s.get("top_p")}
                page_p = torch.tensor(tab.evaluate(
                    "([l, s]) => Array.from(GPTBook.nextTokenProbs(Float32Array.from(l), s))",
                    [last.tolist(), js]))
                torch_p = sampling.next_token_probs(last, **s).double()
                assert torch.equal(page_p > 0, torch_p > 0), f"{prompt} {s}: another set of tokens kept"
                assert float((page_p - torch_p).abs().max()) < 1e-6, f"{prompt} {s}: probabilities differ"
        for prompt in (PROMPTS[0], LONG_PROMPT):   # 50 greedy tokens; the long one slides the window
            ids = vocab.encode(prompt)
            page_ids = tab.evaluate(
                "ids => GPTBook.generate(GPTBook.model('news'), ids, 50, {temperature: 0})", ids)
            torch_ids = sampling.generate(model, torch.tensor([ids]), 50, temperature=0)[0, len(ids):]
            assert page_ids == torch_ids.tolist(), (
                f"greedy text differs:\npage : {vocab.decode(page_ids)}\ntorch: {vocab.decode(torch_ids.tolist())}")
    finally:
        close(context, log, tab, "agreement")


# ---------------------------------------------------------------------------- the demos


def demo_state(tab, selector):
    return tab.eval_on_selector(selector, "el => el.gptDemo ? {renders: el.gptDemo.renders, "
                                          "text: el.gptDemo.text, rate: el.gptDemo.tokensPerSecond, "
                                          "n: el.gptDemo.fresh && el.gptDemo.fresh.length} : null")


def wait_render(tab, selector, after: int):
    tab.wait_for_function(f"() => document.querySelector('{selector}').gptDemo.renders > {after}",
                          timeout=30_000)
    return demo_state(tab, selector)


def test_explorer_moves_with_its_sliders(browser, base, capsys):
    name = f"explorer_{base.split(':')[0]}"
    context, tab, log = open_page(browser, base, EXPLORER_PAGE, name)
    ex = ".gpt-explorer"
    try:
        ready(tab, ex)
        tab.locator(ex).scroll_into_view_if_needed()
        first = demo_state(tab, ex)
        chart = tab.inner_html(f"{ex} .gpt-chart-box")
        assert first["text"], "the explorer shows no sample"
        slider = tab.locator(f"{ex} input[name=temperature]")
        slider.focus()
        for _ in range(8):                              # 0.80 -> 1.20, as a reader's arrow keys do
            tab.keyboard.press("ArrowRight")
        moved = wait_render(tab, ex, first["renders"])
        tab.wait_for_timeout(300)                        # let the burst of key events settle
        moved = demo_state(tab, ex)
        assert tab.input_value(f"{ex} input[name=temperature]") == "1.2"
        assert moved["text"] != first["text"], "the sample did not change with the temperature"
        assert tab.inner_html(f"{ex} .gpt-chart-box") != chart, "the chart did not change"
        tab.screenshot(path=artifact("browser", f"{name}_moved.png"))

        tab.locator(f"{ex} input[name=length]").fill("100")   # 100 tokens: how fast is the page?
        timed = wait_render(tab, ex, moved["renders"])
        assert timed["n"] == 100
        with capsys.disabled():
            print(f"\n[{base.split(':')[0]}] the page generated 100 tokens at {timed['rate']:.0f} tokens/s "
                  f"({100 / timed['rate']:.3f} s)")
    finally:
        close(context, log, tab, name)


def test_chat_answers_and_clears(browser, base):
    name = f"chat_{base.split(':')[0]}"
    context, tab, log = open_page(browser, base, CHAT_PAGE, name)
    chat = ".gpt-chat"
    try:
        ready(tab, chat)
        tab.locator(chat).scroll_into_view_if_needed()
        entry = tab.locator(f"{chat} input[type=text]")
        entry.click()
        entry.type("你喜欢什么？")
        entry.press("Enter")
        tab.wait_for_function("() => document.querySelectorAll('.gpt-chat .gpt-transcript > div').length >= 2",
                              timeout=30_000)
        rows = tab.locator(f"{chat} .gpt-transcript > div").all_inner_texts()
        assert rows[0] == "你：你喜欢什么？" and rows[1].startswith("机："), rows
        assert entry.input_value() == "", "the entry box was not cleared"
        tab.screenshot(path=artifact("browser", f"{name}_reply.png"))
        tab.click(f"{chat} .gpt-clear")
        assert tab.locator(f"{chat} .gpt-transcript > div").count() == 0
        assert "还没有对话" in tab.inner_text(f"{chat} .gpt-transcript")
    finally:
        close(context, log, tab, name)


def test_bad_input_gets_a_message(browser, site_url):
    context, tab, log = open_page(browser, site_url[0], EXPLORER_PAGE, "bad_input")
    ex = ".gpt-explorer"
    try:
        ready(tab, ex)
        prompt = tab.locator(f"{ex} input[type=text]")
        for text, message in [("", "the prompt is empty"), ("   ", "the prompt is empty"),
                              ("☃☃", "is in the vocabulary")]:
            prompt.fill(text)
            tab.wait_for_function(f"() => document.querySelector('{ex} .gpt-error').textContent.includes({message!r})",
                                  timeout=10_000)
        prompt.fill("中国")
        tab.wait_for_function(f"() => document.querySelector('{ex} .gpt-error').textContent === ''")
        for name, key in [("temperature", "Home"), ("top-k", "End"), ("top-p", "Home"),
                          ("length", "End"), ("seed", "End"), ("temperature", "End"), ("top-k", "Home")]:
            tab.locator(f"{ex} input[name={name}]").focus()
            tab.keyboard.press(key)
            time.sleep(0.05)
        tab.wait_for_timeout(1500)
        assert tab.eval_on_selector(ex, "el => el.dataset.state") == "ready"
        assert tab.inner_text(f"{ex} .gpt-error") == ""
        assert demo_state(tab, ex)["n"] == 200

        tab.goto(f"{site_url[0]}/{CHAT_PAGE}", wait_until="load")
        ready(tab, ".gpt-chat")
        entry = tab.locator(".gpt-chat input[type=text]")
        for text, message in [("", "the message is empty"), ("☃", "is in the vocabulary")]:
            entry.fill(text)
            entry.press("Enter")
            tab.wait_for_function(f"() => document.querySelector('.gpt-chat .gpt-error').textContent.includes({message!r})",
                                  timeout=10_000)
        assert tab.locator(".gpt-chat .gpt-transcript > div").count() == 0
    finally:
        close(context, log, tab, "bad_input")


# ---------------------------------------------------------------------------- chapter 14: side by side

CMP = ".gpt-compare"


def compare_state(tab):
    return tab.eval_on_selector(CMP, "el => ({renders: el.gptDemo.renders, results: el.gptDemo.results, "
                                     "prompt: el.gptDemo.prompt, error: el.gptDemo.error, "
                                     "settings: el.gptDemo.settings, rate: el.gptDemo.tokensPerSecond})")


def generate_on_page(tab, prompt=None, press_enter=False):
    """Type `prompt` (if given), press Generate (or Enter) and wait for the new render."""
    before = compare_state(tab)["renders"]
    entry = tab.locator(f"{CMP} input[type=text]")
    if prompt is not None:
        entry.fill(prompt)
    if press_enter:
        entry.press("Enter")
    else:
        tab.click(f"{CMP} .gpt-generate")
    return wait_compare(tab, before)


def wait_compare(tab, after: int):
    tab.wait_for_function(f"() => document.querySelector('{CMP}').gptDemo.renders > {after}", timeout=30_000)
    return compare_state(tab)


def texts(state):
    return [r["text"] for r in state["results"]]


def test_compare_generates_from_both(browser, base, capsys):
    scheme = base.split(":")[0]
    name = f"compare_{scheme}"
    context, tab, log = open_page(browser, base, COMPARE_PAGE, name)
    try:
        ready(tab, CMP)
        tab.locator(CMP).scroll_into_view_if_needed()
        first = compare_state(tab)
        assert first["renders"] == 1 and len(first["results"]) == 2, first   # the default prompt, at load
        assert tab.locator(f"{CMP} .gpt-column-title").all_inner_texts()[0].startswith("reviews")

        state = generate_on_page(tab, "这家酒店")
        assert state["renders"] == first["renders"] + 1
        assert [r["model"] for r in state["results"]] == ["reviews", "positive"]
        assert state["settings"] == {"temperature": 1}
        samples = tab.locator(f"{CMP} .gpt-sample").all_inner_texts()
        assert len(samples) == 2
        for r, shown in zip(state["results"], samples, strict=True):
            assert r["ids"] and r["text"], f"{r['model']}: no continuation"
            assert shown == "这家酒店" + r["text"], shown
            assert 0 <= r["reward"] <= 1
        verdicts = tab.locator(f"{CMP} .gpt-verdict").all_inner_texts()
        assert len(verdicts) == 2
        for r, shown in zip(state["results"], verdicts, strict=True):
            assert f"{r['reward']:.3f}" in shown
            assert ("正面" in shown) == (r["reward"] > 0.5) and ("负面" in shown) == (r["reward"] <= 0.5), shown
        assert generate_on_page(tab)["results"] == state["results"], "the same seed gave another text"
        tab.locator(f"{CMP} input[name=seed]").fill("1")
        tab.locator(f"{CMP} input[name=seed]").press("Enter")         # commits the number: a new render
        other = wait_compare(tab, state["renders"] + 1)
        assert other["results"][0]["ids"] != state["results"][0]["ids"] or \
            other["results"][1]["ids"] != state["results"][1]["ids"], "seed 1 gave seed 0's text"

        tab.check(f"{CMP} input[name=greedy]")                          # a new render, greedy
        greedy = wait_compare(tab, other["renders"])
        assert greedy["settings"] == {"temperature": 0}
        again = generate_on_page(tab, press_enter=True)                  # Enter generates too
        assert texts(again) == texts(greedy), "greedy twice gave different text"
        tab.screenshot(path=artifact("browser", f"{name}_greedy.png"))
        with capsys.disabled():
            n = sum(len(r["ids"]) for r in again["results"])
            print(f"\n[{scheme}] the comparison generated {n} greedy tokens (two models) at "
                  f"{again['rate']:.0f} tokens/s")
    finally:
        close(context, log, tab, name)


def test_compare_agrees_with_pytorch(browser, site_url):
    policies = {name: export.load_browser(MODELS / f"{name}.js")[0] for name in ("reviews", "positive")}
    clf, vocab, _ = export.browser_classifier(MODELS / "reward.js")
    block = clf.config.block_size
    context, tab, log = open_page(browser, site_url[0], COMPARE_PAGE, "compare_agreement")
    try:
        ready(tab, CMP)
        tab.check(f"{CMP} input[name=greedy]")
        wait_compare(tab, 1)
        long_prompt = "这本书" + "非常好看，内容丰富" * 8                # past block_size: the page keeps its end
        for prompt in COMPARE_PROMPTS + [long_prompt]:
            state = generate_on_page(tab, prompt)
            ids = vocab.encode(to_fullwidth(prompt, vocab))[-block:]
            assert state["prompt"] == ids, prompt
            for r in state["results"]:
                out = sampling.generate(policies[r["model"]], torch.tensor([ids]), 24, temperature=0,
                                        stop_tokens=[SEP])
                torch_ids = out[0, len(ids):].tolist()
                assert r["ids"] == torch_ids, (f"{prompt} ({r['model']}): greedy text differs:\n"
                                               f"page : {vocab.decode(r['ids'])}\ntorch: {vocab.decode(torch_ids)}")
                torch_reward = float(preference.classifier_reward(clf, out, vocab)[0])
                assert abs(r["reward"] - torch_reward) < 1e-5, (prompt, r["model"], r["reward"], torch_reward)
                text = [i for i in ids + r["ids"] if i != SEP][:block]    # what the page's reward model reads
                page_p = tab.evaluate("ids => GPTBook.classify(GPTBook.model('reward'), ids)", text)
                with torch.no_grad():
                    torch_p = torch.softmax(clf(torch.tensor([text]))[0].float(), -1)[0].tolist()
                assert page_p == pytest.approx(torch_p, abs=1e-5), (prompt, r["model"])
    finally:
        close(context, log, tab, "compare_agreement")


def test_compare_bad_input(browser, site_url):
    context, tab, log = open_page(browser, site_url[0], COMPARE_PAGE, "compare_bad_input")
    try:
        ready(tab, CMP)
        good = compare_state(tab)
        entry = tab.locator(f"{CMP} input[type=text]")
        for text, message, enter in [("", "the prompt is empty", False), ("   ", "the prompt is empty", True),
                                     ("☃☃", "is in the vocabulary", False)]:
            entry.fill(text)
            if enter:
                entry.press("Enter")
            else:
                tab.click(f"{CMP} .gpt-generate")
            tab.wait_for_function(f"() => document.querySelector('{CMP} .gpt-error').textContent.includes({message!r})",
                                  timeout=10_000)
        state = compare_state(tab)
        assert state["renders"] == good["renders"] and state["results"] == good["results"]  # the last texts stay
        assert tab.eval_on_selector(CMP, "el => el.dataset.state") == "ready"
        generate_on_page(tab, "这本书")
        assert tab.inner_text(f"{CMP} .gpt-error") == ""
        refused = tab.evaluate("() => { try { GPTBook.classify(GPTBook.model('reviews'), [5]); return null; } "
                               "catch (e) { return e.message; } }")
        assert refused and "not a classifier" in refused
    finally:
        close(context, log, tab, "compare_bad_input")

    # a model file that does not arrive: the box says so, the page lives on
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    log = PageLog(tab, site_url[0])
    tab.route("**/models/positive.js", lambda route: route.abort())
    try:
        tab.goto(f"{site_url[0]}/{COMPARE_PAGE}", wait_until="load")
        tab.wait_for_selector(f"{CMP}[data-state]", timeout=60_000)
        assert tab.eval_on_selector(CMP, "el => el.dataset.state") == "error"
        assert "could not load models/positive.js" in tab.inner_text(f"{CMP} .gpt-error")
        log.failed = [f for f in log.failed if "models/positive.js" not in f]   # the one we broke
    finally:
        close(context, log, tab, "compare_missing_model")
