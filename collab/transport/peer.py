"""One websocket connection: its bounded outbox and the task that drains it."""

from __future__ import annotations

import logging

import anyio
from anyio import BrokenResourceError, ClosedResourceError, WouldBlock

from collab.errors import CloseCode
from collab.transport.types import Send

log = logging.getLogger("collab.peer")


class WebSocketPeer:
    """A :class:`collab.rooms.Peer` over an ASGI websocket.

    Frames are queued with :meth:`send_nowait` and written by :meth:`run_sender`, so a
    slow client never stalls the room: when its outbox is full it is closed with
    :attr:`CloseCode.TOO_SLOW` and resyncs when it reconnects.
    """

    def __init__(self, send: Send, *, queue_size: int, wants_ack: bool, label: str) -> None:
        self.wants_ack = wants_ack
        self.label = label
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._send = send
        self._outbox, self._inbox = anyio.create_memory_object_stream[bytes](queue_size)
        self._cancel_scope: anyio.CancelScope | None = None

    def send_nowait(self, frame: bytes) -> None:
        try:
            self._outbox.send_nowait(frame)
        except WouldBlock:
            self.close_nowait(CloseCode.TOO_SLOW, "client fell too far behind; reconnect to resync")
        except (BrokenResourceError, ClosedResourceError):
            pass  # already closing; the frame has nowhere to go

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close with ``code``; it happens at the next checkpoint."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            log.info("closing %s: %d %s", self.label, code, reason)
        self._outbox.close()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def close_streams(self) -> None:
        self._outbox.close()
        self._inbox.close()

    def attach(self, cancel_scope: anyio.CancelScope) -> None:
        self._cancel_scope = cancel_scope
        if self.close_code is not None:
            cancel_scope.cancel()

    async def run_sender(self) -> None:
        send = self._send
        async with self._inbox:
            async for frame in self._inbox:
                await send({"type": "websocket.send", "bytes": frame})
