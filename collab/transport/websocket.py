"""The websocket endpoint: one connection to the room of the document its path names.

Every websocket upgrade, at any path, is a connection to the document named by that path
(:func:`room_name`); plain HTTP never comes here (``collab.transport.http``). The
connection is accepted first, even to refuse it, so that a close code and reason reach
the client; then the extensions authenticate it (:meth:`collab.hooks.Hooks.authenticate`),
its room is opened, and its frames go through :meth:`collab.rooms.Room.receive` in this
one coroutine: no task per connection, eager writes (``collab.transport.peer``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qs, unquote_to_bytes

import anyio

from collab import logs, metrics
from collab.access import choose_subprotocol
from collab.errors import CloseCode, RemoteProtocolError, StoreError
from collab.hooks import (
    ANONYMOUS_WRITER,
    AuthenticatePayload,
    DisconnectPayload,
    ExtensionError,
    Identity,
    Refused,
)
from collab.limits import RateLimit
from collab.names import name_from_bytes
from collab.protocol import SyncStep1, decode
from collab.rooms import TooManyDocumentsError
from collab.transport.interface import Server
from collab.transport.peer import WebSocketPeer
from collab.transport.types import WRITE_FRAME_EXTENSION, Receive, Scope, Send

log = logging.getLogger("collab.transport")


def room_name(scope: Scope) -> str:
    """The document name of a websocket scope: its path after the first ``/``,
    percent-decoded, then checked and normalized by :func:`collab.names.name_from_bytes`.

    :raises BadNameError: (close code 4400) the name breaks the naming rule.
    """
    raw = scope.get("raw_path")
    if raw is None:
        raw = scope["path"].encode("utf-8")
    raw = bytes(raw).partition(b"?")[0]
    root = scope.get("root_path", "").encode("utf-8")
    if root and raw.startswith(root):
        raw = raw[len(root) :]  # mounted under a prefix: the name starts after it
    return name_from_bytes(unquote_to_bytes(raw[1:] if raw.startswith(b"/") else raw))


def query_flag(scope: Scope, key: str) -> bool:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(key, [])
    return any(v.lower() in ("1", "true", "yes") for v in values)


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def _client_label(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "peer"


async def _close(send: Send, code: int, reason: str) -> None:
    # RFC 6455 section 5.5: a control frame payload is at most 125 bytes, 2 of them the code.
    reason_bytes = reason.encode("utf-8")[:123]
    reason = reason_bytes.decode("utf-8", errors="ignore")
    await send({"type": "websocket.close", "code": int(code), "reason": reason})


def _headers(scope: Scope) -> dict[str, str]:
    return {
        bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
        for k, v in scope.get("headers") or []
    }


async def _authenticate(server: Server, scope: Scope, name: str, label: str) -> Identity:
    """The identity the extensions give this connection.

    :raises Refused: an extension refused it.
    :raises ExtensionError: an extension failed.
    """
    if not server.hooks.on_authenticate:
        return ANONYMOUS_WRITER
    payload = AuthenticatePayload(
        document=name,
        headers=_headers(scope),
        query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
        subprotocols=tuple(scope.get("subprotocols") or ()),
        client=label,
        identity=ANONYMOUS_WRITER,
    )
    try:
        return await server.hooks.authenticate(payload)
    except Refused:
        raise
    except Exception as e:
        log.exception("on_authenticate hook failed for %s on %r", label, name)
        raise ExtensionError(f"an extension failed: {e}") from e


async def websocket_endpoint(server: Server, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    headers = _headers(scope)
    host, origin = headers.get("host"), headers.get("origin")
    if not server.origins.host_allowed(host) or not server.origins.origin_allowed(origin, host):
        # Closed before it is accepted: the ASGI server answers the handshake with 403.
        # A page of another site (cross-site websocket hijacking) or a name that is not
        # the server's (DNS rebinding) never gets a websocket.
        metrics.REFUSED.labels(reason="origin" if host else "host").inc()
        log.info(
            "refused a websocket from %s: Host %r, Origin %r", _client_label(scope), host, origin
        )
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    # Accept first, even to refuse: a close code and reason reach the client only over
    # an open websocket (a refused handshake is just an HTTP 403 to it).
    accept: dict[str, object] = {"type": "websocket.accept"}
    subprotocol = choose_subprotocol(list(scope.get("subprotocols") or ()))
    if subprotocol is not None:
        accept["subprotocol"] = subprotocol
    await send(accept)
    label = _client_label(scope)
    address = _client_address(scope)
    try:
        name = room_name(scope)
    except RemoteProtocolError as e:
        await _close(send, e.close_code, str(e))
        return
    if server.stopping:
        await _close(send, CloseCode.GOING_AWAY, "server is shutting down")
        return
    refusal = server.caps.refusal(address, name)
    if refusal is not None:
        metrics.LIMIT_HITS.labels(limit="connections").inc()
        server.log_throttled("connections", f"refused a connection from {label}: {refusal}")
        await _close(send, CloseCode.TRY_AGAIN_LATER, refusal)
        return
    server.caps.acquire(address, name)
    try:
        await _serve_connection(server, scope, receive, send, name, label)
    finally:
        server.caps.release(address, name)


async def _serve_connection(
    server: Server, scope: Scope, receive: Receive, send: Send, name: str, label: str
) -> None:
    try:
        identity = await _authenticate(server, scope, name, label)
        room = await server.rooms.open(name)
    except Refused as e:
        await _close(send, e.close_code, str(e))
        return
    except ExtensionError:
        await _close(send, CloseCode.INTERNAL_ERROR, "an extension of the server failed")
        return
    except TooManyDocumentsError as e:
        server.log_throttled("documents", f"refused {label} on {name!r}: {e}")
        await _close(send, CloseCode.TRY_AGAIN_LATER, str(e))
        return
    except StoreError as e:
        log.error("cannot open %r for %s: %s", name, label, e)
        await _close(send, CloseCode.STORE_UNAVAILABLE, "document cannot be loaded; try later")
        return
    if server.stopping:  # shutdown began while the document loaded: close_peers missed us
        await _close(send, CloseCode.GOING_AWAY, "server is shutting down")
        return

    peer = WebSocketPeer(
        send,
        queue_size=server.settings.send_queue_size,
        queue_bytes=server.settings.send_queue_bytes,
        wants_ack=query_flag(scope, "ack"),
        label=f"{label} on {name!r}",
        identity=identity,
        address=_client_address(scope),
        write_frame=scope.get("extensions", {}).get(WRITE_FRAME_EXTENSION),
    )
    opened = time.monotonic()
    loop = asyncio.get_running_loop()
    rate = RateLimit.from_settings(server.settings, loop.time())
    expiry = None
    if identity.expires_at is not None:
        # The token ends the connection when it expires, not only when it next connects.
        delay = max(identity.expires_at - time.time(), 0.0)
        expiry = loop.call_later(delay, peer.close_nowait, CloseCode.UNAUTHORIZED, "token expired")
    server.peers.add(peer)
    logs.event(
        log,
        logging.INFO,
        "connection.opened",
        "connection opened",
        doc=name,
        client=label,
        user=identity.user,
        access=identity.access.name.lower(),
    )
    messages_in = bytes_in = 0
    metrics.CONNECTIONS.inc()
    disconnected = False
    client_code: int | None = None
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
                        messages_in += 1
                        if data is None:
                            peer.close_nowait(
                                CloseCode.UNSUPPORTED_DATA,
                                "text frames are not part of the y-websocket protocol",
                            )
                            break
                        bytes_in += len(data)
                        metrics.count(metrics.traffic_in, data)
                        limited = rate.allows(len(data), loop.time())
                        if limited is not None:
                            metrics.LIMIT_HITS.labels(limit=limited).inc()
                            server.log_throttled("rate", f"{peer.label} sent too many {limited}")
                            peer.close_nowait(
                                CloseCode.POLICY_VIOLATION, f"too many {limited} per second"
                            )
                            break
                        try:
                            incoming = decode(data)
                            if type(incoming) is SyncStep1:
                                if peer.holds_step2:
                                    # The step 2 still queued, and the updates queued after
                                    # it, bring this client up to date: one is enough.
                                    continue
                                for reply in room.receive(peer, incoming):
                                    peer.send_step2(reply)
                                continue
                            for reply in room.receive(peer, incoming):
                                peer.send_nowait(reply)
                        except RemoteProtocolError as e:
                            peer.close_nowait(e.close_code, str(e))
                            break
                        except ExtensionError:  # logged where it happened
                            peer.close_nowait(
                                CloseCode.INTERNAL_ERROR, "an extension of the server failed"
                            )
                            break
                        except Exception:
                            # A bug of ours, not the client's: say so (1011), keep the
                            # others going.
                            log.exception("error handling a message from %s", peer.label)
                            peer.close_nowait(CloseCode.INTERNAL_ERROR, "internal server error")
                            break
                    elif message["type"] == "websocket.disconnect":
                        disconnected = True
                        client_code = message.get("code")
                        break
            finally:
                peer.attach(None)
    except TimeoutError:
        if not reading.expired():
            raise
    finally:
        if expiry is not None:
            expiry.cancel()
        drainer = peer.stop_writing()
        if drainer is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait([drainer])
        room.leave(peer)
        server.peers.discard(peer)
        metrics.CONNECTIONS.dec()
        if peer.close_code is not None:
            metrics.CLOSED.labels(code=str(int(peer.close_code))).inc()
    code = peer.close_code if peer.close_code is not None else CloseCode.NORMAL
    logs.event(
        log,
        logging.INFO,
        "connection.closed",
        "connection closed",
        doc=name,
        client=label,
        user=identity.user,
        duration=round(time.monotonic() - opened, 3),
        messages_in=messages_in,
        bytes_in=bytes_in,
        messages_out=peer.messages_out,
        bytes_out=peer.bytes_out,
        code=int(peer.close_code) if peer.close_code is not None else client_code,
        reason=peer.close_reason or None,
        by="server" if peer.close_code is not None else "client",
    )
    if not disconnected:
        with anyio.CancelScope(shield=True):
            try:
                await _close(send, code, peer.close_reason)
            except OSError:
                pass  # the client is already gone; nothing left to tell it
    if server.hooks.on_disconnect:
        with anyio.CancelScope(shield=True):
            payload = DisconnectPayload(name, identity, int(code), time.monotonic() - opened)
            await server.hooks.disconnected(payload)
