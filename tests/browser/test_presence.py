"""Presence in the shipped editor, in real Chromium: after a network blip or a server
restart, each page lists the other again (and shows its caret) within a second of
reconnecting, not at the next 15 s renewal."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from playwright.async_api import expect

from tests.browser.tabs import SOON, OpenTab

pytestmark = pytest.mark.browser


async def listed_again_within(seconds: float, tab: Any, names: list[str]) -> float:
    started = time.monotonic()
    await expect(tab.testid("peers").get_by_test_id("peer")).to_have_text(names, timeout=SOON)
    took = time.monotonic() - started
    assert took < seconds, f"listed again after {took:.1f} s"
    return took


async def test_a_page_back_from_a_network_blip_is_listed_again_at_once(
    open_tab: OpenTab,
) -> None:
    a = await open_tab("Ada", "#d1495b")
    b = await open_tab("Grace", "#1971c2")
    await a.open("here")
    await b.open("here")
    await a.type_at("end", "hello")
    await b.type_at("end", " world")
    peers_on_a = a.testid("peers").get_by_test_id("peer")
    await expect(peers_on_a).to_have_text(["Ada", "Grace"], timeout=SOON)
    await b.context.set_offline(True)
    await anyio.sleep(3)  # the blip
    await b.context.set_offline(False)
    await b.wait_state("connection", "connected")
    await listed_again_within(1.0, a, ["Ada", "Grace"])
    await listed_again_within(1.0, b, ["Grace", "Ada"])
    await expect(a.page.locator(".cm-ySelectionInfo")).to_have_text("Grace", timeout=SOON)


async def test_pages_list_each_other_again_at_once_after_a_server_restart(
    open_tab: OpenTab, server: Any
) -> None:
    a = await open_tab("Ada", "#d1495b")
    b = await open_tab("Grace", "#1971c2")
    await a.open("restart")
    await b.open("restart")
    await a.type_at("end", "hello")
    await expect(a.testid("peers").get_by_test_id("peer")).to_have_text(
        ["Ada", "Grace"], timeout=SOON
    )
    await anyio.to_thread.run_sync(server.restart)
    await a.wait_state("connection", "connected")
    await b.wait_state("connection", "connected")
    await listed_again_within(1.0, a, ["Ada", "Grace"])
    await listed_again_within(1.0, b, ["Grace", "Ada"])
