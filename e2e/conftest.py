"""Fixtures for the end-to-end checks: a headless system Chromium driven by Playwright.

`make e2e` runs these tests (`pytest tests` never collects this folder). They need Debian's
`chromium` and the Python package `playwright` (`pip install -e '.[e2e]'`); without them
every test is skipped with the install step, and `make e2e` refuses to start.
Screenshots and logs go to e2e/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    INSTALL_HINT,
    REPO,
    artifact,
    fontconfig_env,
    free_port,
    missing_requirement,
)

# ---------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    why = missing_requirement()
    if why:
        message = f"end-to-end checks need a browser: {why}. Install once with: {INSTALL_HINT}"
        if os.environ.get("E2E_REQUIRE"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    env = dict(os.environ, **fontconfig_env(tmp_path_factory.mktemp("chromium")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                    env=env)
        yield browser
        browser.close()


# ---------------------------------------------------------------------------- JupyterLab


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 directly


class LabServer:
    def __init__(self, url: str, token: str, root: Path, proc: subprocess.Popen, log: Path):
        self.url, self.token, self.root, self.proc, self.log = url, token, root, proc, log

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with NO_PROXY.open(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _stop_lab(server: LabServer) -> None:
    """Shut the kernels down, stop the server, then end whatever of its children is left."""
    import psutil

    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        for kernel in server.api("/api/kernels"):
            server.api(f"/api/kernels/{kernel['id']}", method="DELETE")
    except (OSError, urllib.error.URLError, ValueError):
        pass
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
    for child in children:  # kernels run in their own session: end them by pid
        try:
            child.terminate()
            child.wait(timeout=5)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            child.kill()


@pytest.fixture(scope="module")
def lab_server(browser, tmp_path_factory):
    """JupyterLab on a free 127.0.0.1 port with a random token, serving a copy of nbs/.

    The kernel runs under COURSE_PROFILE=ci (tiny model, seconds) with the repository's cache
    (or $COURSE_CACHE), so the committed notebooks are never modified.
    """
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "nbs"
    shutil.copytree(REPO / "nbs", root,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    port, token = free_port(), secrets.token_hex(24)
    env = dict(os.environ,
               COURSE_PROFILE="ci",
               COURSE_CACHE=os.environ.get("COURSE_CACHE", str(REPO / ".cache")),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               # a clean Jupyter: no user settings, workspaces or config from this machine
               JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.terminals_enabled=False",
           "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to read the notebook model
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    # Do not ask about (or fetch) Jupyter news: the toast would cover part of the notebook.
    notification = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = artifact("lab", "server.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, proc, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("/api/status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in 120 s:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        _stop_lab(server)


# ---------------------------------------------------------------------------- the static site


@pytest.fixture(scope="session")
def site_url(browser):
    """(url, folder): the built book (book/_build/html, or $E2E_SITE) over http.server."""
    import functools
    import http.server
    import threading

    site = Path(os.environ.get("E2E_SITE", REPO / "book" / "_build" / "html"))
    if not (site / "index.html").exists():
        pytest.fail(f"no built book at {site}: run `make book` first (`make e2e` does)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a tab closed mid-response
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    httpd = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", site
    finally:
        httpd.shutdown()
        httpd.server_close()


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped and missing_requirement():
        terminalreporter.write_line(
            f"e2e: {len(skipped)} skipped because {missing_requirement()}. "
            f"Install once with: {INSTALL_HINT}", yellow=True)
