"""One websocket connection: its bounded outbox and the task that drains it."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import anyio

from collab.errors import CloseCode
from collab.transport.types import Send

log = logging.getLogger("collab.peer")


class WebSocketPeer:
    """A :class:`collab.rooms.Peer` over an ASGI websocket.

    Frames are queued with :meth:`send_nowait` and written by :meth:`run_sender`, so a
    slow client never stalls the room: when its outbox is full it is closed with
    :attr:`CloseCode.TOO_SLOW` and resyncs when it reconnects.

    The outbox is a plain deque and the sender sleeps on a bare asyncio future: this runs
    once per frame per peer, the hottest path of a fan-out, and an idle connection holds
    nothing else (an anyio memory stream costs a loop round trip per frame and ~3 KiB).
    """

    def __init__(self, send: Send, *, queue_size: int, wants_ack: bool, label: str) -> None:
        self.wants_ack = wants_ack
        self.label = label
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._send = send
        self._queue_size = queue_size
        self._outbox: deque[bytes] = deque()
        self._wakeup: asyncio.Future[None] | None = None  # set while the sender sleeps
        self._closed = False
        self._cancel_scope: anyio.CancelScope | None = None

    def send_nowait(self, frame: bytes) -> None:
        if self._closed:
            return  # already closing; the frame has nowhere to go
        if len(self._outbox) >= self._queue_size:
            self.close_nowait(CloseCode.TOO_SLOW, "client fell too far behind; reconnect to resync")
            return
        self._outbox.append(frame)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close with ``code``; it happens at the next checkpoint."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            log.info("closing %s: %d %s", self.label, code, reason)
        self.close_streams()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def close_streams(self) -> None:
        self._closed = True
        self._outbox.clear()

    def attach(self, cancel_scope: anyio.CancelScope) -> None:
        self._cancel_scope = cancel_scope
        if self.close_code is not None:
            cancel_scope.cancel()

    async def run_sender(self) -> None:
        """Write queued frames until cancelled; a failed write ends the connection."""
        send = self._send
        outbox = self._outbox
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                while outbox:
                    await send({"type": "websocket.send", "bytes": outbox.popleft()})
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
        except Exception as e:
            # The client went away mid-write (the ASGI server raises): stop reading too.
            log.debug("cannot send to %s: %r", self.label, e)
            self._closed = True
            if self._cancel_scope is not None:
                self._cancel_scope.cancel()
