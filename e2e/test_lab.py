"""JupyterLab as a learner uses it: open a chapter, Run ▸ Run All Cells, then use its widget:
move the sampling sliders of chapter 08, and chat in the chat box of chapter 11.

The server serves a temporary copy of nbs/ under COURSE_PROFILE=ci (see conftest.lab_server),
so the whole notebook runs in about a minute and the committed notebook is never touched.
"""

from __future__ import annotations

import os
import re

import pytest
from support import PageLog, artifact

NOTEBOOK = "08_sampling.ipynb"
DEMO_SOURCE = "widgets.SamplingDemo("  # the cell that displays the sliders
CHAT_NOTEBOOK = "11_finetune_dialogue.ipynb"
CHAT_SOURCE = "ChatWidget("  # the cell that displays the chat box
RUN_TIMEOUT_S = float(os.environ.get("E2E_RUN_TIMEOUT", 900))  # all cells, on a busy 2-core box

# The notebook panel, its code cells (empty ones are never executed) and their state.
NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(
      c => c.model.type === 'code' && c.model.sharedModel.getSource().trim() !== '');
  const errors = [];
  cells.forEach((c, i) => {
    for (const out of c.model.outputs.toJSON()) {
      if (out.output_type === 'error') errors.push({cell: i, ename: out.ename, evalue: out.evalue});
    }
  });
  return {
    path: panel.context.path,
    kernel: kernel ? kernel.status : null,
    cells: cells.length,
    executed: cells.filter(c => c.model.executionCount !== null).length,
    errors,
  };
}"""


def notebook_state(page):
    return page.evaluate(NOTEBOOK_STATE)


def wait_for(page, predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    """Poll `predicate(notebook_state)` until true; fail with the last state otherwise."""
    import time

    deadline, state = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        state = notebook_state(page)
        if state and predicate(state):
            return state
        page.wait_for_timeout(poll_s * 1000)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; last state: {state}")


def in_lab(lab_server, browser, use, name: str):
    """Run `use(page, lab_server)` in a fresh browser context; keep a screenshot and the
    console log under e2e/artifacts/lab/ (prefixed with `name`) whatever happens."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log = PageLog(page, lab_server.url)
    try:
        use(page, lab_server)
    finally:
        page.screenshot(path=artifact("lab", f"{name}final.png"))
        log.dump(artifact("lab", f"{name}browser_log.json"))
        context.close()
    # JupyterLab itself must not throw, and must not reach outside 127.0.0.1.
    assert not log.page_errors, f"uncaught exceptions in JupyterLab: {log.page_errors}"
    assert not log.outside, f"JupyterLab requested outside addresses: {log.outside}"


def test_run_all_and_move_the_sampling_sliders(lab_server, browser):
    in_lab(lab_server, browser, _run_notebook_and_use_demo, "")


def test_run_all_and_chat(lab_server, browser):
    in_lab(lab_server, browser, _run_notebook_and_chat, "chat_")


def open_and_run_all(page, lab, notebook: str) -> None:
    """Open `notebook`, clear its outputs, Run ▸ Run All Cells, and wait for every code cell
    to finish without an error output."""
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    page.wait_for_function(
        "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.context && w.context.path.endsWith(name)); }",
        arg=notebook, timeout=120_000)
    wait_for(page, lambda s: s["kernel"] == "idle", 120, "the kernel to start")

    # Clear the committed outputs first (Edit ▸ Clear Outputs of All Cells), so that every
    # output checked below comes from this run; then Run ▸ Run All Cells, as a learner would.
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    wait_for(page, lambda s: s["executed"] == 0, 30, "the outputs to be cleared")
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    state = wait_for(page, lambda s: s["errors"] or (s["executed"] == s["cells"]
                                                     and s["kernel"] == "idle"),
                     RUN_TIMEOUT_S, "Run All Cells to finish", poll_s=2)
    assert not state["errors"], f"cells raised errors: {state['errors']}"
    assert state["executed"] == state["cells"] > 0, state


def mark_cell(page, notebook: str, source: str, tag: str):
    """Scroll to the first cell whose source contains `source`, tag its node with
    data-e2e=`tag`, and return the locator of its output area."""
    index = page.evaluate("""([src, tag]) => {
      const nb = window.jupyterapp.shell.currentWidget.content;
      const i = nb.widgets.findIndex(c => c.model.sharedModel.getSource().includes(src));
      if (i < 0) return -1;
      nb.activeCellIndex = i;
      nb.widgets[i].node.setAttribute('data-e2e', tag);
      nb.scrollToItem(i, 'start');
      return i;
    }""", [source, tag])
    assert index >= 0, f"no cell of {notebook} contains {source!r}"
    return page.locator(f"[data-e2e='{tag}'] .jp-OutputArea")


def _run_notebook_and_use_demo(page, lab):
    open_and_run_all(page, lab, NOTEBOOK)
    # Scroll to the demo cell and wait for the widget to render its five sliders.
    demo = mark_cell(page, NOTEBOOK, DEMO_SOURCE, "sampling-demo")
    sliders = demo.locator(".widget-slider")
    sliders.nth(4).wait_for(timeout=60_000)
    assert sliders.count() == 5, "expected temperature, top-k, top-p, length and seed sliders"
    htmls = demo.locator(".widget-html-content")  # the status line, then the sample text
    htmls.nth(1).wait_for(timeout=60_000)
    assert htmls.count() == 2, f"expected 2 HTML widgets in the demo, found {htmls.count()}"
    status, text = htmls.nth(0), htmls.nth(1)

    def slider(name: str):
        return sliders.filter(has=page.locator(".widget-label", has_text=name))

    def settle(expected_status: str, previous_text: str, shot: str) -> str:
        """Wait until the status line matches the regex `expected_status` (the kernel has
        rendered the new setting), then check that the sample text changed."""
        page.wait_for_function(
            "([el, want]) => new RegExp(want).test(el.textContent)",
            arg=[status.element_handle(), expected_status], timeout=60_000)
        new_text = text.inner_text()
        demo.screenshot(path=artifact("lab", shot))
        assert "color:#c00" not in status.inner_html(), status.inner_text()
        assert new_text.strip(), "the sample text is empty"
        assert new_text != previous_text, f"the sample did not change: {new_text!r}"
        return new_text

    page.locator("[data-e2e='sampling-demo']").scroll_into_view_if_needed()
    before = text.inner_text()
    assert before.strip(), "the demo shows no sample text"
    temperature = slider("temperature")
    start = float(temperature.locator(".widget-readout").inner_text())
    demo.screenshot(path=artifact("lab", "demo_before.png"))
    page.screenshot(path=artifact("lab", "page_before.png"))

    # 1. Keyboard on the temperature handle: four presses of ← (step 0.05).
    temperature.locator(".noUi-handle").click()
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    new_t = float(temperature.locator(".widget-readout").inner_text())
    assert new_t == pytest.approx(start - 0.2), (start, new_t)
    after_t = settle(re.escape(f"temperature={new_t:g},"), before, "demo_after_temperature.png")

    # 2. Type into the seed slider's readout and press Enter.
    seed_readout = slider("seed").locator(".widget-readout")
    seed_readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("7")
    page.keyboard.press("Enter")
    settle(r"seed=7(?!\d)", after_t, "demo_after_seed.png")
    page.screenshot(path=artifact("lab", "page_after.png"))

    state = notebook_state(page)
    assert not state["errors"], f"cells raised errors: {state['errors']}"


def _run_notebook_and_chat(page, lab):
    """Type a message into chapter 11's chat box and press Enter, as a learner would; the
    kernel's reply must appear in the transcript. Then 清空 (clear) empties it."""
    open_and_run_all(page, lab, CHAT_NOTEBOOK)
    box = mark_cell(page, CHAT_NOTEBOOK, CHAT_SOURCE, "chat")
    entry = box.locator(".widget-text input")
    entry.wait_for(timeout=60_000)
    transcript = box.locator(".widget-html-content").first
    page.locator("[data-e2e='chat']").scroll_into_view_if_needed()
    before = transcript.inner_text()
    # the cell itself sent two messages from code: two user turns, two replies
    assert before.count("你：") == 2 and before.count("机：") == 2, before
    box.screenshot(path=artifact("lab", "chat_before.png"))

    entry.click()
    page.keyboard.type("你喜欢什么？")
    page.keyboard.press("Enter")
    page.wait_for_function("(el) => (el.textContent.match(/机：/g) || []).length === 3",
                           arg=transcript.element_handle(), timeout=60_000)
    after = transcript.inner_text()
    assert after.count("你：") == 3 and "你喜欢什么？" in after, after
    assert entry.input_value() == "", "the entry box was not cleared after sending"
    box.screenshot(path=artifact("lab", "chat_after.png"))

    box.locator("button", has_text="清空").click()
    page.wait_for_function("(el) => el.textContent.includes('还没有对话')",
                           arg=transcript.element_handle(), timeout=30_000)
    state = notebook_state(page)
    assert not state["errors"], f"cells raised errors: {state['errors']}"
