"""Reading a document's change feed (GET /api/docs/{name}/events) with httpx-sse, as a
reader would: the document rebuilt from its events, and the positions they named."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from httpx_sse import ServerSentEvent, aconnect_sse
from pycrdt import Doc, Text


class Feed:
    """An event stream as a reader sees it: the document rebuilt from its events."""

    def __init__(self, events: AsyncIterator[ServerSentEvent], doc: Doc[Any] | None) -> None:
        self._events = events
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        #: (event, id) of every snapshot and update, in order.
        self.positions: list[tuple[str, str]] = []
        self.kinds: list[str] = []
        self.session: str | None = None
        self.state_vector: bytes | None = None
        self.awareness: list[bytes] = []
        self.closed: dict[str, Any] | None = None

    async def next(self, timeout: float = 10.0) -> ServerSentEvent:
        with anyio.fail_after(timeout):
            event = await anext(self._events)
        self.kinds.append(event.event)
        if event.event == "snapshot":
            self.doc = Doc()  # a snapshot starts the document again
            self.doc.apply_update(base64.b64decode(event.data))
        elif event.event == "update":
            self.doc.apply_update(base64.b64decode(event.data))
        elif event.event == "session":
            self.session = json.loads(event.data)["session"]
        elif event.event == "synced":
            self.state_vector = base64.b64decode(event.data)
        elif event.event == "awareness":
            self.awareness.append(base64.b64decode(event.data))
        elif event.event == "close":
            self.closed = json.loads(event.data)
        if event.event in ("snapshot", "update"):
            self.positions.append((event.event, event.id))
        return event

    async def until(self, kind: str, timeout: float = 10.0) -> ServerSentEvent:
        with anyio.fail_after(timeout):
            while True:
                event = await self.next(timeout)
                if event.event == kind:
                    return event

    async def until_text(self, text: str, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while self.text() != text:
                await self.next(timeout)

    def text(self) -> str:
        return str(self.doc.get("content", type=Text))

    @property
    def last_id(self) -> str:
        return self.positions[-1][1]


@asynccontextmanager
async def feed(
    http_url: str,
    name: str,
    *,
    last_event_id: str | None = None,
    query: str = "",
    resume: Feed | None = None,
) -> AsyncIterator[Feed]:
    """Read the feed of ``name``; ``resume``: go on from where that reader was, its doc too."""
    if resume is not None:
        last_event_id = resume.last_id
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        async with aconnect_sse(
            http,
            "GET",
            f"{http_url}/api/docs/{quote(name, safe='')}/events{query}",
            headers=headers,
        ) as source:
            assert source.response.status_code == 200, await source.response.aread()
            assert source.response.headers["content-type"] == "text/event-stream"
            yield Feed(source.aiter_sse(), resume.doc if resume is not None else None)


class Writer:
    """Edits a document over POST /api/docs/{name}/updates, one stored row per call."""

    def __init__(self, http_url: str, name: str) -> None:
        self.url = f"{http_url}/api/docs/{quote(name, safe='')}/updates"
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    async def type(self, chars: str) -> None:
        for char in chars:
            before = self.doc.get_state()
            self.text += char
            await self.post(self.doc.get_update(before))

    async def post(self, update: bytes) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(self.url, content=update)
        assert response.status_code == 200, response.text
