"""JupyterLab as a learner uses it: open chapter 08, Run ▸ Run All Cells, move the sliders.

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


def test_run_all_and_move_the_sampling_sliders(lab_server, browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    log = PageLog(page, lab_server.url)
    try:
        _run_notebook_and_use_demo(page, lab_server)
    finally:
        page.screenshot(path=artifact("lab", "final.png"))
        log.dump(artifact("lab", "browser_log.json"))
        context.close()
    # JupyterLab itself must not throw, and must not reach outside 127.0.0.1.
    assert not log.page_errors, f"uncaught exceptions in JupyterLab: {log.page_errors}"
    assert not log.outside, f"JupyterLab requested outside addresses: {log.outside}"


def _run_notebook_and_use_demo(page, lab):
    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
    page.wait_for_function(
        "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.context && w.context.path.endsWith(name)); }",
        arg=NOTEBOOK, timeout=120_000)
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

    # Scroll to the demo cell and wait for the widget to render its five sliders.
    index = page.evaluate("""(src) => {
      const nb = window.jupyterapp.shell.currentWidget.content;
      const i = nb.widgets.findIndex(c => c.model.sharedModel.getSource().includes(src));
      if (i < 0) return -1;
      nb.activeCellIndex = i;
      nb.widgets[i].node.setAttribute('data-e2e', 'sampling-demo');
      nb.scrollToItem(i, 'start');
      return i;
    }""", DEMO_SOURCE)
    assert index >= 0, f"no cell of {NOTEBOOK} contains {DEMO_SOURCE!r}"
    demo = page.locator("[data-e2e='sampling-demo'] .jp-OutputArea")
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
