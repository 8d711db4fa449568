"""The browser editor in real headless Chromium, against a real `collab serve`.

Every tab is a separate browser context (see conftest.py), so whatever two tabs agree on
went through the server.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from playwright.async_api import Browser, expect
from pycrdt import Text

from collab.client import Client
from tests.browser.tabs import ARTIFACTS, REPO, SOON, OpenTab, save_side_by_side

pytestmark = pytest.mark.browser


def ws_url(server: Any, name: str) -> str:
    return f"{server.ws_url}/{quote(name, safe='/')}"


async def server_text(server: Any, name: str) -> str:
    """The document as a fresh Python client gets it from the server."""
    async with Client(ws_url(server, name)) as client:
        await client.synced()
        return str(client.doc.get("content", type=Text))


async def test_two_tabs_typing_at_once_end_with_the_same_text(
    open_tab: OpenTab, server: Any, browser: Browser
) -> None:
    a = await open_tab("Ada", "#d1495b")
    b = await open_tab("Grace", "#1971c2")
    await a.open("meeting notes")
    await b.open("meeting notes")

    # One line each, so each person's caret stays inside their own text.
    await a.type_at("start", "\n")
    await b.wait_text("\n")
    a_line = "# Agenda from Ada: ship the editor"
    b_line = "Grace: the tests pass in Chromium"
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.type_at, "start", a_line, 15)
        tg.start_soon(b.type_at, "end", b_line, 15)

    expected = a_line + "\n" + b_line
    await a.wait_text(expected)
    await b.wait_text(expected)
    await a.wait_state("saved", "saved")
    await b.wait_state("saved", "saved")
    assert await server_text(server, "meeting notes") == expected

    # Carets and "who is here" for the picture: each tab shows the other's caret.
    await expect(a.page.locator(".cm-ySelectionInfo")).to_have_text("Grace", timeout=SOON)
    await expect(b.page.locator(".cm-ySelectionInfo")).to_have_text("Ada", timeout=SOON)
    await save_side_by_side(browser, [a, b], ARTIFACTS / "two-tabs.png")
    if os.environ.get("COLLAB_UPDATE_SCREENSHOT"):  # refresh the README's picture on demand
        await save_side_by_side(browser, [a, b], REPO / "docs" / "two-tabs.png")


async def test_remote_caret_carries_name_and_colour_and_leaves_with_the_tab(
    open_tab: OpenTab,
) -> None:
    a = await open_tab("Ada", "#d1495b")
    b = await open_tab("Grace", "#1971c2")
    await a.open("carets")
    await b.open("carets")
    await a.type_at("end", "hello")

    caret = b.page.locator(".cm-ySelectionInfo")
    await expect(caret).to_have_text("Ada", timeout=SOON)
    await expect(caret).to_have_css("background-color", "rgb(209, 73, 91)")
    await expect(caret).to_be_visible()
    peers = b.testid("peers").get_by_test_id("peer")
    await expect(peers).to_have_text(["Grace", "Ada"], timeout=SOON)

    # A renames itself: B sees the new name on the caret and in the list.
    await a.testid("user-name").fill("Ada L.")
    await a.testid("user-name").press("Enter")
    await expect(caret).to_have_text("Ada L.", timeout=SOON)
    await expect(peers).to_have_text(["Grace", "Ada L."], timeout=SOON)

    await a.page.close()
    await expect(caret).to_have_count(0, timeout=5_000)
    await expect(peers).to_have_text(["Grace"], timeout=5_000)


async def test_offline_edits_stay_in_the_page_and_merge_on_reconnect(open_tab: OpenTab) -> None:
    a = await open_tab("Ada")
    b = await open_tab("Grace")
    await a.open("offline")
    await b.open("offline")
    await a.type_at("end", "shared start.")
    await b.wait_text("shared start.")

    await a.context.set_offline(True)
    await a.wait_state("connection", "offline")
    await a.type_at("end", " Ada offline.")
    await a.wait_state("saved", "unsaved")
    await b.type_at("start", "Grace online. ")
    await b.wait_text("Grace online. shared start.")
    assert await a.text() == "shared start. Ada offline."

    await a.context.set_offline(False)
    expected = "Grace online. shared start. Ada offline."
    await a.wait_state("connection", "connected")
    await a.wait_text(expected)
    await b.wait_text(expected)
    await a.wait_state("saved", "saved")
    await b.wait_state("saved", "saved")


async def test_edits_survive_a_server_outage_and_a_reload_while_it_is_down(
    open_tab: OpenTab, server: Any
) -> None:
    a = await open_tab("Ada")
    b = await open_tab("Grace")
    await a.open("outage")
    await b.open("outage")
    await a.type_at("end", "before.")
    await a.wait_state("saved", "saved")
    await b.wait_text("before.")
    # The service worker must be active to serve the page while the server is down.
    await a.page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")

    server.stop()
    await a.wait_state("connection", "offline")
    await a.type_at("end", " during.")
    await a.wait_state("saved", "unsaved")
    await a.flush_local_store()

    await a.page.reload()  # served by the service worker, document from IndexedDB
    await a.page.wait_for_function("() => window.collab !== undefined", timeout=SOON)
    await a.wait_text("before. during.")
    await a.wait_state("connection", "offline")
    await a.wait_state("saved", "unsaved")

    server.start()
    await a.wait_state("connection", "connected", timeout=20_000)
    await b.wait_text("before. during.", timeout=20_000)
    await a.wait_state("saved", "saved")
    assert await server_text(server, "outage") == "before. during."


async def test_an_edit_from_a_python_client_appears_in_the_page(
    open_tab: OpenTab, server: Any
) -> None:
    name = "python/caf\u00e9 \u65e5\u672c"  # a slash and Unicode travel in the URL
    a = await open_tab("Ada")
    await a.open(name)
    async with Client(ws_url(server, name), ack=True) as client:
        await client.synced()
        text = client.doc.get("content", type=Text)
        text += "written by pycrdt"
        await a.wait_text("written by pycrdt")
        await expect(a.page.locator(".cm-content")).to_contain_text("written by pycrdt")

        await a.type_at("end", ", read in Chromium")
        await client.wait_for(lambda: str(text) == "written by pycrdt, read in Chromium")
    await a.wait_state("saved", "saved")


async def test_picker_lists_documents_and_opens_one_by_name(open_tab: OpenTab, server: Any) -> None:
    async with Client(ws_url(server, "existing doc"), ack=True) as client:
        await client.synced()
        client.doc.get("content", type=Text).insert(0, "hi")
        await client.wait_durable()

    tab = await open_tab("Ada")
    await tab.page.goto(server.http_url + "/")
    doc_link = tab.testid("docs").get_by_role("link", name="existing doc")
    await expect(doc_link).to_have_attribute("href", "/d/existing%20doc", timeout=SOON)

    await tab.testid("open-name").fill("team/new \u00e9t\u00e9")
    await tab.testid("open-button").click()
    await tab.page.wait_for_url("**/d/team/new%20%C3%A9t%C3%A9")
    await tab.wait_connected()
    await expect(tab.testid("doc-name")).to_have_text("team/new \u00e9t\u00e9")
    await tab.wait_state("connection", "connected")
    await tab.wait_state("saved", "saved")
    await tab.type_at("end", "fresh")
    await tab.wait_state("saved", "saved")
    assert await server_text(server, "team/new \u00e9t\u00e9") == "fresh"

    await tab.page.goto(server.http_url + "/")
    await expect(tab.testid("docs").get_by_test_id("doc")).to_have_count(2, timeout=SOON)


async def test_editor_without_a_name_goes_to_the_picker(open_tab: OpenTab, server: Any) -> None:
    tab = await open_tab("Ada")
    await tab.page.goto(server.http_url + "/d/")
    await tab.page.wait_for_url(server.http_url + "/")
    await expect(tab.testid("open-form")).to_be_visible()
