"""Playwright fixtures: Debian's headless Chromium, kept off the network, one context per tab.

Each tab gets its own browser context (own localStorage, IndexedDB, service worker and
BroadcastChannel). Two tabs of one context would also sync through BroadcastChannel, which
y-websocket uses between tabs of one browser, and the server would never be tested.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser.tabs import CHROMIUM, CHROMIUM_ARGS, EXPECTED_CONSOLE_ERRORS, OpenTab, Tab


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Playwright's async API runs on asyncio only


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(apt-get install chromium; scripts/test installs it when run as root)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def open_tab(browser: Browser, server: Any) -> AsyncIterator[OpenTab]:
    """Open a new tab on ``server`` as a user (name, colour); checked for stray errors after."""
    tabs: list[Tab] = []
    origin = server.http_url
    allowed = {urlsplit(origin).netloc}

    async def open_tab(
        user: str | None = None, color: str = "#1971c2", width: int = 720, height: int = 420
    ) -> Tab:
        context = await browser.new_context(viewport={"width": width, "height": height})
        if user is not None:
            identity = {"name": user, "color": color}
            await context.add_init_script(
                f"localStorage.setItem('collab.user', {json.dumps(json.dumps(identity))})"
            )
        page = await context.new_page()
        tab = Tab(context, page, origin)

        def on_request(url: str) -> None:
            parts = urlsplit(url)
            if parts.scheme not in ("data", "blob") and parts.netloc not in allowed:
                tab.foreign_requests.append(url)

        context.on("request", lambda request: on_request(request.url))
        page.on("websocket", lambda ws: on_request(ws.url))
        page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                tab.console_errors.append(message.text)
                if message.type == "error" and not EXPECTED_CONSOLE_ERRORS.search(message.text)
                else None
            ),
        )
        tabs.append(tab)
        return tab

    yield open_tab

    for tab in tabs:
        await tab.context.close()
    for tab in tabs:
        assert not tab.page_errors, f"uncaught errors in the page: {tab.page_errors}"
        assert not tab.console_errors, f"errors in the console: {tab.console_errors}"
        assert not tab.foreign_requests, f"requests left the server: {tab.foreign_requests}"
