"""The ASGI side: websocket connections to rooms, and the plain HTTP routes.

Routing rule: every websocket upgrade, at any path, is a connection to the document
named by that path. Plain HTTP requests go to ``/healthz``, ``/readyz``, ``/api/...`` or,
for anything else, the browser editor's static files. So HTTP paths never collide with
document names.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_to_bytes

import anyio

from collab import metrics
from collab.errors import CloseCode, RemoteProtocolError, StoreError
from collab.protocol import decode
from collab.transport import static
from collab.transport.peer import WebSocketPeer
from collab.transport.types import Receive, Scope, Send

if TYPE_CHECKING:
    from collab.app import CollabApp

log = logging.getLogger("collab.transport")

#: Longest document name accepted, in UTF-8 bytes.
MAX_NAME_BYTES = 512
#: Longest a document listing waits for queued updates to commit before it answers
#: without them (a locked database would otherwise hold the request open indefinitely).
LIST_FLUSH_TIMEOUT = 2.0


def room_name(scope: Scope) -> str:
    """The document name of a websocket scope: its path after the first ``/``, percent-decoded.

    :raises RemoteProtocolError: (close code 4400) the name is empty, too long or not UTF-8.
    """
    raw = scope.get("raw_path")
    if raw is None:
        raw = scope["path"].encode("utf-8")
    raw = bytes(raw).partition(b"?")[0]
    root = scope.get("root_path", "").encode("utf-8")
    if root and raw.startswith(root):
        raw = raw[len(root) :]  # mounted under a prefix: the name starts after it
    name_bytes = unquote_to_bytes(raw[1:] if raw.startswith(b"/") else raw)
    if not name_bytes:
        raise RemoteProtocolError("empty document name", CloseCode.BAD_DOCUMENT_NAME)
    if len(name_bytes) > MAX_NAME_BYTES:
        raise RemoteProtocolError(
            f"document name is {len(name_bytes)} bytes; the limit is {MAX_NAME_BYTES}",
            CloseCode.BAD_DOCUMENT_NAME,
        )
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            "document name is not valid UTF-8", CloseCode.BAD_DOCUMENT_NAME
        ) from None
    # Control characters cannot be typed in a name, garble `collab docs list`, and a NUL
    # cuts the name short in SQLite's string functions.
    if any(c < " " or c == "\x7f" for c in name):
        raise RemoteProtocolError(
            "document name contains a control character", CloseCode.BAD_DOCUMENT_NAME
        )
    return name


def query_flag(scope: Scope, key: str) -> bool:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(key, [])
    return any(v.lower() in ("1", "true", "yes") for v in values)


def _client_label(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "peer"


async def _close(send: Send, code: int, reason: str) -> None:
    # RFC 6455 section 5.5: a control frame payload is at most 125 bytes, 2 of them the code.
    reason_bytes = reason.encode("utf-8")[:123]
    reason = reason_bytes.decode("utf-8", errors="ignore")
    await send({"type": "websocket.close", "code": int(code), "reason": reason})


async def websocket_endpoint(app: CollabApp, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    # Accept first, even to refuse: a close code and reason reach the client only over
    # an open websocket (a refused handshake is just an HTTP 403 to it).
    await send({"type": "websocket.accept"})
    label = _client_label(scope)
    try:
        name = room_name(scope)
    except RemoteProtocolError as e:
        await _close(send, e.close_code, str(e))
        return
    if app.stopping:
        await _close(send, CloseCode.GOING_AWAY, "server is shutting down")
        return
    try:
        room = await app.rooms.open(name)
    except StoreError as e:
        log.error("cannot open %r for %s: %s", name, label, e)
        await _close(send, CloseCode.STORE_UNAVAILABLE, "document cannot be loaded; try later")
        return
    if app.stopping:  # shutdown began while the document loaded: close_peers missed us
        await _close(send, CloseCode.GOING_AWAY, "server is shutting down")
        return

    peer = WebSocketPeer(
        send,
        queue_size=app.settings.send_queue_size,
        wants_ack=query_flag(scope, "ack"),
        label=f"{label} on {name!r}",
    )
    app.peers.add(peer)
    metrics.CONNECTIONS.inc()
    disconnected = False
    try:
        # asyncio.timeout(None) is the standard library's cancel scope: a close from
        # elsewhere (a full outbox, shutdown, a retired document) ends the reading loop
        # at its next await, and only that (see WebSocketPeer.attach).
        async with asyncio.timeout(None) as reading:
            peer.attach(reading)
            try:
                for frame in room.join(peer):
                    peer.send_nowait(frame)
                while True:  # inline, not a helper coroutine: one frame less per connection
                    message = await receive()
                    if message["type"] == "websocket.receive":
                        data = message.get("bytes")
                        if data is None:
                            peer.close_nowait(
                                CloseCode.UNSUPPORTED_DATA,
                                "text frames are not part of the y-websocket protocol",
                            )
                            break
                        try:
                            for reply in room.receive(peer, decode(data)):
                                peer.send_nowait(reply)
                        except RemoteProtocolError as e:
                            peer.close_nowait(e.close_code, str(e))
                            break
                        except Exception:
                            # A bug of ours, not the client's: say so (1011), keep the
                            # others going.
                            log.exception("error handling a message from %s", peer.label)
                            peer.close_nowait(CloseCode.INTERNAL_ERROR, "internal server error")
                            break
                    elif message["type"] == "websocket.disconnect":
                        disconnected = True
                        break
            finally:
                peer.attach(None)
    except TimeoutError:
        if not reading.expired():
            raise
    finally:
        drainer = peer.stop_writing()
        if drainer is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait([drainer])
        room.leave(peer)
        app.peers.discard(peer)
        metrics.CONNECTIONS.dec()
        if peer.close_code is not None:
            metrics.CLOSED.labels(code=str(int(peer.close_code))).inc()
    if not disconnected:
        with anyio.CancelScope(shield=True):
            code = peer.close_code if peer.close_code is not None else CloseCode.NORMAL
            try:
                await _close(send, code, peer.close_reason)
            except OSError:
                pass  # the client is already gone; nothing left to tell it


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond_json(send: Send, status: int, data: Any, head: bool = False) -> None:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    await _respond(send, status, body, "application/json", head)


async def respond_text(send: Send, status: int, text: str, head: bool = False) -> None:
    await _respond(send, status, text.encode("utf-8"), "text/plain; charset=utf-8", head)


async def http_endpoint(app: CollabApp, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    method: str = scope["method"]
    head = method == "HEAD"
    if path in ("/healthz", "/readyz", "/metrics", "/api/docs", "/api/stats") and method not in (
        "GET",
        "HEAD",
    ):
        body = f"{method} is not allowed on {path}; use GET\n".encode()
        await _respond(
            send, 405, body, "text/plain; charset=utf-8", extra=[(b"allow", b"GET, HEAD")]
        )
        return
    if path == "/healthz":
        await respond_text(send, 200, "ok\n", head)
    elif path == "/readyz":
        if app.ready and not app.stopping:
            await respond_text(send, 200, "ready\n", head)
        else:
            await respond_text(send, 503, "not ready\n", head)
    elif path == "/metrics":
        body, content_type = metrics.render()
        await _respond(send, 200, body, content_type, head)
    elif path == "/api/stats":
        await respond_json(send, 200, metrics.stats(), head)
    elif path == "/api/docs":
        params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            limit = int(params.get("limit", ["50"])[0])
            if not 1 <= limit <= 1000:
                raise ValueError
        except ValueError:
            error = {"error": "limit must be an integer from 1 to 1000"}
            await respond_json(send, 400, error, head)
            return
        try:
            docs = await app.store.list_docs(limit, flush_timeout=LIST_FLUSH_TIMEOUT)
        except StoreError as e:
            await respond_json(send, 503, {"error": f"the store cannot be read: {e}"}, head)
            return
        await respond_json(send, 200, {"docs": [asdict(d) for d in docs]}, head)
    elif path.startswith("/api/"):
        await respond_json(send, 404, {"error": f"no API route {path}"}, head)
    else:
        await static_endpoint(scope, receive, send)


async def static_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await static.handle(scope, receive, send)
