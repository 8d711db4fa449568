"""Helpers for the browser tests: a Tab around one Playwright page, and screenshots."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from playwright.async_api import Browser, BrowserContext, Page

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that phones home: no QUIC, no component updates, no sync, no
#: background networking. Playwright adds a fresh temporary --user-data-dir itself.
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

#: Console errors that are the browser's own report of a connection the test broke on purpose.
EXPECTED_CONSOLE_ERRORS = re.compile(
    r"WebSocket connection to .* failed|net::ERR_(INTERNET_DISCONNECTED|CONNECTION_REFUSED)"
    r"|Failed to load resource"
)

#: Timeout for anything a person would see "at once" (ms).
SOON = 10_000


def doc_path(name: str) -> str:
    """The editor page of a document, as the page itself builds it (docname.js)."""
    return "/d/" + "/".join(quote(segment, safe="") for segment in name.split("/"))


@dataclass
class Tab:
    """One browser tab (in its own context) on a collab server, with what it logged."""

    context: BrowserContext
    page: Page
    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    async def open(self, name: str) -> None:
        """Open the editor for ``name`` and wait until the document is synced."""
        await self.page.goto(self.origin + doc_path(name))
        await self.wait_connected()

    async def wait_connected(self) -> None:
        await self.page.wait_for_function(
            "() => window.collab && window.collab.provider.synced", timeout=SOON
        )

    async def text(self) -> str:
        """The shared Y.Text, after checking that the editor shows the same."""
        shared, shown = await self.page.evaluate(
            "() => [window.collab.text.toString(), window.collab.view.state.doc.toString()]"
        )
        assert shared == shown, "CodeMirror and the Y.Text disagree"
        return str(shared)

    async def wait_text(self, expected: str, timeout: float = SOON) -> None:
        await self.page.wait_for_function(
            """expected => window.collab.text.toString() === expected
                && window.collab.view.state.doc.toString() === expected""",
            arg=expected,
            timeout=timeout,
        )

    async def wait_text_contains(self, part: str, timeout: float = SOON) -> None:
        await self.page.wait_for_function(
            "part => window.collab.text.toString().includes(part)", arg=part, timeout=timeout
        )

    async def wait_state(self, testid: str, state: str, timeout: float = SOON) -> None:
        await self.page.wait_for_function(
            """([testid, state]) =>
                document.querySelector(`[data-testid="${testid}"]`)?.dataset.state === state""",
            arg=[testid, state],
            timeout=timeout,
        )

    async def type_at(self, position: str, text: str, delay: float = 0) -> None:
        """Focus the editor, put the caret at "start" or "end", and type ``text``."""
        await self.page.locator(".cm-content").click()
        key = "Control+Home" if position == "start" else "Control+End"
        await self.page.keyboard.press(key)
        await self.page.keyboard.type(text, delay=delay)

    async def flush_local_store(self) -> None:
        """Wait until y-indexeddb's pending writes are committed (IndexedDB orders them)."""
        await self.page.evaluate(
            """async () => {
                const db = await window.collab.local._db
                await new Promise((resolve, reject) => {
                    const tx = db.transaction(['updates'], 'readonly')
                    tx.objectStore('updates').count()
                    tx.oncomplete = resolve
                    tx.onerror = () => reject(tx.error)
                })
            }"""
        )


OpenTab = Callable[..., Awaitable[Tab]]


async def save_side_by_side(browser: Browser, tabs: list[Tab], path: Path) -> None:
    """One PNG of several tabs next to each other, composed in the browser (no image library)."""
    shots = [base64.b64encode(await tab.page.screenshot()).decode() for tab in tabs]
    images = "".join(
        f'<figure><img src="data:image/png;base64,{shot}"><figcaption>tab {i + 1}'
        "</figcaption></figure>"
        for i, shot in enumerate(shots)
    )
    html = (
        "<style>body{margin:0;padding:16px;display:inline-flex;gap:16px;background:#e9ecef;"
        "font:13px system-ui,sans-serif;color:#495057}figure{margin:0}"
        "img{display:block;border:1px solid #adb5bd;border-radius:6px;"
        "box-shadow:0 2px 8px #0002}figcaption{margin-top:6px;text-align:center}</style>" + images
    )
    context = await browser.new_context(viewport={"width": 1600, "height": 900})
    try:
        page = await context.new_page()
        await page.set_content(html)
        await page.wait_for_function("() => [...document.images].every(i => i.complete)")
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.locator("body").screenshot(path=str(path))
    finally:
        await context.close()
