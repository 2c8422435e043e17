"""The service's own page (GET / of `python -m course_utils.serve`) in headless Chromium.

A real server process (profile ci) serves the page; typing a prompt and pressing Generate
must stream a reply into the page (the text grows while it is generated, then the page says
done), and Stop must end a long generation and free its rows on the server. No console
error, uncaught exception, failed request or request outside 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request

import pytest
from support import PageLog, artifact

from course_utils.serve_tools import ServerProcess


@pytest.fixture(scope="module")
def server():
    with ServerProcess("ci", threads=1) as proc:
        yield proc
    (artifact("serve", "server.log")).write_text(proc.output())


def health(server) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # 127.0.0.1 directly
    with opener.open(server.url + "/health", timeout=10) as resp:
        return json.load(resp)


def open_page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    log = PageLog(tab, server.url)
    tab.goto(server.url + "/")
    tab.wait_for_function("() => document.getElementById('info').textContent.includes('parameter')")
    return context, tab, log


def check_clean(log: PageLog, name: str) -> None:
    log.dump(artifact("serve", f"{name}.json"))
    assert not log.page_errors, log.page_errors
    assert not log.console, log.console
    assert not log.failed, log.failed
    assert not log.outside, log.outside


def generate(server, body: dict) -> list[str]:
    """POST /generate without streaming (and without any proxy); the texts."""
    req = urllib.request.Request(server.url + "/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as resp:
        return json.load(resp)


def test_a_reply_streams_into_the_page(browser, server):
    # the page's request (its other fields at the page's defaults); a sample may stop at its
    # first character, so take the first seed whose two samples both run 5 characters or more
    body = {"context": "中国", "maxlength": 200, "samples": 2, "temperature": 1.5, "top_k": 40,
            "top_p": 0.9, "repetition_penalty": 1}
    seed = next(s for s in range(20) if min(map(len, generate(server, {**body, "seed": s}))) >= 5)
    context, tab, log = open_page(browser, server)
    try:
        tab.fill("#context", "中国")
        tab.fill("#maxlength", "200")
        tab.fill("#samples", "2")
        tab.fill("#temperature", "1.5")
        tab.fill("#seed", str(seed))
        # count the page's updates of the output: a streamed reply arrives in many pieces
        tab.evaluate("""() => { window.updates = 0;
          new MutationObserver(() => { window.updates++; }).observe(document.getElementById('out'),
            {subtree: true, childList: true, characterData: true}); }""")
        tab.click("#go")
        tab.wait_for_function("() => document.getElementById('status').textContent.includes('done')",
                              timeout=60_000)
        texts = tab.eval_on_selector_all("#out .text", "els => els.map(e => e.textContent)")
        status = tab.evaluate("() => document.getElementById('status').textContent")
        tab.screenshot(path=str(artifact("serve", "page.png")), full_page=True)
        assert len(texts) == 2 and all(texts)
        assert tab.evaluate("() => window.updates") > 3 and "first text after" in status
        # the same request without streaming gives the same texts (the seed contract)
        assert generate(server, {**body, "seed": seed}) == texts
        check_clean(log, "stream")
    finally:
        context.close()


def test_bad_settings_show_the_services_message(browser, server):
    context, tab, log = open_page(browser, server)
    try:
        tab.fill("#top_p", "1.5")
        tab.click("#go")
        tab.wait_for_function("() => document.getElementById('error').textContent.length > 0")
        message = tab.evaluate("() => document.getElementById('error').textContent")
        assert message.startswith("400") and "top_p" in message
        # the refusal itself, which Chromium also logs to the console: expected, nothing else
        assert log.failed == [f"{server.url}/generate: HTTP 400"]
        assert len(log.console) == 1 and "status of 400" in log.console[0]
        log.failed, log.console = [], []
        check_clean(log, "bad-settings")
    finally:
        context.close()


@contextlib.contextmanager
def throttled(pid: int, run_s: float = 0.002, pause_s: float = 0.02):
    """Let process `pid` run `run_s` out of every `run_s + pause_s` seconds (SIGSTOP/SIGCONT from a
    thread) inside the block; it runs freely again afterwards."""
    stop = threading.Event()

    def toggle():
        while not stop.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(pause_s)
            os.kill(pid, signal.SIGCONT)
            time.sleep(run_s)

    thread = threading.Thread(target=toggle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        os.kill(pid, signal.SIGCONT)


def test_stop_ends_the_generation_and_frees_its_rows(browser, server):
    context, tab, log = open_page(browser, server)
    try:
        tab.fill("#maxlength", "512")
        tab.fill("#samples", "16")
        tab.fill("#temperature", "2")
        tab.fill("#top_k", "")
        tab.fill("#top_p", "")
        # The ci model writes 512 tokens faster than a click lands: run the server a tenth of the
        # time while the reader presses Stop, so the request is still mid-stream when it does.
        with throttled(server.proc.pid):
            tab.click("#go")
            tab.wait_for_function("() => document.getElementById('status').textContent.includes('first text')")
            tab.click("#stop")
            tab.wait_for_function("() => document.getElementById('status').textContent.includes('stopped')")
        for _ in range(int(os.environ.get("E2E_POLLS", "300"))):
            state = health(server)
            if state["rows_in_use"] == 0:
                break
            time.sleep(0.05)
        assert state["rows_in_use"] == 0 and state["running"] == 0
        for _ in range(50):        # the browser reports the aborted request as an event: let it in
            if log.failed:
                break
            tab.wait_for_timeout(100)
        assert log.failed == [f"{server.url}/generate: net::ERR_ABORTED"]   # Stop aborted it
        log.failed = []
        check_clean(log, "stop")
    finally:
        context.close()
