"""collab's app served in this process on a real socket, for tests that pass it Python
objects (extensions) a ``collab serve`` child process could not take."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from pycrdt import Decoder

from collab.app import CollabApp
from collab.protocol import Message, PermissionDenied, decode
from collab.server import uvicorn_config
from tests.conftest import free_port


@asynccontextmanager
async def serving(app: CollabApp) -> AsyncIterator[str]:
    """Serve ``app`` under uvicorn (collab's settings for it); yield its ``ws://`` URL."""
    settings = app.settings
    port = free_port()
    config = uvicorn_config(app, dataclasses.replace(settings, port=port))
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            app.close_peers()
            server.should_exit = True


def decode_as_client(frame: bytes) -> Message:
    """:func:`collab.protocol.decode`, plus what only a client receives: permission denied
    (y-protocols auth.js: type 2, sub-type 0, then a length-prefixed UTF-8 reason)."""
    if frame[:2] == b"\x02\x00":
        decoder = Decoder(frame[2:])
        reason = decoder.read_message()
        assert reason is not None and decoder.length == 0, frame
        return PermissionDenied(bytes(reason).decode("utf-8"))
    return decode(frame)


async def next_message(ws: object, kind: type, timeout: float = 5) -> Message:
    """Read frames from a websockets connection until one decodes to ``kind``."""
    with anyio.fail_after(timeout):
        while True:
            message = decode_as_client(await ws.recv())  # type: ignore[attr-defined]
            if isinstance(message, kind):
                return message
