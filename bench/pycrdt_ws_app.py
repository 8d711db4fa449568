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
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom, exception_logger

DB_PATH = os.environ.get("BENCH_PYCRDT_DB", "")
log = logging.getLogger("pycrdt_ws_app")


class Store(SQLiteYStore):
    db_path = DB_PATH


class RoomsServer(WebsocketServer):
    """A WebsocketServer that opens each room once, loading it from the store if there is one.

    Stock ``WebsocketServer.get_room`` hangs when two clients join a new room at the same
    moment: both call ``start_room``, and the second waits forever on the room's start lock,
    which the first holds for the room's lifetime. Here the first caller creates, starts and
    loads the room, and later callers wait for that.
    """

    def __init__(self, db_path: str) -> None:
        super().__init__(
            rooms_ready=not db_path,
            auto_clean_rooms=True,
            log=log,
            exception_handler=exception_logger,
        )
        self.db_path = db_path
        self._opened: dict[str, anyio.Event] = {}

    async def get_room(self, name: str) -> YRoom:
        if name in self.rooms:
            await self._opened[name].wait()
            return self.rooms[name]
        store = Store(path=name, log=log) if self.db_path else None
        room = YRoom(ready=store is None, ystore=store, log=log, exception_handler=exception_logger)
        self.rooms[name] = room
        self._opened[name] = opened = anyio.Event()
        try:
            await self.start_room(room)
            if store is not None:
                async with store.start_lock:
                    if not store.started.is_set():
                        assert self._task_group is not None
                        await self._task_group.start(store.start)
                try:
                    await store.apply_updates(room.ydoc)
                except YDocNotFound:
                    pass
                room.ready = True
        finally:
            opened.set()
        return room

    async def delete_room(self, *, name: str | None = None, room: YRoom | None = None) -> None:
        if name is None:
            assert room is not None
            name = self.get_room_name(room)
        self._opened.pop(name, None)
        await super().delete_room(name=name)


websocket_server = RoomsServer(DB_PATH)
asgi = ASGIServer(websocket_server)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with websocket_server:
            if DB_PATH:
                # Create the schema once, before rooms open their own connections
                # (concurrent first opens would each try to create it).
                async with Store(path="__bench_init__", log=log) as store:
                    assert store.db_initialized is not None
                    await store.db_initialized.wait()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    await asgi(scope, receive, send)
