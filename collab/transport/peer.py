"""One websocket connection: its bounded outbox and the task that drains it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any

import anyio

from collab.errors import CloseCode
from collab.transport.types import Send

log = logging.getLogger("collab.peer")


class WebSocketPeer:
    """A :class:`collab.rooms.Peer` over an ASGI websocket.

    A slow client never stalls the room: frames it cannot take yet wait in its outbox, and
    when that is full it is closed with :attr:`CloseCode.TOO_SLOW` (it resyncs when it
    reconnects).

    Writes are eager. When nothing is in flight for this peer, :meth:`send_nowait` starts
    the ASGI server's ``send`` right there and steps it once: both hypercorn and uvicorn
    write the frame to the socket and finish without suspending unless the socket is
    paused by flow control. Only then does the peer's sender task take over: it finishes
    that write (:func:`_finish`) and drains the outbox behind it, in order. A fan-out to 63
    peers is then 63 socket writes in one go, not 63 task wake-ups on later loop turns.
    """

    def __init__(self, send: Send, *, queue_size: int, wants_ack: bool, label: str) -> None:
        self.wants_ack = wants_ack
        self.label = label
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._send = send
        self._queue_size = queue_size
        self._outbox: deque[bytes] = deque()  # non-empty only while the sender is busy
        self._busy = False  # the sender task owns the writes (one is stalled or queued)
        self._stalled: tuple[Coroutine[Any, Any, None], Any] | None = None
        self._wakeup: asyncio.Future[None] | None = None  # set while the sender sleeps
        self._closed = False
        self._cancel_scope: anyio.CancelScope | None = None

    def send_nowait(self, frame: bytes) -> None:
        if self._closed:
            return  # already closing; the frame has nowhere to go
        if self._busy:
            if len(self._outbox) >= self._queue_size:
                self.close_nowait(
                    CloseCode.TOO_SLOW, "client fell too far behind; reconnect to resync"
                )
                return
            self._outbox.append(frame)
            return
        awaitable = self._send({"type": "websocket.send", "bytes": frame})
        write = awaitable if isinstance(awaitable, Coroutine) else _awaiting(awaitable)
        try:
            waiting_on = write.send(None)
        except StopIteration:
            return  # written
        except Exception as e:
            self._failed(e)
            return
        self._busy = True
        self._stalled = (write, waiting_on)
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
        if self._stalled is not None:
            self._stalled[0].close()
            self._stalled = None

    def attach(self, cancel_scope: anyio.CancelScope) -> None:
        self._cancel_scope = cancel_scope
        if self.close_code is not None:
            cancel_scope.cancel()

    async def run_sender(self) -> None:
        """Finish stalled writes and drain the outbox until cancelled."""
        send = self._send
        outbox = self._outbox
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                if self._stalled is not None:
                    write, waiting_on = self._stalled
                    self._stalled = None
                    await _finish(write, waiting_on)
                while outbox:
                    await send({"type": "websocket.send", "bytes": outbox.popleft()})
                self._busy = False
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
        except Exception as e:
            self._failed(e)

    def _failed(self, error: Exception) -> None:
        # The client went away mid-write (the ASGI server raises): stop reading too.
        log.debug("cannot send to %s: %r", self.label, error)
        self.close_streams()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Run ``coro`` to its end, as an asyncio task would, after someone stepped it once.

    ``waiting_on`` is what that step yielded: the future it awaits, or None for a bare
    yield (``asyncio.sleep(0)``). The coroutine learns the future's outcome when resumed.
    """
    try:
        while True:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False
                with contextlib.suppress(Exception):  # the coroutine sees it on resuming
                    await waiting_on
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return
    finally:
        coro.close()  # cancelled or failed: let the write's own cleanup run
