"""The websocket endpoint in process, for races a real socket cannot time."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio

from collab import metrics
from collab.app import build_app
from collab.config import Settings
from collab.errors import CloseCode
from collab.protocol import SyncStep1, encode
from collab.rooms import Room
from collab.transport import http as http_routes
from collab.transport.websocket import websocket_endpoint

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


async def http(app: Any, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through collab's ASGI app, no server."""
    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}
    if "?" in path:
        scope["path"], query = path.split("?", 1)
        scope["query_string"] = query.encode()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body["body"]


async def test_api_routes_say_which_methods_they_allow_and_head_has_no_body() -> None:
    app = build_app(Settings(db=":memory:"))
    async with app.running():
        status, headers, _ = await http(app, "/healthz", "POST")
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        for path in ("/api/nothing", "/api/docs?limit=abc", "/api/docs"):
            _, _, body = await http(app, path, "HEAD")
            assert body == b"", path


async def test_the_document_list_answers_while_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    app = build_app(Settings(db=path))
    async with app.running():
        app.store.append_nowait("stored", b"\x00\x00")
        await app.store.flush()
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            app.store.append_nowait("waiting", b"\x00\x00")
            with anyio.fail_after(http_routes.LIST_FLUSH_TIMEOUT + 5):
                status, _, body = await http(app, "/api/docs")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    assert status == 200
    assert [d["name"] for d in json.loads(body)["docs"]] == ["stored"]


def test_commit_stats_cover_the_recent_window_max_included() -> None:
    metrics.note_stored(10**9, 0.0)
    metrics.note_committed(10**9, 5.0)  # one slow commit, long ago
    for i in range(100_001):
        metrics.note_stored(10**9 + 1 + i, 0.0)
        metrics.note_committed(10**9 + 1 + i, 0.001)
    latency = metrics.stats()["commit_latency_ms"]
    assert latency["n"] == 100_000
    assert latency["max"] == 1.0
