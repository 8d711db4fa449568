"""The operator's page, /status, in real headless Chromium against a real `collab serve`:
it renders numbers from the live server (not errors), and refreshes on its own."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import expect
from pycrdt import Text

from collab.client import Client
from tests.browser.tabs import ARTIFACTS, SOON, OpenTab

pytestmark = pytest.mark.browser


async def test_the_status_page_shows_live_numbers(open_tab: OpenTab, server: Any) -> None:
    tab = await open_tab(width=900, height=600)
    async with Client(f"{server.ws_url}/ops-board", ack=True) as client:
        await client.synced()
        await tab.page.goto(server.http_url + "/status")
        await expect(tab.page.locator("#connections")).to_have_text("1", timeout=SOON)
        await expect(tab.page.locator("#docs")).to_contain_text("ops-board", timeout=SOON)
        for i in range(20):
            client.doc.get("content", type=Text).insert(0, str(i))
        await client.wait_durable()
        await expect(tab.page.locator("#p50")).to_have_text(
            re.compile(r"^\d+(\.\d+)?$"), timeout=SOON
        )
        await expect(tab.page.locator("#rate")).to_have_text(re.compile(r"^\d+\.\d$"), timeout=SOON)
        assert await tab.page.locator("#error").text_content() == ""
        ARTIFACTS.mkdir(exist_ok=True)
        await tab.page.screenshot(path=str(ARTIFACTS / "status.png"))
    # the page notices by itself that the connection went away
    await expect(tab.page.locator("#connections")).to_have_text("0", timeout=SOON)
