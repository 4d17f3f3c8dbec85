"""Shared fixtures for tests of pages in a real headless browser (Playwright's sync API driving
Debian's Chromium): ``browser``, one Chromium for the test session, and ``page``, a fresh
browser context and page for each test. ``tests/conftest.py`` makes them every test's
fixtures; use them with pytest-django's ``live_server``.

Playwright's sync API runs its asyncio loop in the main thread and leaves it marked as running
between calls. While it is, Django's ORM refuses to run in that thread (SynchronousOnlyOperation)
and async_to_sync and pytest-asyncio refuse to start a loop. So the loop is marked running only
while a ``page`` is in use, with DJANGO_ALLOW_ASYNC_UNSAFE set for the test's own ORM calls, and
every test after it sees a normal thread. Inside a browser test, call async views (the gateway
API) over HTTP on the live server, not with Django's test client.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("LLMP_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_TIMEOUT_MS = 10_000


@dataclass
class _Chromium:
    """The one Chromium of this process. Each module that imports ``browser`` gets its own
    session-scoped fixture, so they share this and the last one to finish closes it."""

    playwright: Any
    browser: Any
    loop: asyncio.AbstractEventLoop
    users: int = 0


_shared: _Chromium | None = None


def _mark_loop_running(loop: asyncio.AbstractEventLoop | None) -> None:
    # What Playwright itself does after every sync call (playwright/_impl/_greenlets.py).
    asyncio.events._set_running_loop(loop)


def _launch() -> _Chromium:
    if not Path(CHROMIUM).exists():
        if os.environ.get("LLMP_REQUIRE_SERVICES") == "1":
            pytest.fail(f"LLMP_REQUIRE_SERVICES=1 but there is no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
    except BaseException:
        playwright.stop()
        raise
    loop = asyncio.get_running_loop()
    _mark_loop_running(None)
    return _Chromium(playwright=playwright, browser=chromium, loop=loop)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    global _shared
    if _shared is None:
        _shared = _launch()
    shared = _shared
    shared.users += 1
    try:
        yield shared.browser
    finally:
        shared.users -= 1
        if shared.users == 0:
            _shared = None
            _mark_loop_running(shared.loop)
            shared.browser.close()
            shared.playwright.stop()


@pytest.fixture
def page(browser, monkeypatch) -> Iterator[Any]:
    assert _shared is not None
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    _mark_loop_running(_shared.loop)
    context = browser.new_context(locale="en-US", timezone_id="UTC")
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
        _mark_loop_running(None)
