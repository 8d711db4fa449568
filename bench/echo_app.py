"""The "limit" target: a bare ASGI websocket app that relays each binary frame to the other
connections on the same path, with no CRDT, no storage and no protocol parsing.

Scenario 2 against it shows what the ASGI server stack itself allows. The driver's clients
treat it as already synced and apply the relayed updates as usual.

Example::

    hypercorn --bind 127.0.0.1:1234 echo_app:app
    uvicorn --host 127.0.0.1 --port 1234 echo_app:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

rooms: dict[str, set[Send]] = {}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"echo\n"})
        return
    if scope["type"] != "websocket":
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    peers = rooms.setdefault(scope["path"], set())
    peers.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("bytes")
            if frame is None:
                continue
            out = {"type": "websocket.send", "bytes": frame}
            for peer in list(peers):
                if peer is not send:
                    await peer(out)
    finally:
        peers.discard(send)
        if not peers:
            rooms.pop(scope["path"], None)
