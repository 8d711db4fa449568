"""The websocket endpoint in process, for races a real socket cannot time."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio

from collab.app import build_app
from collab.config import Settings
from collab.errors import CloseCode
from collab.protocol import SyncStep1, encode
from collab.rooms import Room
from collab.transport.asgi import websocket_endpoint

SCOPE = {"type": "websocket", "path": "/doc", "raw_path": b"/doc", "query_string": b""}


async def test_a_connection_whose_document_loads_across_shutdown_is_told_so() -> None:
    app = build_app(Settings(db=":memory:"))
    async with app.running():
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        inbox.put_nowait({"type": "websocket.receive", "bytes": encode(SyncStep1(b"\x00"))})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        open_room = app.rooms.open

        async def open_across_shutdown(name: str) -> Room:
            room = await open_room(name)
            app.close_peers()  # shutdown starts while the document loads
            return room

        app.rooms.open = open_across_shutdown  # type: ignore[method-assign]
        with anyio.fail_after(5):
            await websocket_endpoint(app, SCOPE, inbox.get, send)
        assert sent[-1]["type"] == "websocket.close"
        assert sent[-1]["code"] == CloseCode.GOING_AWAY
        assert not app.peers
        assert not app.rooms.rooms["doc"].peers
