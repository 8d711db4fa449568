"""``GET /api/docs/{name}/events``: a document's change feed as ``text/event-stream``; with
``POST .../updates`` and ``POST .../awareness``, the fallback transport of a browser that
cannot open a websocket (``web/src/sse-provider.js``).

Theory of operation
-------------------
A stream's events, in order (WHATWG HTML, "Server-sent events"):

* ``session`` first, after ``retry:``: ``{"session": id, "awareness": bool}``. The id names
  the stream to ``POST /api/docs/{name}/awareness``: the awareness states posted with it
  belong to the stream and are removed when it ends, as a websocket's are when it closes.
* ``snapshot`` (``id: EPOCH-SEQ``; data: base64 of the whole document as one Yjs update):
  the reader starts a new document from it. Sent when the reader gives no
  ``Last-Event-ID``, or one whose updates the store no longer keeps one by one (compacted
  past the retention window), of a retired epoch (the document was deleted or replaced
  since) or ahead of the log.
* ``update`` (``id: EPOCH-SEQ``; data: base64 of one stored update): one per row of the
  store's log, in log order, with no gap and no duplicate after the position resumed from.
* ``synced`` (data: base64 of the room's state vector) once the reader has everything the
  store held when it connected: a client posts what it holds beyond that (sync step 2).
* ``awareness`` (data: base64 of a y-protocols awareness update), with ``?awareness=1``.
* ``close`` (``{"code", "reason"}``, the websocket close codes) when the server ends the
  stream: 4500 for a reader too slow to keep up, 4409 when the document was deleted, 1001
  on shutdown, 4401 when the token expires. An ``EventSource`` then reconnects by itself
  with ``Last-Event-ID``.
* a comment, ``: keep-alive``, after ``--sse-keepalive`` seconds without a write.

The race between reading the store and live commits: the stream subscribes to the store's
commits first (:class:`~collab.transport.feed.EventStreams`), then reads, and of what the
commits reported meanwhile it skips every update at or before the seq it has sent, and
fills a gap after it from the store. A snapshot learns the position it covers from the
log's last seq read before and after the document; when the two differ it reads again.

The room relays updates stored by other processes too (the bus, ``collab docs import``),
which this process's commits never report: when the room relayed more updates than the
commits reported, the stream reads the store after its position (:data:`PROBE_DELAYS`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import anyio
from starlette.requests import Request
from starlette.responses import Response

from collab import admin, logs, metrics
from collab.errors import CloseCode, CollabError, DocumentNotFoundError, RemoteProtocolError
from collab.hooks import ExtensionError, Identity
from collab.limits import RateLimit
from collab.protocol import AwarenessUpdate
from collab.rooms import Room, TooManyDocumentsError
from collab.storage.base import LogEntry
from collab.transport import responses
from collab.transport.feed import (
    BadEventIdError,
    StreamPeer,
    event_id,
    format_event,
    parse_event_id,
    session_event,
)
from collab.transport.interface import Server
from collab.transport.types import Receive, Scope, Send
from collab.updates import EMPTY_UPDATE

log = logging.getLogger("collab.transport")

#: Milliseconds an ``EventSource`` waits before it reconnects (the ``retry:`` field).
RETRY_MS = 1000
#: Updates read from the store per query while catching up.
PAGE = 500
#: Reads of a snapshot before its position is taken as "at least": each read that sees
#: the log move on (a commit landed between reading the position and the document) retries.
SNAPSHOT_READS = 3
#: Seconds after the room relayed an update the store did not report here before each read
#: of the store for it; another node may take a commit delay or two to store it.
PROBE_DELAYS = (0.0, 0.1, 0.5, 2.0)
#: Longest the stream waits for this process's own commits before such a read.
PROBE_FLUSH_TIMEOUT = 2.0
#: Longest a closing stream tries to deliver its final ``close`` event.
FINAL_EVENT_TIMEOUT = 1.0

EVENT_STREAM = "text/event-stream"
HEADERS = {
    **responses.NO_STORE,
    "content-type": EVENT_STREAM,
    # nginx buffers proxied responses unless told not to; events must flow as they happen
    "x-accel-buffering": "no",
}
EVENTS_QUERY = ("awareness", "last_event_id")
AWARENESS_QUERY = ("session",)
FLAG_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def events(server: Server, request: Request, name: str, identity: Identity) -> Response:
    """``GET /api/docs/{name}/events``: the change feed (see the module doc); read access.

    ``?awareness=1`` adds awareness events; ``Last-Event-ID`` (or ``?last_event_id=`` for
    a client that cannot set headers; the header wins, since an ``EventSource`` sends the
    newest id in it while its URL keeps the first) resumes after that event.
    """
    refusal = responses.unknown_parameters(request, EVENTS_QUERY)
    if refusal is not None:
        return refusal
    flag = request.query_params.get("awareness", "0")
    if flag not in FLAG_VALUES:
        return responses.error(400, "awareness must be 1 or 0 (or true, false, yes, no)")
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        resume = parse_event_id(text.strip()) if text is not None else None
    except BadEventIdError as e:
        return responses.error(400, str(e))
    if request.method == "HEAD":
        return Response(b"", 200, HEADERS)
    client = request.client
    return EventStream(
        server,
        name,
        identity,
        awareness=FLAG_VALUES[flag],
        resume=resume,
        address=client.host if client else "?",
        label=f"{client.host}:{client.port}" if client else "stream",
    )


async def post_awareness(
    server: Server, request: Request, name: str, identity: Identity
) -> Response:
    """``POST /api/docs/{name}/awareness?session=ID``: a y-protocols awareness update for
    the event stream that announced ``ID``, checked as a websocket's awareness message is
    (a bad one ends that stream as it would close the websocket); 204 once applied."""
    refusal = responses.unknown_parameters(request, AWARENESS_QUERY)
    if refusal is not None:
        return refusal
    session = request.query_params.get("session")
    if not session:
        return responses.error(400, "session is required: the id the event stream announced")
    peer = server.streams.session(session)
    if peer is None or peer.room != name:
        return responses.error(
            404, "no open event stream of this document has that session; reconnect"
        )
    if peer.identity.user != identity.user:
        return responses.error(403, "that session belongs to another user")
    body = await responses.bounded_body(
        request, server.settings.max_message_size, "an awareness update"
    )
    if isinstance(body, Response):
        return body
    limited = peer.rate.allows(len(body), asyncio.get_running_loop().time())
    if limited is not None:
        metrics.LIMIT_HITS.labels(limit=limited).inc()
        server.log_throttled("rate", f"{peer.label} sent too many {limited}")
        peer.close_nowait(CloseCode.POLICY_VIOLATION, f"too many {limited} per second")
        return responses.error(429, f"too many {limited} per second; the stream is closed")
    room = server.rooms.rooms.get(name)
    if room is None or peer not in room.peers:
        return responses.error(404, "the event stream of that session has ended; reconnect")
    try:
        room.receive(peer, AwarenessUpdate(body))
    except RemoteProtocolError as e:
        peer.close_nowait(e.close_code, str(e))
        return responses.error(400, f"{e}; the stream is closed")
    return Response(b"", 204, responses.NO_STORE)


class EventStream(Response):
    """The streaming answer of :func:`events`: opens the room, then writes the events
    until the reader leaves or the server ends the stream."""

    def __init__(
        self,
        server: Server,
        name: str,
        identity: Identity,
        *,
        awareness: bool,
        resume: tuple[int, int] | None,
        address: str,
        label: str,
    ) -> None:
        super().__init__(status_code=200, media_type=EVENT_STREAM)
        self.server = server
        self.name = name
        self.identity = identity
        self.awareness = awareness
        self.resume = resume
        self.address = address
        self.label = label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = self.server
        if server.stopping:
            await responses.error(503, "server is shutting down")(scope, receive, send)
            return
        # The connection caps count event streams as they count websockets.
        refusal = server.caps.refusal(self.address, self.name)
        if refusal is not None:
            metrics.LIMIT_HITS.labels(limit="connections").inc()
            server.log_throttled("connections", f"refused a stream from {self.label}: {refusal}")
            await responses.error(503, refusal)(scope, receive, send)
            return
        server.caps.acquire(self.address, self.name)
        try:
            try:
                room = await server.rooms.open(self.name)
            except (TooManyDocumentsError, CollabError) as e:
                if isinstance(e, ExtensionError):
                    message = "an extension of the server failed"
                elif isinstance(e, TooManyDocumentsError):
                    message = str(e)
                else:
                    log.error("cannot open %r for %s: %s", self.name, self.label, e)
                    message = "the document cannot be loaded; try later"
                await responses.error(503, message)(scope, receive, send)
                return
            if server.stopping:  # shutdown began while the document loaded
                await responses.error(503, "server is shutting down")(scope, receive, send)
                return
            await self._serve(room, receive, send)
        finally:
            server.caps.release(self.address, self.name)

    async def _serve(self, room: Room, receive: Receive, send: Send) -> None:
        server = self.server
        settings = server.settings
        loop = asyncio.get_running_loop()
        peer = StreamPeer(
            self.name,
            identity=self.identity,
            label=f"stream {self.label} on {self.name!r}",
            address=self.address,
            awareness=self.awareness,
            queue_size=settings.send_queue_size,
            queue_bytes=settings.send_queue_bytes,
            rate=RateLimit.from_settings(settings, loop.time()),
        )
        writer = _Writer(server, room, peer, send, self.resume)
        # Subscribed to the store's commits before anything is read from the store.
        server.streams.add(peer)
        server.peers.add(peer)
        metrics.EVENT_STREAMS.inc()
        expiry = None
        if self.identity.expires_at is not None:
            delay = max(self.identity.expires_at - time.time(), 0.0)
            expiry = loop.call_later(
                delay, peer.close_nowait, CloseCode.UNAUTHORIZED, "token expired"
            )
        opened = time.monotonic()
        disconnected = False
        logs.event(
            log,
            logging.INFO,
            "stream.opened",
            "event stream opened",
            doc=self.name,
            client=self.label,
            user=self.identity.user,
            resume=event_id(*self.resume) if self.resume else None,
        )
        try:
            for frame in room.join(peer):
                peer.send_nowait(frame)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in HEADERS.items()],
                }
            )

            async def watch_disconnect() -> None:
                nonlocal disconnected
                while (await receive())["type"] != "http.disconnect":
                    pass
                disconnected = True
                peer.interrupt()

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_disconnect)
                with anyio.CancelScope() as writing:
                    peer.interrupt = writing.cancel
                    if peer.closed:
                        writing.cancel()
                    try:
                        await writer.run()
                    except OSError:  # the ASGI server could not write: the reader is gone
                        disconnected = True
                    except CollabError as e:
                        log.error("event stream of %r failed: %s", self.name, e)
                        peer.close_nowait(
                            CloseCode.STORE_UNAVAILABLE, "the document cannot be read; try later"
                        )
                peer.interrupt = lambda: None
                tg.cancel_scope.cancel()
            if not disconnected:
                with anyio.CancelScope(shield=True), anyio.move_on_after(FINAL_EVENT_TIMEOUT):
                    try:
                        if peer.close_code is not None:
                            data = json.dumps(
                                {"code": int(peer.close_code), "reason": peer.close_reason}
                            )
                            await writer.write(format_event("close", data))
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    except OSError:
                        pass  # gone meanwhile: nothing left to tell it
        finally:
            if expiry is not None:
                expiry.cancel()
            room.leave(peer)
            server.streams.discard(peer)
            server.peers.discard(peer)
            metrics.EVENT_STREAMS.dec()
            if peer.close_code is not None:
                metrics.CLOSED.labels(code=str(int(peer.close_code))).inc()
            logs.event(
                log,
                logging.INFO,
                "stream.closed",
                "event stream closed",
                doc=self.name,
                client=self.label,
                user=self.identity.user,
                duration=round(time.monotonic() - opened, 3),
                events_out=peer.events_out,
                bytes_out=peer.bytes_out,
                code=int(peer.close_code) if peer.close_code is not None else None,
                reason=peer.close_reason or None,
                by="server" if peer.close_code is not None else "client",
            )


class _Writer:
    """Writes one stream's events: the catch-up from the store, then what the outbox
    receives, de-duplicated against the position sent so far."""

    def __init__(
        self,
        server: Server,
        room: Room,
        peer: StreamPeer,
        send: Send,
        resume: tuple[int, int] | None,
    ) -> None:
        self.server = server
        self.room = room
        self.peer = peer
        self._send = send
        self.resume = resume
        #: (epoch, seq) of the last update the reader has (a snapshot's covers up to it).
        self.position = (0, 0)
        self.last_write = anyio.current_time()
        self._wakeup = anyio.Event()
        self._probe_at: float | None = None
        self._probes = 0
        peer.wake = self._wake

    def _wake(self) -> None:
        self._wakeup.set()

    async def write(self, data: bytes) -> None:
        """Write ``data`` to the reader; waits while its socket is full (flow control)."""
        self.peer.events_out += 1
        self.peer.bytes_out += len(data)
        self.last_write = anyio.current_time()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def run(self) -> None:
        """Catch up, then stream until cancelled (the reader left or the stream closes)."""
        peer = self.peer
        await self.write(session_event(peer, RETRY_MS))
        if self.resume is None or await self._read_after(*self.resume) is None:
            await self._snapshot()
        await self._drain()
        await self.write(format_event("synced", _b64(self.room.doc.get_state())))
        keepalive = self.server.settings.sse_keepalive
        while True:
            self._wakeup = anyio.Event()
            await self._drain()
            now = anyio.current_time()
            if peer.relayed > peer.reported:
                if self._probe_at is None:
                    self._probe_at, self._probes = now + PROBE_DELAYS[0], 0
                if now >= self._probe_at:
                    await self._probe()
                    continue
            else:
                self._probe_at = None
            if now - self.last_write >= keepalive:
                await self.write(b": keep-alive\n\n")
                continue
            deadline = self.last_write + keepalive
            if self._probe_at is not None:
                deadline = min(deadline, self._probe_at)
            with anyio.move_on_after(deadline - now):
                await self._wakeup.wait()

    async def _drain(self) -> None:
        for item in self.peer.take():
            if isinstance(item, bytes):
                await self.write(item)
                continue
            epoch = self.position[0]
            if item.epoch != epoch:
                if item.epoch > epoch:  # a new epoch began: start over from its snapshot
                    await self._catch_up()
                continue
            for entry in item.entries:
                if self.position[0] != epoch or entry.seq <= self.position[1]:
                    continue  # sent already, from the store
                if entry.seq > self.position[1] + 1:
                    # Another process stored updates in between: the store has them (and
                    # this one, committed before it was reported).
                    await self._catch_up()
                    continue
                await self._send_update(epoch, entry)

    async def _probe(self) -> None:
        """Read the store for updates the room relayed but the commits did not report."""
        peer = self.peer
        with anyio.move_on_after(PROBE_FLUSH_TIMEOUT):
            await self.server.store.flush()  # this process's own commits report first
        await self._drain()
        if peer.relayed <= peer.reported:
            self._probe_at = None
            return
        sent = await self._catch_up()
        self._probes += 1
        if sent or self._probes >= len(PROBE_DELAYS):
            peer.reported = peer.relayed
            self._probe_at = None
        else:
            self._probe_at = anyio.current_time() + PROBE_DELAYS[self._probes]

    async def _catch_up(self) -> int:
        """Send what the store holds after the position (a snapshot if it cannot); return
        how many events that was."""
        sent = await self._read_after(*self.position)
        if sent is None:
            await self._snapshot()
            return 1
        return sent

    async def _read_after(self, epoch: int, seq: int) -> int | None:
        """Send every stored update after ``(epoch, seq)``; return how many, or None when
        the store no longer has them all one by one."""
        store = self.server.store
        name = self.room.name
        self.position = (epoch, seq)
        sent = 0
        while True:
            tail = await store.read_after(name, epoch, seq, limit=PAGE)
            if tail.entries is None:
                return None
            for entry in tail.entries:
                await self._send_update(tail.epoch, entry)
                sent += 1
            if len(tail.entries) < PAGE:
                return sent
            seq = tail.entries[-1].seq

    async def _send_update(self, epoch: int, entry: LogEntry) -> None:
        self.position = (epoch, entry.seq)
        await self.write(format_event("update", _b64(entry.update), event_id(epoch, entry.seq)))

    async def _snapshot(self) -> None:
        """Send the whole stored document, named by the log position it covers."""
        store = self.server.store
        name = self.room.name
        for _ in range(SNAPSHOT_READS):
            before = await store.read_after(name, 0, 0, limit=1)
            try:
                update = await admin.export_update(store, name)
            except DocumentNotFoundError:
                update = EMPTY_UPDATE  # never stored, or deleted: an empty document
            after = await store.read_after(name, before.epoch, before.last_seq, limit=1)
            if (after.epoch, after.last_seq) == (before.epoch, before.last_seq):
                break
        # Past the last read the log still moved: the snapshot holds at least `before`, and
        # the updates after it come again, which a Yjs document skips.
        self.position = (before.epoch, before.last_seq)
        await self.write(format_event("snapshot", _b64(update), event_id(*self.position)))
