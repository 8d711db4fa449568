"""An offline-first Python y-websocket client built on pycrdt and ``websockets``.

It speaks the same protocol as the stock JS provider, so tests, scripts and bots can
edit documents on any collab (or y-websocket) server::

    async with Client("ws://127.0.0.1:1234/notes", ack=True, local="notes.ydoc.db") as client:
        text = client.doc.get("content", type=Text)
        text += "hello"
        await client.wait_durable()     # the server has it on disk

Theory of operation
-------------------
A client is in one of four states (:class:`ConnectionState`): CONNECTING (opening a
websocket), CONNECTED (open; :attr:`Client.is_synced` once the server's sync step 2 is
applied), OFFLINE (the last attempt failed or the connection dropped; waiting to retry)
and CLOSED (left its ``async with``, or the server said not to come back: 4000-4499, as
y-websocket reads them, or ``reconnect=False``). CONNECTING leads to CONNECTED or
OFFLINE, CONNECTED to OFFLINE, OFFLINE to CONNECTING after a capped exponential backoff
with jitter (reset once a connection syncs); any state may go to CLOSED, which is final.

Every connection starts with a resync, never a replay: the client sends its sync step 1
and answers the server's with a step 2 of what the server lacks, computed from the
document, so edits made offline (or sent on a connection that dropped before they were
acknowledged) travel exactly once more and the CRDT drops what the server already has.
Local changes to ``client.doc`` are sent as they happen while connected, and simply kept
in the document while not; remote ones are applied as they arrive. With ``local=PATH``
every transaction is also appended to a local SQLite file (:mod:`collab.localstore`)
before the edit call returns, so a program can exit, or be killed, offline and deliver
everything when it next runs.

``ack=True`` asks the server for durability acknowledgements (message type 100: the
durable state vector and how many of this connection's update messages are on disk).
:meth:`Client.wait_durable` waits until both cover everything this client holds: each
update message it sent on the current connection (its step 2 carried everything from
before), so a delete is reported saved exactly when it is stored, and every insertion
in the document, its own and others'.

Bounded: the outbox (:data:`MAX_OUTBOX_BYTES`; past it the connection is dropped and the
next one resyncs, so no edit is lost), incoming frames (``max_message_size``), the
websocket's receive queue, the local file (compacted), and the backoff (``max_backoff``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from anyio import AsyncContextManagerMixin
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pycrdt import Awareness, Doc, TransactionEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from collab.errors import CollabError, ConnectionClosedError, LocalProtocolError
from collab.localstore import LocalStore
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
from collab.updates import EMPTY_UPDATE

log = logging.getLogger("collab.client")

#: Bytes of frames queued for one connection before it is dropped and resynced instead.
MAX_OUTBOX_BYTES = 64 * 1024 * 1024
#: Largest frame accepted from the server: twice the server's default document quota.
MAX_MESSAGE_SIZE = 128 * 1024 * 1024
#: The first retry waits about this long; each failure doubles it up to ``max_backoff``.
FIRST_BACKOFF = 0.1


class ConnectionState(Enum):
    """Where a :class:`Client`'s connection is (see the module's theory of operation)."""

    #: Opening a websocket.
    CONNECTING = "connecting"
    #: Open: edits go out as they happen.
    CONNECTED = "connected"
    #: Not connected; edits are kept and a retry is scheduled.
    OFFLINE = "offline"
    #: For good: the client left its ``async with``, or may not come back.
    CLOSED = "closed"


class ServerUnreachableError(CollabError):
    """A connection to the server could not be opened (refused, timed out, not a websocket)."""


def covers(durable: dict[int, int], local: dict[int, int]) -> bool:
    """True when everything in ``local`` is included in ``durable``."""
    return all(durable.get(client, 0) >= clock for client, clock in local.items())


def backoff(attempt: int, cap: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (0 first): doubling from
    :data:`FIRST_BACKOFF`, capped at ``cap``, then jittered down by up to half, so that
    clients cut off together do not all come back in the same instant."""
    delay = min(cap, FIRST_BACKOFF * 2.0 ** min(attempt, 64))
    return delay * (1 - jitter() / 2)


def final_close(code: int | None) -> bool:
    """Whether a close code says "do not reconnect" (4000-4499, as y-websocket reads it)."""
    return code is not None and 4000 <= code < 4500


def document_of(url: str) -> str:
    """The document a websocket URL names: the URL without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(eq=False)
class _Connection:
    """One websocket: its outbox and what was sent and acknowledged on it."""

    ws: ClientConnection
    outbox: MemoryObjectSendStream[tuple[bytes, bool]]
    pending: MemoryObjectReceiveStream[tuple[bytes, bool]]
    outbox_bytes: int = 0
    #: Update messages (step 2 and update) queued on this connection.
    updates_queued: int = 0
    #: Of those, how many the server says are durable.
    updates_durable: int = 0
    #: Our sync step 2 (what the server lacked when it asked) is queued.
    answered: bool = False
    #: The server's sync step 2 is applied.
    synced: bool = False
    overflowed: bool = False
    drained: anyio.Event = field(default_factory=anyio.Event)


class Client(AsyncContextManagerMixin):
    """One document, kept in sync while connected. Use as ``async with Client(url)``.

    :param doc: the document to sync (a new one by default).
    :param ack: ask for durability acknowledgements (needed by :meth:`wait_durable`).
    :param local: a SQLite file that keeps the document across runs (offline-first).
    :param reconnect: reconnect on its own after a drop; with False, entering fails if
        the server cannot be reached and the client is CLOSED after its first connection.
    :param max_backoff: the longest wait between attempts, in seconds.
    """

    def __init__(
        self,
        url: str,
        doc: Doc[Any] | None = None,
        *,
        ack: bool = False,
        local: str | Path | None = None,
        reconnect: bool = True,
        max_backoff: float = 10.0,
        open_timeout: float = 10.0,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        if ack:
            url += ("&" if "?" in url else "?") + "ack=1"
        self.url = url
        self.ack = ack
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.awareness = Awareness(self.doc)
        self.local_path = Path(local) if local is not None else None
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.max_message_size = max_message_size
        #: The connection state; see :class:`ConnectionState`.
        self.state = ConnectionState.CONNECTING
        #: The element-wise maximum of every acknowledged state vector (durable only grows).
        self.durable_state: dict[int, int] = {}
        #: How the last connection ended (None: it just dropped, or none ended yet).
        self.close_code: int | None = None
        self.close_reason = ""
        #: Why the last attempt to connect failed, or None.
        self.last_error: str | None = None
        #: Connections opened so far.
        self.connections = 0
        self._conn: _Connection | None = None
        self._local: LocalStore | None = None
        self._changed = anyio.Event()
        self._closing = False
        self._applying_remote = False

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Client]:
        try:
            if self.local_path is not None:
                self._local = LocalStore.open(self.local_path, document_of(self.url))
                self._load_local(self._local)
            # Offline-first: entering waits for the network only when told not to retry.
            first = None if self.reconnect else await self._open()
            doc_sub = self.doc.observe(self._on_doc_change)
            aw_sub = self.awareness.observe(self._on_awareness_change)
            error: Exception | None = None
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(self.awareness.start)  # renews our state, expires others'
                    tg.start_soon(self._run, first)
                    try:
                        yield self
                    except Exception as e:
                        # Raised again below, outside the task group, so that the caller
                        # gets its own exception rather than an ExceptionGroup around it.
                        error = e
                    finally:
                        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                            await self._close_cleanly()
                        tg.cancel_scope.cancel()
                if error is not None:
                    raise error
            finally:
                self.doc.unobserve(doc_sub)
                self.awareness.unobserve(aw_sub)
        finally:
            self._set_state(ConnectionState.CLOSED)
            if self._local is not None:
                self._local.close()
                self._local = None

    # -- state -----------------------------------------------------------------

    @property
    def is_synced(self) -> bool:
        """Connected, and the server's sync step 2 is applied."""
        return self._conn is not None and self._conn.synced

    @property
    def is_durable(self) -> bool:
        """The server says everything this client holds is on its disk (needs ``ack``)."""
        conn = self._conn
        return (
            conn is not None
            and conn.answered
            and conn.updates_durable >= conn.updates_queued
            and covers(self.durable_state, decode_state_vector(self.doc.get_state()))
        )

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        """Set this client's awareness state (None: none), sent to the others at once."""
        self.awareness.set_local_state(state)

    @property
    def others(self) -> dict[int, dict[str, Any]]:
        """The awareness states of the other clients of the document: ``{client_id: state}``."""
        own = self.awareness.client_id
        return {c: s for c, s in self.awareness.states.items() if c != own}

    # -- waiting ---------------------------------------------------------------

    async def synced(self, timeout: float = 10) -> None:
        """Wait until the server's sync step 2 has been applied on the current connection.

        :raises ConnectionClosedError: the client closed (for good) first.
        :raises TimeoutError: ``timeout`` seconds passed first.
        """
        await self.wait_for(lambda: self.is_synced, timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until ``predicate()`` is true, re-checking after each change (a frame from
        the server, a state change). Any number of tasks may wait at once.

        :raises ConnectionClosedError: the client closed (for good) first.
        :raises TimeoutError: ``timeout`` seconds passed first.
        """
        with anyio.fail_after(timeout):
            while not predicate():
                if self.state is ConnectionState.CLOSED:
                    raise ConnectionClosedError(
                        f"the connection closed ({self.close_code} {self.close_reason})"
                        " before the condition held",
                        self.close_code,
                    )
                await self._changed.wait()

    async def wait_durable(self, timeout: float = 10) -> None:
        """Wait until the server says everything in ``doc`` is on its disk: every update
        message sent on this connection (deletes included) and every insertion.

        Another client's delete that this one received is saved when that client hears so.

        :raises LocalProtocolError: the client was made without ``ack=True``.
        :raises ConnectionClosedError: the client closed (for good) first.
        :raises TimeoutError: ``timeout`` seconds passed first.
        """
        if not self.ack:
            raise LocalProtocolError("wait_durable() needs Client(..., ack=True)")
        await self.wait_for(lambda: self.is_durable, timeout)

    # -- connecting ------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        """Open a websocket to the document.

        :raises ServerUnreachableError: it could not be opened (:attr:`last_error` says why).
        """
        self._set_state(ConnectionState.CONNECTING)
        try:
            ws = await connect(
                self.url, max_size=self.max_message_size, open_timeout=self.open_timeout
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
            self.last_error = _describe(e)
            self._notify()
            raise ServerUnreachableError(
                f"cannot connect to {document_of(self.url)}: {self.last_error}"
            ) from None
        self.last_error = None
        return ws

    async def _run(self, ws: ClientConnection | None) -> None:
        attempt = 0
        while not self._closing:
            if ws is None:
                try:
                    ws = await self._open()
                except ServerUnreachableError:
                    pass
            if ws is not None:
                synced = await self._session(ws)
                ws = None
                if synced:
                    attempt = 0
                if final_close(self.close_code) or not self.reconnect:
                    self._set_state(ConnectionState.CLOSED)
                    return
            if self._closing:
                return
            self._set_state(ConnectionState.OFFLINE)
            await anyio.sleep(backoff(attempt, self.max_backoff))
            attempt += 1

    async def _session(self, ws: ClientConnection) -> bool:
        """Run one connection until it ends; True if it got as far as synced."""
        outbox, pending = anyio.create_memory_object_stream[tuple[bytes, bool]](math.inf)
        conn = _Connection(ws, outbox, pending)
        self._conn = conn
        self.connections += 1
        self.close_code, self.close_reason = None, ""
        self._set_state(ConnectionState.CONNECTED)
        try:
            self._send(conn, encode(SyncStep1(self.doc.get_state())))
            if self.awareness.get_local_state() is not None:  # the server dropped it
                own = [self.awareness.client_id]
                self._send(
                    conn, encode(AwarenessUpdate(self.awareness.encode_awareness_update(own)))
                )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._send_loop, conn)
                await self._receive_loop(conn)
                tg.cancel_scope.cancel()
        finally:
            self._conn = None
            outbox.close()
            pending.close()
            # As y-websocket does: the others' states are not ours to keep while away;
            # the server sends them again on the next connection.
            others = list(self.others)
            if others:
                self.awareness.remove_awareness_states(others, origin="disconnect")
            if not self._closing:
                with anyio.CancelScope(shield=True):
                    await ws.close()  # no-op when closed already; else a clean 1000
            self._notify()
        return conn.synced

    async def _close_cleanly(self) -> None:
        """Hand every queued change to the socket, then close with a handshake (1000)."""
        self._closing = True
        conn = self._conn
        if conn is None:
            return
        conn.outbox.close()
        await conn.drained.wait()
        await conn.ws.close()

    async def _send_loop(self, conn: _Connection) -> None:
        try:
            async for frame, _ in conn.pending:
                await conn.ws.send(frame)
                conn.outbox_bytes -= len(frame)
            if conn.overflowed:
                await conn.ws.close(1000, "resync")
        except ConnectionClosed:
            pass  # the receive loop records why
        finally:
            conn.drained.set()

    async def _receive_loop(self, conn: _Connection) -> None:
        ws = conn.ws
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    continue
                try:
                    self._handle(conn, decode(frame))
                except CollabError as e:
                    log.warning("bad frame from %s: %s; reconnecting", document_of(self.url), e)
                    await ws.close(1002, "bad frame")
                    break
                finally:
                    self._notify()
        except ConnectionClosed:
            pass
        if ws.close_code is not None and not self._closing:  # the server's, not our own
            self.close_code, self.close_reason = ws.close_code, ws.close_reason or ""

    # -- plumbing --------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        if self.state is not state and self.state is not ConnectionState.CLOSED:
            self.state = state
            self._notify()

    def _notify(self) -> None:
        # Wake every waiter; those still waiting wait on the next event.
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _load_local(self, local: LocalStore) -> None:
        self._applying_remote = True
        try:
            for update in local.load():
                self.doc.apply_update(update)
        except (ValueError, RuntimeError) as e:
            raise CollabError(f"{local.path} holds an update that cannot be applied: {e}") from e
        finally:
            self._applying_remote = False

    def _on_doc_change(self, event: TransactionEvent) -> None:
        if event.update == EMPTY_UPDATE:
            return
        if self._local is not None:
            self._local.append(event.update)
        if not self._applying_remote and self._conn is not None:
            self._send(self._conn, encode(SyncUpdate(event.update)), update=True)
        # Offline: the doc (and the local file) keep it; the next sync step 2 sends it.

    def _send(self, conn: _Connection, frame: bytes, *, update: bool = False) -> None:
        if conn.overflowed:
            return
        if conn.outbox_bytes + len(frame) > MAX_OUTBOX_BYTES:
            # The socket is far behind the edits: start over rather than queue without
            # bound. The next connection's step 2 carries everything, this frame included.
            conn.overflowed = True
            conn.outbox.close()
            log.warning("outbox past %d bytes: reconnecting to resync", MAX_OUTBOX_BYTES)
            return
        try:
            conn.outbox.send_nowait((frame, update))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # closing: the doc keeps the change; the next step 2 sends it
        conn.outbox_bytes += len(frame)
        if update:
            conn.updates_queued += 1

    def _on_awareness_change(self, topic: str, event: tuple[dict[str, Any], Any]) -> None:
        changes, origin = event
        if topic == "update" and origin == "local" and self._conn is not None:
            ids = changes["added"] + changes["updated"] + changes["removed"]
            payload = self.awareness.encode_awareness_update(ids)
            self._send(self._conn, encode(AwarenessUpdate(payload)))

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        except (ValueError, RuntimeError) as e:
            raise CollabError(f"the server sent an update that cannot be applied: {e}") from e
        finally:
            self._applying_remote = False

    def _handle(self, conn: _Connection, message: Message) -> None:
        match message:
            case SyncStep1(state_vector):
                try:
                    missing = self.doc.get_update(state_vector)
                except ValueError as e:
                    raise CollabError(f"the server sent a bad state vector: {e}") from e
                self._send(conn, encode(SyncStep2(missing)), update=True)
                conn.answered = True
            case SyncStep2(update):
                self._apply_remote(update)
                conn.synced = True
            case SyncUpdate(update):
                self._apply_remote(update)
            case AwarenessUpdate(payload):
                try:
                    self.awareness.apply_awareness_update(payload, "remote")
                except (ValueError, IndexError, RuntimeError, TypeError) as e:
                    raise CollabError(f"the server sent a bad awareness update: {e}") from e
            case QueryAwareness():
                ids = list(self.awareness.states)
                self._send(
                    conn, encode(AwarenessUpdate(self.awareness.encode_awareness_update(ids)))
                )
            case Ack(state_vector, updates):
                for client, clock in decode_state_vector(state_vector).items():
                    if self.durable_state.get(client, 0) < clock:
                        self.durable_state[client] = clock
                conn.updates_durable = max(conn.updates_durable, updates)


def _describe(error: BaseException) -> str:
    """One line on why a connection could not be opened."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


__all__ = ["Client", "ConnectionState", "ServerUnreachableError", "backoff", "covers"]
