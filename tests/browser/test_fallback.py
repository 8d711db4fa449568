"""The fallback transport in real Chromium: a page on server-sent events and HTTP POSTs
edits with a page on the websocket (forced with ?transport=sse, and on its own when the
websocket is refused), and a plain EventSource reads the change feed across a restart."""

from __future__ import annotations

import base64
import re
from typing import Any

import anyio
import httpx
import pytest
from playwright.async_api import WebSocketRoute, expect
from pycrdt import Doc, Text

from tests.browser.tabs import SOON, OpenTab, Tab, doc_path
from tests.eventfeed import Writer

pytestmark = pytest.mark.browser


async def transport_of(tab: Tab) -> str:
    pill = tab.testid("transport")
    await expect(pill).to_be_visible()
    return str(await pill.get_attribute("data-transport"))


async def converge_and_see_each_other(sse: Tab, ws: Tab) -> None:
    await sse.type_at("end", "by HTTP. ")
    await ws.type_at("start", "By websocket. ")
    for tab in (sse, ws):
        await tab.wait_text("By websocket. by HTTP. ")
    await expect(sse.page.locator(".cm-ySelectionInfo")).to_have_text("Grace", timeout=SOON)
    await expect(ws.page.locator(".cm-ySelectionInfo")).to_have_text("Ada", timeout=SOON)
    peers = sse.testid("peers").get_by_test_id("peer")
    await expect(peers).to_have_text(["Ada", "Grace"], timeout=SOON)
    for tab in (sse, ws):
        await tab.wait_state("saved", "saved")


async def test_a_page_forced_to_the_fallback_edits_with_a_websocket_page(
    open_tab: OpenTab, server: Any
) -> None:
    sse = await open_tab("Ada", "#d1495b")
    ws = await open_tab("Grace", "#1971c2")
    await sse.page.goto(sse.origin + doc_path("fallback/forced") + "?transport=sse")
    await sse.wait_connected()
    await ws.open("fallback/forced")
    assert await transport_of(sse) == "sse"
    assert await transport_of(ws) == "websocket"
    await expect(sse.testid("transport")).to_have_text("HTTP fallback (SSE)")
    await converge_and_see_each_other(sse, ws)
    # the server has what both pages show
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.http_url}/api/docs/fallback%2Fforced")
    assert response.json() == {"content": "By websocket. by HTTP. "}
    # a closed tab's caret goes with its stream
    await sse.context.close()
    await expect(ws.page.locator(".cm-ySelectionInfo")).to_have_count(0, timeout=SOON)


async def test_a_page_whose_websocket_is_refused_falls_back_by_itself(
    open_tab: OpenTab,
) -> None:
    blocked = await open_tab("Ada", "#d1495b")
    refused: list[str] = []

    async def refuse(route: WebSocketRoute) -> None:
        refused.append(route.url)  # a proxy that will not pass websockets
        await route.close(code=1008, reason="websockets are not allowed here")

    await blocked.page.route_web_socket(re.compile(".*"), refuse)
    ws = await open_tab("Grace", "#1971c2")
    await blocked.page.goto(blocked.origin + doc_path("fallback/refused"))
    await blocked.wait_connected()
    assert len(refused) >= 3  # it tried the websocket first
    assert await transport_of(blocked) == "sse"
    await blocked.wait_state("connection", "connected")
    await ws.open("fallback/refused")
    assert await transport_of(ws) == "websocket"
    await converge_and_see_each_other(blocked, ws)


async def test_a_real_eventsource_reads_the_feed_and_resumes_after_a_restart(
    open_tab: OpenTab, server: Any
) -> None:
    tab = await open_tab("Ada")
    await tab.page.goto(tab.origin + "/")  # any page of the server's origin
    await tab.page.evaluate(
        """() => {
            window.feed = []
            const source = new EventSource('/api/docs/live%20feed/events')
            for (const type of ['session', 'snapshot', 'update', 'synced', 'close']) {
                source.addEventListener(type, (e) =>
                    window.feed.push({ type, id: e.lastEventId, data: e.data }))
            }
        }"""
    )
    writer = Writer(server.http_url, "live feed")
    await writer.type("abc")

    async def events_until(predicate: str) -> list[dict[str, str]]:
        await tab.page.wait_for_function(f"() => {predicate}", timeout=SOON)
        return list(await tab.page.evaluate("() => window.feed"))

    await events_until("window.feed.filter(e => e.type === 'update').length === 3")
    await anyio.to_thread.run_sync(server.restart)  # the browser reconnects by itself...
    await writer.type("d")
    feed = await events_until("window.feed.some(e => e.type === 'update' && e.id === '0-4')")
    kinds = [e["type"] for e in feed]
    assert kinds.count("session") == 2 and kinds.count("close") == 1  # 1001 at the restart
    positions = [(e["type"], e["id"]) for e in feed if e["type"] in ("snapshot", "update")]
    # ...with Last-Event-ID: no gap, no duplicate, and no second snapshot
    assert positions == [("snapshot", "0-0"), *[("update", f"0-{n}") for n in range(1, 5)]]
    doc: Doc[Any] = Doc()
    for e in feed:
        if e["type"] in ("snapshot", "update"):
            doc.apply_update(base64.b64decode(e["data"]))
    assert str(doc.get("content", type=Text)) == "abcd"
