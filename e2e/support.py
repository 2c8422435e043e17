"""Helpers shared by the end-to-end checks: paths, the browser set-up, ports and a page log.

The fixtures that use them are in conftest.py.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", REPO / "e2e" / "artifacts"))
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
# Headless in a container: no sandbox (we are root), no GPU, /dev/shm may be tiny, and no
# background traffic (component updates, sync, field trials) to addresses outside 127.0.0.1.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = ("sudo apt-get install -y chromium && .venv/bin/pip install -e '.[e2e]' "
                "(no `playwright install`: the tests drive the system Chromium)")


def missing_requirement() -> str | None:
    """Why the end-to-end checks cannot run here, or None if they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package `playwright` is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (set E2E_CHROMIUM to use another one)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifact(*parts: str) -> Path:
    path = ARTIFACTS.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fontconfig_env(tmp: Path) -> dict:
    """Let Chromium use the Noto Sans CJK that `mplfonts` ships, so screenshots show Chinese
    even on a machine without CJK system fonts (it only adds a font folder)."""
    try:
        import mplfonts
    except ImportError:
        return {}
    fonts = Path(mplfonts.__file__).parent / "fonts"
    if not fonts.is_dir():
        return {}
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{fonts}</dir>\n  <cachedir>{tmp / 'fontcache'}</cachedir>\n</fontconfig>\n")
    return {"FONTCONFIG_FILE": str(conf)}


def mplfonts_folder() -> Path | None:
    try:
        import mplfonts
    except ImportError:
        return None
    fonts = Path(mplfonts.__file__).parent / "fonts"
    return fonts if fonts.is_dir() else None


def system_fontconfig_env(tmp: Path) -> dict:
    """The opposite of fontconfig_env: Chromium sees the system's fonts only, with mplfonts'
    folder explicitly rejected, as in a reader's browser on a machine without CJK fonts (Debian's
    default install has none). The site's own CJK font must then draw the Chinese."""
    fonts = mplfonts_folder()
    reject = (f"  <selectfont><rejectfont><glob>{fonts}/*</glob></rejectfont></selectfont>\n"
              if fonts else "")
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"{reject}  <cachedir>{tmp / 'fontcache'}</cachedir>\n</fontconfig>\n")
    return {"FONTCONFIG_FILE": str(conf)}


class PageLog:
    """What a page reported: console errors, uncaught exceptions, failed or outside requests."""

    def __init__(self, page, local_prefix: str):
        self.console, self.page_errors, self.failed, self.outside = [], [], [], []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.page_errors.append(str(err)))
        page.on("requestfailed", lambda req: self.failed.append(f"{req.url}: {req.failure}"))
        page.on("response", self._response)
        # Nothing leaves 127.0.0.1: a request elsewhere is recorded and aborted, so a page
        # that needs the network fails here the same way it would for an offline reader.
        page.route("**/*", lambda route: self._route(route, local_prefix))

    def _console(self, msg) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            self.console.append(f"{msg.text} [{loc.get('url', '')}:{loc.get('lineNumber', '')}]")

    def _response(self, response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.url}: HTTP {response.status}")

    def _route(self, route, local_prefix: str) -> None:
        url = route.request.url
        if url.startswith(local_prefix) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"console_errors": self.console, "page_errors": self.page_errors,
                                   "failed_requests": self.failed, "outside_requests": self.outside},
                                  indent=1, ensure_ascii=False))


