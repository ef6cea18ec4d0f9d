"""A real browser for the UI's tests: Debian's chromium, driven by Playwright.

Playwright's own browsers are never downloaded (``playwright install``
needs the internet, and CI has none): ``launch(executable_path=CHROMIUM)``
drives the system's chromium over the same protocol. One browser per test
session; each test gets a fresh context (cookies, localStorage).

Without chromium or Playwright the browser tests skip, except under
``CI=true``, where they fail: CI installs both (``.ci/run``).

``SOCKFTP_SCREENSHOTS=1`` makes :func:`snap` save the pages it is given to
``docs/img/`` (``python -m pytest tests/test_http_ui_browser.py`` with it
set is how the README's screenshots are made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SOCKFTP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "img"


def _missing(what: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: CI installs it (.ci/run), so the browser tests must run")
    pytest.skip(what)


@pytest.fixture(scope="session", name="browser")
def browser_fixture():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose dialogs (an injected alert()), uncaught errors and
    Content-Security-Policy refusals are recorded: a test asserts there
    were none with :meth:`assert_clean`."""

    def __init__(self, page):
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def assert_clean(self) -> None:
        assert self.dialogs == [], "a script ran a dialog: " + repr(self.dialogs)
        assert self.errors == [], self.errors


@pytest.fixture(name="new_page")
def new_page_fixture(browser):
    """new_page() -> a Watched page in a fresh context; closed at teardown."""
    contexts = []

    def make(**options) -> Watched:
        context = browser.new_context(accept_downloads=True, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return Watched(context.new_page())

    yield make
    for context in contexts:
        context.close()


def snap(page, name: str) -> None:
    """Save *page* as docs/img/NAME.png when SOCKFTP_SCREENSHOTS=1."""
    if os.environ.get("SOCKFTP_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=True)
