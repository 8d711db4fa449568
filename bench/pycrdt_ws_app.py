"""pycrdt-websocket benchmark target: an ASGI app for hypercorn.

``BENCH_PYCRDT_DB`` unset or empty keeps documents in memory; a path stores every update in
pycrdt-store's ``SQLiteYStore`` (its defaults: one row per update, a checkpoint every 100).
A room's document is loaded from the store before its first client syncs, as
jupyter-collaboration does. Runs in bench/.venv-peers (pycrdt-websocket pins its own pycrdt).

Example::

    BENCH_PYCRDT_DB=/tmp/y.db hypercorn --bind 127.0.0.1:1234 pycrdt_ws_app:app
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
from pycrdt.store import SQLiteYStore, YDocNotFound
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom

DB_PATH = os.environ.get("BENCH_PYCRDT_DB", "")
log = logging.getLogger("pycrdt_ws_app")


class Store(SQLiteYStore):
    db_path = DB_PATH


class StoredRoomsServer(WebsocketServer):
    """A WebsocketServer whose rooms persist to (and load from) one SQLite database."""

    def __init__(self) -> None:
        super().__init__(rooms_ready=False, auto_clean_rooms=True, log=log)
        self._loaded: dict[str, anyio.Event] = {}

    async def get_room(self, name: str) -> YRoom:
        if name not in self.rooms:
            store = Store(path=name, log=log)
            self.rooms[name] = YRoom(ready=False, ystore=store, log=log)
            self._loaded[name] = loaded = anyio.Event()
            room = self.rooms[name]
            await self.start_room(room)
            async with store.start_lock:
                if not store.started.is_set():
                    assert self._task_group is not None
                    await self._task_group.start(store.start)
            try:
                await store.apply_updates(room.ydoc)
            except YDocNotFound:
                pass
            room.ready = True
            loaded.set()
            return room
        room = self.rooms[name]
        await self._loaded[name].wait()
        await self.start_room(room)
        return room

    async def delete_room(self, *, name: str | None = None, room: YRoom | None = None) -> None:
        if name is None:
            assert room is not None
            name = self.get_room_name(room)
        self._loaded.pop(name, None)
        await super().delete_room(name=name)


def make_server() -> WebsocketServer:
    if DB_PATH:
        return StoredRoomsServer()
    return WebsocketServer(rooms_ready=True, auto_clean_rooms=True, log=log)


websocket_server = make_server()
asgi = ASGIServer(websocket_server)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with websocket_server:
            if DB_PATH:
                # Create the schema once, before rooms open their own connections
                # (concurrent first opens would each try to create it).
                async with Store(path="__bench_init__", log=log):
                    pass
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    await asgi(scope, receive, send)
