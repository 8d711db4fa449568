"""One websocket connection: eager writes, and the outbox behind a stalled one."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any

from collab import metrics
from collab.errors import CloseCode
from collab.hooks import ANONYMOUS_WRITER, Identity
from collab.transport.types import Send, WriteFrame

log = logging.getLogger("collab.peer")


class WebSocketPeer:
    """A :class:`collab.rooms.Peer` over an ASGI websocket.

    Writes are eager. When nothing is in flight for this peer, :meth:`send_nowait` starts
    the ASGI server's ``send`` right there and steps it once: both hypercorn and uvicorn
    write the frame to the socket and finish without suspending unless the socket is
    paused by flow control. A fan-out to 63 peers is then 63 socket writes in one go, not
    63 task wake-ups on later loop turns.

    Where the server offers a direct write (``write_frame``, uvicorn under ``collab
    serve``), a frame goes straight to the socket that way, without the ASGI ``send``
    coroutine; the server says False when the write would wait, and the frame takes the
    ASGI path instead.

    Only a write that stalls gets a task (the drainer): it finishes that write
    (:func:`_finish`), then sends what queued up behind it in the outbox, in order, and
    ends. A slow client never stalls the room: when its outbox is full it is closed with
    :attr:`CloseCode.TOO_SLOW` (it resyncs when it reconnects). An idle connection has
    neither a task nor an outbox, which keeps it small (bench/conn_memory.py).
    """

    __slots__ = (
        "_closed",
        "_drainer",
        "_outbox",
        "_queue_bytes",
        "_queue_size",
        "_queued_bytes",
        "_step2",
        "address",
        "bytes_out",
        "messages_out",
        "_reading",
        "_send",
        "_write_frame",
        "close_code",
        "close_reason",
        "identity",
        "label",
        "wants_ack",
    )

    def __init__(
        self,
        send: Send,
        *,
        queue_size: int,
        queue_bytes: int = 32 * 1024 * 1024,
        wants_ack: bool,
        label: str,
        identity: Identity = ANONYMOUS_WRITER,
        address: str = "",
        write_frame: WriteFrame | None = None,
    ) -> None:
        self.wants_ack = wants_ack
        self.address = address
        self.label = label
        self.identity = identity
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._send = send
        self._write_frame = write_frame
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._queued_bytes = 0  # in the outbox
        self._step2: bytes | None = None  # a sync step 2 still in the outbox
        #: Frames and bytes handed to this peer (queued or written), for the close log.
        self.messages_out = 0
        self.bytes_out = 0
        self._outbox: deque[bytes] | None = None  # frames waiting behind a stalled write
        self._drainer: asyncio.Task[None] | None = None  # exists while a write is stalled
        self._closed = False
        self._reading: asyncio.Timeout | None = None  # the scope of the reading loop

    @property
    def stalled(self) -> bool:
        """A write is waiting on the socket (flow control); new frames queue behind it."""
        return self._drainer is not None

    def send_nowait(self, frame: bytes) -> None:
        if self._closed:
            return  # already closing; the frame has nowhere to go
        self.messages_out += 1
        self.bytes_out += len(frame)
        metrics.count(metrics.traffic_out, frame)
        if self._drainer is not None:
            outbox = self._outbox
            if outbox is None:
                outbox = self._outbox = deque()
            queued = self._queued_bytes + len(frame)
            if len(outbox) >= self._queue_size or queued > self._queue_bytes:
                metrics.LIMIT_HITS.labels(limit="send_queue").inc()
                self.close_nowait(
                    CloseCode.TOO_SLOW, "client fell too far behind; reconnect to resync"
                )
                return
            outbox.append(frame)
            self._queued_bytes = queued
            return
        if self._write_frame is not None and self._write_frame(frame):
            return  # written
        awaitable = self._send({"type": "websocket.send", "bytes": frame})
        write = awaitable if isinstance(awaitable, Coroutine) else _awaiting(awaitable)
        try:
            waiting_on = write.send(None)
        except StopIteration:
            return  # written
        except Exception as e:
            self._failed(e)
            return
        drainer = asyncio.get_running_loop().create_task(self._drain(write, waiting_on))
        drainer.add_done_callback(functools.partial(self._drained, write))
        self._drainer = drainer

    def _drained(self, write: Coroutine[Any, Any, None], drainer: asyncio.Task[None]) -> None:
        # A drainer cancelled before its first step never runs its body: the stalled write
        # would stay suspended, holding whatever it holds (hypercorn's send lock, which the
        # close frame then waits on forever). Closing a finished coroutine does nothing.
        write.close()
        if self._drainer is drainer:
            self._drainer = None

    async def _drain(self, write: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        try:
            await _finish(write, waiting_on)
            outbox = self._outbox
            while outbox and not self._closed:
                frame = outbox.popleft()
                self._queued_bytes -= len(frame)
                if frame is self._step2:
                    self._step2 = None
                await self._send({"type": "websocket.send", "bytes": frame})
        except Exception as e:
            self._failed(e)
        finally:
            # No await between the last check of the outbox and here: the next frame is
            # either in the outbox already or will be written eagerly, never lost.
            self._drainer = None

    @property
    def holds_step2(self) -> bool:
        """A sync step 2 sent to this peer is still queued, not yet written."""
        return self._step2 is not None

    def send_step2(self, frame: bytes) -> None:
        """:meth:`send_nowait` for the answer to a sync step 1, remembered while queued:
        a client that asks again meanwhile (each answer can be the whole document) is
        not given another copy to hold (see the endpoint)."""
        self.send_nowait(frame)
        outbox = self._outbox
        if outbox and outbox[-1] is frame:
            self._step2 = frame

    def attach(self, reading: asyncio.Timeout | None) -> None:
        """Set the scope of the connection's reading loop, which a close cancels.

        ``asyncio.timeout(None)`` serves as that scope: rescheduling it to now cancels the
        block it guards, only that block, and it ends with :class:`TimeoutError`.
        """
        self._reading = reading
        if self._closed:  # closed (or a write failed) before the loop began
            self._stop_reading()

    def close_nowait(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close with ``code``; it happens at the next checkpoint."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            log.debug("closing %s: %d %s", self.label, code, reason)
        self.stop_writing()
        self._stop_reading()

    def stop_writing(self) -> asyncio.Task[None] | None:
        """Stop writing: drop the outbox and cancel a stalled write.

        :returns: the drainer, if one was running, so the caller can wait for it to end.
        """
        self._closed = True
        self._outbox = None
        self._queued_bytes = 0
        self._step2 = None
        drainer = self._drainer
        if drainer is not None:
            drainer.cancel()
        return drainer

    def _stop_reading(self) -> None:
        reading, self._reading = self._reading, None  # a Timeout is rescheduled only once
        if reading is not None:
            reading.reschedule(asyncio.get_running_loop().time())

    def _failed(self, error: Exception) -> None:
        # The client went away mid-write (the ASGI server raises): stop reading too.
        log.debug("cannot send to %s: %r", self.label, error)
        self.stop_writing()
        self._stop_reading()


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
