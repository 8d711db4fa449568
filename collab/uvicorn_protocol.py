"""uvicorn's websocket protocol as ``collab serve --server uvicorn`` runs it.

uvicorn's protocol over websockets' sans-I/O engine, with three changes: the bounds on
incomplete frames that hypercorn gets from collab.server, a direct write for relayed
frames, and a lighter idle connection. Imported only when uvicorn runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from collab.transport.types import WRITE_FRAME_EXTENSION


class Inbox:
    """The part of :class:`asyncio.Queue` uvicorn uses for a connection's incoming
    messages (one consumer, never full), without its four deques and an Event: about
    2.5 KiB less per idle connection (bench/conn_memory.py)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag:
    """The part of :class:`asyncio.Event` uvicorn uses for flow control (``writable``),
    with its list of waiters made only when someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._set = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


_last_frame: tuple[bytes, bytes] = (b"", b"")


def binary_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked binary websocket frame (RFC 6455 section 5.2),
    as a server sends it. A fan-out writes the same payload to every peer in a row: the
    last one framed is kept, so it is framed once."""
    global _last_frame
    last, framed = _last_frame
    if payload is last:
        return framed
    n = len(payload)
    if n < 126:
        head = bytes((0x82, n))
    elif n < 65536:
        head = bytes((0x82, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 127)) + n.to_bytes(8, "big")
    framed = head + payload
    _last_frame = (payload, framed)
    return framed


def bounded_sansio_protocol(deadline: float, total_cap: int) -> type[asyncio.Protocol]:
    """uvicorn's websocket protocol (websockets' sans-I/O engine), with the bounds of
    collab.server's ``BoundedFrameBuffer`` (hypercorn): a message must arrive whole within
    ``deadline`` seconds of its first byte (``--frame-deadline``), and the bytes of
    incomplete messages of all connections together stay under ``total_cap``
    (``--max-partial-bytes``); past either, the connection closes with 1009. websockets
    caps only the size of each message.

    It also offers the endpoint a direct write (:data:`WRITE_FRAME_EXTENSION`): framing a
    message and writing it to the socket, without the ASGI ``send`` coroutine and
    websockets' frame objects, which were most of the cost of a relayed update. Only
    final binary frames go that way, so websockets' own state (fragmentation, closing)
    never misses anything; everything else still goes through ASGI.

    The bytes held are those the parser has not yet made a frame of, plus the fragments
    of a message not yet complete. A message that stalls midway is caught by a timer at
    its deadline; its sender cannot keep it alive by answering pings, as a pong cannot
    come in the middle of a frame.
    """
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class BoundedSansIOProtocol(WebSocketsSansIOProtocol):
        #: Bytes held by incomplete messages of every connection.
        partial_total = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = Inbox()  # type: ignore[assignment]
            self.writable = Flag(self.writable.is_set())  # type: ignore[assignment]
            self._held = 0
            self._started = 0.0
            self._deadline_timer: asyncio.TimerHandle | None = None

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # an upgrade it accepted: offer the direct write
                scope["extensions"][WRITE_FRAME_EXTENSION] = self.write_frame

        async def send(self, message: Any) -> None:
            await super().send(message)
            if self.handshake_complete and getattr(self, "response", None) is not None:
                # The handshake's request and response (their headers, ~4 KiB) are not
                # read again once it is done: an idle connection holds them no longer.
                self.request = self.response = None  # type: ignore[assignment]

        def write_frame(self, payload: bytes) -> bool:
            """Write one binary message straight to the socket, as its ``websocket.send``
            would, if that would not wait: an open connection, not paused by flow
            control. False: send it through ASGI instead."""
            if (
                self.close_sent
                or self.disconnected
                or not self.handshake_complete
                or not self.writable.is_set()
                or self.transport.is_closing()
            ):
                return False
            self.transport.write(binary_frame(payload))
            return True

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.close_sent:
                self._account()

        def connection_lost(self, exc: Exception | None) -> None:
            self._release()
            super().connection_lost(exc)

        def _account(self) -> None:
            held = len(self.conn.reader.buffer) + sum(len(f) for f in self.frames)
            cls = BoundedSansIOProtocol
            cls.partial_total += held - self._held
            if held and not self._held:
                self._started = self.loop.time()
                self._deadline_timer = self.loop.call_later(deadline, self._refuse)
            elif not held and self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
            self._held = held
            if held and (
                cls.partial_total > total_cap or self.loop.time() - self._started > deadline
            ):
                self._refuse()

        def _refuse(self) -> None:
            self._release()
            if self.close_sent or self.transport.is_closing():
                return
            self.conn.fail(1009, "message too big or too slow")
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()

        def _release(self) -> None:
            BoundedSansIOProtocol.partial_total -= self._held
            self._held = 0
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None

    return BoundedSansIOProtocol
