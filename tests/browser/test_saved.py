"""The editor's "saved" in real headless Chromium: exact for an edit that only deletes,
which moves no state vector, while the server cannot commit."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Text

from collab.client import Client
from tests.browser.tabs import OpenTab
from tests.integration.test_offline_client import stored_text, write_lock

pytestmark = pytest.mark.browser


async def test_a_delete_only_edit_shows_saved_only_once_it_is_on_disk(
    open_tab: OpenTab, server: Any
) -> None:
    tab = await open_tab("Ada")
    await tab.open("trim")
    await tab.type_at("end", "keep this, not this")
    await tab.wait_state("saved", "saved")
    async with Client(server.url("trim")) as watcher:
        await watcher.synced()
        async with write_lock(server):
            for _ in range(len(", not this")):
                await tab.page.keyboard.press("Backspace")
            await tab.wait_text("keep this")
            # The server has every deletion (relayed to the watcher) but cannot commit.
            await watcher.wait_for(
                lambda: str(watcher.doc.get("content", type=Text)) == "keep this"
            )
            await tab.wait_state("saved", "saving")
            assert await tab.page.evaluate("() => window.collab.durable.saved") is False
            assert stored_text(server, "trim") == "keep this, not this"
        await tab.wait_state("saved", "saved", timeout=30_000)
    assert stored_text(server, "trim") == "keep this"
