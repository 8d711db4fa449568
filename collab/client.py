"""A small Python y-websocket client built on pycrdt and ``websockets``.

It speaks the same protocol as the stock JS provider, so tests, scripts and bots can
edit documents on any collab (or y-websocket) server::

    async with Client("ws://127.0.0.1:1234/notes", ack=True) as client:
        text = client.doc.get("content", type=Text)
        text += "hello"
        await client.wait_durable()     # the server has it on disk

Local changes to ``client.doc`` are sent as they happen; remote ones are applied as they
arrive. ``ack=True`` asks the server for durability acknowledgements (message type 100).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio import AsyncContextManagerMixin
from pycrdt import Awareness, Doc, TransactionEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab.errors import ConnectionClosedError
from collab.protocol import (
    Ack,
    AwarenessUpdate,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    decode_state_vector,
    encode,
)


def covers(durable: dict[int, int], local: dict[int, int]) -> bool:
    """True when everything in ``local`` is included in ``durable``."""
    return all(durable.get(client, 0) >= clock for client, clock in local.items())


class Client(AsyncContextManagerMixin):
    """One connection to one document. Use as ``async with Client(url) as client``."""

    def __init__(self, url: str, doc: Doc[Any] | None = None, *, ack: bool = False) -> None:
        if ack:
            url += ("&" if "?" in url else "?") + "ack=1"
        self.url = url
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.awareness = Awareness(self.doc)
        self.durable_state: dict[int, int] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self._synced = anyio.Event()
        self._changed = anyio.Event()
        # Unbounded, as a browser's WebSocket.send buffers: an edit must never fail, or
        # be lost, because the socket is slower than the code making it.
        self._outbox, self._pending = anyio.create_memory_object_stream[bytes](math.inf)
        self._ended = False  # the receive loop is over: nothing more will arrive
        self._applying_remote = False

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Client]:
        async with connect(self.url, max_size=None, open_timeout=10) as ws:
            doc_sub = self.doc.observe(self._on_doc_change)
            aw_sub = self.awareness.observe(self._on_awareness_change)
            try:
                async with anyio.create_task_group() as tg:
                    sent_all = anyio.Event()
                    tg.start_soon(self._send_loop, ws, sent_all)
                    tg.start_soon(self._receive_loop, ws)
                    try:
                        await ws.send(encode(SyncStep1(self.doc.get_state())))
                    except ConnectionClosed:
                        pass  # refused at once (a bad name, say): the receive loop says why
                    try:
                        yield self
                    finally:
                        # Hand every queued local change to the socket before closing.
                        self._outbox.close()
                        with anyio.move_on_after(5, shield=True):
                            await sent_all.wait()
                        tg.cancel_scope.cancel()
            finally:
                self._outbox.close()
                self._pending.close()
                self.doc.unobserve(doc_sub)
                self.awareness.unobserve(aw_sub)

    # -- waiting ---------------------------------------------------------------

    async def synced(self, timeout: float = 10) -> None:
        """Wait until the server's sync step 2 has been applied."""
        with anyio.fail_after(timeout):
            await self._synced.wait()

    async def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        """Wait until ``predicate()`` is true, re-checking after each remote change.

        Any number of tasks may wait at once.

        :raises ConnectionClosedError: the connection ended first.
        :raises TimeoutError: ``timeout`` seconds passed first.
        """
        with anyio.fail_after(timeout):
            while not predicate():
                if self._ended:
                    raise ConnectionClosedError(
                        f"the connection closed ({self.close_code} {self.close_reason})"
                        " before the condition held",
                        self.close_code,
                    )
                await self._changed.wait()

    async def wait_durable(self, timeout: float = 10) -> None:
        """Wait until the server says everything in ``doc`` is on its disk (needs ``ack``).

        The acknowledgement is a state vector, which counts insertions only: after an edit
        that only deletes or formats, this returns at once, before the server may have
        stored it (README, "Durability acknowledgement").
        """
        await self.wait_for(
            lambda: covers(self.durable_state, decode_state_vector(self.doc.get_state())), timeout
        )

    # -- plumbing --------------------------------------------------------------

    def _on_doc_change(self, event: TransactionEvent) -> None:
        if not self._applying_remote and event.update != b"\x00\x00":
            self._queue(encode(SyncUpdate(event.update)))

    def _queue(self, frame: bytes) -> None:
        try:
            self._outbox.send_nowait(frame)
        except anyio.ClosedResourceError:
            pass  # offline: the doc keeps the change; sync step 2 sends it on reconnect

    def _on_awareness_change(self, topic: str, event: tuple[dict[str, Any], Any]) -> None:
        changes, origin = event
        if topic == "update" and origin == "local":
            ids = changes["added"] + changes["updated"] + changes["removed"]
            self._queue(encode(AwarenessUpdate(self.awareness.encode_awareness_update(ids))))

    async def _send_loop(self, ws: ClientConnection, sent_all: anyio.Event) -> None:
        try:
            async for frame in self._pending:
                await ws.send(frame)
        except ConnectionClosed:
            pass  # the receive loop records why
        finally:
            sent_all.set()

    async def _receive_loop(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    continue
                self._handle(decode(frame))
                self._notify()
        except ConnectionClosed:
            pass
        if ws.close_code is not None:
            self.close_code, self.close_reason = ws.close_code, ws.close_reason or ""
        self._ended = True
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter; those still waiting wait on the next event.
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    def _handle(self, message: Message) -> None:
        match message:
            case SyncStep1(state_vector):
                self._queue(encode(SyncStep2(self.doc.get_update(state_vector))))
            case SyncStep2(update):
                self._apply_remote(update)
                self._synced.set()
            case SyncUpdate(update):
                self._apply_remote(update)
            case AwarenessUpdate(payload):
                self.awareness.apply_awareness_update(payload, "remote")
            case QueryAwareness():
                ids = list(self.awareness.states)
                self._queue(encode(AwarenessUpdate(self.awareness.encode_awareness_update(ids))))
            case Ack(state_vector):
                self.durable_state = decode_state_vector(state_vector)
